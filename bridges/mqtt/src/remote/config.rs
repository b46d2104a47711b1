//! Settings of an `mqtt` bridge (a client of a remote broker).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use switchyard_api::instance::instance_id;
use switchyard_api::secret::{resolve_password, Secret};
use switchyard_api::settings::ConfigDuration;
use switchyard_api::tls::TlsSettings;
use switchyard_api::SettingError;

/// The adapter's own keys of a `type = "mqtt"` bridge.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteSettings {
    /// The broker: `mqtt://host:port`, `ws://host:port/path`, or with TLS
    /// `mqtts://host:port` and `wss://host:port/path`.
    #[serde(default = "default_url")]
    pub url: String,
    /// Brokers to try in turn (failover); when set, `url` is only the first of them.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Client id; stable by default (`switchyard-<hub>-<bridge>`) so the broker keeps the
    /// session while the bridge is away.
    #[serde(default)]
    pub client_id: Option<String>,
    /// User name for the broker.
    #[serde(default)]
    pub username: Option<String>,
    /// Password for the broker.
    #[serde(default)]
    pub password: Option<Secret>,
    /// A file holding the password (its final line break ignored), instead of `password`.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Start a clean session on every connect (`false` keeps subscriptions and queued QoS 1
    /// messages on the broker while the bridge is away).
    #[serde(default)]
    pub clean_session: bool,
    /// Keep-alive interval.
    #[serde(default = "default_keepalive")]
    pub keepalive: ConfigDuration,
    /// MQTT version: `v5` (default; no-local and user properties prevent loops) or `v4`.
    #[serde(default)]
    pub protocol: Protocol,
    /// Publish the bridge's state (`1`/`0`, retained) on the remote broker, with `0` as the
    /// will, so others see the bridge die.
    #[serde(default = "default_notifications")]
    pub notifications: bool,
    /// Where on the remote broker; default `switchyard/<hub>/bridges/<name>/state` (not
    /// under `$SYS`, which brokers such as Mosquitto refuse from clients).
    #[serde(default)]
    pub notification_topic: Option<String>,
    /// Most QoS 1 messages sent and not yet acknowledged by the broker.
    #[serde(default = "default_max_inflight")]
    pub max_inflight: u16,
    /// How long to wait for the broker's CONNACK.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: ConfigDuration,
    /// Certificates for `mqtts://` and `wss://` addresses.
    #[serde(default)]
    pub tls: TlsSettings,
    /// Join the MQTT shared subscription group of this name: `in` rules subscribe
    /// `$share/<group>/<filter>` (MQTT 5, and 3.1.1 on Mosquitto 2), so the broker hands
    /// each message to one of the replicas in the group. Without a `client_id`, the
    /// default one is unique per process (`switchyard-<hub>-<bridge>-<hostname>-<pid>`) and
    /// the session must be clean.
    #[serde(default)]
    pub share_group: Option<String>,
}

/// The MQTT protocol version spoken to the remote broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// MQTT 5.
    #[default]
    V5,
    /// MQTT 3.1.1.
    V4,
}

fn default_url() -> String {
    "mqtt://127.0.0.1:1883".to_owned()
}

fn default_keepalive() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(30))
}

fn default_notifications() -> bool {
    true
}

fn default_max_inflight() -> u16 {
    100
}

fn default_connect_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(10))
}

/// Where to connect, parsed from a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddress {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// For `ws://` and `wss://`: the full URL of the WebSocket handshake; `None` for TCP.
    pub websocket_url: Option<String>,
    /// Whether the connection is made with TLS (`mqtts://`, `wss://`).
    pub tls: bool,
}

impl BrokerAddress {
    /// Parses `mqtt[s]://host[:port]` or `ws[s]://host[:port][/path]`.
    pub fn parse(url: &str) -> Result<BrokerAddress, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| format!("expected a URL such as mqtt://host:1883, found {url:?}"))?;
        let (authority, path) = match rest.find('/') {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, ""),
        };
        // The IANA-registered ports: 1883 and 8883 for MQTT, 80 and 443 for WebSockets.
        let default_port = match scheme {
            "mqtt" => 1883,
            "mqtts" => 8883,
            "ws" => 80,
            "wss" => 443,
            other => {
                return Err(format!(
                    "expected mqtt://, mqtts://, ws:// or wss://, found {other}://"
                ))
            }
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => (
                host,
                port.parse()
                    .map_err(|_| format!("expected a port number in {url:?}, found {port:?}"))?,
            ),
            None => (authority, default_port),
        };
        if host.is_empty() {
            return Err(format!("expected a host name in {url:?}"));
        }
        let websocket = matches!(scheme, "ws" | "wss");
        let websocket_url = websocket.then(|| format!("{scheme}://{host}:{port}{path}"));
        Ok(BrokerAddress {
            host: host.to_owned(),
            port,
            websocket_url,
            tls: matches!(scheme, "mqtts" | "wss"),
        })
    }
}

impl RemoteSettings {
    /// The keep-alive interval to ask for (MQTT counts it in whole seconds, at least 1).
    pub fn keep_alive(&self) -> Duration {
        self.keepalive.0.max(Duration::from_secs(1))
    }

    /// User name and password for CONNECT, when a user name is set (no password: empty).
    pub fn credentials(&self) -> Option<(&str, &str)> {
        let user = self.username.as_deref()?;
        Some((user, self.password.as_ref().map_or("", Secret::expose)))
    }

    /// Reads `password_file` into `password`.
    pub fn read_password_file(&mut self) -> Result<(), SettingError> {
        let file = self.password_file.take();
        self.password = resolve_password(self.password.take(), file.as_deref())?;
        Ok(())
    }

    /// Checks `share_group` against the MQTT rules for share names and the session it
    /// needs.
    pub fn check_share_group(&self) -> Result<(), SettingError> {
        let Some(group) = &self.share_group else {
            return Ok(());
        };
        if group.is_empty() || group.contains(['/', '+', '#']) {
            return Err(SettingError::new(
                "share_group",
                format!("expected a name without '/', '+' or '#', found {group:?}"),
            ));
        }
        if !self.clean_session && self.client_id.is_none() {
            return Err(SettingError::new(
                "clean_session",
                "a share_group with a persistent session needs a client_id that stays the same \
                 across restarts: with the default client id (unique per process) the broker \
                 would keep queueing this replica's share for a session that never returns; \
                 set clean_session = true, or a client_id",
            ));
        }
        Ok(())
    }

    /// The client id: configured, else `switchyard-<hub>-<bridge>` (stable, so the broker
    /// keeps the session), with `-<hostname>-<pid>` in a share group (replicas share the
    /// configuration, and a broker lets one connection per client id).
    pub fn client_id(&self, hub: &str, bridge: &str) -> String {
        match (&self.client_id, &self.share_group) {
            (Some(id), _) => id.clone(),
            (None, None) => format!("switchyard-{hub}-{bridge}"),
            (None, Some(_)) => format!("switchyard-{hub}-{bridge}-{}", instance_id()),
        }
    }

    /// What an `in` rule's `filter` is subscribed as: in the share group, if any.
    pub fn subscription(&self, filter: String) -> String {
        match &self.share_group {
            Some(group) => format!("$share/{group}/{filter}"),
            None => filter,
        }
    }

    /// Every broker address in failover order, validated.
    pub fn broker_addresses(&self) -> Result<Vec<BrokerAddress>, SettingError> {
        if self.addresses.is_empty() {
            return BrokerAddress::parse(&self.url)
                .map(|address| vec![address])
                .map_err(|message| SettingError::new("url", message));
        }
        self.addresses
            .iter()
            .enumerate()
            .map(|(index, url)| {
                BrokerAddress::parse(url)
                    .map_err(|message| SettingError::new(format!("addresses[{index}]"), message))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_default_ports() {
        let tcp = BrokerAddress::parse("mqtt://broker.example").unwrap();
        assert_eq!(
            (tcp.host.as_str(), tcp.port, tcp.websocket_url),
            ("broker.example", 1883, None)
        );
        let ws = BrokerAddress::parse("ws://10.0.0.1:8083/mqtt").unwrap();
        assert_eq!(ws.port, 8083);
        assert_eq!(ws.websocket_url.as_deref(), Some("ws://10.0.0.1:8083/mqtt"));
        assert!(!tcp.tls && !ws.tls);
        let mqtts = BrokerAddress::parse("mqtts://broker.example").unwrap();
        assert_eq!(
            (mqtts.port, mqtts.tls, mqtts.websocket_url),
            (8883, true, None)
        );
        let wss = BrokerAddress::parse("wss://broker.example/mqtt").unwrap();
        assert_eq!(
            (wss.port, wss.tls, wss.websocket_url.as_deref()),
            (443, true, Some("wss://broker.example:443/mqtt"))
        );
        assert!(BrokerAddress::parse("http://x")
            .unwrap_err()
            .contains("mqtts://"));
        assert!(BrokerAddress::parse("mqtt://x:port")
            .unwrap_err()
            .contains("port"));
        assert!(BrokerAddress::parse("broker:1883").is_err());
    }

    #[test]
    fn share_groups_prefix_filters_and_need_a_clean_session_or_a_client_id() {
        let parse =
            |value| -> RemoteSettings { switchyard_api::settings::parse_settings(value).unwrap() };
        let shared = parse(serde_json::json!({"share_group": "hubs", "clean_session": true}));
        shared.check_share_group().unwrap();
        assert_eq!(shared.subscription("a/#".to_owned()), "$share/hubs/a/#");
        assert!(shared.client_id("h", "b").starts_with("switchyard-h-b-"));
        assert_ne!(shared.client_id("h", "b"), "switchyard-h-b");
        let plain = parse(serde_json::json!({}));
        assert_eq!(plain.subscription("a/#".to_owned()), "a/#");
        assert_eq!(plain.client_id("h", "b"), "switchyard-h-b");
        let persistent = parse(serde_json::json!({"share_group": "hubs"}));
        assert_eq!(
            persistent.check_share_group().unwrap_err().path,
            "clean_session"
        );
        let named = parse(serde_json::json!({"share_group": "hubs", "client_id": "pod-0"}));
        named.check_share_group().unwrap();
        assert_eq!(named.client_id("h", "b"), "pod-0");
        let bad = parse(serde_json::json!({"share_group": "a/b", "clean_session": true}));
        assert_eq!(bad.check_share_group().unwrap_err().path, "share_group");
    }

    #[test]
    fn the_password_file_is_read_and_never_shown() {
        let file = std::env::temp_dir().join(format!("switchyard-mqtt-pw-{}", std::process::id()));
        std::fs::write(&file, "from-file\n").unwrap();
        let mut settings: RemoteSettings = switchyard_api::settings::parse_settings(
            serde_json::json!({"username": "bridge", "password_file": file}),
        )
        .unwrap();
        settings.read_password_file().unwrap();
        std::fs::remove_file(&file).unwrap();
        assert_eq!(
            settings.password.as_ref().map(Secret::expose),
            Some("from-file")
        );
        assert!(!format!("{settings:?}").contains("from-file"));
    }

    #[test]
    fn failover_errors_name_the_entry() {
        let settings: RemoteSettings = switchyard_api::settings::parse_settings(
            serde_json::json!({"addresses": ["mqtt://a:1883", "nope"]}),
        )
        .unwrap();
        assert_eq!(
            settings.broker_addresses().unwrap_err().path,
            "addresses[1]"
        );
    }
}
