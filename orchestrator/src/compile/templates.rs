//! Template checks: handlebars syntax, and that every variable a template
//! reads exists where it is rendered (declared inputs, ancestor steps,
//! known roots). Parsing happens here once; the executor renders the
//! parsed templates.

use handlebars::template::{BlockParam, HelperTemplate, Parameter, Template, TemplateElement};
use handlebars::{Path, PathSeg};

use super::diagnostic::Code;
use crate::suggest;

/// Helpers a template may call: handlebars' own plus lifeboat's.
pub const HELPERS: &[&str] = &[
    // handlebars built-ins
    "if", "unless", "each", "with", "lookup", "log", "eq", "ne", "gt", "gte", "lt", "lte", "and",
    "or", "not", "len", // lifeboat
    "json", "default", "upper", "lower", "trim", "contains", "concat", "join", "split", "int",
    "add", "sub", "mul", "now",
];

/// Roots of the template context (see docs/workflow-format.md, "Context roots").
pub const ROOTS: &[&str] =
    &["inputs", "steps", "outputs", "run", "alert", "event", "item", "secrets"];

const STEP_FIELDS: &[&str] = &["status", "outputs", "error", "attempts"];
const RUN_FIELDS: &[&str] =
    &["id", "workflow", "started_at", "elapsed_ms", "trigger", "requested_by", "mode"];

/// What a template may read where it is rendered.
#[derive(Debug, Clone)]
pub struct Scope<'a> {
    /// Declared input names.
    pub inputs: &'a [&'a str],
    /// Every step id of the workflow.
    pub steps: &'a StepNames<'a>,
    /// Steps whose results exist when the template renders; `None` when no
    /// step has run yet (concurrency key, trigger inputs).
    /// `visible_steps[i]`: step `i` has finished when this renders.
    pub visible_steps: Option<&'a fixedbitset::FixedBitSet>,
    /// Where this template is rendered, for messages ("step `x`").
    pub place: &'a str,
    /// The step the template belongs to, if any.
    pub own_step: Option<usize>,
    /// The value is stored (outputs, concurrency key): secrets may not be read.
    pub stored: bool,
    pub allow_outputs: bool,
    pub allow_item: bool,
    pub allow_trigger_payload: bool,
    /// A schedule trigger: its payload is `event.*` (the tick), never `alert.*`.
    pub schedule_payload: bool,
    pub allow_inputs: bool,
}

/// Step ids with O(1) lookup (compiling 1,000-step workflows stays fast).
#[derive(Debug, Clone)]
pub struct StepNames<'a> {
    pub ids: &'a [&'a str],
    index: std::collections::HashMap<&'a str, usize>,
}

impl<'a> StepNames<'a> {
    pub fn new(ids: &'a [&'a str]) -> Self {
        StepNames { ids, index: ids.iter().enumerate().map(|(i, id)| (*id, i)).collect() }
    }

    pub fn get(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub code: Code,
    pub message: String,
    pub help: Option<String>,
    /// The text in the template the problem is about, to place the caret.
    pub needle: Option<String>,
}

/// A parsed template, shared: the same text often appears many times.
pub type Parsed = std::sync::Arc<Template>;

/// Parses `text` (handlebars syntax only).
pub fn parse(text: &str) -> Result<Parsed, Problem> {
    Template::compile(text).map(std::sync::Arc::new).map_err(|e| {
        let at =
            e.pos().map(|(l, c)| format!(" at template line {l}, column {c}")).unwrap_or_default();
        let reason = e.reason().to_string();
        // pest lists every rule it expected; that helps nobody at 3 a.m.
        let reason = if reason.starts_with("invalid handlebars syntax") {
            "unclosed block (`{{#if}}` without `{{/if}}`) or `{{` without `}}`".to_string()
        } else {
            reason
        };
        Problem {
            code: Code::TemplateSyntax,
            message: format!("template syntax error{at}: {reason}"),
            help: Some(
                "expressions look like `{{inputs.site}}` or `{{eq steps.check.status 'failed'}}`"
                    .into(),
            ),
            needle: None,
        }
    })
}

/// Checks every variable a parsed template reads against `scope`.
pub fn check_references(template: &Template, scope: &Scope<'_>) -> Vec<Problem> {
    let mut problems = Vec::new();
    walk_template(template, scope, false, &mut problems);
    problems
}

/// Parses `text` and checks every variable it reads against `scope`.
pub fn check(text: &str, scope: &Scope<'_>) -> Result<Parsed, Vec<Problem>> {
    let template = parse(text).map_err(|p| vec![p])?;
    let problems = check_references(&template, scope);
    if problems.is_empty() { Ok(template) } else { Err(problems) }
}

fn walk_template(t: &Template, scope: &Scope<'_>, in_block: bool, out: &mut Vec<Problem>) {
    for element in &t.elements {
        match element {
            TemplateElement::Expression(h) | TemplateElement::HtmlExpression(h) => {
                walk_helper(h, scope, in_block, out)
            }
            TemplateElement::HelperBlock(h) => {
                walk_helper(h, scope, in_block, out);
                // `each`/`with` change the context: relative paths inside are
                // relative to the item, so only absolute roots are checked.
                let rescoped = in_block || h.block_param.is_some() || is_context_helper(&h.name);
                for inner in [&h.template, &h.inverse].into_iter().flatten() {
                    walk_template(inner, scope, rescoped, out);
                }
            }
            TemplateElement::DecoratorExpression(_)
            | TemplateElement::DecoratorBlock(_)
            | TemplateElement::PartialExpression(_)
            | TemplateElement::PartialBlock(_) => out.push(Problem {
                code: Code::TemplateSyntax,
                message: "partials and decorators are not available in workflow templates".into(),
                help: None,
                needle: None,
            }),
            _ => {}
        }
    }
}

fn is_context_helper(name: &Parameter) -> bool {
    matches!(name, Parameter::Name(n) if n == "each" || n == "with")
}

fn walk_helper(h: &HelperTemplate, scope: &Scope<'_>, in_block: bool, out: &mut Vec<Problem>) {
    let has_args = !h.params.is_empty() || !h.hash.is_empty();
    match &h.name {
        Parameter::Name(name) if has_args || h.block => {
            if !HELPERS.contains(&name.as_str()) {
                out.push(Problem {
                    code: Code::TemplateSyntax,
                    message: format!("unknown template helper `{name}`"),
                    help: suggest::did_you_mean(name, HELPERS.iter().copied())
                        .or_else(|| Some(format!("helpers: {}", HELPERS.join(", ")))),
                    needle: Some(name.clone()),
                });
            }
        }
        // `{{name}}` without arguments reads a variable.
        Parameter::Name(name) => check_path_text(name, scope, in_block, out),
        other => walk_param(other, scope, in_block, out),
    }
    for p in h.params.iter().chain(h.hash.values()) {
        walk_param(p, scope, in_block, out);
    }
    if let Some(BlockParam::Single(p)) = &h.block_param {
        walk_param(p, scope, in_block, out);
    }
}

fn walk_param(p: &Parameter, scope: &Scope<'_>, in_block: bool, out: &mut Vec<Problem>) {
    match p {
        Parameter::Path(Path::Relative((segs, raw))) => {
            let names: Vec<&str> = segs
                .iter()
                .filter_map(|s| match s {
                    PathSeg::Named(n) => Some(n.as_str()),
                    _ => None,
                })
                .collect();
            if names.len() == segs.len() {
                check_segments(&names, raw, scope, in_block, out);
            }
        }
        Parameter::Name(name) => check_path_text(name, scope, in_block, out),
        Parameter::Subexpression(sub) => {
            if let TemplateElement::Expression(h) = sub.element.as_ref() {
                walk_helper(h, scope, in_block, out);
            }
        }
        _ => {}
    }
}

fn check_path_text(text: &str, scope: &Scope<'_>, in_block: bool, out: &mut Vec<Problem>) {
    let segs: Vec<&str> = text.split(['.', '/']).filter(|s| !s.is_empty()).collect();
    check_segments(&segs, text, scope, in_block, out);
}

fn check_segments(
    segs: &[&str],
    raw: &str,
    scope: &Scope<'_>,
    in_block: bool,
    out: &mut Vec<Problem>,
) {
    let Some(root) = segs.first().copied() else { return };
    // Relative to the block's item (handlebars drops `this` from the segments).
    let raw_root = raw.split(['.', '/']).next().unwrap_or("");
    if root == "this" || raw_root == "this" || root.starts_with('@') || raw.starts_with("..") {
        return;
    }
    let problem = |code, message: String, help: Option<String>| Problem {
        code,
        message,
        help,
        needle: Some(raw.to_string()),
    };
    match root {
        "inputs" => {
            if !scope.allow_inputs {
                out.push(problem(
                    Code::UnknownRoot,
                    format!("`{raw}`: inputs are not known yet in {}", scope.place),
                    Some("trigger inputs are built from `alert.*` or `event.*`".into()),
                ));
            } else if let Some(name) = segs.get(1)
                && !scope.inputs.contains(name)
            {
                out.push(problem(
                    Code::UndeclaredInput,
                    format!("`{raw}` reads input `{name}`, which is not declared under `inputs`"),
                    suggest::did_you_mean(name, scope.inputs.iter().copied()).or_else(|| {
                        Some(format!("declare it: `inputs: {{ {name}: {{ type: string }} }}`"))
                    }),
                ));
            }
        }
        "steps" => {
            let Some(step) = segs.get(1).copied() else { return };
            let Some(visible) = scope.visible_steps else {
                out.push(problem(
                    Code::NotAncestor,
                    format!("`{raw}`: no step has run yet when {} is rendered", scope.place),
                    None,
                ));
                return;
            };
            let Some(index) = scope.steps.get(step) else {
                out.push(problem(
                    Code::NotAncestor,
                    format!("`{raw}` reads step `{step}`, which does not exist"),
                    suggest::did_you_mean(step, scope.steps.ids.iter().copied()),
                ));
                return;
            };
            if scope.own_step == Some(index) && !scope.allow_outputs {
                out.push(problem(
                    Code::NotAncestor,
                    format!("`{raw}`: a step cannot read its own results before it has run"),
                    Some("to test the step's result while polling, use `outputs.*` in `poll.until`".into()),
                ));
            } else if !visible.contains(index) {
                out.push(problem(
                    Code::NotAncestor,
                    format!("`{raw}` reads step `{step}`, which is not an ancestor of {}", scope.place),
                    Some(format!("add `{step}` to `needs` (directly or through another need) so it has finished first")),
                ));
            } else if let Some(field) = segs.get(2)
                && !STEP_FIELDS.contains(field)
            {
                out.push(problem(
                    Code::UnknownRoot,
                    format!(
                        "`{raw}`: a step has no `{field}`; it has {}",
                        super::de::one_of(STEP_FIELDS)
                    ),
                    suggest::did_you_mean(field, STEP_FIELDS.iter().copied()),
                ));
            }
        }
        "outputs" if !scope.allow_outputs => out.push(problem(
            Code::UnknownRoot,
            format!(
                "`{raw}`: `outputs.*` is the step's own result and exists only inside `poll.until`"
            ),
            Some("read another step's outputs with `steps.<id>.outputs.<name>`".into()),
        )),
        "item" if !scope.allow_item => out.push(problem(
            Code::UnknownRoot,
            format!("`{raw}`: `item` exists only in a step with `for_each`"),
            None,
        )),
        "alert" if scope.schedule_payload => out.push(problem(
            Code::UnknownRoot,
            format!("`{raw}`: a schedule trigger has no alert; its tick is `event.*`"),
            Some("event.tick, event.schedule, event.cron, event.timezone".into()),
        )),
        "alert" | "event" if !scope.allow_trigger_payload => out.push(problem(
            Code::UnknownRoot,
            format!("`{raw}`: the trigger payload is not available in {}", scope.place),
            None,
        )),
        "run" => {
            if let Some(field) = segs.get(1)
                && !RUN_FIELDS.contains(field)
            {
                out.push(problem(
                    Code::UnknownRoot,
                    format!(
                        "`{raw}`: `run` has no `{field}`; it has {}",
                        super::de::one_of(RUN_FIELDS)
                    ),
                    suggest::did_you_mean(field, RUN_FIELDS.iter().copied()),
                ));
            }
        }
        "secrets" if scope.stored => out.push(problem(
            Code::UnknownRoot,
            format!("`{raw}`: what {} renders here is stored (as run inputs, outputs or a key), so it may not contain secrets", scope.place),
            Some("secrets are for step parameters (`with`), rendered when the step runs and never stored".into()),
        )),
        "outputs" | "item" | "alert" | "event" | "secrets" => {}
        _ if in_block => {}
        _ => out.push(problem(
            Code::UnknownRoot,
            format!("`{raw}` is not a known variable; templates read {}", super::de::one_of(ROOTS)),
            suggest::did_you_mean(root, ROOTS.iter().copied().chain(HELPERS.iter().copied()))
                .or_else(|| Some("to read an input write `inputs.NAME`".into())),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEPS: &[&str] = &["check", "fence", "promote"];

    fn scope<'a>(names: &'a StepNames<'a>, visible: &'a fixedbitset::FixedBitSet) -> Scope<'a> {
        Scope {
            inputs: &["site", "severity"],
            steps: names,
            visible_steps: Some(visible),
            place: "step `promote`",
            own_step: Some(2),
            stored: false,
            allow_outputs: false,
            allow_item: false,
            allow_trigger_payload: true,
            schedule_payload: false,
            allow_inputs: true,
        }
    }

    fn problems(text: &str) -> Vec<Problem> {
        let names = StepNames::new(STEPS);
        let visible: fixedbitset::FixedBitSet = [0usize].into_iter().collect();
        check(text, &scope(&names, &visible)).err().unwrap_or_default()
    }

    #[test]
    fn plain_references_pass() {
        assert!(problems("{{inputs.site}} {{steps.check.status}} {{run.id}}").is_empty());
        assert!(problems("{{#if (eq steps.check.status 'failed')}}x{{/if}}").is_empty());
        assert!(
            problems("{{#each steps.check.outputs.rows}}{{this.name}} {{@index}}{{/each}}")
                .into_iter()
                .chain(problems(
                    "{{#each steps.check.outputs.rows}}{{this.item}} {{this.outputs.json.weight}} {{this/name}}{{/each}}"
                ))
                .next()
                .is_none()
        );
        assert!(problems("no template at all").is_empty());
    }

    #[test]
    fn undeclared_input_suggests_a_declared_one() {
        let p = problems("{{inputs.sit}}");
        assert_eq!(p[0].code, Code::UndeclaredInput);
        assert_eq!(p[0].help.as_deref(), Some("did you mean `site`?"));
    }

    #[test]
    fn non_ancestor_step_is_named() {
        let p = problems("{{ne steps.fence.status 'succeeded'}}");
        assert_eq!(p[0].code, Code::NotAncestor);
        assert!(p[0].message.contains("`fence`"));
    }

    #[test]
    fn unknown_root_and_helper() {
        assert_eq!(problems("{{input.site}}")[0].code, Code::UnknownRoot);
        assert_eq!(problems("{{frobnicate inputs.site}}")[0].code, Code::TemplateSyntax);
        assert_eq!(problems("{{outputs.json}}")[0].code, Code::UnknownRoot);
    }

    #[test]
    fn syntax_errors_are_reported() {
        assert_eq!(problems("{{#if x}}")[0].code, Code::TemplateSyntax);
        assert_eq!(problems("{{inputs.site")[0].code, Code::TemplateSyntax);
    }
}
