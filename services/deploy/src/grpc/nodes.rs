//! `NodeService`: the licensed cloud node behind each environment. Its
//! details and its backups (the environment's data) are padlocked for
//! production.

use padlock_proto::deploy::v1::{
    BackupChunk, DownloadBackupRequest, GetNodeDetailsRequest, NodeDetails,
    node_service_server::NodeService,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use super::{Fields, Reply};
use crate::error::Result;
use crate::policy::{Action, Env};
use crate::service::{App, NodeView, Verified, node_name};

/// Backups stream in chunks of this size.
const BACKUP_CHUNK_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone)]
pub(crate) struct Nodes(pub(crate) App);

impl Nodes {
    /// The caller of `action` on `environment` of `app_id`, verified, then
    /// the request's fields.
    async fn target(
        &self,
        metadata: &MetadataMap,
        action: Action,
        app_id: &str,
        environment: i32,
    ) -> Result<(Verified, Env)> {
        let verified = (self.0)
            .verify_for(metadata, action, Env::from_proto(environment))
            .await?;
        let mut fields = Fields::new();
        fields.id("app_id", app_id);
        let env = fields.env("environment", environment);
        Ok((verified, fields.done_with(env)?))
    }
}

fn details_message(node: NodeView) -> NodeDetails {
    let NodeView {
        app,
        env,
        package_version,
    } = node;
    let name = node_name(&app.name, env);
    NodeDetails {
        app_id: app.id.clone(),
        environment: env.to_proto(),
        url: format!("https://{name}.apps.padlock.example"),
        region: "eu-central-1".into(),
        plan: if env == Env::Production {
            "production-m".into()
        } else {
            "standard-s".into()
        },
        license_id: format!("LIC-{}", &app.id[..8].to_ascii_uppercase()),
        node_name: name,
        package_version,
    }
}

#[tonic::async_trait]
impl NodeService for Nodes {
    type DownloadBackupStream = ReceiverStream<std::result::Result<BackupChunk, Status>>;

    async fn get_node_details(
        &self,
        request: Request<GetNodeDetailsRequest>,
    ) -> Reply<NodeDetails> {
        let (metadata, _, req) = request.into_parts();
        let action = Action::GetNodeDetails;
        let (verified, env) = self
            .target(&metadata, action, &req.app_id, req.environment)
            .await?;
        let node = self.0.node_details(&verified, &req.app_id, env).await?;
        Ok(Response::new(details_message(node)))
    }

    async fn download_backup(
        &self,
        request: Request<DownloadBackupRequest>,
    ) -> Reply<Self::DownloadBackupStream> {
        let (metadata, _, req) = request.into_parts();
        let action = Action::DownloadBackup;
        let (verified, env) = self
            .target(&metadata, action, &req.app_id, req.environment)
            .await?;
        let bytes = self.0.backup(&verified, &req.app_id, env).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            for chunk in bytes.chunks(BACKUP_CHUNK_BYTES) {
                let chunk = BackupChunk {
                    data: chunk.to_vec(),
                };
                if tx.send(Ok(chunk)).await.is_err() {
                    break; // the client went away
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
