//! `KeyService`: the public signing keys as a JWKS document.

use padlock_proto::auth::v1::{GetJwksRequest, Jwk, Jwks, key_service_server::KeyService};
use tonic::{Request, Response, Status};

use crate::app::App;

#[derive(Debug, Clone)]
pub struct Keys(pub App);

#[tonic::async_trait]
impl KeyService for Keys {
    async fn get_jwks(
        &self,
        _: Request<GetJwksRequest>,
    ) -> std::result::Result<Response<Jwks>, Status> {
        let keys = self
            .0
            .jwks()
            .keys
            .into_iter()
            .map(|k| Jwk {
                kty: k.kty,
                crv: k.crv,
                x: k.x,
                kid: k.kid,
                r#use: k.use_,
                alg: k.alg,
            })
            .collect();
        Ok(Response::new(Jwks { keys }))
    }
}
