//! `padlock-deploy`: parse the command line, start telemetry, run
//! ([`padlock_deploy::cli::run`]).

use clap::Parser;
use padlock_deploy::cli::{self, Cli, SERVICE};
use padlock_runtime::telemetry;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let telemetry = match telemetry::start(SERVICE, cli.common.log_format) {
        Ok(telemetry) => telemetry,
        Err(e) => {
            eprintln!("{SERVICE}: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = cli::run(cli).await;
    telemetry.shutdown().await;
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{SERVICE}: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
