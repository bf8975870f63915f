//! `lifeboat drill` (start a rehearsal: a scenario, injected faults) and
//! `lifeboat drills` (each scenario's freshness — last drilled when, passed
//! or failed, overdue against `objectives.drill_every` — and the history of
//! drills and their verdicts).

use std::process::ExitCode;

use serde_json::{Value, json};

use super::{Ctx, input_error};
use crate::exec::drill::{self, DrillError, DrillRequest, Verdict};
use crate::exec::inputs;
use crate::store::Created;
use crate::views::{DrillView, Time};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A workflow's declared name (in the workflows directory) or a file.
    pub workflow: String,
    /// A scenario declared under `drills:` in the workflow file.
    #[arg(long)]
    pub scenario: Option<String>,
    /// A fault to inject, `STEP=fail|timeout|delay:DURATION|crash`; repeat for more.
    #[arg(long = "inject", value_name = "STEP=FAULT")]
    pub injects: Vec<String>,
    /// An input, `key=value` (overrides the scenario's); repeat for more.
    #[arg(short = 'i', long = "input", value_name = "KEY=VALUE")]
    pub inputs: Vec<String>,
    /// Execute the drill here, showing each step live; exit 0 when it passed.
    #[arg(long)]
    pub wait: bool,
    /// Print the run id (and with --wait the final run) as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// Only this workflow (a declared name or a file); default: every
    /// workflow of the workflows directory.
    pub workflow: Option<String>,
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    /// One JSON document.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(ctx: &Ctx, args: Args) -> anyhow::Result<ExitCode> {
    let engine = ctx.engine();
    let wf = super::run::load_workflow(ctx, &engine, &args.workflow).await?;
    let given = inputs::parse_pairs(&args.inputs, &wf.definition.inputs).map_err(input_error)?;
    let actor = ctx.actor();
    let request = DrillRequest {
        scenario: args.scenario.as_deref(),
        injects: &args.injects,
        inputs: given,
        started_by: &actor,
        drive_here: args.wait,
        schedule_tick: None,
        trigger: None,
    };
    let (created, spec) = match drill::start(&engine, &wf, request).await {
        Ok(started) => started,
        Err(DrillError::Exec(e)) => return Err(e.into()),
        Err(e) => return Err(input_error(e.to_string())),
    };
    let run_id = match created {
        Created::Run(id) => id,
        Created::Skipped { active } | Created::Duplicate { existing: active } => {
            outln!(
                "not started: run {active} of `{}` holds the same concurrency key (on_conflict: skip)",
                wf.name
            );
            return Ok(ExitCode::from(1));
        }
    };
    if !args.wait {
        match args.json {
            true => outln!("{}", json!({"id": run_id})),
            false => outln!("{run_id}"),
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !args.json {
        let scenario =
            spec.scenario.as_deref().map(|s| format!(", scenario {s}")).unwrap_or_default();
        let faults: Vec<String> =
            spec.faults.iter().map(|f| format!("{}={}", f.step, f.fault)).collect();
        let faults = match faults.is_empty() {
            true => String::new(),
            false => format!(", injecting {}", faults.join(" ")),
        };
        outln!("drill {run_id} of {}{scenario}{faults} — executing here", wf.name);
    }
    super::run::wait_and_report(ctx, engine, &run_id, args.json).await?;
    let run = ctx.store.run(&run_id).await?;
    let passed = run
        .and_then(|r| r.verdict)
        .and_then(|v| serde_json::from_value::<Verdict>(v).ok())
        .is_some_and(|v| v.passed);
    Ok(if passed { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// The verdict under a run's summary: one line per expectation.
pub fn print_verdict(verdict: &Value) {
    let Ok(v) = serde_json::from_value::<Verdict>(verdict.clone()) else {
        outln!("  verdict: {}", crate::text::inline(&verdict.to_string()));
        return;
    };
    let rto = match (v.rto_ms, v.within_rto) {
        (Some(rto), Some(within)) => format!(
            " ({} the RTO of {})",
            if within { "within" } else { "over" },
            drill::format_ms(rto as i64)
        ),
        _ => String::new(),
    };
    let recovery = v.recovery_ms.map(drill::format_ms).unwrap_or_else(|| "-".into());
    outln!(
        "  drill verdict: {} — recovery time {recovery}{rto}",
        if v.passed { "PASSED" } else { "FAILED" }
    );
    for check in &v.expectations {
        outln!("    {}", crate::text::inline(&check.line()));
    }
}

pub async fn history(ctx: &Ctx, args: HistoryArgs) -> anyhow::Result<ExitCode> {
    let (name, workflows) = match &args.workflow {
        // A workflow no longer in the directory still has its history.
        Some(which) => match super::run::load_workflow(ctx, &ctx.engine(), which).await {
            Ok(wf) => (Some(wf.name.clone()), vec![wf]),
            // A file that does not compile says why.
            Err(e) if std::path::Path::new(which).is_file() => return Err(e),
            Err(_) => (Some(which.clone()), Vec::new()),
        },
        None => {
            let catalog =
                crate::catalog::Catalog::load(ctx.workflows_dir.clone(), ctx.known.clone());
            (None, catalog.snapshot().workflows.values().cloned().collect())
        }
    };
    let now = crate::store::now_ms();
    let mut fresh = Vec::new();
    for wf in &workflows {
        let f = crate::exec::freshness::read(&*ctx.store, wf, now).await?;
        if args.workflow.is_some() || !f.is_empty() {
            fresh.push(f);
        }
    }
    let runs = ctx.store.drills(name.as_deref(), args.limit).await?;
    let views: Vec<DrillView> = runs.iter().map(DrillView::from).collect();
    if args.json {
        let doc = json!({"freshness": fresh, "drills": views});
        outln!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(ExitCode::SUCCESS);
    }
    print_freshness(&fresh);
    if views.is_empty() {
        outln!("no drills");
        return Ok(ExitCode::SUCCESS);
    }
    // As wide as the longest scenario name, so the columns stay aligned.
    let sw = views.iter().filter_map(|d| d.scenario.map(str::len)).max().unwrap_or(0).max(20);
    outln!(
        "{:<36}  {:<18}  {:<sw$}  {:<24}  {:<15}  {:<7}  {:>9}  {:>9}  BY",
        "RUN",
        "WORKFLOW",
        "SCENARIO",
        "STARTED",
        "STATUS",
        "VERDICT",
        "RECOVERY",
        "RTO"
    );
    for d in &views {
        let ms = |v: Option<i64>| v.map(drill::format_ms).unwrap_or_else(|| "-".into());
        outln!(
            "{:<36}  {:<18}  {:<sw$}  {:<24}  {:<15}  {:<7}  {:>9}  {:>9}  {}",
            d.run,
            d.workflow,
            d.scenario.unwrap_or("-"),
            d.started_at.text().or(Time::at(d.created_at_ms).text()).unwrap_or_default(),
            d.status.as_str(),
            d.verdict_word(),
            ms(d.recovery_ms),
            ms(d.rto_ms.map(|r| r as i64)),
            crate::text::inline(d.started_by.unwrap_or("-"))
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// One line per scenario: last drilled when and how, `OVERDUE` when so.
pub fn print_freshness(fresh: &[crate::exec::freshness::Freshness]) {
    if fresh.is_empty() {
        return;
    }
    let labels =
        fresh.iter().flat_map(|f| &f.scenarios).map(crate::exec::freshness::scenario_label);
    let sw = labels.map(|l| l.len()).max().unwrap_or(0).max(20);
    outln!("{:<18}  {:<sw$}  {:<11}  FRESHNESS", "WORKFLOW", "SCENARIO", "DRILL_EVERY");
    for f in fresh {
        for s in &f.scenarios {
            outln!(
                "{:<18}  {:<sw$}  {:<11}  {}",
                f.workflow,
                crate::exec::freshness::scenario_label(s),
                f.drill_every.as_deref().unwrap_or("-"),
                s.summary
            );
        }
    }
    outln!();
}
