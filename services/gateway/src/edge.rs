//! What every request passes on its way in and out: one span (continuing
//! a `traceparent` the request brings, else starting a trace, which every
//! gRPC call it makes carries on), the CSRF check (a method other than
//! GET/HEAD must carry `X-Padlock-CSRF: 1`, else 403 and nothing is
//! called), `Cache-Control: no-store` and `nosniff` on every response, and
//! one access-log line with the method, the route template, the status and
//! the latency. Never the URL, a header, a cookie or a body, in the log or
//! the span: that keeps tokens, codes, passwords and phone numbers out.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;
use tracing::field::Empty;

use crate::error::ApiError;

pub const CSRF_HEADER: HeaderName = HeaderName::from_static("x-padlock-csrf");

pub async fn edge(request: Request, next: Next) -> Response {
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
    handle(request, next, started, method, route)
        .instrument(span)
        .await
}

async fn handle(
    request: Request,
    next: Next,
    started: Instant,
    method: Method,
    route: String,
) -> Response {
    let mut response = if csrf_ok(&request) {
        next.run(request).await
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
