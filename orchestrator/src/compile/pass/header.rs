//! The workflow-level part of the pass: declared inputs, triggers, notify
//! rules, outputs and the concurrency key; and the input value checks the
//! executor shares.

use super::*;

impl Pass<'_> {
    pub(super) fn check_inputs(&mut self, root: &Node, inputs: &IndexMap<String, InputSpec>) {
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
    pub(super) fn check_workflow_level(
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
