//! The `steerer` command: start, follow and steer canary rollouts from a shell or a CI job.

mod cli;

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    // Clap prints its own message and exits 2 on bad usage (0 for --help and --version).
    let cli = cli::args::Cli::parse();
    // Logs are for debugging the client itself (STEERER_LOG=debug); stdout stays for results.
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("STEERER_LOG").unwrap_or_else(|_| EnvFilter::new("off")),
        )
        .with_writer(std::io::stderr)
        .init();
    match runtime() {
        Ok(runtime) => ExitCode::from(runtime.block_on(cli::run(cli)).code()),
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(cli::exit::Exit::Failed.code())
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}
