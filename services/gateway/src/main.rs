//! `padlock-gateway`: serve the web UI and its HTTP/JSON API.

use clap::Parser;
use padlock_gateway::{Cli, DEFAULT_LISTEN, Gateway};
use padlock_runtime::{server, telemetry};

const SERVICE: &str = "padlock-gateway";

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
    let result = run(cli).await;
    telemetry.shutdown().await;
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{SERVICE}: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let limits = cli.common.limits();
    let gateway = Gateway::new(&cli.gateway, &limits)?;
    let listener = server::bind(cli.common.listen_or(DEFAULT_LISTEN)).await?;
    let addr = listener.local_addr()?;
    let shutdown = server::shutdown_signal();
    server::announce(SERVICE, addr);
    padlock_gateway::serve(gateway, listener, &limits, shutdown).await
}
