//! Doctor's checks of what is on this machine: the configuration parses,
//! the environment variables it names are set, every workflow compiles
//! with the configuration's names, and every `shell` step's program exists.

use std::path::Path;

use serde_json::Value;

use super::{Finding, Setup};
use crate::app::Options;
use crate::compile::{CompiledBody, CompiledWorkflow, DrillAction};

/// The configuration, or the one finding that says why there is none (no
/// other check can run without it).
pub(super) fn load(opts: &Options, findings: &mut Vec<Finding>) -> Option<Setup> {
    match crate::app::load_config(opts.config.as_deref()) {
        Ok(loaded) => {
            let file = loaded.file.clone();
            let target = file.as_ref().map_or("defaults".into(), |p| p.display().to_string());
            let detail = match &file {
                Some(_) => "parses, every section and key known",
                None => "no lifeboat.toml here: built-in defaults (SQLite, ./workflows)",
            };
            findings.push(Finding::pass("config", target, detail));
            let database_url =
                opts.database_url.clone().unwrap_or_else(|| loaded.config.database_url.clone());
            let workflows_dir = opts
                .workflows
                .clone()
                .unwrap_or_else(|| loaded.base.join(&loaded.config.workflows_dir));
            Some(Setup {
                config: loaded.config,
                file,
                base: loaded.base,
                database_url,
                workflows_dir,
                store: None,
            })
        }
        Err(e) => {
            let target =
                opts.config.as_ref().map_or("lifeboat.toml".into(), |p| p.display().to_string());
            findings.push(Finding::fail(
                "config",
                target,
                e.to_string(),
                "fix the file at the place named (docs/config.md lists every key)",
            ));
            None
        }
    }
}

/// Keys whose variable may be unset: a feature is off without it, and
/// what is lost.
const OPTIONAL_ENV: &[(&str, &str)] =
    &[("server.link_secret_env", "notifications carry no signed approve/acknowledge links")];

/// Every `*_env` key written in the file names a variable that is set.
/// Read from the file itself, so a key added to any section is covered.
pub(super) fn env_vars(setup: &Setup, findings: &mut Vec<Finding>) {
    let Some(file) = &setup.file else { return };
    let Ok(text) = std::fs::read_to_string(file) else { return };
    let Ok(table) = text.parse::<toml::Table>() else { return };
    let mut named = Vec::new();
    env_keys(&toml::Value::Table(table), "", &mut named);
    for (key, var) in named {
        let at = line_of(&text, &key, &var).map_or(String::new(), |l| format!(":{l}"));
        let place = format!("{}{at} {key}", file.display());
        match std::env::var_os(&var) {
            Some(v) if !v.is_empty() => {
                findings.push(Finding::pass("env", &var, format!("set (named by {place})")))
            }
            _ => {
                let fix = format!(
                    "export {var}=… in the service's environment (systemd: /etc/lifeboat/lifeboat.env)"
                );
                findings.push(match OPTIONAL_ENV.iter().find(|(k, _)| *k == key) {
                    Some((_, lost)) => {
                        Finding::warn("env", &var, format!("not set ({place}): {lost}"), fix)
                    }
                    None => {
                        Finding::fail("env", &var, format!("not set, and {place} names it"), fix)
                    }
                })
            }
        }
    }
}

/// `(dotted key, variable)` of every string value under a key ending in `_env`.
fn env_keys(value: &toml::Value, path: &str, out: &mut Vec<(String, String)>) {
    match value {
        toml::Value::Table(table) => {
            for (k, v) in table {
                let key = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                match v {
                    toml::Value::String(var) if k.ends_with("_env") => out.push((key, var.clone())),
                    _ => env_keys(v, &key, out),
                }
            }
        }
        toml::Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                env_keys(v, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// The first line that assigns `var` to the last part of `key`.
fn line_of(text: &str, key: &str, var: &str) -> Option<usize> {
    let leaf = key.rsplit('.').next().unwrap_or(key);
    text.lines().position(|l| l.contains(leaf) && l.contains(var)).map(|i| i + 1)
}

/// Every workflow file compiles, with the configuration's names.
pub(super) fn workflows(setup: &Setup, findings: &mut Vec<Finding>) -> Vec<CompiledWorkflow> {
    let dir = &setup.workflows_dir;
    let files = match crate::catalog::files::collect_files(std::slice::from_ref(dir)) {
        Ok(files) if !files.is_empty() => files,
        Ok(_) => {
            findings.push(Finding::warn(
                "workflow",
                dir.display().to_string(),
                "no workflow files (*.yaml, *.yml)",
                "write one (lifeboat init) or point workflows_dir at them",
            ));
            return Vec::new();
        }
        Err(e) => {
            findings.push(Finding::fail(
                "workflow",
                dir.display().to_string(),
                e,
                "create the directory or set workflows_dir in lifeboat.toml",
            ));
            return Vec::new();
        }
    };
    let known = setup.file.is_some().then(|| setup.config.known_names(&setup.base));
    let outcome = crate::catalog::files::compile_files(&files, known.as_ref());
    for report in outcome.reports.iter().filter(|r| r.has_errors()) {
        let first = report
            .diagnostics
            .iter()
            .find(|d| d.severity == crate::compile::Severity::Error)
            .map(|d| format!("{}: {}", d.code.as_str(), d.message))
            .unwrap_or_default();
        let errors =
            report.diagnostics.iter().filter(|d| d.severity == crate::compile::Severity::Error);
        findings.push(Finding::fail(
            "workflow",
            &report.file,
            format!("{} error(s); first: {first}", errors.count()),
            format!("run `lifeboat validate {}` for every error with its line", report.file),
        ));
    }
    let compiled: Vec<CompiledWorkflow> = outcome
        .compiled
        .into_iter()
        .filter(|wf| !outcome.reports.iter().any(|r| r.file == wf.file && r.has_errors()))
        .collect();
    for wf in &compiled {
        findings.push(Finding::pass(
            "workflow",
            &wf.file,
            format!("`{}` compiles ({} steps)", wf.name, wf.steps.len()),
        ));
    }
    compiled
}

/// Every program a `shell` step (or its rollback or drill substitute)
/// runs exists: on `PATH`, or at its path when it names one.
pub(super) fn programs(workflows: &[CompiledWorkflow], findings: &mut Vec<Finding>) {
    let mut seen = std::collections::BTreeSet::new();
    for wf in workflows {
        for step in &wf.steps {
            let substitute = match &step.drill {
                DrillAction::Substitute(body) => Some(body.as_ref()),
                _ => None,
            };
            for body in std::iter::once(&step.body).chain(&step.rollback).chain(substitute) {
                let Some((program, workdir)) = program_of(body) else { continue };
                if !seen.insert((program.clone(), workdir.clone())) {
                    continue;
                }
                let (line, _) = crate::compile::diagnostic::line_col(&wf.source, step.span.start);
                let used_by = format!("{}:{line} step `{}`", wf.file, step.id);
                findings.push(check_program(&program, workdir.as_deref(), &used_by));
            }
        }
    }
    if !seen.is_empty() {
        findings.push(check_exec_shim(lifeboat_steps::exec_shim()));
    }
}

/// Whether shell steps start through `lifeboat-exec` (cheap) or by forking
/// the whole server (steps/src/process/spawn.rs); both keep their
/// guarantees, so a missing shim is a warning.
fn check_exec_shim(shim: &lifeboat_steps::ExecShim) -> Finding {
    use lifeboat_steps::{EXEC_SHIM_ENV, ExecShim};
    let name = lifeboat_steps::shim::NAME;
    let slower = "shell steps start by forking the whole server, a millisecond or more each";
    match shim {
        ExecShim::Found(path) => Finding::pass(
            "program",
            name,
            format!("{} (shell steps start through it)", path.display()),
        ),
        ExecShim::Off => Finding::warn(
            "program",
            name,
            format!("turned off by an empty {EXEC_SHIM_ENV}: {slower}"),
            format!("unset {EXEC_SHIM_ENV}"),
        ),
        ExecShim::Missing(path) => Finding::warn(
            "program",
            name,
            format!("not found at {}: {slower}", path.display()),
            format!(
                "install {name} in the directory of lifeboat (scripts/install.sh and the \
                 Containerfile do), or name it in {EXEC_SHIM_ENV}"
            ),
        ),
    }
}

/// The program a `shell` body runs and its untemplated `workdir`; `None`
/// when it is not a shell step or the program is a template (known only
/// when the step runs).
fn program_of(body: &CompiledBody) -> Option<(String, Option<String>)> {
    if body.kind.name() != "shell" {
        return None;
    }
    let program = match (&body.with["command"], &body.with["script"]) {
        (Value::Array(argv), _) => argv.first()?.as_str()?.to_string(),
        (_, Value::String(_)) => "bash".to_string(),
        _ => return None,
    };
    if program.contains("{{") {
        return None;
    }
    let workdir = body.with["workdir"].as_str().filter(|w| !w.contains("{{")).map(String::from);
    Some((program, workdir))
}

fn check_program(program: &str, workdir: Option<&str>, used_by: &str) -> Finding {
    let found = if program.contains('/') {
        let path = Path::new(workdir.unwrap_or(".")).join(program);
        is_executable(&path).then_some(path)
    } else {
        std::env::var_os("PATH")
            .iter()
            .flat_map(std::env::split_paths)
            .map(|dir| dir.join(program))
            .find(|p| is_executable(p))
    };
    match found {
        Some(path) => {
            Finding::pass("program", program, format!("{} (used by {used_by})", path.display()))
        }
        None if program.contains('/') => Finding::fail(
            "program",
            program,
            format!("not found or not executable (used by {used_by})"),
            "install it there, fix the path, or use an absolute path",
        ),
        None => Finding::fail(
            "program",
            program,
            format!("not on PATH (used by {used_by})"),
            "install it on this machine (and every replica), or use an absolute path",
        ),
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_env_key_in_any_section_is_found_with_its_line() {
        let text = "database_url = \"sqlite://x.db\"\n[channels.mail]\ntype = \"email\"\n\
                    password_env = \"SMTP_PASS\"\n[[users]]\nname = \"ana\"\ntoken_env = \"ANA_TOKEN\"\n";
        let mut named = Vec::new();
        env_keys(&toml::Value::Table(text.parse().unwrap()), "", &mut named);
        assert_eq!(
            named,
            [
                ("channels.mail.password_env".to_string(), "SMTP_PASS".to_string()),
                ("users[0].token_env".to_string(), "ANA_TOKEN".to_string()),
            ]
        );
        assert_eq!(line_of(text, "channels.mail.password_env", "SMTP_PASS"), Some(4));
    }

    #[test]
    fn a_missing_or_disabled_exec_shim_is_a_warning_with_its_fix() {
        use lifeboat_steps::ExecShim;
        let found = check_exec_shim(&ExecShim::Found("/opt/lb/lifeboat-exec".into()));
        assert_eq!(found.status, super::super::Status::Pass);
        assert!(found.detail.starts_with("/opt/lb/lifeboat-exec"), "{found:?}");
        let missing = check_exec_shim(&ExecShim::Missing("/opt/lb/lifeboat-exec".into()));
        assert_eq!(missing.status, super::super::Status::Warn);
        assert!(missing.detail.contains("not found at /opt/lb/lifeboat-exec"), "{missing:?}");
        assert!(missing.fix.unwrap().contains("install lifeboat-exec"));
        let off = check_exec_shim(&ExecShim::Off);
        assert_eq!(off.fix.as_deref(), Some("unset LIFEBOAT_EXEC_SHIM"));
    }

    #[test]
    fn a_program_is_found_on_path_or_at_its_path_and_named_when_missing() {
        assert_eq!(check_program("sh", None, "x").status, super::super::Status::Pass);
        let missing = check_program("no-such-program-lb", None, "f.yaml:3 step `a`");
        assert_eq!(missing.status, super::super::Status::Fail);
        assert!(missing.detail.contains("not on PATH (used by f.yaml:3 step `a`)"), "{missing:?}");
        let relative = check_program("./bin/promote", Some("/nonexistent"), "x");
        assert!(relative.detail.contains("not found or not executable"), "{relative:?}");
    }
}
