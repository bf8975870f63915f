//! `lifeboat.toml`: defaults -> file -> `LIFEBOAT_*` env -> flags.
//! Secrets are never in the file: it names the env variables that hold them.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use indexmap::IndexMap;
use lifeboat_notify::ChannelConfig;
use serde::{Deserialize, Serialize};

mod notify;
mod telemetry;
pub use notify::DrillConfig;
pub use telemetry::{OtlpEndpoint, TelemetryConfig};

pub const DEFAULT_DATABASE_URL: &str = "sqlite://lifeboat.db";

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub database_url: String,
    pub workflows_dir: PathBuf,
    pub templates_dir: PathBuf,
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub users: Vec<UserConfig>,
    #[serde(default)]
    pub groups: IndexMap<String, Vec<String>>,
    #[serde(default)]
    pub hooks: IndexMap<String, HookConfig>,
    #[serde(default, skip_serializing)]
    pub channels: IndexMap<String, ChannelConfig>,
    /// Where drills' notifications go (`config/notify.rs`).
    #[serde(default)]
    pub drill: DrillConfig,
    #[serde(default)]
    pub connections: IndexMap<String, ConnectionConfig>,
    #[serde(default)]
    pub executor: ExecutorConfig,
    #[serde(default)]
    pub audit: AuditConfig,
    /// How long ended runs are kept (`crate::retention`).
    #[serde(default)]
    pub retention: RetentionConfig,
    /// Where `http` steps may connect (see `lifeboat_steps::http::policy`).
    #[serde(default)]
    pub http: lifeboat_steps::http::PolicyConfig,
    /// Where traces go over OTLP (`crate::telemetry`); off when unset.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
}

/// Anchors of the audit log (`crate::audit_anchor`): signed checkpoints of
/// its head, appended to a file outside the database.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// The append-only JSON-lines file anchors go to (relative to the
    /// configuration file). Unset: `serve` does not anchor.
    #[serde(default)]
    pub anchor_file: Option<PathBuf>,
    /// Env variable holding the HMAC-SHA256 key anchors are signed with.
    #[serde(default = "default_anchor_key_env")]
    pub anchor_key_env: String,
    /// How often `serve` anchors the head when it has moved.
    #[serde(default = "default_anchor_every")]
    pub anchor_every: crate::model::Duration,
}

fn default_anchor_key_env() -> String {
    "LIFEBOAT_AUDIT_ANCHOR_KEY".into()
}

fn default_anchor_every() -> crate::model::Duration {
    crate::model::Duration::from_millis(5 * 60 * 1000)
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            anchor_file: None,
            anchor_key_env: default_anchor_key_env(),
            anchor_every: default_anchor_every(),
        }
    }
}

/// How workers hold and renew runs.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutorConfig {
    /// A dead worker's runs are taken over after this long.
    pub lease: crate::model::Duration,
    pub heartbeat: crate::model::Duration,
    pub poll: crate::model::Duration,
    /// Runs one worker drives at once; 0 would be a worker that never
    /// works, so it is refused.
    pub max_runs: std::num::NonZeroUsize,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        use crate::model::Duration;
        ExecutorConfig {
            lease: Duration::from_millis(30_000),
            heartbeat: Duration::from_millis(10_000),
            poll: Duration::from_millis(500),
            max_runs: std::num::NonZeroUsize::new(64).expect("64 is not zero"),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            database_url: DEFAULT_DATABASE_URL.into(),
            workflows_dir: "workflows".into(),
            templates_dir: "templates".into(),
            server: ServerConfig::default(),
            users: Vec::new(),
            groups: IndexMap::new(),
            hooks: IndexMap::new(),
            channels: IndexMap::new(),
            drill: DrillConfig::default(),
            connections: IndexMap::new(),
            executor: ExecutorConfig::default(),
            audit: AuditConfig::default(),
            retention: Default::default(),
            http: Default::default(),
            telemetry: TelemetryConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: String,
    /// How people reach the server (links in notifications); empty: it
    /// follows `listen` (see [`ServerConfig::public_base`]).
    #[serde(default)]
    pub public_url: String,
    /// Env variable holding the key that signs one-click approve/ack links.
    #[serde(default = "default_link_secret_env")]
    pub link_secret_env: String,
    /// Env variable holding the bearer token `/metrics` requires (unset: open).
    #[serde(default)]
    pub metrics_token_env: Option<String>,
    /// A client must send a request's whole head (request line and headers)
    /// within this long once it started sending it.
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout: crate::model::Duration,
    /// A connection with no request in flight and nothing sent is closed
    /// after this long (a new connection, or keep-alive between requests).
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: crate::model::Duration,
    /// Open connections at most; past it a new connection is answered 503.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Event streams (`/api/v1/runs/{id}/events`) one user may hold open at once.
    #[serde(default = "default_max_streams_per_user")]
    pub max_streams_per_user: usize,
    /// How often `serve` runs the checks of `lifeboat doctor` and exports
    /// them as `lifeboat_readiness` (`0s`: never).
    #[serde(default = "default_readiness_interval")]
    pub readiness_interval: crate::model::Duration,
}

fn default_readiness_interval() -> crate::model::Duration {
    crate::model::Duration::from_millis(5 * 60_000)
}

fn default_link_secret_env() -> String {
    "LIFEBOAT_LINK_SECRET".into()
}

fn default_header_read_timeout() -> crate::model::Duration {
    crate::model::Duration::from_millis(10_000)
}

fn default_idle_timeout() -> crate::model::Duration {
    crate::model::Duration::from_millis(60_000)
}

fn default_max_connections() -> usize {
    1024
}

fn default_max_streams_per_user() -> usize {
    16
}

impl ServerConfig {
    /// The base of links people follow, without a trailing `/`:
    /// `public_url`, or else `http://` + `listen` (a wildcard address,
    /// which no browser can open, becomes loopback).
    pub fn public_base(&self) -> String {
        let url = self.public_url.trim();
        if !url.is_empty() {
            return url.trim_end_matches('/').to_string();
        }
        let listen = self.listen.trim();
        let reachable = match listen.rsplit_once(':') {
            Some(("0.0.0.0", port)) => format!("127.0.0.1:{port}"),
            Some(("[::]", port)) => format!("[::1]:{port}"),
            _ => listen.to_string(),
        };
        format!("http://{reachable}")
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".into(),
            public_url: String::new(),
            link_secret_env: default_link_secret_env(),
            metrics_token_env: None,
            header_read_timeout: default_header_read_timeout(),
            idle_timeout: default_idle_timeout(),
            max_connections: default_max_connections(),
            max_streams_per_user: default_max_streams_per_user(),
            readiness_interval: default_readiness_interval(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    /// Env variable holding the user's API token.
    pub token_env: String,
    #[serde(default)]
    pub roles: Vec<Role>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Viewer,
    Operator,
    Approver,
    Admin,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HookConfig {
    #[serde(default)]
    pub format: HookFormat,
    pub bearer_token_env: Option<String>,
    pub hmac_secret_env: Option<String>,
    /// Alerts (Alertmanager, Grafana) one payload may carry; more is refused with 413.
    #[serde(default = "default_max_alerts")]
    pub max_alerts: usize,
    /// Sustained requests per minute (token bucket, per replica); past it, 429.
    #[serde(default = "default_rate_per_minute")]
    pub rate_per_minute: u32,
    /// Requests allowed at once above the sustained rate (the bucket's size).
    #[serde(default = "default_burst")]
    pub burst: u32,
}

impl Default for HookConfig {
    fn default() -> Self {
        HookConfig {
            format: HookFormat::default(),
            bearer_token_env: None,
            hmac_secret_env: None,
            max_alerts: default_max_alerts(),
            rate_per_minute: default_rate_per_minute(),
            burst: default_burst(),
        }
    }
}

fn default_max_alerts() -> usize {
    50
}

fn default_rate_per_minute() -> u32 {
    600
}

fn default_burst() -> u32 {
    100
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HookFormat {
    /// Alertmanager's webhook (version 4): one trigger per alert.
    #[default]
    Alertmanager,
    /// Grafana Alerting's webhook contact point (version 1): Alertmanager's
    /// payload with Grafana's fields, matched and deduplicated alike.
    Grafana,
    /// Any JSON object: one event.
    Json,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionConfig {
    pub url_env: String,
}

// ---- `[retention]` (the pruner that applies it: `crate::retention`) ----

/// The shortest retention `[retention]` accepts: runs deleted sooner than
/// this would vanish while people still look at them.
const MIN_KEEP_MS: u64 = 60 * 60 * 1000;
/// Most runs one batch looks at: a batch is one transaction that workers
/// queue behind on SQLite.
const MAX_BATCH: usize = 10_000;

/// How long ended runs are kept: `"never"` (kept forever) or a duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Keep {
    Forever,
    For(crate::model::Duration),
}

impl Keep {
    /// The cutoff at `now`: runs that ended before it may go.
    pub fn cutoff(self, now: i64) -> Option<i64> {
        match self {
            Keep::Forever => None,
            Keep::For(d) => {
                Some(now.saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)))
            }
        }
    }
}

impl FromStr for Keep {
    type Err = String;

    fn from_str(text: &str) -> Result<Keep, String> {
        if text.trim() == "never" {
            return Ok(Keep::Forever);
        }
        let d: crate::model::Duration = text.parse().map_err(|e| {
            format!("{e}; write how long runs are kept after they end, e.g. \"90d\", or \"never\"")
        })?;
        if d.as_millis() < MIN_KEEP_MS {
            return Err(format!(
                "`{text}` is less than an hour: runs would be deleted while people still read them; \
                 keep them at least \"1h\" (`lifeboat prune --older-than` deletes sooner by hand)"
            ));
        }
        Ok(Keep::For(d))
    }
}

impl TryFrom<String> for Keep {
    type Error = String;
    fn try_from(text: String) -> Result<Keep, String> {
        text.parse()
    }
}

impl From<Keep> for String {
    fn from(keep: Keep) -> String {
        keep.to_string()
    }
}

impl fmt::Display for Keep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Keep::Forever => f.write_str("never"),
            Keep::For(d) => d.fmt(f),
        }
    }
}

/// How often the pruner runs: at least a second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "crate::model::Duration", into = "crate::model::Duration")]
pub struct Interval(pub crate::model::Duration);

impl TryFrom<crate::model::Duration> for Interval {
    type Error = String;
    fn try_from(d: crate::model::Duration) -> Result<Interval, String> {
        if d.as_millis() < 1_000 {
            return Err(format!("`{d}` is shorter than a second: the pruner would never rest"));
        }
        Ok(Interval(d))
    }
}

impl From<Interval> for crate::model::Duration {
    fn from(i: Interval) -> crate::model::Duration {
        i.0
    }
}

/// Runs one batch looks at: 1 ..= 10,000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "usize", into = "usize")]
pub struct Batch(pub usize);

impl TryFrom<usize> for Batch {
    type Error = String;
    fn try_from(n: usize) -> Result<Batch, String> {
        if n == 0 || n > MAX_BATCH {
            return Err(format!(
                "{n} is not a batch size: a batch deletes 1 to {MAX_BATCH} runs in one short transaction"
            ));
        }
        Ok(Batch(n))
    }
}

impl From<Batch> for usize {
    fn from(b: Batch) -> usize {
        b.0
    }
}

/// `[retention]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// How long runs are kept after they end (`"never"`: forever).
    #[serde(default = "default_runs")]
    pub runs: Keep,
    /// Per workflow, replacing `runs` for its runs (a DR runbook's runs
    /// kept for the audit year: `failover = "400d"`).
    #[serde(default)]
    pub workflows: BTreeMap<String, Keep>,
    /// Drill runs are kept at least this long after they end, and never
    /// less long than their workflow's live runs: the evidence that
    /// recovery was rehearsed outlives ordinary history.
    #[serde(default = "default_drills")]
    pub drills: Keep,
    /// How often `serve` prunes.
    #[serde(default = "default_interval")]
    pub interval: Interval,
    /// Ended runs one batch (one short transaction) looks at.
    #[serde(default = "default_batch")]
    pub batch: Batch,
}

fn default_runs() -> Keep {
    Keep::Forever
}

/// An audit year and a month: last year's drills are at hand when the
/// auditor asks.
fn default_drills() -> Keep {
    Keep::For(crate::model::Duration::from_millis(400 * 86_400_000))
}

fn default_interval() -> Interval {
    Interval(crate::model::Duration::from_millis(60 * 60 * 1000))
}

fn default_batch() -> Batch {
    Batch(50)
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            runs: default_runs(),
            workflows: BTreeMap::new(),
            drills: default_drills(),
            interval: default_interval(),
            batch: default_batch(),
        }
    }
}

impl RetentionConfig {
    /// The `[retention.workflows]` keys for which `known` says no: a typo
    /// there would quietly give a runbook the default retention.
    pub fn unknown_workflows(&self, known: impl Fn(&str) -> bool) -> Vec<&str> {
        self.workflows.keys().map(String::as_str).filter(|w| !known(w)).collect()
    }

    /// Whether anything is ever deleted.
    pub fn prunes(&self) -> bool {
        self.runs != Keep::Forever || self.workflows.values().any(|k| *k != Keep::Forever)
    }
}

/// Keys that may come from `LIFEBOAT_*` variables (`__` separates levels).
/// Other `LIFEBOAT_*` variables (tokens, secrets) are not configuration.
const ENV_KEYS: &[&str] = &[
    "database_url",
    "workflows_dir",
    "templates_dir",
    "server.listen",
    "telemetry.otlp_endpoint",
    "telemetry.service_name",
    "server.public_url",
    "server.metrics_token_env",
    "server.header_read_timeout",
    "server.idle_timeout",
    "server.max_connections",
    "server.max_streams_per_user",
    "server.readiness_interval",
    "executor.lease",
    "executor.heartbeat",
    "executor.poll",
    "executor.max_runs",
    "audit.anchor_file",
    "audit.anchor_key_env",
    "audit.anchor_every",
    "retention.runs",
    "retention.drills",
    "retention.interval",
    "retention.batch",
];

/// A configuration that cannot be used: the user's to fix (exit 1), named
/// with its file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {} does not exist", .0.display())]
    Missing(PathBuf),
    /// The message names the file and the key.
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Loads `file` (if given, it must exist; else `./lifeboat.toml` if present)
    /// layered over defaults and under the environment.
    pub fn load(file: Option<&Path>) -> Result<(Config, Option<PathBuf>), ConfigError> {
        let path = match file {
            Some(p) if !p.exists() => return Err(ConfigError::Missing(p.to_path_buf())),
            Some(p) => Some(p.to_path_buf()),
            None => Some(PathBuf::from("lifeboat.toml")).filter(|p| p.exists()),
        };
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(p) = &path {
            figment = figment.merge(Toml::file_exact(p));
        }
        figment = figment.merge(Env::prefixed("LIFEBOAT_").split("__").only(ENV_KEYS));
        let mut config: Config = figment.extract().map_err(|e| {
            if let Some(located) = path.as_deref().and_then(notify::channel_error) {
                return located;
            }
            let at = path.as_ref().map(|p| format!("{}: ", p.display())).unwrap_or_default();
            ConfigError::Invalid(format!("{at}invalid configuration: {e}"))
        })?;
        notify::check(&mut config, path.as_deref())?;
        telemetry::check(&config, path.as_deref())?;
        Ok((config, path))
    }

    /// Names a workflow may refer to, for the compiler's checks. Reads the
    /// templates directory (IO stays out of the compiler).
    pub fn known_names(&self, base: &Path) -> crate::compile::KnownNames {
        let mut templates: Vec<String> =
            lifeboat_notify::templates::BUILTIN.iter().map(|s| s.to_string()).collect();
        let dir = base.join(&self.templates_dir);
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                if let Some(name) = entry
                    .file_name()
                    .to_str()
                    .and_then(lifeboat_notify::templates::template_name_of)
                    && !templates.iter().any(|t| t == name)
                {
                    templates.push(name.to_string());
                }
            }
        }
        crate::compile::KnownNames {
            channels: self.channels.keys().cloned().collect(),
            hooks: self.hooks.keys().cloned().collect(),
            templates,
            connections: self.connections.keys().cloned().collect(),
            principals: self
                .users
                .iter()
                .map(|u| u.name.clone())
                .chain(self.groups.keys().cloned())
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(toml: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("lifeboat.toml");
        std::fs::write(&path, toml).expect("writing the config");
        Config::load(Some(&path)).map(|(config, _)| config)
    }

    #[test]
    fn links_follow_listen_unless_public_url_is_set() {
        let c = load("[server]\nlisten = \"127.0.0.1:9911\"\n").unwrap();
        assert_eq!(c.server.public_base(), "http://127.0.0.1:9911");
        let c = load("[server]\nlisten = \"0.0.0.0:8080\"\n").unwrap();
        assert_eq!(c.server.public_base(), "http://127.0.0.1:8080");
        let c = load(
            "[server]\nlisten = \"0.0.0.0:8080\"\npublic_url = \"https://lifeboat.example/\"\n",
        )
        .unwrap();
        assert_eq!(c.server.public_base(), "https://lifeboat.example");
        assert_eq!(Config::default().server.public_base(), "http://127.0.0.1:8080");
    }

    #[test]
    fn the_http_section_is_optional_and_reads_hosts_and_networks() {
        assert_eq!(load("").unwrap().http, Default::default());
        let config = load(
            "[http]\nallow = [\"*.corp.example\", \"10.0.0.0/8\"]\ndeny = [\"10.9.0.0/16\"]\n",
        )
        .unwrap();
        let rules: Vec<String> = config.http.allow.iter().map(ToString::to_string).collect();
        assert_eq!(rules, ["*.corp.example", "10.0.0.0/8"]);
        assert_eq!(config.http.deny[0].to_string(), "10.9.0.0/16");
    }

    #[test]
    fn a_bad_http_rule_is_a_configuration_error_naming_it() {
        let e = format!("{:#}", load("[http]\ndeny = [\"10.0.0.0/33\"]\n").unwrap_err());
        assert!(e.contains("invalid configuration"), "{e}");
        assert!(e.contains("`10.0.0.0/33` is not a host, address or network"), "{e}");
        assert!(e.contains("http.deny"), "{e}");
    }

    #[test]
    fn zero_max_runs_is_a_configuration_error_naming_the_field() {
        let e = format!("{:#}", load("[executor]\nmax_runs = 0\n").unwrap_err());
        assert!(e.contains("invalid configuration"), "{e}");
        assert!(e.contains("executor.max_runs"), "{e}");
        assert_eq!(load("[executor]\nmax_runs = 1\n").unwrap().executor.max_runs.get(), 1);
    }
}
