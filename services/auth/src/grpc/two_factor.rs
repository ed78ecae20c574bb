//! `TwoFactorService`: the caller's own second factor. Enrollment is
//! pending until confirmed with a code; one method per user, which the user
//! cannot change (only support resets it); every code is accepted at most
//! once; wrong codes lock the factor (DESIGN.md "Second factors", "Lockout").

use std::time::Duration;

use padlock_proto::auth::v1::{
    ConfirmEnrollmentRequest, Factor as FactorMessage, FactorMethod, FactorState as StateMessage,
    GetFactorRequest, SendSmsCodeRequest, SendSmsCodeResponse, StartSmsEnrollmentRequest,
    StartSmsEnrollmentResponse, StartTotpEnrollmentRequest, StartTotpEnrollmentResponse,
    StepUpResponse, VerifyRequest, two_factor_service_server::TwoFactorService,
};
use padlock_runtime::Secret;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use super::timestamp;
use crate::app::{App, Caller};
use crate::config::{ENROLLMENT_TTL_SECS, LOCKOUT};
use crate::error::{AuthError, Result};
use crate::metrics;
use crate::store::{
    AuditEvent, CodeCheck, CodeOutcome, Factor, FactorState, Method, NewFactor,
    Outcome as AuditOutcome, Purpose, Refusal, Session, User,
};
use crate::totp::{self, TotpSecret};

#[derive(Debug, Clone)]
pub struct TwoFactor(pub App);

/// A reset of a user's factor by support, as its audit record tells it.
#[derive(Debug)]
struct Reset {
    at: i64,
    by: String,
    ticket: String,
}

impl TwoFactor {
    pub(super) fn app(&self) -> &App {
        &self.0
    }

    pub(super) async fn audit(
        &self,
        caller: &Caller,
        kind: &'static str,
        outcome: AuditOutcome,
        detail: String,
    ) -> Result<()> {
        let event = self.audit_event(caller, kind, outcome, detail);
        self.app().store().audit(event).await?;
        Ok(())
    }

    /// An audit record of the caller acting on their own factor.
    fn audit_event(
        &self,
        caller: &Caller,
        kind: &'static str,
        outcome: AuditOutcome,
        detail: String,
    ) -> AuditEvent {
        AuditEvent {
            at: self.app().now(),
            kind,
            outcome,
            actor: Some(caller.claims.sub.clone()),
            subject: Some(caller.claims.sub.clone()),
            session_id: Some(caller.session.id.clone()),
            detail,
        }
    }

    async fn get_factor(&self, metadata: &MetadataMap) -> Result<FactorMessage> {
        let caller = self.app().caller(metadata).await?;
        let factor = self.app().store().factor(&caller.claims.sub).await?;
        let mut message = factor_message(factor.as_ref(), self.app().now());
        let mfa_at = caller
            .session
            .mfa_at
            .filter(|_| caller.session.mfa_method.is_some());
        message.mfa_at = mfa_at.and_then(timestamp);
        message.mfa_expires_at =
            mfa_at.and_then(|at| timestamp(at + self.app().settings().mfa_max_age));
        if let Some(reset) = self.last_reset(&caller.claims.sub).await? {
            message.reset_at = timestamp(reset.at);
            message.reset_by = reset.by;
            message.reset_ticket = reset.ticket;
        }
        Ok(message)
    }

    /// Support's last reset of `user_id`'s factor, from the audit trail, so
    /// the user learns that their factor was reset, by whom and why.
    async fn last_reset(&self, user_id: &str) -> Result<Option<Reset>> {
        let store = self.app().store();
        let found = store
            .find_audit_events(&crate::store::AuditQuery {
                subject: Some(user_id.to_owned()),
                kind: Some(super::support::RESET_KIND.to_owned()),
                limit: 1,
                ..Default::default()
            })
            .await?;
        let Some(record) = found.into_iter().next() else {
            return Ok(None);
        };
        let by = match &record.actor {
            Some(id) => store.user_by_id(id).await?.map(|u| u.username),
            None => None,
        };
        Ok(Some(Reset {
            at: record.at,
            by: by.unwrap_or_default(),
            ticket: super::support::ticket_of(&record.detail).to_owned(),
        }))
    }

    async fn start_totp(&self, metadata: &MetadataMap) -> Result<StartTotpEnrollmentResponse> {
        let caller = self.app().caller(metadata).await?;
        let user_id = caller.claims.sub.clone();
        let existing = self.app().store().factor(&user_id).await?;
        if existing.is_some_and(|f| f.state == FactorState::Active) {
            self.audit(
                &caller,
                "enrollment_started",
                AuditOutcome::Refused,
                "factor already active".into(),
            )
            .await?;
            return Err(AuthError::FactorLocked);
        }

        let secret = TotpSecret::generate();
        let uri = totp::otpauth_uri(&secret, &caller.claims.preferred_username)
            .map_err(|_| AuthError::Internal)?;
        let qr_png = totp::qr_png(&uri).map_err(|_| AuthError::Internal)?;
        let qr_svg = totp::qr_svg(&uri).map_err(|_| AuthError::Internal)?;
        // The user id is the associated data: a ciphertext copied to
        // another user's row does not open.
        let sealed = self
            .app()
            .data_keys()
            .seal(secret.as_bytes(), user_id.as_bytes());
        let now = self.app().now();
        let enrollment_id = uuid::Uuid::new_v4().to_string();
        let expires_at = now + ENROLLMENT_TTL_SECS;
        let started = self
            .app()
            .store()
            .begin_enrollment(&NewFactor {
                masked_phone: None,
                phone_mac: None,
                user_id,
                method: Method::Totp,
                enrollment_id: enrollment_id.clone(),
                secret_key_id: sealed.key_id,
                secret_ciphertext: sealed.blob,
                created_at: now,
                enrollment_expires_at: expires_at,
            })
            .await?;
        if !started {
            // Another request activated a factor in the meantime.
            return Err(AuthError::FactorLocked);
        }
        self.audit(
            &caller,
            "enrollment_started",
            AuditOutcome::Ok,
            "method=totp".into(),
        )
        .await?;
        Ok(StartTotpEnrollmentResponse {
            enrollment_id,
            secret: secret.to_base32(),
            otpauth_uri: uri,
            qr_png,
            qr_svg,
            expires_at: timestamp(expires_at),
        })
    }

    /// Checks `code` for `purpose` (`store::code_checks`: a try is taken
    /// in the database before the code is compared) and answers: for a
    /// right, unused code, a token with `mfa_at`; else the refusal. Bad
    /// input is refused before anything is read or written.
    async fn check_code(
        &self,
        metadata: &MetadataMap,
        code: &str,
        purpose: Purpose,
    ) -> Result<StepUpResponse> {
        let app = self.app();
        let (claims, now) = app.bearer_claims(metadata)?;
        let mut errors = Vec::new();
        if let Purpose::Confirm { enrollment_id } = &purpose {
            if enrollment_id.is_empty() {
                errors.push(("enrollment_id", "required".to_owned()));
            } else if uuid::Uuid::parse_str(enrollment_id).is_err() {
                errors.push(("enrollment_id", "not an enrollment id".to_owned()));
            }
        }
        if !totp::is_well_formed(code) {
            errors.push(("code", format!("must be {} digits", totp::DIGITS)));
        }
        super::finish(errors)?;

        let checked = app
            .code_checks()
            .check(CodeCheck {
                session_id: claims.sid.clone(),
                user_id: claims.sub.clone(),
                now,
                code: Secret::new(code.to_owned()),
                purpose,
                keys: app.data_keys(),
            })
            .await?;
        let locked_by_this_code = matches!(checked.outcome, CodeOutcome::WrongAndLocked { .. });
        let answer = self.answer(checked.outcome, now);
        if let Some(method) = checked.method {
            let measured = match &answer {
                Ok(_) => "accepted",
                // The code that locks was a wrong one; the lock is counted apart.
                Err(_) if locked_by_this_code => "wrong",
                Err(e) => metrics::refusal_outcome(e),
            };
            app.metrics().verification(method, measured);
            if locked_by_this_code {
                app.metrics().lockout(method);
            }
        }
        answer
    }

    /// The answer to a code check's outcome at `now`.
    fn answer(&self, outcome: CodeOutcome, now: i64) -> Result<StepUpResponse> {
        match outcome {
            CodeOutcome::SteppedUp { session, user } => self.stepped_up(&user, &session, now),
            CodeOutcome::SessionGone => Err(AuthError::SessionInvalid),
            CodeOutcome::Wrong { tries_left } => Err(AuthError::CodeInvalid {
                attempts_left: tries_left,
            }),
            CodeOutcome::WrongAndLocked { until } | CodeOutcome::Locked { until } => {
                Err(locked_out(until, now))
            }
            CodeOutcome::Reused => Err(AuthError::CodeReused),
            CodeOutcome::Refused(refusal) => Err(match refusal {
                Refusal::SessionInvalid => AuthError::SessionInvalid,
                Refusal::NotEnrolled => AuthError::NotEnrolled,
                Refusal::FactorActive => AuthError::FactorLocked,
                Refusal::EnrollmentNotFound => AuthError::EnrollmentNotFound,
                Refusal::EnrollmentExpired => AuthError::EnrollmentExpired,
                Refusal::CodeExpired => AuthError::CodeExpired,
                Refusal::CodeExhausted => AuthError::CodeExhausted,
                Refusal::Unreadable => AuthError::Internal,
            }),
        }
    }

    /// A token for `user` in `session`, which a code stepped up at `now`.
    fn stepped_up(&self, user: &User, session: &Session, now: i64) -> Result<StepUpResponse> {
        let app = self.app();
        let method = session.mfa_method.ok_or(AuthError::Internal)?;
        let issued = app.issue_token(user, session)?;
        Ok(StepUpResponse {
            access_token: issued.token,
            expires_at: timestamp(issued.expires_at),
            mfa_at: timestamp(now),
            mfa_expires_at: timestamp(now + app.settings().mfa_max_age),
            method: method_message(method) as i32,
        })
    }
}

/// A factor as its owner or support may see it: never the secret or the
/// full number. Session state (`mfa_at`) is the caller's to add.
pub(crate) fn factor_message(factor: Option<&Factor>, now: i64) -> FactorMessage {
    let mut message = FactorMessage {
        attempts_left: LOCKOUT.max_failures,
        ..Default::default()
    };
    let Some(f) = factor else {
        return message;
    };
    message.method = method_message(f.method) as i32;
    message.state = match f.state {
        FactorState::Pending => StateMessage::Pending,
        FactorState::Active => StateMessage::Active,
    } as i32;
    message.enrolled_at = f.activated_at.and_then(timestamp);
    message.masked_phone_number = f.masked_phone.clone().unwrap_or_default();
    let locked_until = f.locked_until(now);
    message.locked = locked_until.is_some();
    message.locked_until = locked_until.and_then(timestamp);
    message.attempts_left = match (locked_until, f.locked_until) {
        (Some(_), _) => 0,
        // A lock that has ended restarts the count.
        (None, Some(_)) => LOCKOUT.max_failures,
        (None, None) => LOCKOUT.max_failures.saturating_sub(f.failed_attempts),
    };
    message
}

fn method_message(method: Method) -> FactorMethod {
    match method {
        Method::Totp => FactorMethod::Totp,
        Method::Sms => FactorMethod::Sms,
    }
}

pub(super) fn locked_out(until: i64, now: i64) -> AuthError {
    let secs = u64::try_from(until.saturating_sub(now)).unwrap_or(0).max(1);
    AuthError::LockedOut {
        retry_after: Duration::from_secs(secs),
    }
}

#[tonic::async_trait]
impl TwoFactorService for TwoFactor {
    async fn get_factor(
        &self,
        request: Request<GetFactorRequest>,
    ) -> std::result::Result<Response<FactorMessage>, Status> {
        Ok(Response::new(
            TwoFactor::get_factor(self, request.metadata()).await?,
        ))
    }

    async fn start_totp_enrollment(
        &self,
        request: Request<StartTotpEnrollmentRequest>,
    ) -> std::result::Result<Response<StartTotpEnrollmentResponse>, Status> {
        Ok(Response::new(self.start_totp(request.metadata()).await?))
    }

    async fn start_sms_enrollment(
        &self,
        request: Request<StartSmsEnrollmentRequest>,
    ) -> std::result::Result<Response<StartSmsEnrollmentResponse>, Status> {
        let (metadata, _, req) = request.into_parts();
        Ok(Response::new(
            self.start_sms(&metadata, &req.phone_number).await?,
        ))
    }

    async fn confirm_enrollment(
        &self,
        request: Request<ConfirmEnrollmentRequest>,
    ) -> std::result::Result<Response<StepUpResponse>, Status> {
        let (metadata, _, req) = request.into_parts();
        let purpose = Purpose::Confirm {
            enrollment_id: req.enrollment_id,
        };
        Ok(Response::new(
            self.check_code(&metadata, &req.code, purpose).await?,
        ))
    }

    async fn send_sms_code(
        &self,
        request: Request<SendSmsCodeRequest>,
    ) -> std::result::Result<Response<SendSmsCodeResponse>, Status> {
        Ok(Response::new(self.resend(request.metadata()).await?))
    }

    async fn verify(
        &self,
        request: Request<VerifyRequest>,
    ) -> std::result::Result<Response<StepUpResponse>, Status> {
        let (metadata, _, req) = request.into_parts();
        Ok(Response::new(
            self.check_code(&metadata, &req.code, Purpose::Verify)
                .await?,
        ))
    }
}
