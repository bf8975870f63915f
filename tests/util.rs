//! Helpers shared by the end-to-end tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace root: tests run from there so paths in messages are stable.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// `lifeboat` with a clean, colourless environment, run from the workspace root.
pub fn lifeboat(args: &[&str]) -> Output {
    lifeboat_in(&root(), args)
}

/// `lifeboat` run from `dir` (where no `lifeboat.toml` is picked up unless `dir` has one).
pub fn lifeboat_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lifeboat"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("LIFEBOAT_CONFIG")
        .env_remove("LIFEBOAT_DATABASE_URL")
        .output()
        .expect("run lifeboat")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A fresh, empty directory for one test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}
