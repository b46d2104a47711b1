//! The subcommands; each returns `anyhow` errors, with configuration errors kept as
//! [`crate::config::ConfigError`] so `main` can exit with 78.

pub mod bench;
pub mod check;
pub mod health;
pub mod passwd;
pub mod route;
pub mod run;
