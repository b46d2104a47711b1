//! Settings of a `redis` bridge, their defaults and their validation.

use std::path::PathBuf;
use std::time::Duration;

use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, ProtocolVersion, TlsCertificates};
use serde::Deserialize;
use switchyard_api::instance::instance_id;
use switchyard_api::secret::{resolve_password, Secret};
use switchyard_api::settings::{parse_settings, ConfigDuration};
use switchyard_api::subscription::{redis_subscription, RedisSubscription};
use switchyard_api::{RuleSet, SettingError};

use switchyard_api::tls::TlsSettings;

/// The adapter's own keys of a `type = "redis"` bridge.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    /// The server: `redis://[user:password@]host[:port][/db]`, or `rediss://` for TLS
    /// (certificates checked against `tls.ca`, else the system's roots).
    #[serde(default = "default_url")]
    pub url: String,
    /// ACL user name (Redis 6+); overrides one given in `url`.
    #[serde(default)]
    pub username: Option<String>,
    /// Password (`AUTH`); overrides one given in `url`.
    #[serde(default)]
    pub password: Option<Secret>,
    /// A file holding the password (its final line break ignored), instead of `password`.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Database number (`SELECT`); overrides one given in `url`.
    #[serde(default)]
    pub database: Option<i64>,
    /// For `rediss://`: the authorities to trust and the client certificate to present.
    #[serde(default)]
    pub tls: TlsSettings,
    /// `pubsub` (channels, at most once) or `streams` (consumer groups, at least once).
    #[serde(default)]
    pub mode: Mode,
    /// How long connecting (TCP, TLS, `HELLO`/`AUTH`/`SELECT`) may take.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: ConfigDuration,
    /// How long Redis may take to answer one command or pipeline before the connection is
    /// given up (and the bridge reconnects).
    #[serde(default = "default_response_timeout")]
    pub response_timeout: ConfigDuration,
    /// Most messages sent to Redis in one pipeline (`PUBLISH` or `XADD`).
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// Pub/sub messages buffered between the connection and the hub. When the hub falls
    /// this far behind, further messages are dropped and counted as `lagged`.
    #[serde(default = "default_receive_buffer")]
    pub receive_buffer: usize,
    /// Streams mode: the consumer group and how entries are read and trimmed.
    #[serde(default)]
    pub streams: StreamSettings,
}

/// How the bridge uses Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// `SUBSCRIBE`/`PSUBSCRIBE` in, `PUBLISH` out: fire and forget, like Redis pub/sub.
    #[default]
    Pubsub,
    /// `XREADGROUP`/`XACK` in, `XADD` out: entries survive restarts of either side.
    Streams,
}

/// `streams = { ... }`: consumer group, batching, trimming and claiming.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamSettings {
    /// The consumer group `in` rules read with (created at the stream's end when missing).
    #[serde(default = "default_group")]
    pub group: String,
    /// This bridge's consumer name in the group; default `<hub>-<bridge>-<hostname>-<pid>`,
    /// unique per process so replicas sharing one configuration (and hub name) are
    /// distinct consumers. Set it to a name stable across restarts (e.g. a StatefulSet
    /// pod's) to read the entries it had not acknowledged at once on restart instead of
    /// after `claim_idle`, by whichever replica claims them.
    #[serde(default)]
    pub consumer: Option<String>,
    /// Approximate most entries per stream written by `out` rules (`XADD MAXLEN ~`);
    /// absent means no trimming.
    #[serde(default)]
    pub maxlen: Option<u64>,
    /// How long one `XREADGROUP` waits for new entries.
    #[serde(default = "default_block")]
    pub block: ConfigDuration,
    /// Most entries read per stream at once.
    #[serde(default = "default_count")]
    pub count: usize,
    /// Entries pending this long in the group (their consumer died) are claimed by this
    /// bridge (`XAUTOCLAIM`); also how often it looks for them.
    #[serde(default = "default_claim_idle")]
    pub claim_idle: ConfigDuration,
    /// Most entries read and not yet acknowledged at once (they wait for the hub's
    /// destinations).
    #[serde(default = "default_max_unacked")]
    pub max_unacked: usize,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            group: default_group(),
            consumer: None,
            maxlen: None,
            block: default_block(),
            count: default_count(),
            claim_idle: default_claim_idle(),
            max_unacked: default_max_unacked(),
        }
    }
}

fn default_url() -> String {
    "redis://127.0.0.1:6379".to_owned()
}

fn default_connect_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(10))
}

fn default_response_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(10))
}

fn default_batch() -> usize {
    256
}

fn default_receive_buffer() -> usize {
    10_000
}

fn default_group() -> String {
    "switchyard".to_owned()
}

fn default_block() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(1))
}

fn default_count() -> usize {
    256
}

fn default_claim_idle() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(30))
}

fn default_max_unacked() -> usize {
    4096
}

/// A validated bridge configuration.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// The settings as written.
    pub settings: RedisSettings,
    /// Where and how to connect (credentials and database applied).
    pub connection: ConnectionInfo,
    /// The `tls` files' contents; `None`: the system's authorities, no client certificate.
    pub tls: Option<TlsCertificates>,
    /// Streams mode: the stream key read by each `in` rule, in rule order, no repeats.
    pub stream_keys: Vec<String>,
}

impl RedisConfig {
    /// Parses and validates the adapter's keys against the bridge's rules.
    pub fn parse(value: serde_json::Value, rules: &RuleSet) -> Result<RedisConfig, SettingError> {
        let mut settings: RedisSettings = parse_settings(value)?;
        let file = settings.password_file.take();
        settings.password = resolve_password(settings.password.take(), file.as_deref())?;
        let connection = connection_info(&settings)?;
        let secure = matches!(connection.addr(), ConnectionAddr::TcpTls { .. });
        let tls = crate::tls::certificates(&settings.tls, secure)?;
        for (key, value) in [
            ("batch", settings.batch),
            ("receive_buffer", settings.receive_buffer),
            ("streams.count", settings.streams.count),
            ("streams.max_unacked", settings.streams.max_unacked),
        ] {
            if value == 0 {
                return Err(SettingError::new(key, "must be at least 1"));
            }
        }
        if settings.streams.group.is_empty() {
            return Err(SettingError::new("streams.group", "must not be empty"));
        }
        let stream_keys = match settings.mode {
            Mode::Streams => stream_keys(rules)?,
            Mode::Pubsub => Vec::new(),
        };
        Ok(RedisConfig {
            settings,
            connection,
            tls,
            stream_keys,
        })
    }

    /// The consumer name in the group: configured, else `<hub>-<bridge>-<instance>` (see
    /// [`switchyard_api::instance`]).
    pub fn consumer(&self, hub: &str, bridge: &str) -> String {
        self.settings
            .streams
            .consumer
            .clone()
            .unwrap_or_else(|| format!("{hub}-{bridge}-{}", instance_id()))
    }

    /// `host:port` (never the credentials), for logs and errors.
    pub fn describe(&self) -> String {
        match self.connection.addr() {
            ConnectionAddr::Tcp(host, port) => format!("redis://{host}:{port}"),
            ConnectionAddr::TcpTls { host, port, .. } => format!("rediss://{host}:{port}"),
            other => format!("{other}"),
        }
    }
}

/// The connection details from `url`, with `username`, `password` and `database` applied.
fn connection_info(settings: &RedisSettings) -> Result<ConnectionInfo, SettingError> {
    let scheme = settings.url.split_once("://").map(|(scheme, _)| scheme);
    if !matches!(scheme, Some("redis" | "rediss")) {
        return Err(SettingError::new(
            "url",
            format!(
                "expected a URL such as redis://127.0.0.1:6379 or rediss://host:6380, found {:?}",
                settings.url
            ),
        ));
    }
    let info = settings
        .url
        .as_str()
        .into_connection_info()
        .map_err(|error| SettingError::new("url", format!("{:?}: {error}", settings.url)))?;
    let mut redis = info.redis_settings().clone();
    if let Some(username) = &settings.username {
        redis = redis.set_username(username);
    }
    if let Some(password) = &settings.password {
        redis = redis.set_password(password.expose());
    }
    if let Some(database) = settings.database {
        if database < 0 {
            return Err(SettingError::new("database", "must be 0 or more"));
        }
        redis = redis.set_db(database);
    }
    // RESP2 everywhere: replies have one shape; pub/sub uses its own connection.
    Ok(info.set_redis_settings(redis.set_protocol(ProtocolVersion::RESP2)))
}

/// The stream key of every `in` rule; each must be literal, so that it names one stream.
fn stream_keys(rules: &RuleSet) -> Result<Vec<String>, SettingError> {
    let mut keys: Vec<String> = Vec::new();
    for (index, rule) in rules.rules().iter().enumerate() {
        if !rule.direction.is_in() {
            continue;
        }
        match redis_subscription(rule) {
            RedisSubscription::Channel(key) => {
                if !keys.contains(&key) {
                    keys.push(key);
                }
            }
            RedisSubscription::Pattern(_) => {
                return Err(SettingError::new(
                    format!("topics[{index}].pattern"),
                    format!(
                        "in streams mode an in rule reads one stream, so its pattern must be a \
                         topic without wildcards, found {:?}",
                        rule.filter.as_str()
                    ),
                ))
            }
        }
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use switchyard_api::{Direction, Naming, QoS, Rule, RuleConfig};

    fn rules(patterns: &[(&str, Direction)]) -> RuleSet {
        RuleSet::new(
            patterns
                .iter()
                .map(|(pattern, direction)| {
                    let config = RuleConfig {
                        pattern: (*pattern).into(),
                        direction: *direction,
                        qos: QoS::AtLeastOnce,
                        local_prefix: String::new(),
                        remote_prefix: "app.".into(),
                    };
                    Rule::compile(&config, Naming::DOTTED).expect("valid rule")
                })
                .collect(),
        )
    }

    #[test]
    fn defaults_and_credentials_apply() {
        let config = RedisConfig::parse(
            json!({"url": "redis://old:pw@127.0.0.1:7000/2", "username": "hub",
                   "password": "secret", "database": 3}),
            &RuleSet::default(),
        )
        .expect("valid settings");
        let redis = config.connection.redis_settings();
        assert_eq!(
            (redis.username(), redis.password(), redis.db()),
            (Some("hub"), Some("secret"), 3)
        );
        assert_eq!(config.describe(), "redis://127.0.0.1:7000");
        assert_eq!(config.settings.mode, Mode::Pubsub);
        assert_eq!(config.settings.streams.group, "switchyard");
        assert_eq!(config.settings.streams.block.0, Duration::from_secs(1));
        assert_eq!(
            config.consumer("hub", "cache"),
            format!("hub-cache-{}", instance_id())
        );
        let default = RedisConfig::parse(json!({}), &RuleSet::default()).expect("defaults");
        assert_eq!(default.describe(), "redis://127.0.0.1:6379");
    }

    #[test]
    fn bad_settings_name_their_key() {
        let cases = [
            (json!({"url": "http://x"}), "url"),
            (json!({"mode": "lists"}), "mode"),
            (json!({"batch": 0}), "batch"),
            (json!({"database": -1}), "database"),
            (json!({"streams": {"block": "soon"}}), "streams.block"),
            (json!({"streams": {"grup": "x"}}), "streams.grup"),
        ];
        for (value, path) in cases {
            let error = RedisConfig::parse(value.clone(), &RuleSet::default())
                .expect_err("invalid settings");
            assert_eq!(error.path, path, "{value}: {error}");
        }
    }

    #[test]
    fn streams_in_rules_must_be_literal() {
        let literal = rules(&[
            ("orders", Direction::In),
            ("x/#", Direction::Out),
            ("orders", Direction::Both),
            ("a/b", Direction::In),
        ]);
        let config = RedisConfig::parse(json!({"mode": "streams"}), &literal).expect("valid");
        assert_eq!(config.stream_keys, ["app.orders", "app.a.b"]);
        let wildcard = rules(&[("orders", Direction::In), ("a/+", Direction::Both)]);
        let error =
            RedisConfig::parse(json!({"mode": "streams"}), &wildcard).expect_err("wildcard in");
        assert_eq!(error.path, "topics[1].pattern");
        assert!(
            RedisConfig::parse(json!({}), &wildcard).is_ok(),
            "pubsub takes wildcards"
        );
    }
}
