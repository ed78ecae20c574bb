//! padlock's HTTP/JSON gateway for the web UI (services/gateway/API.md):
//! it keeps the browser session in two cookies, refuses cross-site writes
//! (CSRF header), serves the embedded UI, and translates every API call
//! into gRPC to padlock-auth and padlock-deploy, mapping their statuses to
//! HTTP in one place. It has no database and links no other service's
//! code. `main.rs` is a thin shell, so tests can run it in-process.

pub mod backend;
pub mod claims;
pub mod config;
pub mod edge;
pub mod error;
pub mod input;
pub mod names;
pub mod routes;
pub mod session;
pub mod ui;
pub mod views;

use std::future::Future;
use std::net::SocketAddr;

use tokio::net::TcpListener;

pub use backend::Backends;
pub use config::Settings;

/// The gateway's whole state: the gRPC channels and the checked settings.
/// Built once in `main` (or a test) and shared by every request.
#[derive(Debug, Clone)]
pub struct Gateway {
    pub backends: Backends,
    pub settings: Settings,
}

impl Gateway {
    /// Checks the flags and sets up lazy channels; connects to nothing yet.
    pub fn new(args: &config::GatewayArgs) -> anyhow::Result<Self> {
        let settings = args.settings().map_err(anyhow::Error::msg)?;
        let backends = Backends::connect_lazy(&args.auth_url, &args.deploy_url)?;
        Ok(Self { backends, settings })
    }
}

/// Serves the gateway on `listener` until `shutdown` resolves, then lets
/// in-flight requests finish.
pub async fn serve(
    gateway: Gateway,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // The peer address reaches sign-in, which passes it on to auth's
    // throttle (`routes::account::sign_in`).
    let app = routes::router(gateway).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}
