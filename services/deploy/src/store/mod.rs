//! The deploy service's storage: apps, team members, node permissions,
//! packages, deployments and the audit trail, behind plain functions over
//! domain types. The service layer never sees sea-orm types; its changes go
//! through an [`AppChange`], one transaction with their audit record.

mod audit_chain;
mod change;
mod entity;
pub(crate) mod migration;
mod permission_version;
mod read;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use padlock_runtime::db;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseConnection, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect,
};

use crate::policy::{Env, Permission, Role};
use entity::{app, audit_event, deployment, package, team_member};

pub use audit_chain::verify as verify_audit_chain;
pub use change::AppChange;
pub use padlock_runtime::db::StoreError;

pub type Result<T> = std::result::Result<T, StoreError>;

fn env_of(s: &str) -> Option<Env> {
    Env::ALL.into_iter().find(|e| e.as_str() == s)
}

fn permission_of(s: &str) -> Option<Permission> {
    Permission::ALL.into_iter().find(|p| p.as_str() == s)
}

/// An app to create, with its first Technical Contact.
#[derive(Debug, Clone)]
pub struct NewApp {
    pub id: String,
    pub name: String,
    pub technical_contact: String,
    pub by: String,
    pub now: i64,
}

#[derive(Debug, Clone)]
pub struct App {
    pub id: String,
    pub name: String,
    pub created_at: i64,
    /// Usernames of its Technical Contacts.
    pub technical_contacts: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Member {
    pub app_id: String,
    pub username: String,
    pub role: Role,
    pub added_at: i64,
}

#[derive(Debug, Clone)]
pub struct NodeGrant {
    pub app_id: String,
    pub env: Env,
    pub username: String,
    pub permission: Permission,
}

#[derive(Debug, Clone)]
pub struct Package {
    pub id: String,
    pub app_id: String,
    pub version: String,
    pub file_name: String,
    pub size: u64,
    pub sha256: String,
    pub uploaded_by: String,
    pub uploaded_at: i64,
}

#[derive(Debug, Clone)]
pub struct Deployment {
    pub id: i64,
    pub app_id: String,
    pub package_id: String,
    pub env: Env,
    pub from_env: Option<Env>,
    pub deployed_by: String,
    pub deployed_at: i64,
    pub mfa_at: Option<i64>,
    pub mfa_method: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Refused,
}

/// One audit record: who did what where, relying on which second factor.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub at: i64,
    pub actor: String,
    pub action: &'static str,
    pub app_id: Option<String>,
    pub env: Option<Env>,
    pub outcome: Outcome,
    pub reason: Option<&'static str>,
    pub mfa_at: Option<i64>,
    pub mfa_method: Option<String>,
    pub detail: String,
}

#[derive(Debug, Clone)]
pub struct AuditRecord {
    pub id: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub app_id: Option<String>,
    pub environment: Option<String>,
    pub outcome: String,
    pub reason: Option<String>,
    pub mfa_at: Option<i64>,
    pub detail: String,
}

#[derive(Debug, Clone)]
pub struct Store {
    db: DatabaseConnection,
    /// Team and node-permission changes committed through this store (all
    /// clones share it): a cache of what people hold rechecks the version
    /// as soon as this moves, so this replica's own changes count at once.
    permission_changes: Arc<AtomicU64>,
}

impl Store {
    /// Connects and runs pending migrations.
    pub async fn connect(url: &str) -> Result<Self> {
        let db = db::connect_migrated::<migration::Migrator>(url, db::connect_options(url)).await?;
        Ok(Self {
            db,
            permission_changes: Arc::default(),
        })
    }

    /// `app_id`'s permissions version, bumped by every change to its team
    /// or node permissions; `None` if there is no such app.
    pub async fn permissions_version(&self, app_id: &str) -> Result<Option<i64>> {
        permission_version::read(&self.db, app_id).await
    }

    /// How many team or node-permission changes this store (this replica)
    /// has committed. Read it before [`Store::permissions_version`].
    pub fn local_permission_changes(&self) -> u64 {
        self.permission_changes.load(Ordering::Acquire)
    }

    pub async fn ping(&self) -> bool {
        self.db.ping().await.is_ok()
    }

    /// Creates an app with its Technical Contact and the audit record of
    /// its creation, in one transaction.
    pub async fn create_app(&self, new: &NewApp, audit: AuditEvent) -> Result<()> {
        let txn = padlock_runtime::audit::begin(&self.db).await?;
        app::Entity::insert(app::ActiveModel {
            id: Set(new.id.clone()),
            name: Set(new.name.clone()),
            created_at: Set(new.now),
            created_by: Set(new.by.clone()),
        })
        .exec_without_returning(&txn)
        .await?;
        team_member::Entity::insert(team_member::ActiveModel {
            app_id: Set(new.id.clone()),
            username: Set(new.technical_contact.clone()),
            role: Set(Role::TechnicalContact.as_str().to_owned()),
            added_at: Set(new.now),
            added_by: Set(new.by.clone()),
        })
        .exec_without_returning(&txn)
        .await?;
        append_audit(&txn, audit).await?;
        txn.commit().await?;
        Ok(())
    }

    /// Begins a change to `app_id` (`None`: no such app): a transaction
    /// that holds the app's lock until it commits, so the checks made in it
    /// still hold when its writes and their audit record commit
    /// ([`AppChange`]).
    pub async fn change(&self, app_id: &str) -> Result<Option<AppChange>> {
        AppChange::begin(self, app_id).await
    }

    pub async fn app(&self, id: &str) -> Result<Option<App>> {
        read::app(&self.db, id).await
    }

    /// The app called `name` (names are unique), for operator commands.
    pub async fn app_named(&self, name: &str) -> Result<Option<App>> {
        read::app_named(&self.db, name).await
    }

    /// The apps `username` is a team member of, by name.
    pub async fn apps_of(&self, username: &str) -> Result<Vec<App>> {
        let ids: Vec<String> = team_member::Entity::find()
            .filter(team_member::Column::Username.eq(username))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|m| m.app_id)
            .collect();
        let mut apps = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(app) = self.app(&id).await? {
                apps.push(app);
            }
        }
        apps.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(apps)
    }

    pub async fn member(&self, app_id: &str, username: &str) -> Result<Option<Member>> {
        read::member(&self.db, app_id, username).await
    }

    pub async fn members(&self, app_id: &str) -> Result<Vec<Member>> {
        let rows = team_member::Entity::find()
            .filter(team_member::Column::AppId.eq(app_id))
            .order_by_asc(team_member::Column::Username)
            .all(&self.db)
            .await?;
        Ok(rows.into_iter().filter_map(member_from_row).collect())
    }

    /// Node permissions on `app_id`, for one user or everyone.
    pub async fn grants(&self, app_id: &str, username: Option<&str>) -> Result<Vec<NodeGrant>> {
        read::grants(&self.db, app_id, username).await
    }

    pub async fn package(&self, id: &str) -> Result<Option<Package>> {
        Ok(package::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await?
            .map(package_from_row))
    }

    /// Newest first.
    pub async fn packages(&self, app_id: &str) -> Result<Vec<Package>> {
        let rows = package::Entity::find()
            .filter(package::Column::AppId.eq(app_id))
            .order_by_desc(package::Column::UploadedAt)
            .order_by_desc(package::Column::Version)
            .all(&self.db)
            .await?;
        Ok(rows.into_iter().map(package_from_row).collect())
    }

    /// Whether any package row refers to this content.
    pub async fn blob_in_use(&self, sha256: &str) -> Result<bool> {
        let n = package::Entity::find()
            .filter(package::Column::Sha256.eq(sha256))
            .count(&self.db)
            .await?;
        Ok(n > 0)
    }

    /// Newest first; one environment or all.
    pub async fn deployments(
        &self,
        app_id: &str,
        env: Option<Env>,
        limit: u64,
    ) -> Result<Vec<Deployment>> {
        read::deployments(&self.db, app_id, env, limit).await
    }

    /// What runs on an environment now: its newest deployment.
    pub async fn current_deployment(&self, app_id: &str, env: Env) -> Result<Option<Deployment>> {
        read::current_deployment(&self.db, app_id, env).await
    }

    /// Appends one record to the audit chain, in a transaction of its own:
    /// for records that go with no state change (a refusal).
    pub async fn audit(&self, e: AuditEvent) -> Result<()> {
        let txn = padlock_runtime::audit::begin(&self.db).await?;
        append_audit(&txn, e).await?;
        txn.commit().await?;
        Ok(())
    }

    /// Newest first.
    pub async fn audit_events(&self, app_id: Option<&str>, limit: u64) -> Result<Vec<AuditRecord>> {
        let mut query = audit_event::Entity::find();
        if let Some(app_id) = app_id {
            query = query.filter(audit_event::Column::AppId.eq(app_id));
        }
        let rows = query
            .order_by_desc(audit_event::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| AuditRecord {
                id: r.id,
                at: r.at,
                actor: r.actor,
                action: r.action,
                app_id: r.app_id,
                environment: r.environment,
                outcome: r.outcome,
                reason: r.reason,
                mfa_at: r.mfa_at,
                detail: r.detail,
            })
            .collect())
    }
}

/// Appends `e` to the audit chain in `txn` (begun by `audit::begin`); call
/// it after the transaction's other writes.
async fn append_audit(txn: &sea_orm::DatabaseTransaction, e: AuditEvent) -> Result<()> {
    padlock_runtime::audit::append(txn, &audit_chain::CHAIN, vec![audit_chain::values(e)]).await?;
    Ok(())
}

fn member_from_row(r: team_member::Model) -> Option<Member> {
    Some(Member {
        role: Role::parse(&r.role)?,
        app_id: r.app_id,
        username: r.username,
        added_at: r.added_at,
    })
}

fn package_from_row(r: package::Model) -> Package {
    Package {
        id: r.id,
        app_id: r.app_id,
        version: r.version,
        file_name: r.file_name,
        size: u64::try_from(r.size).unwrap_or(0),
        sha256: r.sha256,
        uploaded_by: r.uploaded_by,
        uploaded_at: r.uploaded_at,
    }
}

fn deployment_from_row(r: deployment::Model) -> Option<Deployment> {
    Some(Deployment {
        id: r.id,
        env: env_of(&r.environment)?,
        from_env: match r.from_environment {
            Some(e) => Some(env_of(&e)?),
            None => None,
        },
        app_id: r.app_id,
        package_id: r.package_id,
        deployed_by: r.deployed_by,
        deployed_at: r.deployed_at,
        mfa_at: r.mfa_at,
        mfa_method: r.mfa_method,
    })
}
