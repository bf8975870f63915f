//! The CLI in an operator's shell: Tab completion (`lifeboat completions
//! bash|zsh|fish`) and man pages (`lifeboat man --dir DIR`).
//!
//! Completion is clap's dynamic engine: the script a shell sources calls
//! `lifeboat` back on each Tab with `LIFEBOAT_COMPLETE=<shell>` set, so
//! workflow names come from the workflows directory as it is now. Run ids
//! are not completed: that would open (and migrate) the database on every
//! Tab. The variable is lifeboat's own, not clap's default `COMPLETE`, so a
//! stray `COMPLETE=1` in a CI environment cannot turn a real command into
//! a completion request.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::CommandFactory;
use clap_complete::CompletionCandidate;
use clap_complete::env::{Bash, EnvCompleter, Fish, Zsh};

use super::Cli;

/// The environment variable that makes `lifeboat` answer a completion request.
pub const COMPLETE_VAR: &str = "LIFEBOAT_COMPLETE";

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ShellName {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell to print the completion script for.
    pub shell: ShellName,
}

#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Directory to write `lifeboat.1` and one page per command into
    /// (created if missing).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
}

/// Answers a completion request and exits, if this process is one; returns
/// otherwise. Called before anything is printed.
pub fn complete_if_asked() {
    clap_complete::CompleteEnv::with_factory(Cli::command).var(COMPLETE_VAR).complete();
}

/// `lifeboat completions SHELL`: the script to source (or install in the
/// shell's completion directory).
pub fn completions(args: CompletionsArgs) -> anyhow::Result<ExitCode> {
    let shell: &dyn EnvCompleter = match args.shell {
        ShellName::Bash => &Bash,
        ShellName::Zsh => &Zsh,
        ShellName::Fish => &Fish,
    };
    // The installed binary's path: the script works whatever PATH the shell has.
    let exe = std::env::current_exe()?;
    let mut script = Vec::new();
    shell.write_registration(
        COMPLETE_VAR,
        "lifeboat",
        "lifeboat",
        &exe.to_string_lossy(),
        &mut script,
    )?;
    out!("{}", String::from_utf8_lossy(&script));
    Ok(ExitCode::SUCCESS)
}

/// `lifeboat man --dir DIR`: `lifeboat.1` and `lifeboat-<command>.1`.
pub fn man(args: ManArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", args.dir.display()))?;
    let cli = Cli::command();
    let mut written = vec![write_page(&args.dir, "lifeboat", cli.clone())?];
    for sub in cli.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("lifeboat-{}", sub.get_name());
        let page =
            sub.clone().bin_name(format!("lifeboat {}", sub.get_name())).version(super::VERSION);
        written.push(write_page(&args.dir, &name, page)?);
    }
    outln!("wrote {} man pages to {}", written.len(), args.dir.display());
    Ok(ExitCode::SUCCESS)
}

fn write_page(dir: &Path, name: &str, command: clap::Command) -> anyhow::Result<PathBuf> {
    let path = dir.join(format!("{name}.1"));
    let mut page = Vec::new();
    clap_mangen::Man::new(command).title(name).render(&mut page)?;
    std::fs::write(&path, page)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

/// Workflow names for Tab: the `.yaml`/`.yml` files of the workflows
/// directory (`LIFEBOAT_WORKFLOWS`, else `workflows_dir` of
/// `./lifeboat.toml`, else `./workflows`), by file name, which is what
/// `lifeboat init` and the examples use as the workflow's name.
pub fn workflow_names(current: &OsStr) -> Vec<CompletionCandidate> {
    names_in(&workflows_dir(), &current.to_string_lossy())
        .into_iter()
        .map(CompletionCandidate::new)
        .collect()
}

fn names_in(dir: &Path, prefix: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let path = e.path();
            let ext = path.extension()?.to_str()?;
            matches!(ext, "yaml" | "yml").then(|| path.file_stem()?.to_str().map(String::from))?
        })
        .filter(|name| name.starts_with(prefix))
        .collect();
    names.sort();
    names
}

fn workflows_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("LIFEBOAT_WORKFLOWS") {
        return PathBuf::from(dir);
    }
    match crate::app::load_config(None) {
        Ok(loaded) => loaded.base.join(&loaded.config.workflows_dir),
        Err(_) => PathBuf::from("workflows"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workflow_names_are_the_yaml_files_matching_the_prefix() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["failover.yaml", "failback.yml", "backup.yaml", "notes.txt"] {
            std::fs::write(dir.path().join(f), "").unwrap();
        }
        assert_eq!(names_in(dir.path(), "fail"), ["failback", "failover"]);
        assert_eq!(names_in(dir.path(), ""), ["backup", "failback", "failover"]);
        assert!(names_in(dir.path(), "zzz").is_empty());
        assert!(names_in(&dir.path().join("missing"), "").is_empty());
    }

    #[test]
    fn every_command_gets_a_man_page() {
        let dir = tempfile::tempdir().unwrap();
        man(ManArgs { dir: dir.path().to_path_buf() }).unwrap();
        let page = std::fs::read_to_string(dir.path().join("lifeboat-run.1")).unwrap();
        assert!(page.contains(".TH lifeboat-run"), "{page}");
        assert!(page.contains("\\-\\-wait"), "{page}");
        assert!(dir.path().join("lifeboat.1").exists());
    }
}
