//! `padlock-deploy`: serve gRPC.

use std::sync::Arc;

use clap::Parser;
use padlock_deploy::Options;
use padlock_deploy::config::{Cli, Command};
use padlock_deploy::keys::{FETCH_TIMEOUT, GrpcJwksSource};
use padlock_deploy::operator;
use padlock_deploy::policy::{Policy, parse_max_age_override};
use padlock_runtime::{server, telemetry};

const SERVICE: &str = "padlock-deploy";

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

/// Prints an operator command's one line, or fails with its reason.
#[allow(clippy::print_stdout)]
fn print_line(line: padlock_deploy::error::Result<String>) -> anyhow::Result<()> {
    let line = line.map_err(|e| anyhow::anyhow!(operator::describe(&e)))?;
    println!("{line}");
    Ok(())
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut policy = Policy::default();
    for spec in &cli.deploy.max_age {
        let (action, secs) =
            parse_max_age_override(spec).map_err(|e| anyhow::anyhow!("--max-age {spec}: {e}"))?;
        policy = policy.with_max_age(action, secs);
    }
    if cli.deploy.issuer.trim().is_empty() || cli.deploy.audience.trim().is_empty() {
        anyhow::bail!("--issuer and --audience must not be empty");
    }
    let clock = cli.common.clock();
    let options = Options {
        data_dir: cli.common.data_dir.clone(),
        database_url: cli.common.database_url.clone(),
        issuer: cli.deploy.issuer.clone(),
        audience: cli.deploy.audience.clone(),
        policy,
        max_package_bytes: cli.deploy.max_package_bytes,
        permission_recheck: std::time::Duration::from_millis(cli.deploy.permission_recheck_ms),
    };
    let checkpoints = padlock_deploy::checkpoint_config(&options, &cli.checkpoints);
    match cli.command {
        Some(Command::Apps(command)) => {
            let store = operator::open_store(&options).await?;
            return print_line(operator::apps(&store, &*clock, command).await);
        }
        Some(Command::Team(command)) => {
            let store = operator::open_store(&options).await?;
            return print_line(operator::team(&store, &*clock, command).await);
        }
        Some(Command::Migrate) => return padlock_deploy::migrate(&options).await,
        Some(Command::Audit(command)) => {
            return padlock_deploy::audit(&options, &checkpoints, command).await;
        }
        Some(Command::Serve) | None => {}
    }
    let jwks = GrpcJwksSource::connect_lazy(cli.deploy.auth_url.clone(), FETCH_TIMEOUT)
        .map_err(|e| anyhow::anyhow!("--auth-url: {e}"))?;
    let app = padlock_deploy::open(options.clone(), clock.clone(), Arc::new(jwks)).await?;
    let checkpointing =
        padlock_deploy::start_audit_checkpoints(&options, &checkpoints, clock).await?;
    let listener = server::bind(
        cli.common
            .listen_or(std::net::SocketAddr::from(([127, 0, 0, 1], 50052))),
    )
    .await?;
    let addr = listener.local_addr()?;
    let limits = cli.common.limits();
    let shutdown = server::shutdown_signal();
    server::announce(SERVICE, addr);
    let served = padlock_deploy::serve(app, listener, &limits, shutdown).await;
    // After the drain, so it sees every record the requests appended.
    let _ = checkpointing.finish().await;
    served
}
