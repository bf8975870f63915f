//! Names a step refers to (connections, approvers, channels, workflows
//! from `lifeboat.toml`) and values an outside party decides (LB028).

use super::*;

impl Pass<'_> {
    /// LB028: the trigger's payload or a free-form input in the scheme,
    /// host or port of an `http` URL, or at the start of a `shell` argument.
    pub(super) fn check_untrusted(
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

    /// Channels, approvers, connections and templates named in parameters.
    pub(super) fn check_config_names(
        &mut self,
        config: &KindConfig,
        with_node: &Node,
        place: &str,
    ) {
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
        if let KindConfig::Action(action) = config
            && let Some(conn) = action.connection()
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

    pub(super) fn unknown_name(
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
}
