//! Apps and their teams: creating an app (operators, with a fresh second
//! factor), reading it, and the padlocked team changes, each in one change
//! with its checks (the app keeps a Technical Contact) and audit record.

use padlock_token::Claims;

use super::{App, Authorized, Verified};
use crate::error::{DeployError, Result};
use crate::policy::rules::APP_CREATOR_ROLES;
use crate::policy::{self, Action, AppName, Env, MaxAge, Role, TEAM_CHANGE_ENV};
use crate::store::{self, Deployment, Member, StoreError};

fn is_app_creator(claims: &Claims) -> bool {
    APP_CREATOR_ROLES.iter().any(|r| claims.has_role(r))
}

impl App {
    /// Who may create an app: an operator (or support), checked before the
    /// request's fields and before the second factor (someone without the
    /// role is not asked to step up).
    pub(crate) fn app_creator(&self, verified: Verified) -> Result<Claims> {
        let max_age = MaxAge::DEFAULT;
        let Verified::Claims(claims) = verified else {
            return Err(DeployError::CreateAppRefused {
                refusal: policy::Refusal::MfaExpired,
                max_age,
            });
        };
        if !is_app_creator(&claims) {
            return Err(DeployError::RoleRequired("operator"));
        }
        Ok(Claims::clone(&claims))
    }

    /// Creates an app with its Technical Contact, which decides who reaches
    /// its production: so it takes a fresh second factor.
    pub(crate) async fn create_app(
        &self,
        creator: Claims,
        name: AppName,
        technical_contact: String,
    ) -> Result<store::App> {
        let max_age = MaxAge::DEFAULT;
        let now = self.now();
        policy::second_factor(&creator, max_age, now)
            .map_err(|refusal| DeployError::CreateAppRefused { refusal, max_age })?;
        let new = store::NewApp {
            id: uuid::Uuid::new_v4().to_string(),
            name: name.into_string(),
            technical_contact,
            by: creator.preferred_username.clone(),
            now,
        };
        let who = Authorized { claims: creator };
        let audit = self.audit_ok(
            &who,
            "create_app",
            &new.id,
            None,
            format!("technical_contact={}", new.technical_contact),
        );
        match self.store().create_app(&new, audit).await {
            Ok(()) => {}
            Err(StoreError::Conflict) => return Err(DeployError::AppNameTaken),
            Err(e) => return Err(e.into()),
        }
        self.app(&new.id).await
    }

    /// `app_id`, `AppNotFound` without it.
    pub(crate) async fn app(&self, app_id: &str) -> Result<store::App> {
        self.store()
            .app(app_id)
            .await?
            .ok_or(DeployError::AppNotFound)
    }

    /// `app_id` for a member of its team, or for an app creator.
    pub(crate) async fn app_for(&self, claims: &Claims, app_id: &str) -> Result<store::App> {
        let app = self.app(app_id).await?;
        if !is_app_creator(claims) {
            self.member_of(claims, app_id).await?;
        }
        Ok(app)
    }

    /// `app_id` for a member of its team: `AppNotFound`, then `NotAMember`.
    pub(crate) async fn app_of_member(&self, claims: &Claims, app_id: &str) -> Result<store::App> {
        let app = self.app(app_id).await?;
        self.member_of(claims, app_id).await?;
        Ok(app)
    }

    /// The apps the caller is on the team of, by name.
    pub(crate) async fn apps_of(&self, claims: &Claims) -> Result<Vec<store::App>> {
        Ok(self.store().apps_of(&claims.preferred_username).await?)
    }

    /// Adds a member or changes their role: a team change, padlocked, by
    /// the Technical Contact. The app keeps a Technical Contact.
    pub(crate) async fn add_team_member(
        &self,
        verified: &Verified,
        app_id: &str,
        username: &str,
        role: Role,
    ) -> Result<Member> {
        let (who, mut change) = self
            .authorize(verified, Action::ChangeTeam, app_id, TEAM_CHANGE_ENV)
            .await?;
        let contacts = &change.app().technical_contacts;
        if role != Role::TechnicalContact && contacts[..] == [username.to_owned()] {
            return Err(DeployError::LastTechnicalContact);
        }
        let before = change.member(username).await?;
        let member = change
            .put_member(username, role, who.username(), self.now())
            .await?;
        let detail = match before {
            Some(before) => format!(
                "username={username} role={}->{}",
                before.role.as_str(),
                role.as_str()
            ),
            None => format!("username={username} role={}", role.as_str()),
        };
        let audit = self.audit_ok(&who, "add_team_member", app_id, None, detail);
        change.commit(audit).await?;
        Ok(member)
    }

    /// Removes a member and their node permissions: a team change, as
    /// [`App::add_team_member`].
    pub(crate) async fn remove_team_member(
        &self,
        verified: &Verified,
        app_id: &str,
        username: &str,
    ) -> Result<()> {
        let (who, mut change) = self
            .authorize(verified, Action::ChangeTeam, app_id, TEAM_CHANGE_ENV)
            .await?;
        let member = change
            .member(username)
            .await?
            .ok_or(DeployError::MemberNotFound)?;
        if member.role == Role::TechnicalContact && change.app().technical_contacts.len() == 1 {
            return Err(DeployError::LastTechnicalContact);
        }
        change.remove_member(username).await?;
        let audit = self.audit_ok(
            &who,
            "remove_team_member",
            app_id,
            None,
            format!("username={username} role={}", member.role.as_str()),
        );
        change.commit(audit).await?;
        Ok(())
    }

    /// The team of `app_id`, for a member of it.
    pub(crate) async fn team(&self, claims: &Claims, app_id: &str) -> Result<Vec<Member>> {
        self.app_of_member(claims, app_id).await?;
        Ok(self.store().members(app_id).await?)
    }

    /// Every environment of `app_id` with what runs there (and its
    /// version), for a member of it.
    pub(crate) async fn environments(
        &self,
        claims: &Claims,
        app_id: &str,
    ) -> Result<(store::App, Vec<(Env, Option<(Deployment, String)>)>)> {
        let app = self.app_of_member(claims, app_id).await?;
        let mut environments = Vec::new();
        for env in Env::ALL {
            let current = match self.store().current_deployment(&app.id, env).await? {
                Some(d) => {
                    let version = self.package_version(&d.package_id).await?;
                    Some((d, version))
                }
                None => None,
            };
            environments.push((env, current));
        }
        Ok((app, environments))
    }
}
