//! Tracing set-up: human-readable or JSON lines on standard error, filtered
//! by `RUST_LOG` (default `info`), plus OpenTelemetry. Standard output is
//! kept for the one "listening on" line that scripts wait for.
//!
//! Every span gets OpenTelemetry trace and span ids, so `traceparent` is
//! passed on and log lines name their trace even when nothing is exported.
//! Traces and metrics go out over OTLP/gRPC only when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set (and `OTEL_SDK_DISABLED` is not
//! `true`); the SDK's own variables tune it (`OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_BSP_SCHEDULE_DELAY`,
//! `OTEL_METRIC_EXPORT_INTERVAL`, `OTEL_EXPORTER_OTLP_HEADERS`, ...).

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Events with this target go to the log and never into a span: for the
/// development-only senders that log what must not leave the machine.
pub const LOG_ONLY_TARGET: &str = "padlock::log_only";

/// The variable that turns export on.
pub const ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// How long shutting down may spend flushing what is left.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Crates whose own spans and events are transport detail, never exported
/// (the exporter itself speaks gRPC through them).
const NOT_EXPORTED: [&str; 6] = [
    "h2",
    "hyper",
    "hyper_util",
    "tonic",
    "tower",
    "opentelemetry",
];

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("{ENDPOINT_VAR}: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// Installs the global subscriber once, without exporting anything; later
/// calls (tests) are no-ops.
pub fn init(format: LogFormat) {
    let tracer = SdkTracerProvider::builder().build();
    let _ = install(format, &tracer);
}

/// What [`start`] set up; call [`Telemetry::shutdown`] before exiting so
/// the last spans and metrics are sent.
#[must_use = "dropping it flushes and stops the export"]
#[derive(Debug)]
pub struct Telemetry {
    exporting: Option<Exporting>,
}

#[derive(Debug)]
struct Exporting {
    tracer: SdkTracerProvider,
    meter: SdkMeterProvider,
}

impl Exporting {
    fn shutdown(self) {
        if let Err(e) = self.tracer.shutdown_with_timeout(FLUSH_TIMEOUT) {
            tracing::warn!(error = %e, "flushing spans failed");
        }
        if let Err(e) = self.meter.shutdown_with_timeout(FLUSH_TIMEOUT) {
            tracing::warn!(error = %e, "flushing metrics failed");
        }
    }
}

impl Telemetry {
    /// Whether traces and metrics are exported.
    pub fn is_exporting(&self) -> bool {
        self.exporting.is_some()
    }

    /// Flushes the last spans and metrics and stops exporting. The flush
    /// runs on a blocking thread, so the runtime keeps driving the
    /// exporter's connection meanwhile.
    pub async fn shutdown(mut self) {
        if let Some(exporting) = self.exporting.take() {
            let _ = tokio::task::spawn_blocking(move || exporting.shutdown()).await;
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(exporting) = self.exporting.take() {
            exporting.shutdown();
        }
    }
}

/// Installs the global subscriber for `service` (its OpenTelemetry
/// `service.name` unless `OTEL_SERVICE_NAME` says otherwise) and, when
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is set, exports traces and metrics there.
/// Must be called inside a Tokio runtime: the exporter's channel lives on it.
pub fn start(service: &'static str, format: LogFormat) -> Result<Telemetry, TelemetryError> {
    let Some(endpoint) = export_endpoint() else {
        init(format);
        return Ok(Telemetry { exporting: None });
    };
    let resource = resource(service);
    let spans = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()?;
    let tracer = SdkTracerProvider::builder()
        .with_resource(resource.clone())
        .with_batch_exporter(spans)
        .build();
    let metrics = opentelemetry_otlp::MetricExporter::builder()
        .with_tonic()
        .build()?;
    let meter = SdkMeterProvider::builder()
        .with_resource(resource)
        .with_periodic_exporter(metrics)
        .build();
    opentelemetry::global::set_meter_provider(meter.clone());
    let _ = install(format, &tracer);
    tracing::info!(
        endpoint = %endpoint_for_log(&endpoint),
        "exporting traces and metrics over OTLP"
    );
    Ok(Telemetry {
        exporting: Some(Exporting { tracer, meter }),
    })
}

/// `OTEL_EXPORTER_OTLP_ENDPOINT`, when set, not blank and not disabled.
fn export_endpoint() -> Option<String> {
    let disabled =
        std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let endpoint = std::env::var(ENDPOINT_VAR).ok()?;
    (!disabled && !endpoint.trim().is_empty()).then_some(endpoint)
}

/// The endpoint's scheme, host and port: never credentials or a path.
fn endpoint_for_log(endpoint: &str) -> String {
    match endpoint.parse::<http::Uri>() {
        Ok(uri) => format!(
            "{}://{}{}",
            uri.scheme_str().unwrap_or("http"),
            uri.host().unwrap_or("?"),
            uri.port().map(|p| format!(":{p}")).unwrap_or_default()
        ),
        Err(_) => "(unparsable)".to_owned(),
    }
}

fn resource(service: &'static str) -> Resource {
    let builder = Resource::builder();
    // The SDK reads OTEL_SERVICE_NAME itself; only name the service when
    // the operator did not.
    let builder = if std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.trim().is_empty()) {
        builder
    } else {
        builder.with_service_name(service)
    };
    builder
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build()
}

/// The subscriber: `RUST_LOG` filters everything; the log layer writes to
/// standard error; the OpenTelemetry layer turns padlock's spans and events
/// (not the transport crates', not [`LOG_ONLY_TARGET`]) into spans of
/// `tracer`.
fn install(
    format: LogFormat,
    tracer: &SdkTracerProvider,
) -> Result<(), tracing_subscriber::util::TryInitError> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let log = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let log: Box<dyn Layer<Registry> + Send + Sync> = match format {
        LogFormat::Text => log.boxed(),
        LogFormat::Json => log
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .boxed(),
    };
    // Spans carry what they name and their target, not the source
    // location, the thread or busy/idle times: cheaper on every RPC, and
    // the name already says where it comes from.
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer.tracer("padlock"))
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_filter(filter_fn(|metadata| exported(metadata.target())));
    tracing_subscriber::registry()
        .with(log)
        .with(otel)
        .with(filter)
        .try_init()
}

fn exported(target: &str) -> bool {
    target != LOG_ONLY_TARGET
        && !NOT_EXPORTED.iter().any(|krate| {
            target
                .strip_prefix(krate)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with([':', '_', '-']))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_crates_and_log_only_events_are_not_exported() {
        for target in [
            "h2",
            "h2::codec",
            "hyper_util::client",
            "tonic::transport",
            "tower::buffer",
            "opentelemetry_sdk",
            "opentelemetry-otlp",
            LOG_ONLY_TARGET,
        ] {
            assert!(!exported(target), "{target}");
        }
        for target in [
            "padlock_runtime::otel",
            "padlock_auth::grpc::two_factor",
            "padlock_gateway::edge",
            "towering",
        ] {
            assert!(exported(target), "{target}");
        }
    }

    #[test]
    fn the_logged_endpoint_has_no_credentials_or_path() {
        assert_eq!(
            endpoint_for_log("http://user:secret@collector:4317/v1?key=abc"),
            "http://collector:4317"
        );
        assert_eq!(
            endpoint_for_log("https://otel.example"),
            "https://otel.example"
        );
    }
}
