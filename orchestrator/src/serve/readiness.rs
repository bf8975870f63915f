//! `serve` runs the checks of `lifeboat doctor` every
//! `[server] readiness_interval` and exports each as
//! `lifeboat_readiness{check,target}`, so a broken SMTP password pages
//! someone on an ordinary Tuesday, not during the failover. Failures are
//! logged (a warning) once when they start and once when they clear.

use std::collections::BTreeMap;

use tokio_util::sync::CancellationToken;

use crate::doctor::{Finding, Status};

pub async fn run(ctx: crate::app::Ctx, shutdown: CancellationToken) {
    let every = ctx.config.server.readiness_interval.0;
    if every.is_zero() {
        return;
    }
    let mut last: BTreeMap<(&'static str, String), Status> = BTreeMap::new();
    loop {
        let findings = tokio::select! {
            findings = crate::doctor::examine_ctx(&ctx) => findings,
            () = shutdown.cancelled() => return,
        };
        record(&findings, &mut last);
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// Sets the gauges; logs what changed to or from failing. Two findings of
/// one check and target (a channel and its test) keep the worse.
fn record(findings: &[Finding], last: &mut BTreeMap<(&'static str, String), Status>) {
    let mut now: BTreeMap<(&'static str, String), &Finding> = BTreeMap::new();
    for f in findings {
        let key = (f.check, f.target.clone());
        if now.get(&key).is_none_or(|seen| seen.status < f.status) {
            now.insert(key, f);
        }
    }
    for ((check, target), f) in &now {
        crate::metrics::set_readiness(check, target, f.status.gauge());
        let before = last.insert((check, target.clone()), f.status);
        match (before, f.status) {
            (Some(Status::Fail), Status::Fail) => {}
            // A warning: serve itself works; what it found is the operator's
            // to fix, and the gauge is what pages.
            (_, Status::Fail) => tracing::warn!(
                check, target = %target, detail = %f.detail, fix = f.fix.as_deref().unwrap_or(""),
                "Readiness check failing."
            ),
            (Some(Status::Fail), _) => {
                tracing::info!(check, target = %target, "Readiness check passes again.")
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worse_of_two_findings_of_one_target_is_exported() {
        let findings = [
            Finding::pass("channel", "ready-test-mail", "ok"),
            Finding::fail("channel", "ready-test-mail", "535", "fix"),
        ];
        let mut last = BTreeMap::new();
        record(&findings, &mut last);
        assert_eq!(last[&("channel", "ready-test-mail".to_string())], Status::Fail);
        let text = crate::metrics::encode();
        assert!(
            text.contains("lifeboat_readiness{check=\"channel\",target=\"ready-test-mail\"} 0"),
            "{text}"
        );
    }
}
