//! Calls a service's gRPC routes in-process with raw request messages, the
//! way tonic's server receives them after HTTP/2: so every fuzz input goes
//! through tonic's framing and prost decoding, the handler's validation and
//! the real handler. Also the oracle every RPC target shares: what a
//! status may never be, whatever the request held.

use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use http_body_util::{BodyExt as _, Full};
use tonic::service::Routes;
use tonic::{Code, Status};
use tower::ServiceExt as _;

/// What a call returned: the status and the raw response messages.
#[derive(Debug)]
pub struct Reply {
    pub status: Status,
    pub messages: Vec<Bytes>,
}

impl Reply {
    /// The first response message, decoded.
    pub fn decode<M: prost::Message + Default>(&self) -> Option<M> {
        self.messages
            .first()
            .and_then(|m| M::decode(m.clone()).ok())
    }
}

/// POSTs `messages` (each framed as an uncompressed gRPC message) to
/// `path` on `routes`, with `authorization` if given, and reads the whole
/// response.
pub async fn call(
    routes: &Routes,
    path: &str,
    authorization: Option<&str>,
    messages: &[&[u8]],
) -> Reply {
    let mut body = BytesMut::new();
    for message in messages {
        body.put_u8(0);
        body.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
        body.put_slice(message);
    }
    let mut request = http::Request::builder()
        .method(http::Method::POST)
        .uri(format!("http://padlock.fuzz{path}"))
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers");
    if let Some(value) = authorization
        && let Ok(value) = http::HeaderValue::from_str(value)
    {
        request = request.header(http::header::AUTHORIZATION, value);
    }
    let request = request
        .body(Full::new(body.freeze()))
        .expect("a well-formed request");
    let response = match routes.clone().oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    let (parts, body) = response.into_parts();
    if let Some(status) = Status::from_header_map(&parts.headers) {
        return Reply {
            status,
            messages: Vec::new(),
        };
    }
    let collected = match body.collect().await {
        Ok(collected) => collected,
        Err(status) => {
            return Reply {
                status,
                messages: Vec::new(),
            };
        }
    };
    let status = collected
        .trailers()
        .and_then(Status::from_header_map)
        .unwrap_or_else(|| Status::unknown("the response had no grpc-status"));
    Reply {
        status,
        messages: frames(collected.to_bytes()),
    }
}

/// The messages of an uncompressed gRPC body.
fn frames(mut body: Bytes) -> Vec<Bytes> {
    let mut messages = Vec::new();
    while body.remaining() >= 5 {
        let _compressed = body.get_u8();
        let len = usize::try_from(body.get_u32()).unwrap_or(usize::MAX);
        if len > body.remaining() {
            break;
        }
        messages.push(body.split_to(len));
    }
    messages
}

/// The oracle: bad input gets a clear refusal, never an internal error, and
/// no status message carries a secret the request held.
///
/// # Panics
///
/// That is the point: libFuzzer records the input as a crash.
pub fn check(path: &str, status: &Status, secrets: &[&str]) {
    assert!(
        !matches!(
            status.code(),
            Code::Internal | Code::Unknown | Code::DataLoss
        ),
        "{path} answered {:?}: {:?}",
        status.code(),
        status.message()
    );
    let message = status.message();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        assert!(
            !message.contains(secret),
            "{path}: the status message quotes a secret: {message:?}"
        );
    }
    assert!(
        !has_phone_number(message),
        "{path}: the status message quotes a phone number: {message:?}"
    );
}

/// A `+` followed by eight or more digits: a full E.164 number.
fn has_phone_number(text: &str) -> bool {
    text.split('+')
        .skip(1)
        .any(|after| after.bytes().take_while(u8::is_ascii_digit).count() >= 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_numbers_are_spotted_masked_ones_are_not() {
        assert!(has_phone_number("sent to +31612345678."));
        assert!(!has_phone_number("sent to +31 6** *** *78"));
        assert!(!has_phone_number("1+1 = 2"));
    }

    #[test]
    #[should_panic(expected = "answered Internal")]
    fn an_undecodable_request_answered_internal_is_a_finding() {
        // padlock's servers answer it INVALID_ARGUMENT (padlock_proto::codec).
        check(
            "/x",
            &Status::internal("failed to decode Protobuf message: buffer underflow"),
            &[],
        );
    }

    #[test]
    #[should_panic(expected = "answered Internal")]
    fn internal_is_a_finding() {
        check("/x", &Status::internal("boom"), &[]);
    }

    #[test]
    #[should_panic(expected = "quotes a secret")]
    fn an_echoed_secret_is_a_finding() {
        check(
            "/x",
            &Status::invalid_argument("bad code 123456"),
            &["123456"],
        );
    }
}
