//! Workflow files to compiled workflows: reading (size and UTF-8 checks),
//! compiling, and the checks across files (duplicate names, child
//! workflows). `lifeboat validate` and the catalog share it, so a file the
//! catalog refuses is one `validate` reports.

use std::path::{Path, PathBuf};

use crate::compile::diagnostic::{Severity, line_col};
use crate::compile::{
    self, Code, CompileEnv, CompiledWorkflow, Diagnostic, FileReport, KnownNames,
};

/// The outcome of compiling a set of files.
pub struct Outcome {
    pub compiled: Vec<CompiledWorkflow>,
    pub reports: Vec<FileReport>,
}

/// Compiles every file, then checks names across them (duplicates, child workflows).
pub fn compile_files(files: &[PathBuf], known: Option<&KnownNames>) -> Outcome {
    let env = CompileEnv { known };
    let mut compiled = Vec::new();
    let mut reports = Vec::new();
    for file in files {
        let name = file.display().to_string();
        match read_source(file) {
            Ok(source) => match compile::compile(&name, &source, env) {
                Ok(wf) => compiled.push(wf),
                Err(report) => reports.push(report),
            },
            Err(diagnostic) => reports.push(FileReport {
                file: name,
                source: String::new(),
                diagnostics: vec![diagnostic],
            }),
        }
    }
    for wf in &mut compiled {
        if let Some(warning) = stem_warning(wf) {
            wf.warnings.push(warning);
        }
    }
    let mut extra: Vec<(usize, Diagnostic)> = Vec::new();
    for (i, wf) in compiled.iter().enumerate() {
        if let Some(first) = compiled[..i].iter().find(|w| w.name == wf.name) {
            let line = first.definition.name.span.map_or(1, |s| line_col(&first.source, s.start).0);
            extra.push((
                i,
                Diagnostic::error(
                    Code::DuplicateWorkflow,
                    format!("workflow name `{}` is already used by {}:{line}", wf.name, first.file),
                    wf.definition.name.span,
                )
                .help("workflow names must be unique in a workflows directory"),
            ));
        }
    }
    if compiled.len() > 1 {
        extra.extend(compile::check_child_workflows(&compiled));
    }
    for (i, diagnostic) in extra {
        let wf = &compiled[i];
        match reports.iter_mut().find(|r| r.file == wf.file) {
            Some(r) => r.diagnostics.push(diagnostic),
            None => reports.push(FileReport {
                file: wf.file.clone(),
                source: wf.source.clone(),
                diagnostics: wf.warnings.iter().cloned().chain([diagnostic]).collect(),
            }),
        }
    }
    Outcome { compiled, reports }
}

/// LB029: `backup.yaml` declaring `name: restore` is found as `restore`
/// (by the CLI, the API and `workflow` steps alike), which surprises.
fn stem_warning(wf: &CompiledWorkflow) -> Option<Diagnostic> {
    let stem = Path::new(&wf.file).file_stem()?.to_string_lossy();
    (stem != wf.name.as_str()).then(|| {
        let mut d = Diagnostic::error(
            Code::NameNotStem,
            format!("file `{}` declares workflow `{}`", wf.file, wf.name),
            wf.definition.name.span,
        )
        .help(format!(
            "it is run as `{}`; rename the file to `{}.yaml` or change `name:`",
            wf.name, wf.name
        ));
        d.severity = Severity::Warning;
        d
    })
}

/// Reads a file as UTF-8 text, refusing what cannot be a workflow.
pub fn read_source(path: &Path) -> Result<String, Diagnostic> {
    let io = |e: std::io::Error| {
        Diagnostic::error(Code::Io, format!("cannot read {}: {e}", path.display()), None)
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.len() > compile::yaml::MAX_FILE_BYTES as u64 {
        return Err(Diagnostic::error(
            Code::Limit,
            format!(
                "{} is {} bytes; workflow files are limited to {} bytes",
                path.display(),
                meta.len(),
                compile::yaml::MAX_FILE_BYTES
            ),
            None,
        ));
    }
    let bytes = std::fs::read(path).map_err(io)?;
    String::from_utf8(bytes).map_err(|e| {
        Diagnostic::error(
            Code::Io,
            format!(
                "{} is not UTF-8 text (invalid byte at offset {}): is it a workflow file?",
                path.display(),
                e.utf8_error().valid_up_to()
            ),
            None,
        )
    })
}

/// Files named directly, plus `*.yaml`/`*.yml` directly inside directories
/// (sorted); the error names the path that cannot be read.
pub fn collect_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    for path in paths {
        let meta =
            std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if meta.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| format!("cannot list {}: {e}", path.display()))?
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.is_file()
                        && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
                })
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}
