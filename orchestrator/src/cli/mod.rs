//! The command line: argument types (clap derive) and dispatch. Commands
//! live one per module; `anyhow` is used only here and in `main.rs`.

mod graph;
mod init;
mod schema;
mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "lifeboat", version, about = "Workflow-driven disaster-recovery orchestrator")]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Args)]
pub struct GlobalArgs {
    /// Configuration file (default: ./lifeboat.toml if present).
    #[arg(long, global = true, env = "LIFEBOAT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Database URL (default: sqlite://lifeboat.db).
    #[arg(long, global = true)]
    pub database_url: Option<String>,
    /// Directory of workflow files (default: workflows).
    #[arg(long, global = true)]
    pub workflows: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Compile workflow files or directories and print every error.
    Validate(validate::Args),
    /// Draw a workflow's dependency graph (mermaid, dot or svg).
    Graph(graph::Args),
    /// Print the JSON Schema of the workflow format.
    Schema(schema::Args),
    /// Scaffold a lifeboat.toml and a starter workflow.
    Init(init::Args),
}

/// Exit codes: 0 ok, 1 failed run or invalid input, 2 usage or internal error.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate(args) => validate::run(&cli.global, args),
        Command::Graph(args) => graph::run(&cli.global, args),
        Command::Schema(args) => schema::run(args),
        Command::Init(args) => init::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Whether to colour output written to stderr.
fn stderr_is_terminal() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// Reads and compiles one file, with names from the configuration if one is found.
fn load_config(global: &GlobalArgs) -> anyhow::Result<Option<(crate::config::Config, PathBuf)>> {
    let (config, path) = crate::config::Config::load(global.config.as_deref())?;
    Ok(path.map(|p| {
        let base = p.parent().map(|d| d.to_path_buf()).unwrap_or_default();
        (config, base)
    }))
}
