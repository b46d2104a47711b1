//! The settings of a `zmq` bridge: every key of its table except the common ones
//! (`type`, `format`, `queue`, `topics`, ...). The `///` comment on each field is the
//! user's documentation.

use std::time::Duration;

use serde::Deserialize;
use switchyard_api::settings::{parse_settings, ByteSize, ConfigDuration};
use switchyard_api::{BridgeSpec, Direction, Format, SettingError};

/// libzmq's own limit (`ZMQ_MAXMSGSIZE`) is this many times `max_message`: a frame between
/// the two is read and dropped (counted `too_large`); a frame beyond it makes libzmq close
/// the sender's connection before buffering it all, which bounds memory.
pub const HARD_LIMIT_FACTOR: u64 = 16;

/// `[bridges.NAME]` settings of a `zmq` bridge.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZmqSettings {
    /// The socket type: `sub` or `pull` receive (rules `in`), `pub` or `push` send
    /// (rules `out`).
    pub socket: SocketKind,
    /// Endpoints to connect to, such as `tcp://bus.example:9940`; libzmq reconnects to
    /// each by itself (`reconnect_ivl`).
    #[serde(default)]
    pub connect: Vec<String>,
    /// Endpoints to bind, such as `tcp://127.0.0.1:9940`; peers connect to them.
    #[serde(default)]
    pub bind: Vec<String>,
    /// High-water mark: messages libzmq queues per peer. At the mark a `pub` socket drops
    /// messages for that subscriber (libzmq's rule: a slow subscriber never holds up the
    /// others), a `push` socket waits (backpressure into the bridge's queue), `sub` and
    /// `pull` stop reading from the peer. `0` means no limit.
    #[serde(default = "default_hwm")]
    pub hwm: i32,
    /// `multipart`: frames `[topic, body]`; `single`: one frame `topic<space>body`.
    #[serde(default)]
    pub framing: Framing,
    /// First delay before libzmq reconnects to a `connect` endpoint.
    #[serde(default = "default_reconnect_ivl")]
    pub reconnect_ivl: ConfigDuration,
    /// Longest delay between reconnection attempts (libzmq doubles up to it).
    #[serde(default = "default_reconnect_ivl_max")]
    pub reconnect_ivl_max: ConfigDuration,
    /// Largest message accepted (all frames); larger ones are dropped, counted `too_large`.
    #[serde(default = "default_max_message")]
    pub max_message: ByteSize,
}

/// The ZeroMQ socket pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SocketKind {
    /// Subscribes (by topic prefix) to publishers.
    Sub,
    /// Publishes to every subscriber.
    Pub,
    /// Takes messages from pushers.
    Pull,
    /// Hands each message to one puller, round robin.
    Push,
}

impl SocketKind {
    /// Whether the socket brings messages into the hub (`sub`, `pull`).
    pub fn receives(self) -> bool {
        matches!(self, SocketKind::Sub | SocketKind::Pull)
    }

    /// The word used in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            SocketKind::Sub => "sub",
            SocketKind::Pub => "pub",
            SocketKind::Pull => "pull",
            SocketKind::Push => "push",
        }
    }

    /// The libzmq socket type.
    pub fn zmq_type(self) -> zmq::SocketType {
        match self {
            SocketKind::Sub => zmq::SUB,
            SocketKind::Pub => zmq::PUB,
            SocketKind::Pull => zmq::PULL,
            SocketKind::Push => zmq::PUSH,
        }
    }
}

/// How a message is laid out in ZeroMQ frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Framing {
    /// Two frames: the topic, then the body (fedmsg's layout).
    #[default]
    Multipart,
    /// One frame: the topic, one space, the body (the classic ZeroMQ guide layout).
    Single,
}

fn default_hwm() -> i32 {
    100_000
}

fn default_reconnect_ivl() -> ConfigDuration {
    // libzmq's own default.
    ConfigDuration(Duration::from_millis(100))
}

fn default_reconnect_ivl_max() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(5))
}

fn default_max_message() -> ByteSize {
    ByteSize(1 << 20)
}

impl ZmqSettings {
    /// Parses the bridge's own settings and checks them against its common settings and
    /// rules (no I/O).
    pub fn parse(spec: &BridgeSpec, value: serde_json::Value) -> Result<Self, SettingError> {
        let settings: ZmqSettings = parse_settings(value)?;
        settings.validate(spec)?;
        Ok(settings)
    }

    /// The `max_message` limit in bytes.
    pub fn max_message_bytes(&self) -> usize {
        usize::try_from(self.max_message.0).unwrap_or(usize::MAX)
    }

    /// The value for libzmq's `ZMQ_MAXMSGSIZE`.
    pub fn hard_limit(&self) -> i64 {
        i64::try_from(self.max_message.0.saturating_mul(HARD_LIMIT_FACTOR)).unwrap_or(i64::MAX)
    }

    fn validate(&self, spec: &BridgeSpec) -> Result<(), SettingError> {
        if self.connect.is_empty() && self.bind.is_empty() {
            return Err(SettingError::new(
                "connect",
                "expected at least one endpoint in connect or bind, such as \
                 connect = [\"tcp://127.0.0.1:9940\"]",
            ));
        }
        for (key, endpoints) in [("connect", &self.connect), ("bind", &self.bind)] {
            for (index, endpoint) in endpoints.iter().enumerate() {
                check_endpoint(endpoint)
                    .map_err(|message| SettingError::new(format!("{key}[{index}]"), message))?;
            }
        }
        if self.hwm < 0 {
            return Err(SettingError::new(
                "hwm",
                format!("expected 0 (no limit) or more, found {}", self.hwm),
            ));
        }
        for (key, duration) in [
            ("reconnect_ivl", self.reconnect_ivl.0),
            ("reconnect_ivl_max", self.reconnect_ivl_max.0),
        ] {
            if i32::try_from(duration.as_millis()).is_err() {
                return Err(SettingError::new(key, "expected at most 24 days"));
            }
        }
        if self.max_message.0 == 0 {
            return Err(SettingError::new("max_message", "expected at least 1 byte"));
        }
        if spec.format == Format::Fedmsg && self.framing != Framing::Multipart {
            return Err(SettingError::new(
                "framing",
                "format = \"fedmsg\" is two frames [topic, envelope]: use framing = \"multipart\"",
            ));
        }
        self.check_directions(spec)
    }

    /// Receiving sockets take `in` rules only, sending sockets `out` rules only.
    fn check_directions(&self, spec: &BridgeSpec) -> Result<(), SettingError> {
        let (wanted, verb) = if self.socket.receives() {
            (Direction::In, "only receives")
        } else {
            (Direction::Out, "only sends")
        };
        for (index, rule) in spec.common.topics.iter().enumerate() {
            if rule.direction != wanted {
                return Err(SettingError::new(
                    format!("topics[{index}].direction"),
                    format!(
                        "a {} socket {verb}, so its rules must be direction = {:?}; found {:?} \
                         (use a second bridge for the other direction)",
                        self.socket.as_str(),
                        wanted.as_str(),
                        rule.direction.as_str()
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Checks the shape `transport://address` (libzmq itself reports anything finer).
fn check_endpoint(endpoint: &str) -> Result<(), String> {
    match endpoint.split_once("://") {
        Some((transport, address))
            if !address.is_empty()
                && matches!(transport, "tcp" | "ipc" | "inproc" | "pgm" | "epgm") =>
        {
            Ok(())
        }
        _ => Err(format!(
            "expected an endpoint such as \"tcp://127.0.0.1:9940\" or \"ipc:///run/bus\", \
             found {endpoint:?}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;
    use switchyard_api::RuleSet;

    fn spec(format: Format, directions: &[&str]) -> BridgeSpec {
        let topics: Vec<_> = directions
            .iter()
            .map(|direction| json!({"pattern": "#", "direction": direction}))
            .collect();
        BridgeSpec {
            name: "bus".into(),
            common: parse_settings(json!({"type": "zmq", "topics": topics})).expect("common"),
            format,
            rules: Arc::new(RuleSet::default()),
        }
    }

    #[test]
    fn defaults_are_filled_in() {
        let settings = ZmqSettings::parse(
            &spec(Format::Raw, &["in"]),
            json!({"socket": "sub", "connect": ["tcp://127.0.0.1:9940"]}),
        )
        .expect("valid");
        assert_eq!(settings.hwm, 100_000);
        assert_eq!(settings.framing, Framing::Multipart);
        assert_eq!(settings.max_message_bytes(), 1 << 20);
        assert_eq!(settings.reconnect_ivl.0, Duration::from_millis(100));
        assert_eq!(settings.hard_limit(), 16 << 20);
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (json!({"socket": "dealer", "bind": ["tcp://*:1"]}), "socket"),
            (json!({"socket": "sub"}), "connect"),
            (
                json!({"socket": "sub", "connect": ["tcp://a:1", "a:1"]}),
                "connect[1]",
            ),
            (json!({"socket": "sub", "bind": ["udp://x"]}), "bind[0]"),
            (
                json!({"socket": "sub", "bind": ["tcp://*:1"], "hwm": -1}),
                "hwm",
            ),
            (
                json!({"socket": "sub", "bind": ["tcp://*:1"], "framing": "triple"}),
                "framing",
            ),
            (
                json!({"socket": "sub", "bind": ["tcp://*:1"], "max_message": "huge"}),
                "max_message",
            ),
            (
                json!({"socket": "sub", "bind": ["tcp://*:1"], "linger": 1}),
                "linger",
            ),
        ];
        for (value, path) in cases {
            let error = ZmqSettings::parse(&spec(Format::Raw, &["in"]), value.clone())
                .expect_err("invalid");
            assert_eq!(error.path, path, "{value}: {error}");
        }
    }

    #[test]
    fn socket_types_take_rules_of_their_direction() {
        let sub = json!({"socket": "sub", "bind": ["tcp://*:1"]});
        let push = json!({"socket": "push", "bind": ["tcp://*:1"]});
        assert!(ZmqSettings::parse(&spec(Format::Raw, &["in", "in"]), sub.clone()).is_ok());
        assert!(ZmqSettings::parse(&spec(Format::Raw, &["out"]), push.clone()).is_ok());
        let error =
            ZmqSettings::parse(&spec(Format::Raw, &["in", "out"]), sub).expect_err("refused");
        assert_eq!(error.path, "topics[1].direction");
        assert!(
            error.message.contains("sub socket only receives"),
            "{error}"
        );
        let error = ZmqSettings::parse(&spec(Format::Raw, &["both"]), push).expect_err("refused");
        assert_eq!(error.path, "topics[0].direction");
    }

    #[test]
    fn fedmsg_needs_two_frames() {
        let single = json!({"socket": "pub", "bind": ["tcp://*:1"], "framing": "single"});
        let error =
            ZmqSettings::parse(&spec(Format::Fedmsg, &["out"]), single.clone()).expect_err("no");
        assert_eq!(error.path, "framing");
        assert!(ZmqSettings::parse(&spec(Format::Json, &["out"]), single).is_ok());
    }
}
