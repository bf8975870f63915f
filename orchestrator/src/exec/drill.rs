//! Drills: what a drill run carries (its faults and expectations, stored
//! with the run in `runs.drill` and read with it, so a drill costs no query
//! per step), the checks made before one starts, and its verdict.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::compile::{CompiledWorkflow, DrillAction, diagnostic::LineIndex};
use crate::model::{AnswerDecision, Expect, Fault};
use crate::store::{RunStatus, StepStatus};

/// A drill as stored with its run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DrillSpec {
    pub scenario: Option<String>,
    #[serde(default)]
    pub faults: Vec<Injected>,
    /// The scenario's people: who answers which waiting step.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub people: Vec<Answering>,
    #[serde(default)]
    pub expect: Expect,
    /// Who started it.
    pub started_by: String,
}

/// One fault and the step it is injected into.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Injected {
    pub step: String,
    pub fault: Fault,
}

/// A scenario's person answering a step (`people:`), as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answering {
    pub step: String,
    pub by: String,
    /// `None`: the step's own decision (approve an approval, ack an escalate).
    pub decision: Option<AnswerDecision>,
    pub comment: Option<String>,
}

impl DrillSpec {
    pub fn fault(&self, step: &str) -> Option<Fault> {
        self.faults.iter().find(|f| f.step == step).map(|f| f.fault)
    }
}

/// Why a drill cannot start.
#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    Exec(#[from] crate::exec::ExecError),
    /// Steps marked `irreversible: true` without a `drill:` entry.
    #[error("{}", refusal(.workflow, .steps))]
    Unprotected { workflow: String, steps: Vec<String> },
}

fn refusal(workflow: &str, steps: &[String]) -> String {
    format!(
        "drill of `{workflow}` refused: {}\n  say what each does in a drill: `drill: skip`, or a substitute body (`drill: {{uses: set, with: {{...}}}}`)",
        steps.join("\n  ")
    )
}

/// A drill of `wf`: the scenario (if named) with `injects` (`STEP=FAULT`,
/// overriding the scenario's fault for that step) — or an error naming what
/// does not exist, with a did-you-mean.
pub fn prepare(
    wf: &CompiledWorkflow,
    scenario: Option<&str>,
    injects: &[String],
    started_by: &str,
) -> Result<(DrillSpec, serde_json::Map<String, Value>), DrillError> {
    let unprotected = unprotected_steps(wf);
    if !unprotected.is_empty() {
        return Err(DrillError::Unprotected { workflow: wf.name.clone(), steps: unprotected });
    }
    let mut spec = DrillSpec { started_by: started_by.to_string(), ..Default::default() };
    let mut inputs = serde_json::Map::new();
    if let Some(name) = scenario {
        let Some(s) = wf.definition.drills.get(name) else {
            let names: Vec<&str> = wf.definition.drills.keys().map(String::as_str).collect();
            let hint =
                crate::suggest::did_you_mean(name, names.iter().copied()).unwrap_or_else(|| {
                    match names.is_empty() {
                        true => format!("{} declares no scenarios under `drills:`", wf.file),
                        false => format!("scenarios: {}", names.join(", ")),
                    }
                });
            return Err(DrillError::Input(format!(
                "`{}` has no drill scenario `{name}` ({hint})",
                wf.name
            )));
        };
        spec.scenario = Some(name.to_string());
        spec.expect = s.expect.clone();
        spec.faults = s
            .inject
            .iter()
            .map(|(step, f)| Injected { step: step.clone(), fault: f.value })
            .collect();
        spec.people = s
            .people
            .iter()
            .map(|(step, a)| Answering {
                step: step.clone(),
                by: a.by.value.clone(),
                decision: a.decision.as_ref().map(|d| d.value),
                comment: a.comment.clone(),
            })
            .collect();
        inputs = s.inputs.iter().map(|(k, v)| (k.clone(), v.value.clone())).collect();
    }
    for given in injects {
        let (step, fault) = parse_inject(wf, given)?;
        spec.faults.retain(|f| f.step != step);
        spec.faults.push(Injected { step, fault });
    }
    Ok((spec, inputs))
}

/// A drill to start: what the CLI and the API were given.
pub struct DrillRequest<'a> {
    pub scenario: Option<&'a str>,
    /// `STEP=FAULT`.
    pub injects: &'a [String],
    /// Inputs given by hand; they override the scenario's.
    pub inputs: serde_json::Map<String, Value>,
    pub started_by: &'a str,
    /// Lease it to this worker at once (`drill --wait`).
    pub drive_here: bool,
    /// A schedule tick `(schedule, tick ms)`: at most one drill per tick,
    /// across every replica (`triggers/schedule.rs`).
    pub schedule_tick: Option<(String, i64)>,
    /// The run's trigger; `None`: `{"kind": "drill", "by", "scenario"}`.
    pub trigger: Option<Value>,
}

/// Checks and starts a drill of `wf`: its run is created `mode: drill` with
/// its spec, and its audit entry (`drill`) in the same commit.
pub async fn start(
    rt: &crate::exec::runtime::Runtime,
    wf: &CompiledWorkflow,
    req: DrillRequest<'_>,
) -> Result<(crate::store::Created, DrillSpec), DrillError> {
    let (spec, mut inputs) = prepare(wf, req.scenario, req.injects, req.started_by)?;
    inputs.extend(req.inputs);
    let inputs = crate::exec::inputs::resolve(inputs, &wf.definition.inputs).map_err(|errors| {
        DrillError::Input(format!("inputs of `{}`:\n  {}", wf.name, errors.join("\n  ")))
    })?;
    let trigger = req.trigger.unwrap_or_else(
        || serde_json::json!({"kind": "drill", "by": req.started_by, "scenario": spec.scenario}),
    );
    let audit = crate::store::NewAudit {
        actor: req.started_by.to_string(),
        action: "drill".into(),
        run_id: None,
        step_id: None,
        payload: serde_json::json!({
            "workflow": wf.name,
            "file": wf.file,
            "scenario": spec.scenario,
            "faults": spec.faults,
            "inputs": inputs,
        }),
    };
    let keys = crate::exec::runtime::SubmitKeys {
        audit: Some(audit),
        mode: crate::store::RunMode::Drill,
        scenario: spec.scenario.clone(),
        drill: Some(serde_json::to_value(&spec).expect("a drill spec is JSON")),
        schedule_tick: req.schedule_tick,
        ..Default::default()
    };
    let created = rt.submit_with(wf, inputs, trigger, None, req.drive_here, keys).await?;
    Ok((created, spec))
}

/// `STEP=FAULT` from `--inject`, checked against the workflow's steps.
fn parse_inject(wf: &CompiledWorkflow, given: &str) -> Result<(String, Fault), DrillError> {
    let Some((step, fault)) = given.split_once('=') else {
        return Err(DrillError::Input(format!(
            "--inject `{given}`: write STEP=FAULT (fail, timeout, delay:DURATION or crash), e.g. --inject promote=fail"
        )));
    };
    let Some(compiled) = wf.step(step) else {
        let ids: Vec<&str> = wf.steps.iter().map(|s| s.id.as_str()).collect();
        let hint = crate::suggest::did_you_mean(step, ids.iter().copied())
            .unwrap_or_else(|| format!("steps: {}", ids.join(", ")));
        return Err(DrillError::Input(format!(
            "--inject `{given}`: `{}` has no step `{step}` ({hint})",
            wf.name
        )));
    };
    let fault: Fault =
        fault.parse().map_err(|e| DrillError::Input(format!("--inject `{given}`: {e}")))?;
    let body = match &compiled.drill {
        DrillAction::Substitute(body) => body.kind,
        _ => compiled.body.kind,
    };
    if !matches!(body, crate::kinds::StepKind::Action(_)) {
        return Err(DrillError::Input(format!(
            "--inject `{given}`: step `{step}` is a `{}` step; faults are injected into action attempts ({})",
            body.name(),
            lifeboat_steps::ActionKind::names()
        )));
    }
    Ok((step.to_string(), fault))
}

/// Steps marked `irreversible: true` with no `drill:` entry, each named
/// with its file:line:column.
pub fn unprotected_steps(wf: &CompiledWorkflow) -> Vec<String> {
    let lines = LineIndex::new(&wf.source);
    wf.steps
        .iter()
        .filter(|s| s.definition.irreversible && s.definition.drill.is_none())
        .map(|s| {
            let (line, col) = lines.line_col(s.span.start);
            format!(
                "step `{}` ({}:{line}:{col}) is `irreversible: true` and has no `drill:` entry",
                s.id, wf.file
            )
        })
        .collect()
}

/// What a drill ended with, as the verdict reads it.
pub struct Ending<'a> {
    pub status: RunStatus,
    pub steps: Vec<(&'a str, StepStatus)>,
    /// Each step's error, if it has one.
    pub errors: Vec<(&'a str, &'a str)>,
    pub outputs: Option<&'a Value>,
    pub recovery_ms: Option<i64>,
    /// Events a notification was queued for.
    pub notified: &'a BTreeSet<String>,
    pub rto_ms: Option<u64>,
}

/// A drill's verdict: every expectation, expected against actual.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub passed: bool,
    pub expectations: Vec<Check>,
    /// Run start to end.
    pub recovery_ms: Option<i64>,
    /// `objectives.rto`, and whether the recovery time kept it.
    pub rto_ms: Option<u64>,
    pub within_rto: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// `status`, `step promote`, `output region`, `recovery time`, `notified failed`.
    pub what: String,
    pub expected: String,
    pub actual: String,
    pub ok: bool,
}

impl Check {
    /// `PASS status: expected succeeded, actual succeeded`.
    pub fn line(&self) -> String {
        format!(
            "{} {}: expected {}, actual {}",
            if self.ok { "PASS" } else { "FAIL" },
            self.what,
            self.expected,
            self.actual
        )
    }
}

/// Holds every expectation of `expect` against `end`. With none at all,
/// a drill is expected to succeed.
pub fn verdict(expect: &Expect, end: &Ending<'_>) -> Verdict {
    let mut checks = Vec::new();
    let mut check = |what: String, expected: String, actual: String, ok: bool| {
        checks.push(Check { what, expected, actual, ok });
    };
    let expected_status = expect.status.as_ref().map(|s| s.value.as_str()).or(
        match expect.steps.is_empty()
            && expect.outputs.is_empty()
            && expect.errors.is_empty()
            && expect.notified.is_empty()
        {
            true => Some("succeeded"),
            false => None,
        },
    );
    if let Some(status) = expected_status {
        let actual = end.status.as_str();
        check("status".into(), status.into(), actual.into(), status == actual);
    }
    for (step, status) in &expect.steps {
        let actual = end.steps.iter().find(|(id, _)| id == step).map(|(_, s)| s.as_str());
        let actual_text = actual.unwrap_or("(no such step)");
        check(
            format!("step {step}"),
            status.value.clone(),
            actual_text.into(),
            actual == Some(status.value.as_str()),
        );
    }
    for (step, expected) in &expect.errors {
        let actual = end.errors.iter().find(|(id, _)| id == step).map(|(_, e)| *e);
        let (expected_text, ok) = output_matches(
            &Value::String(expected.value.clone()),
            actual.map(Value::from).as_ref(),
        );
        let actual_text = actual.map_or_else(|| "(no error)".to_string(), |e| format!("{e:?}"));
        check(format!("error of {step}"), expected_text, actual_text, ok);
    }
    for (name, expected) in &expect.outputs {
        let actual = end.outputs.and_then(|o| o.get(name));
        let (expected_text, ok) = output_matches(&expected.value, actual);
        let actual_text = match actual {
            Some(Value::String(s)) => format!("{s:?}"),
            Some(v) => v.to_string(),
            None => "(no output)".into(),
        };
        check(format!("output {name}"), expected_text, actual_text, ok);
    }
    if let Some(within) = expect.recovery_within {
        let (actual, ok) = match end.recovery_ms {
            Some(ms) => (format_ms(ms), ms <= within.as_millis() as i64),
            None => ("(not measured)".into(), false),
        };
        check("recovery time".into(), format!("within {within}"), actual, ok);
    }
    for event in &expect.notified {
        let ok = end.notified.contains(event.name());
        let actual = if ok { "queued" } else { "none queued" };
        check(format!("notified {}", event.name()), "a notification".into(), actual.into(), ok);
    }
    let within_rto = end.rto_ms.zip(end.recovery_ms).map(|(rto, ms)| ms <= rto as i64);
    Verdict {
        passed: checks.iter().all(|c| c.ok),
        expectations: checks,
        recovery_ms: end.recovery_ms,
        rto_ms: end.rto_ms,
        within_rto,
    }
}

/// The expectation as shown, and whether `actual` meets it: a string
/// starting with `~` is a regex over the output's text; anything else
/// equals it (a string output equals the text of a non-string expectation).
fn output_matches(expected: &Value, actual: Option<&Value>) -> (String, bool) {
    let actual_text = actual.map(|a| match a {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    });
    match expected {
        Value::String(s) if s.starts_with('~') => {
            let ok = regex::Regex::new(&s[1..])
                .is_ok_and(|re| actual_text.as_deref().is_some_and(|t| re.is_match(t)));
            (format!("a match of /{}/", &s[1..]), ok)
        }
        Value::String(s) => (format!("{s:?}"), actual_text.as_deref() == Some(s.as_str())),
        other => {
            let ok = actual == Some(other) || actual_text == Some(other.to_string());
            (other.to_string(), ok)
        }
    }
}

/// `1.234s`, `2m03s`.
pub fn format_ms(ms: i64) -> String {
    if ms < 60_000 {
        format!("{:.3}s", ms as f64 / 1000.0)
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::{CompileEnv, compile};

    const WF: &str = r#"
name: wf
outputs: { site: "{{steps.a.outputs.site}}" }
steps:
  a: { uses: set, with: { site: b } }
  b: { uses: shell, needs: [a], with: { command: [echo, hi] }, irreversible: true, drill: skip }
  c: { uses: approval, needs: [b], with: { approvers: [ops] } }
drills:
  happy:
    inject: { a: delay:10ms }
    expect: { status: succeeded, steps: { b: skipped }, outputs: { site: "~^b$" } }
"#;

    fn wf(text: &str) -> CompiledWorkflow {
        compile("wf.yaml", text, CompileEnv::default())
            .unwrap_or_else(|r| panic!("{}", r.render(false)))
    }

    #[test]
    fn an_unknown_inject_step_suggests_the_nearest() {
        let err = prepare(&wf(WF), None, &["aa=fail".into()], "me").unwrap_err().to_string();
        assert!(err.contains("has no step `aa`") && err.contains("did you mean `a`?"), "{err}");
    }

    #[test]
    fn an_unknown_scenario_suggests_the_nearest() {
        let err = prepare(&wf(WF), Some("hapy"), &[], "me").unwrap_err().to_string();
        assert!(err.contains("no drill scenario `hapy`") && err.contains("`happy`"), "{err}");
    }

    #[test]
    fn a_fault_is_not_injected_into_an_engine_native_step() {
        let err = prepare(&wf(WF), None, &["c=fail".into()], "me").unwrap_err().to_string();
        assert!(err.contains("`approval` step"), "{err}");
    }

    #[test]
    fn inject_overrides_the_scenarios_fault_for_that_step() {
        let (spec, _) = prepare(&wf(WF), Some("happy"), &["a=crash".into()], "me").unwrap();
        assert_eq!(spec.faults, [Injected { step: "a".into(), fault: Fault::Crash }]);
        assert_eq!(spec.scenario.as_deref(), Some("happy"));
    }

    #[test]
    fn an_irreversible_step_without_drill_refuses_naming_its_line() {
        let text = WF.replace("irreversible: true, drill: skip", "irreversible: true");
        let err = prepare(&wf(&text), None, &[], "me").unwrap_err().to_string();
        assert!(err.contains("step `b` (wf.yaml:6:3) is `irreversible: true`"), "{err}");
    }

    fn end<'a>(
        status: RunStatus,
        notified: &'a BTreeSet<String>,
        outputs: &'a Value,
    ) -> Ending<'a> {
        Ending {
            status,
            steps: vec![("a", StepStatus::Succeeded), ("b", StepStatus::Skipped)],
            errors: vec![("a", "exit status 1: canary at 50% is unhealthy")],
            outputs: Some(outputs),
            recovery_ms: Some(1500),
            notified,
            rto_ms: Some(1000),
        }
    }

    #[test]
    fn the_verdict_lists_each_expectation_expected_against_actual() {
        let compiled = wf(WF);
        let expect = &compiled.definition.drills["happy"].expect;
        let none = BTreeSet::new();
        let outputs = serde_json::json!({"site": "b"});
        let v = verdict(expect, &end(RunStatus::Succeeded, &none, &outputs));
        assert!(v.passed, "{v:?}");
        assert_eq!(v.within_rto, Some(false));
        let outputs = serde_json::json!({"site": "c"});
        let v = verdict(expect, &end(RunStatus::RolledBack, &none, &outputs));
        let lines: Vec<String> = v.expectations.iter().map(Check::line).collect();
        assert_eq!(
            lines,
            [
                "FAIL status: expected succeeded, actual rolled_back",
                "PASS step b: expected skipped, actual skipped",
                "FAIL output site: expected a match of /^b$/, actual \"c\"",
            ]
        );
        assert!(!v.passed);
    }

    #[test]
    fn a_steps_error_is_expected_as_text_or_regex() {
        let expect: Expect = serde_json::from_value(serde_json::json!({
            "errors": {"a": "~canary at 50% is unhealthy", "b": "boom"}
        }))
        .unwrap();
        let none = BTreeSet::new();
        let v = verdict(&expect, &end(RunStatus::Failed, &none, &Value::Null));
        let lines: Vec<String> = v.expectations.iter().map(Check::line).collect();
        assert_eq!(
            lines,
            [
                "PASS error of a: expected a match of /canary at 50% is unhealthy/, actual \"exit status 1: canary at 50% is unhealthy\"",
                "FAIL error of b: expected \"boom\", actual (no error)",
            ]
        );
    }

    #[test]
    fn with_no_expectations_a_drill_must_succeed() {
        let none = BTreeSet::new();
        let v = verdict(&Expect::default(), &end(RunStatus::Failed, &none, &Value::Null));
        assert_eq!(v.expectations[0].line(), "FAIL status: expected succeeded, actual failed");
    }

    #[test]
    fn the_statuses_a_scenario_may_name_are_the_stores() {
        use crate::model::drill::{FINAL_RUN_STATUSES, STEP_STATUSES};
        for s in STEP_STATUSES {
            assert!(StepStatus::parse(s).is_some(), "{s}");
        }
        for s in FINAL_RUN_STATUSES {
            assert!(RunStatus::parse(s).is_some_and(RunStatus::is_terminal), "{s}");
        }
    }

    #[test]
    fn a_scenario_naming_what_does_not_exist_is_lb030_at_its_line_with_a_suggestion() {
        let text = WF
            .replace("inject: { a: delay:10ms }", "inject: { aa: fail, c: fail }")
            .replace("status: succeeded,", "status: rolledback,")
            .replace("b: skipped", "b: skiped")
            .replace("site: \"~^b$\"", "sitee: \"~(\"");
        let report = compile("wf.yaml", &text, CompileEnv::default()).unwrap_err();
        let got: Vec<String> = report
            .diagnostics
            .iter()
            .map(|d| {
                format!(
                    "{} {} | {}",
                    d.code.as_str(),
                    d.message,
                    d.help.clone().unwrap_or_default()
                )
            })
            .collect();
        let expected = [
            "LB030 drill scenario `happy` injects a fault into `aa`, which is not a step of this workflow | did you mean `a`?",
            "LB030 drill scenario `happy`: `c` is not an action step; faults (`fail`) are injected into action attempts (shell, http, sql, postgres, dns, haproxy, set, assert) | ",
            "LB030 drill scenario `happy`: `rolledback` is not a final run status | did you mean `rolled_back`?",
            "LB030 drill scenario `happy`: `skiped` is not a step status | did you mean `skipped`?",
            "LB030 drill scenario `happy`: the workflow has no output `sitee` | did you mean `site`?",
        ];
        for e in expected {
            assert!(got.iter().any(|g| g == e), "missing {e:?} in {got:#?}");
        }
        assert!(got.iter().any(|g| g.contains("`~(` is not a valid regex")), "{got:#?}");
        assert!(report.diagnostics.iter().all(|d| d.span.is_some()), "every one at its line");
    }
}
