//! What every request passes on its way in and out: one span (continuing
//! a `traceparent` the request brings, else starting a trace, which every
//! gRPC call it makes carries on), the CSRF check (a method other than
//! GET/HEAD must carry `X-Padlock-CSRF: 1`, else 403 and nothing is
//! called), admission (at most `--max-concurrent-requests` requests and
//! `--max-concurrent-uploads` uploads at once, else 503 `OVERLOADED` at
//! once; the probes are always let in) and the request timeout (504
//! `TIMEOUT`; uploads get the stream timeout), `Cache-Control: no-store`
//! and `nosniff` on every response, and one access-log line with the
//! method, the route template, the status and the latency. Never the URL,
//! a header, a cookie or a body, in the log or the span: that keeps
//! tokens, codes, passwords and phone numbers out.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use padlock_runtime::server::{self, Limits};
use tokio::sync::Semaphore;
use tracing::Instrument;
use tracing::field::Empty;

use crate::Gateway;
use crate::error::{ApiError, from_status};

pub const CSRF_HEADER: HeaderName = HeaderName::from_static("x-padlock-csrf");

/// The route template of a package upload (`POST`): the one request that
/// holds a whole package in memory and may take minutes.
pub const UPLOAD_ROUTE: &str = "/api/v1/apps/{app_id}/packages";

/// Who gets in, and for how long.
#[derive(Debug, Clone)]
pub struct Admission {
    requests: Arc<Semaphore>,
    uploads: Arc<Semaphore>,
    request_timeout: Duration,
    upload_timeout: Duration,
}

impl Admission {
    /// `limits`' concurrency and timeouts (the stream timeout for uploads),
    /// and at most `max_uploads` uploads at once.
    pub fn new(limits: &Limits, max_uploads: usize) -> Self {
        Self {
            requests: Arc::new(Semaphore::new(limits.max_concurrent_requests)),
            uploads: Arc::new(Semaphore::new(max_uploads)),
            request_timeout: limits.request_timeout,
            upload_timeout: limits.stream_timeout,
        }
    }

    /// Runs the request if there is room, within its timeout.
    async fn run(&self, method: &Method, route: &str, request: Request, next: Next) -> Response {
        let upload = method == Method::POST && route == UPLOAD_ROUTE;
        let _request_permit = if is_probe(route) {
            None
        } else {
            let Ok(permit) = self.requests.try_acquire() else {
                return from_status(&server::overloaded()).into_response();
            };
            Some(permit)
        };
        let _upload_permit = if upload {
            let Ok(permit) = self.uploads.try_acquire() else {
                return from_status(&server::overloaded()).into_response();
            };
            Some(permit)
        } else {
            None
        };
        let timeout = if upload {
            self.upload_timeout
        } else {
            self.request_timeout
        };
        match tokio::time::timeout(timeout, next.run(request)).await {
            Ok(response) => response,
            Err(_) => {
                tracing::warn!("request ran past the request timeout; answering 504");
                from_status(&server::timed_out()).into_response()
            }
        }
    }
}

/// Liveness and readiness must answer however busy the gateway is.
fn is_probe(route: &str) -> bool {
    matches!(route, "/healthz" | "/readyz")
}

pub async fn edge(State(gw): State<Gateway>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "(no route)".to_owned(), |p| p.as_str().to_owned());
    let span = tracing::info_span!(
        "http",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = Empty,
        trace_id = Empty,
        span_id = Empty,
    );
    padlock_runtime::otel::continue_trace(&span, request.headers());
    handle(&gw.admission, request, next, started, method, route)
        .instrument(span)
        .await
}

async fn handle(
    admission: &Admission,
    request: Request,
    next: Next,
    started: Instant,
    method: Method,
    route: String,
) -> Response {
    let mut response = if csrf_ok(&request) {
        admission.run(&method, &route, request, next).await
    } else {
        ApiError::csrf_header_missing().into_response()
    };
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    let span = tracing::Span::current();
    span.record(
        "http.response.status_code",
        i64::from(response.status().as_u16()),
    );
    if response.status().is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    tracing::info!(
        method = %method,
        route = %route,
        status = response.status().as_u16(),
        latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        "http request"
    );
    response
}

fn csrf_ok(request: &Request) -> bool {
    let method = request.method();
    method == Method::GET
        || method == Method::HEAD
        || request
            .headers()
            .get(&CSRF_HEADER)
            .is_some_and(|v| v.as_bytes() == b"1")
}
