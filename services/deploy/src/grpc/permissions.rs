//! `PermissionService`: node permissions per app, environment and member.

use std::collections::BTreeMap;

use padlock_proto::deploy::v1::{
    GrantNodePermissionsRequest, ListNodePermissionsRequest, ListNodePermissionsResponse,
    NodePermissionSet, RevokeNodePermissionsRequest, permission_service_server::PermissionService,
};
use tonic::metadata::MetadataMap;
use tonic::{Request, Response};

use super::{Fields, Reply, app_id};
use crate::error::Result;
use crate::policy::{Action, Env, Permission};
use crate::service::{App, PermissionChange};

#[derive(Debug, Clone)]
pub(crate) struct Permissions(pub(crate) App);

/// What a grant or revoke asks for, whichever RPC brought it.
struct Asked<'a> {
    app_id: &'a str,
    environment: i32,
    username: &'a str,
    permissions: &'a [i32],
}

impl Permissions {
    async fn change(
        &self,
        metadata: &MetadataMap,
        what: PermissionChange,
        req: Asked<'_>,
    ) -> Result<NodePermissionSet> {
        let action = Action::ChangeNodePermissions;
        let verified = (self.0)
            .verify_for(metadata, action, Env::from_proto(req.environment))
            .await?;
        let mut fields = Fields::new();
        fields.id("app_id", req.app_id);
        let env = fields.env("environment", req.environment);
        fields.username("username", req.username);
        let permissions = fields.permissions("permissions", req.permissions);
        let env = fields.done_with(env)?;
        let held = self
            .0
            .change_permissions(&verified, what, req.app_id, env, req.username, &permissions)
            .await?;
        Ok(permission_set(req.app_id, env, req.username, &held))
    }
}

fn permission_set(
    app_id: &str,
    env: Env,
    username: &str,
    permissions: &[Permission],
) -> NodePermissionSet {
    let mut ordered: Vec<i32> = permissions.iter().map(|p| p.to_proto()).collect();
    ordered.sort_unstable();
    NodePermissionSet {
        app_id: app_id.to_owned(),
        environment: env.to_proto(),
        username: username.to_owned(),
        permissions: ordered,
    }
}

#[tonic::async_trait]
impl PermissionService for Permissions {
    async fn grant_node_permissions(
        &self,
        request: Request<GrantNodePermissionsRequest>,
    ) -> Reply<NodePermissionSet> {
        let (metadata, _, r) = request.into_parts();
        let req = Asked {
            app_id: &r.app_id,
            environment: r.environment,
            username: &r.username,
            permissions: &r.permissions,
        };
        let set = self.change(&metadata, PermissionChange::Grant, req).await?;
        Ok(Response::new(set))
    }

    async fn revoke_node_permissions(
        &self,
        request: Request<RevokeNodePermissionsRequest>,
    ) -> Reply<NodePermissionSet> {
        let (metadata, _, r) = request.into_parts();
        let req = Asked {
            app_id: &r.app_id,
            environment: r.environment,
            username: &r.username,
            permissions: &r.permissions,
        };
        let set = self
            .change(&metadata, PermissionChange::Revoke, req)
            .await?;
        Ok(Response::new(set))
    }

    async fn list_node_permissions(
        &self,
        request: Request<ListNodePermissionsRequest>,
    ) -> Reply<ListNodePermissionsResponse> {
        let claims = self.0.caller(request.metadata()).await?;
        let req = request.into_inner();
        app_id(&req.app_id)?;
        let grants = self.0.node_permissions(&claims, &req.app_id).await?;
        let mut grouped: BTreeMap<(String, Env), Vec<Permission>> = BTreeMap::new();
        for g in grants {
            grouped
                .entry((g.username, g.env))
                .or_default()
                .push(g.permission);
        }
        let entries = grouped
            .into_iter()
            .map(|((username, env), perms)| permission_set(&req.app_id, env, &username, &perms))
            .collect();
        Ok(Response::new(ListNodePermissionsResponse { entries }))
    }
}
