//! `SupportService`: for callers with the `support` role, such as operators
//! with grpcurl. Users are provisioned here or with `padlock-auth users add`.

use padlock_proto::auth::v1::{
    CreateUserRequest, GetUserFactorRequest, ListAuditEventsRequest, ListAuditEventsResponse,
    ResetFactorRequest, ResetFactorResponse, UnlockRequest, UnlockResponse, User as UserMessage,
    UserFactor, support_service_server::SupportService,
};
use tonic::{Request, Response, Status};

use super::session::user_message;
use super::{MAX_PASSWORD_LEN, MIN_PASSWORD_LEN, check_username, finish};
use crate::app::App;
use crate::error::{AuthError, Result};
use crate::store::{AuditEvent, Outcome, StoreError, User};

/// The role that may use this service.
pub const SUPPORT_ROLE: &str = "support";
/// Roles are short lowercase words.
pub const MAX_ROLES: usize = 8;

#[derive(Debug, Clone)]
pub struct Support(pub App);

/// Checks a new user's fields.
pub fn validate_new_user(username: &str, password: &str, roles: &[String]) -> Result<()> {
    let mut errors = Vec::new();
    check_username("username", username, &mut errors);
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_LEN {
        errors.push((
            "password",
            format!("at least {MIN_PASSWORD_LEN} characters"),
        ));
    } else if password.len() > MAX_PASSWORD_LEN {
        errors.push(("password", format!("at most {MAX_PASSWORD_LEN} bytes")));
    }
    if roles.len() > MAX_ROLES {
        errors.push(("roles", format!("at most {MAX_ROLES} roles")));
    }
    if roles.iter().any(|r| {
        r.is_empty() || r.len() > 32 || !r.chars().all(|c| c.is_ascii_lowercase() || c == '_')
    }) {
        errors.push(("roles", "each role is 1 to 32 of a-z and _".into()));
    }
    finish(errors)
}

/// Creates a user; shared by the RPC and the `users add` command.
pub async fn create_user(
    app_store: &crate::store::Store,
    now: i64,
    actor: Option<String>,
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
        password_hash: crate::password::hash(password).await?,
        roles,
        created_at: now,
    };
    match app_store.create_user(&user).await {
        Ok(()) => {}
        Err(StoreError::Conflict) => return Err(AuthError::UsernameTaken),
        Err(e) => return Err(e.into()),
    }
    app_store
        .audit(AuditEvent {
            at: now,
            kind: "user_created",
            outcome: Outcome::Ok,
            actor,
            subject: Some(user.id.clone()),
            session_id: None,
            detail: format!("roles={}", user.roles.join(",")),
        })
        .await?;
    Ok(user)
}

impl Support {
    /// The caller, if they hold the support role now.
    async fn support_caller(
        &self,
        request_metadata: &tonic::metadata::MetadataMap,
    ) -> Result<User> {
        let caller = self.0.caller(request_metadata).await?;
        let user = self.0.caller_user(&caller).await?;
        if !user.has_role(SUPPORT_ROLE) {
            return Err(AuthError::RoleRequired(SUPPORT_ROLE));
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
        let actor = self.support_caller(request.metadata()).await?;
        let req = request.into_inner();
        let user = create_user(
            self.0.store(),
            self.0.now(),
            Some(actor.id),
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
        self.support_caller(request.metadata()).await?;
        Err(AuthError::Unimplemented("ResetFactor").into())
    }

    async fn unlock(
        &self,
        request: Request<UnlockRequest>,
    ) -> std::result::Result<Response<UnlockResponse>, Status> {
        self.support_caller(request.metadata()).await?;
        Err(AuthError::Unimplemented("Unlock").into())
    }

    async fn get_user_factor(
        &self,
        request: Request<GetUserFactorRequest>,
    ) -> std::result::Result<Response<UserFactor>, Status> {
        self.support_caller(request.metadata()).await?;
        Err(AuthError::Unimplemented("GetUserFactor").into())
    }

    async fn list_audit_events(
        &self,
        request: Request<ListAuditEventsRequest>,
    ) -> std::result::Result<Response<ListAuditEventsResponse>, Status> {
        self.support_caller(request.metadata()).await?;
        Err(AuthError::Unimplemented("ListAuditEvents").into())
    }
}
