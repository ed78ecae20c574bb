//! `AppService`: apps, their teams and their environments.

use padlock_proto::deploy::v1::{
    self as pb, AddTeamMemberRequest, CreateAppRequest, GetAppRequest, ListAppsRequest,
    ListAppsResponse, ListEnvironmentsRequest, ListEnvironmentsResponse, ListTeamMembersRequest,
    ListTeamMembersResponse, RemoveTeamMemberRequest, RemoveTeamMemberResponse,
    app_service_server::AppService,
};
use padlock_token::Claims;
use tonic::{Request, Response, Status};

use super::{Check, app_message, deployment_message, node_name, role_message, timestamp};
use crate::app::{APP_CREATOR_ROLES, App};
use crate::error::{DeployError, Result};
use crate::policy::Env;
use crate::store::{self, AuditEvent, Member, Outcome, Role, StoreError};

#[derive(Debug, Clone)]
pub struct Apps(pub App);

type Reply<T> = std::result::Result<Response<T>, Status>;

fn member_message(m: &Member) -> pb::TeamMember {
    pb::TeamMember {
        app_id: m.app_id.clone(),
        username: m.username.clone(),
        role: role_message(m.role) as i32,
        added_at: timestamp(m.added_at),
    }
}

impl Apps {
    async fn app(&self, app_id: &str) -> Result<store::App> {
        self.0
            .store()
            .app(app_id)
            .await?
            .ok_or(DeployError::AppNotFound)
    }

    /// The caller must be the app's Technical Contact.
    async fn technical_contact(&self, claims: &Claims, app_id: &str) -> Result<store::App> {
        let app = self.app(app_id).await?;
        if !app.technical_contacts.contains(&claims.preferred_username) {
            return Err(DeployError::TechnicalContactRequired);
        }
        Ok(app)
    }

    async fn audit(
        &self,
        claims: &Claims,
        action: &'static str,
        app_id: &str,
        detail: String,
    ) -> Result<()> {
        self.0
            .store()
            .audit(AuditEvent {
                at: self.0.now(),
                actor: claims.preferred_username.clone(),
                action,
                app_id: Some(app_id.to_owned()),
                env: None,
                outcome: Outcome::Ok,
                reason: None,
                mfa_at: claims.mfa_at,
                mfa_method: claims.mfa_method.clone(),
                detail,
            })
            .await?;
        Ok(())
    }

    async fn create_app(&self, claims: Claims, req: CreateAppRequest) -> Result<pb::App> {
        if !APP_CREATOR_ROLES.iter().any(|r| claims.has_role(r)) {
            return Err(DeployError::RoleRequired("operator"));
        }
        let mut check = Check::new();
        check.app_name("name", &req.name);
        check.username("technical_contact", &req.technical_contact);
        check.done()?;
        let id = uuid::Uuid::new_v4().to_string();
        let now = self.0.now();
        match self
            .0
            .store()
            .create_app(
                &id,
                &req.name,
                &req.technical_contact,
                &claims.preferred_username,
                now,
            )
            .await
        {
            Ok(()) => {}
            Err(StoreError::Conflict) => return Err(DeployError::AppNameTaken),
            Err(e) => return Err(e.into()),
        }
        self.audit(
            &claims,
            "create_app",
            &id,
            format!("technical_contact={}", req.technical_contact),
        )
        .await?;
        Ok(app_message(&self.app(&id).await?))
    }

    async fn get_app(&self, claims: Claims, req: GetAppRequest) -> Result<pb::App> {
        let mut check = Check::new();
        check.id("app_id", &req.app_id);
        check.done()?;
        let app = self.app(&req.app_id).await?;
        if !APP_CREATOR_ROLES.iter().any(|r| claims.has_role(r)) {
            self.0.member_of(&claims, &req.app_id).await?;
        }
        Ok(app_message(&app))
    }

    async fn add_member(
        &self,
        claims: Claims,
        req: AddTeamMemberRequest,
    ) -> Result<pb::TeamMember> {
        let mut check = Check::new();
        check.id("app_id", &req.app_id);
        check.username("username", &req.username);
        let role = check.role("role", req.role);
        check.done()?;
        let Some(role) = role else {
            return Err(DeployError::Internal);
        };
        let app = self.technical_contact(&claims, &req.app_id).await?;
        let demotes_last_tc = role != Role::TechnicalContact
            && app.technical_contacts.len() == 1
            && app.technical_contacts[0] == req.username;
        if demotes_last_tc {
            return Err(DeployError::LastTechnicalContact);
        }
        let member = self
            .0
            .store()
            .put_member(
                &req.app_id,
                &req.username,
                role,
                &claims.preferred_username,
                self.0.now(),
            )
            .await?;
        self.audit(
            &claims,
            "add_team_member",
            &req.app_id,
            format!("username={} role={}", req.username, role.as_str()),
        )
        .await?;
        Ok(member_message(&member))
    }

    async fn remove_member(
        &self,
        claims: Claims,
        req: RemoveTeamMemberRequest,
    ) -> Result<RemoveTeamMemberResponse> {
        let mut check = Check::new();
        check.id("app_id", &req.app_id);
        check.username("username", &req.username);
        check.done()?;
        let app = self.technical_contact(&claims, &req.app_id).await?;
        let member = self
            .0
            .store()
            .member(&req.app_id, &req.username)
            .await?
            .ok_or(DeployError::MemberNotFound)?;
        if member.role == Role::TechnicalContact && app.technical_contacts.len() == 1 {
            return Err(DeployError::LastTechnicalContact);
        }
        self.0
            .store()
            .remove_member(&req.app_id, &req.username)
            .await?;
        self.audit(
            &claims,
            "remove_team_member",
            &req.app_id,
            format!("username={}", req.username),
        )
        .await?;
        Ok(RemoveTeamMemberResponse {})
    }

    async fn list_members(
        &self,
        claims: Claims,
        req: ListTeamMembersRequest,
    ) -> Result<ListTeamMembersResponse> {
        let mut check = Check::new();
        check.id("app_id", &req.app_id);
        check.done()?;
        self.app(&req.app_id).await?;
        self.0.member_of(&claims, &req.app_id).await?;
        let members = self.0.store().members(&req.app_id).await?;
        Ok(ListTeamMembersResponse {
            members: members.iter().map(member_message).collect(),
        })
    }

    async fn list_environments(
        &self,
        claims: Claims,
        req: ListEnvironmentsRequest,
    ) -> Result<ListEnvironmentsResponse> {
        let mut check = Check::new();
        check.id("app_id", &req.app_id);
        check.done()?;
        let app = self.app(&req.app_id).await?;
        self.0.member_of(&claims, &req.app_id).await?;
        let mut environments = Vec::new();
        for env in Env::ALL {
            let current = match self.0.store().current_deployment(&app.id, env).await? {
                Some(d) => {
                    let version = self
                        .0
                        .store()
                        .package(&d.package_id)
                        .await?
                        .map(|p| p.version)
                        .unwrap_or_default();
                    Some(deployment_message(&d, &version))
                }
                None => None,
            };
            environments.push(pb::EnvironmentInfo {
                environment: env.to_proto(),
                node_name: node_name(&app.name, env),
                current,
            });
        }
        Ok(ListEnvironmentsResponse { environments })
    }
}

#[tonic::async_trait]
impl AppService for Apps {
    async fn create_app(&self, request: Request<CreateAppRequest>) -> Reply<pb::App> {
        let claims = self.0.caller(request.metadata()).await?;
        Ok(Response::new(
            Apps::create_app(self, claims, request.into_inner()).await?,
        ))
    }

    async fn get_app(&self, request: Request<GetAppRequest>) -> Reply<pb::App> {
        let claims = self.0.caller(request.metadata()).await?;
        Ok(Response::new(
            Apps::get_app(self, claims, request.into_inner()).await?,
        ))
    }

    async fn list_apps(&self, request: Request<ListAppsRequest>) -> Reply<ListAppsResponse> {
        let claims = self.0.caller(request.metadata()).await?;
        let apps = self
            .0
            .store()
            .apps_of(&claims.preferred_username)
            .await
            .map_err(DeployError::from)?;
        Ok(Response::new(ListAppsResponse {
            apps: apps.iter().map(app_message).collect(),
        }))
    }

    async fn add_team_member(
        &self,
        request: Request<AddTeamMemberRequest>,
    ) -> Reply<pb::TeamMember> {
        let claims = self.0.caller(request.metadata()).await?;
        Ok(Response::new(
            self.add_member(claims, request.into_inner()).await?,
        ))
    }

    async fn remove_team_member(
        &self,
        request: Request<RemoveTeamMemberRequest>,
    ) -> Reply<RemoveTeamMemberResponse> {
        let claims = self.0.caller(request.metadata()).await?;
        Ok(Response::new(
            self.remove_member(claims, request.into_inner()).await?,
        ))
    }

    async fn list_team_members(
        &self,
        request: Request<ListTeamMembersRequest>,
    ) -> Reply<ListTeamMembersResponse> {
        let claims = self.0.caller(request.metadata()).await?;
        Ok(Response::new(
            self.list_members(claims, request.into_inner()).await?,
        ))
    }

    async fn list_environments(
        &self,
        request: Request<ListEnvironmentsRequest>,
    ) -> Reply<ListEnvironmentsResponse> {
        let claims = self.0.caller(request.metadata()).await?;
        Ok(Response::new(
            Apps::list_environments(self, claims, request.into_inner()).await?,
        ))
    }
}
