//! switchyard: a multi-protocol message hub.
//!
//! # Layout
//! - [`cli`]: the command line.
//! - [`bench`]: `switchyard bench`, the open-loop load generator and latency probe.
//! - [`commands`]: `run`, `check`, `route` and `bench`.
//! - [`config`]: files and environment merged with figment, validated into bridge plans.
//! - [`registry`]: the bridge types this build knows (one adapter crate each).
//! - [`hub`]: wiring queues, router and bridge contexts together.
//! - [`router`]: the central router: route table, loop and hop guards, duplicates,
//!   retained messages.
//! - [`supervisor`]: runs each bridge and restarts it with backoff when it fails.
//! - [`state_topics`]: the retained `$SYS/switchyard/<hub>/bridges/<name>/state` topics.
//! - [`state`], [`metrics`], [`admin`]: what the admin endpoint shows, and serving it.
//! - [`shutdown`], [`logging`]: signals and log output.

pub mod admin;
pub mod bench;
pub mod cli;
pub mod commands;
pub mod config;
pub mod hub;
pub mod logging;
pub mod metrics;
pub mod registry;
pub mod router;
pub mod shutdown;
pub mod state;
pub mod state_topics;
pub mod supervisor;
