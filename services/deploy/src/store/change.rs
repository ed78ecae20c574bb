//! A change to one app, in one transaction: every state change of the
//! deploy service (team, node permissions, packages, deployments) is made
//! through an [`AppChange`], together with the checks it depends on and its
//! audit record. The transaction holds the app's lock from its first
//! statement to its commit, so what a check read (who is the Technical
//! Contact, who is a member, what runs on acceptance) cannot change before
//! the write it allowed commits: on PostgreSQL the app's row is locked
//! (`SELECT ... FOR UPDATE`), on SQLite `BEGIN IMMEDIATE` holds the
//! database's write lock. Changes to one app thus take turns; changes to
//! different apps do not wait for each other on PostgreSQL.
//!
//! Lock order: the app first, the audit chain last (`commit`), the same in
//! every transaction, so two changes never wait for each other in a cycle.
//! Dropping an `AppChange` without `commit` rolls it back: nothing it wrote
//! remains, and no audit record claims it.

use std::sync::atomic::Ordering;

use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter, QuerySelect,
};

use super::entity::{app, deployment, node_permission, package, team_member};
use super::{
    App, AuditEvent, Deployment, Member, NodeGrant, Package, Result, Role, Store, StoreError,
    append_audit, permission_version, read,
};
use crate::policy::{Env, Permission};

/// An open change to one app ([module docs](self)).
#[derive(Debug)]
pub struct AppChange {
    txn: DatabaseTransaction,
    store: Store,
    app: App,
    /// The team or node permissions changed: the app's permissions version
    /// moves at commit.
    permissions_changed: bool,
}

impl AppChange {
    pub(super) async fn begin(store: &Store, app_id: &str) -> Result<Option<Self>> {
        let txn = padlock_runtime::audit::begin(&store.db).await?;
        let row = app::Entity::find_by_id(app_id.to_owned())
            .lock_exclusive()
            .one(&txn)
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let app = read::with_technical_contacts(&txn, row).await?;
        Ok(Some(AppChange {
            txn,
            store: store.clone(),
            app,
            permissions_changed: false,
        }))
    }

    /// The app as read under its lock, with its Technical Contacts.
    pub fn app(&self) -> &App {
        &self.app
    }

    pub async fn member(&self, username: &str) -> Result<Option<Member>> {
        read::member(&self.txn, &self.app.id, username).await
    }

    /// Node permissions on the app, for one user or everyone.
    pub async fn grants(&self, username: Option<&str>) -> Result<Vec<NodeGrant>> {
        read::grants(&self.txn, &self.app.id, username).await
    }

    /// Newest first; one environment or all.
    pub async fn deployments(&self, env: Option<Env>, limit: u64) -> Result<Vec<Deployment>> {
        read::deployments(&self.txn, &self.app.id, env, limit).await
    }

    /// What runs on `env` now.
    pub async fn current_deployment(&self, env: Env) -> Result<Option<Deployment>> {
        read::current_deployment(&self.txn, &self.app.id, env).await
    }

    /// Whether `package_id` was ever deployed on `env` of this app.
    pub async fn has_run(&self, package_id: &str, env: Env) -> Result<bool> {
        let found = deployment::Entity::find()
            .filter(deployment::Column::AppId.eq(self.app.id.as_str()))
            .filter(deployment::Column::PackageId.eq(package_id))
            .filter(deployment::Column::Environment.eq(env.as_str()))
            .limit(1)
            .one(&self.txn)
            .await?;
        Ok(found.is_some())
    }

    /// Adds a member or changes their role. A role that may not hold node
    /// permissions drops the ones they had.
    pub async fn put_member(
        &mut self,
        username: &str,
        role: Role,
        by: &str,
        now: i64,
    ) -> Result<Member> {
        let app_id = self.app.id.clone();
        team_member::Entity::insert(team_member::ActiveModel {
            app_id: Set(app_id.clone()),
            username: Set(username.to_owned()),
            role: Set(role.as_str().to_owned()),
            added_at: Set(now),
            added_by: Set(by.to_owned()),
        })
        .on_conflict(
            OnConflict::columns([team_member::Column::AppId, team_member::Column::Username])
                .update_column(team_member::Column::Role)
                .to_owned(),
        )
        .exec_without_returning(&self.txn)
        .await?;
        if !role.may_hold_permissions() {
            self.drop_permissions(username).await?;
        }
        self.permissions_changed = true;
        self.member(username).await?.ok_or(StoreError::Internal)
    }

    /// Removes a member and their node permissions; false if not a member.
    pub async fn remove_member(&mut self, username: &str) -> Result<bool> {
        self.drop_permissions(username).await?;
        let removed = team_member::Entity::delete_many()
            .filter(team_member::Column::AppId.eq(self.app.id.as_str()))
            .filter(team_member::Column::Username.eq(username))
            .exec(&self.txn)
            .await?
            .rows_affected;
        self.permissions_changed = true;
        Ok(removed == 1)
    }

    async fn drop_permissions(&self, username: &str) -> Result<()> {
        node_permission::Entity::delete_many()
            .filter(node_permission::Column::AppId.eq(self.app.id.as_str()))
            .filter(node_permission::Column::Username.eq(username))
            .exec(&self.txn)
            .await?;
        Ok(())
    }

    /// Grants permissions on `env`; already-held ones are left as they are.
    pub async fn grant(
        &mut self,
        env: Env,
        username: &str,
        permissions: &[Permission],
        by: &str,
        now: i64,
    ) -> Result<()> {
        if permissions.is_empty() {
            return Ok(());
        }
        let rows = permissions.iter().map(|p| node_permission::ActiveModel {
            app_id: Set(self.app.id.clone()),
            environment: Set(env.as_str().to_owned()),
            username: Set(username.to_owned()),
            permission: Set(p.as_str().to_owned()),
            granted_at: Set(now),
            granted_by: Set(by.to_owned()),
        });
        node_permission::Entity::insert_many(rows)
            .on_conflict(
                OnConflict::columns([
                    node_permission::Column::AppId,
                    node_permission::Column::Username,
                    node_permission::Column::Environment,
                    node_permission::Column::Permission,
                ])
                .do_nothing()
                .to_owned(),
            )
            .exec_without_returning(&self.txn)
            .await?;
        self.permissions_changed = true;
        Ok(())
    }

    pub async fn revoke(
        &mut self,
        env: Env,
        username: &str,
        permissions: &[Permission],
    ) -> Result<()> {
        let names: Vec<&str> = permissions.iter().map(|p| p.as_str()).collect();
        node_permission::Entity::delete_many()
            .filter(node_permission::Column::AppId.eq(self.app.id.as_str()))
            .filter(node_permission::Column::Environment.eq(env.as_str()))
            .filter(node_permission::Column::Username.eq(username))
            .filter(node_permission::Column::Permission.is_in(names))
            .exec(&self.txn)
            .await?;
        self.permissions_changed = true;
        Ok(())
    }

    /// `Conflict` when the app has a package of that version.
    pub async fn insert_package(&self, p: &Package) -> Result<()> {
        package::Entity::insert(package::ActiveModel {
            id: Set(p.id.clone()),
            app_id: Set(self.app.id.clone()),
            version: Set(p.version.clone()),
            file_name: Set(p.file_name.clone()),
            size: Set(i64::try_from(p.size).map_err(|_| StoreError::Internal)?),
            sha256: Set(p.sha256.clone()),
            uploaded_by: Set(p.uploaded_by.clone()),
            uploaded_at: Set(p.uploaded_at),
        })
        .exec_without_returning(&self.txn)
        .await?;
        Ok(())
    }

    /// Records a deployment of this app; returns its id.
    pub async fn insert_deployment(&self, d: &Deployment) -> Result<i64> {
        let result = deployment::Entity::insert(deployment::ActiveModel {
            app_id: Set(self.app.id.clone()),
            package_id: Set(d.package_id.clone()),
            environment: Set(d.env.as_str().to_owned()),
            from_environment: Set(d.from_env.map(|e| e.as_str().to_owned())),
            deployed_by: Set(d.deployed_by.clone()),
            deployed_at: Set(d.deployed_at),
            mfa_at: Set(d.mfa_at),
            mfa_method: Set(d.mfa_method.clone()),
            ..Default::default()
        })
        .exec(&self.txn)
        .await?;
        Ok(result.last_insert_id)
    }

    /// Ends the change without writing anything, releasing the app at once.
    pub async fn rollback(self) -> Result<()> {
        self.txn.rollback().await?;
        Ok(())
    }

    /// Commits the change with its audit record: both or neither.
    pub async fn commit(self, audit: AuditEvent) -> Result<()> {
        if self.permissions_changed {
            permission_version::bump(&self.txn, &self.app.id).await?;
        }
        append_audit(&self.txn, audit).await?;
        self.txn.commit().await?;
        if self.permissions_changed {
            self.store.permission_changes.fetch_add(1, Ordering::AcqRel);
        }
        Ok(())
    }
}
