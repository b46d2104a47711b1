//! Reading configuration files and environment overrides with figment.

use std::path::PathBuf;

use figment::providers::{Env, Format, Toml};
use figment::{Figment, Source};

use super::error::ConfigError;
use super::model::Settings;

/// `config/switchyard.toml`, compiled in: the configuration used when no `-c` is given.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../config/switchyard.toml");

/// Prefix of environment overrides: `SWITCHYARD_BRIDGES__MQTT__LISTEN=0.0.0.0:1883`.
const ENV_PREFIX: &str = "SWITCHYARD_";

/// Separator of key levels in environment variable names.
const ENV_SEPARATOR: &str = "__";

/// The merged configuration and where each key came from.
#[derive(Debug)]
pub struct ConfigSources {
    figment: Figment,
}

impl ConfigSources {
    /// Names the file (or environment) a key path came from, if it can be traced.
    pub fn source_of(&self, path: &str) -> Option<String> {
        // figment tracks provenance per table key; walk up from the most specific key.
        let mut key = dotted_key(path);
        loop {
            if let Some(metadata) = self.figment.find_metadata(&key) {
                return Some(match &metadata.source {
                    Some(Source::File(file)) => file.display().to_string(),
                    Some(Source::Custom(custom)) => custom.clone(),
                    _ => metadata.name.to_string(),
                });
            }
            key = key.rsplit_once('.')?.0.to_owned();
        }
    }

    /// Fills in the source of an error from its key path.
    pub fn locate(&self, mut error: ConfigError) -> ConfigError {
        if error.origin.is_none() {
            error.origin = self.source_of(&error.path);
        }
        error
    }
}

/// `bridges.x.topics[0].qos` -> `bridges.x.topics` (figment keys are table keys only).
fn dotted_key(path: &str) -> String {
    path.split('.')
        .map(|part| part.split('[').next().unwrap_or(part))
        .collect::<Vec<_>>()
        .join(".")
}

/// Merges `files` in order (or the embedded default when there are none), then the
/// environment, and parses the top level.
pub fn load(files: &[PathBuf]) -> Result<(Settings, ConfigSources), ConfigError> {
    let mut figment = Figment::new();
    if files.is_empty() {
        figment = figment.merge(Toml::string(EMBEDDED_DEFAULT));
    }
    for file in files {
        if !file.is_file() {
            return Err(ConfigError {
                origin: Some(file.display().to_string()),
                path: String::new(),
                message: "the configuration file does not exist or is not a file".to_owned(),
            });
        }
        figment = figment.merge(Toml::file_exact(file));
    }
    // Only variables with a nested key (`SECTION__KEY`) are configuration, so unrelated
    // variables that happen to share the prefix are left alone.
    let environment = Env::prefixed(ENV_PREFIX)
        .filter(|key| key.as_str().contains(ENV_SEPARATOR))
        .split(ENV_SEPARATOR);
    figment = figment.merge(environment);
    let sources = ConfigSources { figment };
    let value: figment::value::Value = sources.figment.extract().map_err(figment_error)?;
    let json = serde_json::to_value(&value).map_err(|error| {
        ConfigError::at("", format!("cannot represent the configuration: {error}"))
    })?;
    let settings = serde_path_to_error::deserialize(json).map_err(|error| {
        let path = error.path().to_string();
        let path = if path == "." { String::new() } else { path };
        sources.locate(ConfigError::at(path, error.into_inner().to_string()))
    })?;
    Ok((settings, sources))
}

/// A syntax or type error reported by figment while reading a source.
fn figment_error(error: figment::Error) -> ConfigError {
    let source = error
        .metadata
        .as_ref()
        .map(|metadata| match &metadata.source {
            Some(Source::File(file)) => file.display().to_string(),
            _ => metadata.name.to_string(),
        });
    ConfigError {
        origin: source,
        path: error.path.join("."),
        message: error.kind.to_string(),
    }
}
