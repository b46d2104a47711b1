//! switchyard: a multi-protocol message hub.
//!
//! # Layout
//! - [`cli`]: the command line.
//! - [`bench`]: `switchyard bench`, the open-loop load generator and latency probe.
//! - [`commands`]: `run`, `check`, `route` and `bench`.
//! - [`config`]: files and environment merged with figment, validated into bridge plans.
//! - [`registry`]: the bridge types this build knows (one adapter crate each).
//! - [`hub`]: wiring queues, router and bridge contexts together, and replacing them on
//!   reload.
//! - [`reload`]: SIGHUP and `POST /api/reload` requests to re-read the configuration.
//! - [`router`]: the central router: route table, loop and hop guards, duplicates,
//!   retained messages.
//! - [`spool`]: opening each spooled bridge's disk file (redb), replay and damage handling.
//! - [`supervisor`]: runs each bridge and restarts it with backoff when it fails.
//! - [`state_topics`]: the retained `$SYS/switchyard/<hub>/bridges/<name>/state` topics.
//! - [`state`], [`metrics`], [`admin`]: what the admin endpoint shows, and serving it.
//! - [`admin_tls`]: the admin endpoint over HTTPS.
//! - [`shutdown`], [`logging`]: signals and log output.

pub mod admin;
pub mod admin_tls;
pub mod bench;
pub mod cli;
pub mod commands;
pub mod config;
pub mod hub;
pub mod logging;
pub mod metrics;
pub mod registry;
pub mod reload;
pub mod router;
pub mod shutdown;
pub mod spool;
pub mod state;
pub mod state_topics;
pub mod supervisor;
