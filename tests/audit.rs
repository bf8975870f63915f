//! The audit log end to end: operator commands append hash-chained entries,
//! `lifeboat audit list` shows them, `lifeboat audit verify` detects tampering.

use std::time::Duration;

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

// --- anchors: signed checkpoints of the head, outside the database ----------

const ANCHOR_KEY: &str = "e2e-anchor-key-0123456789abcdef";

/// `four_entries` with an anchor key in the environment.
fn anchored(name: &str) -> Sandbox {
    four_entries(name).env("LIFEBOAT_AUDIT_ANCHOR_KEY", ANCHOR_KEY)
}

/// `audit anchor --file anchors.jsonl --json`: the anchor written.
fn anchor(sb: &Sandbox) -> Value {
    let out = sb.ok(&["audit", "anchor", "--file", "anchors.jsonl", "--json"]);
    let doc: Value = serde_json::from_slice(&out.stdout).expect("audit anchor --json prints JSON");
    doc["anchor"].clone()
}

/// `audit verify --anchors anchors.jsonl`, text and JSON.
fn verify_anchored(sb: &Sandbox) -> (Option<i32>, String, Value) {
    let text = sb.lifeboat(&["audit", "verify", "--anchors", "anchors.jsonl"]);
    let json = sb.lifeboat(&["audit", "verify", "--anchors", "anchors.jsonl", "--json"]);
    let doc = serde_json::from_slice(&json.stdout)
        .unwrap_or_else(|e| panic!("audit verify --json: {e}: {}", stderr(&json)));
    assert_eq!(text.status.code(), json.status.code());
    (text.status.code(), format!("{}{}", stdout(&text), stderr(&text)), doc)
}

/// (line, anchored id, kind) of each failed anchor.
fn failures(doc: &Value) -> Vec<(u64, Option<i64>, String)> {
    doc["anchors"]["failures"]
        .as_array()
        .unwrap_or_else(|| panic!("no anchor failures in {doc:#}"))
        .iter()
        .map(|f| {
            (f["line"].as_u64().unwrap(), f["id"].as_i64(), f["kind"].as_str().unwrap().into())
        })
        .collect()
}

#[test]
fn an_untouched_log_verifies_against_its_anchors() {
    let sb = anchored("audit-anchor-intact");
    let first = anchor(&sb);
    assert_eq!(first["id"], 4, "{first}");
    sb.enqueue("slow.yaml", &[]);
    assert_eq!(anchor(&sb)["id"], 5);
    sb.enqueue("slow.yaml", &[]);
    let (code, out, doc) = verify_anchored(&sb);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("anchors: 2 in anchors.jsonl, all match the log"), "{out}");
    assert!(out.contains("entries 6..6 are newer than the newest matching anchor"), "{out}");
    assert_eq!(doc["intact"], true, "{doc}");
    assert_eq!(doc["anchors"]["matched"], 2, "{doc}");
    assert_eq!(doc["anchors"]["covered"], 5, "{doc}");
    assert_eq!(doc["anchors"]["unanchored"], 1, "{doc}");
    let lines = sb.lines("anchors.jsonl");
    assert_eq!(lines.len(), 2, "one JSON line per anchor: {lines:?}");
    assert_eq!(serde_json::from_str::<Value>(&lines[0]).unwrap(), first);
}

#[test]
fn deleting_the_newest_entries_fails_verification_naming_the_anchor() {
    let sb = anchored("audit-anchor-truncated");
    anchor(&sb);
    assert_eq!(sb.sql("DELETE FROM audit WHERE id > 2"), 2);
    // The chain alone cannot tell: what is left is a perfect chain.
    let (code, out, _) = verify(&sb);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("intact: 2 entries"), "{out}");

    let (code, out, doc) = verify_anchored(&sb);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("anchor FAILED, anchors.jsonl line 1 (entry 4 anchored at"), "{out}");
    assert!(out.contains("the log ends at entry 2: entries 3..4 were deleted"), "{out}");
    assert_eq!(failures(&doc), [(1, Some(4), "truncated".into())], "{doc:#}");
    assert_eq!(doc["intact"], false);

    // New entries in the deleted ids' place do not hide it.
    sb.enqueue("slow.yaml", &[]);
    sb.enqueue("slow.yaml", &[]);
    let (code, out, doc) = verify_anchored(&sb);
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(failures(&doc), [(1, Some(4), "rewritten".into())], "{doc:#}");
}

/// Rewrites entry `id`'s actor and recomputes the hash chain from it on,
/// straight in the database: what someone with write access could do.
fn rewrite_and_rechain(sb: &Sandbox, id: i64, actor: &str) {
    use lifeboat_orchestrator::store::AuditRecord;
    use lifeboat_orchestrator::store::audit::entry_hash;
    let rows = sb.rows(
        "SELECT CAST(id AS TEXT), CAST(at AS TEXT), actor, action, run_id, step_id, payload, \
         payload_sha256, prev_hash, hash FROM audit ORDER BY id",
    );
    let mut prev: Option<String> = None;
    for row in rows {
        let text = |i: usize| row[i].clone().unwrap_or_default();
        let mut e = AuditRecord {
            id: text(0).parse().unwrap(),
            at: text(1).parse().unwrap(),
            actor: text(2),
            action: text(3),
            run_id: row[4].clone(),
            step_id: row[5].clone(),
            payload: serde_json::from_str(&text(6)).unwrap(),
            payload_sha256: text(7),
            prev_hash: text(8),
            hash: text(9),
        };
        if e.id < id {
            prev = Some(e.hash);
            continue;
        }
        if e.id == id {
            e.actor = actor.into();
        }
        e.prev_hash = prev.clone().unwrap_or(e.prev_hash);
        e.hash = entry_hash(&e);
        let update = format!(
            "UPDATE audit SET actor = '{}', prev_hash = '{}', hash = '{}' WHERE id = {}",
            e.actor, e.prev_hash, e.hash, e.id
        );
        assert_eq!(sb.sql(&update), 1);
        prev = Some(e.hash);
    }
}

#[test]
fn a_rewritten_entry_with_its_chain_recomputed_fails_verification() {
    let sb = anchored("audit-anchor-rewritten");
    assert_eq!(anchor(&sb)["id"], 4);
    rewrite_and_rechain(&sb, 2, "mallory");
    assert_eq!(audit_list(&sb, &[])[1]["actor"], "mallory");
    let (code, out, _) = verify(&sb);
    assert_eq!(code, Some(0), "the recomputed chain holds by itself: {out}");

    let (code, out, doc) = verify_anchored(&sb);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("line 1 (entry 4 anchored at"), "{out}");
    assert!(out.contains("an entry at or before 4 was rewritten"), "{out}");
    assert_eq!(failures(&doc), [(1, Some(4), "rewritten".into())], "{doc:#}");
}

#[test]
fn a_tampered_or_forged_anchor_line_is_reported() {
    let sb = anchored("audit-anchor-forged");
    anchor(&sb);
    sb.enqueue("slow.yaml", &[]);
    anchor(&sb);
    let lines = sb.lines("anchors.jsonl");
    // Line 1 edited to vouch for a shorter log; line 3 is not an anchor.
    let edited = lines[0].replace("\"id\":4", "\"id\":3");
    assert_ne!(edited, lines[0]);
    sb.write("anchors.jsonl", &format!("{edited}\n{}\n{{\"v\":1}}\n", lines[1]));
    let (code, out, doc) = verify_anchored(&sb);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("line 1 (claims entry 3): its signature does not verify"), "{out}");
    assert_eq!(
        failures(&doc),
        [(1, Some(3), "forged".into()), (3, None, "malformed".into())],
        "{doc:#}"
    );
    assert_eq!(doc["anchors"]["matched"], 1, "{doc}");

    // Another key: nothing in the file verifies.
    let args = ["audit", "verify", "--anchors", "anchors.jsonl", "--json"];
    let out = with_key(&sb, "another-key-that-is-long-enough", &args);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["anchors"]["signed"], 0, "{doc}");

    // Without the key, nothing can be checked: said so, not passed.
    let out = with_key(&sb, "", &["audit", "verify", "--anchors", "anchors.jsonl"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stderr(&out).contains("LIFEBOAT_AUDIT_ANCHOR_KEY is not set"), "{}", stderr(&out));
    let out = sb.lifeboat(&["audit", "verify", "--anchors", "missing.jsonl"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cannot read the anchor file missing.jsonl"), "{}", stderr(&out));
}

/// `lifeboat ARGS…` in `sb` with another anchor key.
fn with_key(sb: &Sandbox, key: &str, args: &[&str]) -> std::process::Output {
    let mut cmd = sb.command(args);
    cmd.env("LIFEBOAT_AUDIT_ANCHOR_KEY", key);
    output_within(cmd, Duration::from_secs(60))
}

/// The anchors of a file, parsed.
fn anchors_in(sb: &Sandbox, file: &str) -> Vec<Value> {
    sb.lines(file).iter().map(|l| serde_json::from_str(l).expect("an anchor line")).collect()
}

#[test]
fn serve_anchors_the_head_at_start_when_it_moves_and_after_shutdown() {
    let sb = anchored("audit-anchor-serve")
        .config("[audit]\nanchor_file = \"serve-anchors.jsonl\"\nanchor_every = \"1s\"\n");
    let api = Api::start(&sb);
    let newest =
        |id: i64| anchors_in(&sb, "serve-anchors.jsonl").last().is_some_and(|a| a["id"] == id);
    let wait = Duration::from_secs(30);
    assert!(eventually(wait, || newest(4)), "anchored at start:\n{}", api.log_text());
    sb.enqueue("slow.yaml", &[]);
    assert!(eventually(wait, || newest(5)), "anchored when moved:\n{}", api.log_text());
    let all = anchors_in(&sb, "serve-anchors.jsonl");
    assert_eq!(all.iter().map(|a| a["id"].as_i64().unwrap()).collect::<Vec<_>>(), [4, 5]);
    assert!(all[0]["by"].as_str().is_some_and(|b| b.starts_with("serve ")), "{all:?}");

    // After SIGTERM, the last word is an anchor of the final head.
    sb.enqueue("slow.yaml", &[]);
    let pid = api.serve.pid();
    let term = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    assert!(term.is_ok_and(|s| s.success()));
    assert!(eventually(wait, || !pid_alive(pid)), "{}", api.log_text());
    assert_eq!(
        anchors_in(&sb, "serve-anchors.jsonl").last().unwrap()["id"],
        6,
        "{}",
        api.log_text()
    );
    let out = sb.ok(&["audit", "verify", "--anchors", "serve-anchors.jsonl"]);
    assert!(stdout(&out).contains("all match the log"), "{}", stdout(&out));
}

#[test]
fn serve_refuses_an_anchor_file_without_a_key() {
    let sb = four_entries("audit-anchor-nokey").config("[audit]\nanchor_file = \"a.jsonl\"\n");
    let out = sb.lifeboat(&["serve"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("LIFEBOAT_AUDIT_ANCHOR_KEY is not set"), "{}", stderr(&out));
}
