//! Every kind a step can `use`: the action kinds of `lifeboat-steps` and
//! the engine-native kinds (`wait`, `approval`, `escalate`, `notify`,
//! `workflow`), whose parameters live here, one module each. The compiler
//! types a step's `with` by its kind; the executor runs it. This module sits
//! below both, so neither imports the other for it.

pub mod approval;
pub mod escalate;
pub mod notify;
pub mod wait;
pub mod workflow;

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
            .iter()
            .copied()
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

    /// Steps that change the world, for `plan`'s rollback audit: a
    /// property of each action kind (its row in `lifeboat_steps`' table);
    /// of the native kinds, a child workflow.
    pub fn mutates(self) -> bool {
        match self {
            StepKind::Action(k) => k.mutates(),
            StepKind::Native(k) => k == NativeKind::Workflow,
        }
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
