//! The CLI in an operator's shell: Tab completion through a real bash,
//! man pages, and `--version` naming the build.

use std::process::Command;

use crate::util::{Sandbox, lifeboat_in, stdout};

/// What bash offers after `line` + Tab, in `dir`, with the script
/// `lifeboat completions bash` prints.
fn bash_completes(dir: &std::path::Path, words: &[&str]) -> Vec<String> {
    let line = words.join(" ");
    let script = format!(
        r#"source <("$LIFEBOAT_BIN" completions bash)
COMP_WORDS=({words})
COMP_CWORD={cword}
COMP_LINE="{line}"
COMP_POINT=${{#COMP_LINE}}
COMP_TYPE=9
_clap_complete_lifeboat lifeboat "{current}" "{previous}"
printf '%s\n' "${{COMPREPLY[@]}}""#,
        words = words.iter().map(|w| format!("'{w}'")).collect::<Vec<_>>().join(" "),
        cword = words.len() - 1,
        current = words[words.len() - 1],
        previous = words[words.len() - 2],
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .env("LIFEBOAT_BIN", env!("CARGO_BIN_EXE_lifeboat"))
        .env_remove("LIFEBOAT_CONFIG")
        .output()
        .expect("bash runs");
    assert!(out.status.success(), "bash: {}", String::from_utf8_lossy(&out.stderr));
    stdout(&out).lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect()
}

#[test]
fn bash_completes_commands_and_workflow_names_from_the_workflows_directory() {
    let sb = Sandbox::new("shell-complete");
    std::fs::create_dir_all(sb.path("workflows")).unwrap();
    for name in ["failover", "failback", "backup"] {
        sb.write(&format!("workflows/{name}.yaml"), &format!("name: {name}\nsteps: {{}}\n"));
    }
    assert_eq!(bash_completes(&sb.dir, &["lifeboat", "ru"]), ["run", "runs"]);
    assert_eq!(bash_completes(&sb.dir, &["lifeboat", "run", "fail"]), ["failback", "failover"]);
    assert_eq!(
        bash_completes(&sb.dir, &["lifeboat", "runs", "--workflow", "b"]),
        ["backup"],
        "the --workflow option completes too"
    );
    // Completing never creates a database.
    assert!(!sb.path("lifeboat.db").exists());
}

#[test]
fn zsh_and_fish_scripts_are_generated_and_a_stray_complete_variable_is_ignored() {
    let sb = Sandbox::new("shell-scripts");
    for shell in ["zsh", "fish"] {
        let out = lifeboat_in(&sb.dir, &["completions", shell]);
        assert!(out.status.success(), "{shell}: {out:?}");
        let script = stdout(&out);
        assert!(script.contains("LIFEBOAT_COMPLETE"), "{shell} script:\n{script}");
        // Checked by the shell itself where it is installed.
        if Command::new(shell).arg("--version").output().is_ok() {
            let check = Command::new(shell).arg("-n").arg("-c").arg(&script).output().unwrap();
            assert!(check.status.success(), "{shell} -n: {check:?}");
        }
    }
    // clap's default variable means nothing to lifeboat.
    let out = Command::new(env!("CARGO_BIN_EXE_lifeboat"))
        .arg("--version")
        .env("COMPLETE", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(stdout(&out).starts_with("lifeboat "), "{}", stdout(&out));
}

#[test]
fn man_pages_are_written_for_every_command_and_version_names_the_build() {
    let sb = Sandbox::new("shell-man");
    let out = lifeboat_in(&sb.dir, &["man", "--dir", "man/man1"]);
    assert!(out.status.success(), "{out:?}");
    for page in ["lifeboat.1", "lifeboat-run.1", "lifeboat-serve.1", "lifeboat-completions.1"] {
        let text = std::fs::read_to_string(sb.path("man/man1").join(page))
            .unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.starts_with(".ie") || text.contains(".TH"), "{page} is not roff:\n{text}");
    }
    let version = stdout(&lifeboat_in(&sb.dir, &["--version"]));
    // `lifeboat 0.1.0 (commit 1a2b3c4d5e6f, built 2026-12-04)`
    assert!(version.contains("(commit ") && version.contains(", built 20"), "{version}");
}
