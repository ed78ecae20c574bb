//! Checking a code: `Verify` (the active factor) and `ConfirmEnrollment`
//! (a pending one), for every method. Reads top to bottom: the request is
//! validated, the store checks the code ([`CodeChecks::check`]: a try is
//! taken in the database before the code is compared, and a right code is
//! recorded once; docs/design.md "Second factors", "Lockout"), and the
//! outcome becomes the answer and its metrics.
//!
//! [`CodeChecks::check`]: crate::store::CodeChecks::check

use padlock_proto::auth::v1::StepUpResponse;
use padlock_runtime::Secret;
use padlock_runtime::status::Violations;
use tonic::metadata::MetadataMap;

use super::{Method, totp};
use crate::app::App;
use crate::error::{AuthError, Result};
use crate::grpc::{finish, timestamp};
use crate::metrics;
use crate::store::{CodeCheck, CodeOutcome, Purpose, Refusal, Session, User};

/// Checks `code` for `purpose` and answers: for a right, unused code, a
/// token with `mfa_at`; else the refusal. Bad input is refused before
/// anything is read or written.
pub(crate) async fn check_code(
    app: &App,
    metadata: &MetadataMap,
    code: &str,
    purpose: Purpose,
) -> Result<StepUpResponse> {
    let (claims, now) = app.bearer_claims(metadata)?;
    let mut errors = Violations::new();
    if let Purpose::Confirm { enrollment_id } = &purpose {
        if enrollment_id.is_empty() {
            errors.add("enrollment_id", "required");
        } else if uuid::Uuid::parse_str(enrollment_id).is_err() {
            errors.add("enrollment_id", "not an enrollment id");
        }
    }
    // Every method's codes are six digits.
    if !totp::is_well_formed(code) {
        errors.add("code", format!("must be {} digits", totp::DIGITS));
    }
    finish(errors)?;

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
    let answer = answer(app, checked.outcome, now);
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
fn answer(app: &App, outcome: CodeOutcome, now: i64) -> Result<StepUpResponse> {
    match outcome {
        CodeOutcome::SteppedUp { session, user } => stepped_up(app, &user, &session, now),
        CodeOutcome::SessionGone => Err(AuthError::SessionInvalid),
        CodeOutcome::Wrong { tries_left } => Err(AuthError::CodeInvalid {
            attempts_left: tries_left,
        }),
        CodeOutcome::WrongAndLocked { until } | CodeOutcome::Locked { until } => {
            Err(AuthError::locked_out(until, now))
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
fn stepped_up(app: &App, user: &User, session: &Session, now: i64) -> Result<StepUpResponse> {
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

/// A method as the API names it.
pub(crate) fn method_message(method: Method) -> padlock_proto::auth::v1::FactorMethod {
    use padlock_proto::auth::v1::FactorMethod;
    match method {
        Method::Totp => FactorMethod::Totp,
        Method::Sms => FactorMethod::Sms,
    }
}
