//! The `drill_overdue` notice: a workflow whose drill scenarios have no
//! passing drill within `objectives.drill_every` notifies the channels of
//! its `notify` rules on `drill_overdue`, **once per overdue period** of
//! each scenario, however many `serve` replicas look.
//!
//! A period is a scenario's freshness running out (`due_at`: its last pass
//! plus `drill_every`, 0 when it never passed); a passing drill ends it,
//! and the next staleness is a new period. Each replica's watcher looks
//! every `[drill] check_every` and asks the store to claim the overdue
//! periods together with the notifications (`Store::claim_drill_overdue`):
//! the primary key of `drill_overdue` lets exactly one claim take a
//! period, as `schedule_ticks` does for ticks, and the outbox rows commit
//! with it. The message lists every overdue scenario of the workflow.

use std::sync::Arc;
use std::time::Duration;

use lifeboat_notify::context::{Incident, RunInfo};
use lifeboat_notify::{Action, Context, Message, Mode, Severity};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::catalog::WorkflowSource;
use crate::compile::CompiledWorkflow;
use crate::exec::freshness::{self, Freshness};
use crate::exec::runtime::Runtime;
use crate::model::Event;
use crate::store::{NewAudit, NewNotification, OverdueClaim, StoreError};

/// Runs the watcher until `shutdown`: a look at every workflow each `every`.
pub async fn run<S>(
    engine: Arc<crate::exec::engine::Engine>,
    source: Arc<S>,
    every: Duration,
    shutdown: CancellationToken,
) where
    S: WorkflowSource + ?Sized,
{
    let rt: &Runtime = &engine;
    loop {
        let now = crate::store::now_ms();
        for wf in source.workflows() {
            if let Err(e) = look(rt, &wf, now).await {
                tracing::warn!(workflow = %wf.name, error = %e, "Could not check drill freshness; retrying at the next look.");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// One look at `wf`: claims its overdue periods with a notice for each
/// channel of its `drill_overdue` rules. Returns the periods this replica
/// claimed (empty: nothing overdue, no rule, or claimed before).
pub async fn look(
    rt: &Runtime,
    wf: &CompiledWorkflow,
    now: i64,
) -> Result<Vec<(String, i64)>, StoreError> {
    let rules: Vec<_> =
        wf.definition.notify.iter().filter(|r| r.on.contains(&Event::DrillOverdue)).collect();
    let every = wf.definition.objectives.as_ref().and_then(|o| o.drill_every);
    if rules.is_empty() || every.is_none() {
        return Ok(Vec::new());
    }
    let fresh = freshness::read(&*rt.store, wf, now).await?;
    let mut periods = fresh.overdue_periods();
    if periods.is_empty() {
        return Ok(Vec::new());
    }
    periods.sort();
    let key: Vec<String> = periods.iter().map(|(s, due)| format!("{s}@{due}")).collect();
    let key = key.join(",");
    let ctx = context(wf, &fresh, &periods, now);
    let notifier = &rt.opts.notifier;
    let mut notifications = Vec::new();
    for rule in rules {
        let template = rule.template.as_ref().map_or("incident", |t| t.value.as_str());
        let rendered = notifier.templates().render(template, &ctx).unwrap_or_else(|e| {
            lifeboat_notify::Rendered {
                subject: format!("[lifeboat] {}: drill overdue", wf.name),
                text: format!(
                    "{}\n(the notification template failed: {e})",
                    ctx.message.clone().unwrap_or_default()
                ),
                html: None,
            }
        });
        let channels: Vec<String> = rule.channels.iter().map(|c| c.value.clone()).collect();
        for route in notifier.routes(Mode::Live, &channels) {
            let dedupe_key = format!("drill_overdue/{}/{}/{key}", wf.name, route.channel);
            if notifications.iter().any(|n: &NewNotification| n.dedupe_key == dedupe_key) {
                continue;
            }
            let mut message = Message::new(&ctx, rendered.clone());
            message.idempotency_key = dedupe_key.clone();
            notifications.push(NewNotification {
                dedupe_key,
                step_id: None,
                event: Event::DrillOverdue.name().into(),
                channel: route.channel,
                message: serde_json::to_value(&message).unwrap_or_default(),
                at: now,
            });
        }
    }
    let claim = OverdueClaim {
        workflow: wf.name.clone(),
        periods,
        now,
        notifications,
        audit: NewAudit {
            actor: "lifeboat".into(),
            action: "drill_overdue".into(),
            run_id: None,
            step_id: None,
            payload: json!({
                "workflow": wf.name,
                "drill_every": fresh.drill_every,
                "overdue": fresh.scenarios.iter().filter(|s| s.overdue).map(|s| json!({
                    "scenario": s.scenario, "summary": s.summary,
                })).collect::<Vec<_>>(),
            }),
        },
    };
    let claimed = rt.store.claim_drill_overdue(&claim).await?;
    if !claimed.is_empty() {
        tracing::info!(workflow = %wf.name, periods = ?claimed, "Drills overdue: notice queued.");
    }
    Ok(claimed)
}

/// The template context of a notice: about the workflow, not a run — its
/// id is the notice's subject (also the PagerDuty dedup key, so notices of
/// one workflow are one incident), and `message` says what is overdue.
fn context(
    wf: &CompiledWorkflow,
    fresh: &Freshness,
    periods: &[(String, i64)],
    now: i64,
) -> Context {
    let at = |ms: i64| chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default();
    let every = fresh.drill_every.clone().unwrap_or_default();
    let lines: Vec<String> = fresh
        .scenarios
        .iter()
        .filter(|s| s.overdue)
        .map(|s| format!("  {}: {}", freshness::scenario_label(s), s.summary))
        .collect();
    let first_due = periods.iter().map(|(_, due)| *due).filter(|d| *d > 0).min();
    let message = format!(
        "No passing drill of {} within drill_every {every}:\n{}\nRehearse with `lifeboat drill {} --scenario NAME`.",
        wf.name,
        lines.join("\n"),
        wf.name
    );
    let subject = OverdueClaim::subject(&wf.name);
    Context {
        event: Event::DrillOverdue.name().into(),
        action: Action::Trigger,
        run: RunInfo {
            id: subject.clone(),
            workflow: wf.name.clone(),
            status: "overdue".into(),
            mode: Mode::Live,
            started_at: at(now),
            finished_at: None,
            link: None,
            trigger: format!("drill_every {every}"),
            inputs: Default::default(),
        },
        incident: Incident {
            id: subject,
            severity: Severity::P3,
            service: wf.name.clone(),
            detected_at: at(first_due.unwrap_or(now)),
            description: format!("the drills of {} are overdue (drill_every {every})", wf.name),
            action_taken: None,
            expected_resolution: Some("a passing drill of each overdue scenario".into()),
        },
        steps: Vec::new(),
        step: None,
        approval: None,
        escalation: None,
        ack_url: None,
        message: Some(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WF: &str = "name: wf\nobjectives: { drill_every: 1d }\nnotify:\n  - on: [drill_overdue]\n    channels: [mail, mail]\nsteps:\n  a: { uses: set }\ndrills:\n  happy: {}\n";

    async fn world() -> (tempfile::TempDir, Arc<crate::exec::engine::Engine>, CompiledWorkflow) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("o.db").display());
        let store = crate::store::open(&url).await.unwrap();
        let engine = crate::exec::engine::Engine::new(store, Default::default());
        let wf = crate::compile::compile("wf.yaml", WF, Default::default())
            .unwrap_or_else(|r| panic!("{}", r.render(false)));
        (dir, engine, wf)
    }

    #[tokio::test]
    async fn an_overdue_scenario_is_noticed_once_per_period_whoever_looks() {
        let (_dir, engine, wf) = world().await;
        let now = crate::store::now_ms();
        assert_eq!(look(&engine, &wf, now).await.unwrap(), [("happy".to_string(), 0)]);
        // Another replica, later: the same period, nothing more.
        assert!(look(&engine, &wf, now + 1000).await.unwrap().is_empty());
        let outbox = engine.store.outbox(&OverdueClaim::subject("wf")).await.unwrap();
        assert_eq!(outbox.len(), 1, "one channel, named twice, one notice");
        let message: Message = serde_json::from_value(outbox[0].message.clone()).unwrap();
        assert!(message.subject.contains("Drill overdue: wf"), "{}", message.subject);
        assert!(
            message.text.contains("happy: never drilled — OVERDUE (drill_every 1d)"),
            "{}",
            message.text
        );
        assert!(!message.drill, "a reminder to real people, not a drill's message");
    }

    #[tokio::test]
    async fn a_workflow_without_a_rule_or_drill_every_claims_nothing() {
        let (_dir, engine, _) = world().await;
        let text = WF.replace("notify:\n  - on: [drill_overdue]\n    channels: [mail, mail]\n", "");
        let wf = crate::compile::compile("wf.yaml", &text, Default::default()).unwrap();
        assert!(look(&engine, &wf, crate::store::now_ms()).await.unwrap().is_empty());
        assert!(engine.store.audit_list(0, 10).await.unwrap().is_empty());
    }
}
