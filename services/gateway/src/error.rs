//! Errors as the browser sees them, and the one place a gRPC status becomes
//! an HTTP response (API.md "Errors: one mapping"): the status code, the
//! `WWW-Authenticate` challenge (RFC 6750, and RFC 9470's
//! `insufficient_user_authentication` with `max_age` for a missing or stale
//! second factor), `Retry-After` from `google.rpc.RetryInfo`, field
//! violations from `google.rpc.BadRequest`, and a JSON body
//! `{"error": REASON, "message": ..., ...}`. The gateway's own refusals
//! (bad JSON, CSRF, no session) are built as statuses and go through the
//! same function; only 405 and 413 have no gRPC counterpart.

use std::collections::HashMap;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use padlock_proto::Reason;
use padlock_runtime::status::{self as rich, DOMAIN, Violations};
use serde_json::{Map, Value, json};
use tonic::{Code, Status};
use tonic_types::StatusExt;

/// An error response: status, the two headers the mapping may add, and
/// the JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub www_authenticate: Option<String>,
    pub retry_after: Option<u64>,
    pub body: Map<String, Value>,
}

impl ApiError {
    fn new(status: StatusCode, error: &str, message: &str) -> Self {
        let mut body = Map::new();
        body.insert("error".into(), error.into());
        body.insert("message".into(), message.into());
        Self {
            status,
            www_authenticate: None,
            retry_after: None,
            body,
        }
    }

    /// The `error` field: the reason or the code name.
    pub fn reason(&self) -> &str {
        self.body.get("error").and_then(Value::as_str).unwrap_or("")
    }

    fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.body.insert(key.into(), value.into());
        self
    }

    /// 400 `INVALID_ARGUMENT` naming each bad field; nothing was called.
    pub fn invalid(violations: Violations) -> Self {
        match violations.into_result() {
            Err(status) => from_status(&status),
            Ok(()) => from_status(&rich::invalid_field("body", "invalid request")),
        }
    }

    /// 403 `CSRF_HEADER_MISSING`: a state-changing request without
    /// `X-Padlock-CSRF: 1`; nothing was called.
    pub fn csrf_header_missing() -> Self {
        from_status(&rich::refusal(
            Code::PermissionDenied,
            Reason::CsrfHeaderMissing,
            "requests that change something must carry the header X-Padlock-CSRF: 1",
            [],
        ))
    }

    /// 401 `SESSION_INVALID`: no session cookie, or auth no longer knows it.
    pub fn session_invalid() -> Self {
        from_status(&session_invalid_status())
    }

    /// 404 `NOT_FOUND` for a path the gateway does not serve.
    pub fn no_such_route() -> Self {
        from_status(&rich::refusal(
            Code::NotFound,
            Reason::NotFound,
            "no such route",
            [],
        ))
    }

    /// 405: the path exists, the method does not.
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            Reason::MethodNotAllowed.as_str_name(),
            "this path does not take that method",
        )
    }

    /// 413: an upload larger than `--max-upload-bytes`.
    pub fn payload_too_large(max_bytes: u64) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            Reason::PayloadTooLarge.as_str_name(),
            &format!("the body is larger than {max_bytes} bytes"),
        )
        .with("max_bytes", max_bytes)
    }
}

/// The status the gateway answers when there is no valid session.
pub fn session_invalid_status() -> Status {
    rich::refusal(
        Code::Unauthenticated,
        Reason::SessionInvalid,
        "no valid session; sign in again",
        [],
    )
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(Value::Object(self.body))).into_response();
        let headers = response.headers_mut();
        if let Some(challenge) = self
            .www_authenticate
            .and_then(|c| HeaderValue::from_str(&c).ok())
        {
            headers.insert(header::WWW_AUTHENTICATE, challenge);
        }
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl From<Status> for ApiError {
    fn from(status: Status) -> Self {
        from_status(&status)
    }
}

/// THE mapping from a gRPC status to an HTTP error (API.md's table).
pub fn from_status(status: &Status) -> ApiError {
    let code = effective_code(status);
    let details = status.get_error_details();
    // Only padlock's own ErrorInfo is trusted for reasons and messages; a
    // transport failure's text (addresses, OS errors) stays in the log.
    let info = details.error_info().filter(|i| i.domain == DOMAIN);
    let reason = info.map_or_else(|| code_name(code).to_owned(), |i| i.reason.clone());
    let known = Reason::from_str_name(&reason);
    let metadata = info.map(|i| &i.metadata);
    let message = match info {
        Some(_) => status.message().to_owned(),
        None => generic_message(code).to_owned(),
    };
    let http = http_status(code);
    if http == StatusCode::INTERNAL_SERVER_ERROR {
        tracing::error!(code = ?status.code(), reason = %reason, message = %status.message(),
            "backend failed; answering 500");
        return ApiError::new(
            http,
            Reason::Internal.as_str_name(),
            "internal error; see the gateway log",
        );
    }
    if http == StatusCode::SERVICE_UNAVAILABLE || http == StatusCode::GATEWAY_TIMEOUT {
        tracing::warn!(code = ?code, reason = %reason, message = %status.message(),
            "backend unavailable or too slow");
    }
    let mut error = ApiError::new(http, &reason, &message);
    match code {
        Code::InvalidArgument => {
            let fields: Vec<Value> = details
                .bad_request()
                .map(|b| {
                    b.field_violations
                        .iter()
                        .map(|v| json!({"field": v.field, "description": v.description}))
                        .collect()
                })
                .unwrap_or_default();
            error = error.with("fields", fields);
        }
        Code::Unauthenticated
            if matches!(known, Some(Reason::MfaRequired | Reason::MfaExpired)) =>
        {
            let max_age = metadata.and_then(|m| m.get("max_age")?.parse::<u64>().ok());
            error.www_authenticate = Some(step_up_challenge(known, max_age));
            if let Some(max_age) = max_age {
                error = error.with("max_age", max_age);
            }
            error = copy_metadata(error, metadata, &["action", "environment"]);
        }
        Code::Unauthenticated => {
            error.www_authenticate = Some(r#"Bearer error="invalid_token""#.to_owned());
            if known == Some(Reason::CodeInvalid)
                && let Some(left) =
                    metadata.and_then(|m| m.get("attempts_left")?.parse::<u64>().ok())
            {
                error = error.with("attempts_left", left);
            }
        }
        Code::PermissionDenied => {
            error = copy_metadata(error, metadata, &["action", "environment"]);
        }
        Code::ResourceExhausted => {
            let from_retry_info = details
                .retry_info()
                .and_then(|r| r.retry_delay)
                .map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0));
            let from_metadata =
                || metadata.and_then(|m| m.get("retry_after_seconds")?.parse::<u64>().ok());
            if let Some(secs) = from_retry_info.or_else(from_metadata) {
                error.retry_after = Some(secs);
                error = error.with("retry_after", secs);
            }
        }
        _ => {}
    }
    error
}

/// The HTTP status for a gRPC code (API.md's table).
fn http_status(code: Code) -> StatusCode {
    match code {
        Code::InvalidArgument => StatusCode::BAD_REQUEST,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::FailedPrecondition | Code::Aborted => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The status's code, except that tonic reports the gateway's own call
/// deadline running out as CANCELLED ("Timeout expired"): that is a
/// DEADLINE_EXCEEDED too. While the connection is still being made the
/// expiry comes wrapped in a transport error, hence the whole chain.
fn effective_code(status: &Status) -> Code {
    let timed_out = std::iter::successors(std::error::Error::source(status), |e| e.source())
        .any(|e| e.is::<tonic::TimeoutExpired>());
    if status.code() == Code::Cancelled && timed_out {
        Code::DeadlineExceeded
    } else {
        status.code()
    }
}

/// RFC 9470 §3: the challenge that makes a client step up.
fn step_up_challenge(reason: Option<Reason>, max_age: Option<u64>) -> String {
    let description = match reason {
        Some(Reason::MfaExpired) => "More recent authentication is required",
        _ => "A second factor is required",
    };
    let mut challenge = format!(
        r#"Bearer error="insufficient_user_authentication", error_description="{description}""#
    );
    if let Some(max_age) = max_age {
        challenge.push_str(&format!(", max_age={max_age}"));
    }
    challenge
}

fn copy_metadata(
    mut error: ApiError,
    metadata: Option<&HashMap<String, String>>,
    keys: &[&str],
) -> ApiError {
    for key in keys {
        if let Some(value) = metadata.and_then(|m| m.get(*key)) {
            error = error.with(key, value.clone());
        }
    }
    error
}

fn generic_message(code: Code) -> &'static str {
    match code {
        Code::Unavailable => "a backend service is unavailable; retry shortly",
        Code::DeadlineExceeded => "a backend service did not answer in time; retry",
        Code::Unauthenticated => "not signed in",
        Code::PermissionDenied => "not allowed",
        Code::NotFound => "not found",
        Code::InvalidArgument => "invalid request",
        Code::ResourceExhausted => "too many requests; retry later",
        _ => "the request could not be completed",
    }
}

/// The gRPC code's canonical name, e.g. `NOT_FOUND`.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn padlock(code: Code, reason: &str, metadata: &[(&'static str, &str)]) -> Status {
        let reason = Reason::from_str_name(reason).expect("a padlock reason");
        rich::refusal(
            code,
            reason,
            format!("{} happened", reason.as_str_name()),
            metadata.iter().map(|(k, v)| (*k, (*v).to_owned())),
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
                "error": "INVALID_ARGUMENT",
                "message": status.message(),
                "fields": [
                    {"field": "to_environment", "description": "transport in order"},
                    {"field": "code", "description": "six digits"},
                ],
            })
        );
        // Without BadRequest details the list is empty, never missing.
        let e = from_status(&Status::invalid_argument("bad"));
        assert_eq!(body(&e)["fields"], json!([]));
        assert_eq!(e.reason(), "INVALID_ARGUMENT");
    }

    #[test]
    fn mfa_required_is_401_with_the_rfc_9470_challenge() {
        let status = padlock(
            Code::Unauthenticated,
            Reason::MfaRequired.as_str_name(),
            &[
                ("max_age", "28800"),
                ("action", "transport_package"),
                ("environment", "production"),
            ],
        );
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
                "message": "MFA_REQUIRED happened",
                "max_age": 28800,
                "action": "transport_package",
                "environment": "production",
            })
        );
    }

    #[test]
    fn mfa_expired_is_401_with_the_rfc_9470_challenge_and_its_max_age() {
        let status = padlock(
            Code::Unauthenticated,
            Reason::MfaExpired.as_str_name(),
            &[
                ("max_age", "5"),
                ("action", "deploy_package"),
                ("environment", "production"),
            ],
        );
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
            Reason::TokenInvalid.as_str_name(),
            Reason::SessionInvalid.as_str_name(),
            Reason::CredentialsInvalid.as_str_name(),
            Reason::CodeReused.as_str_name(),
        ] {
            let e = from_status(&padlock(Code::Unauthenticated, reason, &[]));
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
            Reason::TokenInvalid.as_str_name(),
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
            Reason::CodeInvalid.as_str_name(),
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
            Reason::NodePermissionMissing.as_str_name(),
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
                "message": "NODE_PERMISSION_MISSING happened",
                "action": "transport_package",
                "environment": "production",
            })
        );
        let e = from_status(&padlock(
            Code::PermissionDenied,
            Reason::TechnicalContactRequired.as_str_name(),
            &[],
        ));
        assert_eq!(
            body(&e),
            json!({"error": Reason::TechnicalContactRequired.as_str_name(), "message": "TECHNICAL_CONTACT_REQUIRED happened"})
        );
    }

    #[test]
    fn not_found_is_404() {
        let e = from_status(&padlock(
            Code::NotFound,
            Reason::AppNotFound.as_str_name(),
            &[],
        ));
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        assert_eq!(e.reason(), Reason::AppNotFound.as_str_name());
    }

    #[test]
    fn conflicts_are_409() {
        for (code, reason) in [
            (
                Code::AlreadyExists,
                Reason::PackageVersionExists.as_str_name(),
            ),
            (
                Code::FailedPrecondition,
                Reason::PackageNotDeployedInSource.as_str_name(),
            ),
            (Code::Aborted, Reason::Conflict.as_str_name()),
        ] {
            let e = from_status(&padlock(code, reason, &[]));
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
        let e = from_status(&padlock(
            Code::Unavailable,
            Reason::SmsUnavailable.as_str_name(),
            &[],
        ));
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
                json!({"error": "INTERNAL", "message": "internal error; see the gateway log"})
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
        let status = padlock(
            Code::Unauthenticated,
            Reason::MfaRequired.as_str_name(),
            &[
                ("max_age", "28800"),
                ("action", "transport_package"),
                ("environment", "production"),
            ],
        );
        let response = from_status(&status).into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.headers()[header::WWW_AUTHENTICATE],
            r#"Bearer error="insufficient_user_authentication", error_description="A second factor is required", max_age=28800"#
        );
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    }
}
