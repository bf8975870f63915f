//! Redaction: every secret value, and the forms a step is likely to turn it
//! into (base64, percent-encoding, JSON escapes), replaced by `***`.
//!
//! A [`Redactor`] is built once per set of secrets (the engine builds one
//! when it starts): it precomputes every form of every secret into one
//! Aho-Corasick automaton, so redacting a string is a single scan whatever
//! the number of secrets and forms, and a string without any costs no
//! allocation.
//!
//! What it cannot see is documented in `docs/workflow-format.md`
//! ("Secrets"): values under [`MIN_SECRET_BYTES`], a secret a step splits or
//! transforms otherwise (hex, hashing, reversing, line-wrapped base64), and
//! the base64 of a short secret inside a longer blob.

use std::borrow::Cow;

use aho_corasick::{AhoCorasick, MatchKind};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use percent_encoding::{AsciiSet, CONTROLS, NON_ALPHANUMERIC, utf8_percent_encode};

/// The replacement for a secret value.
pub const REDACTED: &str = "***";

/// Secrets shorter than this are not redacted: `***` in place of every
/// `abc` or `0` would destroy outputs and tell an attacker the value anyway.
pub const MIN_SECRET_BYTES: usize = 4;

/// The base64 of a secret inside a longer base64 blob is only recognised
/// from this many characters on (a secret of about 7 bytes): shorter
/// fragments would match unrelated base64 data by chance.
const MIN_EMBEDDED_BASE64_CHARS: usize = 8;

/// Every secret of a run and its encoded forms, compiled once.
#[derive(Clone, Default)]
pub struct Redactor {
    /// `None` when there is nothing to redact.
    matcher: Option<AhoCorasick>,
    secrets: usize,
    forms: usize,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the values.
        write!(f, "Redactor({} secrets, {} forms)", self.secrets, self.forms)
    }
}

impl Redactor {
    /// Compiles `secrets` (values under [`MIN_SECRET_BYTES`] are ignored).
    pub fn new<S: AsRef<str>>(secrets: impl IntoIterator<Item = S>) -> Self {
        let mut patterns: Vec<String> = Vec::new();
        let mut count = 0;
        for secret in secrets {
            let secret = secret.as_ref();
            if secret.len() < MIN_SECRET_BYTES {
                continue;
            }
            count += 1;
            patterns.extend(forms(secret));
        }
        patterns.sort();
        patterns.dedup();
        if patterns.is_empty() {
            return Redactor::default();
        }
        let matcher = AhoCorasick::builder()
            .match_kind(MatchKind::Standard)
            .build(&patterns)
            .expect("a few thousand short literal patterns always compile");
        Redactor { matcher: Some(matcher), secrets: count, forms: patterns.len() }
    }

    /// True when nothing would ever be redacted.
    pub fn is_empty(&self) -> bool {
        self.matcher.is_none()
    }

    /// `s` with every secret (in any known form) replaced by `***`. Where
    /// occurrences overlap (a secret containing another, a secret next to
    /// its own encoding), their union is hidden as one `***`.
    pub fn redact_str<'s>(&self, s: &'s str) -> Cow<'s, str> {
        let Some(matcher) = &self.matcher else { return Cow::Borrowed(s) };
        let mut spans = matcher.find_overlapping_iter(s).map(|m| (m.start(), m.end())).peekable();
        if spans.peek().is_none() {
            return Cow::Borrowed(s);
        }
        // Overlapping matches come sorted by end; merge them by start.
        let mut spans: Vec<(usize, usize)> = spans.collect();
        spans.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::with_capacity(spans.len());
        for (start, end) in spans {
            match merged.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        let mut out = String::with_capacity(s.len());
        let mut copied = 0;
        for (start, end) in merged {
            out.push_str(&s[copied..start]);
            out.push_str(REDACTED);
            copied = end;
        }
        out.push_str(&s[copied..]);
        Cow::Owned(out)
    }

    /// Redacts every string of `value`, object keys included.
    pub fn redact(&self, value: &mut serde_json::Value) {
        if self.matcher.is_some() {
            self.redact_value(value);
        }
    }

    fn redact_value(&self, value: &mut serde_json::Value) {
        use serde_json::Value;
        match value {
            Value::String(s) => {
                if let Cow::Owned(redacted) = self.redact_str(s) {
                    *s = redacted;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.redact_value(v)),
            Value::Object(map) => {
                if map.keys().any(|k| matches!(self.redact_str(k), Cow::Owned(_))) {
                    let old = std::mem::take(map);
                    for (k, v) in old {
                        map.insert(self.redact_str(&k).into_owned(), v);
                    }
                }
                map.values_mut().for_each(|v| self.redact_value(v));
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }
}

/// Percent-encoding sets real encoders use: everything but letters and
/// digits; JavaScript's `encodeURIComponent`; RFC 3986 unreserved (Python's
/// `quote(safe='')`, Go's `QueryEscape`); `application/x-www-form-urlencoded`
/// (what `query:` sends); and what a URL parser escapes in a path, a query
/// and userinfo (a secret written into `url:`).
const PERCENT_SETS: &[&AsciiSet] = &[
    NON_ALPHANUMERIC,
    &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'!')
        .remove(b'~')
        .remove(b'*')
        .remove(b'\'')
        .remove(b'(')
        .remove(b')'),
    &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~'),
    &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~').remove(b'/'),
    &NON_ALPHANUMERIC.remove(b'*').remove(b'-').remove(b'.').remove(b'_'),
    &URL_QUERY,
    &URL_PATH,
    &URL_USERINFO,
];

/// The WHATWG URL standard's percent-encode sets.
const URL_QUERY: AsciiSet = CONTROLS.add(b' ').add(b'"').add(b'#').add(b'<').add(b'>');
const URL_PATH: AsciiSet = URL_QUERY.add(b'?').add(b'`').add(b'{').add(b'}');
const URL_USERINFO: AsciiSet = URL_PATH
    .add(b'/')
    .add(b':')
    .add(b';')
    .add(b'=')
    .add(b'@')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'|');

/// The forms of `secret` to hide: itself, JSON-escaped, percent-encoded,
/// base64 (standard and URL-safe, padded or not, and inside a longer blob
/// at each of the three byte alignments).
fn forms(secret: &str) -> Vec<String> {
    let mut out = vec![secret.to_owned()];

    // JSON string escapes: serde's, with `\/` (PHP), ASCII-only (`\uXXXX`, Python).
    let serde = serde_json::to_string(secret).expect("a string serializes");
    let serde = serde[1..serde.len() - 1].to_owned();
    let ascii = json_ascii_escape(&serde);
    for escaped in [serde, ascii] {
        out.push(escaped.replace('/', "\\/"));
        out.push(escaped);
    }

    for set in PERCENT_SETS {
        let encoded = utf8_percent_encode(secret, set).to_string();
        if encoded.contains('%') {
            // Encoders disagree on the case of hex digits and on `+` for space.
            out.push(lower_hex_escapes(&encoded));
            if encoded.contains("%20") {
                out.push(encoded.replace("%20", "+"));
                out.push(lower_hex_escapes(&encoded).replace("%20", "+"));
            }
            out.push(encoded);
        }
    }

    let bytes = secret.as_bytes();
    for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
        out.push(engine.encode(bytes));
    }
    // Inside a longer blob the secret starts at byte offset 0, 1 or 2 of a
    // 3-byte group; the characters that depend on the secret's bits only
    // are the same whatever surrounds it.
    for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
        for shift in 0..3usize {
            let mut shifted = vec![0u8; shift];
            shifted.extend_from_slice(bytes);
            let encoded = engine.encode(&shifted);
            let start = (8 * shift).div_ceil(6);
            let end = (8 * (shift + bytes.len())) / 6;
            if end >= start + MIN_EMBEDDED_BASE64_CHARS {
                out.push(encoded[start..end].to_owned());
            }
        }
    }
    out.retain(|form| form.len() >= MIN_SECRET_BYTES);
    out
}

/// A JSON-escaped string with every non-ASCII character as `\uXXXX`.
fn json_ascii_escape(escaped: &str) -> String {
    let mut out = String::with_capacity(escaped.len());
    for c in escaped.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

/// `%2F` -> `%2f`.
fn lower_hex_escapes(encoded: &str) -> String {
    let mut out = String::with_capacity(encoded.len());
    let mut rest = encoded;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let escape = rest.get(at..at + 3).unwrap_or(&rest[at..]);
        out.push_str(&escape.to_ascii_lowercase());
        rest = &rest[at + escape.len()..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn redacted(s: &str, secrets: &[&str]) -> String {
        Redactor::new(secrets).redact_str(s).into_owned()
    }

    #[test]
    fn plain_secret_is_hidden_and_clean_text_is_borrowed() {
        let r = Redactor::new(["hunter22"]);
        assert_eq!(r.redact_str("token=hunter22 ok"), "token=*** ok");
        assert!(matches!(r.redact_str("nothing to see"), Cow::Borrowed(_)));
    }

    #[test]
    fn short_and_empty_secrets_are_ignored() {
        let r = Redactor::new(["", "abc", "0"]);
        assert!(r.is_empty());
        assert_eq!(r.redact_str("abc and 0"), "abc and 0");
    }

    #[test]
    fn base64_in_every_alphabet_and_padding_is_hidden() {
        // Chosen so that standard and URL-safe differ (`+/` vs `-_`) and padding is needed.
        let secret = "s3cr3t>>>?~";
        for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
            let encoded = engine.encode(secret);
            assert_eq!(redacted(&format!("b64: {encoded}."), &[secret]), "b64: ***.", "{encoded}");
        }
        assert_ne!(STANDARD.encode(secret), URL_SAFE.encode(secret));
    }

    #[test]
    fn base64_of_a_secret_inside_a_longer_blob_is_hidden_at_every_alignment() {
        let secret = "correct-horse-battery";
        for prefix in ["", "a", "ab", "abc", "user:"] {
            let blob = STANDARD.encode(format!("{prefix}{secret}-and-more-data"));
            let out = redacted(&blob, &[secret]);
            assert!(out.contains(REDACTED), "prefix {prefix:?}: {blob} -> {out}");
            // What is left can no longer be decoded into the secret.
            assert!(!out.contains(&STANDARD.encode(secret)[..8]), "{out}");
        }
    }

    #[test]
    fn short_secrets_are_not_searched_inside_unrelated_base64() {
        // 4 bytes: its embedded forms are too short to be told from chance.
        let r = Redactor::new(["abcd"]);
        assert_eq!(r.redact_str(&STANDARD.encode("abcd")), REDACTED);
        let blob = STANDARD.encode("xabcdx");
        assert_eq!(r.redact_str(&blob), blob);
    }

    #[test]
    fn percent_encoded_forms_are_hidden() {
        let secret = "p@ss word/+&=é";
        for encoded in [
            utf8_percent_encode(secret, NON_ALPHANUMERIC).to_string(),
            lower_hex_escapes(&utf8_percent_encode(secret, NON_ALPHANUMERIC).to_string()),
            // What `query:` sends (form encoding, `+` for space).
            "p%40ss+word%2F%2B%26%3D%C3%A9".to_string(),
            // encodeURIComponent.
            "p%40ss%20word%2F%2B%26%3D%C3%A9".to_string(),
            // A URL parser leaves `@`, `/`, `+`, `&`, `=` alone in a query.
            "p@ss%20word/+&=%C3%A9".to_string(),
        ] {
            assert_eq!(
                redacted(&format!("GET /?k={encoded} failed"), &[secret]),
                "GET /?k=*** failed"
            );
        }
    }

    #[test]
    fn json_escaped_forms_are_hidden() {
        let secret = "a\"b\\c/d\té";
        let serde = serde_json::to_string(&json!({ "k": secret })).unwrap();
        assert_eq!(redacted(&serde, &[secret]), "{\"k\":\"***\"}");
        for escaped in ["a\\\"b\\\\c\\/d\\t\\u00e9", "a\\\"b\\\\c/d\\t\\u00e9"] {
            assert_eq!(redacted(&format!("[{escaped}]"), &[secret]), "[***]", "{escaped}");
        }
    }

    #[test]
    fn overlapping_secrets_are_hidden_whole() {
        assert_eq!(redacted("pw=secret-long", &["secret", "secret-long"]), "pw=***");
        // A shorter secret starting first must not leave the longer one's tail.
        assert_eq!(redacted("xsecretlong!", &["xsec", "secretlong"]), "***!");
    }

    #[test]
    fn multibyte_text_around_secrets_stays_intact() {
        assert_eq!(redacted("é→s3cr3t←ü", &["s3cr3t"]), "é→***←ü");
    }

    #[test]
    fn values_and_keys_are_redacted() {
        let r = Redactor::new(["hunter22"]);
        let mut v = json!({"hunter22": ["x aHVudGVyMjI= y", 1, null], "n": true});
        r.redact(&mut v);
        assert_eq!(v, json!({"***": ["x *** y", 1, null], "n": true}));
    }

    #[test]
    fn debug_never_shows_values() {
        let text = format!("{:?}", Redactor::new(["hunter22"]));
        assert!(!text.contains("hunter22"), "{text}");
    }
}
