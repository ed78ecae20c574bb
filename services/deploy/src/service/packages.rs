//! Packages and their way to production: uploads (the uploader's role
//! checked before the bytes and again with the row), and the padlocked
//! deploys and transports, each recorded with its audit record in the
//! change that authorized it.

use padlock_token::Claims;

use super::{App, Authorized, Verified};
use crate::blobs::Upload;
use crate::error::{DeployError, Result};
use crate::policy::{Action, Env, FileName, Role, Version};
use crate::store::{self, AppChange, Deployment, StoreError};

/// How many deployments a listing returns at most.
pub(crate) const MAX_LISTED_DEPLOYMENTS: u64 = 200;

/// What an upload's first message declares, validated.
#[derive(Debug)]
pub(crate) struct NewPackage {
    pub(crate) app_id: String,
    pub(crate) version: Version,
    pub(crate) file_name: FileName,
    pub(crate) size: u64,
    pub(crate) sha256: String,
}

impl App {
    /// The package `id`, `PackageNotFound` without it.
    pub(crate) async fn package(&self, id: &str) -> Result<store::Package> {
        self.store()
            .package(id)
            .await?
            .ok_or(DeployError::PackageNotFound)
    }

    /// The version of package `id`; empty if it is gone.
    pub(crate) async fn package_version(&self, id: &str) -> Result<String> {
        Ok(self
            .store()
            .package(id)
            .await?
            .map(|p| p.version)
            .unwrap_or_default())
    }

    /// Starts an upload for `claims` into `new.app_id`: a member with the
    /// Deploy role (or the Technical Contact) only, before any byte.
    pub(crate) async fn begin_upload(&self, claims: &Claims, new: &NewPackage) -> Result<Upload> {
        let app = self.app(&new.app_id).await?;
        let member = self.member_of(claims, &app.id).await?;
        if !matches!(member.role, Role::TechnicalContact | Role::Deploy) {
            return Err(DeployError::DeployRoleRequired);
        }
        Ok(self.blobs().begin(new.size, &new.sha256).await?)
    }

    /// Stores a complete upload under its digest and writes its row with
    /// its audit record; without the row, the file goes too (unless another
    /// row uses the same bytes).
    pub(crate) async fn finish_upload(
        &self,
        claims: Claims,
        new: NewPackage,
        upload: Upload,
    ) -> Result<store::Package> {
        let _commit = self.0.package_commit.lock().await;
        let stored = upload.finish().await?;
        let package = store::Package {
            id: uuid::Uuid::new_v4().to_string(),
            app_id: new.app_id,
            version: new.version.into_string(),
            file_name: new.file_name.into_string(),
            size: stored.size,
            sha256: stored.sha256_hex.clone(),
            uploaded_by: claims.preferred_username.clone(),
            uploaded_at: self.now(),
        };
        if let Err(e) = self.insert_package(&Authorized { claims }, &package).await {
            let in_use = self
                .store()
                .blob_in_use(&stored.sha256_hex)
                .await
                .unwrap_or(true);
            if !in_use {
                let _ = self.blobs().remove(&stored.sha256_hex).await;
            }
            return Err(e);
        }
        Ok(package)
    }

    /// Writes an uploaded package's row and its audit record in one change,
    /// checking again that the uploader may upload: the membership checked
    /// before the upload may have ended while it streamed.
    async fn insert_package(&self, who: &Authorized, package: &store::Package) -> Result<()> {
        let change = self
            .store()
            .change(&package.app_id)
            .await?
            .ok_or(DeployError::AppNotFound)?;
        let member = change
            .member(who.username())
            .await?
            .ok_or(DeployError::NotAMember)?;
        if !member.role.may_hold_permissions() {
            return Err(DeployError::DeployRoleRequired);
        }
        match change.insert_package(package).await {
            Ok(()) => {}
            Err(StoreError::Conflict) => return Err(DeployError::PackageVersionExists),
            Err(e) => return Err(e.into()),
        }
        let audit = self.audit_ok(
            who,
            "upload_package",
            &package.app_id,
            None,
            format!("version={} sha256={}", package.version, package.sha256),
        );
        change.commit(audit).await?;
        Ok(())
    }

    /// The packages of `app_id`, newest first, for a member of it.
    pub(crate) async fn packages(
        &self,
        claims: &Claims,
        app_id: &str,
    ) -> Result<Vec<store::Package>> {
        self.app_of_member(claims, app_id).await?;
        Ok(self.store().packages(app_id).await?)
    }

    /// The deployments of `app_id` (one environment or all), newest first,
    /// with their package's version, for a member of it.
    pub(crate) async fn deployments(
        &self,
        claims: &Claims,
        app_id: &str,
        env: Option<Env>,
    ) -> Result<Vec<(Deployment, String)>> {
        self.app_of_member(claims, app_id).await?;
        let rows = self
            .store()
            .deployments(app_id, env, MAX_LISTED_DEPLOYMENTS)
            .await?;
        let mut deployments = Vec::with_capacity(rows.len());
        for d in rows {
            let version = self
                .package_version(&d.package_id)
                .await
                .unwrap_or_default();
            deployments.push((d, version));
        }
        Ok(deployments)
    }

    /// Deploys `package_id` on `env`: padlocked there. The promotion order
    /// holds whatever the RPC: a package reaches an environment only after
    /// it ran on the one before (a redeploy, or a rollback to a package
    /// that passed there earlier, is fine).
    pub(crate) async fn deploy_package(
        &self,
        verified: &Verified,
        package_id: &str,
        env: Env,
    ) -> Result<(Deployment, String)> {
        let package = self.package(package_id).await?;
        let (who, change) = self
            .authorize(verified, Action::DeployPackage, &package.app_id, env)
            .await?;
        if let Some(previous) = env.previous()
            && !change.has_run(&package.id, previous).await?
        {
            return Err(DeployError::NotPromoted { env, previous });
        }
        self.record(&who, change, Action::DeployPackage, &package, env, None)
            .await
    }

    /// Moves `package_id` from `from` to the next environment `to`:
    /// padlocked on `to`; only what runs on `from` now.
    pub(crate) async fn transport_package(
        &self,
        verified: &Verified,
        package_id: &str,
        from: Env,
        to: Env,
    ) -> Result<(Deployment, String)> {
        let package = self.package(package_id).await?;
        let (who, change) = self
            .authorize(verified, Action::TransportPackage, &package.app_id, to)
            .await?;
        let current = change.current_deployment(from).await?;
        if current.is_none_or(|d| d.package_id != package.id) {
            return Err(DeployError::NotDeployedInSource);
        }
        let action = Action::TransportPackage;
        self.record(&who, change, action, &package, to, Some(from))
            .await
    }

    /// Records, in `change`, that `package` now runs on `env` (coming from
    /// `from`), and commits it with its audit record.
    async fn record(
        &self,
        who: &Authorized,
        change: AppChange,
        action: Action,
        package: &store::Package,
        env: Env,
        from: Option<Env>,
    ) -> Result<(Deployment, String)> {
        let mut deployment = Deployment {
            id: 0,
            app_id: package.app_id.clone(),
            package_id: package.id.clone(),
            env,
            from_env: from,
            deployed_by: who.username().to_owned(),
            deployed_at: self.now(),
            mfa_at: who.claims.mfa_at,
            mfa_method: who.claims.mfa_method.clone(),
        };
        deployment.id = change.insert_deployment(&deployment).await?;
        let detail = match from {
            Some(from) => format!(
                "package={} version={} from={}",
                package.id,
                package.version,
                from.as_str()
            ),
            None => format!("package={} version={}", package.id, package.version),
        };
        let audit = self.audit_ok(who, action.as_str(), &package.app_id, Some(env), detail);
        change.commit(audit).await?;
        Ok((deployment, package.version.clone()))
    }
}
