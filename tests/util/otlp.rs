//! An OTLP/HTTP trace receiver: the recording [`Receiver`], whose
//! `POST /v1/traces` bodies are decoded as `ExportTraceServiceRequest`
//! protobuf by opentelemetry-proto's generated types, as a collector
//! would; and a [`Stall`], a port that accepts connections and never
//! answers.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message;

use super::receivers::{Answer, Receiver};

/// One span as a collector received it (ids in lowercase hex).
#[derive(Debug, Clone)]
pub struct SpanRecord {
    /// The resource's `service.name`.
    pub service: String,
    pub trace_id: String,
    pub span_id: String,
    /// `""` for a root span.
    pub parent_span_id: String,
    pub name: String,
    pub start_ns: u64,
    pub end_ns: u64,
    pub attributes: BTreeMap<String, String>,
    /// (trace id, span id, attributes) of each link.
    pub links: Vec<(String, String, BTreeMap<String, String>)>,
    /// 0 unset, 1 ok, 2 error.
    pub status: i32,
}

impl SpanRecord {
    pub fn attr(&self, key: &str) -> &str {
        self.attributes.get(key).map_or("", String::as_str)
    }
}

fn text(value: &Option<AnyValue>) -> String {
    match value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter().map(|kv| (kv.key.clone(), text(&kv.value))).collect()
}

/// Every span in one OTLP/HTTP protobuf request body.
pub fn decode(body: &[u8]) -> Vec<SpanRecord> {
    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf trace request");
    let mut spans = Vec::new();
    for resource_spans in &request.resource_spans {
        let resource = resource_spans.resource.as_ref().map(|r| attributes(&r.attributes));
        let service =
            resource.as_ref().and_then(|r| r.get("service.name").cloned()).unwrap_or_default();
        for scope in &resource_spans.scope_spans {
            for span in &scope.spans {
                spans.push(SpanRecord {
                    service: service.clone(),
                    trace_id: hex::encode(&span.trace_id),
                    span_id: hex::encode(&span.span_id),
                    parent_span_id: hex::encode(&span.parent_span_id),
                    name: span.name.clone(),
                    start_ns: span.start_time_unix_nano,
                    end_ns: span.end_time_unix_nano,
                    attributes: attributes(&span.attributes),
                    links: span
                        .links
                        .iter()
                        .map(|l| {
                            (
                                hex::encode(&l.trace_id),
                                hex::encode(&l.span_id),
                                attributes(&l.attributes),
                            )
                        })
                        .collect(),
                    status: span.status.as_ref().map_or(0, |s| s.code),
                });
            }
        }
    }
    spans
}

/// A collector's OTLP/HTTP trace endpoint on 127.0.0.1.
pub struct OtlpReceiver {
    http: Receiver,
}

impl OtlpReceiver {
    pub fn start() -> OtlpReceiver {
        let http = Receiver::start();
        // An empty ExportTraceServiceResponse: full success.
        http.answer_by_default(Answer { status: 200, headers: Vec::new(), body: String::new() });
        OtlpReceiver { http }
    }

    /// The base URL, as `[telemetry] otlp_endpoint` takes it.
    pub fn endpoint(&self) -> String {
        self.http.base.clone()
    }

    /// The `name` header of every request received so far.
    pub fn headers(&self, name: &str) -> Vec<String> {
        self.http.requests().iter().filter_map(|r| r.header(name).map(String::from)).collect()
    }

    /// Every span received so far; every request must be a protobuf POST
    /// to `/v1/traces`.
    pub fn spans(&self) -> Vec<SpanRecord> {
        let mut spans = Vec::new();
        for request in self.http.requests() {
            assert_eq!((request.method.as_str(), request.path.as_str()), ("POST", "/v1/traces"));
            assert_eq!(request.header("content-type"), Some("application/x-protobuf"));
            spans.extend(decode(&request.body));
        }
        spans
    }

    /// The spans once `done` holds for them; panics listing them after `timeout`.
    pub fn wait_spans(
        &self,
        timeout: Duration,
        done: impl Fn(&[SpanRecord]) -> bool,
    ) -> Vec<SpanRecord> {
        let deadline = Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if done(&spans) {
                return spans;
            }
            if Instant::now() > deadline {
                panic!(
                    "the collector did not receive the expected spans in {timeout:?}: {spans:#?}"
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A port that accepts connections and never answers (a collector hung
/// behind a load balancer); connections are held until it is dropped.
pub struct Stall {
    /// `http://127.0.0.1:PORT`
    pub base: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    pub accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Stall {
    pub fn start() -> Stall {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (st, n) = (stop.clone(), accepted.clone());
        std::thread::spawn(move || {
            let mut held = Vec::new();
            while !st.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        n.fetch_add(1, Ordering::SeqCst);
                        held.push(conn);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Stall { base, stop, accepted }
    }
}

impl Drop for Stall {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}
