//! Getting spans out without ever holding a run up. The SDK's batch
//! processor queues finished spans and exports them from a thread of its
//! own; around it, [`Gated`] bounds the queue (a span that does not fit is
//! dropped at once, never waited for) and [`Counted`] notices exports that
//! failed. Both count what they drop in `lifeboat_otlp_spans_dropped_total`
//! and the first drop of the process is logged once, naming the endpoint.
//! [`Client`] sends the OTLP requests with the process's own reqwest, as
//! tasks on its tokio runtime, each bounded by the export timeout.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use opentelemetry::Context;
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};

/// A collector's answer larger than this is refused (it is only a status).
const MAX_ANSWER: usize = 1 << 20;

/// The OTLP exporter's HTTP client (`opentelemetry_http::HttpClient`).
#[derive(Debug, Clone)]
pub struct Client {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

impl Client {
    pub fn new(timeout: Duration, runtime: tokio::runtime::Handle) -> reqwest::Result<Client> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Client { client, runtime })
    }
}

#[async_trait::async_trait]
impl HttpClient for Client {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let request = reqwest::Request::try_from(request)?;
        // The batch processor's thread has no runtime: the request runs on
        // the process's, and the thread waits for its answer.
        let answer = self.runtime.spawn(async move {
            let mut response = client.execute(request).await?;
            let mut answer = http::Response::builder().status(response.status());
            for (name, value) in response.headers() {
                answer = answer.header(name, value);
            }
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await? {
                if body.len() + chunk.len() > MAX_ANSWER {
                    return Err(HttpError::from("the collector's answer is over 1 MiB"));
                }
                body.extend_from_slice(&chunk);
            }
            Ok::<_, HttpError>(answer.body(Bytes::from(body))?)
        });
        answer.await?
    }
}

/// The export queue's bound, the drop counter and the log-once flag.
#[derive(Debug)]
pub struct Gate {
    /// Spans handed to the batch processor and not exported (or failed) yet.
    queued: AtomicUsize,
    capacity: usize,
    warned: AtomicBool,
    endpoint: String,
}

impl Gate {
    pub fn new(capacity: usize, endpoint: String) -> Gate {
        Gate { queued: AtomicUsize::new(0), capacity, warned: AtomicBool::new(false), endpoint }
    }

    /// Takes a place in the queue, if one is free.
    fn admit(&self) -> bool {
        self.queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.capacity).then_some(n + 1)
            })
            .is_ok()
    }

    /// `n` spans left the queue (exported or not).
    fn left(&self, n: usize) {
        let _ = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| Some(q.saturating_sub(n)));
    }

    /// `n` spans are lost: counted always, logged the first time.
    fn dropped(&self, reason: &str, n: usize, why: impl FnOnce() -> String) {
        crate::metrics::otlp_spans_dropped(reason, n as u64);
        if !self.warned.swap(true, Ordering::AcqRel) {
            let why = why();
            tracing::warn!(
                endpoint = %self.endpoint,
                reason,
                "Trace spans are being dropped ({why}); runs go on unaffected. Counted in lifeboat_otlp_spans_dropped_total; this is logged once per process."
            );
        }
    }
}

/// The batch processor behind a bounded queue of our own, so that every
/// span dropped for want of room is counted (the SDK only logs them).
#[derive(Debug)]
pub struct Gated<P> {
    inner: P,
    gate: Arc<Gate>,
}

impl<P> Gated<P> {
    pub fn new(inner: P, gate: Arc<Gate>) -> Self {
        Gated { inner, gate }
    }
}

impl<P: SpanProcessor> SpanProcessor for Gated<P> {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if self.gate.admit() {
            self.inner.on_end(span);
        } else {
            let capacity = self.gate.capacity;
            self.gate.dropped("queue_full", 1, || {
                format!("{capacity} spans are waiting for the collector already")
            });
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The OTLP exporter, counting the spans of a failed export as dropped and
/// giving their places in the queue back.
#[derive(Debug)]
pub struct Counted<E> {
    inner: E,
    gate: Arc<Gate>,
}

impl<E> Counted<E> {
    pub fn new(inner: E, gate: Arc<Gate>) -> Self {
        Counted { inner, gate }
    }
}

impl<E: SpanExporter> SpanExporter for Counted<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len();
        let result = self.inner.export(batch).await;
        self.gate.left(n);
        if let Err(e) = &result {
            self.gate.dropped("export_failed", n, || format!("export failed: {e}"));
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_admits_up_to_its_capacity_and_frees_places() {
        let gate = Gate::new(2, "http://collector:4318/v1/traces".into());
        assert!(gate.admit());
        assert!(gate.admit());
        assert!(!gate.admit(), "a third span does not fit");
        gate.left(1);
        assert!(gate.admit());
        gate.left(5);
        assert_eq!(gate.queued.load(Ordering::Acquire), 0, "never below zero");
    }

    #[test]
    fn drops_are_counted_every_time_and_logged_once() {
        let gate = Gate::new(1, "http://collector:4318/v1/traces".into());
        let said = std::cell::Cell::new(0);
        gate.dropped("queue_full", 3, || {
            said.set(said.get() + 1);
            "full".into()
        });
        gate.dropped("queue_full", 2, || {
            said.set(said.get() + 1);
            "full".into()
        });
        assert_eq!(said.get(), 1, "the reason is worked out only for the one log line");
        let text = crate::metrics::encode();
        let line = text
            .lines()
            .find(|l| l.starts_with("lifeboat_otlp_spans_dropped_total{reason=\"queue_full\"}"))
            .expect("the counter is exported");
        let n: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(n >= 5.0, "{line}");
    }
}
