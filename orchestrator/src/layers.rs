//! The layer order of the orchestrator's modules and of the notify crate,
//! enforced: a module may import (`crate::<module>`) only modules of a lower
//! layer. ARCHITECTURE.md ("Layers") explains the order; when a new module
//! appears, it gets a place here, or this test fails naming it.

use std::path::{Path, PathBuf};

/// One layer: its modules, which never import each other.
struct Layer(&'static [&'static str]);

/// The orchestrator, lowest first.
const ORCHESTRATOR: &[Layer] = &[
    Layer(&["text", "suggest", "events"]),
    Layer(&["model"]),
    Layer(&["kinds"]),
    Layer(&["compile"]),
    Layer(&["viz", "schema", "config"]),
    Layer(&["store"]),
    Layer(&["audit_anchor", "metrics"]),
    Layer(&["catalog", "retention", "telemetry"]),
    Layer(&["exec"]),
    Layer(&["triggers"]),
    Layer(&["app"]),
    Layer(&["views", "doctor"]),
    Layer(&["serve"]),
    Layer(&["cli"]),
];

/// The notify crate, lowest first: channel kinds never import each other.
const NOTIFY: &[Layer] = &[
    Layer(&["event", "signature"]),
    Layer(&["incident"]),
    Layer(&["context"]),
    Layer(&["templates"]),
    Layer(&["message"]),
    Layer(&["channel"]),
    Layer(&["http"]),
    Layer(&["email", "slack", "teams", "pagerduty", "opsgenie", "webhook", "file"]),
    Layer(&["channels"]),
];

/// Files compiled only for tests, which may exercise modules above them.
const TEST_ONLY: &[&str] = &["store/conformance.rs", "store/postgres/tests.rs", "layers.rs"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to (`exec/driver/gates.rs` → `exec`).
fn module_of(relative: &Path) -> String {
    let first = relative.components().next().unwrap().as_os_str().to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// `crate::x` paths named in a line of code (comments skipped by the caller),
/// including the names of `crate::{x, y}`.
fn imported(line: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect()
    };
    let mut out = Vec::new();
    for (i, _) in line.match_indices("crate::") {
        let rest = &line[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = group.split('}').next().unwrap_or("");
            out.extend(group.split(',').map(|p| ident(p.trim())).filter(|n| !n.is_empty()));
        } else {
            out.push(ident(rest));
        }
    }
    out
}

/// Every import of a module above the importer, as `file:line: a imports b`.
fn violations(root: &Path, layers: &[Layer], ignore: &[&str]) -> Vec<String> {
    let rank = |m: &str| layers.iter().position(|l| l.0.contains(&m));
    let mut files = Vec::new();
    rust_files(root, &mut files);
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let relative = file.strip_prefix(root).unwrap();
        let shown = relative.to_string_lossy().replace('\\', "/");
        if TEST_ONLY.contains(&shown.as_str()) || ignore.contains(&shown.as_str()) {
            continue;
        }
        let from = module_of(relative);
        let Some(from_rank) = rank(&from) else {
            out.push(format!("{shown}: module `{from}` has no layer in layers.rs"));
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (n, line) in lines.iter().enumerate() {
            let code = line.trim_start();
            // The unit tests at the bottom of a file may use anything.
            if code == "#[cfg(test)]" && lines.get(n + 1).is_some_and(|l| l.starts_with("mod ")) {
                break;
            }
            if code.starts_with("//") {
                continue;
            }
            for to in imported(code) {
                if to == from {
                    continue;
                }
                let Some(to_rank) = rank(&to) else { continue };
                if to_rank >= from_rank {
                    out.push(format!("{shown}:{}: `{from}` imports `{to}`, above it", n + 1));
                }
            }
        }
    }
    out
}

#[test]
fn no_orchestrator_module_imports_a_module_above_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = violations(&root, ORCHESTRATOR, &["lib.rs", "main.rs", "bin/lifeboat-exec.rs"]);
    assert!(found.is_empty(), "layering broken:\n{}", found.join("\n"));
}

#[test]
fn no_notify_module_imports_a_module_above_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../notify/src");
    let found = violations(&root, NOTIFY, &["lib.rs"]);
    assert!(found.is_empty(), "layering broken:\n{}", found.join("\n"));
}

/// Every mention of `anyhow` in code outside the given files and folders,
/// as `file:line`.
fn anyhow_outside(root: &Path, allowed: &[&str]) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(root, &mut files);
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let shown = file.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/");
        if allowed.iter().any(|a| shown == *a || shown.starts_with(&format!("{a}/"))) {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if !code.starts_with("//") && code.contains("anyhow") {
                out.push(format!("{shown}:{}", n + 1));
            }
        }
    }
    out
}

/// Libraries return typed errors (thiserror) that callers can match on;
/// `anyhow` only gathers them at the top, in the CLI.
#[test]
fn anyhow_is_used_only_by_the_cli() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut found = anyhow_outside(&manifest.join("src"), &["cli", "main.rs", "layers.rs"]);
    for library in ["../steps/src", "../notify/src"] {
        found.extend(anyhow_outside(&manifest.join(library), &[]));
    }
    assert!(found.is_empty(), "anyhow outside cli/ and main.rs:\n{}", found.join("\n"));
}

#[test]
fn an_upward_import_is_reported_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("model")).unwrap();
    std::fs::write(
        dir.path().join("model/mod.rs"),
        "//! crate::compile in a comment is fine\nuse crate::text;\nuse crate::{compile, text};\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("compile.rs"), "use crate::model::Step;\n").unwrap();
    let found = violations(dir.path(), ORCHESTRATOR, &[]);
    assert_eq!(found, ["model/mod.rs:3: `model` imports `compile`, above it"]);
}

#[test]
fn anyhow_in_a_library_module_is_reported_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("cli")).unwrap();
    std::fs::write(dir.path().join("cli/run.rs"), "fn f() -> anyhow::Result<()> {}\n").unwrap();
    std::fs::write(dir.path().join("app.rs"), "// anyhow in a comment\nuse anyhow::Context;\n")
        .unwrap();
    assert_eq!(anyhow_outside(dir.path(), &["cli"]), ["app.rs:2"]);
}
