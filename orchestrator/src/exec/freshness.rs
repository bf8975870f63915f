//! Drill freshness (issue #14): per scenario, when a workflow was last
//! drilled and with what verdict, and whether its proof is overdue against
//! `objectives.drill_every`. A pure function of the workflow, the store's
//! `drill_freshness` rows ([`DrillMark`]) and the time, so `plan`,
//! `drills`, the API, `/metrics` and the `drill_overdue` notice
//! (`triggers/overdue.rs`) all say the same thing.
//!
//! A failed drill is a rehearsal but not a proof: a scenario is overdue
//! when it has no *passing* drill within `drill_every`, whatever failed
//! since. The scenarios that must stay fresh are the declared ones (`drills:`);
//! a workflow that declares none must have some drill, scenario or not.

use serde::Serialize;

use crate::compile::CompiledWorkflow;
use crate::store::{DrillMark, Store, StoreError};

/// A workflow's freshness at an instant.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Freshness {
    pub workflow: String,
    /// `objectives.drill_every` as written (`30d`), and in ms.
    pub drill_every: Option<String>,
    pub drill_every_ms: Option<u64>,
    /// Some scenario that must stay fresh is not.
    pub overdue: bool,
    pub scenarios: Vec<ScenarioFreshness>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScenarioFreshness {
    /// `None`: drills run with no scenario.
    pub scenario: Option<String>,
    /// The newest drill with a verdict, passed or failed.
    pub last: Option<LastDrill>,
    /// The newest passing drill, and the newest failing one.
    pub last_passed: Option<LastDrill>,
    pub last_failed: Option<LastDrill>,
    /// When its proof runs (or ran) out: the last pass plus `drill_every`;
    /// 0 when it never passed; `None` without `drill_every`.
    pub due_at_ms: Option<i64>,
    pub overdue: bool,
    /// `last drilled 3 days ago (passed)`, `never drilled`, with `OVERDUE`.
    pub summary: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LastDrill {
    pub run: String,
    pub at_ms: i64,
    pub passed: bool,
    /// `3 days ago`.
    pub ago: String,
}

/// `N days ago` (or hours, minutes, seconds for fresher things).
pub fn ago(ms: i64) -> String {
    let secs = ms.max(0) / 1000;
    let (n, unit) = match secs {
        s if s < 60 => (s, "second"),
        s if s < 3600 => (s / 60, "minute"),
        s if s < 86_400 => (s / 3600, "hour"),
        s => (s / 86_400, "day"),
    };
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

/// The freshness of `wf` at `now` from its marks (any order).
pub fn freshness(wf: &CompiledWorkflow, marks: &[DrillMark], now: i64) -> Freshness {
    let every = wf.definition.objectives.as_ref().and_then(|o| o.drill_every);
    let declared: Vec<Option<String>> = wf.definition.drills.keys().cloned().map(Some).collect();
    let mut keys = declared.clone();
    let adhoc = marks.iter().any(|m| m.scenario.is_none());
    if declared.is_empty() || adhoc {
        keys.push(None);
    }
    let required = |key: &Option<String>| match declared.is_empty() {
        true => key.is_none(),
        false => key.is_some(),
    };
    let newest = |key: &Option<String>, passed: Option<bool>| {
        marks
            .iter()
            .filter(|m| &m.scenario == key && passed.is_none_or(|p| m.passed == p))
            .max_by_key(|m| m.at)
            .map(|m| LastDrill {
                run: m.run_id.clone(),
                at_ms: m.at,
                passed: m.passed,
                ago: ago(now - m.at),
            })
    };
    let scenarios: Vec<ScenarioFreshness> = keys
        .into_iter()
        .map(|key| {
            let last = newest(&key, None);
            let last_passed = newest(&key, Some(true));
            let last_failed = newest(&key, Some(false));
            // A huge `drill_every` saturates instead of overflowing.
            let every_ms = every.map(|e| i64::try_from(e.as_millis()).unwrap_or(i64::MAX));
            let due_at_ms =
                every_ms.map(|e| last_passed.as_ref().map_or(0, |p| p.at_ms.saturating_add(e)));
            let overdue = required(&key) && due_at_ms.is_some_and(|due| now > due);
            let summary = summary(last.as_ref(), last_passed.as_ref(), overdue, every);
            ScenarioFreshness {
                scenario: key,
                last,
                last_passed,
                last_failed,
                due_at_ms,
                overdue,
                summary,
            }
        })
        .collect();
    Freshness {
        workflow: wf.name.clone(),
        drill_every: every.map(|e| e.to_string()),
        drill_every_ms: every.map(|e| e.as_millis()),
        overdue: scenarios.iter().any(|s| s.overdue),
        scenarios,
    }
}

fn summary(
    last: Option<&LastDrill>,
    last_passed: Option<&LastDrill>,
    overdue: bool,
    every: Option<crate::model::Duration>,
) -> String {
    let word = |passed: bool| if passed { "passed" } else { "failed" };
    let mut text = match last {
        None => "never drilled".to_string(),
        Some(l) => format!("last drilled {} ({})", l.ago, word(l.passed)),
    };
    match (last, last_passed) {
        (Some(l), Some(p)) if !l.passed => text.push_str(&format!("; last passed {}", p.ago)),
        (Some(_), None) => text.push_str("; never passed"),
        _ => {}
    }
    if overdue && let Some(every) = every {
        text.push_str(&format!(" — OVERDUE (drill_every {every})"));
    }
    text
}

impl Freshness {
    /// The overdue periods to claim for a `drill_overdue` notice: (scenario,
    /// or "" for drills without one; when its proof ran out, 0 if never).
    pub fn overdue_periods(&self) -> Vec<(String, i64)> {
        self.scenarios
            .iter()
            .filter(|s| s.overdue)
            .map(|s| (s.scenario.clone().unwrap_or_default(), s.due_at_ms.unwrap_or(0)))
            .collect()
    }

    /// Whether anything is worth showing: a `drill_every`, or a drill.
    pub fn is_empty(&self) -> bool {
        self.drill_every.is_none() && self.scenarios.iter().all(|s| s.last.is_none())
    }
}

/// Scenario name as shown (`(no scenario)` for drills run without one).
pub fn scenario_label(s: &ScenarioFreshness) -> &str {
    s.scenario.as_deref().unwrap_or("(no scenario)")
}

/// Reads `wf`'s marks and computes its freshness at `now`.
pub async fn read(
    store: &dyn Store,
    wf: &CompiledWorkflow,
    now: i64,
) -> Result<Freshness, StoreError> {
    let marks = store.drill_marks(&wf.name).await?;
    Ok(freshness(wf, &marks, now))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    fn wf(text: &str) -> CompiledWorkflow {
        crate::compile::compile("wf.yaml", text, Default::default())
            .unwrap_or_else(|r| panic!("{}", r.render(false)))
    }

    const WF: &str = "name: wf\nobjectives: { drill_every: 30d }\nsteps:\n  a: { uses: set, with: { x: y } }\ndrills:\n  happy: {}\n  sad: {}\n";

    fn mark(scenario: Option<&str>, passed: bool, at: i64) -> DrillMark {
        DrillMark {
            workflow: "wf".into(),
            scenario: scenario.map(String::from),
            passed,
            run_id: format!("r{at}"),
            at,
        }
    }

    #[test]
    fn a_scenario_with_no_pass_within_drill_every_is_overdue() {
        let now = 100 * DAY;
        let marks = [
            mark(Some("happy"), true, now - 3 * DAY),
            mark(Some("sad"), true, now - 40 * DAY),
            mark(Some("sad"), false, now - 2 * DAY),
        ];
        let f = freshness(&wf(WF), &marks, now);
        assert!(f.overdue);
        let happy = &f.scenarios[0];
        assert_eq!(happy.summary, "last drilled 3 days ago (passed)");
        assert!(!happy.overdue);
        assert_eq!(happy.due_at_ms, Some(now + 27 * DAY));
        let sad = &f.scenarios[1];
        assert_eq!(
            sad.summary,
            "last drilled 2 days ago (failed); last passed 40 days ago — OVERDUE (drill_every 30d)"
        );
        assert_eq!(f.overdue_periods(), [("sad".to_string(), now - 10 * DAY)]);
        assert_eq!(f.scenarios.len(), 2, "no ad-hoc drill, no row for one");
    }

    #[test]
    fn a_never_drilled_scenario_is_overdue_since_forever_and_ad_hoc_drills_do_not_count() {
        let now = 100 * DAY;
        let f = freshness(&wf(WF), &[mark(None, true, now - DAY)], now);
        let got: Vec<(&str, bool, &str)> = f
            .scenarios
            .iter()
            .map(|s| (scenario_label(s), s.overdue, s.summary.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("happy", true, "never drilled — OVERDUE (drill_every 30d)"),
                ("sad", true, "never drilled — OVERDUE (drill_every 30d)"),
                ("(no scenario)", false, "last drilled 1 day ago (passed)"),
            ]
        );
        assert_eq!(f.overdue_periods(), [("happy".to_string(), 0), ("sad".to_string(), 0)]);
    }

    #[test]
    fn without_scenarios_any_drill_counts_and_without_drill_every_nothing_is_overdue() {
        let now = 100 * DAY;
        let text = "name: wf\nobjectives: { drill_every: 1d }\nsteps:\n  a: { uses: set }\n";
        let f = freshness(&wf(text), &[mark(None, true, now - 2 * DAY)], now);
        assert!(f.overdue && f.scenarios.len() == 1, "{f:?}");
        let plain = freshness(&wf("name: wf\nsteps:\n  a: { uses: set }\n"), &[], now);
        assert!(!plain.overdue && plain.is_empty(), "{plain:?}");
        assert_eq!(plain.scenarios[0].summary, "never drilled");
    }

    #[test]
    fn a_drill_every_beyond_the_calendar_saturates_and_is_never_overdue() {
        let text = WF.replace("drill_every: 30d", "drill_every: 200000000000d");
        let now = 100 * DAY;
        let f = freshness(
            &wf(&text),
            &[mark(Some("happy"), true, now), mark(Some("sad"), true, 1)],
            now,
        );
        assert!(!f.overdue, "{f:?}");
        assert_eq!(f.scenarios[0].due_at_ms, Some(i64::MAX));
    }

    #[test]
    fn ages_read_in_the_largest_whole_unit() {
        assert_eq!(ago(0), "0 seconds ago");
        assert_eq!(ago(61_000), "1 minute ago");
        assert_eq!(ago(3 * 3_600_000), "3 hours ago");
        assert_eq!(ago(DAY), "1 day ago");
        assert_eq!(ago(-5), "0 seconds ago", "a clock skew never reads as the future");
    }
}
