//! The `padlock-deploy` command line and what it runs ([`run`]): serving,
//! the operator commands, migrations and the audit checks. Every flag has
//! a `PADLOCK_*` environment fallback and is checked at start-up.

use std::sync::Arc;

use padlock_runtime::cli::CommonArgs;
use padlock_runtime::server;

use crate::Options;
use crate::blobs::DEFAULT_MAX_PACKAGE_BYTES;
use crate::keys::{FETCH_TIMEOUT, GrpcJwksSource};
use crate::operator;
use crate::policy::{Policy, parse_max_age_override};

/// The name the service announces itself and logs under.
pub const SERVICE: &str = "padlock-deploy";

#[derive(Debug, clap::Parser)]
#[command(
    name = "padlock-deploy",
    version,
    about = "padlock's deploy service: apps, packages, transports, node permissions"
)]
pub struct Cli {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub deploy: DeployArgs,
    #[command(flatten)]
    pub checkpoints: padlock_runtime::checkpoint::CheckpointArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Serve gRPC (the default).
    Serve,
    /// Create apps on the server (operators: no token, no second factor).
    #[command(subcommand)]
    Apps(crate::operator::AppsCommand),
    /// Change an app's team on the server (operators).
    #[command(subcommand)]
    Team(crate::operator::TeamCommand),
    /// Apply pending database migrations and exit (run once before rolling
    /// out replicas; serving also migrates, idempotently).
    Migrate,
    /// Check the audit trail's hash chain.
    #[command(subcommand)]
    Audit(padlock_runtime::audit::AuditCommand),
}

#[derive(Debug, Clone, clap::Args)]
pub struct DeployArgs {
    /// Where padlock-auth serves gRPC (for its JWKS).
    #[arg(
        long,
        env = "PADLOCK_AUTH_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    pub auth_url: String,
    /// The `iss` tokens must carry.
    #[arg(long, env = "PADLOCK_ISSUER", default_value = "padlock-auth")]
    pub issuer: String,
    /// The `aud` tokens must carry: this service.
    #[arg(long, env = "PADLOCK_AUDIENCE", default_value = "padlock-deploy")]
    pub audience: String,
    /// Per-action step-up window, e.g. `transport_package=3600`; repeat or
    /// separate with commas. Default 8 h (`policy::MaxAge::DEFAULT`) for
    /// every action.
    #[arg(long = "max-age", env = "PADLOCK_MAX_AGE", value_delimiter = ',')]
    pub max_age: Vec<String>,
    /// Largest package accepted, in bytes.
    #[arg(long, env = "PADLOCK_MAX_PACKAGE_BYTES", default_value_t = DEFAULT_MAX_PACKAGE_BYTES)]
    pub max_package_bytes: u64,
    /// At most how many milliseconds CheckAccess may go on answering from
    /// cached permissions after another replica changed them (this
    /// replica's own changes count at once); 0 checks the database on
    /// every call. Padlocked actions always read the database.
    #[arg(long, env = "PADLOCK_PERMISSION_RECHECK_MS", default_value_t = 1000)]
    pub permission_recheck_ms: u64,
}

/// Prints an operator command's one line, or fails with its reason.
#[allow(clippy::print_stdout)]
fn print_line(line: crate::error::Result<String>) -> anyhow::Result<()> {
    let line = line.map_err(|e| anyhow::anyhow!(operator::describe(&e)))?;
    println!("{line}");
    Ok(())
}

/// Runs what `cli` asks for: an operator command, a migration, an audit
/// check, or (by default) the service until a shutdown signal.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut policy = Policy::default();
    for spec in &cli.deploy.max_age {
        let (action, max_age) =
            parse_max_age_override(spec).map_err(|e| anyhow::anyhow!("--max-age {spec}: {e}"))?;
        policy = policy.with_max_age(action, max_age);
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
    let checkpoints = crate::checkpoint_config(&options, &cli.checkpoints);
    match cli.command {
        Some(Command::Apps(command)) => {
            let store = operator::open_store(&options).await?;
            return print_line(operator::apps(&store, &*clock, command).await);
        }
        Some(Command::Team(command)) => {
            let store = operator::open_store(&options).await?;
            return print_line(operator::team(&store, &*clock, command).await);
        }
        Some(Command::Migrate) => return crate::migrate(&options).await,
        Some(Command::Audit(command)) => {
            return crate::audit(&options, &checkpoints, command).await;
        }
        Some(Command::Serve) | None => {}
    }
    let jwks = GrpcJwksSource::connect_lazy(cli.deploy.auth_url.clone(), FETCH_TIMEOUT)
        .map_err(|e| anyhow::anyhow!("--auth-url: {e}"))?;
    let app = crate::open(options.clone(), clock.clone(), Arc::new(jwks)).await?;
    let checkpointing = crate::start_audit_checkpoints(&options, &checkpoints, clock).await?;
    let listener = server::bind(
        cli.common
            .listen_or(std::net::SocketAddr::from(([127, 0, 0, 1], 50052))),
    )
    .await?;
    let addr = listener.local_addr()?;
    let limits = cli.common.limits();
    let shutdown = server::shutdown_signal();
    server::announce(SERVICE, addr);
    let served = crate::serve(app, listener, &limits, shutdown).await;
    // After the drain, so it sees every record the requests appended.
    let _ = checkpointing.finish().await;
    served
}
