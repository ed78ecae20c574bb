//! Apps, their teams, environments and nodes (deploy `AppService`,
//! `NodeService`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use padlock_proto::deploy::v1::{
    AddTeamMemberRequest, Environment, GetAppRequest, GetNodeDetailsRequest, ListAppsRequest,
    ListEnvironmentsRequest, ListTeamMembersRequest, RemoveTeamMemberRequest,
};
use padlock_runtime::status::Violations;
use serde_json::json;

use crate::backend::authorized;
use crate::error::ApiError;
use crate::input::{JsonBody, PathParams};
use crate::session::{Cookies, with_session};
use crate::{Gateway, names, views};

/// `GET /api/v1/apps`: the apps the caller is a team member of.
pub async fn list(State(gw): State<Gateway>, cookies: Cookies) -> Response {
    with_session(&gw, &cookies, |token| {
        let mut client = gw.backends.apps();
        let request = authorized(ListAppsRequest {}, &token);
        async move {
            client
                .list_apps(request)
                .await
                .map(tonic::Response::into_inner)
        }
    })
    .await
    .respond(|r, _| Json(views::list("apps", &r.apps, views::app)))
}

/// `GET /api/v1/apps/{app_id}`: the app and its team.
pub async fn get(
    State(gw): State<Gateway>,
    cookies: Cookies,
    PathParams(app_id): PathParams<String>,
) -> Response {
    with_session(&gw, &cookies, |token| {
        let mut client = gw.backends.apps();
        let get = authorized(
            GetAppRequest {
                app_id: app_id.clone(),
            },
            &token,
        );
        let members = authorized(
            ListTeamMembersRequest {
                app_id: app_id.clone(),
            },
            &token,
        );
        async move {
            let app = client.get_app(get).await?.into_inner();
            let members = client.list_team_members(members).await?.into_inner();
            Ok::<_, tonic::Status>((app, members))
        }
    })
    .await
    .respond(|(app, members), _| {
        let members: Vec<_> = members.members.iter().map(views::member).collect();
        Json(json!({"app": views::app(&app), "members": members}))
    })
}

/// `POST /api/v1/apps/{app_id}/members` `{"username","role"}`: 201 member.
pub async fn add_member(
    State(gw): State<Gateway>,
    cookies: Cookies,
    PathParams(app_id): PathParams<String>,
    JsonBody(mut body): JsonBody,
) -> Response {
    let username = body.string("username");
    let role = body.role("role");
    if let Err(e) = body.finish() {
        return e.into_response();
    }
    with_session(&gw, &cookies, |token| {
        let mut client = gw.backends.apps();
        let request = authorized(
            AddTeamMemberRequest {
                app_id: app_id.clone(),
                username: username.clone(),
                role: role as i32,
            },
            &token,
        );
        async move {
            client
                .add_team_member(request)
                .await
                .map(tonic::Response::into_inner)
        }
    })
    .await
    .respond(|member, _| (StatusCode::CREATED, Json(views::member(&member))))
}

/// `DELETE /api/v1/apps/{app_id}/members/{username}`: 204.
pub async fn remove_member(
    State(gw): State<Gateway>,
    cookies: Cookies,
    PathParams((app_id, username)): PathParams<(String, String)>,
) -> Response {
    with_session(&gw, &cookies, |token| {
        let mut client = gw.backends.apps();
        let request = authorized(
            RemoveTeamMemberRequest {
                app_id: app_id.clone(),
                username: username.clone(),
            },
            &token,
        );
        async move {
            client
                .remove_team_member(request)
                .await
                .map(tonic::Response::into_inner)
        }
    })
    .await
    .respond(|_, _| StatusCode::NO_CONTENT)
}

/// `GET /api/v1/apps/{app_id}/environments`: what runs where.
pub async fn environments(
    State(gw): State<Gateway>,
    cookies: Cookies,
    PathParams(app_id): PathParams<String>,
) -> Response {
    with_session(&gw, &cookies, |token| {
        let mut client = gw.backends.apps();
        let request = authorized(
            ListEnvironmentsRequest {
                app_id: app_id.clone(),
            },
            &token,
        );
        async move {
            client
                .list_environments(request)
                .await
                .map(tonic::Response::into_inner)
        }
    })
    .await
    .respond(|r, _| {
        Json(views::list(
            "environments",
            &r.environments,
            views::environment,
        ))
    })
}

/// `GET /api/v1/apps/{app_id}/nodes/{environment}`: padlocked for production.
pub async fn node_details(
    State(gw): State<Gateway>,
    cookies: Cookies,
    PathParams((app_id, environment)): PathParams<(String, String)>,
) -> Response {
    let Some(environment) = names::parse::<Environment>(&environment) else {
        let mut v = Violations::new();
        v.add(
            "environment",
            format!("must be one of {}", names::one_of::<Environment>()),
        );
        return ApiError::invalid(v).into_response();
    };
    with_session(&gw, &cookies, |token| {
        let mut client = gw.backends.nodes();
        let request = authorized(
            GetNodeDetailsRequest {
                app_id: app_id.clone(),
                environment: environment as i32,
            },
            &token,
        );
        async move {
            client
                .get_node_details(request)
                .await
                .map(tonic::Response::into_inner)
        }
    })
    .await
    .respond(|node, _| Json(views::node(&node)))
}
