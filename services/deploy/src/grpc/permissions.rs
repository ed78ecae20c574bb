//! `PermissionService`: node permissions per app, environment and member.
//! Only the Technical Contact changes them (padlocked for production), and
//! only members with the Deploy role may hold them.

use std::collections::BTreeMap;

use padlock_proto::deploy::v1::{
    GrantNodePermissionsRequest, ListNodePermissionsRequest, ListNodePermissionsResponse,
    NodePermissionSet, RevokeNodePermissionsRequest, permission_service_server::PermissionService,
};
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use super::Check;
use crate::app::App;
use crate::error::{DeployError, Result};
use crate::policy::{Action, Env, Permission};

#[derive(Debug, Clone)]
pub struct Permissions(pub App);

/// Grant or revoke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Grant,
    Revoke,
}

impl Permissions {
    async fn change(
        &self,
        metadata: &MetadataMap,
        what: Change,
        app_id: &str,
        env: i32,
        username: &str,
        permissions: &[i32],
    ) -> Result<NodePermissionSet> {
        let verified = self
            .0
            .verify_for(
                metadata,
                Action::ChangeNodePermissions,
                Env::from_proto(env),
            )
            .await?;
        let mut check = Check::new();
        check.id("app_id", app_id);
        let env = check.env("environment", env);
        check.username("username", username);
        let permissions = check.permissions("permissions", permissions);
        check.done()?;
        let env = env.ok_or(DeployError::Internal)?;
        let (who, mut change) = self
            .0
            .authorize(&verified, Action::ChangeNodePermissions, app_id, env)
            .await?;
        let member = change
            .member(username)
            .await?
            .ok_or(DeployError::MemberNotFound)?;
        match what {
            Change::Grant => {
                if !member.role.may_hold_permissions() {
                    return Err(DeployError::MemberCannotHoldPermissions);
                }
                change
                    .grant(env, username, &permissions, who.username(), self.0.now())
                    .await?;
            }
            Change::Revoke => change.revoke(env, username, &permissions).await?,
        }
        let held: Vec<Permission> = change
            .grants(Some(username))
            .await?
            .into_iter()
            .filter(|g| g.env == env)
            .map(|g| g.permission)
            .collect();
        let names: Vec<&str> = permissions.iter().map(|p| p.as_str()).collect();
        let verb = if what == Change::Grant {
            "grant"
        } else {
            "revoke"
        };
        let audit = self.0.audit_ok(
            &who,
            Action::ChangeNodePermissions.as_str(),
            app_id,
            Some(env),
            format!("{verb} username={username} permissions={}", names.join(",")),
        );
        change.commit(audit).await?;
        Ok(permission_set(app_id, env, username, &held))
    }
}

fn permission_set(
    app_id: &str,
    env: Env,
    username: &str,
    permissions: &[Permission],
) -> NodePermissionSet {
    NodePermissionSet {
        app_id: app_id.to_owned(),
        environment: env.to_proto(),
        username: username.to_owned(),
        permissions: {
            let mut ordered: Vec<i32> = permissions.iter().map(|p| p.to_proto()).collect();
            ordered.sort_unstable();
            ordered
        },
    }
}

#[tonic::async_trait]
impl PermissionService for Permissions {
    async fn grant_node_permissions(
        &self,
        request: Request<GrantNodePermissionsRequest>,
    ) -> std::result::Result<Response<NodePermissionSet>, Status> {
        let (metadata, _, r) = request.into_parts();
        let set = self
            .change(
                &metadata,
                Change::Grant,
                &r.app_id,
                r.environment,
                &r.username,
                &r.permissions,
            )
            .await?;
        Ok(Response::new(set))
    }

    async fn revoke_node_permissions(
        &self,
        request: Request<RevokeNodePermissionsRequest>,
    ) -> std::result::Result<Response<NodePermissionSet>, Status> {
        let (metadata, _, r) = request.into_parts();
        let set = self
            .change(
                &metadata,
                Change::Revoke,
                &r.app_id,
                r.environment,
                &r.username,
                &r.permissions,
            )
            .await?;
        Ok(Response::new(set))
    }

    async fn list_node_permissions(
        &self,
        request: Request<ListNodePermissionsRequest>,
    ) -> std::result::Result<Response<ListNodePermissionsResponse>, Status> {
        let claims = self.0.caller(request.metadata()).await?;
        let req = request.into_inner();
        let mut check = Check::new();
        check.id("app_id", &req.app_id);
        check.done()?;
        self.0
            .store()
            .app(&req.app_id)
            .await
            .map_err(DeployError::from)?
            .ok_or(DeployError::AppNotFound)?;
        self.0.member_of(&claims, &req.app_id).await?;
        let grants = self
            .0
            .store()
            .grants(&req.app_id, None)
            .await
            .map_err(DeployError::from)?;
        let mut grouped: BTreeMap<(String, i32), Vec<Permission>> = BTreeMap::new();
        for g in grants {
            grouped
                .entry((g.username, g.env.to_proto()))
                .or_default()
                .push(g.permission);
        }
        let entries = grouped
            .into_iter()
            .filter_map(|((username, env), perms)| {
                Some(permission_set(
                    &req.app_id,
                    Env::from_proto(env)?,
                    &username,
                    &perms,
                ))
            })
            .collect();
        Ok(Response::new(ListNodePermissionsResponse { entries }))
    }
}
