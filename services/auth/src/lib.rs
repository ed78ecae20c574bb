//! padlock's auth service: users and primary sign-in, sessions, second-factor
//! enrollment and verification, signing keys and JWKS, support, and the auth
//! audit trail. `main.rs` is a thin shell around [`open`] and [`serve`], so
//! tests can start the whole service in-process.

pub mod app;
pub mod codes;
pub mod config;
pub mod data_keys;
pub mod error;
pub mod grpc;
pub mod key_files;
pub mod metrics;
pub mod password;
pub mod phone;
pub mod sealing;
pub mod sms;
pub mod store;
pub mod throttle;
pub mod totp;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use padlock_proto::auth::v1::{
    key_service_server::KeyServiceServer, session_service_server::SessionServiceServer,
    support_service_server::SupportServiceServer,
    two_factor_service_server::TwoFactorServiceServer,
};
use padlock_runtime::{Secret, SharedClock, health, server};
use tokio::net::TcpListener;

pub use app::{App, KeySource};
pub use config::Settings;

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

/// `audit verify`: walks the configured database's audit chain, without
/// migrating it. A broken chain is an error naming the first break.
pub async fn verify_audit(
    options: &Options,
    expect_head: Option<padlock_runtime::audit::Link>,
) -> anyhow::Result<padlock_runtime::audit::Intact> {
    let verdict = store::verify_audit_chain(&database_url(options), expect_head)
        .await
        .map_err(|e| anyhow::anyhow!("cannot read the audit chain (has `migrate` run?): {e}"))?;
    Ok(verdict.into_result()?)
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
    let routes = routes
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
        );
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
