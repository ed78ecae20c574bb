//! Connections, bearer tokens and status names: the plumbing every scenario
//! shares.

use std::time::Duration;

use anyhow::Context as _;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};
use tonic_types::StatusExt as _;

/// How long to wait for a TCP connection to a service.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// An endpoint for `addr` (`host:port`, or a URL with `http://`).
pub fn endpoint(addr: &str, timeout: Duration) -> anyhow::Result<Endpoint> {
    let uri = if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    };
    Ok(Endpoint::from_shared(uri.clone())
        .with_context(|| format!("not an address: {uri}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .timeout(timeout))
}

/// `n` separate HTTP/2 connections to `addr`; requests are spread over them.
pub async fn connect(addr: &str, n: usize, timeout: Duration) -> anyhow::Result<Vec<Channel>> {
    let endpoint = endpoint(addr, timeout)?;
    let mut channels = Vec::with_capacity(n);
    for _ in 0..n.max(1) {
        channels.push(
            endpoint
                .connect()
                .await
                .with_context(|| format!("connecting to {addr}"))?,
        );
    }
    Ok(channels)
}

/// The `authorization` value for an access token, built once and reused.
pub fn bearer(access_token: &str) -> anyhow::Result<AsciiMetadataValue> {
    MetadataValue::try_from(format!("Bearer {access_token}"))
        .context("the access token is not a valid header value")
}

/// `message` with the caller's bearer token.
pub fn authed<T>(message: T, bearer: &AsciiMetadataValue) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", bearer.clone());
    request
}

/// The gRPC name of a status code (as `grpcurl` and the specs spell it).
pub fn code_name(code: Code) -> &'static str {
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

/// How a failed call is counted: the code, and padlock's `ErrorInfo`
/// reason when the service attached one (`UNAUTHENTICATED/MFA_REQUIRED`).
pub fn failure_key(status: &Status) -> String {
    match status.get_details_error_info() {
        Some(info) if !info.reason.is_empty() => {
            format!("{}/{}", code_name(status.code()), info.reason)
        }
        _ => code_name(status.code()).to_owned(),
    }
}

/// A setup step that failed, naming the step, the code and the reason.
pub fn rpc_error(step: &str, status: &Status) -> anyhow::Error {
    anyhow::anyhow!("{step}: {}: {}", failure_key(status), status.message())
}

#[cfg(test)]
mod tests {
    use super::*;
    #[allow(unused_imports)]
    use padlock_proto::Reason;
    use std::collections::HashMap;

    #[test]
    fn failure_key_names_the_code_and_padlock_reason() {
        let status = Status::with_error_details(
            Code::Unauthenticated,
            "a second factor is required",
            tonic_types::ErrorDetails::with_error_info(
                Reason::MfaRequired.as_str_name(),
                "padlock",
                HashMap::new(),
            ),
        );
        assert_eq!(failure_key(&status), "UNAUTHENTICATED/MFA_REQUIRED");
        assert_eq!(
            failure_key(&Status::unavailable("connection refused")),
            "UNAVAILABLE"
        );
        let step = rpc_error("CreateUser bench-x", &status).to_string();
        assert!(step.starts_with("CreateUser bench-x: UNAUTHENTICATED/MFA_REQUIRED"));
    }

    #[test]
    fn addresses_without_a_scheme_get_http() {
        let e = endpoint("127.0.0.1:50051", Duration::from_secs(1)).unwrap();
        assert_eq!(e.uri().to_string(), "http://127.0.0.1:50051/");
        let e = endpoint("http://[::1]:1", Duration::from_secs(1)).unwrap();
        assert_eq!(e.uri().scheme_str(), Some("http"));
        assert!(endpoint("not an address", Duration::from_secs(1)).is_err());
    }
}
