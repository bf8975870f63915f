//! Side-effecting action kinds (`shell`, `http`, `sql`, `set`, `assert`).
//!
//! Each kind lives in its own module with its `Config` (unknown fields
//! rejected) and a pure `compile()` that checks what the type system cannot,
//! without IO. This crate knows nothing of the store or of notifications.

pub mod assert;
pub mod http;
pub mod set;
pub mod shell;
pub mod sql;

use serde::Deserializer;

/// A problem found in a step's `with` block by a kind's `compile()`.
///
/// `path` is the field path inside `with` (e.g. `["command"]`), so the caller
/// can point at the exact line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub path: Vec<String>,
    pub message: String,
    pub help: Option<String>,
}

impl ConfigProblem {
    pub fn new(path: &[&str], message: impl Into<String>) -> Self {
        Self {
            path: path.iter().map(|s| s.to_string()).collect(),
            message: message.into(),
            help: None,
        }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

/// The closed family of action kinds, as named by `uses:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActionKind {
    Shell,
    Http,
    Sql,
    Set,
    Assert,
}

impl ActionKind {
    pub const ALL: [ActionKind; 5] =
        [ActionKind::Shell, ActionKind::Http, ActionKind::Sql, ActionKind::Set, ActionKind::Assert];

    pub fn name(self) -> &'static str {
        match self {
            ActionKind::Shell => "shell",
            ActionKind::Http => "http",
            ActionKind::Sql => "sql",
            ActionKind::Set => "set",
            ActionKind::Assert => "assert",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Top-level `with` keys whose strings are *not* handlebars templates.
    /// `shell.script` is passed to bash verbatim: values reach it through `env`.
    pub fn untemplated_fields(self) -> &'static [&'static str] {
        match self {
            ActionKind::Shell => &["script"],
            _ => &[],
        }
    }

    /// The JSON Schema of this kind's `with` block.
    pub fn schema(self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        match self {
            ActionKind::Shell => generator.subschema_for::<shell::Config>(),
            ActionKind::Http => generator.subschema_for::<http::Config>(),
            ActionKind::Sql => generator.subschema_for::<sql::Config>(),
            ActionKind::Set => generator.subschema_for::<set::Config>(),
            ActionKind::Assert => generator.subschema_for::<assert::Config>(),
        }
    }
}

/// A parsed `with` block of an action step.
#[derive(Debug, Clone, PartialEq)]
pub enum ActionConfig {
    Shell(shell::Config),
    Http(http::Config),
    Sql(sql::Config),
    Set(set::Config),
    Assert(assert::Config),
}

impl ActionConfig {
    /// Deserializes the `with` block of a step whose `uses` is `kind`.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        kind: ActionKind,
        deserializer: D,
    ) -> Result<Self, D::Error> {
        use serde::Deserialize;
        Ok(match kind {
            ActionKind::Shell => ActionConfig::Shell(shell::Config::deserialize(deserializer)?),
            ActionKind::Http => ActionConfig::Http(http::Config::deserialize(deserializer)?),
            ActionKind::Sql => ActionConfig::Sql(sql::Config::deserialize(deserializer)?),
            ActionKind::Set => ActionConfig::Set(set::Config::deserialize(deserializer)?),
            ActionKind::Assert => ActionConfig::Assert(assert::Config::deserialize(deserializer)?),
        })
    }

    pub fn kind(&self) -> ActionKind {
        match self {
            ActionConfig::Shell(_) => ActionKind::Shell,
            ActionConfig::Http(_) => ActionKind::Http,
            ActionConfig::Sql(_) => ActionKind::Sql,
            ActionConfig::Set(_) => ActionKind::Set,
            ActionConfig::Assert(_) => ActionKind::Assert,
        }
    }

    /// Pure checks beyond the types: no IO, no await.
    pub fn compile(&self) -> Vec<ConfigProblem> {
        match self {
            ActionConfig::Shell(c) => c.compile(),
            ActionConfig::Http(c) => c.compile(),
            ActionConfig::Sql(c) => c.compile(),
            ActionConfig::Set(c) => c.compile(),
            ActionConfig::Assert(c) => c.compile(),
        }
    }
}

/// True when `s` contains a handlebars expression, i.e. its value is only
/// known when the step starts.
pub fn is_templated(s: &str) -> bool {
    s.contains("{{")
}
