//! `PackageService`: uploads (client streaming, checked by size and
//! SHA-256, stored by content hash), deployments and transports. A deploy
//! or transport to an environment is a padlocked action there.

use padlock_proto::deploy::v1::{
    self as pb, DeployPackageRequest, ListDeploymentsRequest, ListDeploymentsResponse,
    ListPackagesRequest, ListPackagesResponse, PackageMetadata, TransportPackageRequest,
    UploadPackageRequest, package_service_server::PackageService, upload_package_request::Part,
};
use tonic::{Request, Response, Streaming};

use super::{Fields, Reply, app_id, deployment_message, package_message};
use crate::blobs::Upload;
use crate::error::{DeployError, Result};
use crate::policy::{Action, Env};
use crate::service::{App, NewPackage};

#[derive(Debug, Clone)]
pub(crate) struct Packages(pub(crate) App);

/// The upload's first message: its metadata, validated.
async fn metadata(stream: &mut Streaming<UploadPackageRequest>) -> Result<NewPackage> {
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
    let PackageMetadata {
        app_id,
        version,
        file_name,
        size,
        sha256,
    } = meta;
    let mut fields = Fields::new();
    fields.id("metadata.app_id", &app_id);
    let version = fields.version("metadata.version", &version);
    let file_name = fields.file_name("metadata.file_name", &file_name);
    let (version, file_name) = fields.done_with(version.zip(file_name))?;
    Ok(NewPackage {
        app_id,
        version,
        file_name,
        size,
        sha256,
    })
}

/// Writes every chunk after the metadata into `upload`.
async fn chunks(stream: &mut Streaming<UploadPackageRequest>, upload: &mut Upload) -> Result<()> {
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
            Ok(None) => return Ok(()),
            Err(status) => {
                tracing::info!(code = ?status.code(), "upload cut off by the client");
                return Err(DeployError::invalid("chunk", "the upload was cut off"));
            }
        }
    }
}

#[tonic::async_trait]
impl PackageService for Packages {
    async fn upload_package(
        &self,
        request: Request<Streaming<UploadPackageRequest>>,
    ) -> Reply<pb::Package> {
        let claims = self.0.caller(request.metadata()).await?;
        let mut stream = request.into_inner();
        let new = metadata(&mut stream).await?;
        // Dropping `upload` on any early return removes its temporary file.
        let mut upload = self.0.begin_upload(&claims, &new).await?;
        chunks(&mut stream, &mut upload).await?;
        let package = self.0.finish_upload(claims, new, upload).await?;
        Ok(Response::new(package_message(&package)))
    }

    async fn list_packages(
        &self,
        request: Request<ListPackagesRequest>,
    ) -> Reply<ListPackagesResponse> {
        let claims = self.0.caller(request.metadata()).await?;
        let req = request.into_inner();
        app_id(&req.app_id)?;
        let packages = self.0.packages(&claims, &req.app_id).await?;
        Ok(Response::new(ListPackagesResponse {
            packages: packages.iter().map(package_message).collect(),
        }))
    }

    async fn deploy_package(
        &self,
        request: Request<DeployPackageRequest>,
    ) -> Reply<pb::Deployment> {
        let (metadata, _, req) = request.into_parts();
        let env = Env::from_proto(req.environment);
        let verified = (self.0)
            .verify_for(&metadata, Action::DeployPackage, env)
            .await?;
        let mut fields = Fields::new();
        fields.id("package_id", &req.package_id);
        let env = fields.env("environment", req.environment);
        let env = fields.done_with(env)?;
        let deployment = (self.0)
            .deploy_package(&verified, &req.package_id, env)
            .await?;
        Ok(Response::new(deployment_message(&deployment)))
    }

    async fn transport_package(
        &self,
        request: Request<TransportPackageRequest>,
    ) -> Reply<pb::Deployment> {
        let (metadata, _, req) = request.into_parts();
        let to = Env::from_proto(req.to_environment);
        let verified = (self.0)
            .verify_for(&metadata, Action::TransportPackage, to)
            .await?;
        let mut fields = Fields::new();
        fields.id("package_id", &req.package_id);
        let from = fields.env("from_environment", req.from_environment);
        let to = fields.env("to_environment", req.to_environment);
        let (from, to) = fields.done_with(from.zip(to))?;
        if from.next() != Some(to) {
            return Err(DeployError::invalid(
                "to_environment",
                "packages move one step at a time: test to acceptance, acceptance to production",
            )
            .into());
        }
        let deployment = (self.0)
            .transport_package(&verified, &req.package_id, from, to)
            .await?;
        Ok(Response::new(deployment_message(&deployment)))
    }

    async fn list_deployments(
        &self,
        request: Request<ListDeploymentsRequest>,
    ) -> Reply<ListDeploymentsResponse> {
        let claims = self.0.caller(request.metadata()).await?;
        let req = request.into_inner();
        let mut fields = Fields::new();
        fields.id("app_id", &req.app_id);
        let env = fields.env_filter("environment", req.environment);
        fields.done()?;
        let deployments = self.0.deployments(&claims, &req.app_id, env).await?;
        Ok(Response::new(ListDeploymentsResponse {
            deployments: deployments.iter().map(deployment_message).collect(),
        }))
    }
}
