//! The auth service's closed set of errors and the one place they become
//! gRPC statuses. Messages are for people; clients branch on the reason.
//! Nothing secret (codes, tokens, passwords, SQL) is ever part of one.

use std::time::Duration;

use padlock_proto::Reason;
use padlock_runtime::status::{self, Violations};
use tonic::{Code, Status};

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("invalid request")]
    Invalid(Violations),
    #[error("missing, malformed or expired access token")]
    TokenInvalid,
    #[error("wrong username or password")]
    CredentialsInvalid,
    #[error("too many sign-in attempts; try again later")]
    SignInThrottled { retry_after: Duration },
    #[error("the session has ended or is unknown; sign in again")]
    SessionInvalid,
    #[error("the code is not valid")]
    CodeInvalid { attempts_left: u32 },
    #[error("this code was used already; wait for the next one")]
    CodeReused,
    #[error("too many wrong codes; try again later")]
    LockedOut { retry_after: Duration },
    #[error("a second factor is already active; ask support to reset it")]
    FactorLocked,
    #[error("no second factor is enrolled; enroll one first")]
    NotEnrolled,
    #[error("unknown enrollment")]
    EnrollmentNotFound,
    #[error("the enrollment expired; start it again")]
    EnrollmentExpired,
    #[error("no code is waiting, or it expired; ask for a new one")]
    CodeExpired,
    #[error("this code's tries are used up; ask for a new one")]
    CodeExhausted,
    #[error("a code was sent moments ago; wait before asking again")]
    SmsTooSoon { retry_after: Duration },
    #[error("too many codes were sent ({0}); try again later")]
    SmsLimit(&'static str, Duration),
    #[error("the code could not be sent to this number")]
    SmsUndeliverable(crate::factor::sms::PermanentReason),
    #[error("codes cannot be sent right now; try again shortly")]
    SmsUnavailable,
    #[error("support cannot act on their own account")]
    SelfService,
    #[error("unknown user")]
    UserNotFound,
    #[error("this needs the {0} role")]
    RoleRequired(&'static str),
    /// A support action without a second factor verified in this session
    /// within `max_age` seconds (`expired`: there was one, too old).
    #[error("support actions need a second factor verified in this session within the last {} minutes; verify yours and try again", .max_age / 60)]
    StepUpRequired {
        expired: bool,
        max_age: i64,
        action: &'static str,
    },
    #[error("the {0} role is granted only on the server, with `padlock-auth users add --role`")]
    RoleNotGrantable(String),
    #[error("that username is taken")]
    UsernameTaken,
    #[error("{0} is not available yet")]
    Unimplemented(&'static str),
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error("internal error")]
    Internal,
}

impl AuthError {
    /// Locked out until `until`, at `now`: retry after at least a second.
    pub(crate) fn locked_out(until: i64, now: i64) -> Self {
        let secs = u64::try_from(until.saturating_sub(now)).unwrap_or(0).max(1);
        AuthError::LockedOut {
            retry_after: Duration::from_secs(secs),
        }
    }

    /// One invalid field.
    pub fn invalid(field: &'static str, description: impl Into<String>) -> Self {
        let mut violations = Violations::new();
        violations.add(field, description);
        AuthError::Invalid(violations)
    }
}

impl From<AuthError> for Status {
    fn from(err: AuthError) -> Status {
        use AuthError::*;
        let message = err.to_string();
        let refusal = |code, reason| status::refusal(code, reason, message.clone(), []);
        match err {
            Invalid(violations) => violations
                .into_result()
                .err()
                .unwrap_or_else(status::internal),
            TokenInvalid => refusal(Code::Unauthenticated, Reason::TokenInvalid),
            CredentialsInvalid => refusal(Code::Unauthenticated, Reason::CredentialsInvalid),
            SignInThrottled { retry_after } => status::retry_later(
                Code::ResourceExhausted,
                Reason::SignInThrottled,
                message,
                retry_after,
            ),
            SessionInvalid => refusal(Code::Unauthenticated, Reason::SessionInvalid),
            CodeInvalid { attempts_left } => status::refusal(
                Code::Unauthenticated,
                Reason::CodeInvalid,
                message,
                [("attempts_left", attempts_left.to_string())],
            ),
            CodeReused => refusal(Code::Unauthenticated, Reason::CodeReused),
            LockedOut { retry_after } => status::retry_later(
                Code::ResourceExhausted,
                Reason::TooManyAttempts,
                message,
                retry_after,
            ),
            FactorLocked => refusal(Code::FailedPrecondition, Reason::FactorLocked),
            NotEnrolled => refusal(Code::FailedPrecondition, Reason::FactorNotEnrolled),
            EnrollmentNotFound => refusal(Code::NotFound, Reason::EnrollmentNotFound),
            EnrollmentExpired => refusal(Code::FailedPrecondition, Reason::EnrollmentExpired),
            CodeExpired => refusal(Code::FailedPrecondition, Reason::CodeExpired),
            CodeExhausted => refusal(Code::FailedPrecondition, Reason::CodeExhausted),
            SmsTooSoon { retry_after } => status::retry_later(
                Code::ResourceExhausted,
                Reason::SmsResendTooSoon,
                message,
                retry_after,
            ),
            SmsLimit(_, retry_after) => status::retry_later(
                Code::ResourceExhausted,
                Reason::SmsLimitReached,
                message,
                retry_after,
            ),
            SmsUndeliverable(reason) => refusal(Code::FailedPrecondition, reason.as_reason()),
            SmsUnavailable => refusal(Code::Unavailable, Reason::SmsUnavailable),
            SelfService => refusal(Code::PermissionDenied, Reason::SelfServiceForbidden),
            UserNotFound => refusal(Code::NotFound, Reason::UserNotFound),
            RoleRequired(_) => refusal(Code::PermissionDenied, Reason::RoleRequired),
            StepUpRequired {
                expired,
                max_age,
                action,
            } => status::refusal(
                Code::Unauthenticated,
                if expired {
                    Reason::MfaExpired
                } else {
                    Reason::MfaRequired
                },
                message,
                [
                    ("max_age", max_age.to_string()),
                    ("action", action.to_owned()),
                ],
            ),
            RoleNotGrantable(_) => refusal(Code::PermissionDenied, Reason::RoleNotGrantable),
            UsernameTaken => refusal(Code::AlreadyExists, Reason::UsernameTaken),
            Unimplemented(_) => refusal(Code::Unimplemented, Reason::Unimplemented),
            Store(StoreError::Conflict) => refusal(Code::Aborted, Reason::Conflict),
            Store(StoreError::Unavailable) => status::unavailable(),
            Store(StoreError::Internal) | Internal => status::internal(),
        }
    }
}

pub type Result<T> = std::result::Result<T, AuthError>;
