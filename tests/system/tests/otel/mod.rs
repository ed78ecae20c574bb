//! The OTel end-to-end test's helpers (`tests/otel_export.rs`): the
//! binaries, an OTLP receiver, the services as processes, a browser-like
//! HTTP client, TOTP by hand and reading what was exported.

mod reading;
mod services;

pub use reading::*;
pub use services::*;

pub use padlock_proto::Reason;
pub use std::collections::{BTreeMap, BTreeSet};
pub use std::path::{Path, PathBuf};
pub use std::process::Stdio;
pub use std::sync::{Arc, Mutex};
pub use std::time::{Duration, Instant};

pub use bytes::Bytes;
pub use http_body_util::{BodyExt, Full};
pub use hyper_util::rt::TokioIo;
pub use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
pub use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
pub use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
pub use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
pub use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
pub use opentelemetry_proto::tonic::metrics::v1::{Metric, metric, number_data_point};
pub use opentelemetry_proto::tonic::trace::v1::Span;
pub use padlock_proto::auth::v1::key_service_client::KeyServiceClient;
pub use padlock_proto::auth::v1::session_service_client::SessionServiceClient;
pub use padlock_proto::auth::v1::two_factor_service_client::TwoFactorServiceClient;
pub use padlock_proto::auth::v1::{
    ConfirmEnrollmentRequest, GetJwksRequest, SignInRequest, StartTotpEnrollmentRequest,
};
pub use padlock_proto::deploy::v1::CreateAppRequest;
pub use padlock_proto::deploy::v1::app_service_client::AppServiceClient;
pub use serde_json::{Value, json};
pub use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
pub use tokio::net::TcpListener;
pub use tokio::process::{Child, Command};
pub use tokio_stream::wrappers::TcpListenerStream;

pub const AUTH: &str = "padlock-auth";
pub const DEPLOY: &str = "padlock-deploy";
pub const GATEWAY: &str = "padlock-gateway";
/// How long a service may take to print its "listening on" line, and a
/// span to arrive after it ended.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
pub const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(20);
/// Spans go out 100 ms after they end; metrics only every 10 minutes, so
/// the metrics this test sees arrive with the flush at shutdown.
pub const SPAN_DELAY_MS: &str = "100";
pub const METRIC_INTERVAL_MS: &str = "600000";
/// RFC 6238 §4: 30-second steps; six digits (docs/design.md "Second factors").
pub const STEP_SECS: u64 = 30;
pub const PHONE: &str = "+31612345678";

// ---------------------------------------------------------------- binaries

pub fn in_ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok("true" | "1"))
}

pub fn bin_dir() -> PathBuf {
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

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The directory holding the three binaries, or `None` (outside CI) after
/// saying why the test does not run.
pub fn binaries() -> Option<PathBuf> {
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
pub struct Exported<T> {
    pub service: String,
    pub item: T,
}

#[derive(Debug, Clone, Default)]
pub struct Received {
    pub spans: Arc<Mutex<Vec<Exported<Span>>>>,
    pub metrics: Arc<Mutex<Vec<Exported<Metric>>>>,
}

impl Received {
    pub fn spans(&self) -> Vec<Exported<Span>> {
        self.spans.lock().unwrap().clone()
    }

    pub fn metrics(&self) -> Vec<Exported<Metric>> {
        self.metrics.lock().unwrap().clone()
    }
}

pub fn service_name(
    resource: Option<&opentelemetry_proto::tonic::resource::v1::Resource>,
) -> String {
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
pub async fn receiver() -> (String, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let received = Received::default();
    let server = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(received.clone()))
        .add_service(MetricsServiceServer::new(received.clone()));
    tokio::spawn(server.serve_with_incoming(TcpListenerStream::new(listener)));
    (endpoint, received)
}
