//! Turning `[bridges.NAME]` tables into built (not yet started) bridges.

use std::sync::Arc;

use switchyard_api::settings::{parse_settings, COMMON_KEYS};
use switchyard_api::{Bridge, BridgeSpec, BridgeType, Naming, Rule, RuleSet};

use super::error::{join_path, ConfigError};
use super::model::Settings;
use super::source::ConfigSources;
use crate::registry;

/// A validated bridge, ready to be opened and run.
pub struct BridgePlan {
    /// Its type.
    pub kind: &'static dyn BridgeType,
    /// Name, shared settings and compiled rules.
    pub spec: BridgeSpec,
    /// The adapter's bridge.
    pub bridge: Box<dyn Bridge>,
}

/// Validates and builds every bridge, without any network I/O.
pub fn plan_bridges(
    settings: &Settings,
    sources: &ConfigSources,
) -> Result<Vec<BridgePlan>, ConfigError> {
    settings
        .bridges
        .iter()
        .map(|(name, table)| plan_bridge(name, table).map_err(|error| sources.locate(error)))
        .collect()
}

fn plan_bridge(name: &str, table: &serde_json::Value) -> Result<BridgePlan, ConfigError> {
    let path = format!("bridges.{name}");
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
    {
        return Err(ConfigError::at(
            &path,
            format!("a bridge name must match [a-z0-9_-]+, found {name:?}"),
        ));
    }
    let Some(table) = table.as_object() else {
        return Err(ConfigError::at(
            &path,
            "expected a table of bridge settings",
        ));
    };
    let (common, specific): (serde_json::Map<_, _>, serde_json::Map<_, _>) = table
        .clone()
        .into_iter()
        .partition(|(key, _)| COMMON_KEYS.contains(&key.as_str()));
    if !common.contains_key("type") {
        return Err(ConfigError::at(
            format!("{path}.type"),
            format!(
                "missing; expected one of {}",
                registry::type_names().join(", ")
            ),
        ));
    }
    let common: switchyard_api::CommonSettings = parse_settings(common.into())
        .map_err(|error| ConfigError::at(join_path(&path, &error.path), error.message))?;
    let kind = registry::find(&common.kind).ok_or_else(|| {
        ConfigError::at(
            format!("{path}.type"),
            format!(
                "expected one of {}, found {:?}",
                registry::type_names().join(", "),
                common.kind
            ),
        )
    })?;
    let format = match common.format {
        None => kind.formats()[0],
        Some(format) if kind.formats().contains(&format) => format,
        Some(format) => {
            let accepted: Vec<&str> = kind.formats().iter().map(|f| f.as_str()).collect();
            return Err(ConfigError::at(
                format!("{path}.format"),
                format!(
                    "a {} bridge speaks {}, found {:?}",
                    kind.type_name(),
                    accepted.join(" or "),
                    format.as_str()
                ),
            ));
        }
    };
    let naming = Naming {
        escape: common.escape,
        ..kind.naming()
    };
    let rules = common
        .topics
        .iter()
        .enumerate()
        .map(|(index, rule)| {
            Rule::compile(rule, naming).map_err(|error| {
                ConfigError::at(format!("{path}.topics[{index}]"), error.to_string())
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let spec = BridgeSpec {
        name: name.to_owned(),
        common,
        format,
        rules: Arc::new(RuleSet::new(rules)),
    };
    let bridge = kind
        .build(&spec, specific.into())
        .map_err(|error| ConfigError::at(join_path(&path, &error.path), error.message))?;
    Ok(BridgePlan { kind, spec, bridge })
}
