//! Configuration: files merged in order, then `SWITCHYARD_` environment variables, then
//! validation that names the file and key path of the first problem. The only module that
//! touches figment, files and the environment.

mod bridges;
mod error;
mod model;
mod source;

pub use bridges::{plan_bridges, BridgePlan};
pub use error::ConfigError;
pub use model::{AdminSettings, HubSettings, LogFormat, LogSettings, Settings};
pub use source::{load, ConfigSources, EMBEDDED_DEFAULT};

#[cfg(test)]
mod tests;
