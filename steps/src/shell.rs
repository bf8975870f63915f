//! `shell`: run an argv `command` (no shell parser involved) or a `script`
//! with `bash -euo pipefail`. The compiler rejects templates inside
//! `script` (see `ActionKind::untemplated_fields`).

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::ConfigProblem;

/// Runs a program. Templated values never reach a shell parser: `command` is
/// an argv list, and `script` receives values only through `env`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Program and arguments, each a template; executed directly, without a shell.
    pub command: Option<Vec<String>>,
    /// Bash script run with `bash -euo pipefail`. Not templated: pass values through `env`.
    pub script: Option<String>,
    /// Extra environment variables (values are templates).
    #[serde(default)]
    pub env: IndexMap<String, String>,
    /// Working directory (template); defaults to the orchestrator's.
    pub workdir: Option<String>,
}

impl Config {
    pub fn compile(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        match (&self.command, &self.script) {
            (None, None) => problems.push(
                ConfigProblem::new(&[], "a shell step needs `command` or `script`")
                    .with_help("use `command: [prog, arg, ...]` to run a program directly"),
            ),
            (Some(_), Some(_)) => problems.push(ConfigProblem::new(
                &["script"],
                "`command` and `script` are exclusive; keep one",
            )),
            (Some(argv), None) if argv.is_empty() => problems
                .push(ConfigProblem::new(&["command"], "`command` must name a program to run")),
            _ => {}
        }
        for name in self.env.keys() {
            if name.is_empty() || name.contains('=') || name.contains('\0') {
                problems.push(ConfigProblem::new(
                    &["env", name],
                    format!("`{name}` is not a valid environment variable name"),
                ));
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Config {
        serde_saphyr::from_str(yaml).unwrap()
    }

    #[test]
    fn command_and_script_are_exclusive() {
        let c = parse("command: [echo]\nscript: echo\n");
        assert_eq!(c.compile()[0].path, vec!["script"]);
    }

    #[test]
    fn missing_program_is_reported() {
        assert_eq!(parse("env: {}\n").compile().len(), 1);
        assert_eq!(parse("command: []\n").compile()[0].path, vec!["command"]);
    }
}
