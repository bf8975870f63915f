//! `lifeboat validate`: the invalid corpus with its expected diagnostics
//! (insta snapshots), the valid corpus, the example runbooks, `--json`.

use crate::util::{lifeboat, root, stderr, stdout};

const CONFIG: &str = "tests/fixtures/lifeboat.toml";

fn fixtures(dir: &str) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(root().join(dir))
        .expect("fixture dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_invalid_fixture_fails_with_its_snapshot() {
    let files = fixtures("tests/fixtures/invalid");
    assert!(files.len() >= 25, "the invalid corpus shrank to {}", files.len());
    for file in files {
        let path = format!("tests/fixtures/invalid/{file}");
        let out = lifeboat(&["validate", "--config", CONFIG, &path]);
        assert_eq!(out.status.code(), Some(1), "{path} should be invalid:\n{}", stderr(&out));
        let text = stderr(&out);
        assert!(text.contains("error[LB"), "{path}: no diagnostic code:\n{text}");
        assert!(text.contains(&path), "{path}: message does not name the file:\n{text}");
        insta::assert_snapshot!(file.trim_end_matches(".yaml"), text);
    }
}

#[test]
fn every_valid_fixture_and_example_runbook_passes() {
    for dir in ["tests/fixtures/valid", "workflows", "workflows/lab"] {
        // The example runbooks are checked against their configuration.
        let config = match dir {
            "workflows" => "lifeboat.toml",
            "workflows/lab" => "lab/lifeboat.toml",
            _ => CONFIG,
        };
        let out = lifeboat(&["validate", "--config", config, dir]);
        assert_eq!(out.status.code(), Some(0), "{dir}:\n{}{}", stdout(&out), stderr(&out));
        assert!(stdout(&out).contains("0 invalid"), "{}", stdout(&out));
    }
}

#[test]
fn all_errors_of_a_file_are_reported_with_positions() {
    let out = lifeboat(&[
        "validate",
        "--json",
        "--config",
        CONFIG,
        "tests/fixtures/invalid/many-errors.yaml",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let files: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    let diagnostics = files[0]["diagnostics"].as_array().expect("diagnostics");
    let codes: Vec<&str> = diagnostics.iter().map(|d| d["code"].as_str().unwrap()).collect();
    assert!(diagnostics.len() >= 7, "{codes:?}");
    for code in ["LB017", "LB004", "LB007", "LB008", "LB014", "LB003"] {
        assert!(codes.contains(&code), "{code} missing from {codes:?}");
    }
    for d in diagnostics {
        assert!(d["line"].as_u64().unwrap() > 0 && d["column"].as_u64().unwrap() > 0, "{d}");
    }
    assert_eq!(files[0]["valid"], false);
}

#[test]
fn names_are_only_checked_against_a_config_when_one_is_given() {
    let file = "tests/fixtures/invalid/unknown-channel.yaml";
    let with = lifeboat(&["validate", "--config", CONFIG, file]);
    assert_eq!(with.status.code(), Some(1));
    // Without a config there is no list of channels to check against.
    let elsewhere = crate::util::scratch("no-config");
    let absolute = root().join(file);
    let without = crate::util::lifeboat_in(&elsewhere, &["validate", absolute.to_str().unwrap()]);
    assert_eq!(without.status.code(), Some(0), "{}", stderr(&without));
}

#[test]
fn duplicate_workflow_names_in_one_directory_are_rejected_naming_both_files_and_lines() {
    let dir = crate::util::scratch("dup-names");
    std::fs::write(dir.join("a.yaml"), "# first\nname: same\nsteps:\n  x: { uses: set }\n")
        .unwrap();
    std::fs::write(dir.join("b.yaml"), "name: same\nsteps:\n  x: { uses: set }\n").unwrap();
    let out = lifeboat(&["validate", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let text = stderr(&out);
    assert!(text.contains("LB024"), "{text}");
    let first = format!("already used by {}:2", dir.join("a.yaml").display());
    assert!(text.contains(&first), "the first file and its line: {text}");
    assert!(text.contains(&format!("{}:1:7", dir.join("b.yaml").display())), "{text}");
}

#[test]
fn a_file_whose_name_differs_from_its_workflow_name_is_valid_with_a_warning() {
    let dir = crate::util::scratch("stem-name");
    std::fs::write(dir.join("chain.yaml"), "name: crashchain\nsteps:\n  x: { uses: set }\n")
        .unwrap();
    std::fs::write(dir.join("same.yaml"), "name: same\nsteps:\n  x: { uses: set }\n").unwrap();
    let out = lifeboat(&["validate", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stderr(&out);
    assert!(text.contains("warning[LB029]"), "{text}");
    assert!(text.contains("declares workflow `crashchain`"), "{text}");
    assert_eq!(text.matches("LB029").count(), 1, "only chain.yaml is warned about: {text}");
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(lifeboat(&["validate", "--no-such-flag"]).status.code(), Some(2));
    assert_eq!(lifeboat(&["validate", "does/not/exist.yaml"]).status.code(), Some(2));
}

#[test]
fn a_broken_notification_template_fails_validation_naming_its_file_and_line() {
    // `templates_dir` is `templates` by default; the sandbox has a lifeboat.toml.
    let sb = crate::util::Sandbox::new("validate-templates");
    std::fs::create_dir_all(sb.path("workflows")).unwrap();
    std::fs::create_dir_all(sb.path("templates")).unwrap();
    sb.write("workflows/ok.yaml", "name: ok\nsteps:\n  a: { uses: set, with: { x: y } }\n");
    sb.write("templates/incident.subject.hbs", "Hi {{run.wrokflow}}\n");
    sb.write("templates/incident.text.hbs", "body {{run.id}}\n");
    let out = sb.lifeboat(&["validate", "workflows"]);
    assert_eq!(out.status.code(), Some(1), "{}{}", stdout(&out), stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("incident.subject.hbs:1:4") && err.contains("run.wrokflow"), "{err}");
}
