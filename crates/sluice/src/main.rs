//! `sluice`: run, check, test and try integration flows written in YAML.

mod admin;
mod cli;
mod commands;
mod logging;
mod metrics_recorder;
mod openapi;
mod scaffold;

use clap::Parser;
use std::process::ExitCode;

/// The process allocator. With glibc's malloc a third of the CPU time on the broker path went
/// to its arena locks and free-list consolidation (perf, bench/README.md); mimalloc's
/// thread-local heaps avoid both.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
