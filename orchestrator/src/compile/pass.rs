//! The compile pass: parse, type every part with recovery, then check the
//! graph, templates, inputs, triggers and names, collecting every problem.

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
use super::{CompileEnv, CompiledBody, CompiledStep, CompiledWorkflow, EffectiveRetry, suggest};
use crate::exec::{KindConfig, StepKind};
use crate::model::scalars::is_valid_name;
use crate::model::{InputSpec, InputType, Located, RetryPolicy, Span, Step, StepBody, Workflow};

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
            if step.poll.is_some() && !matches!(body.kind, StepKind::Action(_)) {
                self.error(Code::StepConfig, format!("{place}: `poll` works only with action steps (shell, http, sql, set, assert)"), node.key_node("poll").map(|n| n.span));
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
            compiled_steps.push(CompiledStep {
                id: id.clone(),
                index: i,
                definition: step,
                body,
                needs: needs[i].clone(),
                templates: step_templates,
                rollback,
            });
        }

        let workflow_templates =
            self.check_workflow_level(root, &header, &input_names, &step_names);

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
        let scope = if kind == StepKind::Native(crate::exec::NativeKind::Workflow) {
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
        })
    }

    /// LB028: the trigger's payload or a free-form input in the scheme,
    /// host or port of an `http` URL, or at the start of a `shell` argument.
    fn check_untrusted(
        &mut self,
        action: &lifeboat_steps::ActionConfig,
        templates: &IndexMap<String, Parsed>,
        with_node: &Node,
        inputs: &IndexMap<String, InputSpec>,
        place: &str,
        prefix: &str,
    ) {
        use lifeboat_steps::ActionConfig;
        match action {
            ActionConfig::Http(_) => {
                let Some(url) = templates.get("url") else { return };
                let span = with_node.get("url").map(|n| n.span);
                for read in untrusted::in_url_destination(url, inputs) {
                    let span = span.map(|s| self.narrow(s, Some(&read.path)));
                    self.warning(
                        Code::Untrusted,
                        format!(
                            "{place}: `{prefix}with.url`: `{}` ({}) decides where the request goes (scheme, host or port)",
                            read.path, read.origin
                        ),
                        span,
                    )
                    .label("whoever sets this value chooses the destination")
                    .help(format!(
                        "keep the scheme and host literal and template only the path or query, or {}; `[http]` in lifeboat.toml limits where requests may go",
                        read.remedy
                    ));
                }
            }
            ActionConfig::Shell(c) => {
                let Some(command) = &c.command else { return };
                let program = command.first().map(String::as_str).unwrap_or("the program");
                for i in 0..command.len() {
                    // After `--`, arguments are no longer options.
                    if command[..i].iter().any(|a| a == "--") {
                        break;
                    }
                    let Some(arg) = templates.get(&format!("command.{i}")) else { continue };
                    let span =
                        with_node.at_path(&["command".to_string(), i.to_string()]).map(|n| n.span);
                    for read in untrusted::at_argument_start(arg, inputs) {
                        let span = span.map(|s| self.narrow(s, Some(&read.path)));
                        let (what, help) = if i == 0 {
                            (
                                "decides which program runs".to_string(),
                                format!("name the program literally, or {}", read.remedy),
                            )
                        } else {
                            (
                                format!(
                                    "starts an argument of `{program}`, so a value starting with `-` becomes an option"
                                ),
                                format!(
                                    "put `--` before it if `{program}` accepts it, start the argument with literal text (`--target={{{{…}}}}`), or {}",
                                    read.remedy
                                ),
                            )
                        };
                        self.warning(
                            Code::Untrusted,
                            format!(
                                "{place}: `{prefix}with.command.{i}`: `{}` ({}) {what}",
                                read.path, read.origin
                            ),
                            span,
                        )
                        .help(help);
                    }
                }
            }
            _ => {}
        }
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

    /// Channels, approvers, connections and templates named in parameters.
    fn check_config_names(&mut self, config: &KindConfig, with_node: &Node, place: &str) {
        let Some(known) = self.env.known else { return };
        for (path, channel) in config.channel_refs() {
            if !known.channels.iter().any(|c| c == channel) {
                let span = with_node.at_path(&path).map(|n| n.span);
                self.unknown_name(
                    Code::UnknownChannel,
                    place,
                    "channel",
                    channel,
                    &known.channels,
                    span,
                );
            }
        }
        let template = match config {
            KindConfig::Notify(c) => c.template.as_deref().map(|t| (t, vec!["template"])),
            KindConfig::Escalate(c) => c.template.as_deref().map(|t| (t, vec!["template"])),
            KindConfig::Approval(c) => c
                .escalate
                .as_ref()
                .and_then(|e| e.template.as_deref())
                .map(|t| (t, vec!["escalate", "template"])),
            _ => None,
        };
        if let Some((t, path)) = template
            && !known.templates.iter().any(|k| k == t)
        {
            let span = with_node.at_path(&path).map(|n| n.span);
            self.unknown_name(Code::UnknownTemplate, place, "template", t, &known.templates, span);
        }
        if let KindConfig::Approval(c) = config {
            for (i, approver) in c.approvers.iter().enumerate() {
                if !known.principals.iter().any(|p| p == approver) {
                    let span = with_node
                        .at_path(&["approvers".to_string(), i.to_string()])
                        .map(|n| n.span);
                    self.unknown_name(
                        Code::UnknownReference,
                        place,
                        "user or group",
                        approver,
                        &known.principals,
                        span,
                    );
                }
            }
        }
        if let KindConfig::Action(lifeboat_steps::ActionConfig::Sql(c)) = config
            && let Some(conn) = &c.connection
            && !known.connections.iter().any(|k| k == conn)
        {
            let span = with_node.get("connection").map(|n| n.span);
            self.unknown_name(
                Code::UnknownReference,
                place,
                "connection",
                conn,
                &known.connections,
                span,
            );
        }
    }

    fn unknown_name(
        &mut self,
        code: Code,
        place: &str,
        what: &str,
        name: &str,
        known: &[String],
        span: Option<Span>,
    ) {
        let help = suggest::did_you_mean(name, known.iter().map(String::as_str)).or_else(|| {
            // Templates come from the built-ins and `templates_dir`, the rest from lifeboat.toml.
            let source = if what == "template" {
                "built in or in templates_dir"
            } else {
                "defined in lifeboat.toml"
            };
            Some(if known.is_empty() {
                format!("no {what}s are {}", source.trim_start_matches("defined "))
            } else {
                format!("{source}: {}", known.join(", "))
            })
        });
        self.error(code, format!("{place}: unknown {what} `{name}`"), span).maybe_help(help);
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

    fn check_inputs(&mut self, root: &Node, inputs: &IndexMap<String, InputSpec>) {
        let inputs_node = root.get("inputs");
        for (name, spec) in inputs {
            let key_span = inputs_node.and_then(|n| n.key_node(name)).map(|n| n.span);
            let identifier = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
                && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !identifier {
                self.error(Code::BadName, format!("input name `{name}` is invalid"), key_span)
                    .help("use lower case letters, digits and `_`, starting with a letter (templates read it as `inputs.NAME`)");
            }
            if let Some(default) = &spec.default
                && let Err(why) = check_value(spec, &default.value)
            {
                self.error(
                    Code::BadDefault,
                    format!("input `{name}`: default {why}"),
                    default.span,
                );
            }
            if let Some(allowed) = &spec.allowed {
                for (i, value) in allowed.iter().enumerate() {
                    if let Err(why) = check_type(spec.ty, value) {
                        let span = inputs_node
                            .and_then(|n| n.at_path(&[name.as_str(), "enum", &i.to_string()]))
                            .map(|n| n.span);
                        self.error(
                            Code::BadDefault,
                            format!("input `{name}`: enum value {why}"),
                            span,
                        );
                    }
                }
            }
            if spec.pattern.is_some() && spec.ty != InputType::String {
                let span = inputs_node
                    .and_then(|n| n.at_path(&[name.as_str(), "pattern"]))
                    .map(|n| n.span);
                self.error(
                    Code::InvalidValue,
                    format!("input `{name}`: `pattern` applies only to `type: string`"),
                    span,
                );
            }
        }
    }

    /// Triggers, notify rules, outputs and the concurrency key.
    fn check_workflow_level(
        &mut self,
        root: &Node,
        wf: &Workflow,
        inputs: &[&str],
        steps: &StepNames<'_>,
    ) -> IndexMap<String, Parsed> {
        let mut out = IndexMap::new();
        let known = self.env.known;
        for (i, trigger) in wf.triggers.iter().enumerate() {
            let node = root.at_path(&["triggers".to_string(), i.to_string()]);
            let span = node.map(|n| n.span);
            // Read the shape from the file, not the parsed value: a schedule
            // with a bad cron was already reported and removed.
            let written = |f: &str| node.and_then(|n| n.get(f)).is_some();
            let (webhook, schedule) = (written("webhook"), written("schedule"));
            if webhook == schedule {
                self.error(
                    Code::Trigger,
                    "a trigger needs exactly one of `webhook` or `schedule`",
                    span,
                );
            } else if schedule {
                let webhook_only: Vec<&str> = ["match", "cancel_on_resolve", "dedupe", "on"]
                    .into_iter()
                    .filter(|f| written(f))
                    .collect();
                if !webhook_only.is_empty() {
                    self.error(
                        Code::Trigger,
                        format!(
                            "a schedule trigger cannot have {}: only webhook triggers receive alerts",
                            one_of(&webhook_only)
                        ),
                        span,
                    );
                }
            } else if let (Some(hook), Some(known)) = (&trigger.webhook, known)
                && !known.hooks.contains(&hook.value)
            {
                self.unknown_name(
                    Code::UnknownHook,
                    "trigger",
                    "webhook",
                    &hook.value,
                    &known.hooks,
                    hook.span,
                );
            }
            let place = format!("trigger {}", i + 1);
            let scope = Scope {
                inputs,
                steps,
                visible_steps: None,
                place: &place,
                own_step: None,
                stored: true,
                allow_outputs: false,
                allow_item: false,
                allow_trigger_payload: true,
                schedule_payload: trigger.schedule.is_some(),
                allow_inputs: false,
            };
            for (name, value) in &trigger.inputs {
                if !inputs.contains(&name.as_str()) {
                    let key_span = node
                        .and_then(|n| n.get("inputs"))
                        .and_then(|n| n.key_node(name))
                        .map(|n| n.span);
                    self.error(
                        Code::UndeclaredInput,
                        format!(
                            "{place} sets input `{name}`, which is not declared under `inputs`"
                        ),
                        key_span,
                    )
                    .maybe_help(suggest::did_you_mean(name, inputs.iter().copied()));
                }
                self.template(&mut out, &format!("triggers.{i}.inputs.{name}"), value, &scope);
            }
            if let Some(dedupe) = &trigger.dedupe {
                self.template(&mut out, &format!("triggers.{i}.dedupe"), dedupe, &scope);
            }
        }
        for rule in &wf.notify {
            let Some(known) = known else { break };
            for channel in &rule.channels {
                if !known.channels.contains(&channel.value) {
                    self.unknown_name(
                        Code::UnknownChannel,
                        "notify",
                        "channel",
                        &channel.value,
                        &known.channels,
                        channel.span,
                    );
                }
            }
            if let Some(t) = &rule.template
                && !known.templates.contains(&t.value)
            {
                self.unknown_name(
                    Code::UnknownTemplate,
                    "notify",
                    "template",
                    &t.value,
                    &known.templates,
                    t.span,
                );
            }
        }
        let mut everything = fixedbitset::FixedBitSet::with_capacity(steps.ids.len());
        everything.insert_range(..);
        let outputs_scope = Scope {
            inputs,
            steps,
            visible_steps: Some(&everything),
            place: "the workflow outputs",
            own_step: None,
            stored: true,
            allow_outputs: false,
            allow_item: false,
            allow_trigger_payload: wf.triggers.iter().any(|t| t.webhook.is_some()),
            schedule_payload: false,
            allow_inputs: true,
        };
        for (name, value) in &wf.outputs {
            self.template(&mut out, &format!("outputs.{name}"), value, &outputs_scope);
        }
        if let Some(c) = &wf.concurrency {
            let scope = Scope {
                visible_steps: None,
                place: "the concurrency key",
                ..outputs_scope.clone()
            };
            self.template(&mut out, "concurrency.key", &c.key, &scope);
        }
        out
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

/// Checks a value against an input declaration (type, enum, pattern).
pub fn check_value(spec: &InputSpec, value: &serde_json::Value) -> Result<(), String> {
    check_type(spec.ty, value)?;
    if let Some(allowed) = &spec.allowed
        && !allowed.contains(value)
    {
        let list: Vec<String> = allowed.iter().map(|v| v.to_string()).collect();
        return Err(format!("{value} is not one of [{}]", list.join(", ")));
    }
    if let (Some(pattern), serde_json::Value::String(s)) = (&spec.pattern, value)
        && !pattern.0.is_match(s)
    {
        return Err(format!("\"{s}\" does not match the pattern `{}`", pattern.as_str()));
    }
    Ok(())
}

fn check_type(ty: InputType, value: &serde_json::Value) -> Result<(), String> {
    use serde_json::Value as V;
    let ok = match ty {
        InputType::String => value.is_string(),
        InputType::Integer => value.is_i64() || value.is_u64(),
        InputType::Number => value.is_number(),
        InputType::Boolean => value.is_boolean(),
        InputType::List => value.is_array(),
        InputType::Object => value.is_object(),
    };
    if ok {
        Ok(())
    } else {
        let found = match value {
            V::Null => "null",
            V::Bool(_) => "a boolean",
            V::Number(_) => "a number",
            V::String(_) => "a string",
            V::Array(_) => "a list",
            V::Object(_) => "an object",
        };
        Err(format!("{value} is {found}, not {}", ty.name()))
    }
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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
