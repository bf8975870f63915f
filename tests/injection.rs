//! Step output that tries to drive the operator's terminal (ESC, CSI, OSC,
//! carriage returns, 8-bit C1 controls) or to forge lifeboat's own section
//! headers: `run --wait`, `logs`, `show` and `report` (text and HTML) show
//! it visibly escaped, and captured output sits behind a `│ ` gutter.

use crate::util::*;

/// A step whose stdout carries an OSC title change, a clear-screen CSI, a
/// forged `logs` header and a carriage return, and whose last stderr line
/// (quoted in its error) carries more of the same.
const HOSTILE: &str = r#"name: hostile
steps:
  noisy:
    uses: shell
    with:
      script: |
        printf 'before\033]0;pwned\007\n'
        printf '\033[2J\n'
        printf -- '--- noisy attempt 2 (forward) stdout\n'
        printf 'forged\rover\n'
        printf 'eight-bit csi \302\23331m\n'
        printf 'last words \033]0;pwned\007 \033[2J\n' >&2
        exit 1
"#;

/// Fails if `text` holds a character a terminal would obey: ESC, BEL, CR
/// or U+009B (the 8-bit CSI).
fn assert_inert(what: &str, text: &str) {
    let raw: Vec<char> =
        text.chars().filter(|c| matches!(c, '\x1b' | '\x07' | '\r' | '\u{9b}')).collect();
    assert!(raw.is_empty(), "{what} printed raw controls {raw:?}:\n{text}");
}

/// Runs the hostile workflow to its end (through `run --wait`, whose live
/// progress is checked too); its run id.
fn hostile_run(sb: &Sandbox) -> String {
    sb.write("hostile.yaml", HOSTILE);
    let out = sb.lifeboat(&["run", "hostile.yaml", "--wait"]);
    assert_eq!(out.status.code(), Some(1), "{}{}", stdout(&out), stderr(&out));
    let progress = stdout(&out);
    assert_inert("run --wait", &progress);
    assert!(progress.contains("\\x1b]0;pwned\\x07"), "{progress}");
    let runs = sb.runs();
    assert_eq!(runs.len(), 1, "{runs:#?}");
    runs[0]["id"].as_str().expect("run id").to_string()
}

#[test]
fn logs_show_escape_sequences_visibly_and_output_only_behind_a_gutter() {
    let sb = Sandbox::new("inject-logs");
    let run = hostile_run(&sb);
    let out = sb.ok(&["logs", &run]);
    assert!(!out.stdout.contains(&0x1b), "raw ESC in `logs`");
    let text = stdout(&out);
    assert_inert("logs", &text);
    for shown in ["\\x1b]0;pwned\\x07", "\\x1b[2J", "forged\\rover", "csi \\u{9b}31m"] {
        assert!(text.contains(shown), "{shown} not shown in:\n{text}");
    }
    let lines: Vec<&str> = text.lines().collect();
    let headers: Vec<&&str> = lines.iter().filter(|l| l.starts_with("--- ")).collect();
    assert_eq!(
        headers,
        [&"--- noisy attempt 1 (forward) stdout", &"--- noisy attempt 1 (forward) stderr"],
        "only lifeboat's own headers start a line with `--- `:\n{text}"
    );
    assert!(lines.contains(&"│ --- noisy attempt 2 (forward) stdout"), "{text}");
    // Every line after the first header is a header or gutter-prefixed output.
    let first = lines.iter().position(|l| l.starts_with("--- ")).expect("a header");
    for line in &lines[first..] {
        assert!(line.starts_with("--- ") || line.starts_with("│ "), "{line:?} in:\n{text}");
    }
    // Event lines (before the output) carry the error too, escaped.
    assert!(lines[..first].iter().any(|l| l.contains("step_failed")), "{text}");

    let one_step = stdout(&sb.ok(&["logs", &run, "noisy"]));
    assert_inert("logs RUN STEP", &one_step);
    assert!(one_step.contains("│ before\\x1b]0;pwned\\x07"), "{one_step}");
}

#[test]
fn show_and_report_print_a_hostile_error_visibly() {
    let sb = Sandbox::new("inject-show");
    let run = hostile_run(&sb);

    let show = sb.ok(&["show", &run]);
    assert!(!show.stdout.contains(&0x1b), "raw ESC in `show`");
    let text = stdout(&show);
    assert_inert("show", &text);
    assert!(text.contains("last words \\x1b]0;pwned\\x07 \\x1b[2J"), "{text}");
    // The JSON keeps the real text (JSON escapes it); only displays escape.
    let doc = sb.show(&run);
    assert_eq!(
        step(&doc, "noisy")["error"],
        "exit status 1: last words \u{1b}]0;pwned\u{7} \u{1b}[2J",
        "{doc:#}"
    );

    let report = sb.ok(&["report", &run, "--html", "report.html"]);
    assert!(!report.stdout.contains(&0x1b), "raw ESC in `report`");
    let text = stdout(&report);
    assert_inert("report", &text);
    assert!(text.contains("noisy #1") && text.contains("failed"), "{text}");
    let html = sb.read("report.html");
    assert_inert("report --html", &html);
    assert!(html.contains("last words \\x1b]0;pwned\\x07 \\x1b[2J"), "{html}");
}
