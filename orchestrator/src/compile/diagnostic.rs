//! Diagnostics: what is wrong, where (file:line:column with a caret
//! snippet), and what to do. Each has a stable code documented in
//! `docs/errors/`.

use annotate_snippets::{AnnotationKind, Group, Level, Renderer, Snippet};
use serde::Serialize;

use crate::model::Span;

macro_rules! codes {
    ($($variant:ident = $code:literal : $title:literal,)*) => {
        /// Stable diagnostic codes; `docs/errors/<code>.md` explains each.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
        pub enum Code { $($variant,)* }

        impl Code {
            pub const ALL: &[Code] = &[$(Code::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self { $(Code::$variant => $code,)* }
            }

            pub fn title(self) -> &'static str {
                match self { $(Code::$variant => $title,)* }
            }
        }
    };
}

codes! {
    Yaml = "LB001": "YAML syntax error",
    Limit = "LB002": "input over a safety limit",
    UnknownField = "LB003": "unknown field",
    InvalidValue = "LB004": "invalid value",
    MissingField = "LB005": "missing required field",
    BadName = "LB006": "invalid name",
    UnknownKind = "LB007": "unknown step kind",
    UnknownNeed = "LB008": "unknown step in needs",
    SelfNeed = "LB009": "step needs itself",
    Cycle = "LB010": "dependency cycle",
    DuplicateKey = "LB011": "duplicate key or step id",
    TemplateSyntax = "LB012": "template syntax error",
    NotAncestor = "LB013": "template reads a step that is not an ancestor",
    UndeclaredInput = "LB014": "template reads an undeclared input",
    UnknownRoot = "LB015": "template reads an unknown variable",
    TemplateInScript = "LB016": "template inside a shell script",
    BadDefault = "LB017": "input default breaks its own declaration",
    UnknownChannel = "LB018": "unknown notification channel",
    UnknownHook = "LB019": "unknown webhook",
    UnknownTemplate = "LB020": "unknown notification template",
    UnknownReference = "LB021": "unknown connection, approver or workflow",
    StepConfig = "LB022": "invalid step parameters",
    Trigger = "LB023": "invalid trigger",
    DuplicateWorkflow = "LB024": "duplicate workflow name",
    Structure = "LB025": "not a workflow",
    Io = "LB026": "file cannot be read",
    TooLarge = "LB027": "workflow over a size limit",
    Untrusted = "LB028": "untrusted value decides a destination or an option",
    NameNotStem = "LB029": "file name differs from the workflow name",
    Drill = "LB030": "invalid drill scenario or step drill",
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    pub code: Code,
    pub severity: Severity,
    pub message: String,
    pub span: Option<Span>,
    /// Short text under the caret.
    pub label: Option<String>,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn error(code: Code, message: impl Into<String>, span: Option<Span>) -> Self {
        Diagnostic {
            code,
            severity: Severity::Error,
            message: message.into(),
            span,
            label: None,
            help: None,
        }
    }

    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn maybe_help(mut self, help: Option<String>) -> Self {
        self.help = help.or(self.help);
        self
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(source: &str, offset: usize) -> (usize, usize) {
    LineIndex::new(source).line_col(offset)
}

/// Where each line starts, found once per file: a file with thousands of
/// diagnostics must not rescan its text for each one.
#[derive(Debug)]
pub struct LineIndex<'a> {
    source: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    pub fn new(source: &'a str) -> Self {
        let mut starts = vec![0];
        starts.extend(source.bytes().enumerate().filter(|&(_, b)| b == b'\n').map(|(i, _)| i + 1));
        LineIndex { source, starts }
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = floor_char_boundary(self.source, offset.min(self.source.len()));
        let line = self.starts.partition_point(|&s| s <= offset);
        let start = self.starts[line - 1];
        (line, self.source[start..offset].chars().count() + 1)
    }

    /// The byte range of 1-based `line`, without its newline.
    fn line_range(&self, line: usize) -> std::ops::Range<usize> {
        let start = self.starts[line - 1];
        let end = self.starts.get(line).map_or(self.source.len(), |&next| next - 1);
        start..end.max(start)
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// All diagnostics of one file, with the source needed to show them.
#[derive(Debug, Clone)]
pub struct FileReport {
    pub file: String,
    pub source: String,
    pub diagnostics: Vec<Diagnostic>,
}

#[derive(Debug, Serialize)]
pub struct JsonDiagnostic<'a> {
    pub file: &'a str,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub code: &'static str,
    pub severity: &'a Severity,
    pub message: &'a str,
    pub help: Option<&'a str>,
}

impl FileReport {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(|d| d.severity == Severity::Error)
    }

    pub fn to_json(&self) -> Vec<JsonDiagnostic<'_>> {
        let lines = LineIndex::new(&self.source);
        self.diagnostics
            .iter()
            .map(|d| {
                let pos = d.span.map(|s| lines.line_col(s.start));
                JsonDiagnostic {
                    file: &self.file,
                    line: pos.map(|p| p.0),
                    column: pos.map(|p| p.1),
                    code: d.code.as_str(),
                    severity: &d.severity,
                    message: &d.message,
                    help: d.help.as_deref(),
                }
            })
            .collect()
    }

    /// rustc-style text: header with file:line:column, caret snippet, help.
    pub fn render(&self, color: bool) -> String {
        let renderer = if color { Renderer::styled() } else { Renderer::plain() };
        let lines = LineIndex::new(&self.source);
        let mut out = String::new();
        for d in &self.diagnostics {
            let level = match d.severity {
                Severity::Error => Level::ERROR,
                Severity::Warning => Level::WARNING,
            };
            let title = level.primary_title(d.message.as_str()).id(d.code.as_str());
            let mut group = Group::with_title(title);
            match d.span {
                Some(span) if !self.source.is_empty() => {
                    let start =
                        floor_char_boundary(&self.source, span.start.min(self.source.len()));
                    let mut end =
                        floor_char_boundary(&self.source, span.end().min(self.source.len()));
                    // Keep the caret on the first line of multi-line spans.
                    if let Some(nl) = self.source[start..end].find('\n') {
                        end = start + nl;
                    }
                    // Only the span's line goes to the renderer, so each
                    // diagnostic costs its line, not the whole file.
                    let (line, _) = lines.line_col(start);
                    let window = lines.line_range(line);
                    let end = end.max(start).min(window.end);
                    let mut annotation = AnnotationKind::Primary
                        .span(start - window.start..end.max(start) - window.start);
                    if let Some(label) = &d.label {
                        annotation = annotation.label(label.as_str());
                    }
                    group = group.element(
                        Snippet::source(&self.source[window])
                            .line_start(line)
                            .path(self.file.as_str())
                            .annotation(annotation),
                    );
                }
                _ => {
                    group = group.element(annotate_snippets::Origin::path(self.file.as_str()));
                }
            }
            let mut report = vec![group];
            if let Some(help) = &d.help {
                report.push(Group::with_title(Level::HELP.secondary_title(help.as_str())));
            }
            out.push_str(&renderer.render(&report));
            out.push_str("\n\n");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_characters() {
        let src = "a: é\nbb: x\n";
        assert_eq!(line_col(src, 0), (1, 1));
        assert_eq!(line_col(src, src.find("bb").unwrap()), (2, 1));
        assert_eq!(line_col(src, src.find('x').unwrap()), (2, 5));
    }

    #[test]
    fn every_code_is_unique() {
        let mut seen = std::collections::HashSet::new();
        assert!(Code::ALL.iter().all(|c| seen.insert(c.as_str())));
    }

    #[test]
    fn every_code_has_a_page_listed_in_the_index() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/errors");
        let index = std::fs::read_to_string(dir.join("README.md")).unwrap();
        for code in Code::ALL {
            let code = code.as_str();
            assert!(dir.join(format!("{code}.md")).is_file(), "docs/errors/{code}.md is missing");
            assert!(index.contains(&format!("[{code}]({code}.md)")), "{code} is not in the index");
        }
    }

    #[test]
    fn renders_file_line_column_and_caret() {
        let report = FileReport {
            file: "wf.yaml".into(),
            source: "name: x\nstep: 1\n".into(),
            diagnostics: vec![
                Diagnostic::error(
                    Code::UnknownField,
                    "unknown field `step`",
                    Some(Span::new(8, 4)),
                )
                .label("not a workflow field")
                .help("did you mean `steps`?"),
            ],
        };
        let text = report.render(false);
        assert!(text.contains("error[LB003]: unknown field `step`"), "{text}");
        assert!(text.contains("wf.yaml:2:1"), "{text}");
        assert!(text.contains("^^^^"), "{text}");
        assert!(text.contains("did you mean `steps`?"), "{text}");
    }
}
