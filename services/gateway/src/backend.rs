//! The gRPC side of the gateway: one lazily connected channel to auth and
//! one to deploy, a client per service on them, the deadline every
//! outgoing call carries (`grpc-timeout`, enforced by the channel too), the
//! bearer token, the trace context (`traceparent`), and the readiness probe
//! (`grpc.health.v1.Health/Check` on both).

use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::{self, HeaderValue};
use padlock_proto::auth::v1::{
    key_service_client::KeyServiceClient, session_service_client::SessionServiceClient,
    two_factor_service_client::TwoFactorServiceClient,
};
use padlock_proto::deploy::v1::{
    app_service_client::AppServiceClient, node_service_client::NodeServiceClient,
    package_service_client::PackageServiceClient,
    permission_service_client::PermissionServiceClient, policy_service_client::PolicyServiceClient,
};
use padlock_runtime::Secret;
use padlock_runtime::otel::{TracedChannel, traced};
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// How long establishing a connection to a backend may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The deadline of a package upload: up to 512 MiB in 64 KiB chunks; as
/// long as deploy's default stream timeout.
pub const UPLOAD_DEADLINE: Duration = padlock_runtime::server::DEFAULT_STREAM_TIMEOUT;
/// The deadline of one readiness check.
pub const HEALTH_DEADLINE: Duration = Duration::from_secs(2);
/// How often an idle backend connection is pinged, and how long an answer
/// may take before the connection is dropped and made again.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// A channel to one backend: traced, and every call bounded.
pub type BackendChannel = Deadline<TracedChannel>;

/// Lazily connected channels to auth and deploy; cheap to clone.
#[derive(Debug, Clone)]
pub struct Backends {
    auth: BackendChannel,
    deploy: BackendChannel,
}

/// Which backend a readiness result is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Auth,
    Deploy,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Auth => "auth",
            Backend::Deploy => "deploy",
        }
    }
}

impl Backends {
    /// Channels to `auth_url` and `deploy_url` whose calls give up after
    /// `call_timeout` unless the request names its own deadline; nothing
    /// connects until the first call, so the gateway starts while a
    /// backend is still down.
    pub fn connect_lazy(
        auth_url: &str,
        deploy_url: &str,
        call_timeout: Duration,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            auth: channel(auth_url, call_timeout)
                .map_err(|e| anyhow::anyhow!("--auth-url: {e}"))?,
            deploy: channel(deploy_url, call_timeout)
                .map_err(|e| anyhow::anyhow!("--deploy-url: {e}"))?,
        })
    }

    pub fn sessions(&self) -> SessionServiceClient<BackendChannel> {
        SessionServiceClient::new(self.auth.clone())
    }

    pub fn two_factor(&self) -> TwoFactorServiceClient<BackendChannel> {
        TwoFactorServiceClient::new(self.auth.clone())
    }

    pub fn keys(&self) -> KeyServiceClient<BackendChannel> {
        KeyServiceClient::new(self.auth.clone())
    }

    pub fn apps(&self) -> AppServiceClient<BackendChannel> {
        AppServiceClient::new(self.deploy.clone())
    }

    pub fn packages(&self) -> PackageServiceClient<BackendChannel> {
        PackageServiceClient::new(self.deploy.clone())
    }

    pub fn nodes(&self) -> NodeServiceClient<BackendChannel> {
        NodeServiceClient::new(self.deploy.clone())
    }

    pub fn permissions(&self) -> PermissionServiceClient<BackendChannel> {
        PermissionServiceClient::new(self.deploy.clone())
    }

    pub fn policy(&self) -> PolicyServiceClient<BackendChannel> {
        PolicyServiceClient::new(self.deploy.clone())
    }

    /// Whether each backend answers `SERVING` to a health check now.
    pub async fn readiness(&self) -> [(Backend, bool); 2] {
        let (auth, deploy) = tokio::join!(serving(&self.auth), serving(&self.deploy));
        [(Backend::Auth, auth), (Backend::Deploy, deploy)]
    }
}

fn channel(url: &str, call_timeout: Duration) -> Result<BackendChannel, tonic::transport::Error> {
    let channel: Channel = Endpoint::from_shared(url.to_owned())?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .connect_lazy();
    Ok(Deadline {
        inner: traced(channel),
        default: call_timeout,
    })
}

async fn serving(channel: &BackendChannel) -> bool {
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: String::new(),
    });
    request.set_timeout(HEALTH_DEADLINE);
    match HealthClient::new(channel.clone()).check(request).await {
        Ok(response) => response.into_inner().status == ServingStatus::Serving as i32,
        Err(status) => {
            tracing::warn!(code = ?status.code(), "backend health check failed");
            false
        }
    }
}

/// A unary request with no credentials; the channel adds the deadline.
pub fn anonymous<T>(message: T) -> tonic::Request<T> {
    tonic::Request::new(message)
}

/// A unary request presenting `token` as `authorization: Bearer ...`
/// (marked sensitive, so no layer prints it); the channel adds the
/// deadline.
pub fn authorized<T>(message: T, token: &Secret<String>) -> tonic::Request<T> {
    with_bearer(anonymous(message), token)
}

/// `request` with `authorization: Bearer <token>`. A token that cannot be
/// a header value is left out: the backend then answers `TOKEN_INVALID`.
pub fn with_bearer<T>(mut request: tonic::Request<T>, token: &Secret<String>) -> tonic::Request<T> {
    if let Ok(mut value) = MetadataValue::try_from(format!("Bearer {}", token.expose())) {
        value.set_sensitive(true);
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// Gives every call without a deadline of its own (`grpc-timeout`, set by
/// `tonic::Request::set_timeout`) the default one. tonic's channel enforces
/// the header on this side (the call fails with `TimeoutExpired`, 504), and
/// the backend learns when to stop working on it.
#[derive(Debug, Clone)]
pub struct Deadline<S> {
    inner: S,
    default: Duration,
}

/// gRPC over HTTP/2: `grpc-timeout` is at most eight digits and a unit.
const GRPC_TIMEOUT_MAX_MILLIS: u128 = 99_999_999;

impl<S, B> tower::Service<http::Request<B>> for Deadline<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let headers = request.headers_mut();
        if !headers.contains_key("grpc-timeout") {
            let millis = self.default.as_millis().min(GRPC_TIMEOUT_MAX_MILLIS);
            if let Ok(value) = HeaderValue::try_from(format!("{millis}m")) {
                headers.insert("grpc-timeout", value);
            }
        }
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorized_requests_carry_the_token() {
        let request = authorized((), &Secret::new("abc.def.ghi".to_owned()));
        assert_eq!(
            padlock_runtime::metadata::bearer_token(request.metadata()),
            Some("abc.def.ghi")
        );
        let request = authorized((), &Secret::new("bad\ntoken".to_owned()));
        assert!(request.metadata().get("authorization").is_none());
    }

    /// The `grpc-timeout` a [`Deadline`] passes on for a call that carries
    /// `own` (as `tonic::Request::set_timeout` writes it).
    async fn sent_deadline(own: Option<&'static str>) -> Option<String> {
        use tower::ServiceExt;
        let inner = tower::service_fn(|request: http::Request<()>| async move {
            Ok::<_, std::convert::Infallible>(
                request
                    .headers()
                    .get("grpc-timeout")
                    .map(|v| v.to_str().unwrap().to_owned()),
            )
        });
        let deadline = Deadline {
            inner,
            default: Duration::from_millis(1500),
        };
        let mut request = http::Request::new(());
        if let Some(own) = own {
            request
                .headers_mut()
                .insert("grpc-timeout", HeaderValue::from_static(own));
        }
        deadline.oneshot(request).await.unwrap()
    }

    #[tokio::test]
    async fn calls_get_the_default_deadline_unless_they_name_one() {
        assert_eq!(sent_deadline(None).await.as_deref(), Some("1500m"));
        assert_eq!(sent_deadline(Some("600S")).await.as_deref(), Some("600S"));
    }

    #[tokio::test]
    async fn a_backend_that_is_down_is_not_ready() {
        // Port 1 on loopback: nothing listens there.
        let backends = Backends::connect_lazy(
            "http://127.0.0.1:1",
            "http://127.0.0.1:1",
            Duration::from_secs(15),
        )
        .unwrap();
        assert_eq!(
            backends.readiness().await,
            [(Backend::Auth, false), (Backend::Deploy, false)]
        );
    }
}
