//! The route table (docs/http.md "Routes") and the fallbacks; one module per
//! group of handlers. Every handler checks its input first, then calls
//! auth or deploy through [`crate::session::with_session`] (or without a
//! session for sign-in and the public keys) and renders a view.

pub mod account;
pub mod apps;
pub mod packages;
pub mod permissions;
pub mod probes;

use axum::Router;
use axum::middleware;
use axum::routing::{delete, get, post};

use crate::error::ApiError;
use crate::{Gateway, edge, ui};

pub fn router(gateway: Gateway) -> Router {
    Router::new()
        .route("/api/v1/sessions", post(account::sign_in))
        .route("/api/v1/sessions/current", delete(account::sign_out))
        .route("/api/v1/me", get(account::me))
        .route("/api/v1/me/factor/totp", post(account::start_totp))
        .route("/api/v1/me/factor/sms", post(account::start_sms))
        .route("/api/v1/me/factor/sms/code", post(account::send_sms_code))
        .route("/api/v1/me/factor/confirmation", post(account::confirm))
        .route("/api/v1/me/factor/verification", post(account::verify))
        .route("/api/v1/apps", get(apps::list))
        .route("/api/v1/apps/{app_id}", get(apps::get))
        .route("/api/v1/apps/{app_id}/members", post(apps::add_member))
        .route(
            "/api/v1/apps/{app_id}/members/{username}",
            delete(apps::remove_member),
        )
        .route(
            "/api/v1/apps/{app_id}/environments",
            get(apps::environments),
        )
        .route(
            "/api/v1/apps/{app_id}/nodes/{environment}",
            get(apps::node_details),
        )
        .route(
            "/api/v1/apps/{app_id}/packages",
            get(packages::list).post(packages::upload),
        )
        .route(
            "/api/v1/apps/{app_id}/deployments",
            get(packages::deployments),
        )
        .route(
            "/api/v1/packages/{package_id}/deployments",
            post(packages::deploy),
        )
        .route(
            "/api/v1/packages/{package_id}/transports",
            post(packages::transport),
        )
        .route("/api/v1/apps/{app_id}/permissions", get(permissions::list))
        .route(
            "/api/v1/apps/{app_id}/permissions/grants",
            post(permissions::grant),
        )
        .route(
            "/api/v1/apps/{app_id}/permissions/revocations",
            post(permissions::revoke),
        )
        .route("/api/v1/policy/actions", get(permissions::actions))
        .route("/api/v1/apps/{app_id}/access", get(permissions::access))
        .route("/.well-known/jwks.json", get(probes::jwks))
        .route("/healthz", get(probes::healthz))
        .route("/readyz", get(probes::readyz))
        .route("/", get(ui::index))
        .route("/app.js", get(ui::app_js))
        .route("/app.css", get(ui::app_css))
        .route("/reasons.js", get(ui::reasons_js))
        .fallback(|| async { ApiError::no_such_route() })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(middleware::from_fn_with_state(gateway.clone(), edge::edge))
        .with_state(gateway)
}
