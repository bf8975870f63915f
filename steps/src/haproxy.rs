//! `haproxy`: read and change a backend's servers through the HAProxy
//! runtime API (the stats socket), over a unix socket or TCP: `servers`,
//! `set_weight`, `set_state`. A change records what it replaced, and is
//! rolled back to it.

#[cfg(test)]
mod tests;

use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use crate::failure::Failure;
use crate::{AttemptContext, ConfigProblem, Outcome, Step};

/// What a `haproxy` step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// The backend's servers: address, status, weight, state, checks, sessions.
    Servers,
    /// Sets one server's weight (0–256); rolled back to the previous weight.
    SetWeight,
    /// Sets one server's administrative state; rolled back to the previous one.
    SetState,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Servers => "servers",
            Action::SetWeight => "set_weight",
            Action::SetState => "set_state",
        }
    }
}

/// A server's administrative state, as `set server … state` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Takes traffic.
    Ready,
    /// Takes no new connections; existing ones finish.
    Drain,
    /// Out of service: no traffic, no checks.
    Maint,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Ready => "ready",
            State::Drain => "drain",
            State::Maint => "maint",
        }
    }

    /// The state a `show stat` status means (`MAINT`, `MAINT (via …)`,
    /// `DRAIN`, `UP`, `DOWN`, `no check`, `UP 1/3`).
    fn of_status(status: &str) -> State {
        if status.starts_with("MAINT") {
            State::Maint
        } else if status.starts_with("DRAIN") {
            State::Drain
        } else {
            State::Ready
        }
    }
}

/// Operates one backend of an HAProxy through its runtime API.
///
/// The URL (usually a named connection's) is `unix:///path/to/admin.sock`
/// or `tcp://HOST:PORT`; the socket needs `level admin` for changes.
/// `set_weight` and `set_state` name a `server` of the `backend`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub action: Action,
    /// A connection named under `[connections]` in lifeboat.toml.
    pub connection: Option<String>,
    /// `unix:///path` or `tcp://HOST:PORT` (template); exclusive with `connection`.
    pub url: Option<String>,
    /// The backend's name.
    pub backend: String,
    /// `set_weight`/`set_state`: the server's name in the backend.
    pub server: Option<String>,
    /// `set_weight`: 0 (no traffic) to 256.
    pub weight: Option<u16>,
    /// `set_state`: `ready`, `drain` or `maint`.
    pub state: Option<State>,
}

/// Most bytes of one answer read from the runtime API.
const MAX_ANSWER: u64 = 4 * 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl Config {
    pub fn compile(&self) -> Vec<ConfigProblem> {
        let mut problems = crate::check_connection_target(
            "haproxy",
            self.connection.as_ref(),
            self.url.as_ref(),
            &["unix://", "tcp://"],
            "a haproxy step needs a unix:///path/to/admin.sock or tcp://HOST:PORT URL",
        );
        if let Err(e) = check_name("backend", &self.backend) {
            problems.push(ConfigProblem::new(&["backend"], e));
        }
        let needs = |field: &str| {
            ConfigProblem::new(&[field], format!("`{}` needs `{field}`", self.action.name()))
        };
        let refuses = |field: &str| {
            ConfigProblem::new(
                &[field],
                format!("`{field}` does not apply to action `{}`", self.action.name()),
            )
        };
        match self.action {
            Action::Servers => {
                if self.server.is_some() {
                    problems.push(refuses("server"));
                }
            }
            Action::SetWeight | Action::SetState => match &self.server {
                None => problems.push(needs("server")),
                Some(s) => {
                    if let Err(e) = check_name("server", s) {
                        problems.push(ConfigProblem::new(&["server"], e));
                    }
                }
            },
        }
        match (self.action, self.weight) {
            (Action::SetWeight, None) => problems.push(needs("weight")),
            (Action::SetWeight, Some(w)) if w > 256 => problems
                .push(ConfigProblem::new(&["weight"], format!("a weight is 0 to 256, not {w}"))),
            (Action::Servers | Action::SetState, Some(_)) => problems.push(refuses("weight")),
            _ => {}
        }
        match (self.action, self.state) {
            (Action::SetState, None) => problems.push(needs("state")),
            (Action::Servers | Action::SetWeight, Some(_)) => problems.push(refuses("state")),
            _ => {}
        }
        problems
    }

    async fn run_on(&self, url: &str) -> Result<Value, Failure> {
        // Names reach a command line: check them again once rendered.
        check_name("backend", &self.backend).map_err(Failure::fatal)?;
        let api = Api::from_url(url).map_err(Failure::fatal)?;
        let servers = self.servers(&api).await?;
        let Some(name) = &self.server else {
            return Ok(json!({"backend": self.backend, "servers": servers}));
        };
        check_name("server", name).map_err(Failure::fatal)?;
        let Some(current) = servers.iter().find(|s| s["name"] == name.as_str()) else {
            let names: Vec<&str> = servers.iter().filter_map(|s| s["name"].as_str()).collect();
            return Err(Failure::fatal(format!(
                "backend `{}` has no server `{name}`; its servers: {}",
                self.backend,
                names.join(", ")
            )));
        };
        let path = format!("{}/{name}", self.backend);
        match (self.action, self.weight, self.state) {
            (Action::SetWeight, Some(weight), _) => {
                let answer = api.command(&format!("get weight {path}")).await?;
                let previous = parse_weight(&answer).ok_or_else(|| {
                    Failure::fatal(format!("`get weight {path}` answered `{}`", answer.trim()))
                })?;
                let changed = previous != weight;
                if changed {
                    api.change(&format!("set weight {path} {weight}")).await?;
                }
                Ok(json!({
                    "backend": self.backend, "server": name,
                    "weight": weight, "previous_weight": previous, "changed": changed,
                }))
            }
            (Action::SetState, _, Some(state)) => {
                let previous = State::of_status(current["status"].as_str().unwrap_or_default());
                let changed = previous != state;
                if changed {
                    api.change(&format!("set server {path} state {}", state.name())).await?;
                }
                Ok(json!({
                    "backend": self.backend, "server": name,
                    "state": state.name(), "previous_state": previous.name(), "changed": changed,
                }))
            }
            _ => Err(Failure::fatal("the step's `with` does not match its action")),
        }
    }

    /// The backend's servers from `show stat`.
    async fn servers(&self, api: &Api) -> Result<Vec<Value>, Failure> {
        let csv = api.command("show stat").await?;
        let (servers, backends) = parse_stat(&csv, &self.backend)?;
        if servers.is_empty() && !backends.iter().any(|b| b == &self.backend) {
            return Err(Failure::fatal(format!(
                "no backend `{}`; the backends are: {}",
                self.backend,
                backends.join(", ")
            )));
        }
        Ok(servers)
    }
}

impl Step for Config {
    fn mutates(&self) -> Option<bool> {
        Some(self.action != Action::Servers)
    }

    crate::connects_by_url!();

    async fn run(&self, ctx: &AttemptContext) -> Outcome {
        let url = match crate::target_url("haproxy", &self.url, &self.connection) {
            Ok(url) => url,
            Err(unresolved) => return unresolved,
        };
        let target = crate::failure::target("haproxy", self.connection.as_deref(), url);
        crate::failure::attempt(ctx, url, &target, self.run_on(url)).await
    }

    /// A change undoes itself: the previous weight or state comes back.
    fn reversible(&self) -> bool {
        self.action != Action::Servers
    }

    fn inverse(&self, outputs: &Value) -> Result<crate::ActionConfig, String> {
        if crate::recorded(outputs, "changed")?.as_bool() == Some(false) {
            return Ok(crate::nothing_to_undo("the server already had this setting: unchanged"));
        }
        let back = match self.action {
            Action::SetWeight => {
                let w = crate::recorded(outputs, "previous_weight")?;
                let weight = w.as_u64().and_then(|w| u16::try_from(w).ok());
                Config {
                    weight: Some(weight.ok_or("`previous_weight` is not a weight")?),
                    ..self.clone()
                }
            }
            Action::SetState => {
                let s = crate::recorded(outputs, "previous_state")?;
                let state = serde_json::from_value(s.clone())
                    .map_err(|_| format!("`previous_state` {s} is not a state"))?;
                Config { state: Some(state), ..self.clone() }
            }
            Action::Servers => return Err("`servers` changes nothing".into()),
        };
        Ok(crate::ActionConfig::Haproxy(back))
    }
}

/// A backend or server name: it is written into a runtime API command
/// line, where a space, `;` or a newline would start another command.
fn check_name(what: &str, name: &str) -> Result<(), String> {
    if crate::is_templated(name) {
        return Ok(());
    }
    if name.is_empty() {
        return Err(format!("the {what} name is empty"));
    }
    match name.chars().find(|c| !(c.is_ascii_alphanumeric() || "-_.:".contains(*c))) {
        Some(c) => Err(format!(
            "the {what} name `{}` has `{}`: HAProxy names are letters, digits, `-`, `_`, `.` and `:`",
            name.escape_debug(),
            c.escape_debug()
        )),
        None => Ok(()),
    }
}

/// `get weight` answers `100 (initial 100)`.
fn parse_weight(answer: &str) -> Option<u16> {
    answer.split_whitespace().next()?.parse().ok()
}

/// The servers of `backend` in `show stat` CSV, and every backend's name.
fn parse_stat(csv: &str, backend: &str) -> Result<(Vec<Value>, Vec<String>), Failure> {
    let mut lines = csv.lines();
    let header = lines
        .next()
        .and_then(|l| l.strip_prefix("# "))
        .ok_or_else(|| Failure::fatal(format!("`show stat` answered `{}`", first_line(csv))))?;
    let columns: Vec<&str> = header.split(',').collect();
    let col = |name: &str| columns.iter().position(|c| *c == name);
    let (Some(px), Some(sv), Some(status), Some(weight)) =
        (col("pxname"), col("svname"), col("status"), col("weight"))
    else {
        return Err(Failure::fatal("`show stat` has no pxname, svname, status or weight column"));
    };
    let (addr, check, sessions) = (col("addr"), col("check_status"), col("scur"));
    let mut servers = Vec::new();
    let mut backends = Vec::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let fields: Vec<&str> = line.split(',').collect();
        let field = |i: Option<usize>| i.and_then(|i| fields.get(i)).copied().unwrap_or_default();
        match field(Some(sv)) {
            "FRONTEND" => {}
            "BACKEND" => backends.push(field(Some(px)).to_string()),
            name if field(Some(px)) == backend => {
                let status_text = field(Some(status));
                servers.push(json!({
                    "name": name,
                    "address": field(addr),
                    "status": status_text,
                    "state": State::of_status(status_text).name(),
                    "weight": field(Some(weight)).parse::<u64>().ok(),
                    "check_status": field(check),
                    "sessions": field(sessions).parse::<u64>().ok(),
                }));
            }
            _ => {}
        }
    }
    Ok((servers, backends))
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default().trim()
}

/// Where the runtime API listens.
enum Api {
    Unix(String),
    Tcp(String),
}

impl Api {
    fn from_url(url: &str) -> Result<Api, String> {
        if let Some(path) = url.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(format!(
                    "`{url}`: a unix socket URL has an absolute path, unix:///run/haproxy/admin.sock"
                ));
            }
            return Ok(Api::Unix(path.to_string()));
        }
        if let Some(addr) = url.strip_prefix("tcp://") {
            let addr = addr.trim_end_matches('/');
            if addr.is_empty() || addr.contains('/') {
                return Err(format!("`{url}`: a TCP URL is tcp://HOST:PORT"));
            }
            return Ok(Api::Tcp(addr.to_string()));
        }
        Err(format!("`{url}`: a haproxy URL is unix:///path or tcp://HOST:PORT"))
    }

    fn describe(&self) -> String {
        match self {
            Api::Unix(path) => format!("socket {path}"),
            Api::Tcp(addr) => addr.clone(),
        }
    }

    /// Sends one command and reads the whole answer (the API closes the
    /// connection after a command outside interactive mode).
    async fn command(&self, line: &str) -> Result<String, Failure> {
        let unreachable = |e: std::io::Error| {
            Failure::retryable(format!(
                "cannot reach the HAProxy runtime API at {}: {e}; check that HAProxy runs and \
                 its `stats socket` is there",
                self.describe()
            ))
        };
        let timed_out = || unreachable(std::io::ErrorKind::TimedOut.into());
        match self {
            Api::Unix(path) => {
                let stream = tokio::time::timeout(CONNECT_TIMEOUT, UnixStream::connect(path))
                    .await
                    .map_err(|_| timed_out())?
                    .map_err(unreachable)?;
                exchange(stream, line).await.map_err(unreachable)
            }
            Api::Tcp(addr) => {
                let stream =
                    tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr.as_str()))
                        .await
                        .map_err(|_| timed_out())?
                        .map_err(unreachable)?;
                exchange(stream, line).await.map_err(unreachable)
            }
        }
    }

    /// A command that answers nothing when it works: anything it says is
    /// the reason it did not (`No such server.`, `Permission denied`).
    async fn change(&self, line: &str) -> Result<(), Failure> {
        let answer = self.command(line).await?;
        let answer = answer.trim();
        if answer.is_empty() {
            return Ok(());
        }
        let help = if answer.contains("ermission denied") {
            " (the stats socket needs `level admin`)"
        } else {
            ""
        };
        Err(Failure::fatal(format!("`{line}` was refused: {answer}{help}")))
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    line: &str,
) -> std::io::Result<String> {
    stream.write_all(format!("{line}\n").as_bytes()).await?;
    stream.flush().await?;
    let mut answer = Vec::new();
    (&mut stream).take(MAX_ANSWER).read_to_end(&mut answer).await?;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

/// Asks the runtime API for `show info` (for `lifeboat doctor`).
pub(crate) async fn probe(url: &str) -> Result<String, String> {
    let api = Api::from_url(url)?;
    let info = api.command("show info").await.map_err(|f| f.error)?;
    let field = |name: &str| {
        info.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(": ")).unwrap_or("?")
    };
    if !info.contains("Version: ") {
        return Err(format!(
            "{} answered `show info` with `{}`",
            api.describe(),
            first_line(&info)
        ));
    }
    Ok(format!("HAProxy {} at {}, up {} s", field("Version"), api.describe(), field("Uptime_sec")))
}
