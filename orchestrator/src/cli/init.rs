//! `lifeboat init [DIR]`: scaffold a lifeboat.toml and a starter workflow.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to create the files (default: the current directory).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
}

pub const CONFIG: &str = include_str!("init/lifeboat.toml");
pub const STARTER: &str = include_str!("init/hello.yaml");

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    // The schema beside the workflows: the starter's first line points
    // editors (yaml-language-server) at it, offline.
    let schema = crate::schema::workflow_schema_json();
    let files = [
        (args.dir.join("lifeboat.toml"), CONFIG),
        (args.dir.join("workflows").join("hello.yaml"), STARTER),
        (args.dir.join("workflows").join("schema.json"), schema.as_str()),
    ];
    for (path, _) in &files {
        if path.exists() {
            anyhow::bail!("{} already exists; not overwriting anything", path.display());
        }
    }
    for dir in ["workflows", "templates"] {
        let d = args.dir.join(dir);
        std::fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    for (path, text) in &files {
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
        outln!("created {}", path.display());
    }
    outln!("next: cd {} && lifeboat validate && lifeboat run hello --wait", args.dir.display());
    Ok(ExitCode::SUCCESS)
}
