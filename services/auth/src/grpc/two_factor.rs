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
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use super::timestamp;
use crate::app::{App, Caller};
use crate::config::{ENROLLMENT_TTL_SECS, LOCKOUT};
use crate::error::{AuthError, Result};
use crate::metrics;
use crate::sealing::DataKeys;
use crate::store::{
    AuditEvent, Factor, FactorState, FailureOutcome, Method, NewFactor, Outcome as AuditOutcome,
    StepUp, StepUpOutcome, User,
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

/// What checking a code against a factor found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Right and unused: recorded as used.
    Accepted,
    /// Right and unused, and recorded as used together with the session's
    /// step-up and the audit record, in one commit (TOTP `Verify`).
    SteppedUp,
    /// Not the code.
    Wrong,
    /// Right, but used already.
    Reused,
}

/// Which pending or active factor a code is for.
#[derive(Debug, Clone, Copy)]
enum Purpose<'a> {
    Confirm { enrollment_id: &'a str },
    Verify,
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

    /// Checks `code` against the caller's factor for `purpose` and, when it
    /// is right and unused, steps the session up.
    async fn check_code(
        &self,
        metadata: &MetadataMap,
        code: &str,
        purpose: Purpose<'_>,
    ) -> Result<StepUpResponse> {
        let (caller, user, factor, recorded) = match purpose {
            // A right TOTP code is recorded in the batch that reads the
            // session (`store::code_checks`); anything else goes on below.
            Purpose::Verify if totp::is_well_formed(code) => {
                let keys = self.app().data_keys();
                let code = code.to_owned();
                self.app()
                    .caller_with_factor_checked(metadata, move |claims, now| {
                        let (sub, sid) = (claims.sub.clone(), claims.sid.clone());
                        Box::new(move |found| {
                            let factor = found?.2.as_ref().filter(|f| {
                                f.state == FactorState::Active
                                    && f.method == Method::Totp
                                    && f.locked_until(now).is_none()
                            })?;
                            let step = totp_step(&keys, factor, &code, now).ok()??;
                            Some(StepUp {
                                user_id: factor.user_id.clone(),
                                session_id: sid.clone(),
                                step,
                                now,
                                audit: verify_audit_event(&sub, &sid, now),
                            })
                        })
                    })
                    .await?
            }
            _ => {
                let (caller, user, factor) = self.app().caller_with_factor(metadata).await?;
                (caller, user, factor, None)
            }
        };
        let mut errors = Vec::new();
        if let Purpose::Confirm { enrollment_id } = purpose {
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

        let now = self.app().now();
        let factor = match (purpose, factor) {
            (Purpose::Confirm { enrollment_id }, Some(f)) if f.enrollment_id == enrollment_id => {
                if f.state == FactorState::Active {
                    return Err(AuthError::FactorLocked);
                }
                if f.enrollment_expires_at <= now {
                    return Err(AuthError::EnrollmentExpired);
                }
                f
            }
            (Purpose::Confirm { .. }, _) => return Err(AuthError::EnrollmentNotFound),
            (Purpose::Verify, Some(f)) if f.state == FactorState::Active => f,
            (Purpose::Verify, _) => return Err(AuthError::NotEnrolled),
        };
        if let Some(until) = factor.locked_until(now) {
            self.app().metrics().verification(factor.method, "locked");
            return Err(locked_out(until, now));
        }

        let enrollment_id = match purpose {
            Purpose::Confirm { enrollment_id } => Some(enrollment_id),
            Purpose::Verify => None,
        };
        let checked = match (factor.method, recorded) {
            (Method::Totp, Some(recorded)) => recorded_outcome(recorded),
            (Method::Totp, None) => {
                self.totp_check(&caller, &factor, code, enrollment_id, now)
                    .await
            }
            (Method::Sms, _) => {
                self.sms_check(&caller, &factor, code, enrollment_id, now)
                    .await
            }
        };
        let measured = match &checked {
            Ok(Outcome::Accepted | Outcome::SteppedUp) => "accepted",
            Ok(Outcome::Wrong) => "wrong",
            Ok(Outcome::Reused) => "reused",
            Err(e) => metrics::refusal_outcome(e),
        };
        self.app().metrics().verification(factor.method, measured);
        match checked? {
            Outcome::Accepted => {}
            Outcome::SteppedUp => return self.stepped_up(&caller, &user, factor.method, now),
            Outcome::Wrong => return self.count_failure(&caller, factor.method, now).await,
            Outcome::Reused => return Err(self.explain_refusal(&caller, now).await?),
        }
        let kind = match purpose {
            Purpose::Confirm { .. } => "enrollment_confirmed",
            Purpose::Verify => "verify",
        };
        self.audit(
            &caller,
            kind,
            AuditOutcome::Ok,
            format!("method={}", factor.method.as_str()),
        )
        .await?;
        self.step_up(&caller, &user, factor.method, now).await
    }

    /// Checks a TOTP code: the matching time step must be newer than the
    /// last accepted one, recorded atomically (RFC 6238 §5.2). A `Verify`
    /// is recorded with the session's step-up and its audit record by the
    /// group-committing writer (`store::step_up`).
    async fn totp_check(
        &self,
        caller: &Caller,
        factor: &Factor,
        code: &str,
        enrollment_id: Option<&str>,
        now: i64,
    ) -> Result<Outcome> {
        let Some(step) = self.totp_step(factor, code, now)? else {
            return Ok(Outcome::Wrong);
        };
        let store = self.app().store();
        if let Some(enrollment_id) = enrollment_id {
            let activated = store
                .activate_enrollment(&factor.user_id, enrollment_id, step, now)
                .await?;
            return Ok(if activated {
                Outcome::Accepted
            } else {
                Outcome::Reused
            });
        }
        let step_up = StepUp {
            user_id: factor.user_id.clone(),
            session_id: caller.session.id.clone(),
            step,
            now,
            audit: verify_audit_event(&caller.claims.sub, &caller.session.id, now),
        };
        recorded_outcome(self.app().code_checks().record(step_up).await?)
    }

    fn totp_step(&self, factor: &Factor, code: &str, now: i64) -> Result<Option<i64>> {
        totp_step(&self.app().data_keys(), factor, code, now)
    }

    async fn count_failure(
        &self,
        caller: &Caller,
        method: Method,
        now: i64,
    ) -> Result<StepUpResponse> {
        let outcome = self
            .app()
            .store()
            .count_failure(&caller.claims.sub, now, LOCKOUT)
            .await?;
        match outcome {
            FailureOutcome::AlreadyLocked { until } => Err(locked_out(until, now)),
            FailureOutcome::Counted {
                failed_attempts,
                locked_until,
            } => {
                self.audit(
                    caller,
                    "verify",
                    AuditOutcome::Refused,
                    format!("wrong code, failure {failed_attempts}"),
                )
                .await?;
                if let Some(until) = locked_until {
                    self.app().metrics().lockout(method);
                    self.audit(
                        caller,
                        "lockout",
                        AuditOutcome::Ok,
                        format!("locked for {} s", until - now),
                    )
                    .await?;
                    return Err(locked_out(until, now));
                }
                Err(AuthError::CodeInvalid {
                    attempts_left: LOCKOUT.max_failures.saturating_sub(failed_attempts),
                })
            }
        }
    }

    /// Why a right code was not accepted: reused, locked meanwhile, or the
    /// enrollment changed under us.
    async fn explain_refusal(&self, caller: &Caller, now: i64) -> Result<AuthError> {
        let factor = self.app().store().factor(&caller.claims.sub).await?;
        let Some(factor) = factor else {
            return Ok(AuthError::EnrollmentNotFound);
        };
        if let Some(until) = factor.locked_until(now) {
            return Ok(locked_out(until, now));
        }
        if factor.state == FactorState::Pending && factor.enrollment_expires_at <= now {
            return Ok(AuthError::EnrollmentExpired);
        }
        // The code was right but already used (same or earlier TOTP step, or
        // the SMS code consumed by a concurrent request).
        self.audit(
            caller,
            "verify",
            AuditOutcome::Refused,
            "code reused".into(),
        )
        .await?;
        Ok(AuthError::CodeReused)
    }

    async fn step_up(
        &self,
        caller: &Caller,
        user: &User,
        method: Method,
        now: i64,
    ) -> Result<StepUpResponse> {
        if !self
            .app()
            .store()
            .set_session_mfa(&caller.session.id, now, method)
            .await?
        {
            return Err(AuthError::SessionInvalid);
        }
        self.stepped_up(caller, user, method, now)
    }

    /// The answer to a step-up recorded at `now`: a token with `mfa_at`.
    fn stepped_up(
        &self,
        caller: &Caller,
        user: &User,
        method: Method,
        now: i64,
    ) -> Result<StepUpResponse> {
        let app = self.app();
        let mut session = caller.session.clone();
        session.mfa_at = Some(now);
        session.mfa_method = Some(method);
        let issued = app.issue_token(user, &session)?;
        Ok(StepUpResponse {
            access_token: issued.token,
            expires_at: timestamp(issued.expires_at),
            mfa_at: timestamp(now),
            mfa_expires_at: timestamp(now + app.settings().mfa_max_age),
            method: method_message(method) as i32,
        })
    }
}

/// The clear secret of `factor` (a TOTP seed or a phone number), sealed
/// under the data keys with its user id as associated data. A failure is
/// logged as "cannot open a {what}" (never the secret) and is INTERNAL.
pub(super) fn open_factor_secret(
    keys: &DataKeys,
    factor: &Factor,
    what: &'static str,
) -> Result<Vec<u8>> {
    keys.open(
        &factor.secret_key_id,
        &factor.secret_ciphertext,
        factor.user_id.as_bytes(),
    )
    .map_err(|e| {
        tracing::error!(error = %e, "cannot open a {what}");
        AuthError::Internal
    })
}

/// The time step `code` matches on `factor` at `now`, if any.
fn totp_step(keys: &DataKeys, factor: &Factor, code: &str, now: i64) -> Result<Option<i64>> {
    let secret = open_factor_secret(keys, factor, "TOTP secret")?;
    let now = u64::try_from(now).map_err(|_| AuthError::Internal)?;
    let step = totp::matching_step(&TotpSecret::from_bytes(secret), code, now);
    Ok(step.and_then(|s| i64::try_from(s).ok()))
}

/// What recording a TOTP step-up means for the code check.
fn recorded_outcome(recorded: StepUpOutcome) -> Result<Outcome> {
    match recorded {
        StepUpOutcome::SteppedUp => Ok(Outcome::SteppedUp),
        StepUpOutcome::SessionGone => Err(AuthError::SessionInvalid),
        StepUpOutcome::NotAccepted => Ok(Outcome::Reused),
    }
}

/// The audit record of an accepted TOTP `Verify` by `sub` in session `sid`.
fn verify_audit_event(sub: &str, sid: &str, now: i64) -> AuditEvent {
    AuditEvent {
        at: now,
        kind: "verify",
        outcome: AuditOutcome::Ok,
        actor: Some(sub.to_owned()),
        subject: Some(sub.to_owned()),
        session_id: Some(sid.to_owned()),
        detail: "method=totp".into(),
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
            enrollment_id: &req.enrollment_id,
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
