//! padlock's deploy service: apps and their teams, environments, deployment
//! packages and their way to production, node permissions, the padlock
//! policy and the deploy audit trail. Tokens are verified against auth's
//! JWKS; the service never holds a private key and never calls auth per
//! request. `main.rs` is a thin shell over [`cli::run`], so tests can run
//! the service in-process ([`open`], [`serve`], [`routes`]).
//!
//! Layers, outside in: `grpc` (adapters: decode, validate, encode) over
//! `service` (one use case per operation, owning its transaction and audit
//! record) over [`policy`] (the domain: vocabulary, padlock table, the
//! step-up decision, the RPC rule table) and `store` (the database).

mod blobs;
mod cache;
pub mod cli;
mod error;
mod grpc;
mod keys;
mod metrics;
pub mod operator;
pub mod policy;
mod service;
mod store;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use padlock_proto::deploy::v1::{
    app_service_server::AppServiceServer, node_service_server::NodeServiceServer,
    package_service_server::PackageServiceServer,
    permission_service_server::PermissionServiceServer, policy_service_server::PolicyServiceServer,
};
use padlock_runtime::{Secret, SharedClock, checkpoint, server};
use tokio::net::TcpListener;
use tonic::service::Routes;

pub use error::DeployError;
pub use keys::{FetchError, JwksSource};
pub use service::App;

/// Largest chunk accepted in one `UploadPackageRequest`.
pub const MAX_UPLOAD_CHUNK_BYTES: usize = blobs::MAX_CHUNK_BYTES;

/// What tests that must look behind the gRPC surface may read and append:
/// the store ([`App::store`]) and its audit records. Not for clients.
#[doc(hidden)]
pub mod inspect {
    pub use crate::store::{AuditEvent, AuditRecord, Outcome, Store, verify_audit_chain};
}

/// Everything needed to open the service's state.
#[derive(Debug, Clone)]
pub struct Options {
    pub data_dir: PathBuf,
    /// Default: SQLite in `data_dir`. May hold a password.
    pub database_url: Option<Secret<String>>,
    pub issuer: String,
    pub audience: String,
    pub policy: policy::Policy,
    pub max_package_bytes: u64,
    /// How stale `CheckAccess` may see another replica's permission
    /// changes (the holdings cache).
    pub permission_recheck: std::time::Duration,
}

impl Options {
    /// The default [`Options::permission_recheck`].
    pub const DEFAULT_PERMISSION_RECHECK: std::time::Duration = cache::DEFAULT_PERMISSION_RECHECK;

    /// Defaults for everything, state in `data_dir`.
    pub fn in_dir(data_dir: impl Into<PathBuf>) -> Self {
        Options {
            data_dir: data_dir.into(),
            database_url: None,
            issuer: "padlock-auth".into(),
            audience: "padlock-deploy".into(),
            policy: policy::Policy::default(),
            max_package_bytes: blobs::DEFAULT_MAX_PACKAGE_BYTES,
            permission_recheck: cache::DEFAULT_PERMISSION_RECHECK,
        }
    }
}

/// Opens the database (running migrations) and the package store; keys
/// come from `jwks` (auth's `GetJwks` in production).
pub async fn open(
    options: Options,
    clock: SharedClock,
    jwks: Arc<dyn JwksSource>,
) -> anyhow::Result<App> {
    ensure_private_dir(&options.data_dir)?;
    let url = database_url(&options);
    let store = store::Store::connect(&url)
        .await
        .map_err(|e| anyhow::anyhow!("cannot open the database: {e}"))?;
    let blobs = blobs::BlobStore::open(
        &options.data_dir.join("packages"),
        options.max_package_bytes,
    )?;
    let keys = keys::KeyCache::new(jwks, options.issuer, options.audience, clock.clone());
    Ok(App::new(
        store,
        clock,
        keys,
        options.policy,
        blobs,
        options.permission_recheck,
    ))
}

/// The database URL `options` name: the configured one or SQLite in the
/// data directory.
fn database_url(options: &Options) -> String {
    options
        .database_url
        .as_ref()
        .map(|u| u.expose().clone())
        .unwrap_or_else(|| {
            format!(
                "sqlite://{}?mode=rwc",
                options.data_dir.join("deploy.db").display()
            )
        })
}

/// Applies pending migrations to the configured database, and nothing else.
pub(crate) async fn migrate(options: &Options) -> anyhow::Result<()> {
    ensure_private_dir(&options.data_dir)?;
    store::Store::connect(&database_url(options))
        .await
        .map_err(|e| anyhow::anyhow!("cannot migrate the database: {e}"))?;
    tracing::info!("migrations applied");
    Ok(())
}

/// The deploy audit trail as its checkpoints name it: the table of the
/// store's chain (`store/audit_chain.rs`).
const AUDIT_TRAIL: checkpoint::Trail = checkpoint::Trail {
    service: "padlock-deploy",
    table: "audit_events",
};

/// Where deploy keeps its audit checkpoints and their key
/// (`--audit-checkpoint*`); deploy has no data keys, so the key file is
/// PKCS#8 PEM (0600).
pub(crate) fn checkpoint_config(
    options: &Options,
    args: &checkpoint::CheckpointArgs,
) -> checkpoint::CheckpointConfig {
    args.config(&options.data_dir)
}

/// `audit verify` (the chain, then every checkpoint of its head) and
/// `audit checkpoint-key`, on the configured database without migrating
/// it. A broken chain or records a checkpoint saw and the chain lost are
/// an error naming them.
pub(crate) async fn audit(
    options: &Options,
    checkpoints: &checkpoint::CheckpointConfig,
    command: padlock_runtime::audit::AuditCommand,
) -> anyhow::Result<()> {
    let url = database_url(options);
    checkpoint::run_command(command, &url, AUDIT_TRAIL, checkpoints, |expect| {
        store::verify_audit_chain(&url, expect)
    })
    .await?;
    Ok(())
}

/// Checkpoints the audit trail's head (after [`open`] migrated the
/// database): one now, then on `checkpoints.interval` while it moves;
/// [`checkpoint::Running::finish`] writes the last one after serving.
pub(crate) async fn start_audit_checkpoints(
    options: &Options,
    checkpoints: &checkpoint::CheckpointConfig,
    clock: SharedClock,
) -> anyhow::Result<checkpoint::Running> {
    let checkpointer =
        checkpoint::Checkpointer::open(&database_url(options), AUDIT_TRAIL, checkpoints, clock)
            .await
            .map_err(|e| anyhow::anyhow!("audit checkpoints: {e}"))?;
    checkpointer
        .spawn(checkpoints.interval)
        .await
        .map_err(|e| anyhow::anyhow!("audit checkpoints: {e}"))
}

/// Serves every deploy gRPC service ([`routes`]), plus health and
/// reflection, on `listener` within `limits` until `shutdown` resolves;
/// uploads and backup downloads get the stream timeout.
pub async fn serve(
    app: App,
    listener: TcpListener,
    limits: &server::Limits,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    use grpc::{Apps, Nodes, Packages, Permissions, Policies};
    let (health, routes) = server::base_routes(padlock_proto::DEPLOY_DESCRIPTOR_SET)?;
    let routes = add_services(routes, &app);
    let limits = server::Limits {
        streaming_methods: vec![
            "/padlock.deploy.v1.PackageService/UploadPackage",
            "/padlock.deploy.v1.NodeService/DownloadBackup",
        ],
        ..limits.clone()
    };
    health.set_serving::<AppServiceServer<Apps>>().await;
    health.set_serving::<PackageServiceServer<Packages>>().await;
    health.set_serving::<NodeServiceServer<Nodes>>().await;
    health
        .set_serving::<PermissionServiceServer<Permissions>>()
        .await;
    health.set_serving::<PolicyServiceServer<Policies>>().await;
    let _watcher = {
        use tonic::server::NamedService;
        let app = app.clone();
        padlock_runtime::health::watch_database(
            health,
            vec![
                AppServiceServer::<Apps>::NAME,
                PackageServiceServer::<Packages>::NAME,
                NodeServiceServer::<Nodes>::NAME,
                PermissionServiceServer::<Permissions>::NAME,
                PolicyServiceServer::<Policies>::NAME,
            ],
            padlock_runtime::health::interval_from_env(),
            move || {
                let app = app.clone();
                async move { app.store().ping().await }
            },
        )
    };
    server::serve(listener, routes, &limits, shutdown).await?;
    Ok(())
}

/// Every deploy gRPC service of `app`, for serving in-process (the fuzz
/// harness): no health, no reflection, no transport limits.
pub fn routes(app: &App) -> Routes {
    add_services(Routes::default(), app)
}

/// `routes` with every deploy service of `app` added. Request messages are
/// held to [`server::MAX_REQUEST_MESSAGE_BYTES`], except `PackageService`'s,
/// whose upload chunks may reach [`MAX_UPLOAD_CHUNK_BYTES`].
fn add_services(routes: Routes, app: &App) -> Routes {
    use grpc::{Apps, Nodes, Packages, Permissions, Policies};
    use server::{MAX_REQUEST_MESSAGE_BYTES as MAX_IN, MAX_RESPONSE_MESSAGE_BYTES as MAX_OUT};
    routes
        .add_service(
            AppServiceServer::new(Apps(app.clone()))
                .max_decoding_message_size(MAX_IN)
                .max_encoding_message_size(MAX_OUT),
        )
        .add_service(
            // A chunk plus its framing and the oneof tag.
            PackageServiceServer::new(Packages(app.clone()))
                .max_decoding_message_size(blobs::MAX_CHUNK_BYTES + 1024)
                .max_encoding_message_size(MAX_OUT),
        )
        .add_service(
            NodeServiceServer::new(Nodes(app.clone()))
                .max_decoding_message_size(MAX_IN)
                .max_encoding_message_size(MAX_OUT),
        )
        .add_service(
            PermissionServiceServer::new(Permissions(app.clone()))
                .max_decoding_message_size(MAX_IN)
                .max_encoding_message_size(MAX_OUT),
        )
        .add_service(
            PolicyServiceServer::new(Policies(app.clone()))
                .max_decoding_message_size(MAX_IN)
                .max_encoding_message_size(MAX_OUT),
        )
}

fn ensure_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}
