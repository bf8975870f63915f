//! Side-effecting action kinds (`shell`, `http`, `sql`, `postgres`, `dns`,
//! `haproxy`, `set`, `assert`).
//!
//! Each kind lives in its own module with its `Config` (unknown fields
//! rejected), a pure `compile()` that checks what the type system cannot,
//! without IO, and an `impl Step` that performs one attempt. This crate knows
//! nothing of the store or of notifications: the durable executor records
//! what an attempt returns, and renders every template before calling in.

pub mod assert;
pub mod dns;
mod failure;
pub mod haproxy;
pub mod http;
pub mod postgres;
mod process;
mod redact;
pub mod set;
pub mod shell;
pub mod sql;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserializer;
pub use tokio_util::sync::CancellationToken;

pub use process::{
    EXEC_SHIM_ENV, ExecShim, exec_shim, kill_orphaned_attempt, kill_process_group, shim,
};
pub use redact::{MIN_SECRET_BYTES, REDACTED, Redactor};

/// A problem found in a step's `with` block by a kind's `compile()`.
///
/// `path` is the field path inside `with` (e.g. `["command"]`), so the caller
/// can point at the exact line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub path: Vec<String>,
    pub message: String,
    pub help: Option<String>,
    /// The problem is the template itself (e.g. a template where none may
    /// be). Other problems on a templated value are moot: at compile time a
    /// placeholder stands in for it, and the rendered value is checked later.
    pub about_template: bool,
}

impl ConfigProblem {
    pub fn new(path: &[&str], message: impl Into<String>) -> Self {
        Self {
            path: path.iter().map(|s| s.to_string()).collect(),
            message: message.into(),
            help: None,
            about_template: false,
        }
    }

    pub fn about_template(mut self) -> Self {
        self.about_template = true;
        self
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

/// The two [`Step`] methods of a kind that connects through its
/// `connection` (a `[connections.X]` name) or `url` fields: written once,
/// expanded inside each such kind's `impl Step`.
macro_rules! connects_by_url {
    () => {
        fn connection(&self) -> Option<&str> {
            self.connection.as_deref()
        }

        fn url_slot(&mut self) -> Option<&mut Option<String>> {
            Some(&mut self.url)
        }
    };
}
pub(crate) use connects_by_url;

/// Declares the action kinds: one row per kind. From this table come
/// [`ActionKind`] (with `name`, `untemplated_fields`, `is_pure`, `mutates`,
/// `schema`) and [`ActionConfig`] (with `deserialize`, `kind`, `compile`,
/// `run`). A kind's module supplies its `Config` (`Deserialize`,
/// `JsonSchema`, an inherent pure `compile()`, and `impl Step`).
macro_rules! action_kinds {
    ($(
        $variant:ident => $module:ident::Config {
            name: $name:literal,
            pure: $pure:literal,
            mutates: $mutates:literal,
            untemplated: [$($untemplated:literal),*] $(,)?
        }
    ),* $(,)?) => {
        /// The closed family of action kinds, as named by `uses:`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ActionKind {
            $($variant,)*
        }

        impl ActionKind {
            pub const ALL: &'static [ActionKind] = &[$(ActionKind::$variant,)*];

            pub fn name(self) -> &'static str {
                match self {
                    $(ActionKind::$variant => $name,)*
                }
            }

            /// Top-level `with` keys whose strings are *not* handlebars templates.
            /// `shell.script` is passed to bash verbatim: values reach it through `env`.
            pub fn untemplated_fields(self) -> &'static [&'static str] {
                match self {
                    $(ActionKind::$variant => &[$($untemplated),*],)*
                }
            }

            /// No side effect outside the run: the executor may stage its
            /// start and end with the next commit instead of recording the
            /// attempt before it starts.
            pub fn is_pure(self) -> bool {
                match self {
                    $(ActionKind::$variant => $pure,)*
                }
            }

            /// Changes the world (for `plan`'s audit of unprotected mutations).
            pub fn mutates(self) -> bool {
                match self {
                    $(ActionKind::$variant => $mutates,)*
                }
            }

            /// The JSON Schema of this kind's `with` block.
            pub fn schema(self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
                match self {
                    $(ActionKind::$variant => generator.subschema_for::<$module::Config>(),)*
                }
            }
        }

        /// A parsed `with` block of an action step.
        #[derive(Debug, Clone, PartialEq)]
        pub enum ActionConfig {
            $($variant($module::Config),)*
        }

        impl ActionConfig {
            /// Deserializes the `with` block of a step whose `uses` is `kind`.
            pub fn deserialize<'de, D: Deserializer<'de>>(
                kind: ActionKind,
                deserializer: D,
            ) -> Result<Self, D::Error> {
                use serde::Deserialize;
                Ok(match kind {
                    $(ActionKind::$variant => {
                        ActionConfig::$variant($module::Config::deserialize(deserializer)?)
                    })*
                })
            }

            pub fn kind(&self) -> ActionKind {
                match self {
                    $(ActionConfig::$variant(_) => ActionKind::$variant,)*
                }
            }

            /// Pure checks beyond the types: no IO, no await.
            pub fn compile(&self) -> Vec<ConfigProblem> {
                match self {
                    $(ActionConfig::$variant(c) => c.compile(),)*
                }
            }

            /// This action undoes itself when its step has no `rollback:`
            /// (see [`Step::reversible`]).
            pub fn reversible(&self) -> bool {
                match self {
                    $(ActionConfig::$variant(c) => c.reversible(),)*
                }
            }

            /// The action that undoes an attempt of this (rendered) action
            /// that succeeded with `outputs` (see [`Step::inverse`]).
            pub fn inverse(&self, outputs: &serde_json::Value) -> Result<ActionConfig, String> {
                match self {
                    $(ActionConfig::$variant(c) => c.inverse(outputs),)*
                }
            }

            /// This action changes the world (for `plan`'s audit of
            /// unprotected mutations): the config's own answer (a `GET`
            /// does not), else its kind's row.
            pub fn mutates(&self) -> bool {
                match self {
                    $(ActionConfig::$variant(c) => c.mutates().unwrap_or($mutates),)*
                }
            }

            /// The `[connections.X]` name this step refers to, if any
            /// (checked by the compiler, resolved by the executor).
            pub fn connection(&self) -> Option<&str> {
                match self {
                    $(ActionConfig::$variant(c) => c.connection(),)*
                }
            }

            fn url_slot(&mut self) -> Option<&mut Option<String>> {
                match self {
                    $(ActionConfig::$variant(c) => c.url_slot(),)*
                }
            }

            /// One attempt, unredacted (see [`ActionConfig::run`]).
            async fn run_once(&self, ctx: &AttemptContext) -> Outcome {
                match self {
                    $(ActionConfig::$variant(c) => c.run(ctx).await,)*
                }
            }
        }
    };
}

// The action kinds. Adding one: a module with its `Config`, and a row here.
action_kinds! {
    Shell => shell::Config { name: "shell", pure: false, mutates: true, untemplated: ["script"] },
    Http => http::Config { name: "http", pure: false, mutates: true, untemplated: [] },
    Sql => sql::Config { name: "sql", pure: false, mutates: true, untemplated: [] },
    Postgres => postgres::Config { name: "postgres", pure: false, mutates: true, untemplated: [] },
    Dns => dns::Config { name: "dns", pure: false, mutates: true, untemplated: [] },
    Haproxy => haproxy::Config { name: "haproxy", pure: false, mutates: true, untemplated: [] },
    Set => set::Config { name: "set", pure: true, mutates: false, untemplated: [] },
    Assert => assert::Config { name: "assert", pure: true, mutates: false, untemplated: [] },
}

impl ActionKind {
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|k| k.name() == name)
    }

    /// Every action kind's name, comma-separated, for messages that list them.
    pub fn names() -> String {
        Self::ALL.iter().map(|k| k.name()).collect::<Vec<_>>().join(", ")
    }
}

impl ActionConfig {
    /// Resolves a named connection to its URL with `lookup` (the executor's
    /// `[connections]`), unless the step gives a `url` of its own.
    pub fn resolve_connection(&mut self, lookup: impl Fn(&str) -> Option<String>) {
        let Some(name) = self.connection().map(str::to_string) else { return };
        if let Some(url) = self.url_slot()
            && url.is_none()
        {
            *url = lookup(&name);
        }
    }

    /// Performs one attempt of this action and redacts `ctx.redactor`'s
    /// secrets from everything it returns (outputs and error).
    ///
    /// Every string of the config must already be rendered. The future is
    /// `Send`; dropping it mid-way kills a shell step's process group.
    pub async fn run(&self, ctx: &AttemptContext) -> Outcome {
        if ctx.cancel.is_cancelled() {
            return Interrupted::Cancelled.outcome(None, empty_outputs());
        }
        self.run_once(ctx).await.redacted(&ctx.redactor)
    }
}

/// Environment variable carrying [`AttemptContext::run_id`].
pub const ENV_RUN_ID: &str = "LIFEBOAT_RUN_ID";
/// Environment variable carrying [`AttemptContext::step_id`].
pub const ENV_STEP_ID: &str = "LIFEBOAT_STEP_ID";
/// Environment variable carrying [`AttemptContext::attempt`].
pub const ENV_ATTEMPT: &str = "LIFEBOAT_ATTEMPT";
/// Environment variable carrying [`AttemptContext::idempotency_key`].
pub const ENV_IDEMPOTENCY_KEY: &str = "LIFEBOAT_IDEMPOTENCY_KEY";

/// The variables every attempt gets, in the order `lifeboat_vars` returns them.
pub const LIFEBOAT_VARS: [&str; 4] = [ENV_RUN_ID, ENV_STEP_ID, ENV_ATTEMPT, ENV_IDEMPOTENCY_KEY];

/// Default bound on captured output (stdout, stderr, HTTP body, SQL rows): 1 MiB.
pub const DEFAULT_MAX_OUTPUT_BYTES: usize = 1024 * 1024;

/// Everything one attempt of an action needs besides its (rendered) config.
///
/// Built by the executor for each attempt. Every action passes `run_id`,
/// `step_id`, `attempt` and `idempotency_key` to its target (`LIFEBOAT_*`
/// environment variables for `shell`; `Idempotency-Key` and
/// `X-Lifeboat-Run-Id`/`-Step-Id`/`-Attempt` headers for `http`).
pub struct AttemptContext {
    pub run_id: String,
    pub step_id: String,
    /// 1-based attempt number.
    pub attempt: u32,
    /// Lets the target deduplicate: must be the *same* for every attempt of
    /// one step of one run (and one `for_each` item), so that a retry after a
    /// crash is recognised as a repeat. [`AttemptContext::new`] uses
    /// `<run_id>/<step_id>`.
    pub idempotency_key: String,
    /// Bound on the whole attempt; `None` means no bound.
    pub timeout: Option<Duration>,
    /// Cancelled when the run is cancelled or the worker shuts down: the
    /// attempt stops (a shell step's process group is killed) and returns
    /// `Failed { retryable: false, .. }` with an error starting "cancelled".
    pub cancel: CancellationToken,
    /// The secret values to replace with `***` in outputs and errors (and
    /// their encoded forms); built once per set of secrets and shared.
    pub redactor: Arc<Redactor>,
    /// Bound, in bytes, on each captured stream (stdout, stderr, HTTP body)
    /// and on the JSON of SQL rows.
    pub max_output_bytes: usize,
    /// Variables removed from the environment a shell step inherits from
    /// the worker (e.g. the names of `token_env`, `webhook_url_env`, `url_env`
    /// settings). Every inherited `LIFEBOAT_*` variable is removed anyway.
    pub env_remove: Vec<String>,
    /// The client of `http` steps, with the `[http]` destination policy it
    /// enforces (default: every destination but cloud metadata addresses).
    pub http: http::HttpClient,
    /// Called once a shell step's child has started, with its pid, which is
    /// also its process-group id. Record it durably: after a crash, pass it
    /// to [`kill_orphaned_attempt`] so no orphaned group keeps running.
    pub on_spawn: Option<Box<dyn Fn(u32) + Send + Sync>>,
}

impl AttemptContext {
    /// A context with no timeout, a fresh cancellation token, no secrets,
    /// 1 MiB output bounds and the idempotency key `<run_id>/<step_id>`.
    pub fn new(run_id: impl Into<String>, step_id: impl Into<String>, attempt: u32) -> Self {
        let run_id = run_id.into();
        let step_id = step_id.into();
        Self {
            idempotency_key: format!("{run_id}/{step_id}"),
            run_id,
            step_id,
            attempt,
            timeout: None,
            cancel: CancellationToken::new(),
            redactor: Arc::default(),
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
            env_remove: Vec::new(),
            http: http::HttpClient::default(),
            on_spawn: None,
        }
    }

    /// The `LIFEBOAT_*` variables of this attempt, in a fixed order.
    pub fn lifeboat_vars(&self) -> [(&'static str, String); 4] {
        [
            (ENV_RUN_ID, self.run_id.clone()),
            (ENV_STEP_ID, self.step_id.clone()),
            (ENV_ATTEMPT, self.attempt.to_string()),
            (ENV_IDEMPOTENCY_KEY, self.idempotency_key.clone()),
        ]
    }

    /// Runs `fut` bounded by `timeout` and `cancel`.
    pub(crate) async fn bounded<T>(&self, fut: impl Future<Output = T>) -> Result<T, Interrupted> {
        let deadline = async {
            match self.timeout {
                Some(t) => tokio::time::sleep(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            value = fut => Ok(value),
            () = deadline => Err(Interrupted::TimedOut(self.timeout.unwrap_or_default())),
            () = self.cancel.cancelled() => Err(Interrupted::Cancelled),
        }
    }
}

impl fmt::Debug for AttemptContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AttemptContext")
            .field("run_id", &self.run_id)
            .field("step_id", &self.step_id)
            .field("attempt", &self.attempt)
            .field("idempotency_key", &self.idempotency_key)
            .field("timeout", &self.timeout)
            .field("cancelled", &self.cancel.is_cancelled())
            .field("redactor", &self.redactor)
            .field("max_output_bytes", &self.max_output_bytes)
            .field("env_remove", &self.env_remove)
            .field("http", &self.http)
            .field("on_spawn", &self.on_spawn.as_ref().map(|_| "Fn(u32)"))
            .finish()
    }
}

/// Why an attempt stopped before its action finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Interrupted {
    TimedOut(Duration),
    Cancelled,
}

impl Interrupted {
    /// The failure for an interrupted attempt; `what` says what was cleaned
    /// up, e.g. "process group killed".
    pub(crate) fn outcome(self, what: Option<&str>, outputs: serde_json::Value) -> Outcome {
        let suffix = what.map(|w| format!("; {w}")).unwrap_or_default();
        match self {
            Interrupted::TimedOut(t) => Outcome::Failed {
                error: format!("timed out after {}{suffix}", format_duration(t)),
                retryable: true,
                outputs,
            },
            Interrupted::Cancelled => {
                Outcome::Failed { error: format!("cancelled{suffix}"), retryable: false, outputs }
            }
        }
    }
}

/// What one attempt of an action produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The action did what it was asked; `outputs` is a JSON object.
    Succeeded { outputs: serde_json::Value },
    /// The action failed. `retryable` says whether another attempt may
    /// succeed (a 503, a timeout, a dropped connection) or not (a 404, a SQL
    /// syntax error, a missing program). `outputs` holds what was observed
    /// (exit code, captured output, response), for the operator.
    Failed { error: String, retryable: bool, outputs: serde_json::Value },
}

impl Outcome {
    pub fn succeeded(outputs: serde_json::Value) -> Self {
        Outcome::Succeeded { outputs }
    }

    /// A failure that another attempt cannot fix, with no outputs.
    pub fn fatal(error: impl Into<String>) -> Self {
        Outcome::Failed { error: error.into(), retryable: false, outputs: empty_outputs() }
    }

    /// A failure that another attempt may fix, with no outputs.
    pub fn retryable(error: impl Into<String>) -> Self {
        Outcome::Failed { error: error.into(), retryable: true, outputs: empty_outputs() }
    }

    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Succeeded { .. })
    }

    pub fn outputs(&self) -> &serde_json::Value {
        match self {
            Outcome::Succeeded { outputs } | Outcome::Failed { outputs, .. } => outputs,
        }
    }

    /// This outcome with every secret value (in any form `redactor` knows)
    /// replaced by `***`.
    pub fn redacted(mut self, redactor: &Redactor) -> Self {
        match &mut self {
            Outcome::Succeeded { outputs } => redactor.redact(outputs),
            Outcome::Failed { error, outputs, .. } => {
                if let std::borrow::Cow::Owned(hidden) = redactor.redact_str(error) {
                    *error = hidden;
                }
                redactor.redact(outputs);
            }
        }
        self
    }
}

/// One attempt of an action kind. Implemented by each kind's `Config`;
/// [`ActionConfig::run`] dispatches to it and redacts the result.
pub trait Step {
    /// Performs one attempt. Never panics on input: every problem becomes
    /// an [`Outcome::Failed`]. Honours `ctx.timeout` and `ctx.cancel`.
    fn run(&self, ctx: &AttemptContext) -> impl Future<Output = Outcome> + Send;

    /// True when this action has a natural inverse that the compiler makes
    /// its step's rollback unless the step writes one (`fence` → `unfence`,
    /// DNS `set` → the previous rrset, HAProxy `set_weight` → the previous
    /// weights). Decided from the config alone, at compile time.
    fn reversible(&self) -> bool {
        false
    }

    /// Whether this very config changes the world, when that depends on
    /// more than its kind (`http` `GET`, `postgres` `status`); `None`
    /// defers to the kind's row in the table.
    fn mutates(&self) -> Option<bool> {
        None
    }

    /// The `[connections.X]` name of a kind that connects somewhere.
    fn connection(&self) -> Option<&str> {
        None
    }

    /// Where the executor writes the URL of [`Step::connection`] (a kind
    /// with a connection also takes a `url` of its own).
    fn url_slot(&mut self) -> Option<&mut Option<String>> {
        None
    }

    /// The action that undoes a successful attempt of this action, built
    /// from the rendered config and the attempt's `outputs` (the previous
    /// values it recorded). When there is nothing to undo (the server was
    /// already fenced), [`nothing_to_undo`] says why. Called only when
    /// [`Step::reversible`] is true.
    fn inverse(&self, _outputs: &serde_json::Value) -> Result<ActionConfig, String> {
        Err("this action has no automatic rollback".into())
    }
}

/// The inverse of an action that changed nothing: a `set` step whose
/// output `nothing_to_undo` says why, so the rollback is recorded, and read.
pub fn nothing_to_undo(why: &str) -> ActionConfig {
    let mut values = indexmap::IndexMap::new();
    values.insert("nothing_to_undo".to_string(), serde_json::Value::String(why.to_string()));
    ActionConfig::Set(set::Config(values))
}

/// Reads `field` of a reversible action's outputs, or says that the
/// attempt's outputs lack what its rollback needs.
pub(crate) fn recorded<'a>(
    outputs: &'a serde_json::Value,
    field: &str,
) -> Result<&'a serde_json::Value, String> {
    outputs.get(field).filter(|v| !v.is_null()).ok_or_else(|| {
        format!(
            "cannot roll back: the step's outputs lack `{field}`, which records what it changed"
        )
    })
}

/// `{}`: the outputs of a step that produces none.
pub(crate) fn empty_outputs() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

/// Formats a duration the way workflow files write them: `500ms`, `30s`,
/// `5m`, `2h`, `1d` (falling back to milliseconds when not a whole unit).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 || !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let s = ms / 1000;
    match s {
        s if s.is_multiple_of(86_400) => format!("{}d", s / 86_400),
        s if s.is_multiple_of(3_600) => format!("{}h", s / 3_600),
        s if s.is_multiple_of(60) => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// The checks every connecting kind makes of where it connects: exactly one
/// of `connection` (a name from lifeboat.toml) and `url`, and an
/// untemplated `url` starting with one of `schemes` (`expected` says which).
pub(crate) fn check_connection_target(
    kind: &str,
    connection: Option<&String>,
    url: Option<&String>,
    schemes: &[&str],
    expected: &str,
) -> Vec<ConfigProblem> {
    let mut problems = Vec::new();
    match (connection, url) {
        (None, None) => problems.push(ConfigProblem::new(
            &[],
            format!("a {kind} step needs `connection` (a name from lifeboat.toml) or `url`"),
        )),
        (Some(_), Some(_)) => {
            problems.push(ConfigProblem::new(&["url"], "`connection` and `url` are exclusive"))
        }
        _ => {}
    }
    if let Some(url) = url
        && !is_templated(url)
        && !schemes.iter().any(|p| url.starts_with(p))
    {
        problems.push(ConfigProblem::new(&["url"], expected));
    }
    problems
}

/// Checks that a `[connections]` URL answers, by its scheme (for
/// `lifeboat doctor`): `SELECT 1` on a database, the zone's SOA on a DNS
/// server, `show info` on an HAProxy runtime API.
pub async fn probe(url: &str, timeout: Duration) -> Result<String, String> {
    let started = std::time::Instant::now();
    let probe = async {
        if url.starts_with("dns://") {
            dns::probe(url).await
        } else if url.starts_with("unix://") || url.starts_with("tcp://") {
            haproxy::probe(url).await
        } else {
            sql::probe(url).await
        }
    };
    match tokio::time::timeout(timeout, probe).await {
        Ok(Ok(detail)) => Ok(format!("{detail} in {} ms", started.elapsed().as_millis())),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!("no answer within {} s", timeout.as_secs())),
    }
}

/// The URL a connecting step runs against: its own `url`, or the one the
/// executor resolved from its `connection`; else the failure that says
/// how to give it one (the connection's `url_env` is unset).
pub(crate) fn target_url<'a>(
    kind: &str,
    url: &'a Option<String>,
    connection: &Option<String>,
) -> Result<&'a str, Outcome> {
    url.as_deref().map(str::trim).ok_or_else(|| {
        Outcome::fatal(match connection {
            Some(name) => format!(
                "connection `{name}` was not resolved to a URL before the step ran; \
                 define [connections.{name}] in lifeboat.toml and set the environment \
                 variable its url_env names"
            ),
            None => format!("a {kind} step needs `url` (or a `connection` resolved to one)"),
        })
    })
}

/// The problems of fields given to an action that does not read them:
/// `given` pairs each optional field with whether it is set; `reads` are
/// the action's own; `takes_only` says what an action without any takes.
pub(crate) fn fields_for_action(
    action: &str,
    reads: &[&str],
    given: &[(&str, bool)],
    takes_only: &str,
) -> Vec<ConfigProblem> {
    given
        .iter()
        .filter(|(field, set)| *set && !reads.contains(field))
        .map(|(field, _)| {
            let help = match reads {
                [] => format!("`{action}` takes only {takes_only}"),
                fields => format!("`{action}` takes {}", fields.join(", ")),
            };
            ConfigProblem::new(&[field], format!("`{field}` does not apply to action `{action}`"))
                .with_help(help)
        })
        .collect()
}

/// True when `s` contains a handlebars expression, i.e. its value is only
/// known when the step starts.
pub fn is_templated(s: &str) -> bool {
    s.contains("{{")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn outcome_redacted_covers_the_error_too() {
        let o = Outcome::Failed {
            error: "GET http://x/?key=s3cr3t failed".into(),
            retryable: true,
            outputs: json!({"body": "s3cr3t"}),
        }
        .redacted(&Redactor::new(["s3cr3t"]));
        assert_eq!(
            o,
            Outcome::Failed {
                error: "GET http://x/?key=*** failed".into(),
                retryable: true,
                outputs: json!({"body": "***"}),
            }
        );
    }

    #[test]
    fn durations_are_formatted_like_workflow_files() {
        assert_eq!(format_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(format_duration(Duration::from_secs(30)), "30s");
        assert_eq!(format_duration(Duration::from_secs(300)), "5m");
        assert_eq!(format_duration(Duration::from_secs(7200)), "2h");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn action_run_future_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        let config = ActionConfig::Set(set::Config::default());
        let ctx = AttemptContext::new("r", "s", 1);
        assert_send(&config.run(&ctx));
    }

    #[tokio::test]
    async fn a_cancelled_attempt_does_not_start() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        let config = ActionConfig::Shell(shell::Config {
            command: Some(vec!["touch".into(), marker.to_str().unwrap().into()]),
            script: None,
            env: Default::default(),
            workdir: None,
        });
        let ctx = AttemptContext::new("r", "s", 1);
        ctx.cancel.cancel();
        assert_eq!(config.run(&ctx).await, Outcome::fatal("cancelled"));
        assert!(!marker.exists());
    }

    #[tokio::test]
    async fn action_run_redacts_outputs() {
        let mut map = indexmap::IndexMap::new();
        map.insert("password".to_string(), json!("pa55word"));
        let config = ActionConfig::Set(set::Config(map));
        let mut ctx = AttemptContext::new("r", "s", 1);
        ctx.redactor = Arc::new(Redactor::new(["pa55word"]));
        assert_eq!(config.run(&ctx).await, Outcome::succeeded(json!({"password": "***"})));
    }
}
