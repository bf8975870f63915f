//! LB028: a value from outside the workflow deciding where a request goes
//! or which option a program receives.
//!
//! Outside means the trigger's payload (`alert.*`, `event.*`) or an input
//! declared without `enum` or `pattern` (a webhook trigger can fill it from
//! the payload; anyone who may start a run can type it). Such a value is
//! fine in a URL's path or query, or after literal text in an argument; it
//! is not in the scheme, host or port of an `http` step's `url` (the
//! request goes wherever the payload says), nor at the start of a `shell`
//! `command` element (`-o/etc/passwd` is an option, not a file name).

use handlebars::template::{BlockParam, HelperTemplate, Parameter, Template, TemplateElement};
use handlebars::{Path, PathSeg};
use indexmap::IndexMap;

use crate::model::{InputSpec, InputType};

/// A variable read by a template, and why its value is not trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UntrustedRead {
    /// As written in the template (`alert.labels.instance`).
    pub path: String,
    /// "the trigger's payload", "input `host`, declared without `enum` or `pattern`".
    pub origin: String,
    /// What would make it safe: constrain the input, or pass the payload
    /// through one.
    pub remedy: &'static str,
}

/// The untrusted variables that decide the scheme, host or port of a URL
/// template: those read by expressions before the URL's path starts.
pub fn in_url_destination(
    url: &Template,
    inputs: &IndexMap<String, InputSpec>,
) -> Vec<UntrustedRead> {
    untrusted(destination_reads(url), inputs)
}

/// The untrusted variables read by the expressions an argument starts with
/// (before any literal text).
pub fn at_argument_start(
    arg: &Template,
    inputs: &IndexMap<String, InputSpec>,
) -> Vec<UntrustedRead> {
    let mut reads = Vec::new();
    for element in &arg.elements {
        match element {
            TemplateElement::RawString(text) if text.is_empty() => {}
            TemplateElement::RawString(_) => break,
            TemplateElement::Comment(_) => {}
            other => element_reads(other, &mut reads),
        }
    }
    untrusted(reads, inputs)
}

/// Where the URL parser is, reading a URL template's literal text.
#[derive(PartialEq)]
enum At {
    /// No literal `://` yet: an expression here may supply the scheme and host.
    Scheme,
    /// After `://`: host and port until the first `/`, `?`, `#` (or `\`).
    Authority,
}

/// Variables read by the expressions before the path of a URL template.
fn destination_reads(url: &Template) -> Vec<String> {
    const PATH_START: [char; 4] = ['/', '?', '#', '\\'];
    let mut reads = Vec::new();
    let mut at = At::Scheme;
    let mut after_expression = false;
    for element in &url.elements {
        match element {
            TemplateElement::RawString(text) => {
                let rest = match (&at, text.find("://")) {
                    (At::Scheme, Some(i)) => {
                        at = At::Authority;
                        &text[i + 3..]
                    }
                    // `{{inputs.base}}/health`: the expression was scheme and host.
                    (At::Scheme, None) if after_expression => text.as_str(),
                    (At::Scheme, None) => continue,
                    (At::Authority, _) => text.as_str(),
                };
                if rest.contains(PATH_START) {
                    break;
                }
            }
            TemplateElement::Comment(_) => {}
            other => {
                element_reads(other, &mut reads);
                after_expression = true;
            }
        }
    }
    reads
}

fn untrusted(reads: Vec<String>, inputs: &IndexMap<String, InputSpec>) -> Vec<UntrustedRead> {
    let mut found: Vec<UntrustedRead> = Vec::new();
    for path in reads {
        let mut segs = path.split(['.', '/']).filter(|s| !s.is_empty());
        let (origin, remedy) = match (segs.next(), segs.next()) {
            (Some("alert" | "event"), _) => (
                "the trigger's payload".to_owned(),
                "set an input from it in the trigger and declare that input with an `enum` or a `pattern`",
            ),
            (Some("inputs"), Some(name)) => match inputs.get(name) {
                Some(spec)
                    if spec.allowed.is_none()
                        && spec.pattern.is_none()
                        && spec.ty != InputType::Boolean =>
                {
                    (
                        format!("input `{name}`, declared without `enum` or `pattern`"),
                        "declare the input with an `enum` or a `pattern`",
                    )
                }
                _ => continue,
            },
            _ => continue,
        };
        if !found.iter().any(|f| f.path == path) {
            found.push(UntrustedRead { path, origin, remedy });
        }
    }
    found
}

/// Every variable an expression or block reads, as written.
fn element_reads(element: &TemplateElement, out: &mut Vec<String>) {
    match element {
        TemplateElement::Expression(h) | TemplateElement::HtmlExpression(h) => helper_reads(h, out),
        TemplateElement::HelperBlock(h) => {
            helper_reads(h, out);
            for inner in [&h.template, &h.inverse].into_iter().flatten() {
                for e in &inner.elements {
                    element_reads(e, out);
                }
            }
        }
        _ => {}
    }
}

fn helper_reads(h: &HelperTemplate, out: &mut Vec<String>) {
    let has_args = !h.params.is_empty() || !h.hash.is_empty();
    match &h.name {
        // `{{name}}` without arguments reads a variable; with them, calls a helper.
        Parameter::Name(name) if !has_args && !h.block => out.push(name.clone()),
        Parameter::Name(_) => {}
        other => param_reads(other, out),
    }
    for p in h.params.iter().chain(h.hash.values()) {
        param_reads(p, out);
    }
    if let Some(BlockParam::Single(p)) = &h.block_param {
        param_reads(p, out);
    }
}

fn param_reads(p: &Parameter, out: &mut Vec<String>) {
    match p {
        Parameter::Path(Path::Relative((segs, raw)))
            if segs.iter().all(|s| matches!(s, PathSeg::Named(_))) =>
        {
            out.push(raw.clone())
        }
        Parameter::Name(name) => out.push(name.clone()),
        Parameter::Subexpression(sub) => {
            if let TemplateElement::Expression(h) = sub.element.as_ref() {
                helper_reads(h, out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> IndexMap<String, InputSpec> {
        let yaml = "free: { type: string }\nsite: { type: string, enum: [dc1, dc2] }\nhost: { type: string, pattern: '^[a-z0-9-]+$' }\nport: { type: integer }\nflag: { type: boolean }\n";
        serde_saphyr::from_str(yaml).unwrap()
    }

    fn url_reads(text: &str) -> Vec<String> {
        let t = Template::compile(text).unwrap();
        in_url_destination(&t, &inputs()).into_iter().map(|r| r.path).collect()
    }

    fn arg_reads(text: &str) -> Vec<String> {
        let t = Template::compile(text).unwrap();
        at_argument_start(&t, &inputs()).into_iter().map(|r| r.path).collect()
    }

    #[test]
    fn untrusted_values_in_scheme_host_or_port_are_found() {
        assert_eq!(
            url_reads("http://{{alert.labels.instance}}/metrics"),
            ["alert.labels.instance"]
        );
        assert_eq!(url_reads("{{inputs.free}}/health"), ["inputs.free"]);
        assert_eq!(url_reads("http://estate:{{inputs.port}}/x"), ["inputs.port"]);
        assert_eq!(url_reads("{{event.scheme}}://estate/x"), ["event.scheme"]);
        // Right after the port, a value can still turn the host into userinfo.
        assert_eq!(url_reads("http://estate:9100{{inputs.free}}"), ["inputs.free"]);
        assert_eq!(url_reads("http://{{default alert.host 'x'}}/"), ["alert.host"]);
        assert_eq!(url_reads("http://{{#if alert.x}}a{{else}}b{{/if}}.corp/"), ["alert.x"]);
    }

    #[test]
    fn paths_queries_and_constrained_inputs_are_fine() {
        assert!(url_reads("http://127.0.0.1:9100/sites/{{alert.labels.site}}/health").is_empty());
        assert!(url_reads("https://api.example.com?q={{inputs.free}}").is_empty());
        assert!(url_reads("http://{{inputs.site}}.corp:{{inputs.host}}/").is_empty());
        assert!(url_reads("http://{{steps.find.outputs.json.host}}/").is_empty());
        assert!(url_reads("http://{{secrets.HOST}}/").is_empty());
    }

    #[test]
    fn only_values_an_argument_starts_with_count() {
        assert_eq!(arg_reads("{{alert.labels.target}}"), ["alert.labels.target"]);
        assert_eq!(arg_reads("{{inputs.free}}.txt"), ["inputs.free"]);
        assert!(arg_reads("--target={{alert.labels.target}}").is_empty());
        assert!(arg_reads("{{inputs.site}}").is_empty());
        assert!(arg_reads("{{inputs.flag}}").is_empty());
    }
}
