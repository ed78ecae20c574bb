//! padlock's HTTP/JSON gateway for the web UI (docs/http.md):
//! it keeps the browser session in two cookies, refuses cross-site writes
//! (CSRF header), serves the embedded UI, and translates every API call
//! into gRPC to padlock-auth and padlock-deploy, mapping their statuses to
//! HTTP in one place. It has no database and links no other service's
//! code. `main.rs` is a thin shell, so tests can run it in-process.
//!
//! The public API is what `main.rs`, the tests and the fuzz harness use:
//! [`Gateway`], [`Settings`], [`serve`] and, for in-process use, [`router`].

mod backend;
mod config;
mod edge;
mod error;
mod input;
mod names;
mod routes;
mod session;
mod ui;
mod views;

use std::future::Future;
use std::time::Duration;

use axum::Extension;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use padlock_runtime::server::{self, Limits};
use tokio::net::TcpListener;
use tower::Layer as _;

pub use config::{Cli, DEFAULT_LISTEN, GatewayArgs, Settings};
pub use routes::router;

/// How long a client may take to send a request's headers (HTTP/1); a
/// connection that trickles them (slowloris) is closed.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Most headers one HTTP/1 request may carry; a browser sends about 20.
/// HTTP/1 heads are also held to hyper's buffer (about 400 KiB).
const MAX_HEADERS: usize = 64;
/// How long the accept loop rests after a failed accept (out of file
/// descriptors), instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The gateway's whole state: the gRPC channels, the checked settings and
/// admission control. Built once in `main` (or a test) and shared by every
/// request.
#[derive(Debug, Clone)]
pub struct Gateway {
    pub(crate) backends: backend::Backends,
    pub(crate) settings: Settings,
    pub(crate) admission: edge::Admission,
}

impl Gateway {
    /// Checks the flags and sets up lazy channels; connects to nothing yet.
    pub fn new(args: &GatewayArgs, limits: &Limits) -> anyhow::Result<Self> {
        let settings = args.settings().map_err(anyhow::Error::msg)?;
        Self::with_settings(settings, &args.auth_url, &args.deploy_url, limits)
    }

    /// The same from settings already checked (tests use sub-second
    /// timeouts, which the flags do not take).
    pub fn with_settings(
        settings: Settings,
        auth_url: &str,
        deploy_url: &str,
        limits: &Limits,
    ) -> anyhow::Result<Self> {
        let backends =
            backend::Backends::connect_lazy(auth_url, deploy_url, settings.backend_timeout)?;
        let admission = edge::Admission::new(limits, settings.max_concurrent_uploads);
        Ok(Self {
            backends,
            settings,
            admission,
        })
    }
}

/// Serves the gateway on `listener` (HTTP/1.1 and cleartext HTTP/2) until
/// `shutdown` resolves, then lets in-flight requests finish. Per
/// connection: headers within `HEADER_READ_TIMEOUT` and `MAX_HEADERS`
/// (HTTP/2: [`server::MAX_HEADER_LIST_BYTES`]), at most
/// `limits.max_streams_per_connection` streams, and idle HTTP/2
/// connections pinged like the gRPC servers'.
pub async fn serve(
    gateway: Gateway,
    listener: TcpListener,
    limits: &Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let router = routes::router(gateway);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_headers(MAX_HEADERS);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_streams_per_connection)
        .max_header_list_size(server::MAX_HEADER_LIST_BYTES)
        .keep_alive_interval(server::HTTP2_KEEPALIVE_INTERVAL)
        .keep_alive_timeout(server::HTTP2_KEEPALIVE_TIMEOUT);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        // Sign-in passes the browser's address on to auth's throttle
        // (`routes::account::sign_in`).
        let service = TowerToHyperService::new(Extension(ConnectInfo(peer)).layer(router.clone()));
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    // Stop accepting before draining, so new clients are refused at once.
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
