//! Every drill scenario of every example runbook (`drills:` in
//! workflows/*.yaml, what scripts/drill.sh runs) passes through the real
//! binary against a real simulated estate, reset before each scenario — and
//! the estate afterwards is what the scenario says happened. On SQLite or
//! Postgres, as the Sandbox picks (LIFEBOAT_E2E_BACKEND).

use serde_json::Value;

use crate::runbooks::{Estate, site, text, weight, workflow};
use crate::util::{Sandbox, stderr, stdout};

/// The scenarios each runbook must declare, in the order scripts/drill.sh
/// runs them (backup before restore-test: the restore drills restore the
/// backup drill's backup).
const SCENARIOS: &[(&str, &[&str])] = &[
    ("failover", &["happy-path", "promote-fails", "replica-lag-above-rpo", "p1-waits-for-a-lead"]),
    ("failback", &["happy-path", "canary-regresses-at-50"]),
    ("backup", &["happy-path"]),
    ("restore-test", &["happy-path", "corrupted-backup"]),
    ("crisis-escalation", &["acked-at-first-tier", "nobody-acks"]),
];

/// The declared scenarios of `name`, as `lifeboat drills FILE --json` lists them.
fn declared(sb: &Sandbox, name: &str) -> Vec<String> {
    let out = sb.lifeboat(&["drills", &workflow(name), "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("drills --json");
    doc["freshness"][0]["scenarios"]
        .as_array()
        .unwrap_or_else(|| panic!("no scenarios for {name}: {doc}"))
        .iter()
        .map(|s| text(&s["scenario"]))
        .collect()
}

/// Runs one scenario as a drill and returns the final run; panics with every
/// failed expectation when its verdict did not pass.
fn drill(sb: &Sandbox, name: &str, scenario: &str, inputs: &[String]) -> Value {
    let file = workflow(name);
    let mut args = vec!["drill", file.as_str(), "--scenario", scenario];
    for input in inputs {
        args.extend(["-i", input.as_str()]);
    }
    args.extend(["--wait", "--json"]);
    let out = sb.lifeboat(&args);
    let doc: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{name}/{scenario}: {e}: {}{}", stdout(&out), stderr(&out)));
    let failed: Vec<String> = doc["verdict"]["expectations"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["ok"] != true)
        .map(|c| {
            format!("{}: expected {}, actual {}", text(&c["what"]), c["expected"], c["actual"])
        })
        .collect();
    assert_eq!(
        (out.status.code(), doc["verdict"]["passed"].as_bool()),
        (Some(0), Some(true)),
        "{name}/{scenario} did not pass: {failed:#?}\n{}",
        stderr(&out)
    );
    assert_eq!(doc["mode"], "drill");
    doc
}

#[test]
fn every_runbook_scenario_passes_against_the_real_estate() {
    let (sb, estate) = Estate::start("drill-runbooks");
    let backups = sb.path("backups").display().to_string();
    let offsite = sb.path("offsite").display().to_string();
    let scratch = sb.path("scratch").display().to_string();
    for (name, want) in SCENARIOS {
        assert_eq!(declared(&sb, name), *want, "the scenarios of {name}");
        let inputs: Vec<String> = match *name {
            "failover" | "failback" => vec![estate.input()],
            "backup" => vec![
                estate.input(),
                format!("backup_dir={backups}"),
                format!("offsite_dir={offsite}"),
            ],
            "restore-test" => {
                vec![format!("backup_dir={offsite}"), format!("scratch_dir={scratch}")]
            }
            _ => vec![],
        };
        for scenario in *want {
            estate.ok(&["reset"]);
            let doc = drill(&sb, name, scenario, &inputs);
            // Beyond the verdict: the estate is where the scenario says.
            let s = estate.status();
            match (*name, *scenario) {
                ("failover", "happy-path" | "p1-waits-for-a-lead") => {
                    assert_eq!(s["primary"], "dc02", "{scenario}: {s}");
                    assert_eq!((weight(&s, "dc01"), weight(&s, "dc02")), (0, 100), "{s}");
                }
                ("failover", "promote-fails" | "replica-lag-above-rpo") => {
                    assert_eq!(
                        site(&s, "dc02")["role"],
                        "replica",
                        "{scenario}: not promoted: {s}"
                    );
                    assert_eq!(site(&s, "dc01")["role"], "primary", "{scenario}: {s}");
                    assert_eq!(site(&s, "dc01")["fenced"], false, "{scenario}: unfenced: {s}");
                    assert_eq!(weight(&s, "dc01"), 100, "{scenario}: traffic as it was: {s}");
                }
                ("failback", "happy-path") => assert_eq!(s["primary"], "dc01", "{s}"),
                ("failback", "canary-regresses-at-50") => {
                    assert_eq!(s["primary"], "dc02", "{s}");
                    assert_eq!((weight(&s, "dc01"), weight(&s, "dc02")), (25, 75), "{s}");
                }
                ("restore-test", "corrupted-backup") => {
                    let kept = std::fs::read_dir(&scratch).map(|d| d.count()).unwrap_or(0);
                    assert!(kept > 0, "the corrupted copy is kept in {scratch}");
                }
                ("crisis-escalation", "nobody-acks") => {
                    let third = messages(&sb)
                        .into_iter()
                        .any(|m| m.contains("DRILL-2") && m.contains("Escalated to tier 3"));
                    assert!(third, "the third tier (incident commanders) was paged");
                }
                ("crisis-escalation", "acked-at-first-tier") => {
                    assert_eq!(text(&doc["outputs"]["acked_by"]), "carol", "{doc:#}");
                }
                _ => {}
            }
        }
    }
    // Every drill's messages went to the drill channel, marked as a drill.
    let all = messages(&sb);
    assert!(!all.is_empty(), "drill notifications are written to files");
    assert!(all.iter().all(|m| m.contains("[DRILL]")), "every message says it is a drill");
}

/// Every message the drill channel (`drills-file`, a `file` channel of the
/// example configuration) wrote so far.
fn messages(sb: &Sandbox) -> Vec<String> {
    std::fs::read_dir(sb.path("notifications"))
        .map(|dir| dir.flatten().filter_map(|e| std::fs::read_to_string(e.path()).ok()).collect())
        .unwrap_or_default()
}
