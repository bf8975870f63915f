//! `lifeboat schema`: the JSON Schema of the workflow format.

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Write to this file instead of stdout.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let text = crate::schema::workflow_schema_json();
    match args.output {
        Some(path) => std::fs::write(path, text)?,
        None => out!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}
