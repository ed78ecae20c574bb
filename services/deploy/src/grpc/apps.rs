//! `AppService`: apps, their teams and their environments.

use padlock_proto::deploy::v1::{
    self as pb, AddTeamMemberRequest, CreateAppRequest, GetAppRequest, ListAppsRequest,
    ListAppsResponse, ListEnvironmentsRequest, ListEnvironmentsResponse, ListTeamMembersRequest,
    ListTeamMembersResponse, RemoveTeamMemberRequest, RemoveTeamMemberResponse,
    app_service_server::AppService,
};
use tonic::metadata::MetadataMap;
use tonic::{Request, Response};

use super::{Fields, Reply, app_id, app_message, deployment_message, timestamp};
use crate::error::Result;
use crate::policy::{Action, TEAM_CHANGE_ENV};
use crate::service::{App, Verified, node_name};
use crate::store::Member;

#[derive(Debug, Clone)]
pub(crate) struct Apps(pub(crate) App);

fn member_message(m: &Member) -> pb::TeamMember {
    pb::TeamMember {
        app_id: m.app_id.clone(),
        username: m.username.clone(),
        role: m.role.to_proto(),
        added_at: timestamp(m.added_at),
    }
}

impl Apps {
    /// The caller of a team change, verified as for any padlocked action
    /// (on [`TEAM_CHANGE_ENV`]), then the change's `app_id` and `username`.
    async fn team_change(
        &self,
        metadata: &MetadataMap,
        app_id: &str,
        username: &str,
    ) -> Result<(Verified, Fields)> {
        let verified = (self.0)
            .verify_for(metadata, Action::ChangeTeam, Some(TEAM_CHANGE_ENV))
            .await?;
        let mut fields = Fields::new();
        fields.id("app_id", app_id);
        fields.username("username", username);
        Ok((verified, fields))
    }
}

#[tonic::async_trait]
impl AppService for Apps {
    async fn create_app(&self, request: Request<CreateAppRequest>) -> Reply<pb::App> {
        let verified = self.0.verify(request.metadata()).await?;
        let creator = self.0.app_creator(verified)?;
        let req = request.into_inner();
        let mut fields = Fields::new();
        let name = fields.app_name("name", &req.name);
        fields.username("technical_contact", &req.technical_contact);
        let name = fields.done_with(name)?;
        let app = self
            .0
            .create_app(creator, name, req.technical_contact)
            .await?;
        Ok(Response::new(app_message(&app)))
    }

    async fn get_app(&self, request: Request<GetAppRequest>) -> Reply<pb::App> {
        let claims = self.0.caller(request.metadata()).await?;
        let req = request.into_inner();
        app_id(&req.app_id)?;
        let app = self.0.app_for(&claims, &req.app_id).await?;
        Ok(Response::new(app_message(&app)))
    }

    async fn list_apps(&self, request: Request<ListAppsRequest>) -> Reply<ListAppsResponse> {
        let claims = self.0.caller(request.metadata()).await?;
        let apps = self.0.apps_of(&claims).await?;
        Ok(Response::new(ListAppsResponse {
            apps: apps.iter().map(app_message).collect(),
        }))
    }

    async fn add_team_member(
        &self,
        request: Request<AddTeamMemberRequest>,
    ) -> Reply<pb::TeamMember> {
        let (metadata, _, req) = request.into_parts();
        let (verified, mut fields) = self
            .team_change(&metadata, &req.app_id, &req.username)
            .await?;
        let role = fields.role("role", req.role);
        let role = fields.done_with(role)?;
        let member = self
            .0
            .add_team_member(&verified, &req.app_id, &req.username, role)
            .await?;
        Ok(Response::new(member_message(&member)))
    }

    async fn remove_team_member(
        &self,
        request: Request<RemoveTeamMemberRequest>,
    ) -> Reply<RemoveTeamMemberResponse> {
        let (metadata, _, req) = request.into_parts();
        let (verified, fields) = self
            .team_change(&metadata, &req.app_id, &req.username)
            .await?;
        fields.done()?;
        (self.0)
            .remove_team_member(&verified, &req.app_id, &req.username)
            .await?;
        Ok(Response::new(RemoveTeamMemberResponse {}))
    }

    async fn list_team_members(
        &self,
        request: Request<ListTeamMembersRequest>,
    ) -> Reply<ListTeamMembersResponse> {
        let claims = self.0.caller(request.metadata()).await?;
        let req = request.into_inner();
        app_id(&req.app_id)?;
        let members = self.0.team(&claims, &req.app_id).await?;
        Ok(Response::new(ListTeamMembersResponse {
            members: members.iter().map(member_message).collect(),
        }))
    }

    async fn list_environments(
        &self,
        request: Request<ListEnvironmentsRequest>,
    ) -> Reply<ListEnvironmentsResponse> {
        let claims = self.0.caller(request.metadata()).await?;
        let req = request.into_inner();
        app_id(&req.app_id)?;
        let (app, environments) = self.0.environments(&claims, &req.app_id).await?;
        let environments = environments
            .into_iter()
            .map(|(env, current)| pb::EnvironmentInfo {
                environment: env.to_proto(),
                node_name: node_name(&app.name, env),
                current: current.as_ref().map(deployment_message),
            })
            .collect();
        Ok(Response::new(ListEnvironmentsResponse { environments }))
    }
}
