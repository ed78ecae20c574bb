//! `padlock-bench`: run one load scenario (or a bulk load of users), print
//! the table, optionally write JSON. Exits 1 when any measured request
//! failed or a phase got no answer, 2 when the setup or a connection failed.

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser as _;
use padlock_bench::cli::{Cli, Command};
use padlock_bench::report::Report;
use padlock_bench::{bulk, scenario};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(threads) = cli.threads {
        runtime.worker_threads(threads.max(1));
    }
    let result = runtime
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(run(&cli)));
    match result {
        Ok(Some(report)) if !report.clean() => {
            eprintln!("padlock-bench: some requests failed or a phase got no answer");
            ExitCode::from(1)
        }
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("padlock-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The scenario's report; `None` for `bulk-users`, which measures no RPC.
async fn run(cli: &Cli) -> anyhow::Result<Option<Report>> {
    let report = match &cli.command {
        Command::BulkUsers(args) => {
            bulk::run(args, cli.json.as_deref()).await?;
            return Ok(None);
        }
        Command::Health { addr, load } => scenario::health(addr, load).await?,
        Command::CheckAccess {
            auth,
            deploy,
            users,
            refused,
            support,
            load,
        } => scenario::check_access(auth, deploy, *users, *refused, support, load).await?,
        Command::Transport {
            auth,
            deploy,
            gateway,
            users,
            support,
            load,
        } => scenario::transport(auth, deploy, gateway, *users, support, load).await?,
        Command::Verify {
            auth,
            users,
            existing,
            bulk,
            support,
            load,
        } => scenario::verify(auth, *users, *existing, bulk, support, load).await?,
        Command::SignIn {
            auth,
            users,
            support,
            load,
        } => scenario::sign_in(auth, *users, support, load).await?,
        Command::Refresh {
            auth,
            users,
            support,
            load,
        } => scenario::refresh(auth, *users, support, load).await?,
    };
    let mut out = std::io::stdout().lock();
    report.write_table(&mut out)?;
    out.flush()?;
    if let Some(path) = &cli.json {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, json + "\n")
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    }
    Ok(Some(report))
}
