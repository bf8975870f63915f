//! Workflow files to compiled workflows: reading (size and UTF-8 checks),
//! compiling, and the checks across files (duplicate names, child
//! workflows). `lifeboat validate` and the catalog share it, so a file the
//! catalog refuses is one `validate` reports.

use std::path::{Path, PathBuf};

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
    let mut extra: Vec<(usize, Diagnostic)> = Vec::new();
    for (i, wf) in compiled.iter().enumerate() {
        if let Some(first) = compiled[..i].iter().find(|w| w.name == wf.name) {
            extra.push((
                i,
                Diagnostic::error(
                    Code::DuplicateWorkflow,
                    format!("workflow name `{}` is already used by {}", wf.name, first.file),
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
