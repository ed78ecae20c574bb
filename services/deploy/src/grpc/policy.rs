//! `PolicyService`: which actions carry a padlock, and whether the caller
//! may do one now, so a client can draw padlocks and open the two-factor
//! dialog before trying. Changes nothing.

use padlock_proto::deploy::v1::{
    ActionPolicy, CheckAccessRequest, CheckAccessResponse, ListActionsRequest, ListActionsResponse,
    policy_service_server::PolicyService,
};
use tonic::{Request, Response};

use super::{Fields, Reply, timestamp};
use crate::policy::Action;
use crate::service::App;

#[derive(Debug, Clone)]
pub(crate) struct Policies(pub(crate) App);

#[tonic::async_trait]
impl PolicyService for Policies {
    async fn list_actions(
        &self,
        request: Request<ListActionsRequest>,
    ) -> Reply<ListActionsResponse> {
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
    ) -> Reply<CheckAccessResponse> {
        let claims = self.0.caller_shared(request.metadata()).await?;
        let req = request.into_inner();
        let mut fields = Fields::new();
        let action = Action::from_proto(req.action);
        if action.is_none() {
            fields.bad("action", "unknown action");
        }
        fields.id("app_id", &req.app_id);
        let env = fields.env("environment", req.environment);
        let (action, env) = fields.done_with(action.zip(env))?;
        let decision = self
            .0
            .check_access(&claims, action, &req.app_id, env)
            .await?;
        Ok(Response::new(CheckAccessResponse {
            allowed: decision.allowed(),
            reason: decision
                .reason()
                .map(|r| r.as_str_name().to_owned())
                .unwrap_or_default(),
            padlock: decision.rule.padlock,
            max_age_seconds: decision.rule.max_age_seconds(),
            mfa_expires_at: decision
                .mfa_expires_at
                .filter(|_| decision.rule.padlock)
                .and_then(timestamp),
        }))
    }
}
