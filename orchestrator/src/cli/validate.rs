//! `lifeboat validate [PATH...]`: compile files or directories, print every error.

use std::path::PathBuf;
use std::process::ExitCode;

use serde::Serialize;

use super::GlobalArgs;
use crate::catalog::files::{collect_files, compile_files};
use crate::compile::{self, CompiledWorkflow, FileReport, Severity};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Workflow files or directories (default: the workflows directory).
    pub paths: Vec<PathBuf>,
    /// Print one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct JsonFile<'a> {
    file: &'a str,
    valid: bool,
    workflow: Option<&'a str>,
    steps: Option<usize>,
    diagnostics: Vec<compile::diagnostic::JsonDiagnostic<'a>>,
}

pub fn run(global: &GlobalArgs, args: Args) -> anyhow::Result<ExitCode> {
    let loaded = super::load_config(global)?;
    let known = loaded.from_file.then(|| loaded.config.known_names(&loaded.base));
    let paths = if args.paths.is_empty() {
        vec![
            global
                .workflows
                .clone()
                .unwrap_or_else(|| loaded.base.join(&loaded.config.workflows_dir)),
        ]
    } else {
        args.paths
    };
    let files = collect_files(&paths).map_err(anyhow::Error::msg)?;
    if files.is_empty() {
        anyhow::bail!("no workflow files (*.yaml, *.yml) found in {}", display_list(&paths));
    }
    let outcome = compile_files(&files, known.as_ref());
    // With a config, its notification templates are checked too: every
    // user template renders against every event's context.
    let templates = match loaded.from_file {
        true => crate::exec::notifier::Notifier::from_config(&loaded.config, &loaded.base)
            .err()
            .map(|e| format!("error: notification templates: {e:#}")),
        false => None,
    };
    if let Some(problem) = &templates {
        eprintln!("{problem}");
    }
    let valid = outcome.reports.iter().all(|r| !r.has_errors()) && templates.is_none();

    // Files that compiled, with their warnings (a file with errors is in `reports`).
    let passed: Vec<(&CompiledWorkflow, FileReport)> = outcome
        .compiled
        .iter()
        .filter(|wf| !outcome.reports.iter().any(|r| r.file == wf.file))
        .map(|wf| {
            let warnings = FileReport {
                file: wf.file.clone(),
                source: wf.source.clone(),
                diagnostics: wf.warnings.clone(),
            };
            (wf, warnings)
        })
        .collect();

    if args.json {
        let mut out: Vec<JsonFile> = Vec::new();
        for (wf, warnings) in &passed {
            out.push(JsonFile {
                file: &wf.file,
                valid: true,
                workflow: Some(&wf.name),
                steps: Some(wf.steps.len()),
                diagnostics: warnings.to_json(),
            });
        }
        for report in &outcome.reports {
            out.push(JsonFile {
                file: &report.file,
                valid: false,
                workflow: None,
                steps: None,
                diagnostics: report.to_json(),
            });
        }
        out.sort_by(|a, b| a.file.cmp(b.file));
        outln!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        let color = super::stderr_is_terminal();
        for report in outcome.reports.iter().chain(passed.iter().map(|(_, w)| w)) {
            eprint!("{}", report.render(color));
        }
        for (wf, warnings) in &passed {
            let warned = match warnings.diagnostics.len() {
                0 => String::new(),
                n => format!(", {n} warning{}", plural(n)),
            };
            outln!(
                "ok   {} ({}: {} step{}, {} wave{}{warned})",
                wf.file,
                wf.name,
                wf.steps.len(),
                plural(wf.steps.len()),
                wf.waves.len(),
                plural(wf.waves.len())
            );
        }
        let count = |severity: Severity| -> usize {
            outcome
                .reports
                .iter()
                .chain(passed.iter().map(|(_, w)| w))
                .flat_map(|r| &r.diagnostics)
                .filter(|d| d.severity == severity)
                .count()
        };
        let (errors, warnings) = (count(Severity::Error), count(Severity::Warning));
        let warned = match warnings {
            0 => String::new(),
            n => format!(", {n} warning{}", plural(n)),
        };
        let invalid = outcome.reports.len();
        outln!(
            "{} file{}: {} valid, {} invalid ({} error{}{warned})",
            files.len(),
            plural(files.len()),
            files.len() - invalid,
            invalid,
            errors,
            plural(errors)
        );
    }
    Ok(if valid { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn display_list(paths: &[PathBuf]) -> String {
    paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
}
