//! `lifeboat graph FILE --format mermaid|dot|svg`.

use std::path::PathBuf;
use std::process::ExitCode;

use super::GlobalArgs;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    Mermaid,
    Dot,
    Svg,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    pub file: PathBuf,
    #[arg(long, value_enum, default_value = "mermaid")]
    pub format: Format,
    /// Write to this file instead of stdout.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

pub fn run(global: &GlobalArgs, args: Args) -> anyhow::Result<ExitCode> {
    // Names (channels, hooks, connections…) are checked as `validate` does.
    let loaded = super::load_config(global)?;
    let known = loaded.from_file.then(|| loaded.config.known_names(&loaded.base));
    let outcome =
        crate::catalog::files::compile_files(std::slice::from_ref(&args.file), known.as_ref());
    let Some(wf) = outcome.compiled.into_iter().next() else {
        for report in &outcome.reports {
            eprint!("{}", report.render(super::stderr_is_terminal()));
        }
        return Ok(ExitCode::from(1));
    };
    let text = match args.format {
        Format::Mermaid => crate::viz::mermaid(&wf),
        Format::Dot => crate::viz::dot(&wf),
        Format::Svg => crate::viz::svg(&wf),
    };
    match args.output {
        Some(path) => std::fs::write(&path, text)?,
        None => out!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}
