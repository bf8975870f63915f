//! The audit log end to end: operator commands append hash-chained entries,
//! `lifeboat audit list` shows them, `lifeboat audit verify` detects tampering.

use serde_json::Value;

use crate::util::*;

/// Queued runs of this never start (no `serve`), so operators can act on them.
const SLOW: &str = "name: slow\nsteps:\n  a: { uses: wait, with: { duration: 1h } }\n  b: { needs: [a], uses: set }\n";
const FAILS: &str = "name: fails\non_failure: stop\nsteps:\n  a: { uses: assert, with: { that: \"false\", message: broken } }\n";

fn audit_list(sb: &Sandbox, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["audit", "list", "--json"];
    args.extend(extra);
    serde_json::from_slice(&sb.ok(&args).stdout).expect("audit list --json prints JSON")
}

fn verify(sb: &Sandbox) -> (Option<i32>, String, Value) {
    let text = sb.lifeboat(&["audit", "verify"]);
    let json = sb.lifeboat(&["audit", "verify", "--json"]);
    let doc = serde_json::from_slice(&json.stdout).expect("audit verify --json prints JSON");
    assert_eq!(text.status.code(), json.status.code());
    (text.status.code(), stdout(&text), doc)
}

#[test]
fn operator_actions_are_audited_with_actor_run_and_parameters() {
    let sb = Sandbox::new("audit-actions").env("USER", "alice");
    sb.write("slow.yaml", SLOW);
    sb.write("fails.yaml", FAILS);
    let queued = sb.enqueue("slow.yaml", &[]);
    sb.ok(&["pause", &queued]);
    sb.ok(&["resume", &queued]);
    sb.ok(&["skip", &queued, "a"]);
    sb.ok(&["mark", &queued, "b", "failed"]);
    sb.ok(&["cancel", &queued, "--no-rollback"]);
    let (code, failed) = sb.run_wait("fails.yaml", &[]);
    assert_eq!(code, Some(1));
    let failed = failed["id"].as_str().unwrap().to_string();
    sb.ok(&["retry", &failed]);

    let entries = audit_list(&sb, &[]);
    let seen: Vec<(&str, &str, Option<&str>)> = entries
        .iter()
        .map(|e| {
            (e["action"].as_str().unwrap(), e["run_id"].as_str().unwrap(), e["step_id"].as_str())
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("run", queued.as_str(), None),
            ("pause", &queued, None),
            ("resume", &queued, None),
            ("skip", &queued, Some("a")),
            ("mark_failed", &queued, Some("b")),
            ("cancel_no_rollback", &queued, None),
            ("run", &failed, None),
            ("retry", &failed, None),
        ]
    );
    assert!(entries.iter().all(|e| e["actor"] == "alice"), "{entries:#?}");
    assert_eq!(entries[0]["payload"]["workflow"], "slow");
    assert_eq!(entries[0]["payload"]["wait"], false);
    assert_eq!(entries[4]["payload"]["outcome"], "failed");
    assert_eq!(entries[5]["payload"]["rollback"], false);
    assert_eq!(entries[6]["payload"]["wait"], true);

    let of_failed = audit_list(&sb, &["--run", &failed]);
    assert_eq!(of_failed.len(), 2, "{of_failed:#?}");
    assert_eq!(audit_list(&sb, &["--limit", "1"])[0]["action"], "retry");
    let text = stdout(&sb.ok(&["audit", "list"]));
    assert!(text.contains("mark_failed") && text.contains("alice"), "{text}");

    let (code, out, doc) = verify(&sb);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(out.lines().next(), Some("audit log intact: 8 entries"));
    assert_eq!(doc["head"].as_str().map(str::len), Some(64), "{doc}");
    assert_eq!(doc["entries"], 8);
}

/// Four `run` entries (ids 1..=4).
fn four_entries(name: &str) -> Sandbox {
    let sb = Sandbox::new(name);
    sb.write("slow.yaml", SLOW);
    for _ in 0..4 {
        sb.enqueue("slow.yaml", &[]);
    }
    let (code, out, _) = verify(&sb);
    assert_eq!((code, out.lines().next()), (Some(0), Some("audit log intact: 4 entries")));
    sb
}

#[test]
fn an_edited_audit_entry_fails_verification_naming_it() {
    let sb = four_entries("audit-edited");
    assert_eq!(sb.sql(r#"UPDATE audit SET payload = '{"workflow":"innocent"}' WHERE id = 2"#), 1);
    let (code, out, doc) = verify(&sb);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("entry 2") && out.contains("edited"), "{out}");
    assert_eq!(doc["broken"]["id"], 2, "{doc}");

    let sb = four_entries("audit-actor");
    assert_eq!(sb.sql("UPDATE audit SET actor = 'mallory' WHERE id = 3"), 1);
    let (code, out, doc) = verify(&sb);
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(doc["broken"]["id"], 3, "{doc}");
}

#[test]
fn a_deleted_audit_entry_fails_verification_naming_it() {
    let sb = four_entries("audit-deleted");
    assert_eq!(sb.sql("DELETE FROM audit WHERE id = 2"), 1);
    let (code, out, doc) = verify(&sb);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("2..2") && out.contains("missing"), "{out}");
    assert_eq!(doc["broken"]["id"], 3, "{doc}");
    assert_eq!(doc["entries"], 1, "{doc}");
}
