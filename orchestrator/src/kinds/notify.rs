//! `notify`: send one message to channels, through the durable outbox.

use lifeboat_steps::ConfigProblem;
use schemars::JsonSchema;
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub channels: Vec<String>,
    /// A template name; or give `subject` and `body`.
    pub template: Option<String>,
    pub subject: Option<String>,
    pub body: Option<String>,
    /// Fail the step if delivery fails (default: a failing channel never fails a run).
    #[serde(default)]
    pub required: bool,
}

impl Config {
    pub fn compile(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        if self.channels.is_empty() {
            problems.push(ConfigProblem::new(&["channels"], "name at least one channel"));
        }
        if self.template.is_some() && (self.subject.is_some() || self.body.is_some()) {
            problems.push(ConfigProblem::new(
                &["template"],
                "use either `template` or `subject`/`body`, not both",
            ));
        }
        if self.template.is_none() && self.body.is_none() {
            problems.push(ConfigProblem::new(&[], "a notify step needs `template` or `body`"));
        }
        problems
    }
}
