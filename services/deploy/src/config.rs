//! Command line and settings for `padlock-deploy`; every flag has a
//! `PADLOCK_*` environment fallback and is checked at start-up.

use padlock_runtime::cli::CommonArgs;

use crate::blobs::DEFAULT_MAX_PACKAGE_BYTES;

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
    /// separate with commas. Default 28800 s (8 h) for every action.
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
