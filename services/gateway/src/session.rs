//! The browser session: the two cookies (`padlock_session`, the opaque
//! session token; `padlock_access`, the current access JWT), both
//! `HttpOnly; Secure; SameSite=Strict; Path=/`, and the rule that keeps the
//! access token fresh: when auth or deploy answers UNAUTHENTICATED
//! `TOKEN_INVALID`, refresh once with the session cookie, set the new access
//! cookie and retry the call once (docs/http.md "Sessions, cookies, CSRF").
//! Tokens live in [`Secret`]s here, so no `Debug` ever prints one.

use std::convert::Infallible;
use std::future::Future;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use padlock_proto::Reason;
use padlock_proto::auth::v1::RefreshRequest;
use padlock_runtime::Secret;
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::Gateway;
use crate::backend;
use crate::error::{from_status, session_invalid_status};

pub const SESSION_COOKIE: &str = "padlock_session";
pub const ACCESS_COOKIE: &str = "padlock_access";
const ATTRIBUTES: &str = "Path=/; HttpOnly; Secure; SameSite=Strict";
/// Longer cookie values are no token of ours and count as absent: the
/// verifiers refuse access tokens over 8 KiB (`padlock_token::
/// MAX_TOKEN_BYTES`), session tokens are 43 characters, and passing a
/// larger value on would only have auth or deploy refuse the header block.
pub const MAX_TOKEN_COOKIE_BYTES: usize = 8 * 1024;

/// The session and access tokens the browser sent.
#[derive(Debug, Clone, Default)]
pub struct Cookies {
    pub session: Option<Secret<String>>,
    pub access: Option<Secret<String>>,
}

impl Cookies {
    /// Reads every `Cookie` header; the first value of a name wins, empty
    /// and oversized values count as absent.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let mut cookies = Cookies::default();
        let pairs = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='));
        for (name, value) in pairs {
            let value = value.trim().trim_matches('"');
            if value.is_empty() || value.len() > MAX_TOKEN_COOKIE_BYTES {
                continue;
            }
            let slot = match name.trim() {
                SESSION_COOKIE => &mut cookies.session,
                ACCESS_COOKIE => &mut cookies.access,
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(Secret::new(value.to_owned()));
            }
        }
        cookies
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Cookies {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Cookies::from_headers(&parts.headers))
    }
}

/// The `Set-Cookie` headers a response will carry; a later setting of the
/// same cookie replaces an earlier one.
#[derive(Debug, Default)]
pub struct SetCookies(Vec<(&'static str, HeaderValue)>);

impl SetCookies {
    /// The session cookie, kept for `max_age_secs`.
    pub fn session(&mut self, token: &str, max_age_secs: u64) {
        self.set(
            SESSION_COOKIE,
            format!("{SESSION_COOKIE}={token}; Max-Age={max_age_secs}; {ATTRIBUTES}"),
        );
    }

    /// The access cookie: a browser-session cookie (no `Max-Age`).
    pub fn access(&mut self, token: &str) {
        self.set(
            ACCESS_COOKIE,
            format!("{ACCESS_COOKIE}={token}; {ATTRIBUTES}"),
        );
    }

    /// Expires both cookies.
    pub fn clear(&mut self) {
        for name in [SESSION_COOKIE, ACCESS_COOKIE] {
            self.set(name, format!("{name}=; Max-Age=0; {ATTRIBUTES}"));
        }
    }

    fn set(&mut self, name: &'static str, cookie: String) {
        self.0.retain(|(n, _)| *n != name);
        match HeaderValue::from_str(&cookie) {
            Ok(mut value) => {
                value.set_sensitive(true);
                self.0.push((name, value));
            }
            // A token with characters a header cannot carry is no token of
            // ours; leave the cookie out rather than fail the response.
            Err(_) => tracing::warn!(cookie = name, "a token is not a valid cookie value"),
        }
    }

    /// Adds the headers to `response`.
    pub fn apply(self, response: &mut Response) {
        for (_, value) in self.0 {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
}

/// The result of a call made on the browser's behalf and the cookies to
/// set whatever it was.
#[derive(Debug)]
pub struct Authed<T> {
    pub result: Result<T, Status>,
    pub cookies: SetCookies,
}

impl<T> Authed<T> {
    /// The response: `ok` renders a success (and may set cookies), a
    /// failure goes through the one mapping; the cookies go on either.
    pub fn respond<R: IntoResponse>(self, ok: impl FnOnce(T, &mut SetCookies) -> R) -> Response {
        let mut cookies = self.cookies;
        let mut response = match self.result {
            Ok(value) => ok(value, &mut cookies).into_response(),
            Err(status) => from_status(&status).into_response(),
        };
        cookies.apply(&mut response);
        response
    }
}

/// Runs `call` with the browser's access token, applying the refresh-once
/// rule. Without any session, answers SESSION_INVALID without calling.
pub async fn with_session<T, F, Fut>(gateway: &Gateway, cookies: &Cookies, call: F) -> Authed<T>
where
    F: Fn(Secret<String>) -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    let mut set = SetCookies::default();
    let (token, refreshed) = match &cookies.access {
        Some(token) => (token.clone(), false),
        None => match refresh(gateway, cookies, &mut set).await {
            Ok(token) => (token, true),
            Err(status) => {
                return Authed {
                    result: Err(status),
                    cookies: set,
                };
            }
        },
    };
    let mut result = call(token).await;
    if !refreshed && is_token_invalid(&result) {
        result = match refresh(gateway, cookies, &mut set).await {
            Ok(fresh) => call(fresh).await,
            Err(status) => Err(status),
        };
    }
    if reason_of(&result) == Some(Reason::SessionInvalid) {
        // Auth has ended the session: the browser should forget it too.
        set.clear();
    }
    Authed {
        result,
        cookies: set,
    }
}

/// A new access token for the session cookie, set as the access cookie;
/// SESSION_INVALID when there is no session cookie or auth refuses it.
async fn refresh(
    gateway: &Gateway,
    cookies: &Cookies,
    set: &mut SetCookies,
) -> Result<Secret<String>, Status> {
    let Some(session) = &cookies.session else {
        if cookies.access.is_some() {
            set.clear();
        }
        return Err(session_invalid_status());
    };
    let request = backend::anonymous(RefreshRequest {
        session_token: session.expose().clone(),
    });
    match gateway.backends.sessions().refresh(request).await {
        Ok(response) => {
            let token = response.into_inner().access_token;
            set.access(&token);
            Ok(Secret::new(token))
        }
        // Ended, expired, unknown or not even shaped like a session token.
        Err(status) if matches!(status.code(), Code::Unauthenticated | Code::InvalidArgument) => {
            set.clear();
            Err(session_invalid_status())
        }
        Err(status) => Err(status),
    }
}

fn is_token_invalid<T>(result: &Result<T, Status>) -> bool {
    matches!(result, Err(s) if s.code() == Code::Unauthenticated)
        && reason_of(result) == Some(Reason::TokenInvalid)
}

/// The padlock reason of a failed call, if it carries one we know.
fn reason_of<T>(result: &Result<T, Status>) -> Option<Reason> {
    let status = result.as_ref().err()?;
    let details = status.get_error_details();
    let info = details.error_info()?;
    if info.domain != padlock_runtime::status::DOMAIN {
        return None;
    }
    Reason::from_str_name(&info.reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_read_by_name() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("theme=dark; padlock_session=s3ss; padlock_access=a.b.c"),
        );
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("padlock_access=other"),
        );
        let cookies = Cookies::from_headers(&headers);
        assert_eq!(
            cookies.session.as_ref().map(|s| s.expose().as_str()),
            Some("s3ss")
        );
        assert_eq!(
            cookies.access.as_ref().map(|s| s.expose().as_str()),
            Some("a.b.c")
        );
        assert_eq!(format!("{cookies:?}").matches("[redacted]").count(), 2);
        assert!(Cookies::from_headers(&HeaderMap::new()).session.is_none());
    }

    #[test]
    fn oversized_cookie_values_count_as_absent() {
        let fits = "a".repeat(MAX_TOKEN_COOKIE_BYTES);
        let over = "a".repeat(MAX_TOKEN_COOKIE_BYTES + 1);
        let mut headers = HeaderMap::new();
        let cookie = format!("padlock_access={over}; padlock_session={fits}");
        headers.insert(header::COOKIE, HeaderValue::from_str(&cookie).unwrap());
        let cookies = Cookies::from_headers(&headers);
        assert!(cookies.access.is_none());
        assert_eq!(cookies.session.map(|s| s.expose().len()), Some(fits.len()));
    }

    #[test]
    fn set_cookies_carry_the_attributes_and_replace_each_other() {
        let mut set = SetCookies::default();
        set.session("s3ss", 43_200);
        set.access("old");
        set.access("new");
        let mut response = Response::new(axum::body::Body::empty());
        set.apply(&mut response);
        let values: Vec<_> = response
            .headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            values,
            [
                "padlock_session=s3ss; Max-Age=43200; Path=/; HttpOnly; Secure; SameSite=Strict",
                "padlock_access=new; Path=/; HttpOnly; Secure; SameSite=Strict",
            ]
        );

        let mut set = SetCookies::default();
        set.access("new");
        set.clear();
        let mut response = Response::new(axum::body::Body::empty());
        set.apply(&mut response);
        let values: Vec<_> = response
            .headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .collect();
        assert_eq!(
            values,
            [
                "padlock_session=; Max-Age=0; Path=/; HttpOnly; Secure; SameSite=Strict",
                "padlock_access=; Max-Age=0; Path=/; HttpOnly; Secure; SameSite=Strict",
            ]
        );
    }
}
