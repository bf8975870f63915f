//! Renders parsed templates against a run's context, strictly: a missing
//! variable is an error naming it, never an empty string.

use std::sync::LazyLock;

use handlebars::{
    Context, Handlebars, Helper, HelperResult, Output, RenderContext, Renderable, StringOutput,
    handlebars_helper, no_escape,
};
use serde_json::{Value, json};

use crate::compile::templates::Parsed;

/// The shared registry: strict mode, no HTML escaping, lifeboat's helpers.
/// Every helper named in `compile::templates::HELPERS` is registered here.
static REGISTRY: LazyLock<Handlebars<'static>> = LazyLock::new(|| {
    let mut r = Handlebars::new();
    r.set_strict_mode(true);
    r.register_escape_fn(no_escape);
    handlebars_helper!(upper: |s: str| s.to_uppercase());
    handlebars_helper!(lower: |s: str| s.to_lowercase());
    handlebars_helper!(trim: |s: str| s.trim().to_string());
    handlebars_helper!(contains: |hay: Json, needle: Json| match (hay, needle) {
        (Value::String(h), Value::String(n)) => h.contains(n.as_str()),
        (Value::Array(items), n) => items.contains(n),
        (Value::Object(m), Value::String(k)) => m.contains_key(k),
        _ => false,
    });
    handlebars_helper!(split: |s: str, sep: str| s.split(sep).map(|p| p.to_string()).collect::<Vec<_>>());
    handlebars_helper!(join: |items: array, sep: str| items.iter().map(text).collect::<Vec<_>>().join(sep));
    handlebars_helper!(int: |v: Json| match v {
        Value::Number(n) => n.as_f64().map(|f| f.trunc() as i64).unwrap_or(0),
        Value::String(s) => s.trim().parse::<f64>().map(|f| f.trunc() as i64).unwrap_or(0),
        Value::Bool(b) => i64::from(*b),
        _ => 0,
    });
    handlebars_helper!(add: |a: f64, b: f64| number(a + b));
    handlebars_helper!(sub: |a: f64, b: f64| number(a - b));
    handlebars_helper!(mul: |a: f64, b: f64| number(a * b));
    handlebars_helper!(now: | | chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    r.register_helper("upper", Box::new(upper));
    r.register_helper("lower", Box::new(lower));
    r.register_helper("trim", Box::new(trim));
    r.register_helper("contains", Box::new(contains));
    r.register_helper("split", Box::new(split));
    r.register_helper("join", Box::new(join));
    r.register_helper("int", Box::new(int));
    r.register_helper("add", Box::new(add));
    r.register_helper("sub", Box::new(sub));
    r.register_helper("mul", Box::new(mul));
    r.register_helper("now", Box::new(now));
    r.register_helper("json", Box::new(json_helper));
    r.register_helper("default", Box::new(default_helper));
    r.register_helper("concat", Box::new(concat_helper));
    r
});

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn number(f: f64) -> Value {
    if f.fract() == 0.0 && f.abs() < 9.0e15 { json!(f as i64) } else { json!(f) }
}

/// `{{json value}}`: the value as JSON text.
fn json_helper(
    h: &Helper,
    _: &Handlebars,
    _: &Context,
    _: &mut RenderContext,
    out: &mut dyn Output,
) -> HelperResult {
    let value = h.param(0).map(|p| p.value().clone()).unwrap_or(Value::Null);
    out.write(&value.to_string())?;
    Ok(())
}

/// `{{default value fallback}}`: the fallback when the value is missing, null or empty.
fn default_helper(
    h: &Helper,
    _: &Handlebars,
    _: &Context,
    _: &mut RenderContext,
    out: &mut dyn Output,
) -> HelperResult {
    let value = h.param(0).map(|p| p.value().clone()).unwrap_or(Value::Null);
    let empty = matches!(&value, Value::Null) || value.as_str().is_some_and(str::is_empty);
    let chosen =
        if empty { h.param(1).map(|p| p.value().clone()).unwrap_or(Value::Null) } else { value };
    out.write(&text(&chosen))?;
    Ok(())
}

/// `{{concat a b c}}`: the parameters' texts joined.
fn concat_helper(
    h: &Helper,
    _: &Handlebars,
    _: &Context,
    _: &mut RenderContext,
    out: &mut dyn Output,
) -> HelperResult {
    let joined: String = h.params().iter().map(|p| text(p.value())).collect();
    out.write(&joined)?;
    Ok(())
}

/// Renders one parsed template; the error names what was missing.
pub fn render(template: &Parsed, context: &Context) -> Result<String, String> {
    let registry: &Handlebars<'static> = &REGISTRY;
    let mut rc = RenderContext::new(None);
    let mut out = StringOutput::new();
    template.render(registry, context, &mut rc, &mut out).map_err(|e| {
        let reason = e.reason().to_string();
        let reason = reason
            .replace("Failed to access variable in strict mode", "missing value")
            .replace("Variable", "variable");
        // handlebars words the path as a Rust `Option`: `Some("a.b")`.
        match (reason.find("Some(\""), reason.rfind("\")")) {
            (Some(start), Some(end)) if start < end => {
                format!("{}`{}`{}", &reason[..start], &reason[start + 6..end], &reason[end + 2..])
            }
            _ => reason,
        }
    })?;
    out.into_string().map_err(|e| e.to_string())
}

/// Truthy as docs/workflow-format.md says: not empty, `false` or `0`.
pub fn truthy(rendered: &str) -> bool {
    lifeboat_steps::assert::is_truthy(rendered)
}

/// Renders every templated string of `raw` (templates keyed by their dotted
/// path); a string that is one whole `{{expr}}` rendering to a JSON scalar
/// becomes that scalar, so `expect_status: ["{{inputs.code}}"]` gives a number.
pub fn render_value(
    raw: &Value,
    templates: &indexmap::IndexMap<String, Parsed>,
    prefix: &str,
    context: &Context,
) -> Result<Value, String> {
    fn walk(
        v: &Value,
        path: &mut Vec<String>,
        templates: &indexmap::IndexMap<String, Parsed>,
        prefix: &str,
        context: &Context,
    ) -> Result<Value, String> {
        Ok(match v {
            Value::String(s) => {
                let key = if prefix.is_empty() {
                    path.join(".")
                } else {
                    format!("{prefix}.{}", path.join("."))
                };
                match templates.get(&key) {
                    Some(t) => {
                        let _ = s;
                        Value::String(render(t, context).map_err(|e| format!("`{key}`: {e}"))?)
                    }
                    None => v.clone(),
                }
            }
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    path.push(i.to_string());
                    out.push(walk(item, path, templates, prefix, context)?);
                    path.pop();
                }
                Value::Array(out)
            }
            Value::Object(map) => {
                let mut out = serde_json::Map::with_capacity(map.len());
                for (k, item) in map {
                    path.push(k.clone());
                    out.insert(k.clone(), walk(item, path, templates, prefix, context)?);
                    path.pop();
                }
                Value::Object(out)
            }
            other => other.clone(),
        })
    }
    walk(raw, &mut Vec::new(), templates, prefix, context)
}

/// Types a rendered `with` block into its kind's config. Rendered values
/// are text; like the YAML they came from, text is read as the number or
/// boolean a field needs (`expect_status: ["{{inputs.code}}"]`).
pub fn typed_config(
    kind: crate::kinds::StepKind,
    rendered: &Value,
) -> Result<crate::kinds::KindConfig, String> {
    let node = crate::compile::yaml::Node::from_json(rendered);
    crate::kinds::KindConfig::deserialize(
        kind,
        crate::compile::de::NodeDeserializer::rendered(&node),
    )
    .map_err(|e| {
        let at =
            if e.path.is_empty() { String::new() } else { format!("`{}`: ", e.path.join(".")) };
        format!("`with` after rendering: {at}{}", e.message)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::templates::parse;

    fn r(template: &str, ctx: Value) -> Result<String, String> {
        render(&parse(template).unwrap(), &Context::wraps(ctx).unwrap())
    }

    #[test]
    fn renders_paths_helpers_and_comparisons() {
        let ctx = json!({"inputs": {"site": "dc01", "n": 3}, "steps": {"a": {"status": "failed"}}});
        assert_eq!(r("{{inputs.site}}", ctx.clone()).unwrap(), "dc01");
        assert_eq!(r("{{upper inputs.site}}", ctx.clone()).unwrap(), "DC01");
        assert_eq!(r("{{ne steps.a.status 'succeeded'}}", ctx.clone()).unwrap(), "true");
        assert_eq!(r("{{add inputs.n 2}}", ctx.clone()).unwrap(), "5");
        assert_eq!(r("{{json inputs}}", ctx.clone()).unwrap(), r#"{"site":"dc01","n":3}"#);
        assert_eq!(
            r("{{steps.a.outputs.role}}", ctx.clone()).unwrap_err(),
            "missing value `steps.a.outputs.role`"
        );
        assert_eq!(r("{{default inputs.none 'x'}}", ctx).unwrap(), "x");
    }

    #[test]
    fn a_missing_variable_is_an_error_not_an_empty_string() {
        let err = r("{{inputs.nope}}", json!({"inputs": {}})).unwrap_err();
        assert!(err.contains("inputs.nope"), "{err}");
    }

    #[test]
    fn rendered_text_is_read_as_the_type_a_field_needs() {
        use crate::kinds::{KindConfig, StepKind};
        use lifeboat_steps::{ActionConfig, ActionKind};
        let http = typed_config(
            StepKind::Action(ActionKind::Http),
            &json!({"url": "http://x", "expect_status": ["204"]}),
        )
        .unwrap();
        let KindConfig::Action(ActionConfig::Http(c)) = http else { panic!() };
        assert_eq!(c.expect_status, Some(vec![204]));
        let assert =
            typed_config(StepKind::Action(ActionKind::Assert), &json!({"that": "true"})).unwrap();
        let KindConfig::Action(ActionConfig::Assert(c)) = assert else { panic!() };
        assert_eq!(c.that, "true");
        let err = typed_config(
            StepKind::Action(ActionKind::Http),
            &json!({"url": "http://x", "expect_status": ["ok"]}),
        )
        .unwrap_err();
        assert!(err.contains("expect_status.0"), "{err}");
    }

    #[test]
    fn html_is_not_escaped() {
        assert_eq!(r("{{x}}", json!({"x": "<a & b>"})).unwrap(), "<a & b>");
    }
}
