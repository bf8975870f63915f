//! Hostile input: huge, deep, explosive, binary and empty files each get a
//! clear error quickly, never a hang, a crash or a stack overflow.

use std::time::{Duration, Instant};

use crate::util::{lifeboat, scratch, stderr};

/// Runs `validate` on `content` and returns its stderr; checks it exits 1
/// well inside a hang guard (a hang or crash is the failure; the time is
/// measured by the benchmarks, not here).
fn validate_bytes(name: &str, content: &[u8]) -> String {
    let dir = scratch(name);
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, content).unwrap();
    let started = Instant::now();
    let out = lifeboat(&["validate", path.to_str().unwrap()]);
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(10), "{name} took {elapsed:?}");
    assert_eq!(out.status.code(), Some(1), "{name}: {}", stderr(&out));
    stderr(&out)
}

#[test]
fn a_10_mb_file_is_refused_by_size() {
    let mut content = b"name: big\nsteps:\n  a: { uses: set, with: { x: \"".to_vec();
    content.extend(std::iter::repeat_n(b'x', 10 * 1024 * 1024));
    content.extend(b"\" } }\n");
    let err = validate_bytes("big", &content);
    assert!(err.contains("LB002") && err.contains("limited to"), "{err}");
}

#[test]
fn fifty_thousand_levels_of_nesting_are_refused() {
    let depth = 50_000;
    let mut flow = String::from("name: deep\nsteps:\n  a: { uses: set, with: { x: ");
    flow.push_str(&"[".repeat(depth));
    flow.push_str(&"]".repeat(depth));
    flow.push_str(" } }\n");
    let err = validate_bytes("deep-flow", flow.as_bytes());
    assert!(err.contains("error[LB00"), "{err}");

    let mut block = String::from("name: deep\nsteps:\n");
    for level in 0..2_000 {
        block.push_str(&" ".repeat(level + 2));
        block.push_str("k:\n");
    }
    let err = validate_bytes("deep-block", block.as_bytes());
    assert!(err.contains("error[LB00"), "{err}");
}

#[test]
fn an_alias_bomb_is_refused() {
    let mut bomb =
        String::from("name: bomb\nx0: &x0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..10 {
        let p = i - 1;
        bomb.push_str(&format!(
            "x{i}: &x{i} [*x{p}, *x{p}, *x{p}, *x{p}, *x{p}, *x{p}, *x{p}, *x{p}, *x{p}]\n"
        ));
    }
    bomb.push_str("steps:\n  a: { uses: set, with: { x: *x9 } }\n");
    let err = validate_bytes("bomb", bomb.as_bytes());
    assert!(err.contains("LB002") || err.contains("LB001"), "{err}");
}

#[test]
fn binary_garbage_is_not_a_workflow() {
    let garbage: Vec<u8> =
        (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let err = validate_bytes("garbage", &garbage);
    assert!(err.contains("not UTF-8"), "{err}");
}

#[test]
fn an_empty_file_says_what_a_workflow_needs() {
    let err = validate_bytes("empty", b"");
    assert!(err.contains("file is empty"), "{err}");
    let err = validate_bytes("blank", b"\n   \n# only a comment\n");
    assert!(err.contains("error[LB"), "{err}");
}
