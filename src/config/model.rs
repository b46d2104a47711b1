//! The hub's own settings (`[hub]`, `[admin]`, `[log]`) and the top level of the file.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use switchyard_api::server_tls::ServerTlsSettings;
use switchyard_api::settings::ConfigDuration;

/// The whole configuration; bridge tables stay raw until [`super::plan_bridges`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// `[hub]`.
    #[serde(default)]
    pub hub: HubSettings,
    /// `[admin]`.
    #[serde(default)]
    pub admin: AdminSettings,
    /// `[log]`.
    #[serde(default)]
    pub log: LogSettings,
    /// `[bridges.NAME]` tables, by name.
    #[serde(default)]
    pub bridges: BTreeMap<String, serde_json::Value>,
}

/// `[hub]`: identity and loop guards.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubSettings {
    /// This hub's name: used in `$SYS` topics, client ids and loop guards (default: host name).
    #[serde(default = "default_hub_name")]
    pub name: String,
    /// Drop a message that crossed more hubs than this.
    #[serde(default = "default_max_hops")]
    pub max_hops: u8,
    /// Per-source window of recent message ids for duplicate suppression (0 = off).
    #[serde(default = "default_dedup")]
    pub dedup: usize,
    /// Most topics whose retained message the hub keeps.
    #[serde(default = "default_retained_max")]
    pub retained_max: usize,
    /// How long a stopping hub waits for queues to drain.
    #[serde(default = "default_shutdown_timeout")]
    pub shutdown_timeout: ConfigDuration,
}

fn default_hub_name() -> String {
    gethostname::gethostname()
        .to_string_lossy()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect::<String>()
        .split('.')
        .next()
        .filter(|name| !name.is_empty())
        .unwrap_or("switchyard")
        .to_owned()
}

fn default_max_hops() -> u8 {
    4
}

fn default_dedup() -> usize {
    10_000
}

fn default_retained_max() -> usize {
    100_000
}

fn default_shutdown_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(5))
}

impl Default for HubSettings {
    fn default() -> Self {
        Self {
            name: default_hub_name(),
            max_hops: default_max_hops(),
            dedup: default_dedup(),
            retained_max: default_retained_max(),
            shutdown_timeout: default_shutdown_timeout(),
        }
    }
}

/// `[admin]`: the HTTP endpoint for probes, metrics and the bridge list.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    /// Address of `/healthz`, `/readyz`, `/metrics`, `/api/bridges`; `""` turns it off.
    #[serde(default = "default_admin_listen")]
    pub listen: String,
    /// `{ cert, key, client_ca, require_certificate }`: serve HTTPS (reread on SIGHUP).
    #[serde(default)]
    pub tls: ServerTlsSettings,
}

fn default_admin_listen() -> String {
    "127.0.0.1:9090".to_owned()
}

impl Default for AdminSettings {
    fn default() -> Self {
        Self {
            listen: default_admin_listen(),
            tls: ServerTlsSettings::default(),
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// `error`, `warn`, `info`, `debug`, `trace` or a tracing filter; `RUST_LOG` wins.
    #[serde(default = "default_log_level")]
    pub level: String,
    /// Line format.
    #[serde(default)]
    pub format: LogFormat,
}

fn default_log_level() -> String {
    "info".to_owned()
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            level: default_log_level(),
            format: LogFormat::default(),
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable text.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}
