//! `NodeService`: the licensed cloud node behind each environment. Its
//! details and its backups (the environment's data) are padlocked for
//! production.

use padlock_proto::deploy::v1::{
    BackupChunk, DownloadBackupRequest, GetNodeDetailsRequest, NodeDetails,
    node_service_server::NodeService,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{Check, node_name};
use crate::app::App;
use crate::error::{DeployError, Result};
use crate::policy::{Action, Env};
use crate::store;

/// Backups stream in chunks of this size.
pub const BACKUP_CHUNK_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone)]
pub struct Nodes(pub App);

impl Nodes {
    async fn target(&self, app_id: &str, env: i32) -> Result<(store::App, Env)> {
        let mut check = Check::new();
        check.id("app_id", app_id);
        let env = check.env("environment", env);
        check.done()?;
        let env = env.ok_or(DeployError::Internal)?;
        let app = self
            .0
            .store()
            .app(app_id)
            .await?
            .ok_or(DeployError::AppNotFound)?;
        Ok((app, env))
    }

    async fn details(&self, request: Request<GetNodeDetailsRequest>) -> Result<NodeDetails> {
        let (metadata, _, req) = request.into_parts();
        let verified = self
            .0
            .verify_for(
                &metadata,
                Action::GetNodeDetails,
                Env::from_proto(req.environment),
            )
            .await?;
        let (app, env) = self.target(&req.app_id, req.environment).await?;
        let (who, change) = self
            .0
            .authorize(&verified, Action::GetNodeDetails, &app.id, env)
            .await?;
        let current = change.current_deployment(env).await?;
        let package_version = match current {
            Some(d) => self
                .0
                .store()
                .package(&d.package_id)
                .await?
                .map(|p| p.version)
                .unwrap_or_default(),
            None => String::new(),
        };
        let audit = self.0.audit_ok(
            &who,
            Action::GetNodeDetails.as_str(),
            &app.id,
            Some(env),
            String::new(),
        );
        change.commit(audit).await?;
        let node = node_name(&app.name, env);
        Ok(NodeDetails {
            app_id: app.id.clone(),
            environment: env.to_proto(),
            url: format!("https://{node}.apps.padlock.example"),
            region: "eu-central-1".into(),
            plan: if env == Env::Production {
                "production-m".into()
            } else {
                "standard-s".into()
            },
            license_id: format!("LIC-{}", &app.id[..8].to_ascii_uppercase()),
            node_name: node,
            package_version,
        })
    }

    /// The environment's data as one JSON document: what runs there and
    /// its deployment history.
    async fn backup(&self, request: Request<DownloadBackupRequest>) -> Result<Vec<u8>> {
        let (metadata, _, req) = request.into_parts();
        let verified = self
            .0
            .verify_for(
                &metadata,
                Action::DownloadBackup,
                Env::from_proto(req.environment),
            )
            .await?;
        let (app, env) = self.target(&req.app_id, req.environment).await?;
        let (who, change) = self
            .0
            .authorize(&verified, Action::DownloadBackup, &app.id, env)
            .await?;
        let deployments = change
            .deployments(Some(env), super::MAX_LISTED_DEPLOYMENTS)
            .await?;
        let history: Vec<serde_json::Value> = deployments
            .iter()
            .map(|d| {
                serde_json::json!({
                    "package_id": d.package_id,
                    "deployed_by": d.deployed_by,
                    "deployed_at": d.deployed_at,
                })
            })
            .collect();
        let document = serde_json::json!({
            "app": app.name,
            "environment": env.as_str(),
            "node": node_name(&app.name, env),
            "taken_at": self.0.now(),
            "deployments": history,
        });
        let bytes = serde_json::to_vec_pretty(&document).map_err(|_| DeployError::Internal)?;
        let audit = self.0.audit_ok(
            &who,
            Action::DownloadBackup.as_str(),
            &app.id,
            Some(env),
            format!("bytes={}", bytes.len()),
        );
        change.commit(audit).await?;
        Ok(bytes)
    }
}

#[tonic::async_trait]
impl NodeService for Nodes {
    type DownloadBackupStream = ReceiverStream<std::result::Result<BackupChunk, Status>>;

    async fn get_node_details(
        &self,
        request: Request<GetNodeDetailsRequest>,
    ) -> std::result::Result<Response<NodeDetails>, Status> {
        Ok(Response::new(self.details(request).await?))
    }

    async fn download_backup(
        &self,
        request: Request<DownloadBackupRequest>,
    ) -> std::result::Result<Response<Self::DownloadBackupStream>, Status> {
        let bytes = self.backup(request).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            for chunk in bytes.chunks(BACKUP_CHUNK_BYTES) {
                if tx
                    .send(Ok(BackupChunk {
                        data: chunk.to_vec(),
                    }))
                    .await
                    .is_err()
                {
                    break; // the client went away
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
