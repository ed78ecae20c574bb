//! The one mapping, case by case (docs/http.md "Errors: one mapping").

use std::time::Duration;

use super::*;

fn padlock(code: Code, reason: Reason, metadata: &[(&'static str, &str)]) -> Status {
    rich::refusal(
        code,
        reason,
        format!("{} happened", reason.as_str_name()),
        metadata.iter().map(|(k, v)| (*k, (*v).to_owned())),
    )
}

/// A padlocked action on production refused for its second factor.
fn step_up(reason: Reason, max_age: &str, action: &str) -> Status {
    padlock(
        Code::Unauthenticated,
        reason,
        &[
            ("max_age", max_age),
            ("action", action),
            ("environment", "production"),
        ],
    )
}

fn body(error: &ApiError) -> Value {
    Value::Object(error.body.clone())
}

#[test]
fn invalid_argument_is_400_with_every_field() {
    let mut v = Violations::new();
    v.add("to_environment", "transport in order")
        .add("code", "six digits");
    let status = v.into_result().unwrap_err();
    let e = from_status(&status);
    assert_eq!(e.status, StatusCode::BAD_REQUEST);
    assert_eq!(e.www_authenticate, None);
    assert_eq!(
        body(&e),
        json!({
            "error": Reason::InvalidArgument.as_str_name(),
            "message": status.message(),
            "fields": [
                {"field": "to_environment", "description": "transport in order"},
                {"field": "code", "description": "six digits"},
            ],
        })
    );
    // Without BadRequest details the list is empty, never missing; the
    // error is the code's name.
    let e = from_status(&Status::invalid_argument("bad"));
    assert_eq!(body(&e)["fields"], json!([]));
    assert_eq!(e.reason(), "INVALID_ARGUMENT");
}

#[test]
fn mfa_required_is_401_with_the_rfc_9470_challenge() {
    let status = step_up(Reason::MfaRequired, "28800", "transport_package");
    let e = from_status(&status);
    assert_eq!(e.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        e.www_authenticate.as_deref(),
        Some(
            r#"Bearer error="insufficient_user_authentication", error_description="A second factor is required", max_age=28800"#
        )
    );
    assert_eq!(
        body(&e),
        json!({
            "error": Reason::MfaRequired.as_str_name(),
            "message": format!("{} happened", Reason::MfaRequired.as_str_name()),
            "max_age": 28800,
            "action": "transport_package",
            "environment": "production",
        })
    );
}

#[test]
fn mfa_expired_is_401_with_the_rfc_9470_challenge_and_its_max_age() {
    let status = step_up(Reason::MfaExpired, "5", "deploy_package");
    let e = from_status(&status);
    assert_eq!(e.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        e.www_authenticate.as_deref(),
        Some(
            r#"Bearer error="insufficient_user_authentication", error_description="More recent authentication is required", max_age=5"#
        )
    );
    assert_eq!(body(&e)["max_age"], json!(5));
    assert_eq!(body(&e)["action"], json!("deploy_package"));
}

#[test]
fn other_unauthenticated_reasons_are_401_invalid_token() {
    for reason in [
        Reason::TokenInvalid,
        Reason::SessionInvalid,
        Reason::CredentialsInvalid,
        Reason::CodeReused,
    ] {
        let e = from_status(&padlock(Code::Unauthenticated, reason, &[]));
        let reason = reason.as_str_name();
        assert_eq!(e.status, StatusCode::UNAUTHORIZED, "{reason}");
        assert_eq!(
            e.www_authenticate.as_deref(),
            Some(r#"Bearer error="invalid_token""#),
            "{reason}"
        );
        assert_eq!(
            body(&e),
            json!({"error": reason, "message": format!("{reason} happened")})
        );
    }
    // A padlocked action's TOKEN_INVALID carries step-up metadata; it is
    // still an invalid token, not a step-up.
    let e = from_status(&padlock(
        Code::Unauthenticated,
        Reason::TokenInvalid,
        &[("max_age", "28800"), ("action", "transport_package")],
    ));
    assert_eq!(
        e.www_authenticate.as_deref(),
        Some(r#"Bearer error="invalid_token""#)
    );
    assert!(!e.body.contains_key("max_age"));
}

#[test]
fn code_invalid_adds_attempts_left() {
    let e = from_status(&padlock(
        Code::Unauthenticated,
        Reason::CodeInvalid,
        &[("attempts_left", "3")],
    ));
    assert_eq!(e.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        e.www_authenticate.as_deref(),
        Some(r#"Bearer error="invalid_token""#)
    );
    assert_eq!(body(&e)["attempts_left"], json!(3));
}

#[test]
fn permission_denied_is_403_with_action_and_environment_when_present() {
    let e = from_status(&padlock(
        Code::PermissionDenied,
        Reason::NodePermissionMissing,
        &[
            ("max_age", "28800"),
            ("action", "transport_package"),
            ("environment", "production"),
        ],
    ));
    assert_eq!(e.status, StatusCode::FORBIDDEN);
    assert_eq!(e.www_authenticate, None);
    assert_eq!(
        body(&e),
        json!({
            "error": Reason::NodePermissionMissing.as_str_name(),
            "message": format!("{} happened", Reason::NodePermissionMissing.as_str_name()),
            "action": "transport_package",
            "environment": "production",
        })
    );
    let e = from_status(&padlock(
        Code::PermissionDenied,
        Reason::TechnicalContactRequired,
        &[],
    ));
    assert_eq!(
        body(&e),
        json!({
            "error": Reason::TechnicalContactRequired.as_str_name(),
            "message": format!("{} happened", Reason::TechnicalContactRequired.as_str_name()),
        })
    );
}

#[test]
fn not_found_is_404() {
    let e = from_status(&padlock(Code::NotFound, Reason::AppNotFound, &[]));
    assert_eq!(e.status, StatusCode::NOT_FOUND);
    assert_eq!(e.reason(), Reason::AppNotFound.as_str_name());
}

#[test]
fn conflicts_are_409() {
    for (code, reason) in [
        (Code::AlreadyExists, Reason::PackageVersionExists),
        (Code::FailedPrecondition, Reason::PackageNotDeployedInSource),
        (Code::Aborted, Reason::Conflict),
    ] {
        let e = from_status(&padlock(code, reason, &[]));
        let reason = reason.as_str_name();
        assert_eq!(e.status, StatusCode::CONFLICT, "{reason}");
        assert_eq!(e.reason(), reason);
        assert_eq!(e.www_authenticate, None);
    }
}

#[test]
fn resource_exhausted_is_429_with_retry_after_from_retry_info() {
    let status = rich::retry_later(
        Code::ResourceExhausted,
        Reason::TooManyAttempts,
        "locked",
        Duration::from_secs(900),
    );
    let e = from_status(&status);
    assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(e.retry_after, Some(900));
    assert_eq!(
        body(&e),
        json!({"error": Reason::TooManyAttempts.as_str_name(), "message": "locked", "retry_after": 900})
    );
    let response = e.into_response();
    assert_eq!(response.headers()[header::RETRY_AFTER], "900");
    // A fraction of a second rounds up: retrying early is refused again.
    let status = rich::retry_later(
        Code::ResourceExhausted,
        Reason::SmsResendTooSoon,
        "wait",
        Duration::from_millis(29_200),
    );
    assert_eq!(from_status(&status).retry_after, Some(30));
    // Without RetryInfo there is no header.
    let e = from_status(&Status::resource_exhausted("busy"));
    assert_eq!(
        (e.status, e.retry_after),
        (StatusCode::TOO_MANY_REQUESTS, None)
    );
}

#[test]
fn unavailable_is_503_and_hides_transport_details() {
    let e = from_status(&Status::unavailable(
        "tcp connect error: 127.0.0.1:50052: refused",
    ));
    assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        body(&e),
        json!({"error": "UNAVAILABLE", "message": "a backend service is unavailable; retry shortly"})
    );
    let e = from_status(&padlock(Code::Unavailable, Reason::SmsUnavailable, &[]));
    assert_eq!(
        (e.status, e.reason()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Reason::SmsUnavailable.as_str_name()
        )
    );
}

#[test]
fn deadline_exceeded_is_504_also_when_the_gateways_own_deadline_ran_out() {
    let e = from_status(&Status::deadline_exceeded("too slow"));
    assert_eq!(
        (e.status, e.reason()),
        (StatusCode::GATEWAY_TIMEOUT, "DEADLINE_EXCEEDED")
    );
    let own = Status::from_error(Box::new(tonic::TimeoutExpired(())));
    assert_eq!(own.code(), Code::Cancelled);
    let e = from_status(&own);
    assert_eq!(
        (e.status, e.reason()),
        (StatusCode::GATEWAY_TIMEOUT, "DEADLINE_EXCEEDED")
    );
}

#[test]
fn anything_else_is_500_internal_with_no_details() {
    for status in [
        rich::internal(),
        Status::unknown("panic at db.rs:12 SELECT secret FROM users"),
        Status::cancelled("client went away"),
        Status::unimplemented("nope"),
        Status::data_loss("disk"),
        Status::out_of_range("x"),
    ] {
        let e = from_status(&status);
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            body(&e),
            json!({"error": Reason::Internal.as_str_name(), "message": "internal error; see the gateway log"})
        );
        assert_eq!((e.www_authenticate, e.retry_after), (None, None));
    }
}

#[test]
fn a_foreign_error_info_is_not_trusted() {
    let details = tonic_types::ErrorDetails::with_error_info(
        Reason::MfaRequired.as_str_name(),
        "example.com",
        HashMap::new(),
    );
    let status = Status::with_error_details(Code::Unauthenticated, "trust me", details);
    let e = from_status(&status);
    assert_eq!(e.reason(), "UNAUTHENTICATED");
    assert_eq!(
        e.www_authenticate.as_deref(),
        Some(r#"Bearer error="invalid_token""#)
    );
    assert_eq!(body(&e)["message"], json!("not signed in"));
}

#[test]
fn the_gateways_own_refusals_go_through_the_mapping() {
    let e = ApiError::csrf_header_missing();
    assert_eq!(
        (e.status, e.reason()),
        (
            StatusCode::FORBIDDEN,
            Reason::CsrfHeaderMissing.as_str_name()
        )
    );
    let e = ApiError::session_invalid();
    assert_eq!(
        (e.status, e.reason()),
        (
            StatusCode::UNAUTHORIZED,
            Reason::SessionInvalid.as_str_name()
        )
    );
    assert_eq!(
        e.www_authenticate.as_deref(),
        Some(r#"Bearer error="invalid_token""#)
    );
    let mut v = Violations::new();
    v.add("username", "required");
    let e = ApiError::invalid(v);
    assert_eq!(
        body(&e)["fields"],
        json!([{"field": "username", "description": "required"}])
    );
    let e = ApiError::payload_too_large(10);
    assert_eq!(
        (e.status, e.reason()),
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            Reason::PayloadTooLarge.as_str_name()
        )
    );
    assert_eq!(body(&e)["max_bytes"], json!(10));
}

#[test]
fn headers_reach_the_response() {
    let status = step_up(Reason::MfaRequired, "28800", "transport_package");
    let response = from_status(&status).into_response();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response.headers()[header::WWW_AUTHENTICATE],
        r#"Bearer error="insufficient_user_authentication", error_description="A second factor is required", max_age=28800"#
    );
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
}
