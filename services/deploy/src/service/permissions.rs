//! Node permissions per app, environment and member: only the Technical
//! Contact changes them (padlocked for production), and only members with
//! the Deploy role may hold them.

use padlock_token::Claims;

use super::{App, Verified};
use crate::error::{DeployError, Result};
use crate::policy::{Action, Env, Permission};
use crate::store::NodeGrant;

/// Grant or revoke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PermissionChange {
    Grant,
    Revoke,
}

impl App {
    /// Grants or revokes `permissions` of `username` on `env` of `app_id`;
    /// returns what they hold there afterwards.
    pub(crate) async fn change_permissions(
        &self,
        verified: &Verified,
        what: PermissionChange,
        app_id: &str,
        env: Env,
        username: &str,
        permissions: &[Permission],
    ) -> Result<Vec<Permission>> {
        let (who, mut change) = self
            .authorize(verified, Action::ChangeNodePermissions, app_id, env)
            .await?;
        let member = change
            .member(username)
            .await?
            .ok_or(DeployError::MemberNotFound)?;
        match what {
            PermissionChange::Grant => {
                if !member.role.may_hold_permissions() {
                    return Err(DeployError::MemberCannotHoldPermissions);
                }
                change
                    .grant(env, username, permissions, who.username(), self.now())
                    .await?;
            }
            PermissionChange::Revoke => change.revoke(env, username, permissions).await?,
        }
        let held: Vec<Permission> = change
            .grants(Some(username))
            .await?
            .into_iter()
            .filter(|g| g.env == env)
            .map(|g| g.permission)
            .collect();
        let names: Vec<&str> = permissions.iter().map(|p| p.as_str()).collect();
        let verb = match what {
            PermissionChange::Grant => "grant",
            PermissionChange::Revoke => "revoke",
        };
        let audit = self.audit_ok(
            &who,
            Action::ChangeNodePermissions.as_str(),
            app_id,
            Some(env),
            format!("{verb} username={username} permissions={}", names.join(",")),
        );
        change.commit(audit).await?;
        Ok(held)
    }

    /// Every node permission on `app_id`, for a member of it.
    pub(crate) async fn node_permissions(
        &self,
        claims: &Claims,
        app_id: &str,
    ) -> Result<Vec<NodeGrant>> {
        self.app_of_member(claims, app_id).await?;
        Ok(self.store().grants(app_id, None).await?)
    }
}
