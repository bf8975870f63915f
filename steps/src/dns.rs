//! `dns`: read and change one rrset through RFC 2136 dynamic updates
//! signed with TSIG (`set`, `delete`), query it (`get`), and wait until
//! given servers answer a value (`wait_for`).
//!
//! The server, zone and TSIG key come from one URL, usually a named
//! connection whose URL lives in the environment:
//! `dns://KEY_NAME:BASE64_SECRET@HOST:PORT/ZONE?algorithm=hmac-sha256`
//! (the secret percent-encoded: `/` `%2F`, `+` `%2B`, `=` `%3D`).

mod client;
mod records;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{AttemptContext, ConfigProblem, Outcome, Step};
use client::{Failure, Server};
pub use records::RecordType;

/// What a `dns` step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Replaces the rrset with `records` (one signed update); rolled back
    /// to the rrset it replaced.
    Set,
    /// Removes the rrset; rolled back to the rrset it removed.
    Delete,
    /// Reads the rrset from the connection's server, or `servers[0]`.
    Get,
    /// Polls `servers` until each answers exactly `records`.
    WaitFor,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Set => "set",
            Action::Delete => "delete",
            Action::Get => "get",
            Action::WaitFor => "wait_for",
        }
    }

    /// The `with` fields this action reads besides `action`, `connection`,
    /// `url`, `name` and `type`.
    fn fields(self) -> &'static [&'static str] {
        match self {
            Action::Set => &["records", "ttl"],
            Action::Delete => &[],
            Action::Get => &["servers"],
            Action::WaitFor => &["records", "servers", "within_seconds", "interval_ms"],
        }
    }
}

/// Reads or changes one rrset (`name` + `type`) of the connection's zone.
///
/// `name` is relative to the zone (`db`, `@` for the apex) or absolute
/// (`db.lab.example.`). `records` are the values: addresses for `A` and
/// `AAAA`, a name for `CNAME`, text for `TXT`. `set` takes `ttl` (default
/// 300). `get` and `wait_for` ask `servers` (`host:port`, default: the
/// connection's server); `wait_for` gives up after `within_seconds`
/// (default 60), polling every `interval_ms` (default 500).
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub action: Action,
    /// A connection named under `[connections]` in lifeboat.toml.
    pub connection: Option<String>,
    /// A `dns://` URL (template); exclusive with `connection`.
    pub url: Option<String>,
    /// The owner name, relative to the zone or absolute (ending in `.`).
    pub name: String,
    /// `A`, `AAAA`, `CNAME` or `TXT`.
    #[serde(rename = "type")]
    pub record_type: RecordType,
    /// `set`: the new values; `wait_for`: the values to wait for.
    pub records: Option<Vec<String>>,
    /// `set`: the records' TTL in seconds (default 300).
    pub ttl: Option<u32>,
    /// `get`/`wait_for`: the servers to ask, `host:port`.
    pub servers: Option<Vec<String>>,
    /// `wait_for`: give up after this many seconds (default 60).
    pub within_seconds: Option<u64>,
    /// `wait_for`: milliseconds between polls (default 500).
    pub interval_ms: Option<u64>,
}

const DEFAULT_TTL: u32 = 300;
const DEFAULT_WITHIN: Duration = Duration::from_secs(60);
const DEFAULT_INTERVAL: Duration = Duration::from_millis(500);

impl Config {
    pub fn compile(&self) -> Vec<ConfigProblem> {
        let mut problems = crate::check_connection_target(
            "dns",
            self.connection.as_ref(),
            self.url.as_ref(),
            &["dns://"],
            "a dns step needs a dns://[KEY:SECRET@]HOST:PORT/ZONE URL",
        );
        let action = self.action;
        let given = [
            ("records", self.records.is_some()),
            ("ttl", self.ttl.is_some()),
            ("servers", self.servers.is_some()),
            ("within_seconds", self.within_seconds.is_some()),
            ("interval_ms", self.interval_ms.is_some()),
        ];
        problems.extend(crate::fields_for_action(
            action.name(),
            action.fields(),
            &given,
            "`name` and `type`",
        ));
        if let Err(e) = records::check_name(&self.name) {
            problems.push(ConfigProblem::new(&["name"], e));
        }
        match (action, &self.records) {
            (Action::Set | Action::WaitFor, None) => problems.push(ConfigProblem::new(
                &["records"],
                format!("`{}` needs `records`, the values of the rrset", action.name()),
            )),
            (Action::Set | Action::WaitFor, Some(values)) => {
                if values.is_empty() {
                    let help = if action == Action::Set {
                        "to remove the rrset, use `action: delete`"
                    } else {
                        "list the values the servers must answer"
                    };
                    problems.push(
                        ConfigProblem::new(&["records"], "`records` is empty").with_help(help),
                    );
                }
                if self.record_type == RecordType::Cname && values.len() > 1 {
                    problems.push(ConfigProblem::new(&["records"], "a CNAME rrset holds one name"));
                }
                for (i, value) in values.iter().enumerate() {
                    if let Err(e) = self.record_type.parse(value) {
                        problems.push(ConfigProblem::new(&["records", &i.to_string()], e));
                    }
                }
            }
            _ => {}
        }
        if self.ttl.is_some_and(|t| t > i32::MAX as u32) {
            problems.push(ConfigProblem::new(&["ttl"], "a TTL is at most 2147483647 seconds"));
        }
        for (i, server) in self.servers.iter().flatten().enumerate() {
            if let Err(e) = client::parse_server(server) {
                problems.push(ConfigProblem::new(&["servers", &i.to_string()], e));
            }
        }
        if self.servers.as_ref().is_some_and(Vec::is_empty) {
            problems.push(ConfigProblem::new(&["servers"], "`servers` is empty"));
        }
        if self.interval_ms == Some(0) {
            problems.push(ConfigProblem::new(&["interval_ms"], "must be at least 1"));
        }
        problems
    }

    async fn run_on(&self, url: &str) -> Result<Value, Failure> {
        let server = Server::from_url(url).map_err(Failure::fatal)?;
        let name = records::absolute(&self.name, &server.zone).map_err(Failure::fatal)?;
        match self.action {
            Action::Get => {
                let at = match &self.servers {
                    Some(list) => client::parse_server(&list[0]).map_err(Failure::fatal)?,
                    None => server.addr,
                };
                let found = client::query(at, &name, self.record_type).await?;
                Ok(json!({
                    "name": name.to_string(),
                    "type": self.record_type.name(),
                    "server": at.to_string(),
                    "records": found.records,
                    "ttl": found.ttl,
                }))
            }
            Action::Set | Action::Delete => {
                let previous = client::query(server.addr, &name, self.record_type).await?;
                let records = match self.action {
                    Action::Set => self.normalized_records().map_err(Failure::fatal)?,
                    _ => Vec::new(),
                };
                let ttl = self.ttl.unwrap_or(DEFAULT_TTL);
                let changed = previous.records != records
                    || (!records.is_empty() && previous.ttl != Some(ttl));
                if changed {
                    client::replace(&server, &name, self.record_type, &records, ttl).await?;
                }
                let mut out = json!({
                    "name": name.to_string(),
                    "type": self.record_type.name(),
                    "records": records,
                    "previous": {"records": previous.records, "ttl": previous.ttl},
                    "changed": changed,
                });
                if self.action == Action::Set {
                    out["ttl"] = json!(ttl);
                }
                Ok(out)
            }
            Action::WaitFor => self.wait_for(&server, &name).await,
        }
    }

    fn normalized_records(&self) -> Result<Vec<String>, String> {
        let mut values = self
            .records
            .iter()
            .flatten()
            .map(|v| self.record_type.parse(v).map(|r| records::text(&r)))
            .collect::<Result<Vec<_>, _>>()?;
        values.sort();
        values.dedup();
        Ok(values)
    }

    async fn wait_for(
        &self,
        server: &Server,
        name: &hickory_client::proto::rr::Name,
    ) -> Result<Value, Failure> {
        let expected = self.normalized_records().map_err(Failure::fatal)?;
        let servers: Vec<SocketAddr> = match &self.servers {
            Some(list) => list
                .iter()
                .map(|s| client::parse_server(s))
                .collect::<Result<_, _>>()
                .map_err(Failure::fatal)?,
            None => vec![server.addr],
        };
        let within = self.within_seconds.map_or(DEFAULT_WITHIN, Duration::from_secs);
        let interval = self.interval_ms.map_or(DEFAULT_INTERVAL, Duration::from_millis);
        let started = Instant::now();
        loop {
            let mut answers = serde_json::Map::new();
            let mut pending = Vec::new();
            for at in &servers {
                let answer = match client::query(*at, name, self.record_type).await {
                    Ok(found) => json!(found.records),
                    Err(e) => json!(format!("error: {}", e.error)),
                };
                if answer != json!(expected) {
                    pending.push(format!("{at} answers {answer}"));
                }
                answers.insert(at.to_string(), answer);
            }
            if pending.is_empty() {
                return Ok(json!({
                    "name": name.to_string(),
                    "type": self.record_type.name(),
                    "records": expected,
                    "answers": answers,
                    "waited_ms": started.elapsed().as_millis() as u64,
                }));
            }
            if started.elapsed() + interval > within {
                return Err(Failure::retryable(format!(
                    "{name} {} did not become {} within {} s: {}",
                    self.record_type.name(),
                    json!(expected),
                    within.as_secs(),
                    pending.join("; ")
                )));
            }
            tokio::time::sleep(interval).await;
        }
    }
}

impl Step for Config {
    fn mutates(&self) -> Option<bool> {
        Some(matches!(self.action, Action::Set | Action::Delete))
    }

    crate::connects_by_url!();

    async fn run(&self, ctx: &AttemptContext) -> Outcome {
        let url = match crate::target_url("dns", &self.url, &self.connection) {
            Ok(url) => url,
            Err(unresolved) => return unresolved,
        };
        let target = crate::failure::target("dns", self.connection.as_deref(), url);
        crate::failure::attempt(ctx, url, &target, self.run_on(url)).await
    }

    /// `set` and `delete` undo themselves: the rrset they replaced comes back.
    fn reversible(&self) -> bool {
        matches!(self.action, Action::Set | Action::Delete)
    }

    fn inverse(&self, outputs: &Value) -> Result<crate::ActionConfig, String> {
        if crate::recorded(outputs, "changed")?.as_bool() == Some(false) {
            return Ok(crate::nothing_to_undo("the rrset already held these records: unchanged"));
        }
        let previous = crate::recorded(outputs, "previous")?;
        let records: Vec<String> = previous["records"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
            .unwrap_or_default();
        let name = crate::recorded(outputs, "name")?.as_str().unwrap_or(&self.name).to_string();
        let config = if records.is_empty() {
            Config { action: Action::Delete, name, records: None, ttl: None, ..self.clone() }
        } else {
            let ttl = previous["ttl"].as_u64().map(|t| t as u32);
            Config { action: Action::Set, name, records: Some(records), ttl, ..self.clone() }
        };
        Ok(crate::ActionConfig::Dns(config))
    }
}

/// Asks the URL's server for its zone's SOA (for `lifeboat doctor`).
pub(crate) async fn probe(url: &str) -> Result<String, String> {
    let server = Server::from_url(url)?;
    let soa = client::query_soa(server.addr, &server.zone).await.map_err(|f| f.error)?;
    Ok(format!("{} serves zone {} (SOA serial {soa})", server.addr, server.zone))
}
