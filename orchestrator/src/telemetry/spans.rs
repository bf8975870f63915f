//! The spans lifeboat records, all in the trace of their run
//! ([`super::ids`]):
//!
//! - `run <workflow>`: the run's root, from its creation to its end, built
//!   by whichever process ends the run, with the ids the run's id gives
//!   (the SDK's ids come from [`RunIds`], which that one call overrides);
//! - `<phase> <step>`: one per action attempt, a `tracing` span of target
//!   [`super::TARGET`] turned into an OpenTelemetry span by
//!   tracing-opentelemetry, whose parent is set to the run's root;
//! - `POST /hooks/<name>`: a webhook request, in a trace of its own (or
//!   its caller's, from a `traceparent` header), linked to every run it
//!   started or found.

use std::cell::Cell;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{
    Link, Span as _, SpanBuilder, SpanContext, SpanId, SpanKind, Status, TraceContextExt,
    TraceFlags, TraceId, TraceState, Tracer as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::ids::RunTrace;
use crate::store::{RunRecord, RunStatus};

thread_local! {
    /// Ids for the next span built on this thread (see [`RunIds`]).
    static FIXED: Cell<Option<(TraceId, SpanId)>> = const { Cell::new(None) };
}

/// Random ids, except for a run's root span, whose ids are derived from
/// the run: [`RunIds::fixed`] sets them for the one span it builds.
#[derive(Debug, Default)]
pub struct RunIds(RandomIdGenerator);

impl RunIds {
    fn fixed<T>(trace: RunTrace, build: impl FnOnce() -> T) -> T {
        let ids = (TraceId::from_bytes(trace.trace_id), SpanId::from_bytes(trace.root_span_id));
        FIXED.with(|f| f.set(Some(ids)));
        let built = build();
        FIXED.with(|f| f.set(None));
        built
    }
}

impl IdGenerator for RunIds {
    fn new_trace_id(&self) -> TraceId {
        FIXED.with(Cell::get).map_or_else(|| self.0.new_trace_id(), |(t, _)| t)
    }

    fn new_span_id(&self) -> SpanId {
        FIXED.with(Cell::get).map_or_else(|| self.0.new_span_id(), |(_, s)| s)
    }
}

/// The span context of run `run_id`'s root, as seen from another process.
pub fn run_root(run_id: &str) -> SpanContext {
    let trace = RunTrace::of(run_id);
    SpanContext::new(
        TraceId::from_bytes(trace.trace_id),
        SpanId::from_bytes(trace.root_span_id),
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    )
}

/// What an attempt span says about its attempt.
#[derive(Debug, Clone, Copy)]
pub struct AttemptFacts<'a> {
    pub run_id: &'a str,
    pub workflow: &'a str,
    pub mode: &'a str,
    pub step: &'a str,
    pub attempt: u32,
    pub kind: &'a str,
    pub phase: &'a str,
}

impl AttemptFacts<'_> {
    fn name(&self) -> String {
        let name = if self.phase == "rollback" { "rollback" } else { "step" };
        format!("{name} {}", self.step)
    }

    fn attributes(&self) -> Vec<KeyValue> {
        vec![
            KeyValue::new("lifeboat.workflow", self.workflow.to_string()),
            KeyValue::new("lifeboat.run.id", self.run_id.to_string()),
            KeyValue::new("lifeboat.run.mode", self.mode.to_string()),
            KeyValue::new("lifeboat.step.id", self.step.to_string()),
            KeyValue::new("lifeboat.step.attempt", i64::from(self.attempt)),
            KeyValue::new("lifeboat.step.kind", self.kind.to_string()),
            KeyValue::new("lifeboat.step.phase", self.phase.to_string()),
        ]
    }
}

/// Hangs `span` (an `attempt` span of [`super::TARGET`] with an empty
/// `otel.name` field) under its run's root and gives it the attempt's
/// attributes. Nothing at all when traces are off.
pub fn attempt_started(span: &tracing::Span, facts: AttemptFacts<'_>) {
    if !super::enabled() || span.is_disabled() {
        return;
    }
    let _ = span.set_parent(Context::new().with_remote_span_context(run_root(facts.run_id)));
    span.record("otel.name", facts.name());
    for KeyValue { key, value, .. } in facts.attributes() {
        span.set_attribute(key, value);
    }
}

/// The span of an attempt whose worker died while it ran (its own span
/// died with it), recorded by the worker that took the run over: from the
/// attempt's recorded start to now, status `interrupted`.
pub fn attempt_interrupted(facts: AttemptFacts<'_>, started_at: i64, now: i64) {
    let Some(active) = super::active() else {
        return;
    };
    let mut attributes = facts.attributes();
    attributes.push(KeyValue::new("lifeboat.step.status", "interrupted"));
    let builder = SpanBuilder::from_name(facts.name())
        .with_start_time(at(started_at))
        .with_attributes(attributes);
    let parent = Context::new().with_remote_span_context(run_root(facts.run_id));
    let mut span = active.tracer.build_with_context(builder, &parent);
    span.set_status(Status::error("attempt interrupted: the worker running it stopped"));
    span.end_with_timestamp(at(now.max(started_at)));
}

/// The attempt's outcome on its span: `lifeboat.step.status` and, when it
/// failed, an error status (the error text stays in the store: it may
/// quote step output).
pub fn attempt_ended(span: &tracing::Span, succeeded: bool) {
    if !super::enabled() || span.is_disabled() {
        return;
    }
    span.set_attribute("lifeboat.step.status", if succeeded { "succeeded" } else { "failed" });
    span.set_status(if succeeded { Status::Ok } else { Status::error("attempt failed") });
}

fn at(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// Records run `run`'s root span, now that it ended with `status` at
/// `finished_at` (and that end is committed): from its creation to its
/// end, with the ids of its trace.
/// A child run's root links to its parent run's root.
pub fn run_ended(run: &RunRecord, status: RunStatus, finished_at: i64) {
    let Some(active) = super::active() else {
        return;
    };
    let mut attributes = vec![
        KeyValue::new("lifeboat.workflow", run.workflow.clone()),
        KeyValue::new("lifeboat.run.id", run.id.clone()),
        KeyValue::new("lifeboat.run.mode", run.mode.as_str()),
        KeyValue::new("lifeboat.run.status", status.as_str()),
    ];
    if let Some(scenario) = &run.scenario {
        attributes.push(KeyValue::new("lifeboat.drill.scenario", scenario.clone()));
    }
    let mut links = Vec::new();
    if let Some(parent) = &run.parent_run_id {
        attributes.push(KeyValue::new("lifeboat.run.parent_id", parent.clone()));
        links.push(Link::with_context(run_root(parent)));
    }
    let builder = SpanBuilder::from_name(format!("run {}", run.workflow))
        .with_kind(SpanKind::Internal)
        .with_start_time(at(run.created_at))
        .with_attributes(attributes)
        .with_links(links);
    let mut span = RunIds::fixed(RunTrace::of(&run.id), || {
        active.tracer.build_with_context(builder, &Context::new())
    });
    span.set_status(if status == RunStatus::Succeeded {
        Status::Ok
    } else {
        Status::error(status.as_str())
    });
    // The stored end is in whole milliseconds; the ending commit is done
    // by now, so the root still covers its last attempt's span.
    span.end_with_timestamp(SystemTime::now().max(at(finished_at.max(run.created_at))));
}

/// The span of a webhook request to hook `hook`: `Span::none()` when
/// traces are off. A W3C `traceparent` header makes it a child of the
/// caller's span.
pub fn webhook_span(hook: &str, headers: &http::HeaderMap) -> tracing::Span {
    if !super::enabled() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        target: super::TARGET,
        "webhook",
        otel.name = %format!("POST /hooks/{hook}"),
        otel.kind = "server",
        lifeboat.hook = %hook,
        lifeboat.webhook.outcome = tracing::field::Empty,
    );
    let caller = opentelemetry_sdk::propagation::TraceContextPropagator::new()
        .extract(&opentelemetry_http::HeaderExtractor(headers));
    if caller.span().span_context().is_valid() {
        let _ = span.set_parent(caller);
    }
    span
}

/// What the webhook request did, and a link to the root of every run it
/// started (or found already running, or cancelled).
pub fn webhook_answered<'a>(
    span: &tracing::Span,
    outcome: &str,
    runs: impl IntoIterator<Item = (&'a str, &'static str)>,
) {
    if span.is_none() {
        return;
    }
    span.record("lifeboat.webhook.outcome", outcome);
    for (run, how) in runs {
        span.add_link_with_attributes(
            run_root(run),
            vec![
                KeyValue::new("lifeboat.run.id", run.to_string()),
                KeyValue::new("lifeboat.link", how),
            ],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_ids_apply_to_one_build_only() {
        let ids = RunIds::default();
        let trace = RunTrace::of("run-1");
        let (t, s) = RunIds::fixed(trace, || (ids.new_trace_id(), ids.new_span_id()));
        assert_eq!(t.to_bytes(), trace.trace_id);
        assert_eq!(s.to_bytes(), trace.root_span_id);
        assert_ne!(ids.new_span_id().to_bytes(), trace.root_span_id, "random again afterwards");
    }

    #[test]
    fn a_runs_root_is_remote_sampled_and_carries_its_trace() {
        let root = run_root("run-1");
        assert!(root.is_valid() && root.is_remote() && root.is_sampled());
        assert_eq!(root.trace_id().to_string(), super::super::trace_id("run-1"));
    }
}
