//! Templates: the built-in incident template and user templates on disk.

use std::path::Path;

use lifeboat_notify::context::Context;
use lifeboat_notify::{TemplateError, Templates};

fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

#[test]
fn builtin_incident_renders_every_field_in_text_and_html() {
    let t = Templates::load(None).unwrap();
    let ctx = Context::sample("approval_requested");

    let r = t.render("incident", &ctx).unwrap();

    assert_eq!(r.subject, "[P0] Approval needed for step promote before failover continues (dc01)");
    let html = r.html.as_deref().unwrap();
    for part in [&r.text, html] {
        for expected in [
            "Incident ID",
            "0194b2a0-0000-7000-8000-000000000000",
            "Severity",
            "P0",
            "Affected Service",
            "dc01",
            "Detected At",
            "2025-01-15T03:00:00Z",
            "Description",
            "SiteDown: dc01 is not answering health checks",
            "Action Taken",
            "Fenced dc01, promoting dc02",
            "Expected Resolution",
            "within 5m (RTO)",
            "check_primary",
            "exit status 1",
            "oncall-leads, carol",
            "/steps/approve/approve",
            "/steps/approve/reject",
            "http://127.0.0.1:8080/runs/0194b2a0-0000-7000-8000-000000000000",
            "Bridge call",
        ] {
            assert!(part.contains(expected), "missing {expected:?} in:\n{part}");
        }
    }
    assert!(r.text.contains("  promote: failed (3 attempts) - exit status 1"), "{}", r.text);
    assert!(html.contains("<td style=\"padding: 2px 12px 2px 0;\">promote</td>"), "{html}");
}

#[test]
fn builtin_incident_renders_without_optional_values() {
    let t = Templates::load(None).unwrap();

    let r = t.render("incident", &Context::minimal("failed")).unwrap();

    assert!(r.text.contains("Action Taken:        workflow failover is running"), "{}", r.text);
    assert!(r.text.contains("Expected Resolution: not yet known"));
    assert!(!r.text.contains("Steps:"));
}

#[test]
fn html_part_escapes_values_and_text_part_does_not() {
    let t = Templates::load(None).unwrap();
    let mut ctx = Context::sample("failed");
    ctx.incident.description = "<script>alert('x')</script> & co".into();

    let r = t.render("incident", &ctx).unwrap();

    let html = r.html.unwrap();
    assert!(!html.contains("<script>"), "{html}");
    assert!(html.contains("&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; co"), "{html}");
    assert!(r.text.contains("<script>alert('x')</script> & co"));
}

#[test]
fn user_template_overrides_builtin_by_name() {
    let dir = dir_with(&[
        ("incident.subject.hbs", "DR {{run.workflow}}: {{event}}"),
        ("incident.text.hbs", "Run {{run.id}} is {{run.status}}.\n"),
        ("status.subject.hbs", "status"),
        ("status.hbs", "{{> headline}}"),
    ]);

    let t = Templates::load(Some(dir.path())).unwrap();

    assert_eq!(t.names(), ["incident", "status"]);
    assert!(t.has("status"));
    let r = t.render("incident", &Context::sample("started")).unwrap();
    assert_eq!(r.subject, "DR failover: started");
    assert_eq!(r.text, "Run 0194b2a0-0000-7000-8000-000000000000 is running.\n");
    assert_eq!(r.html, None, "a user template replaces the built-in one as a whole");
    assert_eq!(
        t.render("status", &Context::sample("started")).unwrap().text,
        "Recovery started: failover is running"
    );
}

#[test]
fn broken_user_template_reports_file_line_and_column() {
    let dir = dir_with(&[
        ("incident.subject.hbs", "ok"),
        ("incident.text.hbs", "line one\n{{#if run.link}}\n  {{run.link}\n{{/if}}\n"),
    ]);

    let err = Templates::load(Some(dir.path())).unwrap_err();

    let file = dir.path().join("incident.text.hbs");
    assert!(matches!(err, TemplateError::Syntax { line: Some(3), .. }), "{err:?}");
    let shown = err.to_string();
    assert!(shown.starts_with(&format!("{}:3:", file.display())), "{shown}");
}

#[test]
fn typo_in_user_template_is_an_error_at_load_time() {
    let dir = dir_with(&[
        ("incident.subject.hbs", "ok"),
        ("incident.text.hbs", "Hello\nrun {{run.wrokflow}}\n"),
    ]);

    let err = Templates::load(Some(dir.path())).unwrap_err();

    let shown = err.to_string();
    let file = dir.path().join("incident.text.hbs");
    assert!(shown.starts_with(&format!("{}:2:", file.display())), "{shown}");
    assert!(shown.contains("`run.wrokflow` does not exist"), "{shown}");
}

#[test]
fn unguarded_optional_value_is_an_error_at_load_time() {
    let dir = dir_with(&[
        ("incident.subject.hbs", "ok"),
        ("incident.text.hbs", "{{approval.approve_url}}"),
    ]);

    let err = Templates::load(Some(dir.path())).unwrap_err();

    assert!(matches!(err, TemplateError::Check { .. }), "{err:?}");
    assert!(err.to_string().contains("guard optional values with {{#if}}"), "{err}");
}

#[test]
fn template_without_subject_names_the_missing_file() {
    let dir = dir_with(&[("report.text.hbs", "x")]);

    let err = Templates::load(Some(dir.path())).unwrap_err().to_string();

    let expected = Path::new(dir.path()).join("report.subject.hbs");
    assert!(err.contains(&expected.display().to_string()), "{err}");
}

#[test]
fn unknown_template_lists_known_ones() {
    let t = Templates::load(None).unwrap();

    let err = t.render("incidnet", &Context::sample("started")).unwrap_err().to_string();

    assert_eq!(err, "unknown template `incidnet`; known: incident");
}
