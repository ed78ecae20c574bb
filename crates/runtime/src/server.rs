//! The gRPC server bootstrap every service shares: `grpc.health.v1.Health`,
//! server reflection v1 and v1alpha (grpcurl 1.8 speaks only v1alpha), one
//! span per RPC that continues the caller's trace and names the method and
//! nothing from the request, the RPC latency histogram
//! ([`crate::otel::GrpcServerLayer`]), the resource [`Limits`] (message
//! sizes are set per service, where the messages are known), the
//! "listening on" line, and graceful shutdown on SIGTERM/SIGINT.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use padlock_proto::Reason;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Status};
use tonic_health::server::HealthReporter;
use tower::{Layer, Service};

/// Default of [`Limits::max_concurrent_requests`]: four times the 64
/// concurrent requests the targets are measured at (docs/design.md "Targets"),
/// so a healthy burst is never refused, while the memory a full house can
/// hold stays bounded (a request holds a few KiB; an upload chunk at most
/// the largest message a service accepts).
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 256;
/// Default of [`Limits::max_streams_per_connection`]: more than any one
/// client (the gateway, the load tool) keeps in flight on a connection.
pub const DEFAULT_MAX_STREAMS_PER_CONNECTION: u32 = 128;
/// Default of [`Limits::request_timeout`]: every padlock RPC takes
/// milliseconds, and a database wait gives up after 2 s
/// ([`crate::db::ACQUIRE_TIMEOUT`]); anything longer is stuck.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Default of [`Limits::stream_timeout`]: a 512 MiB package at under
/// 1 MB/s; the gateway gives an upload as long.
pub const DEFAULT_STREAM_TIMEOUT: Duration = Duration::from_secs(600);

/// The largest header block a client may send (HTTP/2
/// `SETTINGS_MAX_HEADER_LIST_SIZE`). A request carries a bearer token
/// (about 1 KiB), `traceparent` and a few gRPC headers; hyper refuses a
/// larger block before any handler runs.
pub const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;
/// The largest request message of any RPC without bulk data; set per
/// service with `max_decoding_message_size`. Every such request is a few
/// names, ids and a code.
pub const MAX_REQUEST_MESSAGE_BYTES: usize = 64 * 1024;
/// The largest response message a service sends: tonic clients refuse
/// larger ones by default anyway (`max_decoding_message_size`, 4 MiB).
pub const MAX_RESPONSE_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
/// How often the server pings an idle connection, and how long it waits
/// for the answer before closing it: a client that vanished without a FIN
/// (a pod killed, a network partition) stops holding its streams.
pub const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
pub const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// TCP keepalive on accepted connections, for peers that never speak
/// HTTP/2 far enough to be pinged.
pub const TCP_KEEPALIVE: Duration = Duration::from_secs(60);
/// How much sooner than a client's own deadline (`grpc-timeout`) the
/// server answers DEADLINE_EXCEEDED: tonic would answer CANCELLED at the
/// deadline itself, which a caller cannot tell from other cancellations.
const CLIENT_DEADLINE_MARGIN: Duration = Duration::from_millis(1);

/// What a server takes on at once and how long a request may run
/// (docs/design.md "Limits"). Under overload a server refuses at once with
/// UNAVAILABLE `OVERLOADED` rather than queueing, so memory stays flat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Requests handled at once by the process, across all connections.
    /// One more is refused at once; health checks are exempt from every
    /// limit here, so a busy replica is not restarted by its probes.
    pub max_concurrent_requests: usize,
    /// HTTP/2 streams one connection may have open at once; a client
    /// waits for a free stream beyond it. The per-connection bound.
    pub max_streams_per_connection: u32,
    /// How long a request may run, its answer included; then it is
    /// answered DEADLINE_EXCEEDED and its handler dropped. A shorter
    /// `grpc-timeout` from the client wins.
    pub request_timeout: Duration,
    /// The same for the methods in `streaming_methods`.
    pub stream_timeout: Duration,
    /// Paths (`/package.Service/Method`) of the RPCs that move bulk data
    /// (package uploads, backup downloads) and get `stream_timeout`.
    pub streaming_methods: Vec<&'static str>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_concurrent_requests: DEFAULT_MAX_CONCURRENT_REQUESTS,
            max_streams_per_connection: DEFAULT_MAX_STREAMS_PER_CONNECTION,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            stream_timeout: DEFAULT_STREAM_TIMEOUT,
            streaming_methods: Vec::new(),
        }
    }
}

impl Limits {
    /// How long `request` may run: the timeout for its method, or the
    /// client's own deadline if that is sooner.
    pub fn timeout_for<B>(&self, request: &http::Request<B>) -> Duration {
        let limit = if self.streaming_methods.contains(&request.uri().path()) {
            self.stream_timeout
        } else {
            self.request_timeout
        };
        match client_deadline(request.headers()) {
            Some(deadline) => limit.min(deadline.saturating_sub(CLIENT_DEADLINE_MARGIN)),
            None => limit,
        }
    }
}

/// The client's `grpc-timeout` (gRPC over HTTP/2: at most eight digits and
/// a unit), if present and well-formed.
fn client_deadline(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// UNAVAILABLE `OVERLOADED`: the server is at its concurrency limit and
/// did nothing with the request; retrying shortly (elsewhere) is safe.
pub fn overloaded() -> Status {
    crate::status::retry_later(
        Code::Unavailable,
        Reason::Overloaded,
        "the server is at its limit of concurrent requests; retry shortly",
        Duration::from_secs(1),
    )
}

/// DEADLINE_EXCEEDED `TIMEOUT`: the request ran past the server's timeout
/// or its caller's deadline and was abandoned.
pub fn timed_out() -> Status {
    crate::status::refusal(
        Code::DeadlineExceeded,
        Reason::Timeout,
        "the request ran out of time and was abandoned",
        [],
    )
}

/// Whether `path` is a health check: exempt from the limits, so a busy
/// replica still answers its probes and a `Watch` stream may stay open.
fn is_health_check(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/")
}

/// Health and reflection routes for a service whose contracts are in
/// `descriptor_set`, plus the reporter to flip serving status.
pub fn base_routes(
    descriptor_set: &'static [u8],
) -> Result<(HealthReporter, Routes), tonic_reflection::server::Error> {
    let (reporter, health) = tonic_health::server::health_reporter();
    let v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(descriptor_set)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(descriptor_set)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let routes = Routes::new(health).add_service(v1).add_service(v1alpha);
    Ok((reporter, routes))
}

/// Binds `addr`; port 0 picks a free port.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Prints the one line scripts and tests wait for.
#[allow(clippy::print_stdout)]
pub fn announce(service: &str, addr: SocketAddr) {
    use std::io::Write;
    println!("{service}: listening on {addr}");
    let _ = std::io::stdout().flush();
}

/// Serves `routes` on `listener` within `limits` until `shutdown`
/// resolves, then drains in-flight requests.
pub async fn serve(
    listener: TcpListener,
    routes: Routes,
    limits: &Limits,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let incoming = TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(TCP_KEEPALIVE));
    tonic::transport::Server::builder()
        .max_concurrent_streams(limits.max_streams_per_connection)
        .http2_max_header_list_size(MAX_HEADER_LIST_BYTES)
        .http2_keepalive_interval(Some(HTTP2_KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(HTTP2_KEEPALIVE_TIMEOUT))
        .layer(crate::otel::GrpcServerLayer::new())
        .layer(LimitLayer::new(limits))
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

// ---------------------------------------------------------------- limit

/// Applies [`Limits::max_concurrent_requests`] (refusing with
/// [`overloaded`] when full, never queueing) and the request and stream
/// timeouts (answering [`timed_out`]). A request holds its permit and its
/// deadline until its response body has ended, so a streamed answer counts
/// as long as it streams.
#[derive(Debug, Clone)]
pub struct LimitLayer {
    permits: Arc<Semaphore>,
    limits: Arc<Limits>,
}

impl LimitLayer {
    pub fn new(limits: &Limits) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(limits.max_concurrent_requests)),
            limits: Arc::new(limits.clone()),
        }
    }
}

impl<S> Layer<S> for LimitLayer {
    type Service = Limited<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Limited {
            inner,
            layer: self.clone(),
        }
    }
}

/// See [`LimitLayer`].
#[derive(Debug, Clone)]
pub struct Limited<S> {
    inner: S,
    layer: LimitLayer,
}

impl<S, B> Service<http::Request<B>> for Limited<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = LimitedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if is_health_check(request.uri().path()) {
            return LimitedFuture {
                inner: Some(self.inner.call(request)),
                deadline: None,
                permit: None,
            };
        }
        let Ok(permit) = self.layer.permits.clone().try_acquire_owned() else {
            return LimitedFuture {
                inner: None,
                deadline: None,
                permit: None,
            };
        };
        let deadline = Box::pin(tokio::time::sleep(self.layer.limits.timeout_for(&request)));
        LimitedFuture {
            inner: Some(self.inner.call(request)),
            deadline: Some(deadline),
            permit: Some(permit),
        }
    }
}

pin_project_lite::pin_project! {
    /// See [`LimitLayer`]. Without an inner future the request was refused.
    pub struct LimitedFuture<F> {
        #[pin]
        inner: Option<F>,
        deadline: Option<Pin<Box<Sleep>>>,
        permit: Option<OwnedSemaphorePermit>,
    }
}

impl<F> std::fmt::Debug for LimitedFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LimitedFuture").finish_non_exhaustive()
    }
}

impl<F, E> Future for LimitedFuture<F>
where
    F: Future<Output = Result<http::Response<tonic::body::Body>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(inner) = this.inner.as_pin_mut() else {
            return Poll::Ready(Ok(overloaded().into_http()));
        };
        if let Poll::Ready(result) = inner.poll(cx) {
            let deadline = this.deadline.take();
            let permit = this.permit.take();
            return Poll::Ready(result.map(|response| {
                response.map(|body| {
                    tonic::body::Body::new(LimitedBody {
                        inner: body,
                        deadline,
                        _permit: permit,
                        timed_out: false,
                    })
                })
            }));
        }
        if let Some(deadline) = this.deadline.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            tracing::warn!("request ran past the server's timeout; answering DEADLINE_EXCEEDED");
            return Poll::Ready(Ok(timed_out().into_http()));
        }
        Poll::Pending
    }
}

/// A response body that keeps its request's permit until it ends, and ends
/// with [`timed_out`] trailers if it is still streaming at the deadline.
struct LimitedBody {
    inner: tonic::body::Body,
    deadline: Option<Pin<Box<Sleep>>>,
    _permit: Option<OwnedSemaphorePermit>,
    timed_out: bool,
}

impl http_body::Body for LimitedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        if self.timed_out {
            return Poll::Ready(None);
        }
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if let Some(deadline) = self.deadline.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            tracing::warn!("response still streaming at the server's timeout; ending it");
            self.timed_out = true;
            let mut trailers = http::HeaderMap::new();
            // A status built here always fits in headers.
            let _ = timed_out().add_header(&mut trailers);
            return Poll::Ready(Some(Ok(http_body::Frame::trailers(trailers))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.timed_out || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed when this is
/// called, not when first polled, so call it before announcing readiness:
/// a signal that arrives right after the "listening on" line is not lost.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
                    _ = int.recv() => tracing::info!("SIGINT received, shutting down"),
                }
            }
            _ => {
                tracing::warn!("cannot install signal handlers; stop with SIGKILL");
                std::future::pending::<()>().await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(path: &str, grpc_timeout: Option<&'static str>) -> http::Request<()> {
        let mut request = http::Request::builder().uri(path).body(()).unwrap();
        if let Some(value) = grpc_timeout {
            request
                .headers_mut()
                .insert("grpc-timeout", http::HeaderValue::from_static(value));
        }
        request
    }

    #[test]
    fn streaming_methods_get_the_stream_timeout_and_the_rest_the_request_timeout() {
        let limits = Limits {
            streaming_methods: vec!["/p.S/Upload"],
            ..Limits::default()
        };
        assert_eq!(
            limits.timeout_for(&request("/p.S/Upload", None)),
            DEFAULT_STREAM_TIMEOUT
        );
        assert_eq!(
            limits.timeout_for(&request("/p.S/Get", None)),
            DEFAULT_REQUEST_TIMEOUT
        );
    }

    #[test]
    fn a_sooner_client_deadline_wins_just_before_it_runs_out() {
        let limits = Limits::default();
        let ms = Duration::from_millis;
        assert_eq!(
            limits.timeout_for(&request("/p.S/Get", Some("300m"))),
            ms(299)
        );
        assert_eq!(
            limits.timeout_for(&request("/p.S/Get", Some("2S"))),
            ms(1999)
        );
        assert_eq!(
            limits.timeout_for(&request("/p.S/Get", Some("1M"))),
            DEFAULT_REQUEST_TIMEOUT
        );
        assert_eq!(
            limits.timeout_for(&request("/p.S/Get", Some("1H"))),
            DEFAULT_REQUEST_TIMEOUT
        );
        assert_eq!(
            limits.timeout_for(&request("/p.S/Get", Some("500u"))),
            Duration::ZERO
        );
        for malformed in ["", "m", "123456789m", "5x", "+5S", "five"] {
            let r = request("/p.S/Get", Some(malformed));
            assert_eq!(
                limits.timeout_for(&r),
                DEFAULT_REQUEST_TIMEOUT,
                "{malformed:?}"
            );
        }
    }
}
