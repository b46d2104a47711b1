//! The settings of an `mqtt-server` bridge (every key of its table but the common ones).

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use switchyard_api::acl::AclRuleConfig;
use switchyard_api::server::SlowClient;
use switchyard_api::server_tls::ServerTlsSettings;
use switchyard_api::settings::{ByteSize, ConfigDuration};
use switchyard_api::SettingError;

/// Room for everything in a PUBLISH packet but its payload (a topic of up to 64 KiB and
/// MQTT v5 properties), added to `max_payload` when framing packets.
pub const HEADER_ROOM: usize = 64 * 1024 + 4 * 1024;

/// The largest `max_inflight`: MQTT packet identifiers are 16-bit and never 0.
const MAX_INFLIGHT_LIMIT: usize = 65_535;

/// `[bridges.NAME]` of `type = "mqtt-server"`: the embedded MQTT broker.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttServerSettings {
    /// Address of the plain MQTT (TCP) listener, e.g. `"0.0.0.0:1883"`; `""` turns it off.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Address of the MQTT over WebSocket listener (any URL path, subprotocol `mqtt`),
    /// e.g. `"0.0.0.0:8083"`; `""` (the default) turns it off.
    #[serde(default)]
    pub ws_listen: String,
    /// Address of the MQTT over TLS listener (`mqtts://`, usually port 8883); needs `tls`.
    #[serde(default)]
    pub tls_listen: String,
    /// Address of the MQTT over WebSocket over TLS listener (`wss://`); needs `tls`.
    #[serde(default)]
    pub wss_listen: String,
    /// `{ cert, key, client_ca, require_certificate }` of `tls_listen` and `wss_listen`;
    /// the files are read again on SIGHUP.
    #[serde(default)]
    pub tls: ServerTlsSettings,
    /// File of `user:hash` lines (Argon2 PHC, written by `switchyard passwd`); reread on
    /// SIGHUP. `""` = user names are not checked (clients are anonymous).
    #[serde(default)]
    pub users_file: String,
    /// Whether clients without credentials (user name, client certificate) may connect.
    #[serde(default = "default_allow_anonymous")]
    pub allow_anonymous: bool,
    /// Topic ACL `[{ user, pattern, access }]`; absent = every client may read and write.
    #[serde(default)]
    pub acl: Option<Vec<AclRuleConfig>>,
    /// Most clients connected at once; more are refused with CONNACK "server unavailable"
    /// (MQTT 3.1.1) or "quota exceeded" (MQTT 5).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Largest PUBLISH payload a client may send; a larger packet closes its connection
    /// (counted as `too_large`).
    #[serde(default = "default_max_payload")]
    pub max_payload: ByteSize,
    /// Messages waiting to be written to one client; beyond it `slow_client` applies.
    #[serde(default = "default_client_queue")]
    pub client_queue: usize,
    /// What happens to a client whose queue is full: `"drop"` the message (counted as
    /// `lagged`) or `"disconnect"` the client.
    #[serde(default)]
    pub slow_client: SlowClient,
    /// QoS 1 messages sent to one client and not yet acknowledged; the server waits for
    /// PUBACKs beyond it. Also the most QoS 1/2 messages from one client that may wait for
    /// the hub's confirmation (MQTT 5 clients hear it as Receive Maximum). Beyond it, the
    /// client's further packets wait (up to about `max_payload` + 68 KiB of them, then the
    /// server stops reading it); only its PINGREQs and acknowledgements are handled.
    #[serde(default = "default_max_inflight")]
    pub max_inflight: usize,
    /// Time a new connection has to complete the WebSocket handshake and to send CONNECT.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: ConfigDuration,
}

fn default_listen() -> String {
    "127.0.0.1:1883".to_owned()
}

fn default_allow_anonymous() -> bool {
    true
}

fn default_max_connections() -> usize {
    10_000
}

fn default_max_payload() -> ByteSize {
    ByteSize(1 << 20)
}

fn default_client_queue() -> usize {
    1_000
}

fn default_max_inflight() -> usize {
    100
}

fn default_connect_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(10))
}

impl MqttServerSettings {
    /// Parses the adapter's keys and checks them, without touching the network.
    pub fn parse(value: serde_json::Value) -> Result<Self, SettingError> {
        let settings: Self = switchyard_api::settings::parse_settings(value)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), SettingError> {
        let addresses = self.addresses();
        for (index, (key, address)) in addresses.iter().enumerate() {
            if address.is_empty() {
                continue;
            }
            if address.parse::<SocketAddr>().is_err() {
                return Err(SettingError::new(
                    *key,
                    format!("expected an address such as \"0.0.0.0:1883\", or \"\" for off, found {address:?}"),
                ));
            }
            let taken = addresses[..index]
                .iter()
                .find(|(_, earlier)| earlier == address && !address.ends_with(":0"));
            if let Some((earlier, _)) = taken {
                return Err(SettingError::new(
                    *key,
                    format!("{address:?} is already the {earlier} address; pick another port"),
                ));
            }
        }
        if addresses.iter().all(|(_, address)| address.is_empty()) {
            return Err(SettingError::new(
                "listen",
                "listen, ws_listen, tls_listen and wss_listen are all off; set at least one of them",
            ));
        }
        let tls_listener = !(self.tls_listen.is_empty() && self.wss_listen.is_empty());
        if tls_listener && !self.tls.is_set() {
            let key = if self.tls_listen.is_empty() {
                "wss_listen"
            } else {
                "tls_listen"
            };
            return Err(SettingError::new(
                key,
                "a TLS listener needs tls = { cert = \"...\", key = \"...\" }",
            ));
        }
        if !tls_listener && self.tls.is_set() {
            return Err(SettingError::new(
                "tls",
                "tls is set but no TLS listener is: set tls_listen or wss_listen",
            ));
        }
        let positive = [
            ("max_connections", self.max_connections),
            ("client_queue", self.client_queue),
            ("max_inflight", self.max_inflight),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(SettingError::new(key, "must be at least 1"));
            }
        }
        if self.max_inflight > MAX_INFLIGHT_LIMIT {
            return Err(SettingError::new(
                "max_inflight",
                format!(
                    "must be at most {MAX_INFLIGHT_LIMIT} (MQTT packet identifiers are 16-bit)"
                ),
            ));
        }
        if self.max_payload.0 == 0 || self.max_payload.0 > u64::from(u32::MAX / 2) {
            return Err(SettingError::new(
                "max_payload",
                "must be between 1 byte and 2GiB (MQTT packets are at most 256MiB)",
            ));
        }
        if self.connect_timeout.0.is_zero() {
            return Err(SettingError::new(
                "connect_timeout",
                "must be longer than 0s",
            ));
        }
        Ok(())
    }

    /// Every listener setting and its address (`""` = off).
    pub fn addresses(&self) -> [(&'static str, &str); 4] {
        [
            ("listen", &self.listen),
            ("ws_listen", &self.ws_listen),
            ("tls_listen", &self.tls_listen),
            ("wss_listen", &self.wss_listen),
        ]
    }

    /// The largest packet (remaining length) a client may send.
    pub fn max_packet(&self) -> usize {
        usize::try_from(self.max_payload.0)
            .unwrap_or(usize::MAX)
            .saturating_add(HEADER_ROOM)
    }

    /// The largest payload a client may send.
    pub fn max_payload_bytes(&self) -> usize {
        usize::try_from(self.max_payload.0).unwrap_or(usize::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_apply_to_an_empty_table() {
        let settings = MqttServerSettings::parse(json!({})).unwrap();
        assert_eq!(settings.listen, "127.0.0.1:1883");
        assert_eq!(settings.ws_listen, "");
        assert_eq!(settings.max_connections, 10_000);
        assert_eq!(settings.max_payload, ByteSize(1 << 20));
        assert_eq!(settings.client_queue, 1_000);
        assert_eq!(settings.slow_client, SlowClient::Drop);
        assert_eq!(settings.max_inflight, 100);
        assert_eq!(settings.connect_timeout.0, Duration::from_secs(10));
    }

    #[test]
    fn every_key_parses() {
        let settings = MqttServerSettings::parse(json!({
            "listen": "0.0.0.0:1884",
            "ws_listen": "0.0.0.0:8083",
            "max_connections": 5,
            "max_payload": "64KiB",
            "client_queue": 10,
            "slow_client": "disconnect",
            "max_inflight": 7,
            "connect_timeout": "500ms",
        }))
        .unwrap();
        assert_eq!(settings.ws_listen, "0.0.0.0:8083");
        assert_eq!(settings.max_payload_bytes(), 64 * 1024);
        assert_eq!(settings.slow_client, SlowClient::Disconnect);
        assert_eq!(settings.connect_timeout.0, Duration::from_millis(500));
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let error = MqttServerSettings::parse(json!({"password_file": "x"})).unwrap_err();
        assert!(
            error.message.contains("unknown field `password_file`"),
            "{error}"
        );
        let error = MqttServerSettings::parse(json!({"tls_listen": "127.0.0.1:8883"})).unwrap_err();
        assert_eq!(error.path, "tls_listen");
        let error = MqttServerSettings::parse(json!({"tls": {"cert": "c"}})).unwrap_err();
        assert_eq!(error.path, "tls");
        let error = MqttServerSettings::parse(json!({"listen": "nowhere"})).unwrap_err();
        assert_eq!(error.path, "listen");
        let error = MqttServerSettings::parse(json!({"max_inflight": 0})).unwrap_err();
        assert_eq!(error.path, "max_inflight");
        let error = MqttServerSettings::parse(json!({"max_payload": "lots"})).unwrap_err();
        assert_eq!(error.path, "max_payload");
        let error = MqttServerSettings::parse(json!({"listen": ""})).unwrap_err();
        assert_eq!(error.path, "listen");
        let error = MqttServerSettings::parse(json!({"ws_listen": "127.0.0.1:1883"})).unwrap_err();
        assert_eq!(error.path, "ws_listen");
    }
}
