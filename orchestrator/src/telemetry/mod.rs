//! OpenTelemetry traces (issue #17): with `[telemetry] otlp_endpoint` (or
//! the standard `OTEL_EXPORTER_OTLP_ENDPOINT`), every run is one trace —
//! a root span for the run, a child per step attempt — and a webhook
//! request is linked to the runs it started; exported over OTLP/HTTP
//! (protobuf) in the background. Off by default: then nothing here is
//! built, no layer is installed, and each hook in the driver is one
//! `OnceLock` read.
//!
//! `ids.rs`: a run's trace id and root span id, derived from its id (so
//! every process that records a span of a run agrees without storing
//! anything); `spans.rs`: the spans; `export.rs`: the bounded queue, the
//! drop counter and the HTTP client. A collector that is down, slow or
//! wrong never slows or fails a run: spans are queued without waiting and
//! dropped (counted in `lifeboat_otlp_spans_dropped_total`, logged once)
//! when they cannot go.

mod export;
pub mod ids;
mod spans;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider,
};

pub use ids::{RunTrace, trace_id};
pub use spans::{
    AttemptFacts, attempt_ended, attempt_interrupted, attempt_started, run_ended, webhook_answered,
    webhook_span,
};

use crate::config::{OtlpEndpoint, TelemetryConfig};

/// The `tracing` target of the spans that are exported; no other span or
/// event reaches the exporter. Under the crate's own target, so a log
/// filter such as `lifeboat_orchestrator=info` still shows attempts'
/// context in the logs.
pub const TARGET: &str = "lifeboat_orchestrator::trace";

/// Spans waiting for export at most, unless `OTEL_BSP_MAX_QUEUE_SIZE`
/// says; more are dropped and counted.
const QUEUE: usize = 2048;
/// The export timeout unless `OTEL_EXPORTER_OTLP_[TRACES_]TIMEOUT` says.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a command waits at exit for its last spans to go.
const FLUSH_AT_EXIT: Duration = Duration::from_secs(2);

struct Active {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

static ACTIVE: OnceLock<Active> = OnceLock::new();

fn active() -> Option<&'static Active> {
    ACTIVE.get()
}

/// Whether traces are exported by this process.
pub fn enabled() -> bool {
    ACTIVE.get().is_some()
}

/// Why traces cannot be set up (the process does not start).
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// A bad `OTEL_*` variable; `reason` quotes its value.
    #[error("{var}: {reason}")]
    Env { var: &'static str, reason: String },
    #[error("cannot set up the OTLP exporter for {endpoint}: {reason}")]
    Exporter { endpoint: String, reason: String },
}

/// Where traces are POSTed: `[telemetry] otlp_endpoint`, else
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (as is), else
/// `OTEL_EXPORTER_OTLP_ENDPOINT` (a base URL); `None`: off (also when
/// `OTEL_SDK_DISABLED=true`).
pub fn endpoint(
    config: &TelemetryConfig,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<String>, TelemetryError> {
    let env = |var: &str| env(var).filter(|v| !v.trim().is_empty());
    if env("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    if let Some(endpoint) = &config.otlp_endpoint {
        return Ok(Some(endpoint.traces_url()));
    }
    for (var, base) in
        [("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", false), ("OTEL_EXPORTER_OTLP_ENDPOINT", true)]
    {
        if let Some(value) = env(var) {
            let url = OtlpEndpoint::try_from(value)
                .map_err(|reason| TelemetryError::Env { var, reason })?;
            return Ok(Some(if base { url.traces_url() } else { url.to_string() }));
        }
    }
    Ok(None)
}

fn queue_size() -> usize {
    std::env::var("OTEL_BSP_MAX_QUEUE_SIZE")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(QUEUE)
}

fn export_timeout() -> Duration {
    ["OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"]
        .iter()
        .find_map(|var| std::env::var(var).ok()?.trim().parse::<u64>().ok())
        .map_or(EXPORT_TIMEOUT, Duration::from_millis)
}

/// Starts exporting traces if an endpoint is configured; returns whether
/// it did. Requests run on `runtime`. Once per process.
pub fn start(
    config: &TelemetryConfig,
    runtime: tokio::runtime::Handle,
) -> Result<bool, TelemetryError> {
    let Some(url) = endpoint(config, |var| std::env::var(var).ok())? else {
        return Ok(false);
    };
    let failed = |reason: String| TelemetryError::Exporter { endpoint: url.clone(), reason };
    let timeout = export_timeout();
    let client = export::Client::new(timeout, runtime).map_err(|e| failed(e.to_string()))?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(url.clone())
        .with_timeout(timeout)
        .build()
        .map_err(|e| failed(e.to_string()))?;
    // Our gate and the SDK's queue have the same size, so the SDK never
    // drops a span we did not count.
    let queue = queue_size();
    let gate = Arc::new(export::Gate::new(queue, url.clone()));
    let batch = BatchSpanProcessor::builder(export::Counted::new(exporter, gate.clone()))
        .with_batch_config(BatchConfigBuilder::default().with_max_queue_size(queue).build())
        .build();
    let service = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| config.service_name.clone());
    let resource = opentelemetry_sdk::Resource::builder_empty()
        .with_service_name(service)
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(export::Gated::new(batch, gate))
        .with_id_generator(spans::RunIds::default())
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("lifeboat");
    Ok(ACTIVE.set(Active { provider, tracer }).is_ok())
}

/// The layer that turns spans of [`TARGET`] into OpenTelemetry spans;
/// `None` when traces are off (then no layer is installed at all).
pub fn layer<S>() -> Option<impl tracing_subscriber::Layer<S>>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use tracing_subscriber::Layer as _;
    let active = active()?;
    Some(
        tracing_opentelemetry::layer()
            .with_tracer(active.tracer.clone())
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_tracked_inactivity(false)
            .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
                meta.is_span() && meta.target() == TARGET
            })),
    )
}

/// Exports what is still queued, waiting at most [`FLUSH_AT_EXIT`]: a
/// collector that does not answer delays a command's exit by that much at
/// worst, and never its run.
pub async fn flush() {
    let Some(active) = active() else {
        return;
    };
    let provider = active.provider.clone();
    let _ =
        tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(FLUSH_AT_EXIT)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(endpoint: Option<&str>) -> TelemetryConfig {
        TelemetryConfig {
            otlp_endpoint: endpoint.map(|e| OtlpEndpoint::try_from(e.to_string()).unwrap()),
            ..TelemetryConfig::default()
        }
    }

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |var| vars.iter().find(|(k, _)| *k == var).map(|(_, v)| v.to_string())
    }

    #[test]
    fn traces_are_off_without_an_endpoint() {
        assert_eq!(endpoint(&config(None), env(&[])).unwrap(), None);
        assert_eq!(
            endpoint(&config(None), env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")])).unwrap(),
            None
        );
    }

    #[test]
    fn the_file_wins_over_the_environment() {
        let vars = [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4318")];
        assert_eq!(
            endpoint(&config(Some("http://file:4318")), env(&vars)).unwrap().as_deref(),
            Some("http://file:4318/v1/traces")
        );
    }

    #[test]
    fn the_standard_variables_are_a_base_url_and_a_full_one() {
        let base = [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4318/")];
        assert_eq!(
            endpoint(&config(None), env(&base)).unwrap().as_deref(),
            Some("http://env:4318/v1/traces")
        );
        let full = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:4318/custom"),
        ];
        assert_eq!(
            endpoint(&config(None), env(&full)).unwrap().as_deref(),
            Some("http://traces:4318/custom")
        );
    }

    #[test]
    fn otel_sdk_disabled_turns_traces_off() {
        let vars = [("OTEL_SDK_DISABLED", "TRUE")];
        assert_eq!(endpoint(&config(Some("http://file:4318")), env(&vars)).unwrap(), None);
    }

    #[test]
    fn a_bad_variable_is_an_error_naming_it() {
        let vars = [("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317")];
        let e = endpoint(&config(None), env(&vars)).unwrap_err().to_string();
        assert!(e.starts_with("OTEL_EXPORTER_OTLP_ENDPOINT: `collector:4317`"), "{e}");
        assert!(e.contains("http://collector:4318"), "{e}");
    }
}
