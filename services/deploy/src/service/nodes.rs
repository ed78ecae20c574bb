//! The licensed cloud node behind each environment: its details and its
//! backups (the environment's data), padlocked reads that are audited in
//! the change that authorized them.

use super::{App, Verified};
use crate::error::{DeployError, Result};
use crate::policy::{Action, Env};
use crate::store;

/// What the node behind `env` of `app` runs.
#[derive(Debug)]
pub(crate) struct NodeView {
    pub(crate) app: store::App,
    pub(crate) env: Env,
    /// The version running there; empty when nothing is deployed.
    pub(crate) package_version: String,
}

/// The licensed node behind an app's environment, e.g. `shop-production`.
pub(crate) fn node_name(app_name: &str, env: Env) -> String {
    let slug: String = app_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    format!("{}-{}", slug.trim_matches('-'), env.as_str())
}

impl App {
    /// The node behind `env` of `app_id`: padlocked there.
    pub(crate) async fn node_details(
        &self,
        verified: &Verified,
        app_id: &str,
        env: Env,
    ) -> Result<NodeView> {
        let app = self.app(app_id).await?;
        let (who, change) = self
            .authorize(verified, Action::GetNodeDetails, &app.id, env)
            .await?;
        let package_version = match change.current_deployment(env).await? {
            Some(d) => self.package_version(&d.package_id).await?,
            None => String::new(),
        };
        let action = Action::GetNodeDetails.as_str();
        let audit = self.audit_ok(&who, action, &app.id, Some(env), String::new());
        change.commit(audit).await?;
        Ok(NodeView {
            app,
            env,
            package_version,
        })
    }

    /// The environment's data as one JSON document (what runs there and
    /// its deployment history): padlocked there.
    pub(crate) async fn backup(
        &self,
        verified: &Verified,
        app_id: &str,
        env: Env,
    ) -> Result<Vec<u8>> {
        let app = self.app(app_id).await?;
        let (who, change) = self
            .authorize(verified, Action::DownloadBackup, &app.id, env)
            .await?;
        let deployments = change
            .deployments(Some(env), super::packages::MAX_LISTED_DEPLOYMENTS)
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
            "taken_at": self.now(),
            "deployments": history,
        });
        let bytes = serde_json::to_vec_pretty(&document).map_err(|_| DeployError::Internal)?;
        let audit = self.audit_ok(
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
