//! padlock's auth service: users and primary sign-in, sessions, second-factor
//! enrollment and verification, signing keys and JWKS, support, and the auth
//! audit trail. `main.rs` is a thin shell around [`open`] and [`serve`], so
//! tests can start the whole service in-process; [`routes`] serves the same
//! RPCs without a listener.
//!
//! Layers: `grpc` (one module per service: validate, call, answer) ->
//! `factor` (the second factors behind one trait, and their use cases:
//! enrollment, code checks, SMS sending) -> `store` (every rule that must
//! hold under concurrency, as a statement in the database). `sealing` keeps
//! secrets sealed at rest; `app` holds the state a request needs.

pub(crate) mod app;
pub mod config;
pub mod data_keys;
pub mod error;
pub(crate) mod factor;
pub mod grpc;
mod harness;
pub mod import;
pub mod key_files;
pub(crate) mod metrics;
pub mod password;
pub mod rules;
pub mod sealing;
pub mod store;
pub mod throttle;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use padlock_proto::auth::v1::{
    key_service_server::KeyServiceServer, session_service_server::SessionServiceServer,
    support_service_server::SupportServiceServer,
    two_factor_service_server::TwoFactorServiceServer,
};
use padlock_runtime::{Secret, SharedClock, checkpoint, health, server};
use tokio::net::TcpListener;

pub use app::{App, KeySource};
pub use config::Settings;
pub use factor::sms::{self, phone};
pub use factor::totp;
pub use harness::SessionTokens;

/// Everything needed to open the service's state.
#[derive(Debug, Clone)]
pub struct Options {
    pub data_dir: PathBuf,
    /// Default: SQLite in `data_dir`. May hold a password.
    pub database_url: Option<Secret<String>>,
    pub settings: Settings,
    /// Default: `data_dir/keys`.
    pub signing_keys: Option<KeySource>,
    /// Default: `data_dir/data-keys`, generated (development only).
    pub data_keys: Option<sealing::DataKeySource>,
    /// How SMS codes go out; `None` refuses SMS enrollment.
    pub sms: Option<Arc<dyn sms::SmsSender>>,
}

impl Options {
    /// The configured signing keys, or the key directory in `data_dir`.
    pub fn key_source(&self) -> KeySource {
        self.signing_keys
            .clone()
            .unwrap_or_else(|| KeySource::Dir(self.data_dir.join("keys")))
    }

    /// The configured data keys, or the generated file in `data_dir`.
    pub fn data_key_source(&self) -> sealing::DataKeySource {
        self.data_keys
            .clone()
            .unwrap_or_else(|| sealing::DataKeySource::Generated(self.data_dir.join("data-keys")))
    }

    /// Defaults for everything, state in `data_dir`.
    pub fn in_dir(data_dir: impl Into<PathBuf>) -> Self {
        Options {
            data_dir: data_dir.into(),
            database_url: None,
            settings: Settings::default(),
            signing_keys: None,
            data_keys: None,
            sms: None,
        }
    }
}

/// Creates the data directory (0700), opens the database (running
/// migrations) and loads or generates the keys.
pub async fn open(options: Options, clock: SharedClock) -> anyhow::Result<App> {
    ensure_private_dir(&options.data_dir)?;
    let url = database_url(&options);
    let store = store::Store::connect(&url)
        .await
        .map_err(|e| anyhow::anyhow!("cannot open the database: {e}"))?;
    let data_keys = options.data_key_source();
    if let Some(path) = data_keys
        .path()
        .filter(|p| p.starts_with(&options.data_dir))
    {
        tracing::warn!(
            path = %path.display(),
            "the data keys are stored in the data directory, beside the secrets they seal: \
             development only; in production give --data-keys-file outside it or PADLOCK_DATA_KEYS"
        );
    }
    let sms = options
        .sms
        .clone()
        .unwrap_or_else(|| Arc::new(sms::Unconfigured));
    App::new(
        store,
        clock,
        options.settings.clone(),
        options.key_source(),
        data_keys,
        sms,
    )
    .await
}

/// Applies pending migrations to the configured database, and nothing else.
pub async fn migrate(options: &Options) -> anyhow::Result<()> {
    ensure_private_dir(&options.data_dir)?;
    let url = database_url(options);
    store::Store::connect(&url)
        .await
        .map_err(|e| anyhow::anyhow!("cannot migrate the database: {e}"))?;
    tracing::info!("migrations applied");
    Ok(())
}

/// The auth audit trail as its checkpoints name it: the table of the
/// store's chain (`store/audit_chain.rs`).
pub(crate) const AUDIT_TRAIL: checkpoint::Trail = checkpoint::Trail {
    service: "padlock-auth",
    table: "audit_events",
};

/// Where auth keeps its audit checkpoints and their key (`--audit-checkpoint*`).
/// The key is sealed under the data keys like the signing key files
/// ([`key_files`]), so the data directory holds no private key in clear;
/// the service seals it again under the current data key when it starts
/// and when it reloads its keys ([`checkpoint::reseal_key`]). A key file
/// the operator names is sealed only if it is sealed already: it may be
/// on a read-only mount.
pub fn checkpoint_config(
    options: &Options,
    args: &checkpoint::CheckpointArgs,
) -> checkpoint::CheckpointConfig {
    let upgrade = if args.audit_checkpoint_key.is_some() {
        key_files::Upgrade::OlderOnly
    } else {
        key_files::Upgrade::ClearAndOlder
    };
    checkpoint::CheckpointConfig {
        key_format: Arc::new(SealedCheckpointKey {
            data_keys: options.data_key_source(),
            upgrade,
        }),
        ..args.config(&options.data_dir)
    }
}

/// See [`checkpoint_config`]. Loads the data keys at each use: the key file
/// is read at start, at a reload and by the CLI, never per request.
#[derive(Debug)]
struct SealedCheckpointKey {
    data_keys: sealing::DataKeySource,
    upgrade: key_files::Upgrade,
}

impl checkpoint::KeyFormat for SealedCheckpointKey {
    fn encode(&self, pkcs8_der: &[u8]) -> Result<String, String> {
        use padlock_token::KeyFileFormat as _;
        let keys = self.data_keys.load().map_err(|e| e.to_string())?;
        let key =
            padlock_token::SigningKey::from_pkcs8_der(pkcs8_der).map_err(|e| e.to_string())?;
        Ok(key_files::SealedKeyFiles::new(&keys, self.upgrade).encode(&key))
    }

    fn decode(&self, text: &str) -> Result<(Vec<u8>, bool), String> {
        use padlock_token::KeyFileFormat as _;
        let keys = self.data_keys.load().map_err(|e| e.to_string())?;
        let decoded = key_files::SealedKeyFiles::new(&keys, self.upgrade)
            .decode(text)
            .map_err(|e| e.to_string())?;
        Ok((decoded.key.to_pkcs8_der(), decoded.rewrite))
    }
}

/// `audit verify` (the chain, then every checkpoint of its head) and
/// `audit checkpoint-key`, on the configured database without migrating
/// it. A broken chain or records a checkpoint saw and the chain lost are
/// an error naming them.
pub async fn audit(
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
pub async fn start_audit_checkpoints(
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

/// Serves every auth gRPC service, plus health and reflection, on
/// `listener` within `limits` until `shutdown` resolves. No auth request
/// carries bulk data: every message is held to
/// [`server::MAX_REQUEST_MESSAGE_BYTES`].
pub async fn serve(
    app: App,
    listener: TcpListener,
    limits: &server::Limits,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let (health, routes) = server::base_routes(padlock_proto::AUTH_DESCRIPTOR_SET)?;
    let routes = add_services(routes, &app);
    health
        .set_serving::<SessionServiceServer<grpc::session::Sessions>>()
        .await;
    health
        .set_serving::<TwoFactorServiceServer<grpc::two_factor::TwoFactor>>()
        .await;
    health
        .set_serving::<KeyServiceServer<grpc::keys::Keys>>()
        .await;
    health
        .set_serving::<SupportServiceServer<grpc::support::Support>>()
        .await;
    let _watcher = {
        use tonic::server::NamedService;
        let app = app.clone();
        health::watch_database(
            health,
            vec![
                SessionServiceServer::<grpc::session::Sessions>::NAME,
                TwoFactorServiceServer::<grpc::two_factor::TwoFactor>::NAME,
                KeyServiceServer::<grpc::keys::Keys>::NAME,
                SupportServiceServer::<grpc::support::Support>::NAME,
            ],
            health::interval_from_env(),
            move || {
                let app = app.clone();
                async move { app.store().ping().await }
            },
        )
    };
    server::serve(listener, routes, limits, shutdown).await?;
    Ok(())
}

/// Every auth gRPC service on `app`, without health or reflection: what
/// [`serve`] serves, for calling in-process (the fuzz harness).
pub fn routes(app: &App) -> tonic::service::Routes {
    add_services(tonic::service::Routes::default(), app)
}

/// `routes` with every auth service added, each held to the request and
/// response size limits.
fn add_services(routes: tonic::service::Routes, app: &App) -> tonic::service::Routes {
    routes
        .add_service(
            SessionServiceServer::new(grpc::session::Sessions(app.clone()))
                .max_decoding_message_size(server::MAX_REQUEST_MESSAGE_BYTES)
                .max_encoding_message_size(server::MAX_RESPONSE_MESSAGE_BYTES),
        )
        .add_service(
            TwoFactorServiceServer::new(grpc::two_factor::TwoFactor(app.clone()))
                .max_decoding_message_size(server::MAX_REQUEST_MESSAGE_BYTES)
                .max_encoding_message_size(server::MAX_RESPONSE_MESSAGE_BYTES),
        )
        .add_service(
            KeyServiceServer::new(grpc::keys::Keys(app.clone()))
                .max_decoding_message_size(server::MAX_REQUEST_MESSAGE_BYTES)
                .max_encoding_message_size(server::MAX_RESPONSE_MESSAGE_BYTES),
        )
        .add_service(
            SupportServiceServer::new(grpc::support::Support(app.clone()))
                .max_decoding_message_size(server::MAX_REQUEST_MESSAGE_BYTES)
                .max_encoding_message_size(server::MAX_RESPONSE_MESSAGE_BYTES),
        )
}

/// The configured database, or SQLite in the data directory.
pub(crate) fn database_url(options: &Options) -> String {
    options
        .database_url
        .as_ref()
        .map(|u| u.expose().clone())
        .unwrap_or_else(|| app::default_database_url(&options.data_dir))
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
