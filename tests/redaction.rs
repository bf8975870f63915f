//! A secret a step encodes (base64, percent-encoding, JSON escapes) is
//! redacted like the secret itself: never shown by `show` or `logs`, never
//! stored.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

use crate::util::{Sandbox, on_postgres, stdout, step};

/// With a `"` and a non-ASCII letter (JSON escapes them), `/`, `@`, `?` and
/// a space (percent-encoding does), long enough for base64 inside a blob.
const SECRET: &str = "s3cr3t \"v@l/ü?~+x";

const WORKFLOW: &str = r#"name: encoded
steps:
  leak:
    uses: shell
    with:
      env: { TOKEN: "{{secrets.TOKEN}}" }
      script: |
        printf 'standard %s\n' "$(printf '%s' "$TOKEN" | base64 -w0)"
        printf 'url-safe %s\n' "$(printf '%s' "$TOKEN" | base64 -w0 | tr '+/' '-_' | tr -d '=')"
        printf 'basic %s\n' "$(printf 'user:%s' "$TOKEN" | base64 -w0)"
        printf 'blob %s\n' "$(printf 'x%s-and-more' "$TOKEN" | base64 -w0)"
        python3 -c 'import json, os, urllib.parse; t = os.environ["TOKEN"]; print("json", json.dumps({"t": t})); print("query", urllib.parse.quote(t, safe="")); print("form", urllib.parse.quote_plus(t))'
        echo done
"#;

/// The texts a reader could decode the secret from, as the step printed them.
fn encoded_forms() -> Vec<(&'static str, String)> {
    let blob = |prefix: &str, suffix: &str| {
        STANDARD.encode(format!("{prefix}{SECRET}{suffix}").as_bytes())
    };
    // The characters of a blob that depend on the secret only: its bytes
    // start at offset 5 (`user:`) or 1 (`x`), the two unaligned cases.
    let core = |prefix: &str| {
        let b = blob(prefix, "-and-more");
        let start = (prefix.len() * 8).div_ceil(6);
        let end = ((prefix.len() + SECRET.len()) * 8) / 6;
        b[start..end].to_string()
    };
    vec![
        ("standard", STANDARD.encode(SECRET)),
        ("url-safe", URL_SAFE_NO_PAD.encode(SECRET)),
        ("basic", core("user:")),
        ("blob", core("x")),
        ("json", serde_json::to_string(SECRET).unwrap().trim_matches('"').to_string()),
        ("json ascii", "s3cr3t \\\"v@l/\\u00fc?~+x".to_string()),
        ("query", "s3cr3t%20%22v%40l%2F%C3%BC%3F~%2Bx".to_string()),
        ("form", "s3cr3t+%22v%40l%2F%C3%BC%3F~%2Bx".to_string()),
        ("plain", SECRET.to_string()),
    ]
}

#[test]
fn a_secret_a_step_encodes_is_never_shown_or_stored() {
    let sb = Sandbox::new("redact-encoded").env("LIFEBOAT_SECRET_TOKEN", SECRET);
    sb.write("encoded.yaml", WORKFLOW);
    let (code, doc) = sb.run_wait("encoded.yaml", &[]);
    assert_eq!(code, Some(0), "{doc:#}");
    let id = doc["id"].as_str().expect("run id").to_string();

    // The step did print every form, now each a `***`.
    let printed = step(&doc, "leak")["outputs"]["stdout"].as_str().unwrap_or_default().to_string();
    for label in ["standard", "url-safe", "basic", "blob", "json", "query", "form"] {
        let line = printed.lines().find(|l| l.starts_with(label)).unwrap_or_default();
        assert!(line.contains("***"), "`{label}` line not redacted: {line:?}\n{printed}");
    }

    let mut texts = vec![
        ("show --json", doc.to_string()),
        ("show", stdout(&sb.ok(&["show", &id]))),
        ("logs", stdout(&sb.ok(&["logs", &id]))),
        ("logs leak", stdout(&sb.ok(&["logs", &id, "leak"]))),
    ];
    if !on_postgres() {
        for suffix in ["", "-wal"] {
            let path = format!("{}{suffix}", sb.db.display());
            if let Ok(bytes) = std::fs::read(&path) {
                texts.push(("the database", String::from_utf8_lossy(&bytes).into_owned()));
            }
        }
    }
    for (what, text) in &texts {
        for (form, value) in encoded_forms() {
            assert!(!text.contains(&value), "{what} contains the secret's {form} form `{value}`");
        }
    }
}
