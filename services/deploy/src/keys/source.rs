//! Where the public signing keys come from: the [`JwksSource`] trait (tests
//! and the fuzz harness plug fixed keys in through it) and auth's
//! `KeyService.GetJwks` over gRPC, bounded by [`FETCH_TIMEOUT`].

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use padlock_proto::auth::v1::GetJwksRequest;
use padlock_proto::auth::v1::key_service_client::KeyServiceClient;
use padlock_runtime::otel::{TracedChannel, traced};
use padlock_token::{Jwk, JwkSet};
use tonic::transport::{Channel, Endpoint};

/// How long one JWKS call to auth may take by default, and how long
/// connecting may take: a hanging auth must not hold the requests that wait
/// for keys longer than this.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the JWKS could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("JWKS call to auth failed: {code:?}: {message}", code = .0.code(), message = .0.message())]
    Rpc(#[from] tonic::Status),
    /// The set held no Ed25519 signing key this service can use; it is not
    /// taken, so the cached keys (if any) stay in use.
    #[error("JWKS holds no usable signing key")]
    NoUsableKeys,
}

/// Where the public signing keys come from.
#[async_trait]
pub trait JwksSource: Send + Sync + fmt::Debug {
    async fn fetch(&self) -> Result<JwkSet, FetchError>;
}

/// auth's `KeyService.GetJwks`. A fetch continues the trace of the request
/// that needed the keys (`traceparent`).
#[derive(Debug, Clone)]
pub struct GrpcJwksSource {
    client: KeyServiceClient<TracedChannel>,
}

impl GrpcJwksSource {
    /// A source for auth at `url` (e.g. `http://auth:50051`) whose calls,
    /// connecting included, give up after `timeout` ([`FETCH_TIMEOUT`] in
    /// production). Connects on first use, not here, so the deploy service
    /// can start before auth. Must be called inside a Tokio runtime.
    pub fn connect_lazy(
        url: impl Into<String>,
        timeout: Duration,
    ) -> Result<Self, tonic::transport::Error> {
        let channel = Endpoint::from_shared(url.into())?
            .connect_timeout(timeout)
            .timeout(timeout)
            .connect_lazy();
        Ok(Self::new(channel))
    }

    /// A source over an existing channel (tests, shared channels).
    pub fn new(channel: Channel) -> Self {
        Self {
            client: KeyServiceClient::new(traced(channel)),
        }
    }
}

#[async_trait]
impl JwksSource for GrpcJwksSource {
    async fn fetch(&self) -> Result<JwkSet, FetchError> {
        // The generated client needs `&mut self`; clones share the channel.
        let mut client = self.client.clone();
        let jwks = client.get_jwks(GetJwksRequest {}).await?.into_inner();
        let keys = jwks
            .keys
            .into_iter()
            .map(|k| Jwk {
                kty: k.kty,
                crv: k.crv,
                x: k.x,
                kid: k.kid,
                use_: k.r#use,
                alg: k.alg,
            })
            .collect();
        Ok(JwkSet { keys })
    }
}
