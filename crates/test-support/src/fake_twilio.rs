//! A fake Twilio Programmable Messaging API on `127.0.0.1:0`. It checks the
//! request exactly as Twilio would (path, Basic auth, form encoding and
//! fields) and answers with Twilio's success and error bodies, so the SMS
//! sender is tested against the wire format, not against itself. Tests
//! script the next answers (server errors, rate limits, hangs) with
//! [`FakeTwilio::push`].

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use padlock_runtime::clock::{Clock, SystemClock};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// Twilio's limit on a message body, in characters
/// (<https://www.twilio.com/docs/errors/21617>).
pub const MAX_BODY_CHARS: usize = 1600;

const API_PREFIX: &str = "/2010-04-01/Accounts/";

/// How the fake answers one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behavior {
    /// Check the request like Twilio and, if it is right, accept the
    /// message (201). The default when nothing is queued.
    Accept,
    /// Check the request like Twilio and, if it is right, refuse it with
    /// this Twilio error, e.g. `{ status: 400, code: 21211 }`.
    Error { status: u16, code: u32 },
    /// Fail before looking at the request with this status and Twilio's
    /// body for it, e.g. 500 (code 20500) or 503 (code 20503).
    Status(u16),
    /// Twilio's 429 (code 20429), with `Retry-After` in seconds if given.
    TooManyRequests { retry_after_secs: Option<u64> },
    /// Never answer: for testing the sender's timeouts.
    Hang,
}

/// A message the fake accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    pub to: String,
    pub from: Option<String>,
    pub messaging_service_sid: Option<String>,
    pub body: String,
    /// Every form field in the order sent, for asserting nothing else was.
    pub form: Vec<(String, String)>,
}

/// A running fake Twilio; stops when dropped.
#[derive(Debug)]
pub struct FakeTwilio {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

#[derive(Debug)]
struct Shared {
    account_sid: String,
    auth_token: String,
    script: Mutex<VecDeque<Behavior>>,
    messages: Mutex<Vec<ReceivedMessage>>,
    requests: AtomicUsize,
}

impl FakeTwilio {
    /// Starts a fake for one account, answering on a free loopback port.
    pub async fn start(account_sid: impl Into<String>, auth_token: impl Into<String>) -> Self {
        let shared = Arc::new(Shared {
            account_sid: account_sid.into(),
            auth_token: auth_token.into(),
            script: Mutex::default(),
            messages: Mutex::default(),
            requests: AtomicUsize::new(0),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake Twilio to a loopback port");
        let addr = listener.local_addr().expect("the fake Twilio's address");
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.ok();
        });
        Self {
            addr,
            shared,
            server,
        }
    }

    /// `http://127.0.0.1:PORT`: what a sender's base URL should be.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Queues how the next request not yet scripted is answered.
    pub fn push(&self, behavior: Behavior) {
        lock(&self.shared.script).push_back(behavior);
    }

    /// The messages accepted so far, oldest first.
    pub fn messages(&self) -> Vec<ReceivedMessage> {
        lock(&self.shared.messages).clone()
    }

    /// Every request received so far, answered or not.
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }
}

impl Drop for FakeTwilio {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    let behavior = lock(&shared.script).pop_front().unwrap_or(Behavior::Accept);
    match behavior {
        Behavior::Hang => std::future::pending().await,
        Behavior::Status(status) => status_error(status),
        Behavior::TooManyRequests { retry_after_secs } => {
            let mut response = status_error(429);
            if let Some(seconds) = retry_after_secs {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, seconds.into());
            }
            response
        }
        Behavior::Accept | Behavior::Error { .. } => {
            let message = match check(&shared, &method, &uri, &headers, &body) {
                Ok(message) => message,
                Err(refusal) => return twilio_error(refusal.status, refusal.code, refusal.message),
            };
            match behavior {
                Behavior::Error { status, code } => {
                    twilio_error(status, code, default_message(code))
                }
                _ => accept(&shared, message),
            }
        }
    }
}

/// Everything Twilio checks before taking a message, in Twilio's order.
fn check(
    shared: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<ReceivedMessage, Refusal> {
    let path = uri.path();
    if !authenticated(shared, headers) {
        return Err(Refusal::new(401, 20003, "Authenticate".to_owned()));
    }
    let Some(path_sid) = path
        .strip_prefix(API_PREFIX)
        .and_then(|rest| rest.strip_suffix("/Messages.json"))
        .filter(|sid| !sid.contains('/'))
    else {
        return Err(Refusal::new(
            404,
            20404,
            format!("The requested resource {path} was not found"),
        ));
    };
    if path_sid != shared.account_sid {
        return Err(Refusal::new(401, 20003, "Authenticate".to_owned()));
    }
    if method != Method::POST {
        return Err(Refusal::new(405, 20004, "Method not allowed".to_owned()));
    }
    // Twilio reads only form-encoded parameters; any other body leaves
    // every parameter missing.
    let form_encoded = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| {
            mime.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    let form: Vec<(String, String)> = if form_encoded {
        form_urlencoded::parse(body).into_owned().collect()
    } else {
        Vec::new()
    };
    let field = |name: &str| {
        form.iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    };
    let Some(to) = field("To").filter(|to| !to.is_empty()) else {
        return Err(Refusal::new(
            400,
            21604,
            "A 'To' phone number is required.".to_owned(),
        ));
    };
    if !is_e164(&to) {
        return Err(Refusal::new(
            400,
            21211,
            format!("The 'To' number {to} is not a valid phone number."),
        ));
    }
    let from = field("From").filter(|from| !from.is_empty());
    let messaging_service_sid = field("MessagingServiceSid").filter(|sid| !sid.is_empty());
    match (&from, &messaging_service_sid) {
        (Some(from), None) if !is_e164(from) => {
            return Err(Refusal::new(
                400,
                21212,
                format!(
                    "The 'From' number {from} is not a valid phone number, shortcode, or alphanumeric sender ID."
                ),
            ));
        }
        (None, Some(sid)) if !is_sid(sid, "MG") => {
            return Err(Refusal::new(
                400,
                21701,
                format!("The Messaging Service Sid {sid} is invalid."),
            ));
        }
        (Some(_), None) | (None, Some(_)) => {}
        _ => {
            return Err(Refusal::new(
                400,
                21603,
                "A 'From' or 'MessagingServiceSid' parameter is required".to_owned(),
            ));
        }
    }
    let Some(body) = field("Body").filter(|body| !body.is_empty()) else {
        return Err(Refusal::new(
            400,
            21602,
            "Message body is required.".to_owned(),
        ));
    };
    if body.chars().count() > MAX_BODY_CHARS {
        return Err(Refusal::new(
            400,
            21617,
            "The concatenated message body exceeds the 1600 character limit.".to_owned(),
        ));
    }
    Ok(ReceivedMessage {
        to,
        from,
        messaging_service_sid,
        body,
        form,
    })
}

/// A Twilio error for a request Twilio would not take.
#[derive(Debug)]
struct Refusal {
    status: u16,
    code: u32,
    message: String,
}

impl Refusal {
    fn new(status: u16, code: u32, message: String) -> Self {
        Self {
            status,
            code,
            message,
        }
    }
}

fn authenticated(shared: &Shared, headers: &HeaderMap) -> bool {
    let expected = format!("{}:{}", shared.account_sid, shared.auth_token);
    headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Basic "))
        .and_then(|encoded| STANDARD.decode(encoded.trim()).ok())
        .is_some_and(|decoded| decoded == expected.as_bytes())
}

/// Records the message and answers as Twilio's Create Message does.
fn accept(shared: &Shared, message: ReceivedMessage) -> Response {
    let sid = format!("SM{}", uuid::Uuid::new_v4().simple());
    let account = &shared.account_sid;
    let now = SystemClock.now().to_rfc2822();
    let uri = format!("{API_PREFIX}{account}/Messages/{sid}");
    // With a Messaging Service, Twilio picks the number later: `from` is
    // null and the message is "accepted" rather than "queued".
    let status = if message.messaging_service_sid.is_some() {
        "accepted"
    } else {
        "queued"
    };
    let answer = json!({
        "account_sid": account,
        "api_version": "2010-04-01",
        "body": message.body,
        "date_created": now,
        "date_sent": null,
        "date_updated": now,
        "direction": "outbound-api",
        "error_code": null,
        "error_message": null,
        "from": message.from,
        "messaging_service_sid": message.messaging_service_sid,
        "num_media": "0",
        "num_segments": segments(&message.body).to_string(),
        "price": null,
        "price_unit": "USD",
        "sid": sid,
        "status": status,
        "subresource_uris": { "media": format!("{uri}/Media.json") },
        "to": message.to,
        "uri": format!("{uri}.json"),
    });
    lock(&shared.messages).push(message);
    (StatusCode::CREATED, Json(answer)).into_response()
}

/// Twilio's error body: `{code, message, more_info, status}`.
fn twilio_error(status: u16, code: u32, message: String) -> Response {
    let status_code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    let body: Value = json!({
        "code": code,
        "message": message,
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        "status": status,
    });
    (status_code, Json(body)).into_response()
}

/// Twilio's body for a bare HTTP failure: code 20000 + status (20429,
/// 20500, 20503).
fn status_error(status: u16) -> Response {
    let reason = StatusCode::from_u16(status)
        .ok()
        .and_then(|status| status.canonical_reason())
        .unwrap_or("Error");
    let message = match status {
        500 => "An internal server error has occurred".to_owned(),
        _ => reason.to_owned(),
    };
    twilio_error(status, 20_000 + u32::from(status), message)
}

/// Twilio's message for the codes tests script.
fn default_message(code: u32) -> String {
    match code {
        20003 => "Authenticate",
        21211 => "The 'To' number is not a valid phone number.",
        21408 => "Permission to send an SMS has not been enabled for the region indicated by the 'To' number",
        21606 => "The 'From' phone number provided is not a valid, message-capable Twilio phone number.",
        21610 => "Attempt to send to unsubscribed recipient",
        21612 => "The 'To' phone number is not currently reachable via SMS",
        21614 => "'To' number is not a valid mobile number",
        21659 => "Source number is not a Twilio phone number or verified sender.",
        _ => "The request could not be processed",
    }
    .to_owned()
}

/// SMS segments: 160 GSM-7 characters alone or 153 when concatenated;
/// 70 / 67 UTF-16 units otherwise (plain ASCII stands in for GSM-7).
fn segments(body: &str) -> usize {
    let (units, single, part) = if body.is_ascii() {
        (body.len(), 160, 153)
    } else {
        (body.encode_utf16().count(), 70, 67)
    };
    if units <= single {
        1
    } else {
        units.div_ceil(part)
    }
}

fn is_e164(number: &str) -> bool {
    number.strip_prefix('+').is_some_and(|digits| {
        (2..=15).contains(&digits.len())
            && !digits.starts_with('0')
            && digits.bytes().all(|b| b.is_ascii_digit())
    })
}

fn is_sid(sid: &str, prefix: &str) -> bool {
    sid.strip_prefix(prefix)
        .is_some_and(|hex| hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_follow_twilio_counting() {
        assert_eq!(segments("hi"), 1);
        assert_eq!(segments(&"a".repeat(160)), 1);
        assert_eq!(segments(&"a".repeat(161)), 2);
        assert_eq!(segments(&"a".repeat(307)), 3);
        assert_eq!(segments(&"é".repeat(70)), 1);
        assert_eq!(segments(&"é".repeat(71)), 2);
    }

    #[test]
    fn numbers_and_sids_are_checked_like_twilio() {
        assert!(is_e164("+15005550006"));
        assert!(!is_e164("15005550006"));
        assert!(!is_e164("+05005550006"));
        assert!(!is_e164("+1234567890123456"));
        assert!(is_sid("MG0123456789abcdef0123456789abcdef", "MG"));
        assert!(!is_sid("MG0123456789abcdef", "MG"));
    }
}
