//! The executor: `engine` (worker loop, leases, heartbeat), `driver` (one
//! run's state machine), `render` (templates), `backoff`, `inputs`, and the
//! engine-native step kinds (`wait`, `approval`, `escalate`, `notify`,
//! `workflow`), which suspend the run on a durable condition instead of
//! sleeping.

pub mod approval;
pub mod backoff;
pub mod dispatcher;
pub mod driver;
pub mod engine;
mod error;
pub mod escalate;
pub mod inputs;
pub mod links;
pub mod notifier;
pub mod notify;
pub mod people;
pub mod render;
pub mod runtime;
pub mod wait;
pub mod workflow;

pub use error::ExecError;

use lifeboat_steps::{ActionConfig, ActionKind, ConfigProblem};
use serde::Deserializer;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NativeKind {
    Wait,
    Approval,
    Escalate,
    Notify,
    Workflow,
}

impl NativeKind {
    pub const ALL: [NativeKind; 5] = [
        NativeKind::Wait,
        NativeKind::Approval,
        NativeKind::Escalate,
        NativeKind::Notify,
        NativeKind::Workflow,
    ];

    pub fn name(self) -> &'static str {
        match self {
            NativeKind::Wait => "wait",
            NativeKind::Approval => "approval",
            NativeKind::Escalate => "escalate",
            NativeKind::Notify => "notify",
            NativeKind::Workflow => "workflow",
        }
    }
}

/// Every kind a step can `use`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StepKind {
    Action(ActionKind),
    Native(NativeKind),
}

impl StepKind {
    pub fn all() -> impl Iterator<Item = StepKind> {
        ActionKind::ALL
            .into_iter()
            .map(StepKind::Action)
            .chain(NativeKind::ALL.into_iter().map(StepKind::Native))
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::all().find(|k| k.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            StepKind::Action(k) => k.name(),
            StepKind::Native(k) => k.name(),
        }
    }

    pub fn untemplated_fields(self) -> &'static [&'static str] {
        match self {
            StepKind::Action(k) => k.untemplated_fields(),
            StepKind::Native(_) => &[],
        }
    }

    /// Steps that change the world, for `plan`'s rollback audit.
    pub fn mutates(self) -> bool {
        matches!(
            self,
            StepKind::Action(ActionKind::Shell | ActionKind::Http | ActionKind::Sql)
                | StepKind::Native(NativeKind::Workflow)
        )
    }

    pub fn schema(self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        match self {
            StepKind::Action(k) => k.schema(generator),
            StepKind::Native(NativeKind::Wait) => generator.subschema_for::<wait::Config>(),
            StepKind::Native(NativeKind::Approval) => generator.subschema_for::<approval::Config>(),
            StepKind::Native(NativeKind::Escalate) => generator.subschema_for::<escalate::Config>(),
            StepKind::Native(NativeKind::Notify) => generator.subschema_for::<notify::Config>(),
            StepKind::Native(NativeKind::Workflow) => generator.subschema_for::<workflow::Config>(),
        }
    }
}

/// A step's parsed `with` block.
#[derive(Debug, Clone, PartialEq)]
pub enum KindConfig {
    Action(ActionConfig),
    Wait(wait::Config),
    Approval(approval::Config),
    Escalate(escalate::Config),
    Notify(notify::Config),
    Workflow(workflow::Config),
}

impl KindConfig {
    pub fn deserialize<'de, D: Deserializer<'de>>(
        kind: StepKind,
        deserializer: D,
    ) -> Result<Self, D::Error> {
        use serde::Deserialize;
        Ok(match kind {
            StepKind::Action(k) => KindConfig::Action(ActionConfig::deserialize(k, deserializer)?),
            StepKind::Native(NativeKind::Wait) => {
                KindConfig::Wait(wait::Config::deserialize(deserializer)?)
            }
            StepKind::Native(NativeKind::Approval) => {
                KindConfig::Approval(approval::Config::deserialize(deserializer)?)
            }
            StepKind::Native(NativeKind::Escalate) => {
                KindConfig::Escalate(escalate::Config::deserialize(deserializer)?)
            }
            StepKind::Native(NativeKind::Notify) => {
                KindConfig::Notify(notify::Config::deserialize(deserializer)?)
            }
            StepKind::Native(NativeKind::Workflow) => {
                KindConfig::Workflow(workflow::Config::deserialize(deserializer)?)
            }
        })
    }

    /// Pure checks beyond the types.
    pub fn compile(&self) -> Vec<ConfigProblem> {
        match self {
            KindConfig::Action(c) => c.compile(),
            KindConfig::Wait(c) => c.compile(),
            KindConfig::Approval(c) => c.compile(),
            KindConfig::Escalate(c) => c.compile(),
            KindConfig::Notify(c) => c.compile(),
            KindConfig::Workflow(_) => Vec::new(),
        }
    }

    /// Channel names this step sends to, with their field paths, so the
    /// compiler can check them against the configuration.
    pub fn channel_refs(&self) -> Vec<(Vec<String>, &str)> {
        match self {
            KindConfig::Notify(c) => c
                .channels
                .iter()
                .enumerate()
                .map(|(i, ch)| (vec!["channels".into(), i.to_string()], ch.as_str()))
                .collect(),
            KindConfig::Escalate(c) => c.channel_refs(),
            KindConfig::Approval(c) => c
                .escalate
                .as_ref()
                .map(|e| {
                    e.channel_refs()
                        .into_iter()
                        .map(|(mut p, ch)| {
                            p.insert(0, "escalate".into());
                            (p, ch)
                        })
                        .collect()
                })
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    }
}
