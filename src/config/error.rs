//! A configuration error: where (source and key path) and what.

use thiserror::Error;

/// A problem in the configuration; the hub exits with code 78 (EX_CONFIG) on it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{}{path}: {message}", source_prefix(.origin))]
pub struct ConfigError {
    /// The file (or environment) the offending key came from, when known.
    pub origin: Option<String>,
    /// Full key path, e.g. `bridges.fedmsg.topics[0].direction`.
    pub path: String,
    /// What was expected and what was found.
    pub message: String,
}

fn source_prefix(origin: &Option<String>) -> String {
    origin
        .as_ref()
        .map(|source| format!("{source}: "))
        .unwrap_or_default()
}

impl ConfigError {
    /// An error at `path` whose source is not known yet.
    pub fn at(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            origin: None,
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Joins a key path and a sub-path produced by serde (`topics[0].qos`, `[1]`, or empty).
pub fn join_path(prefix: &str, rest: &str) -> String {
    match (prefix.is_empty(), rest.is_empty()) {
        (_, true) => prefix.to_owned(),
        (true, false) => rest.to_owned(),
        (false, false) if rest.starts_with('[') => format!("{prefix}{rest}"),
        (false, false) => format!("{prefix}.{rest}"),
    }
}
