//! `sluice`: run, check, test and try integration flows written in YAML.

mod admin;
mod allocator;
mod cli;
mod commands;
mod logging;
mod metrics_recorder;
mod openapi;
mod scaffold;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    logging::init(cli.log_format, cli.command.is_quiet());
    match commands::dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
