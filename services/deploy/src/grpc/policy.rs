//! `PolicyService`: which actions carry a padlock, and whether the caller
//! may do one now, so a client can draw padlocks and open the two-factor
//! dialog before trying. Changes nothing.

use padlock_proto::deploy::v1::{
    ActionPolicy, CheckAccessRequest, CheckAccessResponse, ListActionsRequest, ListActionsResponse,
    policy_service_server::PolicyService,
};
use tonic::{Request, Response, Status};

use super::{Check, timestamp};
use crate::app::App;
use crate::error::{DeployError, Result};
use crate::policy::{self, Action};

#[derive(Debug, Clone)]
pub struct Policies(pub App);

impl Policies {
    async fn check_access(
        &self,
        request: Request<CheckAccessRequest>,
    ) -> Result<CheckAccessResponse> {
        let claims = self.0.caller_shared(request.metadata()).await?;
        let req = request.into_inner();
        let mut check = Check::new();
        let action = Action::from_proto(req.action);
        if action.is_none() {
            check.bad_field("action", "unknown action");
        }
        check.id("app_id", &req.app_id);
        let env = check.env("environment", req.environment);
        check.done()?;
        let (Some(action), Some(env)) = (action, env) else {
            return Err(DeployError::Internal);
        };
        let holdings = self
            .0
            .check_holdings(&claims.preferred_username, &req.app_id)
            .await?;
        let decision = policy::decide(
            Ok(&claims),
            self.0.policy(),
            action,
            &req.app_id,
            env,
            &holdings,
            self.0.now(),
        );
        Ok(CheckAccessResponse {
            allowed: decision.allowed(),
            reason: decision
                .outcome
                .err()
                .map(|r| {
                    policy::reason_for(r, &decision.rule)
                        .as_str_name()
                        .to_owned()
                })
                .unwrap_or_default(),
            padlock: decision.rule.padlock,
            max_age_seconds: decision.rule.max_age_seconds(),
            mfa_expires_at: decision
                .mfa_expires_at
                .filter(|_| decision.rule.padlock)
                .and_then(timestamp),
        })
    }
}

#[tonic::async_trait]
impl PolicyService for Policies {
    async fn list_actions(
        &self,
        request: Request<ListActionsRequest>,
    ) -> std::result::Result<Response<ListActionsResponse>, Status> {
        self.0.caller(request.metadata()).await?;
        let actions = self
            .0
            .policy()
            .rules()
            .map(|(action, env, rule)| ActionPolicy {
                action: action.to_proto(),
                environment: env.to_proto(),
                padlock: rule.padlock,
                max_age_seconds: rule.max_age_seconds(),
                permission: rule.requirement.to_proto(),
            })
            .collect();
        Ok(Response::new(ListActionsResponse { actions }))
    }

    async fn check_access(
        &self,
        request: Request<CheckAccessRequest>,
    ) -> std::result::Result<Response<CheckAccessResponse>, Status> {
        Ok(Response::new(Policies::check_access(self, request).await?))
    }
}
