//! The settings of a `websocket-server` bridge: every key of its table except the common
//! ones (`type`, `format`, `queue`, `topics`, ...). The `///` comment on each field is the
//! user's documentation.

use std::time::Duration;

use serde::Deserialize;
use switchyard_api::acl::AclRuleConfig;
use switchyard_api::server::SlowClient;
use switchyard_api::server_tls::ServerTlsSettings;
use switchyard_api::settings::{parse_settings, ByteSize, ConfigDuration};
use switchyard_api::SettingError;

/// The smallest `max_message` accepted: below this even a short publish with headers no
/// longer fits, which is a configuration mistake rather than a policy.
const MIN_MAX_MESSAGE: u64 = 256;

/// `[bridges.NAME]` settings of a `websocket-server` bridge.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Address to accept WebSocket clients on, `host:port`.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// URL path clients connect to; other paths are answered with HTTP 404.
    #[serde(default = "default_path")]
    pub path: String,
    /// Most clients connected at once (handshakes in progress included); beyond it new
    /// clients are refused with HTTP 503 and the listener keeps serving the others.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Messages waiting to be written to one client; when full, `slow_client` applies.
    #[serde(default = "default_send_queue")]
    pub send_queue: usize,
    /// What happens to a client whose send queue is full: `drop` the message for it
    /// (counted as `lagged`) or `disconnect` it.
    #[serde(default)]
    pub slow_client: SlowClient,
    /// Largest message a client may send; a larger one closes that connection (code 1009).
    #[serde(default = "default_max_message")]
    pub max_message: ByteSize,
    /// Time a new connection has to complete the WebSocket handshake.
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout: ConfigDuration,
    /// The server pings every client this often; a client silent for two intervals (or
    /// not reading for as long) is disconnected.
    #[serde(default = "default_ping_interval")]
    pub ping_interval: ConfigDuration,
    /// On subscribe, send the retained messages the new filter matches.
    #[serde(default = "default_replay_retained")]
    pub replay_retained: bool,
    /// `{ cert, key, client_ca, require_certificate }`: when set, `listen` speaks TLS
    /// (`wss://`); the files are read again on SIGHUP.
    #[serde(default)]
    pub tls: ServerTlsSettings,
    /// File of `user:token` lines: bearer tokens (`Authorization: Bearer TOKEN` or
    /// `?token=TOKEN`) and the user each stands for; reread on SIGHUP.
    #[serde(default)]
    pub tokens_file: String,
    /// Whether clients without a token or client certificate may connect.
    #[serde(default = "default_allow_anonymous")]
    pub allow_anonymous: bool,
    /// Topic ACL `[{ user, pattern, access }]`; absent = every client may read and write.
    #[serde(default)]
    pub acl: Option<Vec<AclRuleConfig>>,
}

fn default_allow_anonymous() -> bool {
    true
}

fn default_listen() -> String {
    "127.0.0.1:8080".to_owned()
}

fn default_path() -> String {
    "/".to_owned()
}

fn default_max_connections() -> usize {
    10_000
}

fn default_send_queue() -> usize {
    1_000
}

fn default_max_message() -> ByteSize {
    ByteSize(1 << 20)
}

fn default_handshake_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(10))
}

fn default_ping_interval() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(30))
}

fn default_replay_retained() -> bool {
    true
}

impl ServerSettings {
    /// Parses and validates the bridge's own settings (no I/O).
    pub fn parse(value: serde_json::Value) -> Result<Self, SettingError> {
        let settings: ServerSettings = parse_settings(value)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks the values serde cannot: ranges and shapes.
    fn validate(&self) -> Result<(), SettingError> {
        let port = self
            .listen
            .rsplit_once(':')
            .map(|(_, port)| port.parse::<u16>());
        if !matches!(port, Some(Ok(_))) {
            return Err(SettingError::new(
                "listen",
                format!(
                    "expected host:port such as \"0.0.0.0:8080\", found {:?}",
                    self.listen
                ),
            ));
        }
        if !self.path.starts_with('/') {
            return Err(SettingError::new(
                "path",
                format!("expected a path starting with /, found {:?}", self.path),
            ));
        }
        if self.max_connections == 0 {
            return Err(SettingError::new(
                "max_connections",
                "expected at least 1, found 0",
            ));
        }
        if self.send_queue == 0 {
            return Err(SettingError::new(
                "send_queue",
                "expected at least 1, found 0",
            ));
        }
        if self.max_message.0 < MIN_MAX_MESSAGE {
            return Err(SettingError::new(
                "max_message",
                format!(
                    "expected at least {MIN_MAX_MESSAGE} bytes, found {}",
                    self.max_message.0
                ),
            ));
        }
        for (key, duration) in [
            ("handshake_timeout", self.handshake_timeout),
            ("ping_interval", self.ping_interval),
        ] {
            if duration.0.is_zero() {
                return Err(SettingError::new(
                    key,
                    "expected a duration above zero, such as \"10s\", found 0",
                ));
            }
        }
        Ok(())
    }

    /// `max_message` in bytes, as tungstenite's limits take it.
    pub fn max_message_bytes(&self) -> usize {
        usize::try_from(self.max_message.0).unwrap_or(usize::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_apply_to_an_empty_table() {
        let settings = ServerSettings::parse(json!({})).expect("defaults are valid");
        assert_eq!(settings.listen, "127.0.0.1:8080");
        assert_eq!(settings.path, "/");
        assert_eq!(settings.max_connections, 10_000);
        assert_eq!(settings.send_queue, 1_000);
        assert_eq!(settings.slow_client, SlowClient::Drop);
        assert_eq!(settings.max_message_bytes(), 1 << 20);
        assert_eq!(settings.handshake_timeout.0, Duration::from_secs(10));
        assert_eq!(settings.ping_interval.0, Duration::from_secs(30));
        assert!(settings.replay_retained);
    }

    #[test]
    fn every_key_can_be_set() {
        let settings = ServerSettings::parse(json!({
            "listen": "0.0.0.0:9000",
            "path": "/firehose",
            "max_connections": 5,
            "send_queue": 10,
            "slow_client": "disconnect",
            "max_message": "64KiB",
            "handshake_timeout": "2s",
            "ping_interval": "500ms",
            "replay_retained": false,
        }))
        .expect("valid settings");
        assert_eq!(settings.path, "/firehose");
        assert_eq!(settings.slow_client, SlowClient::Disconnect);
        assert_eq!(settings.max_message_bytes(), 64 << 10);
        assert_eq!(settings.ping_interval.0, Duration::from_millis(500));
        assert!(!settings.replay_retained);
    }

    #[test]
    fn errors_name_the_key_and_what_was_found() {
        let cases = [
            (json!({"listn": "x"}), "listn", "unknown field `listn`"),
            (json!({"listen": "nowhere"}), "listen", "\"nowhere\""),
            (json!({"path": "firehose"}), "path", "starting with /"),
            (json!({"max_connections": 0}), "max_connections", "found 0"),
            (json!({"send_queue": 0}), "send_queue", "found 0"),
            (json!({"max_message": "12"}), "max_message", "found 12"),
            (
                json!({"slow_client": "wait"}),
                "slow_client",
                "unknown variant",
            ),
            (
                json!({"ping_interval": "0s"}),
                "ping_interval",
                "above zero",
            ),
            (
                json!({"handshake_timeout": "soon"}),
                "handshake_timeout",
                "soon",
            ),
        ];
        for (value, path, message) in cases {
            let error = ServerSettings::parse(value.clone()).expect_err("invalid");
            assert_eq!(error.path, path, "{value}: {error}");
            assert!(error.message.contains(message), "{value}: {error}");
        }
    }
}
