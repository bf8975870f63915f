//! `assert`: fail the step unless `that` renders truthy.

use schemars::JsonSchema;
use serde::Deserialize;

use crate::{AttemptContext, ConfigProblem, Outcome, Step};

/// Fails with `message` unless `that` renders truthy (not empty, `false` or `0`).
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Condition template.
    pub that: String,
    /// Failure message (template).
    pub message: Option<String>,
}

impl Config {
    pub fn compile(&self) -> Vec<ConfigProblem> {
        if self.that.trim().is_empty() {
            vec![ConfigProblem::new(&["that"], "`that` is empty: it would always fail")]
        } else {
            Vec::new()
        }
    }
}

/// The truthiness of a rendered template, as `when` and `assert` use it:
/// false when empty, `false` (any case) or `0`, ignoring surrounding
/// whitespace; true otherwise.
pub fn is_truthy(rendered: &str) -> bool {
    let s = rendered.trim();
    !(s.is_empty() || s == "0" || s.eq_ignore_ascii_case("false"))
}

impl Step for Config {
    async fn run(&self, _ctx: &AttemptContext) -> Outcome {
        if is_truthy(&self.that) {
            return Outcome::succeeded(crate::empty_outputs());
        }
        let error = match self.message.as_deref().map(str::trim) {
            Some(message) if !message.is_empty() => message.to_owned(),
            _ => format!("assertion failed: `{}`", self.that),
        };
        Outcome::fatal(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    async fn run(that: &str, message: Option<&str>) -> Outcome {
        let c = Config { that: that.into(), message: message.map(Into::into) };
        c.run(&AttemptContext::new("r", "s", 1)).await
    }

    #[test]
    fn falsy_values_are_empty_false_and_zero() {
        for s in ["", "  ", "false", " FALSE\n", "False", "0", " 0 "] {
            assert!(!is_truthy(s), "{s:?}");
        }
        for s in ["true", "1", "yes", "00", "no", "null", "0.0"] {
            assert!(is_truthy(s), "{s:?}");
        }
    }

    #[tokio::test]
    async fn truthy_succeeds_with_empty_outputs() {
        assert_eq!(run("true", None).await, Outcome::succeeded(json!({})));
    }

    #[tokio::test]
    async fn falsy_fails_with_the_message_and_is_not_retryable() {
        assert_eq!(
            run("false", Some("replica lag too high")).await,
            Outcome::fatal("replica lag too high")
        );
    }

    #[tokio::test]
    async fn falsy_without_message_names_the_condition() {
        assert_eq!(run(" 0 ", None).await, Outcome::fatal("assertion failed: ` 0 `"));
    }
}
