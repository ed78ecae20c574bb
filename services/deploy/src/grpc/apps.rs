//! `AppService`: apps, their teams and their environments.

use padlock_proto::deploy::v1::{
    self as pb, AddTeamMemberRequest, CreateAppRequest, GetAppRequest, ListAppsRequest,
    ListAppsResponse, ListEnvironmentsRequest, ListEnvironmentsResponse, ListTeamMembersRequest,
    ListTeamMembersResponse, RemoveTeamMemberRequest, RemoveTeamMemberResponse,
    app_service_server::AppService,
};
use padlock_token::Claims;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use super::{Check, app_message, deployment_message, node_name, role_message, timestamp};
use crate::app::{APP_CREATOR_ROLES, App, Authorized, Verified};
use crate::error::{DeployError, Result};
use crate::policy::{self, Action, Env};
use crate::store::{self, Member, Role, StoreError};

/// The environment a team change is padlocked as: it changes who can
/// reach production.
const TEAM_ENV: Env = Env::Production;

fn refused(refusal: policy::Refusal, max_age: i64) -> DeployError {
    DeployError::Refused(Box::new(policy::create_app_refusal(refusal, max_age)))
}

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

    /// An operator (or support) names a new app's Technical Contact, which
    /// decides who reaches its production: so it takes the role and a
    /// fresh second factor, checked in that order (someone without the role
    /// is not asked to step up).
    async fn create_app(&self, verified: Verified, req: CreateAppRequest) -> Result<pb::App> {
        let max_age = policy::DEFAULT_MAX_AGE_SECS;
        let claims = verified.map_err(|_| refused(policy::Refusal::MfaExpired, max_age))?;
        if !APP_CREATOR_ROLES.iter().any(|r| claims.has_role(r)) {
            return Err(DeployError::RoleRequired("operator"));
        }
        let mut check = Check::new();
        check.app_name("name", &req.name);
        check.username("technical_contact", &req.technical_contact);
        check.done()?;
        let now = self.0.now();
        policy::second_factor(&claims, max_age, now).map_err(|r| refused(r, max_age))?;
        let new = store::NewApp {
            id: uuid::Uuid::new_v4().to_string(),
            name: req.name,
            technical_contact: req.technical_contact,
            by: claims.preferred_username.clone(),
            now,
        };
        let who = Authorized { claims };
        let audit = self.0.audit_ok(
            &who,
            "create_app",
            &new.id,
            None,
            format!("technical_contact={}", new.technical_contact),
        );
        match self.0.store().create_app(&new, audit).await {
            Ok(()) => {}
            Err(StoreError::Conflict) => return Err(DeployError::AppNameTaken),
            Err(e) => return Err(e.into()),
        }
        Ok(app_message(&self.app(&new.id).await?))
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

    /// Adds a member or changes their role: a team change, padlocked,
    /// by the Technical Contact, in one change with its checks (the app
    /// keeps a Technical Contact) and its audit record.
    async fn add_member(
        &self,
        metadata: &MetadataMap,
        req: AddTeamMemberRequest,
    ) -> Result<pb::TeamMember> {
        let verified = self.team_change_caller(metadata).await?;
        let mut check = Check::new();
        check.id("app_id", &req.app_id);
        check.username("username", &req.username);
        let role = check.role("role", req.role);
        check.done()?;
        let role = role.ok_or(DeployError::Internal)?;
        let (who, mut change) = self
            .0
            .authorize(&verified, Action::ChangeTeam, &req.app_id, TEAM_ENV)
            .await?;
        let contacts = &change.app().technical_contacts;
        if role != Role::TechnicalContact && contacts[..] == [req.username.clone()] {
            return Err(DeployError::LastTechnicalContact);
        }
        let before = change.member(&req.username).await?;
        let member = change
            .put_member(&req.username, role, who.username(), self.0.now())
            .await?;
        let detail = match before {
            Some(before) => format!(
                "username={} role={}->{}",
                req.username,
                before.role.as_str(),
                role.as_str()
            ),
            None => format!("username={} role={}", req.username, role.as_str()),
        };
        let audit = self
            .0
            .audit_ok(&who, "add_team_member", &req.app_id, None, detail);
        change.commit(audit).await?;
        Ok(member_message(&member))
    }

    /// Removes a member and their node permissions: a team change, as
    /// [`Apps::add_member`].
    async fn remove_member(
        &self,
        metadata: &MetadataMap,
        req: RemoveTeamMemberRequest,
    ) -> Result<RemoveTeamMemberResponse> {
        let verified = self.team_change_caller(metadata).await?;
        let mut check = Check::new();
        check.id("app_id", &req.app_id);
        check.username("username", &req.username);
        check.done()?;
        let (who, mut change) = self
            .0
            .authorize(&verified, Action::ChangeTeam, &req.app_id, TEAM_ENV)
            .await?;
        let member = change
            .member(&req.username)
            .await?
            .ok_or(DeployError::MemberNotFound)?;
        if member.role == Role::TechnicalContact && change.app().technical_contacts.len() == 1 {
            return Err(DeployError::LastTechnicalContact);
        }
        change.remove_member(&req.username).await?;
        let audit = self.0.audit_ok(
            &who,
            "remove_team_member",
            &req.app_id,
            None,
            format!("username={} role={}", req.username, member.role.as_str()),
        );
        change.commit(audit).await?;
        Ok(RemoveTeamMemberResponse {})
    }

    /// The caller of a team change, verified as for any padlocked action.
    async fn team_change_caller(&self, metadata: &MetadataMap) -> Result<Verified> {
        self.0
            .verify_for(metadata, Action::ChangeTeam, Some(TEAM_ENV))
            .await
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
        let verified = self.0.verify(request.metadata()).await?;
        Ok(Response::new(
            Apps::create_app(self, verified, request.into_inner()).await?,
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
        let (metadata, _, req) = request.into_parts();
        Ok(Response::new(self.add_member(&metadata, req).await?))
    }

    async fn remove_team_member(
        &self,
        request: Request<RemoveTeamMemberRequest>,
    ) -> Reply<RemoveTeamMemberResponse> {
        let (metadata, _, req) = request.into_parts();
        Ok(Response::new(self.remove_member(&metadata, req).await?))
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
