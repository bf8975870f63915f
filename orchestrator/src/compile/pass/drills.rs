//! The drill part of the pass: each step's `drill:` entry (a substitute body
//! is compiled like a `rollback`), and the `drills:` scenarios — their
//! inputs, faults and expectations checked against the workflow (LB030).

use super::*;
use crate::model::drill::{FINAL_RUN_STATUSES, STEP_STATUSES};
use crate::model::{AnswerDecision, Scenario, StepDrill};

fn answer_name(d: AnswerDecision) -> String {
    serde_json::to_value(d).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
}

impl Pass<'_> {
    /// A step's `drill:` as the executor needs it.
    pub(super) fn compile_step_drill(
        &mut self,
        step: &Step,
        node: &Node,
        header: &Workflow,
        scope: &Scope<'_>,
    ) -> DrillAction {
        match &step.drill {
            None | Some(StepDrill::Mode(crate::model::DrillMode::Run)) => DrillAction::Run,
            Some(StepDrill::Mode(crate::model::DrillMode::Skip)) => DrillAction::Skip,
            Some(StepDrill::Substitute(body)) => {
                let Some(drill_node) = node.get("drill") else { return DrillAction::Run };
                let place = format!("the drill substitute of {}", scope.place);
                let sub_scope = Scope { place: &place, ..scope.clone() };
                let parts = BodyParts {
                    uses: &body.uses,
                    retry: body.retry.as_ref(),
                    timeout: body.timeout,
                };
                let Some(compiled) =
                    self.compile_body(&parts, drill_node, header, &sub_scope, &place, "drill.")
                else {
                    return DrillAction::Run;
                };
                if !matches!(compiled.kind, StepKind::Action(_)) {
                    self.error(
                        Code::Drill,
                        format!(
                            "{place}: a substitute must be an action ({}), not `{}`",
                            lifeboat_steps::ActionKind::names(),
                            compiled.kind.name()
                        ),
                        body.uses.span,
                    )
                    .help("use `drill: skip`, or a `set`/`shell` step that stands in for it");
                }
                DrillAction::Substitute(Box::new(compiled))
            }
        }
    }

    /// Every scenario under `drills:`: its name, inputs, faults and
    /// expectations name things that exist, with a did-you-mean when not.
    pub(super) fn check_drills(
        &mut self,
        root: &Node,
        wf: &Workflow,
        steps: &StepNames<'_>,
        parsed_steps: &[Option<Step>],
    ) {
        let drills_node = root.get("drills");
        for (name, scenario) in &wf.drills {
            let node = drills_node.and_then(|n| n.get(name));
            if !is_valid_name(name) {
                let span = drills_node.and_then(|n| n.key_node(name)).map(|n| n.span);
                self.error(Code::BadName, format!("drill scenario name `{name}` is invalid"), span)
                    .help("use lower case letters, digits, `_` and `-` (e.g. `promote-fails`)");
            }
            self.check_scenario(name, scenario, node, wf, steps, parsed_steps);
        }
        self.check_scheduled_drills(root, wf, steps, parsed_steps);
        self.check_freshness_rules(root, wf);
    }

    /// Schedule triggers with `mode: drill`: the scenario exists (with a
    /// did-you-mean), `scenario` comes with `mode: drill`, and the drill
    /// would not be refused at every tick (an irreversible step with no
    /// `drill:`).
    fn check_scheduled_drills(
        &mut self,
        root: &Node,
        wf: &Workflow,
        steps: &StepNames<'_>,
        parsed_steps: &[Option<Step>],
    ) {
        let names: Vec<&str> = wf.drills.keys().map(String::as_str).collect();
        for (i, trigger) in wf.triggers.iter().enumerate() {
            let Some(schedule) = &trigger.schedule else { continue };
            let node =
                root.at_path(&["triggers".to_string(), i.to_string(), "schedule".to_string()]);
            let place = format!("trigger {}", i + 1);
            let drill = schedule.mode == crate::model::ScheduleMode::Drill;
            if let Some(scenario) = &schedule.scenario {
                if !drill {
                    self.error(
                        Code::Drill,
                        format!("{place}: `scenario: {}` needs `mode: drill`", scenario.value),
                        scenario.span,
                    )
                    .help("a live run has no scenario; add `mode: drill` to rehearse on this schedule");
                } else if !wf.drills.contains_key(&scenario.value) {
                    let hint = suggest::did_you_mean(&scenario.value, names.iter().copied())
                        .unwrap_or_else(|| match names.is_empty() {
                            true => "the workflow declares no scenarios under `drills:`".into(),
                            false => format!("scenarios: {}", names.join(", ")),
                        });
                    self.error(
                        Code::Drill,
                        format!("{place}: no drill scenario `{}`", scenario.value),
                        scenario.span,
                    )
                    .help(hint);
                }
            }
            if drill {
                let refused: Vec<&str> = steps
                    .ids
                    .iter()
                    .zip(parsed_steps)
                    .filter(|(_, s)| {
                        s.as_ref().is_some_and(|s| s.irreversible && s.drill.is_none())
                    })
                    .map(|(id, _)| *id)
                    .collect();
                if !refused.is_empty() {
                    let span = node.and_then(|n| n.get("mode")).map(|n| n.span);
                    self.error(
                        Code::Drill,
                        format!(
                            "{place}: every scheduled drill would be refused: {} `irreversible: true` with no `drill:` entry",
                            refused.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ")
                        ),
                        span,
                    )
                    .help("say what each does in a drill: `drill: skip`, or a substitute body");
                }
            }
        }
    }

    /// A rule on `drill_overdue` needs `objectives.drill_every`: without it
    /// no drill is ever overdue and the rule would never fire.
    fn check_freshness_rules(&mut self, root: &Node, wf: &Workflow) {
        let every = wf.objectives.as_ref().and_then(|o| o.drill_every);
        if every.is_some() {
            return;
        }
        for (i, rule) in wf.notify.iter().enumerate() {
            if rule.on.contains(&crate::model::Event::DrillOverdue) {
                let span = root
                    .at_path(&["notify".to_string(), i.to_string(), "on".to_string()])
                    .map(|n| n.span);
                self.error(
                    Code::Drill,
                    format!("notify rule {}: `drill_overdue` never fires without `objectives.drill_every`", i + 1),
                    span,
                )
                .help("add e.g. `objectives: { drill_every: 30d }`");
            }
        }
    }

    fn check_scenario(
        &mut self,
        name: &str,
        scenario: &Scenario,
        node: Option<&Node>,
        wf: &Workflow,
        steps: &StepNames<'_>,
        parsed_steps: &[Option<Step>],
    ) {
        let place = format!("drill scenario `{name}`");
        let key_span = |path: &[&str], key: &str| {
            node.and_then(|n| n.at_path(path)).and_then(|n| n.key_node(key)).map(|n| n.span)
        };
        let input_names: Vec<&str> = wf.inputs.keys().map(String::as_str).collect();
        for (input, value) in &scenario.inputs {
            match wf.inputs.get(input) {
                None => {
                    self.error(
                        Code::Drill,
                        format!("{place}: input `{input}` is not declared by the workflow"),
                        key_span(&["inputs"], input),
                    )
                    .maybe_help(suggest::did_you_mean(input, input_names.iter().copied()));
                }
                Some(spec) => {
                    if let Err(why) = check_value(spec, &value.value) {
                        self.error(
                            Code::Drill,
                            format!("{place}: input `{input}` {why}"),
                            value.span,
                        );
                    }
                }
            }
        }
        for (step, fault) in &scenario.inject {
            let span = key_span(&["inject"], step);
            match steps.get(step) {
                None => self.unknown_step(&place, "injects a fault into", step, steps, span),
                Some(i) => {
                    let native = parsed_steps[i].as_ref().is_some_and(|s| {
                        !matches!(StepKind::from_name(&s.uses.value), Some(StepKind::Action(_)))
                    });
                    if native {
                        self.error(
                            Code::Drill,
                            format!("{place}: `{step}` is not an action step; faults (`{}`) are injected into action attempts ({})", fault.value, lifeboat_steps::ActionKind::names()),
                            span.or(fault.span),
                        );
                    }
                }
            }
        }
        for (step, answer) in &scenario.people {
            let span = key_span(&["people"], step);
            let Some(i) = steps.get(step) else {
                self.unknown_step(&place, "has a person answer", step, steps, span);
                continue;
            };
            let Some(kind) = parsed_steps[i].as_ref().map(|s| s.uses.value.as_str()) else {
                continue;
            };
            let allowed: &[AnswerDecision] = match kind {
                "approval" => &[AnswerDecision::Approve, AnswerDecision::Reject],
                "escalate" => &[AnswerDecision::Ack],
                other => {
                    self.error(
                        Code::Drill,
                        format!("{place}: `{step}` is a `{other}` step; a scenario's people answer `approval` and `escalate` steps"),
                        span,
                    );
                    continue;
                }
            };
            if answer.by.value.trim().is_empty() {
                self.error(
                    Code::Drill,
                    format!("{place}: the person answering `{step}` has an empty `by`"),
                    answer.by.span.or(span),
                )
                .help("name a user of lifeboat.toml, e.g. `by: bob`");
            }
            if let Some(d) = &answer.decision
                && !allowed.contains(&d.value)
            {
                let names: Vec<String> = allowed.iter().map(|a| answer_name(*a)).collect();
                self.error(
                    Code::Drill,
                    format!(
                        "{place}: `{}` does not answer the `{kind}` step `{step}`",
                        answer_name(d.value)
                    ),
                    d.span.or(span),
                )
                .help(format!("write `decision: {}`", names.join("` or `decision: ")));
            }
        }
        let expect = &scenario.expect;
        if let Some(status) = &expect.status
            && !FINAL_RUN_STATUSES.contains(&status.value.as_str())
        {
            self.error(
                Code::Drill,
                format!("{place}: `{}` is not a final run status", status.value),
                status.span,
            )
            .help(
                suggest::did_you_mean(&status.value, FINAL_RUN_STATUSES.iter().copied())
                    .unwrap_or_else(|| format!("one of {}", FINAL_RUN_STATUSES.join(", "))),
            );
        }
        for (step, status) in &expect.steps {
            if steps.get(step).is_none() {
                let span = key_span(&["expect", "steps"], step);
                self.unknown_step(&place, "expects a status of", step, steps, span);
            }
            if !STEP_STATUSES.contains(&status.value.as_str()) {
                self.error(
                    Code::Drill,
                    format!("{place}: `{}` is not a step status", status.value),
                    status.span,
                )
                .help(
                    suggest::did_you_mean(&status.value, STEP_STATUSES.iter().copied())
                        .unwrap_or_else(|| format!("one of {}", STEP_STATUSES.join(", "))),
                );
            }
        }
        for (step, error) in &expect.errors {
            if steps.get(step).is_none() {
                let span = key_span(&["expect", "errors"], step);
                self.unknown_step(&place, "expects an error of", step, steps, span);
            }
            if let Some(pattern) = error.value.strip_prefix('~')
                && let Err(e) = regex::Regex::new(pattern)
            {
                self.error(
                    Code::Drill,
                    format!("{place}: error of `{step}`: `~{pattern}` is not a valid regex: {e}"),
                    error.span,
                );
            }
        }
        let outputs: Vec<&str> = wf.outputs.keys().map(String::as_str).collect();
        for (output, value) in &expect.outputs {
            if !wf.outputs.contains_key(output) {
                self.error(
                    Code::Drill,
                    format!("{place}: the workflow has no output `{output}`"),
                    key_span(&["expect", "outputs"], output),
                )
                .maybe_help(suggest::did_you_mean(output, outputs.iter().copied()));
            }
            if let Some(pattern) = value.value.as_str().and_then(|s| s.strip_prefix('~'))
                && let Err(e) = regex::Regex::new(pattern)
            {
                self.error(
                    Code::Drill,
                    format!("{place}: output `{output}`: `~{pattern}` is not a valid regex: {e}"),
                    value.span,
                );
            }
        }
    }

    fn unknown_step(
        &mut self,
        place: &str,
        what: &str,
        step: &str,
        steps: &StepNames<'_>,
        span: Option<Span>,
    ) {
        self.error(
            Code::Drill,
            format!("{place} {what} `{step}`, which is not a step of this workflow"),
            span,
        )
        .maybe_help(suggest::did_you_mean(step, steps.ids.iter().copied()));
    }
}

#[cfg(test)]
mod tests_support {
    use crate::compile::{CompileEnv, compile};

    /// Each LB030 message with its help, and the 1-based line it points at.
    pub(super) fn errors(text: &str) -> Vec<(String, usize)> {
        let report = compile("wf.yaml", text, CompileEnv::default()).unwrap_err();
        report
            .diagnostics
            .iter()
            .map(|d| {
                let line = d.span.map_or(0, |s| text[..s.start].lines().count());
                (format!("{} | {}", d.message, d.help.clone().unwrap_or_default()), line)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::errors;

    const WF: &str = "name: wf
triggers:
  - schedule: { cron: \"0 3 * * 1\", mode: drill, scenario: hapy }
  - schedule: { cron: \"0 4 * * 1\", scenario: happy }
notify:
  - on: [drill_overdue]
    channels: []
steps:
  a: { uses: shell, with: { command: [x] }, irreversible: true }
drills:
  happy: {}
";

    #[test]
    fn drill_schedules_and_overdue_rules_are_checked_at_their_lines() {
        let got = errors(WF);
        let want = [
            ("trigger 1: no drill scenario `hapy` | did you mean `happy`?", 3),
            (
                "trigger 1: every scheduled drill would be refused: `a` `irreversible: true` with no `drill:` entry",
                3,
            ),
            ("trigger 2: `scenario: happy` needs `mode: drill`", 4),
            ("notify rule 1: `drill_overdue` never fires without `objectives.drill_every`", 6),
        ];
        for (message, line) in want {
            assert!(
                got.iter().any(|(m, l)| m.starts_with(message) && *l == line),
                "missing {message:?} at line {line} in {got:#?}"
            );
        }
    }
}

#[cfg(test)]
mod people_tests {
    use super::tests_support::errors;

    const WF: &str = "name: wf
steps:
  ask: { uses: approval, with: { approvers: [bob] } }
  page: { uses: escalate, with: { tiers: [{ channels: [c], ack_within: 1m }] } }
  work: { uses: set, with: { a: 1 }, needs: [ask, page] }
drills:
  answered:
    people:
      ask: { by: bob, decision: ack }
      pgae: { by: carol }
      work: { by: bob }
      page: { by: \"\" }
    expect: { errors: { wrk: \"~(\" } }
";

    #[test]
    fn a_scenarios_people_are_checked_at_their_lines_with_a_suggestion() {
        let got = errors(WF);
        let want = [
            (
                "drill scenario `answered`: `ack` does not answer the `approval` step `ask` | write `decision: approve` or `decision: reject`",
                9,
            ),
            (
                "drill scenario `answered` has a person answer `pgae`, which is not a step of this workflow | did you mean `page`?",
                10,
            ),
            (
                "drill scenario `answered`: `work` is a `set` step; a scenario's people answer `approval` and `escalate` steps",
                11,
            ),
            ("drill scenario `answered`: the person answering `page` has an empty `by`", 12),
            (
                "drill scenario `answered` expects an error of `wrk`, which is not a step of this workflow | did you mean `work`?",
                13,
            ),
            ("drill scenario `answered`: error of `wrk`: `~(` is not a valid regex", 13),
        ];
        for (message, line) in want {
            assert!(
                got.iter().any(|(m, l)| m.starts_with(message) && *l == line),
                "missing {message:?} at line {line} in {got:#?}"
            );
        }
    }
}
