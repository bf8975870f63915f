//! `lifeboat doctor`: is this deployment ready for the day? Each check
//! yields [`Finding`]s (pass, warn or fail, with the fix for anything not
//! passing); `cli/doctor.rs` prints them and `serve` runs the same checks
//! periodically and exports them as `lifeboat_readiness{check,target}`.
//!
//! Doctor only looks: it never migrates the database, never sends a
//! message unless asked (`--send-test`), and never changes a file but the
//! probe it writes and removes in a `file` channel's directory.

mod database;
mod reach;
mod setup;

use std::path::PathBuf;

use serde::Serialize;

use crate::app::Options;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }

    /// The value of `lifeboat_readiness`.
    pub fn gauge(self) -> f64 {
        match self {
            Status::Pass => 1.0,
            Status::Warn => 0.5,
            Status::Fail => 0.0,
        }
    }
}

/// One check of one target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// What kind of check: `config`, `env`, `database`, `workflow`,
    /// `channel`, `connection`, `program`, `clock`, `replicas`.
    pub check: &'static str,
    /// What was checked: a file, a variable, a channel's name.
    pub target: String,
    pub status: Status,
    /// What was found, one line.
    pub detail: String,
    /// What to do about it (always set unless it passed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Finding {
    pub fn pass(check: &'static str, target: impl Into<String>, detail: impl Into<String>) -> Self {
        Finding {
            check,
            target: target.into(),
            status: Status::Pass,
            detail: one_line(detail.into()),
            fix: None,
        }
    }

    pub fn warn(
        check: &'static str,
        target: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Finding { status: Status::Warn, ..Finding::fail(check, target, detail, fix) }
    }

    pub fn fail(
        check: &'static str,
        target: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Finding {
            check,
            target: target.into(),
            status: Status::Fail,
            detail: one_line(detail.into()),
            fix: Some(one_line(fix.into())),
        }
    }
}

/// One line, control characters made visible: findings quote servers'
/// answers and file contents.
fn one_line(text: String) -> String {
    crate::text::inline(text.trim()).into_owned()
}

/// What doctor may do beyond looking.
#[derive(Debug, Clone, Copy, Default)]
pub struct Probe {
    /// Send a test message through every channel.
    pub send_test: bool,
}

/// Every check, in the order a person fixes things: the configuration,
/// the database, the workflows, then what they reach.
pub async fn examine(opts: &Options, probe: Probe) -> Vec<Finding> {
    let mut findings = Vec::new();
    let Some(setup) = setup::load(opts, &mut findings) else {
        return findings;
    };
    examine_setup(&setup, probe, findings).await
}

/// The checks of a running `serve`, on the configuration it runs with.
pub async fn examine_ctx(ctx: &crate::app::Ctx) -> Vec<Finding> {
    let setup = Setup {
        config: ctx.config.clone(),
        file: ctx.config_file.clone(),
        base: ctx.base.clone(),
        database_url: ctx.database_url.clone(),
        workflows_dir: ctx.workflows_dir.clone(),
        store: Some(ctx.store.clone()),
    };
    examine_setup(&setup, Probe::default(), Vec::new()).await
}

async fn examine_setup(setup: &Setup, probe: Probe, mut findings: Vec<Finding>) -> Vec<Finding> {
    setup::env_vars(setup, &mut findings);
    let store = database::check(setup, &mut findings).await;
    // Compiling every file and searching PATH block: off the async runtime,
    // so that `serve`'s readiness checks never stall its requests (a huge
    // file dropped into the workflows directory once held them ~0.8 s).
    let blocking = setup.clone();
    let checked = tokio::task::spawn_blocking(move || {
        let mut found = Vec::new();
        let workflows = setup::workflows(&blocking, &mut found);
        setup::programs(&workflows, &mut found);
        found
    })
    .await;
    match checked {
        Ok(found) => findings.extend(found),
        Err(e) => findings.push(Finding::fail(
            "workflow",
            setup.workflows_dir.display().to_string(),
            format!("checking the workflows stopped: {e}"),
            "run `lifeboat validate` on the directory",
        )),
    }
    reach::channels(setup, probe, &mut findings).await;
    reach::connections(setup, &mut findings).await;
    if let Some(store) = store {
        database::replicas(store.as_ref(), setup, &mut findings).await;
    }
    findings
}

/// The configuration doctor works from (see `setup::load`).
#[derive(Clone)]
pub struct Setup {
    pub config: crate::config::Config,
    /// The file it came from, when there is one.
    pub file: Option<PathBuf>,
    pub base: PathBuf,
    pub database_url: String,
    pub workflows_dir: PathBuf,
    /// The store `serve` already holds (doctor on its own opens one).
    pub store: Option<std::sync::Arc<dyn crate::store::Store>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn findings_are_one_printable_line_and_a_fix_comes_with_every_problem() {
        let f = Finding::fail("channel", "mail", "535 bad\r\ncredentials\u{1b}[31m", "set it");
        assert!(!f.detail.contains('\n') && !f.detail.contains('\u{1b}'), "{}", f.detail);
        assert_eq!(f.fix.as_deref(), Some("set it"));
        let w = Finding::warn("clock", "system", "skew 3 s", "run chrony");
        assert_eq!((w.status, w.fix.is_some()), (Status::Warn, true));
        assert_eq!(Finding::pass("clock", "system", "ok").fix, None);
        assert!(Status::Fail > Status::Warn && Status::Warn > Status::Pass);
        assert_eq!(
            (Status::Pass.gauge(), Status::Warn.gauge(), Status::Fail.gauge()),
            (1.0, 0.5, 0.0)
        );
    }
}
