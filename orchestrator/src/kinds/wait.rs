//! `wait`: a durable timer, for a `duration` or `until` a timestamp.

use lifeboat_steps::ConfigProblem;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::model::Duration;

/// Suspends the step; the timer survives restarts.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub duration: Option<Duration>,
    /// RFC 3339 timestamp (template).
    pub until: Option<String>,
}

impl Config {
    pub fn compile(&self) -> Vec<ConfigProblem> {
        match (&self.duration, &self.until) {
            (None, None) => {
                vec![ConfigProblem::new(&[], "a wait step needs `duration` or `until`")]
            }
            (Some(_), Some(_)) => {
                vec![ConfigProblem::new(&["until"], "`duration` and `until` are exclusive")]
            }
            (None, Some(until))
                if !lifeboat_steps::is_templated(until)
                    && chrono::DateTime::parse_from_rfc3339(until).is_err() =>
            {
                vec![ConfigProblem::new(
                    &["until"],
                    format!("`{until}` is not an RFC 3339 timestamp (e.g. 2026-01-31T02:00:00Z)"),
                )]
            }
            _ => Vec::new(),
        }
    }
}
