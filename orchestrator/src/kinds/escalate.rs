//! `escalate`: page tiers of channels until someone acknowledges.

use lifeboat_steps::ConfigProblem;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::model::Duration;

#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Paged in order; the next tier when the previous does not ack in time.
    pub tiers: Vec<Tier>,
    /// Status updates to the paged tiers until acknowledged.
    pub repeat_every: Option<Duration>,
    /// Notification template (default `incident`).
    pub template: Option<String>,
    /// Summary shown to responders (template).
    pub message: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    pub channels: Vec<String>,
    pub ack_within: Duration,
}

impl Config {
    pub fn compile(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        if self.tiers.is_empty() {
            problems.push(ConfigProblem::new(&["tiers"], "name at least one tier of channels"));
        }
        for (i, tier) in self.tiers.iter().enumerate() {
            if tier.channels.is_empty() {
                problems.push(ConfigProblem::new(
                    &["tiers", &i.to_string(), "channels"],
                    "a tier needs at least one channel",
                ));
            }
        }
        problems
    }

    pub fn channel_refs(&self) -> Vec<(Vec<String>, &str)> {
        let mut refs = Vec::new();
        for (t, tier) in self.tiers.iter().enumerate() {
            for (c, ch) in tier.channels.iter().enumerate() {
                refs.push((
                    vec!["tiers".into(), t.to_string(), "channels".into(), c.to_string()],
                    ch.as_str(),
                ));
            }
        }
        refs
    }
}
