//! Node permissions and the padlock policy (deploy `PermissionService`,
//! `PolicyService`): who may do what where, and whether the caller may do
//! an action now, so the UI can draw padlocks.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use padlock_proto::deploy::v1::{
    CheckAccessRequest, GrantNodePermissionsRequest, ListActionsRequest,
    ListNodePermissionsRequest, RevokeNodePermissionsRequest,
};

use crate::backend::authorized;
use crate::input::{JsonBody, PathParams, QueryFields};
use crate::session::{Cookies, with_session};
use crate::{Gateway, views};

/// `GET /api/v1/apps/{app_id}/permissions`.
pub async fn list(
    State(gw): State<Gateway>,
    cookies: Cookies,
    PathParams(app_id): PathParams<String>,
) -> Response {
    with_session(&gw, &cookies, |token| {
        let mut client = gw.backends.permissions();
        let request = authorized(
            ListNodePermissionsRequest {
                app_id: app_id.clone(),
            },
            &token,
        );
        async move {
            client
                .list_node_permissions(request)
                .await
                .map(tonic::Response::into_inner)
        }
    })
    .await
    .respond(|r, _| Json(views::list("entries", &r.entries, views::permission_set)))
}

/// `POST /api/v1/apps/{app_id}/permissions/grants`
/// `{"environment","username","permissions"}`: the member's new set.
pub async fn grant(
    State(gw): State<Gateway>,
    cookies: Cookies,
    PathParams(app_id): PathParams<String>,
    JsonBody(mut body): JsonBody,
) -> Response {
    let environment = body.environment("environment");
    let username = body.string("username");
    let permissions: Vec<i32> = body
        .permissions("permissions")
        .into_iter()
        .map(|p| p as i32)
        .collect();
    if let Err(e) = body.finish() {
        return e.into_response();
    }
    with_session(&gw, &cookies, |token| {
        let mut client = gw.backends.permissions();
        let request = authorized(
            GrantNodePermissionsRequest {
                app_id: app_id.clone(),
                environment: environment as i32,
                username: username.clone(),
                permissions: permissions.clone(),
            },
            &token,
        );
        async move {
            client
                .grant_node_permissions(request)
                .await
                .map(tonic::Response::into_inner)
        }
    })
    .await
    .respond(|set, _| Json(views::permission_set(&set)))
}

/// `POST /api/v1/apps/{app_id}/permissions/revocations` (same body).
pub async fn revoke(
    State(gw): State<Gateway>,
    cookies: Cookies,
    PathParams(app_id): PathParams<String>,
    JsonBody(mut body): JsonBody,
) -> Response {
    let environment = body.environment("environment");
    let username = body.string("username");
    let permissions: Vec<i32> = body
        .permissions("permissions")
        .into_iter()
        .map(|p| p as i32)
        .collect();
    if let Err(e) = body.finish() {
        return e.into_response();
    }
    with_session(&gw, &cookies, |token| {
        let mut client = gw.backends.permissions();
        let request = authorized(
            RevokeNodePermissionsRequest {
                app_id: app_id.clone(),
                environment: environment as i32,
                username: username.clone(),
                permissions: permissions.clone(),
            },
            &token,
        );
        async move {
            client
                .revoke_node_permissions(request)
                .await
                .map(tonic::Response::into_inner)
        }
    })
    .await
    .respond(|set, _| Json(views::permission_set(&set)))
}

/// `GET /api/v1/policy/actions`: every action on every environment.
pub async fn actions(State(gw): State<Gateway>, cookies: Cookies) -> Response {
    with_session(&gw, &cookies, |token| {
        let mut client = gw.backends.policy();
        let request = authorized(ListActionsRequest {}, &token);
        async move {
            client
                .list_actions(request)
                .await
                .map(tonic::Response::into_inner)
        }
    })
    .await
    .respond(|r, _| Json(views::list("actions", &r.actions, views::action_policy)))
}

/// `GET /api/v1/apps/{app_id}/access?action=A&environment=E`: may I, now?
/// Changes nothing.
pub async fn access(
    State(gw): State<Gateway>,
    cookies: Cookies,
    PathParams(app_id): PathParams<String>,
    QueryFields(mut query): QueryFields,
) -> Response {
    let action = query.action("action");
    let environment = query.environment("environment");
    if let Err(e) = query.finish() {
        return e.into_response();
    }
    with_session(&gw, &cookies, |token| {
        let mut client = gw.backends.policy();
        let request = authorized(
            CheckAccessRequest {
                action: action as i32,
                app_id: app_id.clone(),
                environment: environment as i32,
            },
            &token,
        );
        async move {
            client
                .check_access(request)
                .await
                .map(tonic::Response::into_inner)
        }
    })
    .await
    .respond(|r, _| Json(views::access(&r)))
}
