//! `SupportService`: for callers with the `support` role, such as operators
//! with grpcurl. Users are provisioned here or with `padlock-auth users add`.

use padlock_proto::auth::v1::{
    AuditEvent as AuditEventMessage, CreateUserRequest, GetUserFactorRequest,
    ListAuditEventsRequest, ListAuditEventsResponse, ResetFactorRequest, ResetFactorResponse,
    UnlockRequest, UnlockResponse, User as UserMessage, UserFactor,
    support_service_server::SupportService,
};
use padlock_runtime::status::Violations;
use tonic::{Request, Response, Status};

use super::session::user_message;
use super::{MAX_PASSWORD_LEN, MIN_PASSWORD_LEN, check_username, finish, timestamp};
use crate::app::App;
use crate::error::{AuthError, Result};
use crate::store::{AuditEvent, AuditQuery, Outcome, StoreError, User};

/// The role that may use this service.
pub(crate) const SUPPORT_ROLE: &str = "support";

/// Roles only an operator on the server hands out (`users add --role`):
/// support resets other people's second factors, an operator names who
/// reaches an app's production. Support cannot mint either.
pub(crate) const SERVER_ONLY_ROLES: [&str; 2] = [SUPPORT_ROLE, "operator"];

/// How recently a support person must have verified their own second
/// factor in this session: one hour, shorter than the eight hours of a
/// deploy, because every support action changes or reads someone else's
/// account (like `sudo`'s short window).
pub(crate) const SUPPORT_MAX_AGE_SECS: i64 = padlock_token::MaxAge::SUPPORT.secs();
/// Roles are short lowercase words.
pub(crate) const MAX_ROLES: usize = 8;

#[derive(Debug, Clone)]
pub struct Support(pub App);

/// Checks a new user's fields.
pub fn validate_new_user(username: &str, password: &str, roles: &[String]) -> Result<()> {
    let mut errors = Violations::new();
    check_username("username", username, &mut errors);
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_LEN {
        errors.add(
            "password",
            format!("at least {MIN_PASSWORD_LEN} characters"),
        );
    } else if password.len() > MAX_PASSWORD_LEN {
        errors.add("password", format!("at most {MAX_PASSWORD_LEN} bytes"));
    }
    if roles.len() > MAX_ROLES {
        errors.add("roles", format!("at most {MAX_ROLES} roles"));
    }
    if roles.iter().any(|r| {
        r.is_empty() || r.len() > 32 || !r.chars().all(|c| c.is_ascii_lowercase() || c == '_')
    }) {
        errors.add("roles", "each role is 1 to 32 of a-z and _");
    }
    finish(errors)
}

/// Creates a user; shared by the RPC and the `users add` command. The
/// audit record names the ticket when there is one (the RPC requires it).
#[allow(clippy::too_many_arguments)]
pub async fn create_user(
    app_store: &crate::store::Store,
    hasher: &crate::password::Hasher,
    now: i64,
    actor: Option<String>,
    ticket: Option<&str>,
    username: &str,
    password: String,
    mut roles: Vec<String>,
) -> Result<User> {
    validate_new_user(username, &password, &roles)?;
    roles.sort();
    roles.dedup();
    let user = User {
        id: uuid::Uuid::new_v4().to_string(),
        username: username.to_owned(),
        password_hash: hasher.hash(password).await?,
        roles,
        created_at: now,
    };
    let audit = AuditEvent {
        at: now,
        kind: "user_created",
        outcome: Outcome::Ok,
        actor,
        subject: Some(user.id.clone()),
        session_id: None,
        detail: match ticket {
            Some(ticket) => format!("ticket={ticket} roles={}", user.roles.join(",")),
            None => format!("roles={}", user.roles.join(",")),
        },
    };
    match app_store.create_user(&user, audit).await {
        Ok(()) => Ok(user),
        Err(StoreError::Conflict) => Err(AuthError::UsernameTaken),
        Err(e) => Err(e.into()),
    }
}

/// Audit pages: 100 by default, 1000 at most.
pub(crate) const DEFAULT_AUDIT_PAGE: u32 = 100;
pub(crate) const MAX_AUDIT_PAGE: u32 = 1000;

impl Support {
    async fn user(&self, username: &str) -> Result<User> {
        self.0
            .store()
            .user_by_username(username)
            .await?
            .ok_or(AuthError::UserNotFound)
    }

    /// The user support acts on: known, and not the support person
    /// themselves (nobody changes their own second factor).
    async fn target(&self, actor: &User, username: &str) -> Result<User> {
        let user = self.user(username).await?;
        if user.id == actor.id {
            return Err(AuthError::SelfService);
        }
        Ok(user)
    }

    async fn audit(
        &self,
        actor: &User,
        subject: &User,
        kind: &'static str,
        detail: String,
    ) -> Result<()> {
        self.0
            .store()
            .audit(AuditEvent {
                at: self.0.now(),
                kind,
                outcome: Outcome::Ok,
                actor: Some(actor.id.clone()),
                subject: Some(subject.id.clone()),
                session_id: None,
                detail,
            })
            .await?;
        Ok(())
    }

    /// A user id as a username, cached per request.
    async fn username_of(
        &self,
        cache: &mut std::collections::HashMap<String, String>,
        id: Option<String>,
    ) -> Result<String> {
        let Some(id) = id else {
            return Ok(String::new());
        };
        if let Some(name) = cache.get(&id) {
            return Ok(name.clone());
        }
        let name = self
            .0
            .store()
            .user_by_id(&id)
            .await?
            .map(|u| u.username)
            .unwrap_or_default();
        cache.insert(id, name.clone());
        Ok(name)
    }

    /// The caller of support's `action`: someone who holds the support
    /// role now and verified their second factor in this session within
    /// [`SUPPORT_MAX_AGE_SECS`]. The session's own `mfa_at` counts (a
    /// reset of their factor clears it at once), not the token's.
    async fn support_caller(
        &self,
        request_metadata: &tonic::metadata::MetadataMap,
        action: &'static str,
    ) -> Result<User> {
        let caller = self.0.caller(request_metadata).await?;
        let user = self.0.caller_user(&caller).await?;
        if !user.has_role(SUPPORT_ROLE) {
            return Err(AuthError::RoleRequired(SUPPORT_ROLE));
        }
        let now = self.0.now();
        let step_up = |expired| AuthError::StepUpRequired {
            expired,
            max_age: SUPPORT_MAX_AGE_SECS,
            action,
        };
        let mfa_at = caller
            .session
            .mfa_at
            .filter(|_| caller.session.mfa_method.is_some())
            .ok_or(step_up(false))?;
        let too_old = now.saturating_sub(mfa_at) > SUPPORT_MAX_AGE_SECS;
        let from_the_future = mfa_at > now.saturating_add(padlock_token::LEEWAY_SECS);
        if too_old || from_the_future {
            return Err(step_up(true));
        }
        Ok(user)
    }
}

#[tonic::async_trait]
impl SupportService for Support {
    async fn create_user(
        &self,
        request: Request<CreateUserRequest>,
    ) -> std::result::Result<Response<UserMessage>, Status> {
        let actor = self
            .support_caller(request.metadata(), "support_create_user")
            .await?;
        let req = request.into_inner();
        let mut errors = Violations::new();
        check_ticket(&req.ticket, &mut errors);
        finish(errors)?;
        if let Some(role) = req
            .roles
            .iter()
            .find(|r| SERVER_ONLY_ROLES.contains(&r.as_str()))
        {
            return Err(AuthError::RoleNotGrantable(role.clone()).into());
        }
        let user = create_user(
            self.0.store(),
            self.0.hasher(),
            self.0.now(),
            Some(actor.id),
            Some(&req.ticket),
            &req.username,
            req.password,
            req.roles,
        )
        .await?;
        Ok(Response::new(user_message(&user)))
    }

    async fn reset_factor(
        &self,
        request: Request<ResetFactorRequest>,
    ) -> std::result::Result<Response<ResetFactorResponse>, Status> {
        let actor = self
            .support_caller(request.metadata(), "support_reset_factor")
            .await?;
        let req = request.into_inner();
        let mut errors = Violations::new();
        check_username("username", &req.username, &mut errors);
        check_ticket(&req.ticket, &mut errors);
        check_text("reason", &req.reason, true, &mut errors);
        finish(errors)?;
        let user = self.target(&actor, &req.username).await?;
        let had_factor = self
            .0
            .store()
            .reset_factor(&user.id)
            .await
            .map_err(AuthError::from)?;
        self.audit(
            &actor,
            &user,
            RESET_KIND,
            format!(
                "ticket={} reason={} had_factor={had_factor}",
                req.ticket, req.reason
            ),
        )
        .await?;
        Ok(Response::new(ResetFactorResponse {}))
    }

    async fn unlock(
        &self,
        request: Request<UnlockRequest>,
    ) -> std::result::Result<Response<UnlockResponse>, Status> {
        let actor = self
            .support_caller(request.metadata(), "support_unlock")
            .await?;
        let req = request.into_inner();
        let mut errors = Violations::new();
        check_username("username", &req.username, &mut errors);
        check_ticket(&req.ticket, &mut errors);
        finish(errors)?;
        let user = self.target(&actor, &req.username).await?;
        let had_factor = self
            .0
            .store()
            .unlock(&user.id)
            .await
            .map_err(AuthError::from)?;
        if !had_factor {
            return Err(AuthError::NotEnrolled.into());
        }
        self.audit(
            &actor,
            &user,
            "factor_unlocked",
            format!("ticket={}", req.ticket),
        )
        .await?;
        Ok(Response::new(UnlockResponse {}))
    }

    async fn get_user_factor(
        &self,
        request: Request<GetUserFactorRequest>,
    ) -> std::result::Result<Response<UserFactor>, Status> {
        let actor = self
            .support_caller(request.metadata(), "support_get_user_factor")
            .await?;
        let req = request.into_inner();
        let mut errors = Violations::new();
        check_username("username", &req.username, &mut errors);
        finish(errors)?;
        let user = self.user(&req.username).await?;
        let _ = actor;
        let factor = self
            .0
            .store()
            .factor(&user.id)
            .await
            .map_err(AuthError::from)?;
        Ok(Response::new(UserFactor {
            user: Some(user_message(&user)),
            factor: Some(super::two_factor::factor_message(
                factor.as_ref(),
                self.0.now(),
            )),
        }))
    }

    async fn list_audit_events(
        &self,
        request: Request<ListAuditEventsRequest>,
    ) -> std::result::Result<Response<ListAuditEventsResponse>, Status> {
        self.support_caller(request.metadata(), "support_list_audit_events")
            .await?;
        let req = request.into_inner();
        let mut errors = Violations::new();
        if !req.username.is_empty() {
            check_username("username", &req.username, &mut errors);
        }
        if req.kind.len() > 48 || !req.kind.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            errors.add("kind", "an event kind such as verify or factor_reset");
        }
        if req.page_size > MAX_AUDIT_PAGE {
            errors.add("page_size", format!("at most {MAX_AUDIT_PAGE}"));
        }
        let before_id = match req.page_token.as_str() {
            "" => None,
            token => match token.parse::<i64>() {
                Ok(id) if id > 0 => Some(id),
                _ => {
                    errors.add("page_token", "not a token from an earlier page");
                    None
                }
            },
        };
        let since = req.since.map(|t| t.seconds);
        let until = req.until.map(|t| t.seconds);
        if let (Some(since), Some(until)) = (since, until)
            && since >= until
        {
            errors.add("until", "must be after since");
        }
        finish(errors)?;
        let subject = match req.username.as_str() {
            "" => None,
            name => Some(self.user(name).await?.id),
        };
        let limit = if req.page_size == 0 {
            DEFAULT_AUDIT_PAGE
        } else {
            req.page_size
        };
        let records = self
            .0
            .store()
            .find_audit_events(&AuditQuery {
                subject,
                kind: (!req.kind.is_empty()).then(|| req.kind.clone()),
                since,
                until,
                before_id,
                limit: u64::from(limit),
            })
            .await
            .map_err(AuthError::from)?;
        let next_page_token = match records.last() {
            Some(last) if records.len() == limit as usize => last.id.to_string(),
            _ => String::new(),
        };
        let mut names = std::collections::HashMap::new();
        let mut events = Vec::with_capacity(records.len());
        for r in records {
            events.push(AuditEventMessage {
                id: r.id,
                at: timestamp(r.at),
                kind: r.kind,
                outcome: r.outcome,
                actor: self.username_of(&mut names, r.actor).await?,
                subject: self.username_of(&mut names, r.subject).await?,
                detail: r.detail,
            });
        }
        Ok(Response::new(ListAuditEventsResponse {
            events,
            next_page_token,
        }))
    }
}

/// The audit kind of a factor reset, whose detail starts with its ticket.
pub(crate) const RESET_KIND: &str = "factor_reset";

/// The ticket an audit detail starts with (`ticket=CHG1 ...`), or "".
/// Tickets hold no spaces ([`check_ticket`]), so the first word is it.
pub(crate) fn ticket_of(detail: &str) -> &str {
    detail
        .strip_prefix("ticket=")
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_default()
}

/// Ticket references look like `CHG0012345` or `INC-42`.
fn check_ticket(ticket: &str, errors: &mut Violations) {
    let ok = !ticket.is_empty()
        && ticket.len() <= 64
        && ticket
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '#' | '.'));
    if !ok {
        errors.add(
            "ticket",
            "a ticket reference such as CHG0012345 is required",
        );
    }
}

/// Free text for the audit trail: printable, bounded.
fn check_text(field: &'static str, text: &str, required: bool, errors: &mut Violations) {
    if required && text.trim().is_empty() {
        errors.add(field, "required");
    } else if text.len() > 500 || text.chars().any(char::is_control) {
        errors.add(field, "at most 500 printable characters");
    }
}
