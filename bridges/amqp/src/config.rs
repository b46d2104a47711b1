//! The `amqp` bridge's own settings (every key of its table but the common ones), and
//! their validation into what a connection needs. Nothing here touches the network.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::uri::{AMQPScheme, AMQPUri};
use serde::Deserialize;
use switchyard_api::secret::resolve_password;
use switchyard_api::settings::{parse_settings, ConfigDuration};
use switchyard_api::tls::TlsSettings;
use switchyard_api::tls_client::client_config;
use switchyard_api::SettingError;

/// The broker a bridge connects to when `url` is not set: a local RabbitMQ with its
/// stock `guest` account, default virtual host.
fn default_url() -> String {
    "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned()
}

/// RabbitMQ's predeclared topic exchange, which every broker has.
fn default_exchange() -> String {
    "amq.topic".to_owned()
}

/// Topic exchanges route on the dotted names that rules produce.
fn default_exchange_type() -> String {
    "topic".to_owned()
}

/// Unacknowledged deliveries the broker may push at once. Large enough to keep a
/// 1 ms round trip busy at tens of thousands of messages a second, small enough that a
/// reconnect redelivers little.
fn default_prefetch() -> u16 {
    256
}

/// Publisher confirms outstanding at once. Measured on the 2-core test machine (release
/// build, RabbitMQ 3.10 on the same machine, hub queue pre-filled with 100,000 QoS 1
/// entries from MQTT, draining through this bridge with confirms): 64 → ~16k msg/s,
/// 256 → ~18k, 1024 → ~18–21k, 4096 → ~15–17k, when lapin published (its confirm
/// bookkeeping scanned every pending confirm per `multiple` ack). The bridge's own
/// publisher settles confirms in constant time, and with it 4096 and 16384 gained nothing
/// over 1024 at 8,000–12,000 msg/s: RabbitMQ is the limit there.
fn default_max_in_flight() -> usize {
    1024
}

/// Heartbeats every 30 s notice a dead peer within about a minute without adding load.
fn default_heartbeat() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(30))
}

fn yes() -> bool {
    true
}

/// The longest heartbeat AMQP can express (a 16-bit count of seconds).
const MAX_HEARTBEAT_SECONDS: u64 = u16::MAX as u64;

/// The longest AMQP short string (exchange, queue and connection names): one length byte.
const MAX_SHORT_STRING: usize = 255;

/// `[bridges.NAME]` of `type = "amqp"`, minus the common keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpSettings {
    /// Broker address: `amqp://user:password@host:port/vhost` or `amqps://...` (TLS).
    /// The virtual host is the URL path, percent-encoded (`%2f` is `/`).
    #[serde(default = "default_url")]
    pub url: String,
    /// A file holding the password (its final line break ignored), overriding the one in
    /// `url` (which can then be `amqps://user@host/vhost`).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Virtual host, overriding the one in `url` (`""` = the one in `url`).
    #[serde(default)]
    pub vhost: String,
    /// Interval of AMQP heartbeats (`"0s"` turns them off).
    #[serde(default = "default_heartbeat")]
    pub heartbeat: ConfigDuration,
    /// TLS for `amqps://`: CA bundle and client certificate.
    #[serde(default)]
    pub tls: TlsSettings,
    /// Exchange that `out` rules publish to and `in` rules bind to (`""` = the default
    /// exchange, which routes on queue names).
    #[serde(default = "default_exchange")]
    pub exchange: String,
    /// Type of the exchange when it is declared: `topic`, `direct`, `fanout`, `headers`,
    /// or a plugin's type.
    #[serde(default = "default_exchange_type")]
    pub exchange_type: String,
    /// Declare the exchange (durable) on connect instead of expecting it to exist.
    #[serde(default)]
    pub declare_exchange: bool,
    /// The queue `in` rules consume from, bound with one binding key per rule. (Not
    /// `queue`, which every bridge has for its outbound queue's limits.)
    #[serde(default)]
    pub amqp_queue: QueueSettings,
    /// Most unacknowledged deliveries the broker may send at once (`basic.qos`).
    #[serde(default = "default_prefetch")]
    pub prefetch: u16,
    /// Ask for publisher confirms: a message leaves the bridge's queue only when the
    /// broker confirmed it. Turning this off makes `out` rules at-most-once.
    #[serde(default = "yes")]
    pub confirms: bool,
    /// Most publisher confirms outstanding at once.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Publish with `delivery_mode = 2`, so durable queues keep messages across broker
    /// restarts.
    #[serde(default = "yes")]
    pub persistent: bool,
    /// Publish with the `mandatory` flag, so the broker returns a message no queue is
    /// bound for and the bridge counts it instead of losing it silently. Only with
    /// `confirms`: the confirm that follows a return tells which message it was.
    #[serde(default = "yes")]
    pub mandatory: bool,
    /// The connection's name in the broker (`rabbitmqctl list_connections
    /// client_properties`); `""` = `switchyard/<hub>/<bridge>`.
    #[serde(default)]
    pub connection_name: String,
}

/// `amqp_queue = { ... }`: the queue of `in` rules.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSettings {
    /// Queue name; `""` lets the broker name it, and then it is exclusive to the
    /// connection and deleted with it (the other flags below are ignored).
    #[serde(default)]
    pub name: String,
    /// Survive a broker restart.
    #[serde(default = "yes")]
    pub durable: bool,
    /// Delete the queue when its last consumer goes away.
    #[serde(default)]
    pub auto_delete: bool,
    /// Only this connection may use the queue; deleted when it closes.
    #[serde(default)]
    pub exclusive: bool,
    /// Optional arguments, e.g. `{ "x-queue-type" = "quorum" }` or
    /// `{ "x-dead-letter-exchange" = "dlx" }`. Strings, integers, floats and booleans.
    #[serde(default)]
    pub arguments: BTreeMap<String, serde_json::Value>,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            name: String::new(),
            durable: true,
            auto_delete: false,
            exclusive: false,
            arguments: BTreeMap::new(),
        }
    }
}

/// Validated settings, ready for connecting.
#[derive(Debug, Clone)]
pub struct AmqpConfig {
    /// The parsed broker address, with vhost and heartbeat applied.
    pub uri: AMQPUri,
    /// The TLS client configuration of both connections (trusted authorities, client
    /// certificate, expected server name); set for `amqps://` only.
    pub tls_client: Option<Arc<rustls::ClientConfig>>,
    /// The exchange's name.
    pub exchange: ShortString,
    /// The exchange's type (`topic`, `direct`, `fanout`, `headers` or a plugin's).
    pub exchange_type: ShortString,
    /// Whether to declare the exchange.
    pub declare_exchange: bool,
    /// The queue of `in` rules.
    pub queue: QueueConfig,
    /// `basic.qos` prefetch count (at least 1).
    pub prefetch: u16,
    /// Whether publisher confirms are on.
    pub confirms: bool,
    /// Most confirms outstanding (at least 1).
    pub max_in_flight: usize,
    /// Whether published messages are persistent.
    pub persistent: bool,
    /// Whether published messages are mandatory.
    pub mandatory: bool,
    /// Connection name as configured (`""` = derived from hub and bridge names).
    pub connection_name: String,
}

/// The validated queue settings.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// Name (`""` = server-named).
    pub name: String,
    /// Durable flag.
    pub durable: bool,
    /// Auto-delete flag.
    pub auto_delete: bool,
    /// Exclusive flag.
    pub exclusive: bool,
    /// Arguments in AMQP types.
    pub arguments: FieldTable,
}

impl AmqpConfig {
    /// Parses and validates a bridge's own settings; errors carry the key path.
    pub fn parse(value: serde_json::Value) -> Result<AmqpConfig, SettingError> {
        let settings: AmqpSettings = parse_settings(value)?;
        settings.validate()
    }

    /// The name the connection shows in the broker.
    pub fn connection_name(&self, hub: &str, bridge: &str) -> String {
        if self.connection_name.is_empty() {
            format!("switchyard/{hub}/{bridge}")
        } else {
            self.connection_name.clone()
        }
    }
}

impl AmqpSettings {
    /// Checks every value and converts it to what lapin takes.
    pub fn validate(self) -> Result<AmqpConfig, SettingError> {
        let mut uri = AMQPUri::from_str(&self.url).map_err(|error| {
            SettingError::new(
                "url",
                format!(
                    "expected amqp://user:password@host:port/vhost or amqps://..., found {:?} ({error})",
                    redact(&self.url)
                ),
            )
        })?;
        if let Some(password) = resolve_password(None, self.password_file.as_deref())? {
            uri.authority.userinfo.password = password.expose().to_owned();
        }
        if !self.vhost.is_empty() {
            uri.vhost = self.vhost.clone();
        }
        let heartbeat = self.heartbeat.0.as_secs();
        if heartbeat > MAX_HEARTBEAT_SECONDS {
            return Err(SettingError::new(
                "heartbeat",
                format!("at most {MAX_HEARTBEAT_SECONDS}s, found {heartbeat}s"),
            ));
        }
        uri.query.heartbeat = Some(heartbeat as u16);
        self.tls.load()?;
        if uri.scheme == AMQPScheme::AMQP && self.tls.is_set() {
            return Err(SettingError::new(
                "tls",
                "set, but the url is amqp://; use amqps:// to connect with TLS",
            ));
        }
        let exchange = short_string("exchange", &self.exchange)?;
        if self.exchange_type.is_empty() {
            return Err(SettingError::new(
                "exchange_type",
                "expected topic, direct, fanout, headers or a plugin's type",
            ));
        }
        let exchange_type = short_string("exchange_type", &self.exchange_type)?;
        let tls_client = match uri.scheme {
            AMQPScheme::AMQPS => Some(Arc::new(client_config(&self.tls)?)),
            AMQPScheme::AMQP => None,
        };
        if self.declare_exchange && self.exchange.is_empty() {
            return Err(SettingError::new(
                "declare_exchange",
                "the default exchange (exchange = \"\") cannot be declared; name an exchange",
            ));
        }
        short_string("amqp_queue.name", &self.amqp_queue.name)?;
        short_string("connection_name", &self.connection_name)?;
        let queue = QueueConfig {
            arguments: field_table(&self.amqp_queue.arguments)?,
            name: self.amqp_queue.name,
            durable: self.amqp_queue.durable,
            auto_delete: self.amqp_queue.auto_delete,
            exclusive: self.amqp_queue.exclusive,
        };
        if self.prefetch == 0 {
            return Err(SettingError::new(
                "prefetch",
                "must be at least 1 (0 would mean unlimited, which breaks backpressure)",
            ));
        }
        if self.max_in_flight == 0 {
            return Err(SettingError::new("max_in_flight", "must be at least 1"));
        }
        Ok(AmqpConfig {
            uri,
            tls_client,
            exchange,
            exchange_type,
            declare_exchange: self.declare_exchange,
            queue,
            prefetch: self.prefetch,
            confirms: self.confirms,
            max_in_flight: self.max_in_flight,
            persistent: self.persistent,
            mandatory: self.mandatory,
            connection_name: self.connection_name,
        })
    }
}

/// `url` without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

fn short_string(key: &str, value: &str) -> Result<ShortString, SettingError> {
    if value.len() > MAX_SHORT_STRING {
        return Err(SettingError::new(
            key,
            format!(
                "at most {MAX_SHORT_STRING} bytes (an AMQP short string), found {}",
                value.len()
            ),
        ));
    }
    Ok(ShortString::from(value))
}

/// Converts `amqp_queue.arguments` to AMQP values: strings, 64-bit integers, doubles, booleans.
fn field_table(
    arguments: &BTreeMap<String, serde_json::Value>,
) -> Result<FieldTable, SettingError> {
    let mut table = FieldTable::default();
    for (name, value) in arguments {
        let path = format!("amqp_queue.arguments.{name}");
        let key = short_string(&path, name)?;
        let value = match value {
            serde_json::Value::String(text) => AMQPValue::LongString(text.as_str().into()),
            serde_json::Value::Bool(flag) => AMQPValue::Boolean(*flag),
            serde_json::Value::Number(number) => match (number.as_i64(), number.as_f64()) {
                (Some(integer), _) => AMQPValue::LongLongInt(integer),
                (None, Some(float)) => AMQPValue::Double(float),
                (None, None) => {
                    return Err(SettingError::new(path, "the number does not fit 64 bits"))
                }
            },
            other => {
                return Err(SettingError::new(
                    path,
                    format!("expected a string, number or boolean, found {other}"),
                ))
            }
        };
        table.insert(key, value);
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_need_no_settings() {
        let config = AmqpConfig::parse(json!({})).expect("defaults are valid");
        assert_eq!(config.uri.authority.host, "127.0.0.1");
        assert_eq!(config.uri.authority.port, 5672);
        assert_eq!(config.uri.vhost, "/");
        assert_eq!(config.uri.query.heartbeat, Some(30));
        assert_eq!(config.exchange.as_str(), "amq.topic");
        assert_eq!(config.exchange_type.as_str(), "topic");
        assert!(config.tls_client.is_none());
        assert!(!config.declare_exchange);
        assert_eq!(config.prefetch, 256);
        assert!(config.confirms && config.persistent && config.mandatory);
        assert_eq!(config.max_in_flight, 1024);
        assert!(config.queue.name.is_empty() && config.queue.durable);
        assert_eq!(
            config.connection_name("hub", "rabbit"),
            "switchyard/hub/rabbit"
        );
    }

    #[test]
    fn every_key_is_read() {
        let config = AmqpConfig::parse(json!({
            "url": "amqp://u:p@rabbit.example:5673/%2fprod",
            "vhost": "other",
            "heartbeat": "5s",
            "exchange": "fedora",
            "exchange_type": "x-delayed-message",
            "declare_exchange": true,
            "amqp_queue": {
                "name": "switchyard",
                "durable": false,
                "auto_delete": true,
                "exclusive": true,
                "arguments": {"x-queue-type": "quorum", "x-max-length": 10, "x-flag": true}
            },
            "prefetch": 10,
            "confirms": false,
            "max_in_flight": 7,
            "persistent": false,
            "mandatory": false,
            "connection_name": "mine"
        }))
        .expect("valid");
        assert_eq!(config.uri.authority.port, 5673);
        assert_eq!(config.uri.vhost, "other");
        assert_eq!(config.uri.query.heartbeat, Some(5));
        assert_eq!(config.exchange_type.as_str(), "x-delayed-message");
        let arguments = config.queue.arguments.inner();
        assert_eq!(
            arguments.get("x-queue-type"),
            Some(&AMQPValue::LongString("quorum".into()))
        );
        assert_eq!(
            arguments.get("x-max-length"),
            Some(&AMQPValue::LongLongInt(10))
        );
        assert_eq!(arguments.get("x-flag"), Some(&AMQPValue::Boolean(true)));
        assert!(!config.confirms && !config.persistent && !config.mandatory);
        assert_eq!(config.max_in_flight, 7);
        assert_eq!(config.connection_name("hub", "rabbit"), "mine");
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (json!({"url": "http://x"}), "url"),
            (json!({"heartbeat": "soon"}), "heartbeat"),
            (json!({"heartbeat": "100000s"}), "heartbeat"),
            (json!({"prefetch": 0}), "prefetch"),
            (json!({"prefetch": 70000}), "prefetch"),
            (json!({"max_in_flight": 0}), "max_in_flight"),
            (json!({"amqp_queue": {"nme": "x"}}), "amqp_queue.nme"),
            (
                json!({"amqp_queue": {"arguments": {"x-bad": [1]}}}),
                "amqp_queue.arguments.x-bad",
            ),
            (json!({"exchange": "x".repeat(300)}), "exchange"),
            (
                json!({"declare_exchange": true, "exchange": ""}),
                "declare_exchange",
            ),
            (json!({"tls": {"cert": "/nonexistent.pem"}}), "tls.key"),
            (json!({"tls": {"ca": "/nonexistent.pem"}}), "tls.ca"),
        ];
        for (value, path) in cases {
            let error = AmqpConfig::parse(value.clone()).expect_err("invalid");
            assert_eq!(error.path, path, "{value}: {error}");
        }
        let error = AmqpConfig::parse(json!({"urll": "x"})).expect_err("unknown key");
        assert!(error.message.contains("unknown field `urll`"), "{error}");
    }

    #[test]
    fn passwords_stay_out_of_messages() {
        assert_eq!(
            redact("amqp://user:secret@host/%2f"),
            "amqp://user:***@host/%2f"
        );
        let error = AmqpConfig::parse(json!({"url": "amqp://user:secret@host:port/"}))
            .expect_err("bad port");
        assert!(!error.message.contains("secret"), "{error}");
    }

    #[test]
    fn a_password_file_replaces_the_urls_password() {
        let file = std::env::temp_dir().join(format!("switchyard-amqp-pw-{}", std::process::id()));
        std::fs::write(&file, "from-file\n").expect("write");
        let config = AmqpConfig::parse(json!({
            "url": "amqp://bridge@127.0.0.1:5672/%2f",
            "password_file": file,
        }))
        .expect("valid");
        std::fs::remove_file(&file).expect("cleanup");
        assert_eq!(config.uri.authority.userinfo.username, "bridge");
        assert_eq!(config.uri.authority.userinfo.password, "from-file");
    }
}
