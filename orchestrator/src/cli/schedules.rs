//! `lifeboat schedules`: every schedule trigger of the workflows directory,
//! when it last fired and when it fires next.

use std::process::ExitCode;

use super::Ctx;
use crate::model::ScheduleMode;
use crate::triggers::schedule::{self, ScheduleInfo};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// How many upcoming ticks to show per schedule.
    #[arg(long, default_value_t = 3)]
    pub next: usize,
    /// Print one JSON array.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(ctx: &Ctx, args: Args) -> anyhow::Result<ExitCode> {
    // The same view of the directory `serve` schedules from.
    let catalog = crate::catalog::Catalog::load(ctx.workflows_dir.clone(), ctx.known.clone());
    let snapshot = catalog.snapshot();
    for (file, _) in &snapshot.invalid {
        eprintln!(
            "warning: {file} is invalid (see `lifeboat validate`); its schedules are not listed"
        );
    }
    let workflows: Vec<_> = snapshot.workflows.values().cloned().collect();
    let clock = schedule::clock_from_env().map_err(super::input_error)?;
    let now = clock.now_ms();
    let mut infos = Vec::new();
    for entry in schedule::entries(&workflows) {
        let last = ctx.store.last_tick(&entry.id).await?;
        infos.push(ScheduleInfo::new(&entry, last, now, args.next.max(1)));
    }
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&infos)?);
        return Ok(ExitCode::SUCCESS);
    }
    if infos.is_empty() {
        outln!("no schedules in {}", ctx.workflows_dir.display());
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "{:<24}  {:<16}  {:<16}  {:<8}  {:<20}  {:<25}  NEXT",
        "SCHEDULE",
        "CRON",
        "TIMEZONE",
        "CATCH_UP",
        "STARTS",
        "LAST FIRED"
    );
    for i in &infos {
        let catch_up = serde_json::to_value(i.catch_up)?;
        outln!(
            "{:<24}  {:<16}  {:<16}  {:<8}  {:<20}  {:<25}  {}",
            i.id,
            i.cron,
            i.timezone,
            catch_up.as_str().unwrap_or(""),
            match (i.mode, &i.scenario) {
                (ScheduleMode::Live, _) => "a run".to_string(),
                (ScheduleMode::Drill, Some(s)) => format!("drill {s}"),
                (ScheduleMode::Drill, None) => "a drill".to_string(),
            },
            i.last_tick.as_deref().unwrap_or("never"),
            i.next.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}
