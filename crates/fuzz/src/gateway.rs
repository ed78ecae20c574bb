//! The gateway's HTTP input under fuzzing: the real router (CSRF check,
//! cookies, path segments, query strings and JSON bodies read by
//! `padlock_gateway::input`) with its backends on a closed loopback port,
//! so a request that passes the gateway's own checks ends in its "backend
//! unavailable" mapping.
//!
//! An input is `route:u8 flags:u8` then three messages in the
//! [`crate::input::split_messages`] layout: a path segment (used for every
//! `{param}` of the route), a query string and the body. `flags` bit 0 adds
//! the CSRF header, bit 1 a session cookie, bit 2 an access cookie, bit 3
//! `content-type: application/json`.
//!
//! The oracle: nothing panics, no response is a 500, every response keeps
//! the gateway's security headers, and every JSON response parses.

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::{Extension, Router};
use http_body_util::BodyExt as _;
use padlock_gateway::{Gateway, Settings};
use padlock_runtime::server::Limits;
use tower::ServiceExt as _;

use crate::input::split_messages;

/// The routes of `services/gateway/src/routes/mod.rs`, indexed by an
/// input's route byte; `{}` is where the path segment goes.
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/api/v1/sessions"),
    ("DELETE", "/api/v1/sessions/current"),
    ("GET", "/api/v1/me"),
    ("POST", "/api/v1/me/factor/totp"),
    ("POST", "/api/v1/me/factor/sms"),
    ("POST", "/api/v1/me/factor/sms/code"),
    ("POST", "/api/v1/me/factor/confirmation"),
    ("POST", "/api/v1/me/factor/verification"),
    ("GET", "/api/v1/apps"),
    ("GET", "/api/v1/apps/{}"),
    ("POST", "/api/v1/apps/{}/members"),
    ("DELETE", "/api/v1/apps/{}/members/{}"),
    ("GET", "/api/v1/apps/{}/environments"),
    ("GET", "/api/v1/apps/{}/nodes/{}"),
    ("GET", "/api/v1/apps/{}/packages"),
    ("POST", "/api/v1/apps/{}/packages"),
    ("GET", "/api/v1/apps/{}/deployments"),
    ("POST", "/api/v1/packages/{}/deployments"),
    ("POST", "/api/v1/packages/{}/transports"),
    ("GET", "/api/v1/apps/{}/permissions"),
    ("POST", "/api/v1/apps/{}/permissions/grants"),
    ("POST", "/api/v1/apps/{}/permissions/revocations"),
    ("GET", "/api/v1/policy/actions"),
    ("GET", "/api/v1/apps/{}/access"),
    ("GET", "/.well-known/jwks.json"),
    ("GET", "/healthz"),
    ("PUT", "/api/v1/{}"),
];

pub const FLAG_CSRF: u8 = 1;
pub const FLAG_SESSION_COOKIE: u8 = 2;
pub const FLAG_ACCESS_COOKIE: u8 = 4;
pub const FLAG_JSON: u8 = 8;

/// The harness: a runtime and the router.
#[derive(Debug)]
pub struct GatewayTarget {
    runtime: tokio::runtime::Runtime,
    router: Router,
}

impl GatewayTarget {
    /// # Panics
    ///
    /// If loopback cannot be bound: the harness is broken.
    pub fn new() -> Self {
        let runtime = crate::runtime();
        // A port that was free a moment ago: connecting is refused at once,
        // as with a backend that is down. (A listener that accepts and
        // closes would make tonic report CANCELLED, which the gateway maps
        // to 500: see the fuzzing notes.)
        let url = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
            format!("http://{}", listener.local_addr().expect("its address"))
        };
        let settings = Settings {
            session_ttl_secs: 43_200,
            max_upload_bytes: 64 * 1024,
            max_concurrent_uploads: 1,
            backend_timeout: std::time::Duration::from_secs(15),
        };
        let gateway = runtime.block_on(async {
            Gateway::with_settings(settings, &url, &url, &Limits::default()).expect("lazy channels")
        });
        // The server gives every request its connection's peer address
        // (sign-in throttling needs it); so does the harness.
        let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 40000));
        let router = padlock_gateway::router(gateway).layer(Extension(ConnectInfo(peer)));
        GatewayTarget { runtime, router }
    }

    /// Runs one input and returns the response status; panics when the
    /// oracle is broken.
    pub fn run(&self, data: &[u8]) -> Option<http::StatusCode> {
        let [route, flags, rest @ ..] = data else {
            return None;
        };
        let (method, template) = ROUTES[usize::from(*route) % ROUTES.len()];
        let parts = split_messages(rest);
        let part = |i: usize| parts.get(i).copied().unwrap_or_default();
        let path = template.replace("{}", &encode(part(0), b""));
        let query = encode(part(1), b"=&");
        let uri = if query.is_empty() {
            path
        } else {
            format!("{path}?{query}")
        };
        let mut request = http::Request::builder().method(method).uri(&uri);
        if flags & FLAG_CSRF != 0 {
            request = request.header("x-padlock-csrf", "1");
        }
        let mut cookies = Vec::new();
        if flags & FLAG_SESSION_COOKIE != 0 {
            cookies.push("padlock_session=c2Vzc2lvbi10b2tlbi1mb3ItdGhlLWZ1enplcg");
        }
        if flags & FLAG_ACCESS_COOKIE != 0 {
            cookies.push("padlock_access=e30.e30.AAAA");
        }
        if !cookies.is_empty() {
            request = request.header(http::header::COOKIE, cookies.join("; "));
        }
        if flags & FLAG_JSON != 0 {
            request = request.header(http::header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Body::from(part(2).to_vec()))
            .expect("a request from an encoded URI");

        let (status, headers, body) = self.runtime.block_on(async {
            let response = self
                .router
                .clone()
                .oneshot(request)
                .await
                .unwrap_or_else(|never| match never {});
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            (parts.status, parts.headers, body)
        });
        assert_ne!(
            status,
            http::StatusCode::INTERNAL_SERVER_ERROR,
            "{method} {uri}: {}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(
            headers
                .get(http::header::CACHE_CONTROL)
                .map(|v| v.as_bytes()),
            Some(b"no-store".as_slice()),
            "{method} {uri}: no Cache-Control: no-store"
        );
        let json = headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
        if json {
            assert!(
                serde_json::from_slice::<serde_json::Value>(&body).is_ok(),
                "{method} {uri}: a JSON response that does not parse"
            );
        }
        Some(status)
    }
}

impl Default for GatewayTarget {
    fn default() -> Self {
        Self::new()
    }
}

/// `bytes` percent-encoded except unreserved characters and `keep`.
fn encode(bytes: &[u8], keep: &[u8]) -> String {
    let mut out = String::new();
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || keep.contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::join_messages;

    #[test]
    fn encode_keeps_only_what_a_uri_may_hold() {
        assert_eq!(encode(b"a b/%", b""), "a%20b%2F%25");
        assert_eq!(encode(b"v=1&x=\xff", b"=&"), "v=1&x=%FF");
    }

    #[test]
    fn a_sign_in_reaches_the_unavailable_backend_and_bad_json_is_a_400() {
        let target = GatewayTarget::new();
        let body = br#"{"username":"tina","password":"correct horse"}"#;
        let mut input = vec![0, FLAG_CSRF | FLAG_JSON];
        input.extend(join_messages(&[b"", b"", body]));
        assert_eq!(
            target.run(&input),
            Some(http::StatusCode::SERVICE_UNAVAILABLE)
        );
        let mut input = vec![0, FLAG_CSRF];
        input.extend(join_messages(&[b"", b"", b"{"]));
        assert_eq!(target.run(&input), Some(http::StatusCode::BAD_REQUEST));
        input[1] = 0;
        assert_eq!(target.run(&input), Some(http::StatusCode::FORBIDDEN));
    }
}
