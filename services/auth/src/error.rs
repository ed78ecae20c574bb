//! The auth service's closed set of errors and the one place they become
//! gRPC statuses. Messages are for people; clients branch on the reason.
//! Nothing secret (codes, tokens, passwords, SQL) is ever part of one.

use std::time::Duration;

use padlock_runtime::status::{self, Violations};
use tonic::{Code, Status};

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("invalid request")]
    Invalid(Vec<(&'static str, String)>),
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
    SmsUndeliverable(crate::sms::PermanentReason),
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
    /// One invalid field.
    pub fn invalid(field: &'static str, description: impl Into<String>) -> Self {
        AuthError::Invalid(vec![(field, description.into())])
    }
}

impl From<AuthError> for Status {
    fn from(err: AuthError) -> Status {
        use AuthError::*;
        let message = err.to_string();
        let refusal = |code, reason| status::refusal(code, reason, message.clone(), []);
        match err {
            Invalid(fields) => {
                let mut v = Violations::new();
                for (field, description) in fields {
                    v.add(field, description);
                }
                v.into_result().err().unwrap_or_else(status::internal)
            }
            TokenInvalid => refusal(Code::Unauthenticated, "TOKEN_INVALID"),
            CredentialsInvalid => refusal(Code::Unauthenticated, "CREDENTIALS_INVALID"),
            SignInThrottled { retry_after } => status::retry_later(
                Code::ResourceExhausted,
                "SIGN_IN_THROTTLED",
                message,
                retry_after,
            ),
            SessionInvalid => refusal(Code::Unauthenticated, "SESSION_INVALID"),
            CodeInvalid { attempts_left } => status::refusal(
                Code::Unauthenticated,
                "CODE_INVALID",
                message,
                [("attempts_left", attempts_left.to_string())],
            ),
            CodeReused => refusal(Code::Unauthenticated, "CODE_REUSED"),
            LockedOut { retry_after } => status::retry_later(
                Code::ResourceExhausted,
                "TOO_MANY_ATTEMPTS",
                message,
                retry_after,
            ),
            FactorLocked => refusal(Code::FailedPrecondition, "FACTOR_LOCKED"),
            NotEnrolled => refusal(Code::FailedPrecondition, "FACTOR_NOT_ENROLLED"),
            EnrollmentNotFound => refusal(Code::NotFound, "ENROLLMENT_NOT_FOUND"),
            EnrollmentExpired => refusal(Code::FailedPrecondition, "ENROLLMENT_EXPIRED"),
            CodeExpired => refusal(Code::FailedPrecondition, "CODE_EXPIRED"),
            CodeExhausted => refusal(Code::FailedPrecondition, "CODE_EXHAUSTED"),
            SmsTooSoon { retry_after } => status::retry_later(
                Code::ResourceExhausted,
                "SMS_RESEND_TOO_SOON",
                message,
                retry_after,
            ),
            SmsLimit(_, retry_after) => status::retry_later(
                Code::ResourceExhausted,
                "SMS_LIMIT_REACHED",
                message,
                retry_after,
            ),
            SmsUndeliverable(reason) => refusal(Code::FailedPrecondition, reason.as_reason()),
            SmsUnavailable => refusal(Code::Unavailable, "SMS_UNAVAILABLE"),
            SelfService => refusal(Code::PermissionDenied, "SELF_SERVICE_FORBIDDEN"),
            UserNotFound => refusal(Code::NotFound, "USER_NOT_FOUND"),
            RoleRequired(_) => refusal(Code::PermissionDenied, "ROLE_REQUIRED"),
            StepUpRequired {
                expired,
                max_age,
                action,
            } => status::refusal(
                Code::Unauthenticated,
                if expired {
                    "MFA_EXPIRED"
                } else {
                    "MFA_REQUIRED"
                },
                message,
                [
                    ("max_age", max_age.to_string()),
                    ("action", action.to_owned()),
                ],
            ),
            RoleNotGrantable(_) => refusal(Code::PermissionDenied, "ROLE_NOT_GRANTABLE"),
            UsernameTaken => refusal(Code::AlreadyExists, "USERNAME_TAKEN"),
            Unimplemented(_) => refusal(Code::Unimplemented, "UNIMPLEMENTED"),
            Store(StoreError::Conflict) => refusal(Code::Aborted, "CONFLICT"),
            Store(StoreError::Unavailable) => status::unavailable(),
            Store(StoreError::Internal) | Internal => status::internal(),
        }
    }
}

pub type Result<T> = std::result::Result<T, AuthError>;
