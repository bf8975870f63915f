//! Notification templates: the built-in ones, user templates from
//! `templates_dir`, strict checking at load time and rendering.
//!
//! A template has three parts, each a handlebars file: `<name>.subject.hbs`,
//! `<name>.text.hbs` (`<name>.hbs` is accepted for it) and optionally
//! `<name>.html.hbs`. User files override a built-in template of the same name
//! as a whole (a partial override would leave e.g. the built-in HTML part,
//! which mail clients show instead of the edited text). Subject and text parts
//! are not HTML-escaped; the HTML part escapes every `{{value}}`.
//!
//! Rendering is strict: a path that does not exist in the [`Context`] is an
//! error, never an empty string. [`Templates::load`] renders every template
//! against [`Context::sample`] and [`Context::minimal`] for every event, so a
//! typo or an unguarded optional value is reported with file, line and column
//! before any run needs it. The partial `{{> headline}}` (one line saying what
//! happened, per event) is available to user templates too.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use handlebars::{Handlebars, RenderErrorReason};
use serde::Serialize;

use crate::context::{Context, EVENTS};

/// Templates that exist without any file.
pub const BUILTIN: &[&str] = &["incident"];

const HEADLINE: &str = include_str!("../templates/headline.hbs");
const INCIDENT_SUBJECT: &str = include_str!("../templates/incident.subject.hbs");
const INCIDENT_TEXT: &str = include_str!("../templates/incident.text.hbs");
const INCIDENT_HTML: &str = include_str!("../templates/incident.html.hbs");

/// The template name a file in `templates_dir` provides: `incident.subject.hbs`,
/// `incident.text.hbs` and `incident.html.hbs` all provide `incident`.
pub fn template_name_of(file_name: &str) -> Option<&str> {
    let stem = file_name.strip_suffix(".hbs")?;
    let name = stem.split('.').next()?;
    (!name.is_empty()).then_some(name)
}

/// One rendered notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// One line: newlines are replaced by spaces, ends trimmed.
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
}

/// Where a template part came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Builtin(String),
    File(PathBuf),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Builtin(part) => write!(f, "built-in template {part}"),
            Source::File(path) => write!(f, "{}", path.display()),
        }
    }
}

fn at(line: &Option<usize>, column: &Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(":{l}:{c}"),
        (Some(l), None) => format!(":{l}"),
        _ => String::new(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("cannot read templates from {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// Handlebars syntax error.
    #[error("{file}{}: {message}", at(line, column))]
    Syntax { file: Source, line: Option<usize>, column: Option<usize>, message: String },
    /// The template does not render against the documented context.
    #[error(
        "{file}{}: {message} (checked with event `{event}`; guard optional values with {{{{#if}}}})",
        at(line, column)
    )]
    Check {
        file: Source,
        line: Option<usize>,
        column: Option<usize>,
        event: String,
        message: String,
    },
    #[error("template `{name}` has no {part} part: add {}", expected.display())]
    MissingPart { name: String, part: &'static str, expected: PathBuf },
    #[error("{}: unknown template part `{part}`; expected <name>.subject.hbs, <name>.text.hbs or <name>.html.hbs", path.display())]
    UnknownPart { path: PathBuf, part: String },
    #[error("unknown template `{name}`; known: {known}")]
    Unknown { name: String, known: String },
    /// Rendering failed at run time (the context lacked a value).
    #[error("template {template}{}: {message}", at(line, column))]
    Render { template: String, line: Option<usize>, column: Option<usize>, message: String },
}

struct Parts {
    subject: Source,
    text: Source,
    html: Option<Source>,
}

/// The loaded templates. Cheap to share behind an `Arc`; rendering takes `&self`.
pub struct Templates {
    /// Subject and text parts: no escaping.
    plain: Handlebars<'static>,
    /// HTML parts: HTML escaping.
    html: Handlebars<'static>,
    parts: BTreeMap<String, Parts>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates").field("names", &self.names()).finish()
    }
}

fn registries() -> (Handlebars<'static>, Handlebars<'static>) {
    let mut plain = Handlebars::new();
    plain.set_strict_mode(true);
    plain.register_escape_fn(handlebars::no_escape);
    let mut html = Handlebars::new();
    html.set_strict_mode(true);
    (plain, html)
}

fn syntax(source: &Source, e: handlebars::TemplateError) -> TemplateError {
    let (line, column) = e.pos().map_or((None, None), |(l, c)| (Some(l), Some(c)));
    TemplateError::Syntax { file: source.clone(), line, column, message: e.reason().to_string() }
}

fn render_message(e: &handlebars::RenderError) -> String {
    match e.reason() {
        RenderErrorReason::MissingVariable(Some(path)) => {
            format!("`{path}` does not exist in the context")
        }
        other => other.to_string(),
    }
}

impl Templates {
    /// The built-in templates, overridden by the files in `dir` when given.
    /// Every template is compiled and checked against the documented context.
    pub fn load(dir: Option<&Path>) -> Result<Templates, TemplateError> {
        let (mut plain, mut html) = registries();
        let headline = Source::Builtin("headline".into());
        for reg in [&mut plain, &mut html] {
            reg.register_partial("headline", HEADLINE.trim_end())
                .map_err(|e| syntax(&headline, e))?;
        }
        let mut templates = Templates { plain, html, parts: BTreeMap::new() };
        templates.add(
            "incident",
            "subject",
            Source::Builtin("incident.subject".into()),
            INCIDENT_SUBJECT,
        )?;
        templates.add(
            "incident",
            "text",
            Source::Builtin("incident.text".into()),
            INCIDENT_TEXT,
        )?;
        templates.add(
            "incident",
            "html",
            Source::Builtin("incident.html".into()),
            INCIDENT_HTML,
        )?;
        if let Some(dir) = dir {
            templates.load_dir(dir)?;
        }
        for name in templates.names() {
            templates.check(&name)?;
        }
        Ok(templates)
    }

    fn load_dir(&mut self, dir: &Path) -> Result<(), TemplateError> {
        let io = |source| TemplateError::Io { path: dir.to_path_buf(), source };
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io)?
            .map(|entry| entry.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .map_err(io)?;
        files.sort();
        let mut user: BTreeMap<String, Vec<(&'static str, PathBuf)>> = BTreeMap::new();
        for path in files {
            let Some(file_name) = path.file_name().and_then(|n| n.to_str()) else { continue };
            let Some(name) = template_name_of(file_name) else { continue };
            let middle = file_name.strip_suffix(".hbs").unwrap_or(file_name)[name.len()..]
                .trim_start_matches('.');
            let part = match middle {
                "subject" => "subject",
                "text" | "" => "text",
                "html" => "html",
                other => {
                    let part = other.to_string();
                    return Err(TemplateError::UnknownPart { path, part });
                }
            };
            user.entry(name.to_string()).or_default().push((part, path));
        }
        for (name, files) in user {
            // A user template replaces a built-in one as a whole.
            if let Some(old) = self.parts.remove(&name) {
                for part in ["subject", "text", "html"] {
                    let key = format!("{name}.{part}");
                    self.plain.unregister_template(&key);
                    self.html.unregister_template(&key);
                }
                drop(old);
            }
            for (part, path) in &files {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| TemplateError::Io { path: path.clone(), source })?;
                self.add(&name, part, Source::File(path.clone()), &text)?;
            }
            for part in ["subject", "text"] {
                if !files.iter().any(|(p, _)| *p == part) {
                    self.parts.remove(&name);
                    return Err(TemplateError::MissingPart {
                        name: name.clone(),
                        part,
                        expected: dir.join(format!("{name}.{part}.hbs")),
                    });
                }
            }
        }
        Ok(())
    }

    fn add(
        &mut self,
        name: &str,
        part: &'static str,
        source: Source,
        text: &str,
    ) -> Result<(), TemplateError> {
        let key = format!("{name}.{part}");
        let reg = if part == "html" { &mut self.html } else { &mut self.plain };
        reg.register_template_string(&key, text).map_err(|e| syntax(&source, e))?;
        let entry = self.parts.entry(name.to_string()).or_insert_with(|| Parts {
            subject: source.clone(),
            text: source.clone(),
            html: None,
        });
        match part {
            "subject" => entry.subject = source,
            "text" => entry.text = source,
            _ => entry.html = Some(source),
        }
        Ok(())
    }

    /// Renders template `name` against the full and the minimal sample
    /// context of every event; the first failure names the file and position.
    pub fn check(&self, name: &str) -> Result<(), TemplateError> {
        let parts = self.parts(name)?;
        for event in EVENTS {
            for ctx in [Context::sample(event), Context::minimal(event)] {
                let checks = [
                    (&self.plain, "subject", Some(&parts.subject)),
                    (&self.plain, "text", Some(&parts.text)),
                    (&self.html, "html", parts.html.as_ref()),
                ];
                for (reg, part, source) in checks {
                    let Some(source) = source else { continue };
                    if let Err(e) = reg.render(&format!("{name}.{part}"), &ctx) {
                        return Err(TemplateError::Check {
                            file: source.clone(),
                            line: e.line_no,
                            column: e.column_no,
                            event: event.to_string(),
                            message: render_message(&e),
                        });
                    }
                }
            }
        }
        Ok(())
    }

    fn parts(&self, name: &str) -> Result<&Parts, TemplateError> {
        self.parts.get(name).ok_or_else(|| TemplateError::Unknown {
            name: name.to_string(),
            known: self.names().join(", "),
        })
    }

    /// Every template name, sorted.
    pub fn names(&self) -> Vec<String> {
        self.parts.keys().cloned().collect()
    }

    pub fn has(&self, name: &str) -> bool {
        self.parts.contains_key(name)
    }

    /// Renders template `name`. `context` is normally a [`Context`]; any
    /// serializable value with the paths the template uses will do.
    pub fn render<T: Serialize>(&self, name: &str, context: &T) -> Result<Rendered, TemplateError> {
        let parts = self.parts(name)?;
        let render = |reg: &Handlebars<'static>, part: &str| {
            let key = format!("{name}.{part}");
            reg.render(&key, context).map_err(|e| TemplateError::Render {
                template: key,
                line: e.line_no,
                column: e.column_no,
                message: render_message(&e),
            })
        };
        Ok(Rendered {
            subject: one_line(&render(&self.plain, "subject")?),
            text: render(&self.plain, "text")?,
            html: parts.html.as_ref().map(|_| render(&self.html, "html")).transpose()?,
        })
    }

    /// Renders a notify step's inline `subject`/`body` pair (no HTML part).
    /// The `{{> headline}}` partial is available here too.
    pub fn render_inline<T: Serialize>(
        &self,
        subject: &str,
        body: &str,
        context: &T,
    ) -> Result<Rendered, TemplateError> {
        let render = |what: &str, template: &str| {
            self.plain.render_template(template, context).map_err(|e| TemplateError::Render {
                template: format!("inline {what}"),
                line: e.line_no,
                column: e.column_no,
                message: match e.reason() {
                    RenderErrorReason::TemplateError(t) => t.reason().to_string(),
                    _ => render_message(&e),
                },
            })
        };
        Ok(Rendered {
            subject: one_line(&render("subject", subject)?),
            text: render("body", body)?,
            html: None,
        })
    }
}

fn one_line(s: &str) -> String {
    s.split(['\r', '\n']).map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_of_one_template_share_its_name() {
        assert_eq!(template_name_of("incident.subject.hbs"), Some("incident"));
        assert_eq!(template_name_of("status.hbs"), Some("status"));
        assert_eq!(template_name_of("README.md"), None);
    }

    #[test]
    fn builtins_pass_their_own_check() {
        let t = Templates::load(None).unwrap();
        assert_eq!(t.names(), BUILTIN);
    }

    #[test]
    fn every_event_has_its_own_headline() {
        let t = Templates::load(None).unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for event in EVENTS {
            let r = t.render("incident", &Context::sample(event)).unwrap();
            assert!(!r.subject.contains('\n'));
            assert!(seen.insert(r.subject.clone()), "{event}: {}", r.subject);
        }
    }

    #[test]
    fn templates_read_the_run_mode() {
        let t = Templates::load(None).unwrap();
        let mut ctx = Context::sample("started");
        let template = "{{#if (eq run.mode \"drill\")}}rehearsal{{else}}{{run.mode}}{{/if}}";
        assert_eq!(t.render_inline(template, "", &ctx).unwrap().subject, "live");
        ctx.run.mode = crate::context::Mode::Drill;
        assert_eq!(t.render_inline(template, "", &ctx).unwrap().subject, "rehearsal");
    }

    #[test]
    fn subject_is_one_line() {
        assert_eq!(one_line(" a\n b \r\n\nc "), "a b c");
    }

    #[test]
    fn inline_renders_unescaped_and_reports_missing_paths() {
        let t = Templates::load(None).unwrap();
        let ctx = Context::sample("started");
        let r = t.render_inline("{{run.workflow}} <go>", "{{> headline}} & more", &ctx).unwrap();
        assert_eq!(r.subject, "failover <go>");
        assert_eq!(r.text, "Recovery started: failover is running & more");
        let err = t.render_inline("{{run.wrokflow}}", "", &ctx).unwrap_err().to_string();
        assert!(err.contains("run.wrokflow"), "{err}");
    }
}
