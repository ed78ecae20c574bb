//! OpenTelemetry plumbing every service shares: W3C `traceparent` in and
//! out of gRPC metadata and HTTP headers, one server span and one latency
//! measurement per RPC ([`GrpcServerLayer`]), one client span per outgoing
//! call ([`traced`]), and the trace and span ids recorded on those spans so
//! JSON logs carry them. Only `traceparent` crosses a process boundary:
//! no `tracestate`, no baggage, nothing from a request's body or metadata.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Histogram, Meter};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tonic::Code;
use tower::{Layer, Service};
use tracing::Span;
use tracing::field::Empty;
use tracing::instrument::{Instrument, Instrumented};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The W3C Trace Context header (https://www.w3.org/TR/trace-context/#traceparent-header).
pub const TRACEPARENT: &str = "traceparent";

/// The instrumentation scope of padlock's own instruments.
pub const METER: &str = "padlock";

/// The meter padlock's instruments come from: the process's meter provider,
/// which exports over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set and
/// does nothing otherwise (see [`crate::telemetry::init`]).
pub fn meter() -> Meter {
    opentelemetry::global::meter(METER)
}

/// Reads only `traceparent`: a `tracestate` or baggage from a caller is
/// neither trusted nor passed on.
struct TraceparentOnly<'a>(&'a http::HeaderMap);

impl Extractor for TraceparentOnly<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        if key.eq_ignore_ascii_case(TRACEPARENT) {
            self.0.get(TRACEPARENT)?.to_str().ok()
        } else {
            None
        }
    }

    fn keys(&self) -> Vec<&str> {
        if self.0.contains_key(TRACEPARENT) {
            vec![TRACEPARENT]
        } else {
            Vec::new()
        }
    }
}

/// Writes only `traceparent`.
struct TraceparentInjector<'a>(&'a mut http::HeaderMap);

impl Injector for TraceparentInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if key.eq_ignore_ascii_case(TRACEPARENT)
            && let Ok(value) = http::HeaderValue::from_str(&value)
        {
            self.0.insert(TRACEPARENT, value);
        }
    }
}

/// Makes `span` a child of the caller's span named by the `traceparent`
/// in `headers` (if there is a valid one), then records the ids on it.
pub fn continue_trace(span: &Span, headers: &http::HeaderMap) {
    let parent = TraceContextPropagator::new().extract(&TraceparentOnly(headers));
    if parent.span().span_context().is_remote() {
        // Fails only when no OpenTelemetry layer is installed (unit tests).
        let _ = span.set_parent(parent);
    }
    record_ids(span);
}

/// Sets `traceparent` in `headers` to `span`'s context.
pub fn inject(span: &Span, headers: &mut http::HeaderMap) {
    TraceContextPropagator::new()
        .inject_context(&span.context(), &mut TraceparentInjector(headers));
}

/// Records `trace_id` and `span_id` on `span` (declared `Empty` when it was
/// created), so every log line inside it names the trace.
pub fn record_ids(span: &Span) {
    let cx = span.context();
    let otel_span = cx.span();
    let ids = otel_span.span_context();
    if ids.is_valid() {
        span.record("trace_id", tracing::field::display(ids.trace_id()));
        span.record("span_id", tracing::field::display(ids.span_id()));
    }
}

/// The trace and span ids of the current span as `traceparent` would carry
/// them, if there is one (for tests and diagnostics).
pub fn current_ids() -> Option<(String, String)> {
    let cx = Span::current().context();
    let otel_span = cx.span();
    let ids = otel_span.span_context();
    ids.is_valid()
        .then(|| (ids.trace_id().to_string(), ids.span_id().to_string()))
}

// ---------------------------------------------------------------- client

/// A gRPC channel whose calls carry the caller's trace.
pub type TracedChannel = Traced<tonic::transport::Channel>;

/// Wraps `channel` so every call gets a client span, child of the current
/// span, whose context goes out as `traceparent`.
pub fn traced(channel: tonic::transport::Channel) -> TracedChannel {
    Traced { inner: channel }
}

/// See [`traced`].
#[derive(Debug, Clone)]
pub struct Traced<S> {
    inner: S,
}

impl<S, B> Service<http::Request<B>> for Traced<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Instrumented<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let method = request.uri().path().trim_start_matches('/');
        let span = tracing::info_span!(
            "grpc client",
            otel.name = method,
            otel.kind = "client",
            rpc.system = "grpc",
            rpc.method = method,
            trace_id = Empty,
            span_id = Empty,
        );
        record_ids(&span);
        inject(&span, request.headers_mut());
        let future = span.in_scope(|| self.inner.call(request));
        future.instrument(span)
    }
}

// ---------------------------------------------------------------- server

/// Bucket boundaries for RPC latency in seconds, 0.5 ms to 10 s: padlock's
/// RPCs take from about 0.1 ms (health, CheckAccess) to seconds (uploads).
const LATENCY_BOUNDARIES_S: [f64; 14] = [
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// One server span per RPC (a child of the caller's `traceparent`, named
/// after the method and holding nothing from the request) and the
/// `rpc.server.call.duration` histogram by method and status, measured until
/// the status is sent.
#[derive(Clone)]
pub struct GrpcServerLayer {
    duration: Histogram<f64>,
}

impl fmt::Debug for GrpcServerLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcServerLayer").finish_non_exhaustive()
    }
}

impl Default for GrpcServerLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl GrpcServerLayer {
    pub fn new() -> Self {
        let duration = meter()
            .f64_histogram("rpc.server.call.duration")
            .with_description("Time from an RPC's arrival until its status is sent")
            .with_unit("s")
            .with_boundaries(LATENCY_BOUNDARIES_S.to_vec())
            .build();
        Self { duration }
    }
}

impl<S> Layer<S> for GrpcServerLayer {
    type Service = GrpcServer<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcServer {
            inner,
            duration: self.duration.clone(),
        }
    }
}

/// See [`GrpcServerLayer`].
#[derive(Clone)]
pub struct GrpcServer<S> {
    inner: S,
    duration: Histogram<f64>,
}

impl<S: fmt::Debug> fmt::Debug for GrpcServer<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcServer")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, B> Service<http::Request<B>> for GrpcServer<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = GrpcServerFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        let method = path.trim_start_matches('/').to_owned();
        let span = tracing::info_span!(
            "grpc",
            otel.name = %method,
            otel.kind = "server",
            otel.status_code = Empty,
            rpc.system = "grpc",
            rpc.method = %method,
            rpc.grpc.status_code = Empty,
            method = %path,
            trace_id = Empty,
            span_id = Empty,
        );
        continue_trace(&span, request.headers());
        let inner = span.in_scope(|| self.inner.call(request));
        GrpcServerFuture {
            inner,
            span,
            call: Some(Call {
                started: Instant::now(),
                method,
                duration: self.duration.clone(),
            }),
        }
    }
}

/// What is measured when an RPC's status is known.
struct Call {
    started: Instant,
    /// `package.Service/Method`.
    method: String,
    duration: Histogram<f64>,
}

impl Call {
    fn finish(self, span: &Span, code: Code) {
        // An unknown method is the caller's choice of path: keep it out of
        // the metric's attributes (semantic conventions' `_OTHER`).
        let method = if code == Code::Unimplemented {
            "_OTHER".to_owned()
        } else {
            self.method
        };
        self.duration.record(
            self.started.elapsed().as_secs_f64(),
            &[
                KeyValue::new("rpc.system", "grpc"),
                KeyValue::new("rpc.method", method),
                KeyValue::new("rpc.grpc.status_code", code as i64),
            ],
        );
        span.record("rpc.grpc.status_code", code as i64);
        if is_server_error(code) {
            span.record("otel.status_code", "ERROR");
        }
    }
}

/// The codes that mean the server failed rather than refused (OpenTelemetry
/// semantic conventions for gRPC server spans).
fn is_server_error(code: Code) -> bool {
    matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    )
}

/// The `grpc-status` in `headers`, if any.
fn status_in(headers: &http::HeaderMap) -> Option<Code> {
    let value = headers.get("grpc-status")?.to_str().ok()?;
    value.parse::<i32>().ok().map(Code::from)
}

pin_project_lite::pin_project! {
    /// See [`GrpcServerLayer`].
    pub struct GrpcServerFuture<F> {
        #[pin]
        inner: F,
        span: Span,
        call: Option<Call>,
    }
}

impl<F> fmt::Debug for GrpcServerFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcServerFuture").finish_non_exhaustive()
    }
}

impl<F, E> std::future::Future for GrpcServerFuture<F>
where
    F: std::future::Future<Output = Result<http::Response<tonic::body::Body>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let polled = {
            let _entered = this.span.enter();
            this.inner.poll(cx)
        };
        let Poll::Ready(result) = polled else {
            return Poll::Pending;
        };
        let Some(call) = this.call.take() else {
            return Poll::Ready(result);
        };
        let response = match result {
            Ok(response) => response,
            Err(e) => {
                call.finish(this.span, Code::Unknown);
                return Poll::Ready(Err(e));
            }
        };
        // A trailers-only response (most refusals) carries the status in its
        // headers; otherwise it comes in the trailers at the end of the body.
        if let Some(code) = status_in(response.headers()) {
            call.finish(this.span, code);
            return Poll::Ready(Ok(response));
        }
        let span = this.span.clone();
        Poll::Ready(Ok(response.map(|body| {
            tonic::body::Body::new(MeteredBody {
                inner: body,
                span,
                call: Some(call),
            })
        })))
    }
}

/// A response body that finishes the measurement (and keeps the span open)
/// until its trailers are sent.
struct MeteredBody {
    inner: tonic::body::Body,
    span: Span,
    call: Option<Call>,
}

impl MeteredBody {
    fn finish(&mut self, code: Code) {
        if let Some(call) = self.call.take() {
            call.finish(&self.span, code);
        }
    }
}

impl http_body::Body for MeteredBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, tonic::Status>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    let code = status_in(trailers).unwrap_or(Code::Unknown);
                    self.finish(code);
                }
            }
            Poll::Ready(Some(Err(status))) => self.finish(status.code()),
            Poll::Ready(None) => self.finish(Code::Unknown),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for MeteredBody {
    fn drop(&mut self) {
        // Dropped before its trailers went out: the client went away.
        self.finish(Code::Cancelled);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_traceparent_is_read_and_written() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            TRACEPARENT,
            http::HeaderValue::from_static(
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
        );
        headers.insert("tracestate", http::HeaderValue::from_static("evil=1"));
        headers.insert("baggage", http::HeaderValue::from_static("user=alice"));
        let extractor = TraceparentOnly(&headers);
        assert_eq!(extractor.keys(), vec![TRACEPARENT]);
        assert!(extractor.get("tracestate").is_none());
        assert!(extractor.get("baggage").is_none());
        let cx = TraceContextPropagator::new().extract(&extractor);
        assert_eq!(
            cx.span().span_context().trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert!(cx.span().span_context().trace_state().header().is_empty());

        let mut out = http::HeaderMap::new();
        TraceContextPropagator::new().inject_context(&cx, &mut TraceparentInjector(&mut out));
        assert_eq!(
            out.get(TRACEPARENT).and_then(|v| v.to_str().ok()),
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        );
        assert_eq!(out.len(), 1, "nothing but traceparent goes out");
    }

    #[test]
    fn a_malformed_traceparent_starts_a_new_trace() {
        let mut headers = http::HeaderMap::new();
        headers.insert(TRACEPARENT, http::HeaderValue::from_static("00-zz-yy-01"));
        let cx = TraceContextPropagator::new().extract(&TraceparentOnly(&headers));
        assert!(!cx.span().span_context().is_valid());
    }

    #[test]
    fn refusals_are_not_server_errors() {
        for code in [
            Code::Ok,
            Code::InvalidArgument,
            Code::NotFound,
            Code::PermissionDenied,
            Code::Unauthenticated,
            Code::ResourceExhausted,
            Code::FailedPrecondition,
        ] {
            assert!(!is_server_error(code), "{code:?}");
        }
        for code in [Code::Internal, Code::Unavailable, Code::Unknown] {
            assert!(is_server_error(code), "{code:?}");
        }
    }
}
