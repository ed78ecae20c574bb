//! `SessionService`: primary sign-in with a password (throttled per
//! username and client address, `crate::throttle`), refresh, sign-out.

use padlock_runtime::status::Violations;
use std::net::IpAddr;

use padlock_proto::auth::v1::{
    RefreshRequest, RefreshResponse, SignInRequest, SignInResponse, SignOutRequest,
    SignOutResponse, User as UserMessage, WhoAmIRequest, WhoAmIResponse,
    session_service_server::SessionService,
};
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use super::{MAX_PASSWORD_LEN, MAX_SESSION_TOKEN_LEN, check_username, finish, timestamp};
use crate::app::{App, hash_session_token, new_session_token};
use crate::error::{AuthError, Result};
use crate::store::{AuditEvent, Outcome, Session, User};
use crate::throttle::SignInAttempt;

#[derive(Debug, Clone)]
pub struct Sessions(pub App);

pub fn user_message(user: &User) -> UserMessage {
    UserMessage {
        id: user.id.clone(),
        username: user.username.clone(),
        roles: user.roles.clone(),
    }
}

impl Sessions {
    /// Signs in `req` from `client`. The attempt is counted before the
    /// password is checked; a throttled one runs no argon2 and writes nothing.
    async fn sign_in(&self, client: Option<IpAddr>, req: SignInRequest) -> Result<SignInResponse> {
        let mut errors = Violations::new();
        check_username("username", &req.username, &mut errors);
        if req.password.is_empty() {
            errors.add("password", "required");
        } else if req.password.len() > MAX_PASSWORD_LEN {
            errors.add("password", format!("at most {MAX_PASSWORD_LEN} bytes"));
        }
        finish(errors)?;

        let app = &self.0;
        let attempt = SignInAttempt::admit(app.store(), &req.username, client, app.now()).await?;
        let user = app.store().user_by_username(&req.username).await?;
        let ok = app
            .hasher()
            .verify(
                req.password,
                user.as_ref().map(|u| u.password_hash.clone()),
                app.dummy_password_hash(),
            )
            .await?;
        let now = app.now();
        let Some(user) = user.filter(|_| ok) else {
            attempt.failed(app.store(), now).await?;
            app.store()
                .audit(AuditEvent {
                    at: now,
                    kind: "sign_in",
                    outcome: Outcome::Refused,
                    actor: None,
                    subject: None,
                    session_id: None,
                    detail: "wrong username or password".into(),
                })
                .await?;
            return Err(AuthError::CredentialsInvalid);
        };
        attempt.succeeded(app.store(), now).await?;

        let session_token = new_session_token();
        let session = Session {
            id: uuid::Uuid::new_v4().to_string(),
            user_id: user.id.clone(),
            auth_time: now,
            mfa_at: None,
            mfa_method: None,
            expires_at: now + app.settings().session_ttl,
            ended_at: None,
        };
        app.store()
            .create_session(&session, &hash_session_token(&session_token), now)
            .await?;
        app.store()
            .audit(AuditEvent {
                at: now,
                kind: "sign_in",
                outcome: Outcome::Ok,
                actor: Some(user.id.clone()),
                subject: Some(user.id.clone()),
                session_id: Some(session.id.clone()),
                detail: String::new(),
            })
            .await?;
        let issued = app.issue_token(&user, &session)?;
        Ok(SignInResponse {
            session_token,
            access_token: issued.token,
            expires_at: timestamp(issued.expires_at),
            user: Some(user_message(&user)),
        })
    }

    /// The live session behind a session token.
    async fn live_session(&self, token: &str) -> Result<Session> {
        if token.is_empty() {
            return Err(AuthError::invalid("session_token", "required"));
        }
        if token.len() > MAX_SESSION_TOKEN_LEN {
            return Err(AuthError::invalid("session_token", "not a session token"));
        }
        let now = self.0.now();
        self.0
            .store()
            .session_by_token_hash(&hash_session_token(token))
            .await?
            .filter(|s| s.is_live(now))
            .ok_or(AuthError::SessionInvalid)
    }

    async fn refresh(&self, req: RefreshRequest) -> Result<RefreshResponse> {
        let session = self.live_session(&req.session_token).await?;
        let user = self
            .0
            .store()
            .user_by_id(&session.user_id)
            .await?
            .ok_or(AuthError::SessionInvalid)?;
        let issued = self.0.issue_token(&user, &session)?;
        let mfa_at = session.mfa_at.filter(|_| session.mfa_method.is_some());
        Ok(RefreshResponse {
            access_token: issued.token,
            expires_at: timestamp(issued.expires_at),
            mfa_at: mfa_at.and_then(timestamp),
            mfa_expires_at: mfa_at.and_then(|at| timestamp(at + self.0.settings().mfa_max_age)),
        })
    }

    async fn sign_out(&self, req: SignOutRequest) -> Result<SignOutResponse> {
        let session = self.live_session(&req.session_token).await?;
        let now = self.0.now();
        self.0.store().end_session(&session.id, now).await?;
        self.0
            .store()
            .audit(AuditEvent {
                at: now,
                kind: "sign_out",
                outcome: Outcome::Ok,
                actor: Some(session.user_id.clone()),
                subject: Some(session.user_id.clone()),
                session_id: Some(session.id.clone()),
                detail: String::new(),
            })
            .await?;
        Ok(SignOutResponse {})
    }
}

impl Sessions {
    /// The caller of a live session, with the user's current roles and
    /// the session's second-factor window.
    async fn who_am_i(&self, metadata: &MetadataMap) -> Result<WhoAmIResponse> {
        let caller = self.0.caller(metadata).await?;
        let user = self.0.caller_user(&caller).await?;
        let mfa_at = caller
            .session
            .mfa_at
            .filter(|_| caller.session.mfa_method.is_some());
        Ok(WhoAmIResponse {
            user: Some(user_message(&user)),
            expires_at: timestamp(caller.claims.exp),
            mfa_at: mfa_at.and_then(timestamp),
            mfa_expires_at: mfa_at.and_then(|at| timestamp(at + self.0.settings().mfa_max_age)),
        })
    }
}

#[tonic::async_trait]
impl SessionService for Sessions {
    async fn sign_in(
        &self,
        request: Request<SignInRequest>,
    ) -> std::result::Result<Response<SignInResponse>, Status> {
        let client = self
            .0
            .settings()
            .trusted_proxies
            .client_address(request.remote_addr(), request.metadata());
        Ok(Response::new(
            Sessions::sign_in(self, client, request.into_inner()).await?,
        ))
    }

    async fn refresh(
        &self,
        request: Request<RefreshRequest>,
    ) -> std::result::Result<Response<RefreshResponse>, Status> {
        Ok(Response::new(
            Sessions::refresh(self, request.into_inner()).await?,
        ))
    }

    async fn sign_out(
        &self,
        request: Request<SignOutRequest>,
    ) -> std::result::Result<Response<SignOutResponse>, Status> {
        Ok(Response::new(
            Sessions::sign_out(self, request.into_inner()).await?,
        ))
    }

    async fn who_am_i(
        &self,
        request: Request<WhoAmIRequest>,
    ) -> std::result::Result<Response<WhoAmIResponse>, Status> {
        Ok(Response::new(
            Sessions::who_am_i(self, request.metadata()).await?,
        ))
    }
}
