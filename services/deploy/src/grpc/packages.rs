//! `PackageService`: uploads (client streaming, checked by size and
//! SHA-256, stored by content hash), deployments and transports. A deploy
//! or transport to an environment is a padlocked action there.

use padlock_proto::deploy::v1::{
    self as pb, DeployPackageRequest, ListDeploymentsRequest, ListDeploymentsResponse,
    ListPackagesRequest, ListPackagesResponse, PackageMetadata, TransportPackageRequest,
    UploadPackageRequest, package_service_server::PackageService, upload_package_request::Part,
};
use padlock_token::Claims;
use tonic::{Request, Response, Status, Streaming};

use super::{Check, MAX_LISTED_DEPLOYMENTS, deployment_message, package_message};
use crate::app::{App, Authorized};
use crate::error::{DeployError, Result};
use crate::policy::{Action, Env};
use crate::store::{self, AppChange, Role, StoreError};

#[derive(Debug, Clone)]
pub struct Packages(pub App);

type Reply<T> = std::result::Result<Response<T>, Status>;

impl Packages {
    async fn package(&self, id: &str) -> Result<store::Package> {
        self.0
            .store()
            .package(id)
            .await?
            .ok_or(DeployError::PackageNotFound)
    }

    async fn upload(
        &self,
        claims: Claims,
        mut stream: Streaming<UploadPackageRequest>,
    ) -> Result<pb::Package> {
        let first = stream
            .message()
            .await
            .map_err(|_| DeployError::invalid("metadata", "the upload ended early"))?;
        let Some(UploadPackageRequest {
            part: Some(Part::Metadata(meta)),
        }) = first
        else {
            return Err(DeployError::invalid(
                "metadata",
                "the first message must hold the metadata",
            ));
        };
        check_metadata(&meta)?;
        let app = self
            .0
            .store()
            .app(&meta.app_id)
            .await?
            .ok_or(DeployError::AppNotFound)?;
        let member = self.0.member_of(&claims, &app.id).await?;
        if !matches!(member.role, Role::TechnicalContact | Role::Deploy) {
            return Err(DeployError::DeployRoleRequired);
        }

        // Dropping `upload` on any early return removes its temporary file.
        let mut upload = self.0.blobs().begin(meta.size, &meta.sha256).await?;
        loop {
            match stream.message().await {
                Ok(Some(UploadPackageRequest {
                    part: Some(Part::Chunk(bytes)),
                })) => upload.write(&bytes).await?,
                Ok(Some(_)) => {
                    return Err(DeployError::invalid(
                        "chunk",
                        "after the metadata, only chunks",
                    ));
                }
                Ok(None) => break,
                Err(status) => {
                    tracing::info!(code = ?status.code(), "upload cut off by the client");
                    return Err(DeployError::invalid("chunk", "the upload was cut off"));
                }
            }
        }
        let _commit = self.0.package_commit().await;
        let stored = upload.finish().await?;

        let package = store::Package {
            id: uuid::Uuid::new_v4().to_string(),
            app_id: app.id.clone(),
            version: meta.version,
            file_name: meta.file_name,
            size: stored.size,
            sha256: stored.sha256_hex.clone(),
            uploaded_by: claims.preferred_username.clone(),
            uploaded_at: self.0.now(),
        };
        if let Err(e) = self.insert_package(&Authorized { claims }, &package).await {
            // No file without its row: drop the blob unless another row uses it.
            let in_use = self
                .0
                .store()
                .blob_in_use(&stored.sha256_hex)
                .await
                .unwrap_or(true);
            if !in_use {
                let _ = self.0.blobs().remove(&stored.sha256_hex).await;
            }
            return Err(e);
        }
        Ok(package_message(&package))
    }

    /// Writes an uploaded package's row and its audit record in one change,
    /// checking again that the uploader may upload: the membership checked
    /// before the upload may have ended while it streamed.
    async fn insert_package(&self, who: &Authorized, package: &store::Package) -> Result<()> {
        let change = self
            .0
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
        let audit = self.0.audit_ok(
            who,
            "upload_package",
            &package.app_id,
            None,
            format!("version={} sha256={}", package.version, package.sha256),
        );
        change.commit(audit).await?;
        Ok(())
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
    ) -> Result<pb::Deployment> {
        let mut deployment = store::Deployment {
            id: 0,
            app_id: package.app_id.clone(),
            package_id: package.id.clone(),
            env,
            from_env: from,
            deployed_by: who.username().to_owned(),
            deployed_at: self.0.now(),
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
        let audit = self
            .0
            .audit_ok(who, action.as_str(), &package.app_id, Some(env), detail);
        change.commit(audit).await?;
        Ok(deployment_message(&deployment, &package.version))
    }

    async fn deploy(&self, request: Request<DeployPackageRequest>) -> Result<pb::Deployment> {
        let (metadata, _, req) = request.into_parts();
        let verified = self
            .0
            .verify_for(
                &metadata,
                Action::DeployPackage,
                Env::from_proto(req.environment),
            )
            .await?;
        let mut check = Check::new();
        check.id("package_id", &req.package_id);
        let env = check.env("environment", req.environment);
        check.done()?;
        let env = env.ok_or(DeployError::Internal)?;
        let package = self.package(&req.package_id).await?;
        let (who, change) = self
            .0
            .authorize(&verified, Action::DeployPackage, &package.app_id, env)
            .await?;
        // The promotion order holds whatever the RPC: a package reaches an
        // environment only after it ran on the one before (a redeploy, or
        // a rollback to a package that passed there earlier, is fine).
        if let Some(previous) = env.previous()
            && !change.has_run(&package.id, previous).await?
        {
            return Err(DeployError::NotPromoted { env, previous });
        }
        self.record(&who, change, Action::DeployPackage, &package, env, None)
            .await
    }

    async fn transport(&self, request: Request<TransportPackageRequest>) -> Result<pb::Deployment> {
        let (metadata, _, req) = request.into_parts();
        let verified = self
            .0
            .verify_for(
                &metadata,
                Action::TransportPackage,
                Env::from_proto(req.to_environment),
            )
            .await?;
        let mut check = Check::new();
        check.id("package_id", &req.package_id);
        let from = check.env("from_environment", req.from_environment);
        let to = check.env("to_environment", req.to_environment);
        check.done()?;
        let (Some(from), Some(to)) = (from, to) else {
            return Err(DeployError::Internal);
        };
        if from.next() != Some(to) {
            return Err(DeployError::invalid(
                "to_environment",
                "packages move one step at a time: test to acceptance, acceptance to production",
            ));
        }
        let package = self.package(&req.package_id).await?;
        let (who, change) = self
            .0
            .authorize(&verified, Action::TransportPackage, &package.app_id, to)
            .await?;
        let current = change.current_deployment(from).await?;
        if current.is_none_or(|d| d.package_id != package.id) {
            return Err(DeployError::NotDeployedInSource);
        }
        self.record(
            &who,
            change,
            Action::TransportPackage,
            &package,
            to,
            Some(from),
        )
        .await
    }
}

fn check_metadata(meta: &PackageMetadata) -> Result<()> {
    let mut check = Check::new();
    check.id("metadata.app_id", &meta.app_id);
    check.version("metadata.version", &meta.version);
    check.file_name("metadata.file_name", &meta.file_name);
    check.done()
}

#[tonic::async_trait]
impl PackageService for Packages {
    async fn upload_package(
        &self,
        request: Request<Streaming<UploadPackageRequest>>,
    ) -> Reply<pb::Package> {
        let claims = self.0.caller(request.metadata()).await?;
        Ok(Response::new(
            self.upload(claims, request.into_inner()).await?,
        ))
    }

    async fn list_packages(
        &self,
        request: Request<ListPackagesRequest>,
    ) -> Reply<ListPackagesResponse> {
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
        let packages = self
            .0
            .store()
            .packages(&req.app_id)
            .await
            .map_err(DeployError::from)?;
        Ok(Response::new(ListPackagesResponse {
            packages: packages.iter().map(package_message).collect(),
        }))
    }

    async fn deploy_package(
        &self,
        request: Request<DeployPackageRequest>,
    ) -> Reply<pb::Deployment> {
        Ok(Response::new(self.deploy(request).await?))
    }

    async fn transport_package(
        &self,
        request: Request<TransportPackageRequest>,
    ) -> Reply<pb::Deployment> {
        Ok(Response::new(self.transport(request).await?))
    }

    async fn list_deployments(
        &self,
        request: Request<ListDeploymentsRequest>,
    ) -> Reply<ListDeploymentsResponse> {
        let claims = self.0.caller(request.metadata()).await?;
        let req = request.into_inner();
        let mut check = Check::new();
        check.id("app_id", &req.app_id);
        let env = check.env_filter("environment", req.environment);
        check.done()?;
        self.0
            .store()
            .app(&req.app_id)
            .await
            .map_err(DeployError::from)?
            .ok_or(DeployError::AppNotFound)?;
        self.0.member_of(&claims, &req.app_id).await?;
        let rows = self
            .0
            .store()
            .deployments(&req.app_id, env, MAX_LISTED_DEPLOYMENTS)
            .await
            .map_err(DeployError::from)?;
        let mut deployments = Vec::with_capacity(rows.len());
        for d in &rows {
            let version = self
                .package(&d.package_id)
                .await
                .map(|p| p.version)
                .unwrap_or_default();
            deployments.push(deployment_message(d, &version));
        }
        Ok(Response::new(ListDeploymentsResponse { deployments }))
    }
}
