//! What machines ask: the public signing keys (auth `KeyService.GetJwks`),
//! liveness (`/healthz`: the process runs) and readiness (`/readyz`: auth
//! and deploy both answer `SERVING` to `grpc.health.v1.Health/Check`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use padlock_proto::Reason;
use padlock_proto::auth::v1::GetJwksRequest;
use serde_json::{Map, Value};

use crate::backend::anonymous;
use crate::error::from_status;
use crate::{Gateway, views};

/// `GET /.well-known/jwks.json`.
pub async fn jwks(State(gw): State<Gateway>) -> Response {
    match gw
        .backends
        .keys()
        .get_jwks(anonymous(GetJwksRequest {}))
        .await
    {
        Ok(jwks) => Json(views::jwks(jwks.get_ref())).into_response(),
        Err(status) => from_status(&status).into_response(),
    }
}

/// `GET /healthz`: 200 `ok` while the process runs.
pub async fn healthz() -> &'static str {
    "ok"
}

/// `GET /readyz`: 200 when both backends serve, else 503 naming those that
/// do not, e.g. `{"error":"UNAVAILABLE","message":"not serving: deploy",
/// "auth":"serving","deploy":"not_serving"}`.
pub async fn readyz(State(gw): State<Gateway>) -> Response {
    let readiness = gw.backends.readiness().await;
    let mut body = Map::new();
    let mut down = Vec::new();
    for (backend, serving) in readiness {
        let state = if serving { "serving" } else { "not_serving" };
        body.insert(backend.name().into(), state.into());
        if !serving {
            down.push(backend.name());
        }
    }
    if down.is_empty() {
        body.insert("status".into(), "ready".into());
        return Json(Value::Object(body)).into_response();
    }
    body.insert("error".into(), Reason::Unavailable.as_str_name().into());
    body.insert(
        "message".into(),
        format!("not serving: {}", down.join(", ")).into(),
    );
    (StatusCode::SERVICE_UNAVAILABLE, Json(Value::Object(body))).into_response()
}
