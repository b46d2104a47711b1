//! Settings every bridge shares (`format`, `required`, `queue`, `reconnect`, `topics`,
//! `escape`) and the value types of the configuration language (durations, sizes).
//! The hub reads files and environment; adapters only see `serde_json` values.

use std::time::Duration;

use rand::Rng;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use thiserror::Error;

use crate::queue::{Overflow, QueueLimits};
use crate::rule::RuleConfig;
use crate::spool::SpoolWindow;

/// A configuration value that failed to parse, with its key path inside the bridge table.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{path}: {message}")]
pub struct SettingError {
    /// Key path relative to the bridge's table, e.g. `topics[0].direction`.
    pub path: String,
    /// What was expected and what was found.
    pub message: String,
}

impl SettingError {
    /// An error at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Deserializes `value` into `T`, reporting the key path of the first error.
pub fn parse_settings<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, SettingError> {
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        let path = if path == "." { String::new() } else { path };
        SettingError::new(path, error.into_inner().to_string())
    })
}

/// A duration written like `"500ms"`, `"30s"` or `"2m"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigDuration(pub Duration);

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text)
            .map(ConfigDuration)
            .map_err(|error| {
                serde::de::Error::custom(format!(
                    "expected a duration such as \"500ms\" or \"30s\", found {text:?} ({error})"
                ))
            })
    }
}

/// An optional duration: `""` (or absent) means none.
fn optional_duration<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(deserializer)?;
    if text.is_empty() {
        return Ok(None);
    }
    humantime::parse_duration(&text).map(Some).map_err(|error| {
        serde::de::Error::custom(format!(
            "expected a duration such as \"10m\", or \"\" for none, found {text:?} ({error})"
        ))
    })
}

/// A size in bytes, written as a number or like `"64MiB"`, `"512KiB"`, `"1GB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parses `"64MiB"` style sizes (binary units KiB/MiB/GiB, decimal KB/MB/GB, or B).
    pub fn parse(text: &str) -> Option<ByteSize> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: u64 = number.parse().ok()?;
        let multiplier: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "kB" | "KB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            _ => return None,
        };
        number.checked_mul(multiplier).map(ByteSize)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Number(u64),
            Text(String),
        }
        match Written::deserialize(deserializer)? {
            Written::Number(bytes) => Ok(ByteSize(bytes)),
            Written::Text(text) => ByteSize::parse(&text).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "expected a size such as 65536, \"64MiB\" or \"10MB\", found {text:?}"
                ))
            }),
        }
    }
}

/// How payloads are written on a bridge's remote side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// The payload as is; metadata in protocol headers where the protocol has them.
    Raw,
    /// The JSON envelope of [`crate::envelope`].
    Json,
    /// fedmsg envelopes (ZeroMQ).
    Fedmsg,
    /// fedora-messaging properties and headers (AMQP).
    FedoraMessaging,
}

impl Format {
    /// The word used in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Json => "json",
            Format::Fedmsg => "fedmsg",
            Format::FedoraMessaging => "fedora-messaging",
        }
    }
}

/// `queue = { ... }`: the bridge's outbound queue.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Most messages waiting for this bridge (in memory, or in the spool when one is set).
    #[serde(default = "default_max_messages")]
    pub max_messages: usize,
    /// Most message bytes waiting for this bridge (in memory, or in the spool when one is
    /// set).
    #[serde(default = "default_max_bytes")]
    pub max_bytes: ByteSize,
    /// What a full queue does with QoS 0 messages.
    #[serde(default)]
    pub overflow: Overflow,
    /// Directory of the disk spool (`""` = none). The bridge's spool is the file
    /// `<spool>/<bridge name>.spool`; QoS 1 messages are written there before their source
    /// is acknowledged, messages beyond the memory window wait there, and it is replayed
    /// in order after a restart.
    #[serde(default)]
    pub spool: String,
    /// With a spool: most messages kept in memory; the rest wait on disk.
    #[serde(default = "default_memory_messages")]
    pub memory_messages: usize,
    /// With a spool: most message bytes kept in memory; the rest wait on disk.
    #[serde(default = "default_memory_bytes")]
    pub memory_bytes: ByteSize,
    /// Drop messages that waited longer than this (`""` = never).
    #[serde(default, deserialize_with = "optional_duration")]
    pub ttl: Option<Duration>,
}

fn default_max_messages() -> usize {
    100_000
}

fn default_max_bytes() -> ByteSize {
    ByteSize(64 << 20)
}

/// A window that keeps a fast destination busy without holding much in memory.
fn default_memory_messages() -> usize {
    10_000
}

fn default_memory_bytes() -> ByteSize {
    ByteSize(8 << 20)
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            max_messages: default_max_messages(),
            max_bytes: default_max_bytes(),
            overflow: Overflow::default(),
            spool: String::new(),
            memory_messages: default_memory_messages(),
            memory_bytes: default_memory_bytes(),
            ttl: None,
        }
    }
}

impl QueueConfig {
    /// The limits the hub's queue enforces.
    pub fn limits(&self) -> QueueLimits {
        QueueLimits {
            max_messages: self.max_messages.max(1),
            max_bytes: usize::try_from(self.max_bytes.0).unwrap_or(usize::MAX),
            overflow: self.overflow,
            ttl: self.ttl,
        }
    }

    /// The memory window of a spooled queue.
    pub fn spool_window(&self) -> SpoolWindow {
        SpoolWindow {
            messages: self.memory_messages.max(1),
            bytes: usize::try_from(self.memory_bytes.0).unwrap_or(usize::MAX),
        }
    }
}

/// `reconnect = { initial, max }`: exponential backoff with full jitter.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconnectConfig {
    /// First delay.
    #[serde(default = "default_initial_backoff")]
    pub initial: ConfigDuration,
    /// Largest delay.
    #[serde(default = "default_max_backoff")]
    pub max: ConfigDuration,
}

fn default_initial_backoff() -> ConfigDuration {
    ConfigDuration(Duration::from_millis(500))
}

fn default_max_backoff() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(30))
}

impl Default for ReconnectConfig {
    fn default() -> Self {
        Self {
            initial: default_initial_backoff(),
            max: default_max_backoff(),
        }
    }
}

/// Delays between attempts: doubling from `initial` up to `max`, each drawn uniformly
/// from zero to the current bound ("full jitter"), so many clients do not retry in step.
#[derive(Debug, Clone)]
pub struct Backoff {
    config: ReconnectConfig,
    bound: Duration,
}

impl Backoff {
    /// Starts at the configured initial delay.
    pub fn new(config: ReconnectConfig) -> Self {
        Self {
            bound: config.initial.0,
            config,
        }
    }

    /// The next delay to wait.
    pub fn next_delay(&mut self) -> Duration {
        let bound = self.bound;
        self.bound = (self.bound * 2).min(self.config.max.0.max(self.config.initial.0));
        let millis = bound.as_millis().max(1) as u64;
        Duration::from_millis(rand::rng().random_range(0..=millis))
    }

    /// Back to the initial delay (after a success).
    pub fn reset(&mut self) {
        self.bound = self.config.initial.0;
    }
}

/// The settings every bridge has, as written in its table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommonSettings {
    /// Bridge type (`mqtt-server`, `websocket-server`, ...).
    #[serde(rename = "type")]
    pub kind: String,
    /// Payload format on the remote side; absent means the bridge type's default.
    #[serde(default)]
    pub format: Option<Format>,
    /// Whether `/readyz` waits for this bridge to be up.
    #[serde(default = "yes")]
    pub required: bool,
    /// The outbound queue.
    #[serde(default)]
    pub queue: QueueConfig,
    /// Reconnection (and restart) backoff.
    #[serde(default)]
    pub reconnect: ReconnectConfig,
    /// Percent-encode separators inside levels when names cross separators.
    #[serde(default = "yes")]
    pub escape: bool,
    /// The topic rules.
    #[serde(default)]
    pub topics: Vec<RuleConfig>,
}

fn yes() -> bool {
    true
}

/// The keys of [`CommonSettings`]; every other key of a bridge table is the adapter's.
pub const COMMON_KEYS: &[&str] = &[
    "type",
    "format",
    "required",
    "queue",
    "reconnect",
    "escape",
    "topics",
];

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sizes_and_durations_parse() {
        assert_eq!(ByteSize::parse("64MiB"), Some(ByteSize(64 << 20)));
        assert_eq!(ByteSize::parse("10 kB"), Some(ByteSize(10_000)));
        assert_eq!(ByteSize::parse("12"), Some(ByteSize(12)));
        assert_eq!(ByteSize::parse("12 parsecs"), None);
        let queue: QueueConfig =
            parse_settings(json!({"max_bytes": "1KiB", "ttl": "500ms"})).unwrap();
        assert_eq!(queue.max_bytes, ByteSize(1024));
        assert_eq!(queue.ttl, Some(Duration::from_millis(500)));
    }

    #[test]
    fn errors_name_the_key_path() {
        let error = parse_settings::<CommonSettings>(json!({
            "type": "mqtt-server",
            "topics": [{"pattern": "#", "direction": "sideways"}]
        }))
        .unwrap_err();
        assert_eq!(error.path, "topics[0].direction");
        assert!(error.message.contains("`in`, `out`, `both`"), "{error}");
        let error = parse_settings::<CommonSettings>(json!({"type": "x", "queu": {}})).unwrap_err();
        assert!(error.message.contains("unknown field `queu`"), "{error}");
        let error = parse_settings::<CommonSettings>(
            json!({"type": "x", "reconnect": {"initial": "soon"}}),
        )
        .unwrap_err();
        assert_eq!(error.path, "reconnect.initial");
    }

    #[test]
    fn backoff_grows_to_the_bound() {
        let config = ReconnectConfig {
            initial: ConfigDuration(Duration::from_millis(100)),
            max: ConfigDuration(Duration::from_millis(400)),
        };
        let mut backoff = Backoff::new(config);
        for _ in 0..10 {
            assert!(backoff.next_delay() <= Duration::from_millis(400));
        }
        assert_eq!(backoff.bound, Duration::from_millis(400));
        backoff.reset();
        assert_eq!(backoff.bound, Duration::from_millis(100));
    }
}
