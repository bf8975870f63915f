//! Retention: `[retention]`'s cutoffs (`policy`; the section's types are in
//! `config.rs`), a whole pass of the store's batched prune (`prune`), and
//! the pruner `serve` runs in the background (`run`). What may be deleted,
//! and how, is the store's (`store/prune.rs`).
//!
//! Nothing is deleted unless configured: `runs` defaults to `never`, so an
//! upgrade never starts deleting the history someone needs for a
//! postmortem. `lifeboat init` writes `runs = "90d"` for new deployments.
//! The audit log is never pruned. Drill runs are kept `drills` (400 days
//! unless set), and never less long than their workflow's live runs.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

pub use crate::config::{Keep, RetentionConfig};
use crate::store::{NewAudit, PrunePolicy, Pruned, Store};

/// `[retention]`'s cutoffs at `now`.
pub fn policy(config: &RetentionConfig, now: i64) -> PrunePolicy {
    PrunePolicy {
        cutoff: config.runs.cutoff(now),
        workflows: config.workflows.iter().map(|(w, keep)| (w.clone(), keep.cutoff(now))).collect(),
        drills: config.drills.cutoff(now),
        only: None,
    }
}

/// What one pass deletes (or counts, `dry_run`).
pub struct Pass<'a> {
    pub policy: &'a PrunePolicy,
    /// Schedule ticks older than this go (each schedule's latest kept).
    pub ticks_before: Option<i64>,
    /// Ended runs per batch.
    pub batch: usize,
    pub dry_run: bool,
}

/// One whole pass: batches of runs until none is left, then the old
/// schedule ticks and the expired webhook signatures; `each` sees every
/// batch's counts as it commits. Yields between batches, so the workers'
/// writes interleave with the pass's, and ends early (with what it did)
/// once `stop` is cancelled, between batches: a batch is never cut short.
pub async fn prune(
    store: &dyn Store,
    pass: Pass<'_>,
    stop: &CancellationToken,
    mut each: impl FnMut(&Pruned) + Send,
) -> crate::store::Result<Pruned> {
    let Pass { policy, ticks_before, batch, dry_run } = pass;
    let mut total = Pruned::default();
    let mut after = None;
    while !stop.is_cancelled() {
        let done = store.prune_runs(policy, after.as_ref(), batch, dry_run).await?;
        each(&done.pruned);
        total.add(&done.pruned);
        match done.next {
            Some(next) => after = Some(next),
            None => break,
        }
        tokio::task::yield_now().await;
    }
    let now = crate::store::now_ms();
    while !stop.is_cancelled() {
        let done = store.prune_markers(ticks_before, now, batch, dry_run).await?;
        each(&done);
        total.add(&done);
        if dry_run || (done.schedule_ticks < batch as u64 && done.webhook_signatures < batch as u64)
        {
            break;
        }
        tokio::task::yield_now().await;
    }
    Ok(total)
}

/// The pruner of `serve`: a pass now and every `interval` until `shutdown`
/// (which ends a pass between two batches). Rows are counted in the metrics
/// batch by batch; a pass that deleted something is logged and audited. A
/// failed pass is logged and counted, and the next one tries again: it
/// never stops `serve`.
pub async fn run(
    store: Arc<dyn Store>,
    config: RetentionConfig,
    actor: String,
    shutdown: CancellationToken,
) {
    if !config.prunes() {
        tracing::info!("Retention is off ([retention] runs = \"never\"): no run is deleted.");
        return;
    }
    let every = config.interval.0.0;
    loop {
        let now = crate::store::now_ms();
        let policy = policy(&config, now);
        let pass = Pass {
            policy: &policy,
            ticks_before: policy.cutoff,
            batch: config.batch.0,
            dry_run: false,
        };
        match prune(&*store, pass, &shutdown, crate::metrics::pruned).await {
            Ok(pruned) => {
                if !pruned.is_empty() {
                    tracing::info!(
                        runs = pruned.runs,
                        steps = pruned.steps,
                        attempts = pruned.attempts,
                        events = pruned.events,
                        requests = pruned.requests,
                        outbox = pruned.outbox,
                        schedule_ticks = pruned.schedule_ticks,
                        webhook_signatures = pruned.webhook_signatures,
                        "Pruned ended runs past their retention."
                    );
                    let entry = NewAudit {
                        actor: actor.clone(),
                        action: "prune".into(),
                        run_id: None,
                        step_id: None,
                        payload: audit_payload(&policy, &pruned),
                    };
                    if let Err(e) = store.audit_append(entry).await {
                        tracing::warn!(error = %e, "Could not write the audit entry of a prune.");
                    }
                }
            }
            Err(e) => {
                crate::metrics::prune_failed();
                tracing::warn!(error = %e, "Pruning failed; trying again at the next interval.");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// The payload of a prune's audit entry: what went, and by which cutoffs,
/// so the log says where a run that is no longer there went.
pub fn audit_payload(policy: &PrunePolicy, pruned: &Pruned) -> serde_json::Value {
    serde_json::json!({
        "cutoff": policy.cutoff,
        "workflows": policy.workflows,
        "drills": policy.drills,
        "only": policy.only,
        "pruned": pruned,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `[retention]` as `lifeboat.toml` holds it, through the config loader.
    fn parse(toml: &str) -> Result<RetentionConfig, String> {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("lifeboat.toml");
        std::fs::write(&path, toml).expect("writing the config");
        crate::config::Config::load(Some(&path))
            .map(|(config, _)| config.retention)
            .map_err(|e| format!("{e:#}"))
    }

    #[test]
    fn retention_is_off_unless_configured() {
        let config = parse("").unwrap();
        assert_eq!(config, RetentionConfig::default());
        assert_eq!(parse("[retention]\n").unwrap(), config);
        assert!(!config.prunes());
        assert_eq!(policy(&config, 1_000).cutoff, None);
    }

    #[test]
    fn per_workflow_retention_replaces_the_default_for_its_runs() {
        let config = parse(
            "[retention]\nruns = \"90d\"\ninterval = \"10m\"\nbatch = 50\n\
             [retention.workflows]\nfailover = \"400d\"\nscratch = \"never\"\n",
        )
        .unwrap();
        let day = 86_400_000;
        let now = 1_000 * day;
        let policy = policy(&config, now);
        assert_eq!(policy.cutoff_of("nightly", false), Some(now - 90 * day));
        assert_eq!(policy.cutoff_of("failover", false), Some(now - 400 * day));
        assert_eq!(policy.cutoff_of("scratch", false), None);
        assert_eq!(config.interval.0.as_millis(), 600_000);
        assert_eq!(config.batch.0, 50);
    }

    #[test]
    fn drill_runs_keep_the_longer_of_drills_and_their_workflows_retention() {
        let day = 86_400_000;
        let now = 1_000 * day;
        let defaults = policy(&parse("[retention]\nruns = \"90d\"\n").unwrap(), now);
        assert_eq!(
            defaults.cutoff_of("nightly", true),
            Some(now - 400 * day),
            "400 days unless set"
        );
        let config = parse(
            "[retention]\nruns = \"90d\"\ndrills = \"180d\"\n\
             [retention.workflows]\nfailover = \"400d\"\nscratch = \"never\"\n",
        )
        .unwrap();
        let policy = policy(&config, now);
        assert_eq!(policy.cutoff_of("nightly", true), Some(now - 180 * day));
        assert_eq!(
            policy.cutoff_of("failover", true),
            Some(now - 400 * day),
            "never less than live runs"
        );
        assert_eq!(policy.cutoff_of("scratch", true), None);
        let never = parse("[retention]\nruns = \"90d\"\ndrills = \"never\"\n").unwrap();
        assert_eq!(super::policy(&never, now).cutoff_of("nightly", true), None);
    }

    #[test]
    fn values_that_cannot_work_are_refused_naming_their_key() {
        for (toml, key, says) in [
            ("runs = \"0s\"", "retention.runs", "less than an hour"),
            ("runs = \"90\"", "retention.runs", "no unit"),
            ("runs = \"forever\"", "retention.runs", "not a duration"),
            ("interval = \"0s\"", "retention.interval", "shorter than a second"),
            ("batch = 0", "retention.batch", "not a batch size"),
            ("batch = 1000000", "retention.batch", "not a batch size"),
            (
                "[retention.workflows]\nfailover = \"5m\"",
                "retention.workflows.failover",
                "less than an hour",
            ),
            ("drills = \"30m\"", "retention.drills", "less than an hour"),
            ("modes = {}", "modes", "unknown field"),
        ] {
            let e = parse(&format!("[retention]\n{toml}\n")).unwrap_err();
            assert!(e.contains("invalid configuration") && e.contains(says), "{toml}: {e}");
            assert!(e.contains(key), "{toml}: the error names `{key}`: {e}");
        }
    }
}
