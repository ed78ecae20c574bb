//! `TwoFactorService`: the caller's own second factor. Each RPC hands its
//! request to the factor use cases (`crate::factor`: enrollment, code
//! checks, SMS sending) and answers; `GetFactor` is read here. Enrollment
//! is pending until confirmed with a code; one method per user, which the
//! user cannot change (only support resets it); every code is accepted at
//! most once; wrong codes lock the factor (docs/design.md "Second
//! factors", "Lockout").

use padlock_proto::auth::v1::{
    ConfirmEnrollmentRequest, Factor as FactorMessage, FactorState as StateMessage,
    GetFactorRequest, SendSmsCodeRequest, SendSmsCodeResponse, StartSmsEnrollmentRequest,
    StartSmsEnrollmentResponse, StartTotpEnrollmentRequest, StartTotpEnrollmentResponse,
    StepUpResponse, VerifyRequest, two_factor_service_server::TwoFactorService,
};
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use super::timestamp;
use crate::app::App;
use crate::config::LOCKOUT;
use crate::error::Result;
use crate::factor::check::{check_code, method_message};
use crate::factor::{self, Sms, Totp};
use crate::store::{Factor, FactorState, Purpose};

#[derive(Debug, Clone)]
pub(crate) struct TwoFactor(pub App);

/// A reset of a user's factor by support, as its audit record tells it.
#[derive(Debug)]
struct Reset {
    at: i64,
    by: String,
    ticket: String,
}

impl TwoFactor {
    fn app(&self) -> &App {
        &self.0
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
        Ok(Response::new(
            factor::enroll::<Totp>(self.app(), request.metadata(), ()).await?,
        ))
    }

    async fn start_sms_enrollment(
        &self,
        request: Request<StartSmsEnrollmentRequest>,
    ) -> std::result::Result<Response<StartSmsEnrollmentResponse>, Status> {
        let (metadata, _, req) = request.into_parts();
        Ok(Response::new(
            factor::enroll::<Sms>(self.app(), &metadata, req.phone_number).await?,
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
            check_code(self.app(), &metadata, &req.code, purpose).await?,
        ))
    }

    async fn send_sms_code(
        &self,
        request: Request<SendSmsCodeRequest>,
    ) -> std::result::Result<Response<SendSmsCodeResponse>, Status> {
        Ok(Response::new(
            factor::sms::resend(self.app(), request.metadata()).await?,
        ))
    }

    async fn verify(
        &self,
        request: Request<VerifyRequest>,
    ) -> std::result::Result<Response<StepUpResponse>, Status> {
        let (metadata, _, req) = request.into_parts();
        Ok(Response::new(
            check_code(self.app(), &metadata, &req.code, Purpose::Verify).await?,
        ))
    }
}
