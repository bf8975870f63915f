//! `lifeboat plan FILE`: what a runbook will do before the bad day — its
//! waves, the worst-case critical path against the RTO (every retry and
//! timeout spent), the steps that wait for people, and every mutating step
//! that can neither be rolled back nor is marked `irreversible`. From the
//! database, when there is one: the measured recovery times of the last
//! successful live runs and drills (p50/p95, per run and per step, flagging
//! a step whose p95 alone eats more than half the RTO) and each drill
//! scenario's freshness.

use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::{Value, json};

use crate::compile::{CompiledBody, CompiledWorkflow};
use crate::exec::backoff;
use crate::kinds::{KindConfig, StepKind, escalate};

#[derive(Debug, clap::Args)]
pub struct Args {
    pub file: PathBuf,
    #[arg(long)]
    pub json: bool,
    /// Do not read the database (measured recovery times, drill freshness).
    #[arg(long)]
    pub no_history: bool,
}

/// The longest a step can take, in ms; `None`: no bound (no timeout, a
/// person, a child workflow).
fn worst_case(body: &CompiledBody, poll: Option<&crate::model::Poll>) -> Option<u64> {
    let escalation = |e: &escalate::Config| e.tiers.iter().map(|t| t.ack_within.as_millis()).sum();
    match (&body.kind, &body.config) {
        (StepKind::Action(k), _) if k.is_pure() => Some(0),
        (StepKind::Action(_), _) => {
            let per_attempt = match poll {
                Some(p) => p.timeout.as_millis(),
                None => body.timeout?.as_millis(),
            };
            let retry = &body.retry;
            let waits: u64 = (1..retry.attempts)
                .map(|n| backoff::delay_after(retry, n, 1.0).as_millis() as u64)
                .sum();
            Some(per_attempt * u64::from(retry.attempts.max(1)) + waits)
        }
        (_, KindConfig::Wait(w)) => w.duration.map(|d| d.as_millis()),
        (_, KindConfig::Approval(a)) => {
            let timeout = a.timeout?.as_millis();
            Some(timeout + a.escalate.as_ref().map_or(0, escalation))
        }
        (_, KindConfig::Escalate(e)) => Some(escalation(e)),
        (_, KindConfig::Notify(_)) => Some(0),
        _ => None,
    }
}

/// Whether a step may change the world: reads (`GET`/`HEAD`, `SELECT`)
/// and pure steps do not; a program might.
fn changes_the_world(body: &CompiledBody) -> bool {
    match &body.config {
        KindConfig::Action(action) => action.mutates(),
        _ => body.kind.mutates(),
    }
}

fn human(ms: Option<u64>) -> String {
    match ms {
        Some(ms) => crate::model::Duration::from_millis(ms).to_string(),
        None => "unbounded".into(),
    }
}

/// The plan as JSON (the text output is drawn from it).
pub fn plan(wf: &CompiledWorkflow) -> Value {
    let n = wf.steps.len();
    let bound: Vec<Option<u64>> =
        wf.steps.iter().map(|s| worst_case(&s.body, s.definition.poll.as_ref())).collect();
    // Longest path by worst case; an unbounded step makes its successors unbounded.
    let mut finish: Vec<Option<u64>> = vec![Some(0); n];
    let mut via: Vec<Option<usize>> = vec![None; n];
    for &i in &wf.topological_order {
        let mut start = Some(0u64);
        for &need in &wf.steps[i].needs {
            let longer = match (finish[need], start) {
                (None, Some(_)) => true,
                (Some(a), Some(b)) => a > b || via[i].is_none(),
                (Some(_), None) => false,
                (None, None) => via[i].is_none(),
            };
            if longer {
                start = finish[need];
                via[i] = Some(need);
            }
        }
        finish[i] = start.zip(bound[i]).map(|(a, b)| a + b);
    }
    let end = (0..n).max_by_key(|&i| finish[i].map_or(u64::MAX, |f| f));
    let mut path = Vec::new();
    let mut at = end;
    while let Some(i) = at {
        path.push(wf.steps[i].id.clone());
        at = via[i];
    }
    path.reverse();
    let total = end.and_then(|i| finish[i]);
    let rto = wf.definition.objectives.as_ref().and_then(|o| o.rto).map(|d| d.as_millis());
    let people: Vec<Value> = wf
        .steps
        .iter()
        .filter(|s| matches!(s.body.config, KindConfig::Approval(_) | KindConfig::Escalate(_)))
        .map(|s| json!({"step": s.id, "kind": s.body.kind.name(), "worst_case": human(bound[s.index])}))
        .collect();
    let unprotected: Vec<Value> = wf
        .steps
        .iter()
        .filter(|s| {
            changes_the_world(&s.body) && s.rollback.is_none() && !s.definition.irreversible
        })
        .map(|s| json!({"step": s.id, "kind": s.body.kind.name()}))
        .collect();
    json!({
        "workflow": wf.name,
        "file": wf.file,
        "steps": n,
        "waves": wf.waves.iter().map(|w| w.iter().map(|&i| wf.steps[i].id.clone()).collect::<Vec<_>>()).collect::<Vec<_>>(),
        "critical_path": path,
        "worst_case": human(total),
        "worst_case_ms": total,
        "rto": rto.map(|r| human(Some(r))),
        "within_rto": match (total, rto) { (Some(t), Some(r)) => Some(t <= r), (None, Some(_)) => Some(false), _ => None },
        "people": people,
        "steps_worst_case": wf.steps.iter().map(|s| json!({"step": s.id, "kind": s.body.kind.name(), "worst_case": human(bound[s.index])})).collect::<Vec<_>>(),
        "mutating_without_rollback": unprotected,
        "drill": drill_plan(wf),
    })
}

/// What a drill of `wf` runs, skips and substitutes; the scenarios; and
/// why a drill would be refused (an irreversible step with no `drill:`).
fn drill_plan(wf: &CompiledWorkflow) -> Value {
    use crate::compile::DrillAction;
    let ids = |f: fn(&DrillAction) -> bool| {
        wf.steps.iter().filter(|s| f(&s.drill)).map(|s| s.id.clone()).collect::<Vec<_>>()
    };
    let substitute: Vec<Value> = wf
        .steps
        .iter()
        .filter_map(|s| match &s.drill {
            DrillAction::Substitute(b) => Some(json!({"step": s.id, "uses": b.kind.name()})),
            _ => None,
        })
        .collect();
    json!({
        "run": ids(|d| matches!(d, DrillAction::Run)),
        "skip": ids(|d| matches!(d, DrillAction::Skip)),
        "substitute": substitute,
        "scenarios": wf.definition.drills.keys().collect::<Vec<_>>(),
        "refused": crate::exec::drill::unprotected_steps(wf),
    })
}

pub fn run(global: &super::GlobalArgs, args: Args) -> anyhow::Result<ExitCode> {
    let outcome = crate::catalog::files::compile_files(std::slice::from_ref(&args.file), None);
    let Some(wf) = outcome.compiled.into_iter().next() else {
        for report in &outcome.reports {
            eprint!("{}", report.render(super::stderr_is_terminal()));
        }
        return Ok(ExitCode::from(1));
    };
    let mut p = plan(&wf);
    if !args.no_history {
        match history(global, &wf) {
            Ok(h) => p["history"] = h,
            Err(why) => p["history_unavailable"] = json!(why),
        }
    }
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&p)?);
        return Ok(ExitCode::SUCCESS);
    }
    let list = |v: &Value| {
        v.as_array()
            .map(|a| a.iter().filter_map(|s| s.as_str()).collect::<Vec<_>>().join(", "))
            .unwrap_or_default()
    };
    outln!(
        "plan of {} ({}): {} steps in {} waves{}",
        wf.name,
        wf.file,
        wf.steps.len(),
        wf.waves.len(),
        p["rto"].as_str().map(|r| format!("; RTO {r}")).unwrap_or_default()
    );
    for (k, wave) in p["waves"].as_array().into_iter().flatten().enumerate() {
        outln!("  wave {:>2}: {}", k + 1, list(wave));
    }
    let verdict = match p["within_rto"].as_bool() {
        Some(true) => "  (within the RTO)".to_string(),
        Some(false) => format!("  ⚠ may exceed the RTO of {}", p["rto"].as_str().unwrap_or("?")),
        None => String::new(),
    };
    outln!(
        "critical path, worst case (every retry and timeout spent): {}{verdict}\n  {}",
        p["worst_case"].as_str().unwrap_or(""),
        p["critical_path"]
            .as_array()
            .map(|a| a.iter().filter_map(|s| s.as_str()).collect::<Vec<_>>().join(" → "))
            .unwrap_or_default()
    );
    for person in p["people"].as_array().into_iter().flatten() {
        outln!(
            "waits for people: {} ({}, up to {})",
            person["step"].as_str().unwrap_or(""),
            person["kind"].as_str().unwrap_or(""),
            person["worst_case"].as_str().unwrap_or("")
        );
    }
    let unprotected = p["mutating_without_rollback"].as_array().cloned().unwrap_or_default();
    if unprotected.is_empty() {
        outln!("every mutating step has a rollback or is marked irreversible");
    } else {
        outln!("⚠ mutating steps with neither `rollback` nor `irreversible: true`:");
        for s in &unprotected {
            outln!("  {} ({})", s["step"].as_str().unwrap_or(""), s["kind"].as_str().unwrap_or(""));
        }
    }
    print_drill(&p["drill"], list);
    match (&p["history"], p["history_unavailable"].as_str()) {
        (Value::Null, Some(why)) => outln!("history: {why}"),
        (Value::Null, None) => {}
        (h, _) => print_history(h, &p),
    }
    Ok(ExitCode::SUCCESS)
}

/// How long `plan` waits for its database before printing no history.
const OPEN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The measured recovery times and the drills' freshness, from the
/// database `lifeboat` is configured with — if it exists (a `plan` never
/// creates one): `Err` says why there is no history.
fn history(global: &super::GlobalArgs, wf: &CompiledWorkflow) -> Result<Value, String> {
    let loaded = super::load_config(global).map_err(|e| format!("{e:#}"))?;
    let url = global.database_url.clone().unwrap_or(loaded.config.database_url);
    let shown = crate::app::redact_url(&url);
    if let Some(file) = crate::store::sqlite::file_of(&url)
        && !file.exists()
    {
        return Err(format!("no database at {shown} yet (no runs to measure)"));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let unavailable = |e: crate::store::StoreError| format!("cannot read {shown}: {e}");
        // A plan is worth having without its history: a database that
        // does not answer is given a few seconds, not sqlx's thirty.
        let store = tokio::time::timeout(OPEN_TIMEOUT, crate::store::open(&url))
            .await
            .map_err(|_| format!("{shown} did not answer within {}s", OPEN_TIMEOUT.as_secs()))?
            .map_err(unavailable)?;
        let now = crate::store::now_ms();
        let fresh = crate::exec::freshness::read(&*store, wf, now).await.map_err(unavailable)?;
        let [live, drill] = crate::exec::measured::read(&*store, wf).await.map_err(unavailable)?;
        let over: Vec<Value> = [&live, &drill]
            .iter()
            .flat_map(|m| m.steps.iter().map(move |s| (m.mode, s)))
            .filter(|(_, s)| s.over_half_rto)
            .map(|(mode, s)| {
                json!({"step": s.step, "mode": mode, "p95_ms": s.spread.p95_ms, "p95": human(Some(s.spread.p95_ms as u64))})
            })
            .collect();
        Ok(json!({
            "measured": {"samples": crate::exec::measured::SAMPLES, "live": live, "drill": drill},
            "over_half_rto": over,
            "freshness": fresh,
        }))
    })
}

fn print_history(h: &Value, p: &Value) {
    let ms = |v: &Value| v.as_u64().map(|ms| crate::exec::drill::format_ms(ms as i64));
    let spread = |m: &Value| match (ms(&m["p50_ms"]), ms(&m["p95_ms"])) {
        (Some(p50), Some(p95)) => {
            let n = m["samples"].as_u64().unwrap_or(0);
            format!("p50 {p50}, p95 {p95} ({n} run{})", if n == 1 { "" } else { "s" })
        }
        _ => "no successful runs yet".to_string(),
    };
    let measured = &h["measured"];
    outln!(
        "measured recovery time (last {} successful runs of each), beside the worst case of {}{}:",
        measured["samples"],
        p["worst_case"].as_str().unwrap_or("?"),
        p["rto"].as_str().map(|r| format!(" and the RTO of {r}")).unwrap_or_default()
    );
    outln!("  live runs: {}", spread(&measured["live"]["run"]));
    outln!("  drills:    {}", spread(&measured["drill"]["run"]));
    let steps = |mode: &str| measured[mode]["steps"].as_array().cloned().unwrap_or_default();
    let (live, drill) = (steps("live"), steps("drill"));
    if !live.is_empty() || !drill.is_empty() {
        outln!("  {:<24}  {:>19}  {:>19}", "step", "live p50 / p95", "drill p50 / p95");
        let ids: Vec<&str> = p["steps_worst_case"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["step"].as_str())
            .collect();
        let cell = |list: &[Value], id: &str| {
            list.iter()
                .find(|s| s["step"] == id)
                .and_then(|s| Some(format!("{} / {}", ms(&s["p50_ms"])?, ms(&s["p95_ms"])?)))
                .unwrap_or_else(|| "-".into())
        };
        for id in ids {
            let (l, d) = (cell(&live, id), cell(&drill, id));
            if l != "-" || d != "-" {
                outln!("  {id:<24}  {l:>19}  {d:>19}");
            }
        }
    }
    for s in h["over_half_rto"].as_array().into_iter().flatten() {
        outln!(
            "  ⚠ step {}: p95 {} ({}) alone is more than half the RTO of {}",
            s["step"].as_str().unwrap_or(""),
            s["p95"].as_str().unwrap_or(""),
            s["mode"].as_str().unwrap_or(""),
            p["rto"].as_str().unwrap_or("?")
        );
    }
    let fresh = &h["freshness"];
    let every = fresh["drill_every"].as_str();
    outln!("drill freshness{}:", every.map(|e| format!(" (drill_every {e})")).unwrap_or_default());
    for s in fresh["scenarios"].as_array().into_iter().flatten() {
        outln!(
            "  {:<20}  {}",
            s["scenario"].as_str().unwrap_or("(no scenario)"),
            s["summary"].as_str().unwrap_or("")
        );
    }
}

fn print_drill(d: &Value, list: impl Fn(&Value) -> String) {
    let substitutes: Vec<String> = d["substitute"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            format!(
                "{} (by {})",
                s["step"].as_str().unwrap_or(""),
                s["uses"].as_str().unwrap_or("")
            )
        })
        .collect();
    let or_none = |s: String| if s.is_empty() { "none".to_string() } else { s };
    outln!("in a drill:");
    outln!("  runs:        {}", or_none(list(&d["run"])));
    outln!("  skips:       {}", or_none(list(&d["skip"])));
    outln!("  substitutes: {}", or_none(substitutes.join(", ")));
    outln!("  scenarios:   {}", or_none(list(&d["scenarios"])));
    for refused in d["refused"].as_array().into_iter().flatten() {
        outln!("  ⚠ a drill is refused: {}", refused.as_str().unwrap_or(""));
    }
}

#[cfg(test)]
mod tests {
    fn compile(text: &str) -> crate::compile::CompiledWorkflow {
        crate::compile::compile("t.yaml", text, Default::default())
            .map_err(|r| r.render(false))
            .unwrap()
    }

    #[test]
    fn the_critical_path_is_the_longest_worst_case_chain() {
        let wf = compile(
            "name: t\nobjectives: { rto: 1m }\nsteps:\n  a: { uses: shell, timeout: 10s, with: { command: [x] } }\n  b: { needs: [a], uses: shell, timeout: 20s, retry: { attempts: 2, delay: 1s }, with: { command: [x] }, irreversible: true }\n  c: { needs: [a], uses: shell, timeout: 5s, with: { command: [x] }, rollback: { uses: shell, with: { command: [y] } } }\n  d: { needs: [b, c], uses: set, with: { x: y } }\n",
        );
        let p = super::plan(&wf);
        assert_eq!(p["critical_path"], serde_json::json!(["a", "b", "d"]));
        // The retry delay with its worst jitter (+20%).
        assert_eq!(p["worst_case_ms"], 10_000 + 2 * 20_000 + 1_200);
        assert_eq!(p["within_rto"], true);
        assert_eq!(p["mutating_without_rollback"].as_array().unwrap().len(), 1, "{p}");
        assert_eq!(p["mutating_without_rollback"][0]["step"], "a");
    }

    #[test]
    fn a_person_without_a_timeout_makes_the_path_unbounded() {
        let wf = compile(
            "name: t\nobjectives: { rto: 1m }\nsteps:\n  ok: { uses: approval, with: { approvers: [alice] } }\n  go: { needs: [ok], uses: set, with: { x: y } }\n",
        );
        let p = super::plan(&wf);
        assert_eq!(p["worst_case"], "unbounded");
        assert_eq!(p["within_rto"], false);
        assert_eq!(p["people"][0]["step"], "ok");
    }
}
