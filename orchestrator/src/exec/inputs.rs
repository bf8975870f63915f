//! Run inputs: `-i key=value` text or JSON, checked against the workflow's
//! declarations (type, enum, pattern, required) before anything is stored.

use indexmap::IndexMap;
use serde_json::{Map, Value};

use crate::compile::pass::check_value;
use crate::model::{InputSpec, InputType};
use crate::suggest;

/// Parses `key=value` pairs as typed by `specs`.
pub fn parse_pairs(
    pairs: &[String],
    specs: &IndexMap<String, InputSpec>,
) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    for pair in pairs {
        let Some((key, text)) = pair.split_once('=') else {
            return Err(format!("input `{pair}` is not key=value"));
        };
        let spec = specs.get(key).ok_or_else(|| unknown(key, specs))?;
        out.insert(key.to_string(), parse_text(key, text, spec.ty)?);
    }
    Ok(out)
}

fn unknown(key: &str, specs: &IndexMap<String, InputSpec>) -> String {
    let names: Vec<&str> = specs.keys().map(String::as_str).collect();
    let hint = suggest::did_you_mean(key, names.iter().copied()).unwrap_or_else(|| {
        if names.is_empty() {
            "it declares no inputs".into()
        } else {
            format!("inputs: {}", names.join(", "))
        }
    });
    format!("input `{key}` is not declared by the workflow ({hint})")
}

fn parse_text(key: &str, text: &str, ty: InputType) -> Result<Value, String> {
    let bad = |what: &str| format!("input `{key}`: `{text}` is not {what}");
    Ok(match ty {
        InputType::String => Value::String(text.to_string()),
        InputType::Integer => {
            Value::from(text.trim().parse::<i64>().map_err(|_| bad("an integer"))?)
        }
        InputType::Number => {
            let n: f64 = text.trim().parse().map_err(|_| bad("a number"))?;
            serde_json::Number::from_f64(n)
                .map(Value::Number)
                .ok_or_else(|| bad("a finite number"))?
        }
        InputType::Boolean => match text.trim() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => return Err(bad("`true` or `false`")),
        },
        InputType::List | InputType::Object => {
            let v: Value = serde_json::from_str(text).map_err(|_| bad("JSON"))?;
            let ok = if ty == InputType::List { v.is_array() } else { v.is_object() };
            if !ok {
                return Err(bad(if ty == InputType::List {
                    "a JSON list"
                } else {
                    "a JSON object"
                }));
            }
            v
        }
    })
}

/// One input the workflow refuses: its name (empty when the problem is
/// not one input's) and the sentence that says why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputProblem {
    pub input: String,
    pub message: String,
}

/// Every input the workflow refuses, so a form can put each message at its
/// field and a command line can print them all.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InputProblems(pub Vec<InputProblem>);

impl InputProblems {
    /// A problem not tied to one input (a malformed `-i` pair, say).
    pub fn unnamed(message: String) -> Self {
        InputProblems(vec![InputProblem { input: String::new(), message }])
    }

    /// The messages joined by `separator`.
    pub fn join(&self, separator: &str) -> String {
        self.0.iter().map(|p| p.message.as_str()).collect::<Vec<_>>().join(separator)
    }

    fn push(&mut self, input: &str, message: String) {
        self.0.push(InputProblem { input: input.to_string(), message });
    }
}

/// Fills defaults and checks every value; the result is what the run stores.
pub fn resolve(
    given: Map<String, Value>,
    specs: &IndexMap<String, InputSpec>,
) -> Result<Value, InputProblems> {
    let mut errors = InputProblems::default();
    for key in given.keys() {
        if !specs.contains_key(key) {
            errors.push(key, unknown(key, specs));
        }
    }
    let mut out = Map::new();
    for (name, spec) in specs {
        match given.get(name).cloned().or_else(|| spec.default.as_ref().map(|d| d.value.clone())) {
            Some(value) => {
                if let Err(why) = check_value(spec, &value) {
                    errors.push(name, format!("input `{name}`: {why}"));
                }
                out.insert(name.clone(), value);
            }
            None if spec.required => {
                errors.push(name, format!("input `{name}` is required (-i {name}=...)"))
            }
            None => {}
        }
    }
    if errors.0.is_empty() { Ok(Value::Object(out)) } else { Err(errors) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs() -> IndexMap<String, InputSpec> {
        let wf = crate::compile::compile(
            "t.yaml",
            "name: t\ninputs:\n  site: { type: string, required: true, pattern: \"^dc[0-9]+$\" }\n  n: { type: integer, default: 3 }\n  sev: { enum: [P0, P1], default: P1 }\nsteps:\n  a: { uses: set }\n",
            Default::default(),
        )
        .unwrap();
        wf.definition.inputs
    }

    #[test]
    fn typed_values_defaults_and_checks() {
        let s = specs();
        let given = parse_pairs(&["site=dc01".into(), "n=7".into()], &s).unwrap();
        let v = resolve(given, &s).unwrap();
        assert_eq!(v, serde_json::json!({"site": "dc01", "n": 7, "sev": "P1"}));
    }

    #[test]
    fn every_problem_is_reported() {
        let s = specs();
        assert!(parse_pairs(&["n=seven".into()], &s).unwrap_err().contains("not an integer"));
        assert!(parse_pairs(&["sit=dc01".into()], &s).unwrap_err().contains("did you mean `site`"));
        let errors = resolve(parse_pairs(&["sev=P7".into()], &s).unwrap(), &s).unwrap_err();
        assert_eq!(errors.0.len(), 2, "{errors:?}"); // site missing, sev not in enum
        let fields: Vec<&str> = errors.0.iter().map(|p| p.input.as_str()).collect();
        assert_eq!(fields, ["site", "sev"], "each problem names its input, for a form's field");
    }
}
