//! Twilio Programmable Messaging behind [`SmsSender`]. `twilio-async` builds
//! the request (URL path, Basic auth, form body); we send it ourselves to the
//! configured base URL, so tests can point it at a fake Twilio on loopback,
//! and we own the timeouts, retries and the mapping of Twilio's error codes.

use std::fmt;
use std::time::{Duration, Instant};

use hyper::client::HttpConnector;
use hyper::header::{HeaderMap, RETRY_AFTER};
use hyper::http::uri::{Authority, Scheme};
use hyper::{Body, Client, Method, Request, StatusCode, Uri};
use hyper_tls::HttpsConnector;
use padlock_runtime::Secret;
use rand::Rng;
use twilio_async::{Execute, Twilio, form_urlencoded};

use super::{PermanentReason, SendError, Sent, SmsSender};

/// Twilio's REST API.
pub(crate) const DEFAULT_BASE_URL: &str = "https://api.twilio.com";
/// One try and two retries: enough to ride out a blip, short enough for a
/// user waiting for a code.
pub(crate) const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Per attempt, connection and response body included.
pub(crate) const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The first retry waits about this long; each further retry doubles it.
pub(crate) const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_millis(200);
/// The doubling stops here, so a large `max_attempts` cannot overflow.
const BACKOFF_MAX_DOUBLINGS: u32 = 6;
/// An attempt with less time than this before the caller's deadline is not
/// started: it would most likely be cut off after Twilio accepted the
/// message, and the retry would send the code twice.
const MIN_ATTEMPT_TIME: Duration = Duration::from_millis(100);
/// A `Retry-After` longer than this is not waited for: a person is waiting
/// for the code, and the caller may offer another way.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);

/// Twilio's error codes that decide the [`PermanentReason`]
/// (<https://www.twilio.com/docs/api/errors>).
mod code {
    /// Authenticate: wrong account SID or auth token (HTTP 401).
    pub(crate) const AUTHENTICATE: u32 = 20003;
    /// The requested resource was not found: wrong account SID in the path.
    pub const NOT_FOUND: u32 = 20404;
    /// Invalid 'To' phone number.
    pub(crate) const INVALID_TO: u32 = 21211;
    /// Permission to send an SMS has not been enabled for the region.
    pub(crate) const REGION_NOT_ENABLED: u32 = 21408;
    /// Phone number is not a valid SMS-capable inbound phone number (our
    /// `From`).
    pub(crate) const FROM_NOT_SMS_CAPABLE: u32 = 21606;
    /// Attempt to send to unsubscribed recipient (the user sent STOP).
    pub(crate) const UNSUBSCRIBED: u32 = 21610;
    /// The 'To' phone number is not currently reachable via SMS.
    pub(crate) const TO_NOT_REACHABLE: u32 = 21612;
    /// 'To' number is not a valid mobile number.
    pub(crate) const TO_NOT_MOBILE: u32 = 21614;
    /// Source number is not a Twilio phone number or verified sender.
    pub(crate) const FROM_NOT_TWILIO: u32 = 21659;
}

/// Who the message comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sender {
    /// A Twilio phone number in E.164 (`+15005550006`), sent as `From`.
    From(String),
    /// A Messaging Service (`MG` + 32 hex digits), sent as
    /// `MessagingServiceSid`; Twilio picks the number from its pool.
    MessagingService(String),
}

/// How to reach Twilio. `Debug` shows no token ([`Secret`] redacts it).
#[derive(Debug, Clone)]
pub struct TwilioConfig {
    /// `AC` + 32 hex digits.
    pub account_sid: String,
    pub auth_token: Secret<String>,
    pub from: Sender,
    /// `https://host[:port]` with no path; plain `http` only on loopback,
    /// for a fake Twilio in tests.
    pub base_url: String,
    /// Tries per message, the first included.
    pub max_attempts: u32,
    /// Per attempt.
    pub request_timeout: Duration,
    /// The wait before the first retry (jittered into its upper half);
    /// each further retry doubles it.
    pub retry_backoff: Duration,
}

impl TwilioConfig {
    /// Twilio's real API, the default attempts and timeout.
    pub fn new(account_sid: impl Into<String>, auth_token: Secret<String>, from: Sender) -> Self {
        Self {
            account_sid: account_sid.into(),
            auth_token,
            from,
            base_url: DEFAULT_BASE_URL.to_owned(),
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            retry_backoff: DEFAULT_RETRY_BACKOFF,
        }
    }
}

/// A [`TwilioConfig`] that cannot work. Never holds the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("the Twilio account SID must be `AC` followed by 32 hex digits")]
    AccountSid,
    #[error("the Twilio auth token is empty")]
    AuthToken,
    #[error("the Twilio sender number must be E.164: `+` and up to 15 digits")]
    FromNumber,
    #[error("the Twilio messaging service SID must be `MG` followed by 32 hex digits")]
    MessagingServiceSid,
    #[error(
        "the Twilio base URL {0:?} must be https://host[:port] with no path, query or \
         credentials (plain http only on loopback)"
    )]
    BaseUrl(String),
    #[error("Twilio max_attempts must be at least 1")]
    MaxAttempts,
    #[error("the Twilio request timeout must be more than zero")]
    RequestTimeout,
    #[error("cannot build the Twilio client")]
    Client,
}

/// Sends SMS through Twilio Programmable Messaging.
pub struct TwilioSender {
    twilio: Twilio,
    sender: Sender,
    scheme: Scheme,
    authority: Authority,
    client: Client<HttpsConnector<HttpConnector>, Body>,
    max_attempts: u32,
    request_timeout: Duration,
    retry_backoff: Duration,
}

impl fmt::Debug for TwilioSender {
    // `Twilio`'s own Debug would print the Basic credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TwilioSender")
            .field("sender", &self.sender)
            .field(
                "base_url",
                &format_args!("{}://{}", self.scheme, self.authority),
            )
            .field("max_attempts", &self.max_attempts)
            .field("request_timeout", &self.request_timeout)
            .field("retry_backoff", &self.retry_backoff)
            .finish_non_exhaustive()
    }
}

impl TwilioSender {
    /// Checks the configuration and builds the HTTP client.
    pub fn new(config: TwilioConfig) -> Result<Self, ConfigError> {
        if !is_sid(&config.account_sid, "AC") {
            return Err(ConfigError::AccountSid);
        }
        if config.auth_token.expose().is_empty() {
            return Err(ConfigError::AuthToken);
        }
        match &config.from {
            Sender::From(number) if !is_e164(number) => return Err(ConfigError::FromNumber),
            Sender::MessagingService(sid) if !is_sid(sid, "MG") => {
                return Err(ConfigError::MessagingServiceSid);
            }
            _ => {}
        }
        let (scheme, authority) = parse_base_url(&config.base_url)
            .ok_or_else(|| ConfigError::BaseUrl(config.base_url.clone()))?;
        if config.max_attempts == 0 {
            return Err(ConfigError::MaxAttempts);
        }
        if config.request_timeout.is_zero() {
            return Err(ConfigError::RequestTimeout);
        }
        let twilio = Twilio::new(config.account_sid, config.auth_token.expose())
            .map_err(|_| ConfigError::Client)?;
        Ok(Self {
            twilio,
            sender: config.from,
            scheme,
            authority,
            client: Client::builder().build(HttpsConnector::new()),
            max_attempts: config.max_attempts,
            request_timeout: config.request_timeout,
            retry_backoff: config.retry_backoff,
        })
    }

    /// twilio-async's request for this message, moved onto our base URL.
    fn request(&self, to: &str, body: &str) -> anyhow::Result<Request<Body>> {
        let from = match &self.sender {
            Sender::From(number) => number,
            Sender::MessagingService(sid) => sid,
        };
        let message = self.twilio.send_msg(from, to, body);
        // Exactly what `SendMsg::run` posts: To, From, Body.
        let mut form = message.msg.to_string();
        if let Sender::MessagingService(_) = self.sender {
            form = rename_field(&form, "From", "MessagingServiceSid");
        }
        let request = message.request(Method::POST, "Messages.json", Some(form))?;
        let (mut parts, body) = request.into_parts();
        let mut uri = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone());
        if let Some(path_and_query) = parts.uri.path_and_query() {
            uri = uri.path_and_query(path_and_query.clone());
        }
        parts.uri = uri.build()?;
        Ok(Request::from_parts(parts, body))
    }

    /// One request, cut off after `timeout`.
    async fn attempt(&self, to: &str, body: &str, timeout: Duration) -> Outcome {
        let request = match self.request(to, body) {
            Ok(request) => request,
            Err(error) => {
                tracing::error!(%error, "cannot build the Twilio request");
                return Outcome::Done(Err(SendError::Permanent {
                    reason: PermanentReason::Misconfigured,
                    provider_code: None,
                }));
            }
        };
        let exchange = async {
            let response = self.client.request(request).await?;
            let (parts, body) = response.into_parts();
            let body = hyper::body::to_bytes(body).await?;
            Ok::<_, hyper::Error>((parts.status, parts.headers, body))
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok((status, headers, body))) => classify(status, &headers, &body),
            Ok(Err(error)) => {
                tracing::warn!(%error, "Twilio request failed");
                Outcome::Retry { retry_after: None }
            }
            Err(_) => {
                tracing::warn!(
                    timeout_ms = timeout.as_millis() as u64,
                    "Twilio request timed out"
                );
                Outcome::Retry { retry_after: None }
            }
        }
    }
}

#[async_trait::async_trait]
impl SmsSender for TwilioSender {
    async fn send(
        &self,
        to: &str,
        body: &str,
        deadline: Option<Instant>,
    ) -> Result<Sent, SendError> {
        let to_ends_with = last_two(to);
        let mut attempt = 1;
        loop {
            let timeout = match deadline {
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        tracing::warn!(to_ends_with, attempt, "SMS deadline passed before sending");
                        return Err(SendError::Transient);
                    }
                    left.min(self.request_timeout)
                }
                None => self.request_timeout,
            };
            let retry_after = match self.attempt(to, body, timeout).await {
                Outcome::Done(result) => {
                    match &result {
                        Ok(sent) => tracing::debug!(
                            to_ends_with,
                            attempt,
                            provider_id = sent.provider_id,
                            "Twilio accepted the SMS"
                        ),
                        Err(error) => tracing::warn!(to_ends_with, attempt, %error, "SMS not sent"),
                    }
                    return result;
                }
                Outcome::Retry { retry_after } => retry_after,
            };
            if attempt >= self.max_attempts {
                tracing::warn!(
                    to_ends_with,
                    attempt,
                    "SMS not sent: Twilio unavailable, retries spent"
                );
                return Err(SendError::Transient);
            }
            if retry_after.is_some_and(|wait| wait > MAX_RETRY_AFTER) {
                tracing::warn!(
                    to_ends_with,
                    attempt,
                    "SMS not sent: Twilio asks to wait too long"
                );
                return Err(SendError::Transient);
            }
            let delay = backoff(
                self.retry_backoff,
                attempt,
                rand::thread_rng().gen_range(0.0..1.0),
            )
            .max(retry_after.unwrap_or_default());
            if deadline.is_some_and(|deadline| Instant::now() + delay + MIN_ATTEMPT_TIME > deadline)
            {
                tracing::warn!(
                    to_ends_with,
                    attempt,
                    "SMS not sent: no time left for a retry"
                );
                return Err(SendError::Transient);
            }
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }
}

/// What one attempt says about the next.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Done(Result<Sent, SendError>),
    /// Worth another try, after at least `retry_after` if Twilio said so.
    Retry {
        retry_after: Option<Duration>,
    },
}

/// The parts of Twilio's JSON we read: a message on success, an error
/// otherwise. Its `message` may quote the number, so it is never logged.
#[derive(Debug, serde::Deserialize)]
struct TwilioBody {
    sid: Option<String>,
    code: Option<u32>,
}

/// Turns Twilio's answer into a result or a retry.
fn classify(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Outcome {
    let parsed = serde_json::from_slice::<TwilioBody>(body).ok();
    if status.is_success() {
        return Outcome::Done(match parsed.and_then(|body| body.sid) {
            Some(provider_id) => Ok(Sent { provider_id }),
            // Twilio probably took the message: retrying could send the
            // code twice, so fail without a retry.
            None => {
                tracing::error!(%status, "Twilio accepted the message but sent no sid");
                Err(SendError::Transient)
            }
        });
    }
    if status == StatusCode::TOO_MANY_REQUESTS {
        return Outcome::Retry {
            retry_after: retry_after(headers),
        };
    }
    if status.is_server_error() {
        tracing::warn!(%status, "Twilio server error");
        return Outcome::Retry { retry_after: None };
    }
    let provider_code = parsed.and_then(|body| body.code);
    let reason = if status.is_client_error() {
        reason_for(status, provider_code)
    } else {
        // A redirect or other surprise: the base URL points somewhere else.
        PermanentReason::Misconfigured
    };
    Outcome::Done(Err(SendError::Permanent {
        reason,
        provider_code,
    }))
}

/// The reason a 4xx answer gives.
fn reason_for(status: StatusCode, provider_code: Option<u32>) -> PermanentReason {
    match provider_code {
        Some(code::INVALID_TO | code::TO_NOT_MOBILE) => PermanentReason::InvalidNumber,
        Some(code::UNSUBSCRIBED) => PermanentReason::Unsubscribed,
        Some(code::REGION_NOT_ENABLED | code::TO_NOT_REACHABLE) => PermanentReason::Unreachable,
        Some(
            code::AUTHENTICATE
            | code::NOT_FOUND
            | code::FROM_NOT_SMS_CAPABLE
            | code::FROM_NOT_TWILIO,
        ) => PermanentReason::Misconfigured,
        None if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN => {
            PermanentReason::Misconfigured
        }
        _ => PermanentReason::Rejected,
    }
}

/// `Retry-After` in seconds (RFC 9110 §10.2.3); the date form is ignored.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let seconds = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds))
}

/// The wait before retry number `retry` (1, 2, ...): `base` doubled per
/// retry, scaled into its upper half by `jitter` in `[0, 1)` so that senders
/// that failed together do not retry together.
fn backoff(base: Duration, retry: u32, jitter: f64) -> Duration {
    let full = base * 2u32.pow(retry.saturating_sub(1).min(BACKOFF_MAX_DOUBLINGS));
    full.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// Re-encodes a form with one field renamed, keeping the order.
fn rename_field(form: &str, from: &str, to: &str) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (key, value) in form_urlencoded::parse(form.as_bytes()) {
        out.append_pair(if key == from { to } else { &key }, &value);
    }
    out.finish()
}

/// `https://host[:port]` (or `http` on loopback) with nothing after it.
fn parse_base_url(url: &str) -> Option<(Scheme, Authority)> {
    let uri: Uri = url.parse().ok()?;
    let scheme = uri.scheme()?.clone();
    let authority = uri.authority()?.clone();
    let bare_path = matches!(uri.path_and_query().map(|pq| pq.as_str()), None | Some("/"));
    let secure = scheme == Scheme::HTTPS
        || (scheme == Scheme::HTTP
            && matches!(
                authority.host(),
                "127.0.0.1" | "[::1]" | "::1" | "localhost"
            ));
    (bare_path && secure && !authority.as_str().contains('@')).then_some((scheme, authority))
}

/// A Twilio SID: two letters and 32 hex digits.
fn is_sid(sid: &str, prefix: &str) -> bool {
    sid.strip_prefix(prefix)
        .is_some_and(|hex| hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// E.164 (ITU-T E.164 §6.1): `+`, a non-zero country code digit, at most
/// 15 digits in all.
fn is_e164(number: &str) -> bool {
    number.strip_prefix('+').is_some_and(|digits| {
        (2..=15).contains(&digits.len())
            && !digits.starts_with('0')
            && digits.bytes().all(|b| b.is_ascii_digit())
    })
}

/// The most of a phone number that may be logged.
fn last_two(number: &str) -> &str {
    let start = number
        .char_indices()
        .rev()
        .nth(1)
        .map_or(0, |(index, _)| index);
    &number[start..]
}

#[cfg(test)]
mod tests;
