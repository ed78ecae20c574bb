//! Rich gRPC statuses: every refusal carries `google.rpc.ErrorInfo` with the
//! `padlock` domain and a machine-readable reason; invalid input carries
//! `google.rpc.BadRequest`; limits carry `google.rpc.RetryInfo`. Clients
//! branch on the reason, never on the message.

use std::collections::HashMap;
use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

pub use padlock_proto::Reason;
pub use padlock_proto::codec::DOMAIN;

/// A refusal with a reason and optional metadata.
pub fn refusal<'a>(
    code: Code,
    reason: Reason,
    message: impl Into<String>,
    metadata: impl IntoIterator<Item = (&'a str, String)>,
) -> Status {
    let metadata: HashMap<String, String> = metadata
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    let details = ErrorDetails::with_error_info(reason.as_str_name(), DOMAIN, metadata);
    Status::with_error_details(code, message, details)
}

/// A refusal that may be retried after `retry_after` (lockouts, rate limits).
pub fn retry_later(
    code: Code,
    reason: Reason,
    message: impl Into<String>,
    retry_after: Duration,
) -> Status {
    let mut details = ErrorDetails::with_retry_info(Some(retry_after));
    details.set_error_info(
        reason.as_str_name(),
        DOMAIN,
        HashMap::from([(
            "retry_after_seconds".to_owned(),
            retry_after.as_secs().to_string(),
        )]),
    );
    Status::with_error_details(code, message, details)
}

/// Collects field violations; empty means the request is valid.
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, field: &str, description: impl Into<String>) -> &mut Self {
        self.0.push(FieldViolation::new(field, description));
        self
    }

    /// Adds a violation when `bad` holds.
    pub fn check(&mut self, bad: bool, field: &str, description: &str) -> &mut Self {
        if bad {
            self.add(field, description);
        }
        self
    }

    /// The username in `value`, or a violation of `field` and `None`.
    pub fn username(&mut self, field: &str, value: &str) -> Option<crate::names::Username> {
        crate::names::Username::parse(value)
            .map_err(|why| self.add(field, why))
            .ok()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Each violation as (field, description), in the order added.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0
            .iter()
            .map(|v| (v.field.as_str(), v.description.as_str()))
    }

    /// `Ok` when nothing was added, else INVALID_ARGUMENT naming every field.
    pub fn into_result(self) -> Result<(), Status> {
        if self.0.is_empty() {
            return Ok(());
        }
        let fields: Vec<&str> = self.0.iter().map(|v| v.field.as_str()).collect();
        let message = format!("invalid request: {}", fields.join(", "));
        let mut details = ErrorDetails::with_bad_request(self.0);
        details.set_error_info(
            Reason::InvalidArgument.as_str_name(),
            DOMAIN,
            HashMap::new(),
        );
        Err(Status::with_error_details(
            Code::InvalidArgument,
            message,
            details,
        ))
    }
}

/// One INVALID_ARGUMENT for one field.
pub fn invalid_field(field: &str, description: &str) -> Status {
    let mut v = Violations::new();
    v.add(field, description);
    match v.into_result() {
        Err(status) => status,
        Ok(()) => Status::invalid_argument(description.to_owned()),
    }
}

/// The padlock reason a status carries, if it carries one of ours.
pub fn reason_of(status: &Status) -> Option<Reason> {
    let info = status.get_details_error_info()?;
    if info.domain != DOMAIN {
        return None;
    }
    Reason::from_str_name(&info.reason)
}

/// An INTERNAL status that says nothing about the cause; the caller logs it.
pub fn internal() -> Status {
    refusal(
        Code::Internal,
        Reason::Internal,
        "internal error; see the service log",
        [],
    )
}

/// UNAVAILABLE: a dependency (the database) cannot be reached right now.
pub fn unavailable() -> Status {
    refusal(
        Code::Unavailable,
        Reason::Unavailable,
        "service temporarily unavailable; retry",
        [],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_carries_reason_domain_and_metadata() {
        let status = refusal(
            Code::Unauthenticated,
            Reason::MfaRequired,
            "step up",
            [("max_age", "28800".to_owned())],
        );
        let details = status.get_error_details();
        let info = details.error_info().expect("error info");
        assert_eq!(info.reason, Reason::MfaRequired.as_str_name());
        assert_eq!(info.domain, DOMAIN);
        assert_eq!(info.metadata["max_age"], "28800");
        assert_eq!(reason_of(&status), Some(Reason::MfaRequired));
        assert_eq!(reason_of(&Status::internal("plain")), None);
    }

    #[test]
    fn violations_name_every_field() {
        let mut v = Violations::new();
        v.check(true, "code", "must be 6 digits")
            .check(false, "x", "y")
            .add("username", "required");
        let status = v.into_result().expect_err("invalid");
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        let fields: Vec<_> = details
            .bad_request()
            .expect("bad request")
            .field_violations
            .iter()
            .map(|f| f.field.clone())
            .collect();
        assert_eq!(fields, ["code", "username"]);
        assert!(Violations::new().into_result().is_ok());
    }

    #[test]
    fn retry_later_carries_the_delay() {
        let status = retry_later(
            Code::ResourceExhausted,
            Reason::TooManyAttempts,
            "locked",
            Duration::from_secs(900),
        );
        let details = status.get_error_details();
        assert_eq!(
            details.retry_info().and_then(|r| r.retry_delay),
            Some(Duration::from_secs(900))
        );
    }
}
