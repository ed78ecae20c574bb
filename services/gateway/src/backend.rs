//! The gRPC side of the gateway: one lazily connected channel to auth and
//! one to deploy, a client per service on them, the deadline and bearer
//! token every outgoing call carries, the trace context every call carries
//! (`traceparent`), and the readiness probe (`grpc.health.v1.Health/Check`
//! on both).

use std::time::Duration;

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
/// The deadline of every unary call (sent as `grpc-timeout`).
pub const CALL_DEADLINE: Duration = Duration::from_secs(15);
/// The deadline of a package upload: up to 512 MiB in 64 KiB chunks.
pub const UPLOAD_DEADLINE: Duration = Duration::from_secs(600);
/// The deadline of one readiness check.
pub const HEALTH_DEADLINE: Duration = Duration::from_secs(2);

/// Lazily connected channels to auth and deploy; cheap to clone.
#[derive(Debug, Clone)]
pub struct Backends {
    auth: TracedChannel,
    deploy: TracedChannel,
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
    /// Channels to `auth_url` and `deploy_url`; nothing connects until the
    /// first call, so the gateway starts while a backend is still down.
    pub fn connect_lazy(auth_url: &str, deploy_url: &str) -> anyhow::Result<Self> {
        Ok(Self {
            auth: channel(auth_url).map_err(|e| anyhow::anyhow!("--auth-url: {e}"))?,
            deploy: channel(deploy_url).map_err(|e| anyhow::anyhow!("--deploy-url: {e}"))?,
        })
    }

    pub fn sessions(&self) -> SessionServiceClient<TracedChannel> {
        SessionServiceClient::new(self.auth.clone())
    }

    pub fn two_factor(&self) -> TwoFactorServiceClient<TracedChannel> {
        TwoFactorServiceClient::new(self.auth.clone())
    }

    pub fn keys(&self) -> KeyServiceClient<TracedChannel> {
        KeyServiceClient::new(self.auth.clone())
    }

    pub fn apps(&self) -> AppServiceClient<TracedChannel> {
        AppServiceClient::new(self.deploy.clone())
    }

    pub fn packages(&self) -> PackageServiceClient<TracedChannel> {
        PackageServiceClient::new(self.deploy.clone())
    }

    pub fn nodes(&self) -> NodeServiceClient<TracedChannel> {
        NodeServiceClient::new(self.deploy.clone())
    }

    pub fn permissions(&self) -> PermissionServiceClient<TracedChannel> {
        PermissionServiceClient::new(self.deploy.clone())
    }

    pub fn policy(&self) -> PolicyServiceClient<TracedChannel> {
        PolicyServiceClient::new(self.deploy.clone())
    }

    /// Whether each backend answers `SERVING` to a health check now.
    pub async fn readiness(&self) -> [(Backend, bool); 2] {
        let (auth, deploy) = tokio::join!(serving(&self.auth), serving(&self.deploy));
        [(Backend::Auth, auth), (Backend::Deploy, deploy)]
    }
}

fn channel(url: &str) -> Result<TracedChannel, tonic::transport::Error> {
    let channel: Channel = Endpoint::from_shared(url.to_owned())?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .connect_lazy();
    Ok(traced(channel))
}

async fn serving(channel: &TracedChannel) -> bool {
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

/// A unary request with the call deadline and no credentials.
pub fn anonymous<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(CALL_DEADLINE);
    request
}

/// A unary request with the call deadline, presenting `token` as
/// `authorization: Bearer ...` (marked sensitive, so no layer prints it).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorized_requests_carry_the_token_and_a_deadline() {
        let request = authorized((), &Secret::new("abc.def.ghi".to_owned()));
        assert_eq!(
            padlock_runtime::metadata::bearer_token(request.metadata()),
            Some("abc.def.ghi")
        );
        assert!(request.metadata().get("grpc-timeout").is_some());
        let request = authorized((), &Secret::new("bad\ntoken".to_owned()));
        assert!(request.metadata().get("authorization").is_none());
    }

    #[tokio::test]
    async fn a_backend_that_is_down_is_not_ready() {
        // Port 1 on loopback: nothing listens there.
        let backends = Backends::connect_lazy("http://127.0.0.1:1", "http://127.0.0.1:1").unwrap();
        assert_eq!(
            backends.readiness().await,
            [(Backend::Auth, false), (Backend::Deploy, false)]
        );
    }
}
