//! The compile pass: parse, type every part with recovery, then check the
//! graph, templates, inputs, triggers and names, collecting every problem.

mod drills;
mod header;
mod names;

pub use header::check_value;

use indexmap::IndexMap;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::de::{DeError, DeErrorKind, deserialize_recovering, one_of};
use super::diagnostic::{Code, Diagnostic, FileReport, LineIndex, Severity};
use super::graph::StepGraph;
use super::limits::{MAX_DIAGNOSTICS, MAX_NEEDS, MAX_STEPS, MAX_TEMPLATES};
use super::templates::{self, Parsed, Scope, StepNames};
use super::untrusted;
use super::yaml::{self, Node, NodeKind};
use super::{
    CompileEnv, CompiledBody, CompiledStep, CompiledWorkflow, DrillAction, EffectiveRetry,
};
use crate::kinds::{KindConfig, StepKind};
use crate::model::scalars::is_valid_name;
use crate::model::{InputSpec, InputType, Located, RetryPolicy, Span, Step, StepBody, Workflow};
use crate::suggest;

struct Pass<'a> {
    source: &'a str,
    env: CompileEnv<'a>,
    diagnostics: Vec<Diagnostic>,
    /// Parsed templates by text: parsing is the costly part, and the same
    /// text (`{{inputs.site}}`) appears again and again.
    parsed: std::collections::HashMap<String, Parsed>,
    /// Templated strings seen, against `limits::MAX_TEMPLATES`.
    templates_seen: usize,
}

/// Compiles one workflow file. `file` is only used in messages.
pub fn compile(
    file: &str,
    source: &str,
    env: CompileEnv<'_>,
) -> Result<CompiledWorkflow, FileReport> {
    let mut pass = Pass {
        source,
        env,
        diagnostics: Vec::new(),
        parsed: Default::default(),
        templates_seen: 0,
    };
    let result = suggest::with_budget(suggest::BUDGET, || pass.run(file));
    match result {
        Some(mut wf) if !pass.has_errors() => {
            pass.diagnostics.sort_by_key(|d| d.span.map_or(0, |s| s.start));
            wf.warnings = pass.diagnostics;
            Ok(wf)
        }
        _ => {
            pass.diagnostics.sort_by_key(|d| d.span.map_or(0, |s| s.start));
            if pass.diagnostics.len() > MAX_DIAGNOSTICS {
                let more = pass.diagnostics.len() - MAX_DIAGNOSTICS;
                pass.diagnostics.truncate(MAX_DIAGNOSTICS);
                pass.diagnostics.push(
                    Diagnostic::error(
                        Code::TooLarge,
                        format!("{more} more problems in this file are not shown"),
                        None,
                    )
                    .help(format!(
                        "the first {MAX_DIAGNOSTICS} are above; fix them and validate again"
                    )),
                );
            }
            Err(FileReport {
                file: file.to_string(),
                source: source.to_string(),
                diagnostics: pass.diagnostics,
            })
        }
    }
}

impl<'a> Pass<'a> {
    fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(|d| d.severity == Severity::Error)
    }

    fn warning(
        &mut self,
        code: Code,
        message: impl Into<String>,
        span: Option<Span>,
    ) -> Building<'_> {
        let mut diagnostic = Diagnostic::error(code, message, span);
        diagnostic.severity = Severity::Warning;
        self.diagnostics.push(diagnostic);
        Building(self.diagnostics.last_mut().expect("just pushed"))
    }

    fn error(
        &mut self,
        code: Code,
        message: impl Into<String>,
        span: Option<Span>,
    ) -> Building<'_> {
        self.diagnostics.push(Diagnostic::error(code, message, span));
        Building(self.diagnostics.last_mut().expect("just pushed"))
    }

    fn run(&mut self, file: &str) -> Option<CompiledWorkflow> {
        let parsed = match yaml::parse(self.source) {
            Ok(parsed) => parsed,
            Err(e) => {
                let code = if e.limit { Code::Limit } else { Code::Yaml };
                self.error(code, e.message, e.span);
                return None;
            }
        };
        let lines = LineIndex::new(self.source);
        for dup in &parsed.duplicates {
            let (first_line, _) = lines.line_col(dup.first.start);
            let what = if dup.path == ["steps"] { "step id" } else { "key" };
            self.error(
                Code::DuplicateKey,
                format!("duplicate {what} `{}`", dup.key),
                Some(dup.duplicate),
            )
            .label(format!("first defined on line {first_line}"));
        }
        let root = &parsed.root;
        if !matches!(root.kind, NodeKind::Map(_)) {
            self.error(
                Code::Structure,
                "a workflow file must be a mapping with at least `name` and `steps`",
                Some(root.span),
            );
            return None;
        }

        let steps_node = match root.get("steps") {
            Some(node @ Node { kind: NodeKind::Map(entries), .. }) if !entries.is_empty() => {
                Some(node)
            }
            Some(node) => {
                self.error(
                    Code::Structure,
                    "`steps` must map step ids to steps, with at least one step",
                    Some(node.span),
                );
                None
            }
            None => {
                self.error(Code::MissingField, "missing required field `steps`", Some(root.span))
                    .help("add `steps:` with at least one step, e.g. `steps: { hello: { uses: set } }`");
                None
            }
        };

        // Everything but the steps, which are typed one by one below.
        let header_node = Node {
            kind: NodeKind::Map(
                root.entries()
                    .iter()
                    .filter(|(k, _)| k.as_str() != Some("steps"))
                    .cloned()
                    .collect(),
            ),
            span: root.span,
        };
        let (header, errors) =
            deserialize_recovering(&header_node, false, |d| Workflow::deserialize(d));
        self.report_de_errors(&errors, "workflow", "");
        let header = header?;
        if !is_valid_name(&header.name) {
            self.error(Code::BadName, format!("workflow name `{}` is invalid", header.name.value), header.name.span)
                .help("use lower case letters, digits, `_` and `-`, starting with a letter or digit (e.g. `failover`)");
        }
        self.check_inputs(root, &header.inputs);

        let steps_node = steps_node?;
        if steps_node.entries().len() > MAX_STEPS {
            let count = steps_node.entries().len();
            self.error(
                Code::TooLarge,
                format!("the workflow has {count} steps; at most {MAX_STEPS} are allowed"),
                root.key_node("steps").map(|n| n.span),
            )
            .help("split it into child workflows (`uses: workflow`), each under the limit");
            return None;
        }
        let ids: Vec<String> = steps_node.entries().iter().map(|(k, _)| k.key_text()).collect();
        let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let step_names = StepNames::new(&id_refs);
        let mut parsed_steps: Vec<Option<Step>> = Vec::with_capacity(ids.len());
        for (key, node) in steps_node.entries() {
            let id = key.key_text();
            if !is_valid_name(&id) {
                self.error(Code::BadName, format!("step id `{id}` is invalid"), Some(key.span))
                    .help("use lower case letters, digits, `_` and `-`, starting with a letter or digit");
            }
            let (step, errors) = deserialize_recovering(node, false, |d| Step::deserialize(d));
            self.report_de_errors(&errors, &format!("step `{id}`"), "");
            parsed_steps.push(step);
        }

        let edges: usize = parsed_steps.iter().flatten().map(|s| s.needs.len()).sum();
        if edges > MAX_NEEDS {
            self.error(
                Code::TooLarge,
                format!(
                    "the steps have {edges} `needs` entries in all; at most {MAX_NEEDS} are allowed"
                ),
                root.key_node("steps").map(|n| n.span),
            )
            .help("a step needs only its direct prerequisites: what they need is implied");
            return None;
        }

        // The graph.
        let mut needs: Vec<Vec<usize>> = vec![Vec::new(); ids.len()];
        for (i, step) in parsed_steps.iter().enumerate() {
            let Some(step) = step else { continue };
            for need in &step.needs {
                match step_names.get(&need.value) {
                    Some(j) if j == i => {
                        self.error(
                            Code::SelfNeed,
                            format!("step `{}` needs itself", ids[i]),
                            need.span,
                        )
                        .help("remove it from `needs`");
                    }
                    Some(j) => {
                        if !needs[i].contains(&j) {
                            needs[i].push(j);
                        }
                    }
                    None => {
                        self.error(
                            Code::UnknownNeed,
                            format!(
                                "step `{}` needs `{}`, which is not a step of this workflow",
                                ids[i], need.value
                            ),
                            need.span,
                        )
                        .maybe_help(suggest::did_you_mean(&need.value, id_refs.iter().copied()));
                    }
                }
            }
        }
        let graph = StepGraph::new(&needs);
        for cycle in graph.cycles() {
            let names: Vec<&str> = cycle.iter().map(|&i| ids[i].as_str()).collect();
            // Point at the need that closes the cycle: cycle[1] needs cycle[0].
            let span = parsed_steps[cycle[1]]
                .as_ref()
                .and_then(|s| s.needs.iter().find(|n| n.value == ids[cycle[0]]))
                .and_then(|n| n.span);
            self.error(Code::Cycle, format!("dependency cycle: {}", names.join(" -> ")), span)
                .help("a step cannot wait, directly or not, for itself: remove one of these needs");
        }
        let ancestors = graph.ancestors();

        // Steps: kinds, parameters, templates.
        let input_names: Vec<&str> = header.inputs.keys().map(String::as_str).collect();
        // `alert.*`/`event.*` exist only in runs a webhook can start.
        let has_webhook = header.triggers.iter().any(|t| t.webhook.is_some());
        let mut compiled_steps = Vec::with_capacity(ids.len());
        let mut child_workflows = Vec::new();
        for (i, (key, node)) in steps_node.entries().iter().enumerate() {
            let Some(step) = parsed_steps[i].clone() else { continue };
            let id = &ids[i];
            let place = format!("step `{id}`");
            let scope = Scope {
                inputs: &input_names,
                steps: &step_names,
                visible_steps: Some(ancestors.of(i)),
                place: &place,
                own_step: Some(i),
                stored: false,
                allow_outputs: false,
                allow_item: step.for_each.is_some(),
                allow_trigger_payload: has_webhook,
                schedule_payload: false,
                allow_inputs: true,
            };
            let body = self.compile_body(
                &BodyParts { uses: &step.uses, retry: step.retry.as_ref(), timeout: step.timeout },
                node,
                &header,
                &scope,
                &place,
                "",
            );
            let mut step_templates = IndexMap::new();
            if let Some(when) = &step.when {
                self.template(&mut step_templates, "when", when, &scope);
            }
            if let Some(for_each) = &step.for_each {
                match &for_each.value {
                    serde_json::Value::String(s) => {
                        let located = Located::new(s.clone(), for_each.span);
                        self.template(&mut step_templates, "for_each", &located, &scope);
                    }
                    serde_json::Value::Array(_) => {
                        if let Some(list) = node.get("for_each") {
                            self.templates_in(list, &mut step_templates, "for_each", &[], &scope);
                        }
                    }
                    _ => {
                        self.error(
                            Code::InvalidValue,
                            format!(
                                "{place}: `for_each` must be a list or a template rendering one"
                            ),
                            for_each.span,
                        );
                    }
                }
            }
            if let Some(poll) = &step.poll {
                let poll_scope = Scope { allow_outputs: true, ..scope.clone() };
                self.template(&mut step_templates, "poll.until", &poll.until, &poll_scope);
            }
            let rollback = match (&step.rollback, node.get("rollback")) {
                (Some(rb), Some(rb_node)) => {
                    // A rollback may read its own step's results.
                    let mut rb_visible = ancestors.of(i).clone();
                    rb_visible.insert(i);
                    let rb_place = format!("the rollback of step `{id}`");
                    let rb_scope = Scope {
                        visible_steps: Some(&rb_visible),
                        place: &rb_place,
                        own_step: None,
                        allow_item: false,
                        ..scope.clone()
                    };
                    self.compile_rollback(rb, rb_node, &header, &rb_scope)
                }
                _ => None,
            };
            if step.sequential && step.for_each.is_none() {
                self.error(
                    Code::StepConfig,
                    format!("{place}: `sequential` only applies to a step with `for_each`"),
                    node.key_node("sequential").map(|n| n.span),
                );
            }
            if step.irreversible && step.rollback.is_some() {
                self.error(Code::StepConfig, format!("{place} is marked `irreversible` but has a `rollback`"), Some(key.span))
                    .help("remove `irreversible: true`, or the rollback if it cannot really undo the step");
            }
            let Some(body) = body else { continue };
            let rollback = rollback.or_else(|| automatic_rollback(&step, &body));
            if step.poll.is_some() && !matches!(body.kind, StepKind::Action(_)) {
                self.error(
                    Code::StepConfig,
                    format!(
                        "{place}: `poll` works only with action steps ({})",
                        lifeboat_steps::ActionKind::names()
                    ),
                    node.key_node("poll").map(|n| n.span),
                );
            }
            if let KindConfig::Workflow(c) = &body.config {
                let span = node.at_path(&["with", "workflow"]).map(|n| n.span);
                if is_valid_name(&c.workflow) {
                    child_workflows.push((c.workflow.clone(), span.unwrap_or(key.span)));
                } else {
                    // Never a path or a template: a child is resolved by name
                    // through the catalog and pinned when the run starts.
                    self.error(
                        Code::BadName,
                        format!("{place}: `{}` is not a workflow name", c.workflow),
                        span,
                    )
                    .help("name a workflow of the workflows directory by its `name:` (e.g. `restore-test`); paths and templates are not allowed");
                }
            }
            let drill = self.compile_step_drill(&step, node, &header, &scope);
            compiled_steps.push(CompiledStep {
                id: id.clone(),
                index: i,
                definition: step,
                body,
                needs: needs[i].clone(),
                templates: step_templates,
                rollback,
                drill,
                span: key.span,
            });
        }

        let workflow_templates =
            self.check_workflow_level(root, &header, &input_names, &step_names);
        self.check_drills(root, &header, &step_names, &parsed_steps);

        if self.has_errors() || compiled_steps.len() != ids.len() {
            return None;
        }
        let topological_order = graph.topological_order()?;
        let waves = graph.waves(&topological_order);
        let mut definition = header;
        definition.steps =
            compiled_steps.iter().map(|s| (s.id.clone(), s.definition.clone())).collect();
        Some(CompiledWorkflow {
            file: file.to_string(),
            name: definition.name.value.clone(),
            hash: hex(&Sha256::digest(self.source.as_bytes())),
            source: self.source.to_string(),
            definition,
            steps: compiled_steps,
            graph,
            topological_order,
            waves,
            ancestors,
            templates: workflow_templates,
            child_workflows,
            warnings: Vec::new(),
        })
    }

    fn compile_rollback(
        &mut self,
        rb: &StepBody,
        rb_node: &Node,
        header: &Workflow,
        scope: &Scope<'_>,
    ) -> Option<CompiledBody> {
        let place = scope.place.to_string();
        self.compile_body(
            &BodyParts { uses: &rb.uses, retry: rb.retry.as_ref(), timeout: rb.timeout },
            rb_node,
            header,
            scope,
            &place,
            "rollback.",
        )
    }

    /// `uses` + `with` + policies -> a body, reporting what is wrong.
    fn compile_body(
        &mut self,
        parts: &BodyParts<'_>,
        node: &Node,
        header: &Workflow,
        scope: &Scope<'_>,
        place: &str,
        prefix: &str,
    ) -> Option<CompiledBody> {
        let Some(kind) = StepKind::from_name(&parts.uses.value) else {
            let names: Vec<&str> = StepKind::all().map(StepKind::name).collect();
            self.error(
                Code::UnknownKind,
                format!("{place}: unknown step kind `{}`", parts.uses.value),
                parts.uses.span,
            )
            .maybe_help(
                suggest::did_you_mean(&parts.uses.value, names.iter().copied())
                    .or_else(|| Some(format!("step kinds: {}", names.join(", ")))),
            );
            return None;
        };
        let empty =
            Node { kind: NodeKind::Map(Vec::new()), span: parts.uses.span.unwrap_or(node.span) };
        let with_node =
            node.get("with").filter(|n| !matches!(n.kind, NodeKind::Null)).unwrap_or(&empty);
        let (config, errors) =
            deserialize_recovering(with_node, true, |d| KindConfig::deserialize(kind, d));
        self.report_de_errors(&errors, place, &format!("{prefix}with."));
        let config = config?;
        for problem in config.compile() {
            let at = with_node.at_path(&problem.path);
            // A template stood in for this value; it is checked once rendered.
            if !problem.about_template
                && at.is_some_and(|n| n.as_str().is_some_and(|s| s.contains("{{")))
            {
                continue;
            }
            let span = at.map(|n| n.span).or(Some(with_node.span));
            let message = if problem.path.is_empty() {
                format!("{place}: {}", problem.message)
            } else {
                format!("{place}: `{prefix}with.{}`: {}", problem.path.join("."), problem.message)
            };
            self.error(Code::StepConfig, message, span).maybe_help(problem.help);
        }
        self.check_config_names(&config, with_node, place);
        let mut body_templates = IndexMap::new();
        // A child workflow's inputs are stored with its run: no secrets there.
        let child_scope;
        let scope = if kind == StepKind::Native(crate::kinds::NativeKind::Workflow) {
            child_scope = Scope { stored: true, ..scope.clone() };
            &child_scope
        } else {
            scope
        };
        self.templates_in(with_node, &mut body_templates, "", kind.untemplated_fields(), scope);
        if let KindConfig::Action(action) = &config {
            self.check_untrusted(action, &body_templates, with_node, &header.inputs, place, prefix);
        }
        let retry = self.effective_retry(header.defaults.retry.as_ref(), parts.retry, node, place);
        Some(CompiledBody {
            kind,
            config,
            with: node_to_json(with_node),
            templates: body_templates,
            retry,
            timeout: parts.timeout.or(header.defaults.timeout),
            inverse_of_step: false,
        })
    }

    fn effective_retry(
        &mut self,
        defaults: Option<&RetryPolicy>,
        step: Option<&RetryPolicy>,
        node: &Node,
        place: &str,
    ) -> EffectiveRetry {
        let base = EffectiveRetry::default();
        let pick =
            |f: fn(&RetryPolicy) -> Option<u32>| step.and_then(f).or_else(|| defaults.and_then(f));
        let attempts = pick(|r| r.attempts).unwrap_or(base.attempts);
        if attempts == 0 {
            let span = node.at_path(&["retry", "attempts"]).map(|n| n.span);
            self.error(
                Code::InvalidValue,
                format!("{place}: `retry.attempts` counts the first attempt too, so it must be at least 1"),
                span,
            );
        }
        EffectiveRetry {
            attempts: attempts.max(1),
            backoff: step
                .and_then(|r| r.backoff)
                .or(defaults.and_then(|r| r.backoff))
                .unwrap_or(base.backoff),
            delay: step
                .and_then(|r| r.delay)
                .or(defaults.and_then(|r| r.delay))
                .unwrap_or(base.delay),
            max_delay: step
                .and_then(|r| r.max_delay)
                .or(defaults.and_then(|r| r.max_delay))
                .unwrap_or(base.max_delay),
            jitter: step
                .and_then(|r| r.jitter)
                .or(defaults.and_then(|r| r.jitter))
                .unwrap_or(base.jitter),
        }
    }

    /// Parses and checks every templated string below `node`.
    fn templates_in(
        &mut self,
        node: &Node,
        out: &mut IndexMap<String, Parsed>,
        prefix: &str,
        untemplated: &[&str],
        scope: &Scope<'_>,
    ) {
        let mut found: Vec<(String, Span, String)> = Vec::new();
        node.walk_strings(&mut Vec::new(), &mut |path, n, s| {
            if s.contains("{{") {
                let key = if prefix.is_empty() {
                    path.join(".")
                } else {
                    format!("{prefix}.{}", path.join("."))
                };
                found.push((key, n.span, s.to_string()));
            }
        });
        for (key, span, text) in found {
            let top = key.split('.').next().unwrap_or_default();
            if prefix.is_empty() && untemplated.contains(&top) {
                self.error(Code::TemplateInScript, format!("{}: templates are not rendered inside `{top}`", scope.place), Some(span))
                    .help(format!(
                        "pass values through the templated `env` map (e.g. `env: {{ SITE: \"{{{{inputs.site}}}}\" }}`) and read \"$SITE\" in the {top}"
                    ));
                continue;
            }
            self.template(out, &key, &Located::new(text, Some(span)), scope);
        }
    }

    fn template(
        &mut self,
        out: &mut IndexMap<String, Parsed>,
        key: &str,
        text: &Located<String>,
        scope: &Scope<'_>,
    ) {
        self.templates_seen += 1;
        if self.templates_seen > MAX_TEMPLATES {
            if self.templates_seen == MAX_TEMPLATES + 1 {
                self.error(
                    Code::TooLarge,
                    format!("the file has more than {MAX_TEMPLATES} templated strings; the rest are not checked"),
                    text.span,
                )
                .help("move repeated logic into child workflows or `set` steps whose outputs are reused");
            }
            return;
        }
        let parsed = match self.parsed.get(&text.value) {
            Some(t) => t.clone(),
            None => match templates::parse(&text.value) {
                Ok(t) => {
                    self.parsed.insert(text.value.clone(), t.clone());
                    t
                }
                Err(p) => {
                    self.error(p.code, p.message, text.span).maybe_help(p.help);
                    return;
                }
            },
        };
        let problems = templates::check_references(&parsed, scope);
        if problems.is_empty() {
            out.insert(key.to_string(), parsed);
        }
        for p in problems {
            let span = text.span.map(|s| self.narrow(s, p.needle.as_deref()));
            self.error(p.code, p.message, span).maybe_help(p.help);
        }
    }

    /// The sub-span of `span` where `needle` is written, if it is.
    fn narrow(&self, span: Span, needle: Option<&str>) -> Span {
        let Some(needle) = needle.filter(|n| !n.is_empty()) else { return span };
        let Some(text) = self.source.get(span.start..span.end()) else { return span };
        match text.find(needle) {
            Some(i) => Span::new(span.start + i, needle.len()),
            None => span,
        }
    }

    fn report_de_errors(&mut self, errors: &[DeError], place: &str, prefix: &str) {
        for e in errors {
            let path = format!("{prefix}{}", e.path.join(".")).trim_end_matches('.').to_string();
            match &e.kind {
                DeErrorKind::UnknownField { field, expected } => {
                    let parent =
                        path.strip_suffix(field.as_str()).unwrap_or("").trim_end_matches('.');
                    let within = if parent.is_empty() {
                        place.to_string()
                    } else {
                        format!("{place}, in `{parent}`")
                    };
                    let help = suggest::did_you_mean(field, expected.iter().copied())
                        .unwrap_or_else(|| format!("expected one of {}", one_of(expected)));
                    self.error(
                        Code::UnknownField,
                        format!("unknown field `{field}` ({within})"),
                        e.span,
                    )
                    .help(help);
                }
                DeErrorKind::MissingField(field) => {
                    let within = if path.is_empty() {
                        place.to_string()
                    } else {
                        format!("{place}, in `{path}`")
                    };
                    self.error(
                        Code::MissingField,
                        format!("missing required field `{field}` ({within})"),
                        e.span,
                    );
                }
                DeErrorKind::Other => {
                    let message = if path.is_empty() {
                        format!("{place}: {}", e.message)
                    } else {
                        format!("{place}: `{path}`: {}", e.message)
                    };
                    self.error(Code::InvalidValue, message, e.span);
                }
            }
        }
    }
}

/// Adds detail to the diagnostic just recorded.
struct Building<'d>(&'d mut Diagnostic);

impl Building<'_> {
    fn label(self, label: impl Into<String>) -> Self {
        self.0.label = Some(label.into());
        self
    }

    fn help(self, help: impl Into<String>) -> Self {
        self.0.help = Some(help.into());
        self
    }

    fn maybe_help(self, help: Option<String>) -> Self {
        if help.is_some() {
            self.0.help = help;
        }
        self
    }
}

struct BodyParts<'b> {
    uses: &'b Located<String>,
    retry: Option<&'b RetryPolicy>,
    timeout: Option<crate::model::Duration>,
}

fn hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

fn node_to_json(node: &Node) -> serde_json::Value {
    use serde_json::Value as V;
    match &node.kind {
        NodeKind::Null => V::Null,
        NodeKind::Bool(b) => V::Bool(*b),
        NodeKind::Int(i) => V::from(*i),
        NodeKind::Float(f) => serde_json::Number::from_f64(*f).map(V::Number).unwrap_or(V::Null),
        NodeKind::Str(s) => V::String(s.clone()),
        NodeKind::Seq(items) => V::Array(items.iter().map(node_to_json).collect()),
        NodeKind::Map(entries) => {
            V::Object(entries.iter().map(|(k, v)| (k.key_text(), node_to_json(v))).collect())
        }
    }
}

/// The rollback a step gets without writing one: its action's inverse
/// (`fence` → `unfence`, DNS `set` → the previous rrset), unless the step
/// is `irreversible` on purpose or runs per `for_each` item (a rollback
/// cannot see `item`).
fn automatic_rollback(step: &crate::model::Step, body: &CompiledBody) -> Option<CompiledBody> {
    let reversible = matches!(&body.config, KindConfig::Action(a) if a.reversible());
    (reversible && !step.irreversible && step.for_each.is_none())
        .then(|| CompiledBody { inverse_of_step: true, ..body.clone() })
}
