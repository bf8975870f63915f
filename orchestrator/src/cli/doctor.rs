//! `lifeboat doctor [--json] [--send-test]`: every readiness check (see
//! `crate::doctor`) as a table, or one JSON document; exit 1 on any failure.

use std::process::ExitCode;

use serde::Serialize;

use super::GlobalArgs;
use crate::doctor::{Finding, Probe, Status};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print one JSON document instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Also send a test message through every channel that can be reached
    /// (a PagerDuty test incident is resolved at once).
    #[arg(long)]
    pub send_test: bool,
}

#[derive(Serialize)]
struct Document<'a> {
    ok: bool,
    passed: usize,
    warnings: usize,
    failed: usize,
    checks: &'a [Finding],
}

pub fn run(global: &GlobalArgs, args: Args) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let probe = Probe { send_test: args.send_test };
    let findings = runtime.block_on(crate::doctor::examine(&global.options(), probe));
    let count = |s: Status| findings.iter().filter(|f| f.status == s).count();
    let (passed, warnings, failed) =
        (count(Status::Pass), count(Status::Warn), count(Status::Fail));
    if args.json {
        let doc = Document { ok: failed == 0, passed, warnings, failed, checks: &findings };
        outln!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print_table(&findings);
        outln!();
        outln!("{passed} passed, {warnings} warning(s), {failed} failed");
    }
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// One line per finding; a problem's fix on the line below it.
fn print_table(findings: &[Finding]) {
    let width = |f: fn(&Finding) -> usize| findings.iter().map(f).max().unwrap_or(0);
    let check_w = width(|f| f.check.len()).max(5);
    let target_w = width(|f| f.target.chars().count()).clamp(6, 40);
    outln!("{:<4}  {:<check_w$}  {:<target_w$}  DETAIL", "", "CHECK", "TARGET");
    for f in findings {
        let target = crate::text::inline(&f.target);
        outln!(
            "{:<4}  {:<check_w$}  {:<target_w$}  {}",
            f.status.as_str().to_uppercase(),
            f.check,
            target,
            f.detail
        );
        if let Some(fix) = &f.fix {
            outln!("{:<4}  {:<check_w$}  {:<target_w$}  fix: {fix}", "", "", "");
        }
    }
}
