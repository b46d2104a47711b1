//! Command-line interface.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// switchyard: a multi-protocol message hub (MQTT, AMQP, ZeroMQ, Redis, WebSocket).
#[derive(Debug, Parser)]
#[command(name = "switchyard", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the hub (without -c: the embedded default, which needs no external service).
    Run(ConfigArgs),
    /// Validate the configuration and print the bridges, rules and remote subscriptions.
    Check(ConfigArgs),
    /// Dry run: where would a message with this remote name, arriving on BRIDGE, go?
    Route {
        /// Configuration files.
        #[command(flatten)]
        config: ConfigArgs,
        /// The bridge the message arrives on.
        #[arg(long, value_name = "BRIDGE")]
        from: String,
        /// The message's name as that bridge's remote side spells it.
        name: String,
    },
    /// Measure a path: open-loop load from --from, latency and loss seen at --to.
    Bench(crate::bench::BenchArgs),
    /// Add, change (-b or a prompt) or delete (-D) a user of a users_file.
    Passwd(crate::commands::passwd::PasswdArgs),
    /// Ask a running hub's admin endpoint for /healthz (or /readyz): exit 0 on 200, else 1.
    Health(crate::commands::health::HealthArgs),
}

/// Configuration files, merged in order; environment overrides apply after them.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// A configuration file (repeatable; later files override earlier ones).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub files: Vec<PathBuf>,
}
