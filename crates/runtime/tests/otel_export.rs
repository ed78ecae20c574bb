//! OpenTelemetry export from the real binaries (DESIGN.md "Observability"):
//! padlock-auth, padlock-deploy and padlock-gateway export over OTLP/gRPC to
//! a receiver in this test (opentelemetry-proto's tonic server) while an
//! operator, stepped up with TOTP, creates an app over gRPC and a person
//! signs in through the gateway, is refused a transport to production
//! without a second factor, enrolls TOTP and transports. The test shows one
//! trace across gateway -> deploy -> auth (the JWKS refresh a key rotation
//! causes) and gateway -> auth, the metrics DESIGN.md names, JSON log lines
//! naming the trace, and no password, token, TOTP secret, code or phone
//! number in any exported span or metric. Without
//! `OTEL_EXPORTER_OTLP_ENDPOINT` nothing is exported.
//!
//! The binaries come from `$PADLOCK_BIN_DIR`, else `$CARGO_TARGET_DIR/debug`,
//! else the workspace's `target/debug`: run `cargo build --bins` first
//! (tests/run-all.sh does). Without them the tests skip with a message,
//! except under `CI=true`, where that is a failure.

#![allow(clippy::unwrap_used)]

use padlock_proto::Reason;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{Metric, metric, number_data_point};
use opentelemetry_proto::tonic::trace::v1::Span;
use padlock_proto::auth::v1::key_service_client::KeyServiceClient;
use padlock_proto::auth::v1::session_service_client::SessionServiceClient;
use padlock_proto::auth::v1::two_factor_service_client::TwoFactorServiceClient;
use padlock_proto::auth::v1::{
    ConfirmEnrollmentRequest, GetJwksRequest, SignInRequest, StartTotpEnrollmentRequest,
};
use padlock_proto::deploy::v1::CreateAppRequest;
use padlock_proto::deploy::v1::app_service_client::AppServiceClient;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio_stream::wrappers::TcpListenerStream;

const AUTH: &str = "padlock-auth";
const DEPLOY: &str = "padlock-deploy";
const GATEWAY: &str = "padlock-gateway";
/// How long a service may take to print its "listening on" line, and a
/// span to arrive after it ended.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(20);
/// Spans go out 100 ms after they end; metrics only every 10 minutes, so
/// the metrics this test sees arrive with the flush at shutdown.
const SPAN_DELAY_MS: &str = "100";
const METRIC_INTERVAL_MS: &str = "600000";
/// RFC 6238 §4: 30-second steps; six digits (DESIGN.md "Second factors").
const STEP_SECS: u64 = 30;
const PHONE: &str = "+31612345678";

// ---------------------------------------------------------------- binaries

fn in_ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok("true" | "1"))
}

fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PADLOCK_BIN_DIR") {
        return dir.into();
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        let target = PathBuf::from(target);
        let target = if target.is_absolute() {
            target
        } else {
            workspace().join(target)
        };
        return target.join("debug");
    }
    workspace().join("target").join("debug")
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The directory holding the three binaries, or `None` (outside CI) after
/// saying why the test does not run.
fn binaries() -> Option<PathBuf> {
    let dir = bin_dir();
    let missing: Vec<_> = [AUTH, DEPLOY, GATEWAY]
        .into_iter()
        .filter(|name| !dir.join(name).is_file())
        .collect();
    if missing.is_empty() {
        return Some(dir);
    }
    let why = format!(
        "{missing:?} not found in {}: run `cargo build --bins` first or set PADLOCK_BIN_DIR",
        dir.display()
    );
    assert!(!in_ci(), "{why}");
    eprintln!("SKIPPED: {why}");
    None
}

// ---------------------------------------------------------------- receiver

/// What one service exported, by its resource's `service.name`.
#[derive(Debug, Clone)]
struct Exported<T> {
    service: String,
    item: T,
}

#[derive(Debug, Clone, Default)]
struct Received {
    spans: Arc<Mutex<Vec<Exported<Span>>>>,
    metrics: Arc<Mutex<Vec<Exported<Metric>>>>,
}

impl Received {
    fn spans(&self) -> Vec<Exported<Span>> {
        self.spans.lock().unwrap().clone()
    }

    fn metrics(&self) -> Vec<Exported<Metric>> {
        self.metrics.lock().unwrap().clone()
    }
}

fn service_name(resource: Option<&opentelemetry_proto::tonic::resource::v1::Resource>) -> String {
    resource
        .and_then(|r| str_attr(&r.attributes, "service.name"))
        .unwrap_or("(none)")
        .to_owned()
}

#[tonic::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource_spans in request.into_inner().resource_spans {
            let service = service_name(resource_spans.resource.as_ref());
            for scope in resource_spans.scope_spans {
                spans.extend(scope.spans.into_iter().map(|item| Exported {
                    service: service.clone(),
                    item,
                }));
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let mut metrics = self.metrics.lock().unwrap();
        for resource_metrics in request.into_inner().resource_metrics {
            let service = service_name(resource_metrics.resource.as_ref());
            for scope in resource_metrics.scope_metrics {
                metrics.extend(scope.metrics.into_iter().map(|item| Exported {
                    service: service.clone(),
                    item,
                }));
            }
        }
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// An OTLP/gRPC receiver on 127.0.0.1:0, serving until the test ends.
async fn receiver() -> (String, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let received = Received::default();
    let server = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(received.clone()))
        .add_service(MetricsServiceServer::new(received.clone()));
    tokio::spawn(server.serve_with_incoming(TcpListenerStream::new(listener)));
    (endpoint, received)
}

// ---------------------------------------------------------------- services

/// A running service: its address from the "listening on" line, its JSON
/// log on disk.
#[derive(Debug)]
struct Service {
    name: &'static str,
    child: Child,
    addr: String,
    log: PathBuf,
    data_dir: PathBuf,
}

/// The environment a service starts with: none of the caller's PADLOCK_*,
/// OTEL_*, DATABASE_URL or RUST_LOG, then `env`.
fn clean_env(command: &mut Command, env: &[(&str, &str)]) {
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if key.starts_with("OTEL_")
            || key.starts_with("PADLOCK_")
            || key == "DATABASE_URL"
            || key == "RUST_LOG"
        {
            command.env_remove(key);
        }
    }
    command.env("RUST_LOG", "info");
    command.envs(env.iter().copied());
}

async fn start(
    bins: &Path,
    name: &'static str,
    dir: &Path,
    args: &[String],
    env: &[(&str, &str)],
) -> Service {
    let data_dir = dir.join(name);
    let log = dir.join(format!("{name}.log"));
    let mut command = Command::new(bins.join(name));
    command
        .args([
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--data-dir",
        ])
        .arg(&data_dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true);
    clean_env(&mut command, env);
    let mut child = command.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = tokio::time::timeout(READY_TIMEOUT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some((_, addr)) = line.split_once("listening on ") {
                return Some(addr.trim().to_owned());
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .unwrap_or_else(|| {
        panic!(
            "{name} did not say where it listens; its log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    });
    // Keep reading stdout so the service never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Service {
        name,
        child,
        addr,
        log,
        data_dir,
    }
}

impl Service {
    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id().unwrap().to_string();
        let status = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} {pid} failed");
    }

    /// SIGTERM, and the exit code must be 0: the shutdown flush is inside.
    async fn stop(mut self) -> String {
        self.signal("-TERM");
        let status = tokio::time::timeout(READY_TIMEOUT, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} did not exit after SIGTERM", self.name))
            .unwrap();
        let log = std::fs::read_to_string(&self.log).unwrap();
        assert!(
            status.success(),
            "{} exited {status}; log:\n{log}",
            self.name
        );
        log
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }
}

/// `padlock-auth users add` against `auth`'s data, without telemetry.
async fn add_user(bins: &Path, auth_data: &Path, username: &str, password: &str, roles: &[&str]) {
    let mut command = Command::new(bins.join(AUTH));
    command
        .arg("--data-dir")
        .arg(auth_data)
        .args(["users", "add", "--username", username]);
    for role in roles {
        command.args(["--role", role]);
    }
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    clean_env(&mut command, &[]);
    let mut child = command.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(format!("{password}\n").as_bytes())
        .await
        .unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert!(out.status.success(), "users add {username} failed");
}

/// `message` with `access_token` as its bearer token.
fn with_bearer<T>(message: T, access_token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {access_token}").parse().unwrap(),
    );
    request
}

/// Rotates auth's signing key (`keys rotate`, then SIGHUP) and waits until
/// its JWKS serves both keys.
async fn rotate_keys(bins: &Path, auth: &Service) {
    let mut command = Command::new(bins.join(AUTH));
    command
        .arg("--data-dir")
        .arg(&auth.data_dir)
        .args(["keys", "rotate"])
        .stdout(Stdio::null());
    clean_env(&mut command, &[]);
    assert!(
        command.status().await.unwrap().success(),
        "keys rotate failed"
    );
    auth.signal("-HUP");
    let mut keys = KeyServiceClient::connect(auth.url()).await.unwrap();
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let jwks = keys.get_jwks(GetJwksRequest {}).await.unwrap().into_inner();
        if jwks.keys.len() == 2 {
            return;
        }
        assert!(Instant::now() < deadline, "auth did not load the new key");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------- a browser

/// What a browser tab keeps: cookies. Like the UI it sends
/// `X-Padlock-CSRF: 1` with every write.
#[derive(Debug)]
struct Browser {
    addr: String,
    jar: BTreeMap<String, String>,
    /// Every cookie value the gateway ever set: tokens, for the leak check.
    seen: Arc<Mutex<BTreeSet<String>>>,
}

#[derive(Debug)]
struct Reply {
    status: u16,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn expect(self, status: u16, what: &str) -> Value {
        assert_eq!(
            self.status,
            status,
            "{what}: {}",
            String::from_utf8_lossy(&self.body)
        );
        self.json()
    }
}

impl Browser {
    fn new(gateway: &Service, seen: &Arc<Mutex<BTreeSet<String>>>) -> Self {
        Self {
            addr: gateway.addr.clone(),
            jar: BTreeMap::new(),
            seen: seen.clone(),
        }
    }

    async fn send(&mut self, method: &str, path: &str, body: Option<(&str, Vec<u8>)>) -> Reply {
        let stream = tokio::net::TcpStream::connect(&self.addr).await.unwrap();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        let mut request = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, &self.addr)
            .header(http::header::ACCEPT, "application/json");
        if method != "GET" {
            request = request.header("x-padlock-csrf", "1");
        }
        if !self.jar.is_empty() {
            let cookies: Vec<_> = self.jar.iter().map(|(k, v)| format!("{k}={v}")).collect();
            request = request.header(http::header::COOKIE, cookies.join("; "));
        }
        let content = match body {
            Some((content_type, bytes)) => {
                request = request.header(http::header::CONTENT_TYPE, content_type);
                Bytes::from(bytes)
            }
            None => Bytes::new(),
        };
        let response = sender
            .send_request(request.body(Full::new(content)).unwrap())
            .await
            .unwrap();
        for set in response.headers().get_all(http::header::SET_COOKIE) {
            let set = set.to_str().unwrap();
            let first = set.split(';').next().unwrap_or_default();
            let (name, value) = first.split_once('=').unwrap_or((first, ""));
            if value.is_empty() || set.to_ascii_lowercase().contains("max-age=0") {
                self.jar.remove(name.trim());
            } else {
                self.seen.lock().unwrap().insert(value.trim().to_owned());
                self.jar
                    .insert(name.trim().to_owned(), value.trim().to_owned());
            }
        }
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Reply { status, body }
    }

    async fn post(&mut self, path: &str, body: Value) -> Reply {
        let bytes = serde_json::to_vec(&body).unwrap();
        self.send("POST", path, Some(("application/json", bytes)))
            .await
    }
}

// ---------------------------------------------------------------- TOTP

fn base32_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut bits, mut value, mut out) = (0u32, 0u32, Vec::new());
    for c in text.trim_end_matches('=').bytes() {
        let digit = ALPHABET
            .iter()
            .position(|&a| a == c.to_ascii_uppercase())
            .unwrap();
        value = (value << 5) | u32::try_from(digit).unwrap();
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((value >> bits) & 0xff).unwrap());
        }
    }
    out
}

/// RFC 6238 TOTP with HMAC-SHA1, six digits, at Unix time `at`.
fn totp(secret_b32: &str, at: u64) -> String {
    use hmac::{KeyInit, Mac};
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(&base32_decode(secret_b32)).unwrap();
    mac.update(&(at / STEP_SECS).to_be_bytes());
    let hash = mac.finalize().into_bytes();
    // RFC 4226 §5.3: dynamic truncation.
    let offset = usize::from(hash[hash.len() - 1] & 0x0f);
    let binary = u32::from_be_bytes([
        hash[offset] & 0x7f,
        hash[offset + 1],
        hash[offset + 2],
        hash[offset + 3],
    ]);
    format!("{:06}", binary % 1_000_000)
}

fn unix_now() -> u64 {
    std::time::UNIX_EPOCH.elapsed().unwrap().as_secs()
}

/// Six digits that are no code of `secret_b32` within two steps of now.
fn a_wrong_code(secret_b32: &str) -> String {
    let now = unix_now();
    let near: Vec<_> = (0..5)
        .map(|i| totp(secret_b32, now + i * STEP_SECS - 2 * STEP_SECS))
        .collect();
    ["000000", "123456", "654321", "999999"]
        .into_iter()
        .find(|c| !near.iter().any(|n| n == c))
        .unwrap()
        .to_owned()
}

#[test]
fn totp_matches_rfc_6238_appendix_b() {
    // The SHA1 seed "12345678901234567890" in base32; the test vectors'
    // last six of eight digits.
    let seed = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
    assert_eq!(totp(seed, 59), "287082");
    assert_eq!(totp(seed, 1_111_111_109), "081804");
    assert_eq!(totp(seed, 2_000_000_000), "279037");
}

// ---------------------------------------------------------------- reading OTLP

fn attr<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn str_attr<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    match attr(attributes, key)? {
        any_value::Value::StringValue(s) => Some(s),
        _ => None,
    }
}

fn int_attr(attributes: &[KeyValue], key: &str) -> Option<i64> {
    match attr(attributes, key)? {
        any_value::Value::IntValue(i) => Some(*i),
        any_value::Value::StringValue(s) => s.parse().ok(),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every string in `value`, however nested.
fn strings_in(value: Option<&AnyValue>, out: &mut Vec<String>) {
    let Some(value) = value.and_then(|v| v.value.as_ref()) else {
        return;
    };
    match value {
        any_value::Value::StringValue(s) => out.push(s.clone()),
        any_value::Value::ArrayValue(array) => {
            for v in &array.values {
                strings_in(Some(v), out);
            }
        }
        any_value::Value::KvlistValue(list) => {
            for kv in &list.values {
                out.push(kv.key.clone());
                strings_in(kv.value.as_ref(), out);
            }
        }
        any_value::Value::BytesValue(b) => out.push(String::from_utf8_lossy(b).into_owned()),
        _ => {}
    }
}

fn strings_of(attributes: &[KeyValue], out: &mut Vec<String>) {
    for kv in attributes {
        out.push(kv.key.clone());
        strings_in(kv.value.as_ref(), out);
    }
}

/// Every string a span carries: name, attributes, events, links, status.
fn span_strings(span: &Span) -> Vec<String> {
    let mut out = vec![span.name.clone()];
    strings_of(&span.attributes, &mut out);
    for event in &span.events {
        out.push(event.name.clone());
        strings_of(&event.attributes, &mut out);
    }
    for link in &span.links {
        strings_of(&link.attributes, &mut out);
    }
    if let Some(status) = &span.status {
        out.push(status.message.clone());
    }
    out
}

/// Every string a metric carries: name, description, point attributes.
fn metric_strings(metric: &Metric) -> Vec<String> {
    let mut out = vec![metric.name.clone(), metric.description.clone()];
    match &metric.data {
        Some(metric::Data::Sum(sum)) => {
            for point in &sum.data_points {
                strings_of(&point.attributes, &mut out);
            }
        }
        Some(metric::Data::Histogram(histogram)) => {
            for point in &histogram.data_points {
                strings_of(&point.attributes, &mut out);
            }
        }
        Some(metric::Data::Gauge(gauge)) => {
            for point in &gauge.data_points {
                strings_of(&point.attributes, &mut out);
            }
        }
        _ => {}
    }
    out
}

/// Whether `text` holds `digits` as a whole number (not inside a longer run
/// of digits, where a six-digit code would turn up by chance).
fn holds_number(text: &str, digits: &str) -> bool {
    text.match_indices(digits).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + digits.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_digit()) && !after.is_some_and(|c| c.is_ascii_digit())
    })
}

/// Whether `text` holds something shaped like a JWS compact token: `eyJ`
/// (base64url of `{"`) opening a base64url run, a dot, another run and a
/// dot. A bare `eyJ` is not enough: a key id (a base64url SHA-256 thumbprint,
/// which the JWKS log line names) holds one by chance in about 1 of 6,400
/// keys.
fn holds_jwt(text: &str) -> bool {
    let base64url = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    text.match_indices("eyJ").any(|(at, _)| {
        let mut parts = text[at..].split('.');
        let header = parts.next().unwrap_or_default();
        let payload = parts.next();
        header.chars().all(base64url)
            && payload.is_some_and(|p| !p.is_empty() && p.chars().all(base64url))
            && parts.next().is_some()
    })
}

#[test]
fn a_jwt_is_found_and_a_key_id_is_not() {
    assert!(holds_jwt(
        "token=eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2ln end"
    ));
    assert!(holds_jwt("eyJhbGciOiJub25lIn0.e30."));
    assert!(!holds_jwt("kids=[\"3eyJq0fHnW-Jx_abc\"] JWKS fetched"));
    assert!(!holds_jwt("eyJ alone. and more."));
}

/// The largest value of `name` from `service` whose point has every
/// attribute in `want` (cumulative sums: the last export holds the total);
/// for a histogram, its count.
fn metric_value(
    metrics: &[Exported<Metric>],
    service: &str,
    name: &str,
    want: &[(&str, &str)],
) -> Option<i64> {
    let matches = |attributes: &[KeyValue]| {
        want.iter().all(|(k, v)| match attr(attributes, k) {
            Some(any_value::Value::StringValue(s)) => s == v,
            Some(any_value::Value::IntValue(i)) => i.to_string() == *v,
            _ => false,
        })
    };
    let mut best = None;
    for exported in metrics
        .iter()
        .filter(|m| m.service == service && m.item.name == name)
    {
        let values: Vec<i64> = match &exported.item.data {
            Some(metric::Data::Sum(sum)) => sum
                .data_points
                .iter()
                .filter(|p| matches(&p.attributes))
                .filter_map(|p| match p.value {
                    Some(number_data_point::Value::AsInt(i)) => Some(i),
                    _ => None,
                })
                .collect(),
            Some(metric::Data::Histogram(histogram)) => histogram
                .data_points
                .iter()
                .filter(|p| matches(&p.attributes))
                .map(|p| i64::try_from(p.count).unwrap())
                .collect(),
            _ => Vec::new(),
        };
        best = values.into_iter().chain(best).max();
    }
    best
}

async fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + ARRIVAL_TIMEOUT;
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The one span of `service` in `trace` named `name`, whose parent is
/// `parent` (a span id), if given.
fn one_span<'a>(
    spans: &'a [Exported<Span>],
    trace: &[u8],
    service: &str,
    name: &str,
    parent: Option<&[u8]>,
) -> &'a Span {
    let found: Vec<_> = spans
        .iter()
        .filter(|s| s.service == service && s.item.trace_id == trace && s.item.name == name)
        .filter(|s| parent.is_none_or(|p| s.item.parent_span_id == p))
        .map(|s| &s.item)
        .collect();
    let names: Vec<_> = spans
        .iter()
        .filter(|s| s.item.trace_id == trace)
        .map(|s| format!("{}: {}", s.service, s.item.name))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "want one {service} span {name:?} (parent {:?}) in trace {}; the trace has {names:#?}",
        parent.map(hex),
        hex(trace)
    );
    found[0]
}

/// The (trace id, span id) of every JSON log line of `log` whose message
/// is `message`.
fn logged_ids(log: &str, message: &str) -> Vec<(String, String)> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["message"] == message)
        .filter_map(|line| {
            let span = &line["span"];
            Some((
                span["trace_id"].as_str()?.to_owned(),
                span["span_id"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

// ---------------------------------------------------------------- the tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_spans_gateway_deploy_and_auth_for_a_transport_to_production() {
    let Some(bins) = binaries() else { return };
    let (endpoint, received) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let otel = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", SPAN_DELAY_MS),
        ("OTEL_METRIC_EXPORT_INTERVAL", METRIC_INTERVAL_MS),
    ];
    let mut secrets: Vec<String> = vec![PHONE.to_owned(), PHONE[1..].to_owned()];
    let password = |who: &str| format!("{who}-correct-horse-battery-staple");
    for who in ["olga", "tina", "sara"] {
        secrets.push(password(who));
    }

    let auth = start(
        &bins,
        AUTH,
        dir.path(),
        &["--sms-dev-log".to_owned()],
        &otel,
    )
    .await;
    add_user(
        &bins,
        &auth.data_dir,
        "olga",
        &password("olga"),
        &["operator"],
    )
    .await;
    add_user(&bins, &auth.data_dir, "tina", &password("tina"), &[]).await;
    add_user(&bins, &auth.data_dir, "sara", &password("sara"), &[]).await;
    let deploy = start(
        &bins,
        DEPLOY,
        dir.path(),
        &["--auth-url".to_owned(), auth.url()],
        &otel,
    )
    .await;
    let gateway = start(
        &bins,
        GATEWAY,
        dir.path(),
        &[
            "--auth-url".to_owned(),
            auth.url(),
            "--deploy-url".to_owned(),
            deploy.url(),
        ],
        &otel,
    )
    .await;
    for service in [&auth, &deploy, &gateway] {
        assert!(
            service
                .log()
                .contains("exporting traces and metrics over OTLP"),
            "{} does not say it exports",
            service.name
        );
    }

    // olga, an operator, creates the app over gRPC (the gateway has no
    // route for it), which needs her second factor: she enrolls TOTP and
    // uses the stepped-up token. deploy fetches auth's keys for the first
    // time.
    let signed_in = SessionServiceClient::connect(auth.url())
        .await
        .unwrap()
        .sign_in(SignInRequest {
            username: "olga".into(),
            password: password("olga"),
        })
        .await
        .unwrap()
        .into_inner();
    secrets.push(signed_in.access_token.clone());
    secrets.push(signed_in.session_token.clone());
    let mut two_factor = TwoFactorServiceClient::connect(auth.url()).await.unwrap();
    let started = two_factor
        .start_totp_enrollment(with_bearer(
            StartTotpEnrollmentRequest {},
            &signed_in.access_token,
        ))
        .await
        .unwrap()
        .into_inner();
    secrets.push(started.secret.clone());
    secrets.push(started.otpauth_uri.clone());
    let olga_code = totp(&started.secret, unix_now());
    let stepped_up = two_factor
        .confirm_enrollment(with_bearer(
            ConfirmEnrollmentRequest {
                enrollment_id: started.enrollment_id,
                code: olga_code.clone(),
            },
            &signed_in.access_token,
        ))
        .await
        .unwrap()
        .into_inner();
    secrets.push(stepped_up.access_token.clone());
    let create = with_bearer(
        CreateAppRequest {
            name: "Shop".into(),
            technical_contact: "tina".into(),
        },
        &stepped_up.access_token,
    );
    let app = AppServiceClient::connect(deploy.url())
        .await
        .unwrap()
        .create_app(create)
        .await
        .unwrap()
        .into_inner();

    // tina, the Technical Contact, takes a package to acceptance through
    // the gateway; production is refused without a second factor.
    let cookies = Arc::new(Mutex::new(BTreeSet::new()));
    let mut tina = Browser::new(&gateway, &cookies);
    let sign_in = json!({"username": "tina", "password": password("tina")});
    tina.post("/api/v1/sessions", sign_in.clone())
        .await
        .expect(201, "tina signs in");
    let package = tina
        .send(
            "POST",
            &format!(
                "/api/v1/apps/{}/packages?version=1.0.0&file_name=shop-1.0.0.mda",
                app.id
            ),
            Some(("application/octet-stream", vec![7u8; 4096])),
        )
        .await
        .expect(201, "tina uploads a package");
    let package_id = package["id"].as_str().unwrap().to_owned();
    tina.post(
        &format!("/api/v1/packages/{package_id}/deployments"),
        json!({"environment": "test"}),
    )
    .await
    .expect(201, "deploy to test");
    let transports = format!("/api/v1/packages/{package_id}/transports");
    tina.post(
        &transports,
        json!({"from_environment": "test", "to_environment": "acceptance"}),
    )
    .await
    .expect(201, "transport to acceptance");
    let to_production = json!({"from_environment": "acceptance", "to_environment": "production"});
    let refused = tina
        .post(&transports, to_production.clone())
        .await
        .expect(401, "production without a second factor");
    assert_eq!(
        refused["error"],
        Reason::MfaRequired.as_str_name(),
        "{refused}"
    );

    // A key rotation: tina's next token names a key deploy has not seen,
    // so her transport makes deploy refresh the JWKS from auth, inside the
    // transport's trace.
    rotate_keys(&bins, &auth).await;
    let mut tina = Browser::new(&gateway, &cookies);
    tina.post("/api/v1/sessions", sign_in)
        .await
        .expect(201, "tina signs in after the rotation");
    let started = tina
        .post("/api/v1/me/factor/totp", json!({}))
        .await
        .expect(200, "tina starts TOTP enrollment");
    let totp_secret = started["secret"].as_str().unwrap().to_owned();
    secrets.push(totp_secret.clone());
    secrets.push(started["otpauth_uri"].as_str().unwrap().to_owned());
    let code = totp(&totp_secret, unix_now());
    let mut codes = vec![olga_code, code.clone()];
    tina.post(
        "/api/v1/me/factor/confirmation",
        json!({"enrollment_id": started["enrollment_id"], "code": code}),
    )
    .await
    .expect(200, "tina confirms with her code");
    let done = tina
        .post(&transports, to_production)
        .await
        .expect(201, "transport to production with TOTP");
    assert_eq!(done["environment"], "production");

    // Five wrong codes lock tina's factor.
    let wrong = a_wrong_code(&totp_secret);
    let mut last = 0;
    for _ in 0..5 {
        last = tina
            .post("/api/v1/me/factor/verification", json!({"code": wrong}))
            .await
            .status;
    }
    assert_eq!(last, 429, "the fifth wrong code locks the factor");

    // sara enrolls her phone (the development sender logs the code); a
    // resend within the cooldown is refused.
    let mut sara = Browser::new(&gateway, &cookies);
    sara.post(
        "/api/v1/sessions",
        json!({"username": "sara", "password": password("sara")}),
    )
    .await
    .expect(201, "sara signs in");
    sara.post("/api/v1/me/factor/sms", json!({"phone_number": PHONE}))
        .await
        .expect(200, "sara enrolls her phone");
    sara.post("/api/v1/me/factor/sms/code", json!({}))
        .await
        .expect(429, "a resend within the cooldown");
    let sms_code = auth
        .log()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| line["target"] == padlock_runtime::telemetry::LOG_ONLY_TARGET)
        .and_then(|line| line["body"].as_str().map(|b| b[..6].to_owned()))
        .expect("the development sender logs the code");
    codes.push(sms_code);

    // The transport to production: one trace, gateway -> deploy -> auth.
    let route = "POST /api/v1/packages/{package_id}/transports";
    let (trace, spans) = wait_for("the production transport's trace", || {
        let spans = received.spans();
        let trace = spans
            .iter()
            .filter(|s| s.service == GATEWAY && s.item.name == route)
            .filter(|s| int_attr(&s.item.attributes, "http.response.status_code") == Some(201))
            .max_by_key(|s| s.item.start_time_unix_nano)?
            .item
            .trace_id
            .clone();
        let in_trace = |service: &str, name: &str| {
            spans
                .iter()
                .any(|s| s.service == service && s.item.trace_id == trace && s.item.name == name)
        };
        (in_trace(DEPLOY, "padlock.deploy.v1.PackageService/TransportPackage")
            && in_trace(AUTH, "padlock.auth.v1.KeyService/GetJwks")
            && in_trace(DEPLOY, "padlock.auth.v1.KeyService/GetJwks"))
        .then_some((trace, spans))
    })
    .await;
    let http = one_span(&spans, &trace, GATEWAY, route, None);
    assert!(
        http.parent_span_id.is_empty(),
        "the gateway starts the trace"
    );
    assert_eq!(
        str_attr(&http.attributes, "http.route"),
        Some("/api/v1/packages/{package_id}/transports")
    );
    let transport = "padlock.deploy.v1.PackageService/TransportPackage";
    let call = one_span(&spans, &trace, GATEWAY, transport, Some(&http.span_id));
    let served = one_span(&spans, &trace, DEPLOY, transport, Some(&call.span_id));
    assert_eq!(
        int_attr(&served.attributes, "rpc.grpc.status_code"),
        Some(0)
    );
    let jwks = "padlock.auth.v1.KeyService/GetJwks";
    let fetch = one_span(&spans, &trace, DEPLOY, jwks, Some(&served.span_id));
    let answered = one_span(&spans, &trace, AUTH, jwks, Some(&fetch.span_id));
    assert_eq!(answered.kind, 2, "auth's span is a server span");
    assert_eq!(fetch.kind, 3, "deploy's fetch is a client span");

    // deploy's JSON log line about the refresh names that trace and span.
    assert!(
        logged_ids(&deploy.log(), "JWKS fetched").contains(&(hex(&trace), hex(&served.span_id))),
        "deploy's log line about the refresh names the transport's trace and span"
    );
    assert!(
        logged_ids(&gateway.log(), "http request").contains(&(hex(&trace), hex(&http.span_id))),
        "the gateway's access log line names the trace and span"
    );

    // Signing in through the gateway: gateway -> auth in one trace.
    let sign_in_route = "POST /api/v1/sessions";
    let method = "padlock.auth.v1.SessionService/SignIn";
    let (sign_in, spans) = wait_for("a sign-in's trace", || {
        let spans = received.spans();
        let sign_in = spans
            .iter()
            .filter(|s| s.service == GATEWAY && s.item.name == sign_in_route)
            .find(|gateway| {
                spans.iter().any(|s| {
                    s.service == AUTH
                        && s.item.trace_id == gateway.item.trace_id
                        && s.item.name == method
                })
            })?
            .item
            .clone();
        Some((sign_in, spans))
    })
    .await;
    let call = one_span(
        &spans,
        &sign_in.trace_id,
        GATEWAY,
        method,
        Some(&sign_in.span_id),
    );
    one_span(&spans, &sign_in.trace_id, AUTH, method, Some(&call.span_id));

    // SIGTERM: each service flushes its last spans and its metrics.
    let mut logs = Vec::new();
    for service in [gateway, deploy, auth] {
        logs.push((service.name, service.stop().await));
    }
    let metrics = received.metrics();
    let value = |service: &str, name: &str, want: &[(&str, &str)]| {
        metric_value(&metrics, service, name, want).unwrap_or_else(|| {
            let names: BTreeSet<_> = metrics
                .iter()
                .map(|m| format!("{}: {}", m.service, m.item.name))
                .collect();
            panic!("no {name} {want:?} from {service}; received {names:#?}")
        })
    };
    // olga's and tina's enrollments, each confirmed with a code.
    assert_eq!(
        value(
            AUTH,
            "padlock.auth.verifications",
            &[("method", "totp"), ("outcome", "accepted")]
        ),
        2
    );
    assert_eq!(
        value(
            AUTH,
            "padlock.auth.verifications",
            &[("method", "totp"), ("outcome", "wrong")]
        ),
        5
    );
    assert_eq!(
        value(AUTH, "padlock.auth.lockouts", &[("method", "totp")]),
        1
    );
    assert_eq!(value(AUTH, "padlock.auth.sms.sent", &[]), 1);
    assert_eq!(
        value(AUTH, "padlock.auth.sms.refused", &[("reason", "cooldown")]),
        1
    );
    assert_eq!(
        value(
            DEPLOY,
            "padlock.deploy.step_up.refusals",
            &[
                ("reason", Reason::MfaRequired.as_str_name()),
                ("action", "transport_package"),
                ("environment", "production"),
            ]
        ),
        1
    );
    assert_eq!(
        value(
            DEPLOY,
            "rpc.server.call.duration",
            &[("rpc.method", transport), ("rpc.grpc.status_code", "0")]
        ),
        2
    );
    assert_eq!(
        value(
            DEPLOY,
            "rpc.server.call.duration",
            &[("rpc.method", transport), ("rpc.grpc.status_code", "16")]
        ),
        1
    );
    assert!(value(AUTH, "rpc.server.call.duration", &[("rpc.method", method)]) >= 3);

    // Nothing secret in any exported span or metric, or in any log line
    // (but the development sender's own, which logs the SMS code on purpose).
    secrets.extend(cookies.lock().unwrap().iter().cloned());
    let spans = received.spans();
    let mut exported: Vec<(String, String)> = Vec::new();
    for span in &spans {
        for text in span_strings(&span.item) {
            exported.push((format!("{} span {:?}", span.service, span.item.name), text));
        }
    }
    for metric in &received.metrics() {
        for text in metric_strings(&metric.item) {
            exported.push((
                format!("{} metric {}", metric.service, metric.item.name),
                text,
            ));
        }
    }
    assert!(spans.len() > 20, "only {} spans arrived", spans.len());
    for (whence, text) in &exported {
        for secret in &secrets {
            assert!(!text.contains(secret.as_str()), "{whence} holds a secret");
        }
        for code in &codes {
            assert!(!holds_number(text, code), "{whence} holds a code");
        }
        assert!(!holds_jwt(text), "{whence} holds something like a JWT");
    }
    for (name, log) in &logs {
        for line in log
            .lines()
            .filter(|line| !line.contains(padlock_runtime::telemetry::LOG_ONLY_TARGET))
        {
            for secret in &secrets {
                assert!(
                    !line.contains(secret.as_str()),
                    "{name}'s log holds a secret"
                );
            }
            for code in &codes {
                assert!(!holds_number(line, code), "{name}'s log holds a code");
            }
            assert!(!holds_jwt(line), "{name}'s log holds something like a JWT");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_exported_without_an_endpoint() {
    let Some(bins) = binaries() else { return };
    let (endpoint, received) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    // The per-signal variables point at the receiver: were an exporter
    // built without OTEL_EXPORTER_OTLP_ENDPOINT, it would send there.
    let env = [
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", SPAN_DELAY_MS),
        ("OTEL_METRIC_EXPORT_INTERVAL", SPAN_DELAY_MS),
    ];
    let auth = start(&bins, AUTH, dir.path(), &[], &env).await;
    let refused = SessionServiceClient::connect(auth.url())
        .await
        .unwrap()
        .sign_in(SignInRequest {
            username: "nobody".into(),
            password: "wrong".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let log = auth.stop().await;
    assert!(!log.contains("exporting traces"), "{log}");
    assert!(received.spans().is_empty(), "spans were exported");
    assert!(received.metrics().is_empty(), "metrics were exported");
}
