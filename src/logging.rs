//! Log output: `tracing` to standard error, text or JSON; `RUST_LOG` overrides the level.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};

/// Third-party log targets quieted unless `RUST_LOG` says otherwise: lapin logs every
/// returned message and its own close of a channel at WARN/ERROR, which the AMQP adapter
/// already reports once, in its own words, as counters and state changes.
const QUIET_TARGETS: &str = "lapin::returned_messages=off,lapin::channels=off";

/// Installs the global subscriber (once per process).
pub fn init(settings: &LogSettings) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(format!("{},{QUIET_TARGETS}", settings.level)))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let result = match settings.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    // A subscriber installed earlier (tests) stays in place.
    drop(result);
}
