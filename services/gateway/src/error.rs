//! Errors as the browser sees them, and the one place a gRPC status becomes
//! an HTTP response (docs/http.md "Errors: one mapping"): the status code, the
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
    #[cfg(test)]
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

/// THE mapping from a gRPC status to an HTTP error (docs/http.md's table).
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

/// The HTTP status for a gRPC code (docs/http.md's table).
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

/// The gRPC code's canonical name (google.rpc.Code), e.g. `NOT_FOUND`:
/// the `error` of a status without padlock's ErrorInfo. These are gRPC's
/// names, not padlock reasons, though some are spelt alike.
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
mod tests;
