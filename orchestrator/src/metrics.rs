//! Prometheus metrics: one process-wide registry and a small function per
//! thing worth counting, so call sites stay one line
//! (`metrics::run_started(&wf.name)`). `GET /metrics` renders it with
//! [`encode`]; run counts by status come from the store at scrape time.
//!
//! Label values are bounded by configuration (workflows, hooks, channels,
//! step kinds, statuses), never by request data.

use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::store::RunStatus;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkflowLabel {
    workflow: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunEndLabels {
    workflow: String,
    status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    kind: String,
    status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HookLabels {
    hook: String,
    outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelLabels {
    channel: String,
    outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: String,
    route: String,
    code: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

struct Metrics {
    registry: Registry,
    runs_started: Family<WorkflowLabel, Counter>,
    runs_finished: Family<RunEndLabels, Counter>,
    step_duration: HistogramFamily<StepLabels>,
    runs: Family<StatusLabel, Gauge>,
    lease_takeovers: Counter,
    webhooks: Family<HookLabels, Counter>,
    schedule_fires: Family<WorkflowLabel, Counter>,
    notifications: Family<ChannelLabels, Counter>,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: HistogramFamily<HttpLabels>,
    connections_closed: Family<ReasonLabel, Counter>,
    pruned_rows: Family<TableLabel, Counter>,
    prune_failures: Counter,
    rto_breaches: Family<WorkflowLabel, Counter>,
    otlp_spans_dropped: Family<ReasonLabel, Counter>,
    outbox_pending: Gauge,
    outbox_oldest: Gauge<f64, std::sync::atomic::AtomicU64>,
    workers_live: Gauge,
    readiness: Family<ReadinessLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    drill_last: Family<DrillLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    drill_overdue: Family<WorkflowLabel, Gauge>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReadinessLabels {
    check: String,
    target: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DrillLabels {
    workflow: String,
    scenario: String,
    verdict: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableLabel {
    table: String,
}

fn step_buckets() -> Histogram {
    // 10 ms .. ~5.8 h: steps range from `set` to a restore.
    Histogram::new(exponential_buckets(0.01, 3.0, 14))
}

fn http_buckets() -> Histogram {
    // 0.5 ms .. ~16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Registers each field of `$m` under its name with its help text.
macro_rules! register {
    ($registry:ident, $m:ident, $($name:literal => $field:ident, $help:literal;)*) => {
        $($registry.register($name, $help, $m.$field.clone());)*
    };
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let mut registry = Registry::with_prefix("lifeboat");
    let m = Metrics {
        registry: Registry::default(),
        runs_started: Family::default(),
        runs_finished: Family::default(),
        step_duration: Family::new_with_constructor(step_buckets),
        runs: Family::default(),
        lease_takeovers: Counter::default(),
        webhooks: Family::default(),
        schedule_fires: Family::default(),
        notifications: Family::default(),
        http_requests: Family::default(),
        http_duration: Family::new_with_constructor(http_buckets),
        connections_closed: Family::default(),
        pruned_rows: Family::default(),
        prune_failures: Counter::default(),
        rto_breaches: Family::default(),
        otlp_spans_dropped: Family::default(),
        outbox_pending: Gauge::default(),
        outbox_oldest: Gauge::default(),
        workers_live: Gauge::default(),
        readiness: Family::default(),
        drill_last: Family::default(),
        drill_overdue: Family::default(),
    };
    // Name, then the field registered under it, then its help text.
    register! { registry, m,
        "runs_started" => runs_started, "Runs created, by workflow";
        "runs_finished" => runs_finished, "Runs that reached a final status, by workflow and status";
        "step_duration_seconds" => step_duration, "Duration of step attempts, by step kind and outcome";
        "runs" => runs, "Active runs by status (queue depth: queued), read at scrape time; ended runs are runs_finished";
        "lease_takeovers" => lease_takeovers, "Runs this worker claimed after another worker's lease expired";
        "webhook_requests" => webhooks, "Webhook requests by hook and outcome (started, deduplicated, ignored, unauthorized, rejected, replayed, rate_limited, too_many_alerts, error)";
        "schedule_fires" => schedule_fires, "Schedule ticks that started a run, by workflow";
        "notification_deliveries" => notifications, "Notification delivery attempts by channel and outcome";
        "http_requests" => http_requests, "HTTP requests served, by method, route and status code";
        "http_request_duration_seconds" => http_duration, "HTTP request latency, by method, route and status code";
        "http_connections_closed" => connections_closed, "Connections the server closed itself, by reason (refused: over [server] max_connections; timed_out: header_read_timeout or idle_timeout)";
        "pruned_rows" => pruned_rows, "Rows the retention pruner deleted, by table (runs, steps, attempts, events, requests, outbox, schedule_ticks, webhook_signatures)";
        "prune_failures" => prune_failures, "Pruner passes that failed (logged; tried again at the next interval)";
        "rto_breaches" => rto_breaches, "Runs that took longer than their workflow's objectives.rto, by workflow";
        "otlp_spans_dropped" => otlp_spans_dropped, "Trace spans not delivered to [telemetry] otlp_endpoint, by reason (export_failed: the collector refused or could not be reached in time; queue_full: more spans waiting than the export queue holds)";
        "outbox_pending" => outbox_pending, "Notifications queued and not delivered yet (all replicas), read at scrape time";
        "outbox_oldest_pending_seconds" => outbox_oldest, "Age of the oldest undelivered notification (0 when none), read at scrape time";
        "workers_live" => workers_live, "Workers (serve replicas) whose heartbeat is within one lease, read at scrape time";
        "readiness" => readiness, "The checks of lifeboat doctor, run by serve every [server] readiness_interval: 1 pass, 0.5 warn, 0 fail, by check and target";
        "drill_last_timestamp_seconds" => drill_last, "When the newest drill of each scenario with each verdict (passed, failed) ended, unix seconds; scenario (none) is drills run without one; read at scrape time";
        "drill_overdue" => drill_overdue, "1 when a workflow with objectives.drill_every has a scenario with no passing drill within it, else 0; read at scrape time";
    }
    Metrics { registry, ..m }
});

/// A run was created (by any trigger: CLI, API, webhook, schedule, parent step).
pub fn run_started(workflow: &str) {
    METRICS.runs_started.get_or_create(&WorkflowLabel { workflow: workflow.into() }).inc();
}

/// A run reached a final status.
pub fn run_finished(workflow: &str, status: RunStatus) {
    METRICS
        .runs_finished
        .get_or_create(&RunEndLabels { workflow: workflow.into(), status: status.as_str().into() })
        .inc();
}

/// A step attempt ended: its kind (`shell`, `approval`…), outcome and duration.
pub fn step_finished(kind: &str, status: &str, secs: f64) {
    METRICS
        .step_duration
        .get_or_create(&StepLabels { kind: kind.into(), status: status.into() })
        .observe(secs);
}

/// This worker took over a run whose previous worker's lease had expired.
pub fn lease_takeover() {
    METRICS.lease_takeovers.inc();
}

/// A webhook request (or one alert of it) ended with `outcome`.
pub fn webhook(hook: &str, outcome: &str) {
    METRICS
        .webhooks
        .get_or_create(&HookLabels { hook: hook.into(), outcome: outcome.into() })
        .inc();
}

/// A schedule tick started a run of `workflow`.
pub fn schedule_fired(workflow: &str) {
    METRICS.schedule_fires.get_or_create(&WorkflowLabel { workflow: workflow.into() }).inc();
}

/// A notification delivery attempt on `channel` ended with `outcome`
/// (`delivered`, `failed`, `retrying`…).
pub fn notification(channel: &str, outcome: &str) {
    METRICS
        .notifications
        .get_or_create(&ChannelLabels { channel: channel.into(), outcome: outcome.into() })
        .inc();
}

/// An HTTP request was answered (`route` is the matched pattern, not the path).
pub fn http_request(method: &str, route: &str, code: u16, secs: f64) {
    let labels = HttpLabels { method: method.into(), route: route.into(), code: code.to_string() };
    METRICS.http_requests.get_or_create(&labels).inc();
    METRICS.http_duration.get_or_create(&labels).observe(secs);
}

/// A connection was refused: `[server] max_connections` were open.
pub fn connection_refused() {
    METRICS.connections_closed.get_or_create(&ReasonLabel { reason: "refused".into() }).inc();
}

/// A connection was closed by `[server] header_read_timeout` or `idle_timeout`.
pub fn connection_timed_out() {
    METRICS.connections_closed.get_or_create(&ReasonLabel { reason: "timed_out".into() }).inc();
}

/// A pruner pass deleted these rows.
pub fn pruned(pruned: &crate::store::Pruned) {
    for (table, n) in pruned.counts() {
        METRICS.pruned_rows.get_or_create(&TableLabel { table: table.into() }).inc_by(n);
    }
}

/// A run breached its RTO (said once per run).
pub fn rto_breached(workflow: &str) {
    METRICS.rto_breaches.get_or_create(&WorkflowLabel { workflow: workflow.into() }).inc();
}

/// The outbox at scrape time: undelivered rows and the oldest one's age.
pub fn set_outbox_backlog(pending: i64, oldest_age_secs: f64) {
    METRICS.outbox_pending.set(pending);
    METRICS.outbox_oldest.set(oldest_age_secs);
}

/// Workers alive at scrape time.
pub fn set_workers_live(n: i64) {
    METRICS.workers_live.set(n);
}

/// The scenario label of drills run without a scenario.
pub const NO_SCENARIO: &str = "(none)";

/// Drill freshness at scrape time: `last` is (workflow, scenario, passed,
/// ended at unix ms) of each scenario's newest drill per verdict;
/// `overdue` each workflow with `drill_every`. Series of workflows and
/// scenarios no longer there go (the families are replaced).
pub fn set_drill_freshness(
    last: &[(String, Option<String>, bool, i64)],
    overdue: &[(String, bool)],
) {
    METRICS.drill_last.clear();
    for (workflow, scenario, passed, at) in last {
        let labels = DrillLabels {
            workflow: workflow.clone(),
            scenario: scenario.clone().unwrap_or_else(|| NO_SCENARIO.into()),
            verdict: if *passed { "passed" } else { "failed" }.into(),
        };
        METRICS.drill_last.get_or_create(&labels).set(*at as f64 / 1000.0);
    }
    METRICS.drill_overdue.clear();
    for (workflow, is) in overdue {
        let labels = WorkflowLabel { workflow: workflow.clone() };
        METRICS.drill_overdue.get_or_create(&labels).set(i64::from(*is));
    }
}

/// One `lifeboat doctor` check's latest result (1 pass, 0.5 warn, 0 fail).
pub fn set_readiness(check: &str, target: &str, value: f64) {
    let labels = ReadinessLabels { check: check.into(), target: target.into() };
    METRICS.readiness.get_or_create(&labels).set(value);
}

/// `n` trace spans were dropped instead of exported (`crate::telemetry`):
/// `reason` is `export_failed` or `queue_full`.
pub fn otlp_spans_dropped(reason: &str, n: u64) {
    METRICS.otlp_spans_dropped.get_or_create(&ReasonLabel { reason: reason.into() }).inc_by(n);
}

/// A pruner pass failed.
pub fn prune_failed() {
    METRICS.prune_failures.inc();
}

/// Sets the gauges of active runs; statuses absent from `counts` are set
/// to 0. Ended runs have no gauge: counting them would read all of history
/// at every scrape (`lifeboat_runs_finished_total` counts them as they end).
pub fn set_run_counts(counts: &[(RunStatus, i64)]) {
    for status in
        [RunStatus::Queued, RunStatus::Running, RunStatus::Waiting, RunStatus::RollingBack]
    {
        let n = counts.iter().filter(|(s, _)| *s == status).map(|(_, n)| *n).sum();
        METRICS.runs.get_or_create(&StatusLabel { status: status.as_str().into() }).set(n);
    }
}

/// The registry in Prometheus text format (OpenMetrics text, ends with `# EOF`).
pub fn encode() -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &METRICS.registry)
        .expect("writing to a String cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    /// One sample in every family (a labelled family shows only once it has one).
    fn touch_every_family() {
        super::run_started("failover");
        super::run_finished("failover", crate::store::RunStatus::Succeeded);
        super::step_finished("shell", "succeeded", 0.2);
        super::lease_takeover();
        super::webhook("alertmanager", "started");
        super::schedule_fired("backup");
        super::notification("oncall-email", "delivered");
        super::set_run_counts(&[(crate::store::RunStatus::Queued, 3)]);
        super::rto_breached("failover");
        super::set_outbox_backlog(2, 90.5);
        super::set_workers_live(3);
        super::set_readiness("channel", "oncall-email", 0.0);
        super::http_request("GET", "/healthz", 200, 0.001);
        super::connection_refused();
        super::pruned(&crate::store::Pruned { runs: 1, ..Default::default() });
        super::prune_failed();
        super::otlp_spans_dropped("export_failed", 4);
        super::set_drill_freshness(
            &[("failover".into(), Some("happy".into()), true, 1_700_000_000_000)],
            &[("failover".into(), true)],
        );
    }

    #[test]
    fn every_family_is_rendered_with_its_labels() {
        touch_every_family();
        let text = super::encode();
        for needle in [
            "lifeboat_runs_started_total{workflow=\"failover\"}",
            "lifeboat_runs_finished_total{workflow=\"failover\",status=\"succeeded\"}",
            "lifeboat_step_duration_seconds_bucket{",
            "lifeboat_lease_takeovers_total",
            "lifeboat_webhook_requests_total{hook=\"alertmanager\",outcome=\"started\"}",
            "lifeboat_schedule_fires_total{workflow=\"backup\"}",
            "lifeboat_notification_deliveries_total{channel=\"oncall-email\",outcome=\"delivered\"}",
            "lifeboat_runs{status=\"queued\"} 3",
            "lifeboat_runs{status=\"rolling_back\"} 0",
            "lifeboat_rto_breaches_total{workflow=\"failover\"}",
            "lifeboat_outbox_pending 2",
            "lifeboat_outbox_oldest_pending_seconds 90.5",
            "lifeboat_workers_live 3",
            "lifeboat_readiness{check=\"channel\",target=\"oncall-email\"} 0",
            "lifeboat_otlp_spans_dropped_total{reason=\"export_failed\"}",
            "lifeboat_drill_last_timestamp_seconds{workflow=\"failover\",scenario=\"happy\",verdict=\"passed\"} 1700000000.0",
            "lifeboat_drill_overdue{workflow=\"failover\"} 1",
        ] {
            assert!(text.contains(needle), "missing {needle} in:\n{text}");
        }
    }

    /// Every series name a scrape can show: a counter `x` is sampled as
    /// `x_total`, a histogram as `x_bucket`, `x_sum` and `x_count`.
    fn exported_series(metrics: &str) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        for line in metrics.lines() {
            let mut words = line.split_whitespace();
            if let (Some("#"), Some("TYPE"), Some(name), Some(kind)) =
                (words.next(), words.next(), words.next(), words.next())
            {
                let suffixes: &[&str] = match kind {
                    "counter" => &["_total"],
                    "histogram" => &["_bucket", "_sum", "_count"],
                    _ => &[""],
                };
                names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
            }
        }
        names
    }

    /// The `lifeboat_…` names in a text.
    fn referenced(text: &str) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        let mut rest = text;
        while let Some(at) = rest.find("lifeboat_") {
            let tail = &rest[at..];
            let end =
                tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
            names.insert(tail[..end].to_string());
            rest = &tail[end..];
        }
        names
    }

    /// contrib/grafana and contrib/prometheus chart and alert on what this
    /// registry exports, and nothing else (a renamed metric breaks them).
    #[test]
    fn the_dashboard_and_the_alerting_rules_name_only_exported_metrics() {
        touch_every_family();
        let exported = exported_series(&super::encode());
        let dashboard = include_str!("../../contrib/grafana/lifeboat.json");
        let parsed: serde_json::Value = serde_json::from_str(dashboard).expect("dashboard JSON");
        assert!(parsed["panels"].as_array().is_some_and(|p| p.len() >= 10), "too few panels");
        let rules = include_str!("../../contrib/prometheus/lifeboat-rules.yml");
        assert!(rules.contains("alert: LifeboatDrillOverdue"), "no drill freshness alert");
        // Only the queries of the rules: their descriptions may name series loosely.
        let exprs: String = rules
            .lines()
            .filter(|l| l.trim_start().starts_with("expr:"))
            .collect::<Vec<_>>()
            .join("\n");
        for (file, text) in [("lifeboat.json", dashboard), ("lifeboat-rules.yml", exprs.as_str())] {
            let unknown: Vec<_> = referenced(text).difference(&exported).cloned().collect();
            assert!(unknown.is_empty(), "{file} names metrics not exported: {unknown:?}");
        }
        let shown = referenced(dashboard);
        for needed in [
            "lifeboat_runs",
            "lifeboat_step_duration_seconds_bucket",
            "lifeboat_rto_breaches_total",
            "lifeboat_outbox_pending",
            "lifeboat_workers_live",
            "lifeboat_readiness",
            "lifeboat_lease_takeovers_total",
            "lifeboat_drill_last_timestamp_seconds",
            "lifeboat_drill_overdue",
        ] {
            assert!(shown.contains(needed), "the dashboard does not show {needed}");
        }
    }
}
