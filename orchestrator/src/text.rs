//! Text that came from outside lifeboat (a step's output, an error quoting
//! it, an answer from a channel) made safe to show: every character a
//! terminal would obey or a page would hide — ESC and the rest of C0, DEL,
//! C1 (8-bit CSI/OSC), carriage return, bidirectional overrides, line and
//! paragraph separators — is shown as a visible escape instead (`\x1b`,
//! `\r`, `\u{202e}`). One rule for `cli` (logs, show, report, run
//! progress) and `serve`; the web UI's `visible()` in `serve/ui/app.js`
//! mirrors it for text it inserts into the page (tests/ui.rs checks both).
//!
//! A backslash is not escaped: `\x1b` typed literally by a step looks the
//! same as an escaped ESC, which is harmless — neither reaches the terminal
//! as a control character.

use std::borrow::Cow;
use std::fmt::Write;

/// The prefix of every line of captured output that `lifeboat logs` prints,
/// so a step's output can never begin a line the way lifeboat's own headers do.
pub const GUTTER: &str = "│ ";

/// Whether `c` must not reach a terminal or a page as itself. `\n` and `\t`
/// are decided by the caller.
fn hidden(c: char) -> bool {
    c.is_control() // C0, DEL and C1, including `\r`
        || matches!(
            c,
            '\u{061c}' // Arabic letter mark
                | '\u{200e}' | '\u{200f}' // left-to-right / right-to-left marks
                | '\u{2028}' | '\u{2029}' // line / paragraph separators
                | '\u{202a}'..='\u{202e}' // embeddings and overrides
                | '\u{2066}'..='\u{2069}' // isolates
        )
}

fn escape_char(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\t' => out.push_str("\\t"),
        '\r' => out.push_str("\\r"),
        c if c.is_ascii() => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
}

fn escape_where(text: &str, escape: impl Fn(char) -> bool) -> Cow<'_, str> {
    let Some(first) = text.find(&escape) else {
        return Cow::Borrowed(text);
    };
    let mut out = String::with_capacity(text.len() + 8);
    out.push_str(&text[..first]);
    for c in text[first..].chars() {
        if escape(c) {
            escape_char(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// `text` with control characters made visible; line feeds and tabs kept,
/// for text shown as lines (a step's output, a multi-line error).
pub fn visible(text: &str) -> Cow<'_, str> {
    escape_where(text, |c| c != '\n' && c != '\t' && hidden(c))
}

/// `text` on one line: like [`visible`], with `\n` and `\t` escaped too, for
/// a table cell, a header or any field that must not start a new line.
pub fn inline(text: &str) -> Cow<'_, str> {
    escape_where(text, hidden)
}

/// Captured output as printed by `lifeboat logs`: each line made
/// [`visible`] and prefixed with [`GUTTER`]; ends with a line feed unless empty.
pub fn gutter(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 16 + GUTTER.len());
    for line in text.split_inclusive('\n') {
        out.push_str(GUTTER);
        out.push_str(&visible(line));
    }
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// A duration for people: `850ms`, `12.5s`, `4m05s`.
pub fn human_ms(ms: i64) -> String {
    match ms {
        ms if ms < 1_000 => format!("{ms}ms"),
        ms if ms < 60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        ms => format!("{}m{:02}s", ms / 60_000, (ms % 60_000) / 1000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// True when no character of `s` would act on a terminal.
    fn inert(s: &str) -> bool {
        s.chars().all(|c| c == '\n' || c == '\t' || !hidden(c))
    }

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        for s in ["", "ok", "line one\nline two\n", "a\tb", "C:\\path\\x1b"] {
            assert!(matches!(visible(s), Cow::Borrowed(b) if b == s), "{s:?}");
        }
        assert!(matches!(inline("one line"), Cow::Borrowed("one line")));
    }

    #[test]
    fn escape_sequences_become_visible() {
        assert_eq!(visible("\x1b]0;pwned\x07"), "\\x1b]0;pwned\\x07");
        assert_eq!(visible("\x1b[2J\x1b[31mred\x1b[0m"), "\\x1b[2J\\x1b[31mred\\x1b[0m");
        assert_eq!(visible("bell\x07 nul\0 del\x7f bs\x08"), "bell\\x07 nul\\x00 del\\x7f bs\\x08");
        // A carriage return would let a line overwrite itself.
        assert_eq!(visible("all good\rFAILED"), "all good\\rFAILED");
        assert_eq!(visible("crlf\r\n"), "crlf\\r\n");
    }

    #[test]
    fn line_feeds_and_tabs_stay_in_visible_and_are_escaped_inline() {
        assert_eq!(visible("a\tb\nc"), "a\tb\nc");
        assert_eq!(inline("a\tb\nc\r"), "a\\tb\\nc\\r");
    }

    #[test]
    fn multi_byte_utf8_is_kept_and_c1_and_bidi_controls_are_escaped() {
        let text = "café 日本 👩‍🚒 ✔ Ελλάδα";
        assert_eq!(visible(text), text);
        // U+009B is the 8-bit CSI: `\u{9b}31m` is "red" to some terminals.
        assert_eq!(visible("\u{9b}31mred"), "\\u{9b}31mred");
        assert_eq!(visible("\u{85}next line"), "\\u{85}next line");
        assert_eq!(visible("abc\u{202e}gnp.exe"), "abc\\u{202e}gnp.exe");
        assert_eq!(visible("x\u{2066}y\u{2069}\u{2028}z"), "x\\u{2066}y\\u{2069}\\u{2028}z");
        assert_eq!(visible("é\x1bé"), "é\\x1bé");
    }

    #[test]
    fn invalid_and_truncated_sequences_are_shown_not_obeyed() {
        // Captured output is decoded lossily: a lone 0x9b (8-bit CSI) or a
        // cut multi-byte character becomes U+FFFD, which is visible as is.
        let decoded = String::from_utf8_lossy(b"\x9b31m \xe6\x97 ok \xff\x1b[");
        let shown = visible(&decoded);
        assert_eq!(shown, "\u{fffd}31m \u{fffd} ok \u{fffd}\\x1b[");
        assert!(inert(&shown));
        assert_eq!(visible("\x1b"), "\\x1b");
        assert_eq!(visible("\x1b]8;;http://evil\x1b\\link"), "\\x1b]8;;http://evil\\x1b\\link");
    }

    #[test]
    fn every_character_is_either_kept_or_escaped_to_inert_text() {
        let all: String = (0u32..0x3000).filter_map(char::from_u32).collect();
        assert!(inert(&visible(&all)));
        assert!(!inline(&all).contains(['\n', '\t']));
        assert!(inert(&inline(&all)));
    }

    #[test]
    fn the_gutter_starts_every_output_line_so_headers_cannot_be_forged() {
        let forged = "real\n--- other attempt 1 (forward) stdout\n\x1b[2Jlast";
        assert_eq!(
            gutter(forged),
            "│ real\n│ --- other attempt 1 (forward) stdout\n│ \\x1b[2Jlast\n"
        );
        assert_eq!(gutter("one\n"), "│ one\n");
        assert_eq!(gutter("one\n\ntwo\n"), "│ one\n│ \n│ two\n");
        assert_eq!(gutter("over\rwrite\r\n"), "│ over\\rwrite\\r\n");
        assert_eq!(gutter(""), "");
    }
}
