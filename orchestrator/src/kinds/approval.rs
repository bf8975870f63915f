//! `approval`: a gate that waits for N distinct allowed people.

use lifeboat_steps::ConfigProblem;
use schemars::JsonSchema;
use serde::Deserialize;

use super::escalate;
use crate::model::Duration;

#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Users or groups from lifeboat.toml.
    pub approvers: Vec<String>,
    #[serde(default = "one")]
    pub min_approvals: u32,
    /// Whoever started the run cannot approve it.
    #[serde(default)]
    pub exclude_requester: bool,
    pub timeout: Option<Duration>,
    #[serde(default)]
    pub on_timeout: OnTimeout,
    /// Tiers walked when `on_timeout: escalate`.
    pub escalate: Option<escalate::Config>,
    /// Shown to approvers (template).
    pub message: Option<String>,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnTimeout {
    #[default]
    Fail,
    Approve,
    Escalate,
}

impl Config {
    pub fn compile(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        if self.approvers.is_empty() {
            problems
                .push(ConfigProblem::new(&["approvers"], "name at least one approver or group"));
        }
        if self.min_approvals == 0 {
            problems.push(ConfigProblem::new(
                &["min_approvals"],
                "`min_approvals: 0` would pass without anyone; remove the step instead",
            ));
        }
        if self.on_timeout != OnTimeout::Fail && self.timeout.is_none() {
            problems.push(ConfigProblem::new(&["on_timeout"], "`on_timeout` needs a `timeout`"));
        }
        if self.on_timeout == OnTimeout::Escalate && self.escalate.is_none() {
            problems.push(ConfigProblem::new(
                &["on_timeout"],
                "`on_timeout: escalate` needs an `escalate` block with tiers",
            ));
        }
        if let Some(e) = &self.escalate {
            problems.extend(e.compile().into_iter().map(|mut p| {
                p.path.insert(0, "escalate".into());
                p
            }));
        }
        problems
    }
}
