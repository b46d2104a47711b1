//! The `switchyard` binary: parse the command line, run the command, map errors to exit
//! codes (78 for configuration errors, as sysexits' EX_CONFIG; 1 otherwise).

use std::process::ExitCode;

use clap::Parser;
use switchyard::cli::{Cli, Command};
use switchyard::commands;
use switchyard::config::ConfigError;

/// Exit code for configuration errors (EX_CONFIG).
const EXIT_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Bench(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|runtime| runtime.block_on(commands::bench::bench(&args))),
        Command::Check(config) => commands::check::check(&config.files),
        Command::Passwd(args) => commands::passwd::passwd(&args),
        Command::Health(args) => commands::health::health(&args),
        Command::Route { config, from, name } => {
            commands::route::route(&config.files, &from, &name)
        }
        Command::Run(config) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|runtime| runtime.block_on(commands::run::run(&config.files))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if error.downcast_ref::<ConfigError>().is_some() => {
            eprintln!("switchyard: configuration error: {error:#}");
            eprintln!("Fix the key above, then try `switchyard check -c FILE`.");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(error) => {
            eprintln!("switchyard: {error:#}");
            ExitCode::FAILURE
        }
    }
}
