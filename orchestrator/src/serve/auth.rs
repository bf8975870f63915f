//! Who is calling: API users (bearer tokens from `[[users]] token_env`, with
//! roles) and webhook callers (a bearer token or an HMAC signature per
//! hook). Secrets are read from the environment once, at start, and checked
//! here with precise errors; tokens are compared in constant time.

use axum::http::{HeaderMap, header};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use crate::config::{Config, HookFormat, Role};

/// What an endpoint needs of the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Read runs and workflows: any role.
    Read,
    /// Start, cancel, retry runs: operator or admin.
    Operate,
    /// Approve, reject, acknowledge: approver or admin.
    Decide,
}

impl Need {
    fn roles(self) -> &'static str {
        match self {
            Need::Read => "viewer, operator, approver or admin",
            Need::Operate => "operator or admin",
            Need::Decide => "approver or admin",
        }
    }
}

/// An API identity with its token's digest (fixed length: comparing digests
/// in constant time does not leak the token's length either).
#[derive(Clone)]
pub struct User {
    pub name: String,
    pub roles: Vec<Role>,
    digest: [u8; 32],
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User").field("name", &self.name).field("roles", &self.roles).finish()
    }
}

impl User {
    pub fn may(&self, need: Need) -> bool {
        self.roles.iter().any(|r| match r {
            Role::Admin => true,
            Role::Viewer => need == Need::Read,
            Role::Operator => matches!(need, Need::Read | Need::Operate),
            Role::Approver => matches!(need, Need::Read | Need::Decide),
        })
    }
}

/// How a hook proves who is calling.
#[derive(Clone)]
pub enum HookAuth {
    Bearer([u8; 32]),
    Hmac(Vec<u8>),
}

#[derive(Clone)]
pub struct Hook {
    pub name: String,
    pub format: HookFormat,
    pub auth: HookAuth,
    /// `[hooks.NAME] max_alerts`.
    pub max_alerts: usize,
    /// `[hooks.NAME] rate_per_minute` and `burst`.
    pub rate_per_minute: u32,
    pub burst: u32,
}

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let auth = match self.auth {
            HookAuth::Bearer(_) => "bearer",
            HookAuth::Hmac(_) => "hmac",
        };
        f.debug_struct("Hook")
            .field("name", &self.name)
            .field("format", &self.format)
            .field("auth", &auth)
            .finish()
    }
}

/// Users and hooks with their secrets, read from the environment.
#[derive(Clone, Default)]
pub struct Identities {
    pub users: Vec<User>,
    pub hooks: indexmap::IndexMap<String, Hook>,
    /// Digest of the token `/metrics` requires (`[server] metrics_token_env`).
    metrics: Option<[u8; 32]>,
}

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identities")
            .field("users", &self.users)
            .field("hooks", &self.hooks)
            .field("metrics_token", &self.metrics.is_some())
            .finish()
    }
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

/// The value of env variable `var`, or why it cannot be used.
fn secret(env: &dyn Fn(&str) -> Option<String>, var: &str) -> Result<String, &'static str> {
    match env(var) {
        None => Err("is not set"),
        Some(v) if v.trim().is_empty() => Err("is empty"),
        Some(v) => Ok(v),
    }
}

impl Identities {
    /// Reads every secret the configuration names; returns every problem
    /// at once, each naming the user or hook and the variable.
    pub fn from_config(config: &Config) -> Result<Identities, Vec<String>> {
        Self::with_env(config, &|k| std::env::var(k).ok())
    }

    pub fn with_env(
        config: &Config,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Identities, Vec<String>> {
        let mut problems = Vec::new();
        let mut out = Identities::default();
        for (i, u) in config.users.iter().enumerate() {
            let who = if u.name.trim().is_empty() {
                problems.push(format!("users[{i}]: `name` is empty"));
                continue;
            } else {
                format!("user `{}`", u.name)
            };
            if config.users[..i].iter().any(|other| other.name == u.name) {
                problems.push(format!("{who} is defined twice under [[users]]"));
            }
            if u.roles.is_empty() {
                problems.push(format!(
                    "{who} has no roles: give it `roles = [...]` (viewer, operator, approver, admin)"
                ));
            }
            match secret(env, &u.token_env) {
                Ok(token) => {
                    let d = digest(token.trim().as_bytes());
                    if let Some(other) =
                        out.users.iter().find(|o: &&User| bool::from(o.digest.ct_eq(&d)))
                    {
                        problems.push(format!(
                            "{who} has the same token as user `{}`: every user needs its own token",
                            other.name
                        ));
                    }
                    out.users.push(User { name: u.name.clone(), roles: u.roles.clone(), digest: d });
                }
                Err(why) => problems.push(format!(
                    "{who}: token variable {} {why}; export it, or remove the user from the configuration",
                    u.token_env
                )),
            }
        }
        if let Some(var) = &config.server.metrics_token_env {
            match secret(env, var) {
                Ok(token) => out.metrics = Some(digest(token.trim().as_bytes())),
                Err(why) => problems.push(format!(
                    "[server] metrics_token_env variable {var} {why}; export it, or remove `metrics_token_env` to leave /metrics open"
                )),
            }
        }
        problems.extend(server_problems(&config.server));
        for (name, h) in &config.hooks {
            let who = format!("hook `{name}`");
            for (key, value) in [
                ("max_alerts", h.max_alerts as u64),
                ("rate_per_minute", u64::from(h.rate_per_minute)),
                ("burst", u64::from(h.burst)),
            ] {
                if value == 0 {
                    problems.push(format!(
                        "[hooks.{name}] {key} = 0 would refuse every request: it must be at least 1"
                    ));
                }
            }
            let auth = match (&h.bearer_token_env, &h.hmac_secret_env) {
                (Some(_), Some(_)) => {
                    problems.push(format!(
                        "{who} has both `bearer_token_env` and `hmac_secret_env`: choose one"
                    ));
                    continue;
                }
                (None, None) => {
                    problems.push(format!(
                        "{who} is not authenticated: set `bearer_token_env` or `hmac_secret_env`"
                    ));
                    continue;
                }
                (Some(var), None) => secret(env, var)
                    .map(|t| HookAuth::Bearer(digest(t.trim().as_bytes())))
                    .map_err(|why| format!("{who}: bearer_token_env variable {var} {why}")),
                (None, Some(var)) => secret(env, var)
                    .map(|s| HookAuth::Hmac(s.into_bytes()))
                    .map_err(|why| format!("{who}: hmac_secret_env variable {var} {why}")),
            };
            match auth {
                Ok(auth) => {
                    out.hooks.insert(
                        name.clone(),
                        Hook {
                            name: name.clone(),
                            format: h.format,
                            auth,
                            max_alerts: h.max_alerts,
                            rate_per_minute: h.rate_per_minute,
                            burst: h.burst,
                        },
                    );
                }
                Err(p) => problems.push(p),
            }
        }
        if problems.is_empty() { Ok(out) } else { Err(problems) }
    }

    /// The user whose token the request carries, allowed to do `need`.
    pub fn authorize(&self, headers: &HeaderMap, need: Need) -> Result<&User, ApiError> {
        let token = bearer(headers).ok_or_else(|| {
            ApiError::unauthorized("missing `Authorization: Bearer <token>` header")
        })?;
        let d = digest(token.as_bytes());
        // Compare against every user, so timing does not tell which matched.
        let mut found = None;
        for u in &self.users {
            if bool::from(u.digest.ct_eq(&d)) {
                found = Some(u);
            }
        }
        let user = found
            .ok_or_else(|| refused(ApiError::unauthorized("the bearer token is not valid")))?;
        if !user.may(need) {
            return Err(ApiError::forbidden(format!(
                "user `{}` may not do this: it needs the role {}",
                user.name,
                need.roles()
            )));
        }
        Ok(user)
    }
}

/// `[server]` limits that cannot work as written, each naming its key.
fn server_problems(server: &crate::config::ServerConfig) -> Vec<String> {
    let mut problems = Vec::new();
    for (key, value) in
        [("header_read_timeout", server.header_read_timeout), ("idle_timeout", server.idle_timeout)]
    {
        if value.as_millis() == 0 {
            problems.push(format!(
                "[server] {key} = \"{value}\" would close every connection at once: give it a duration such as \"10s\""
            ));
        }
    }
    for (key, value) in [
        ("max_connections", server.max_connections),
        ("max_streams_per_user", server.max_streams_per_user),
    ] {
        if value == 0 {
            problems
                .push(format!("[server] {key} = 0 would refuse everyone: it must be at least 1"));
        }
    }
    problems
}

impl Identities {
    /// Checks the bearer token `/metrics` requires, if `[server]
    /// metrics_token_env` names one (constant-time, as API tokens).
    pub fn authorize_metrics(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(expected) = &self.metrics else { return Ok(()) };
        let token = bearer(headers).ok_or_else(|| {
            ApiError::unauthorized(
                "/metrics needs an `Authorization: Bearer <token>` header ([server] metrics_token_env)",
            )
        })?;
        if bool::from(digest(token.as_bytes()).ct_eq(expected)) {
            Ok(())
        } else {
            Err(refused(ApiError::unauthorized("the bearer token is not valid for /metrics")))
        }
    }
}

/// Failed authentications allowed per window, process-wide: past them,
/// wrong tokens get 429 (guessing is throttled; a valid token still works).
const FAILURES_PER_WINDOW: u32 = 50;
const FAILURE_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);

static FAILURES: std::sync::Mutex<Option<(std::time::Instant, u32)>> = std::sync::Mutex::new(None);

/// Counts a refused authentication; 429 instead once the window's budget is spent.
fn refused(error: ApiError) -> ApiError {
    let mut window = FAILURES.lock().unwrap_or_else(|e| e.into_inner());
    let now = std::time::Instant::now();
    let (start, count) = match *window {
        Some((start, count)) if now.duration_since(start) < FAILURE_WINDOW => (start, count + 1),
        _ => (now, 1),
    };
    *window = Some((start, count));
    if count > FAILURES_PER_WINDOW {
        let wait = FAILURE_WINDOW.saturating_sub(now.duration_since(start)).as_secs().max(1);
        return ApiError::new(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many failed authentications; try again in {wait}s"),
        )
        .retry_after(wait);
    }
    error
}

/// The token of an `Authorization: Bearer …` header.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

impl Hook {
    /// Checks the caller: the bearer token, or the signature of `body`
    /// (then what it proved, for the replay check).
    pub fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Option<lifeboat_notify::signature::Verified>, ApiError> {
        self.check(headers, body).map_err(refused)
    }

    fn check(
        &self,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Option<lifeboat_notify::signature::Verified>, ApiError> {
        match &self.auth {
            HookAuth::Bearer(expected) => {
                let token = bearer(headers).ok_or_else(|| {
                    ApiError::unauthorized(format!(
                        "hook `{}` needs an `Authorization: Bearer <token>` header",
                        self.name
                    ))
                })?;
                if bool::from(digest(token.as_bytes()).ct_eq(expected)) {
                    Ok(None)
                } else {
                    Err(ApiError::unauthorized(format!(
                        "the bearer token is not valid for hook `{}`",
                        self.name
                    )))
                }
            }
            HookAuth::Hmac(secret) => {
                use lifeboat_notify::signature;
                let header = headers
                    .get(signature::HEADER)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| {
                        ApiError::unauthorized(format!(
                            "hook `{}` needs an {} header (t=<unix seconds>,v1=<hex hmac-sha256>)",
                            self.name,
                            signature::HEADER
                        ))
                    })?;
                let now = chrono::Utc::now().timestamp();
                signature::verify_signed(secret, header, body, now, signature::DEFAULT_WINDOW_SECS)
                    .map(Some)
                    .map_err(|e| ApiError::unauthorized(e.to_string()))
            }
        }
    }

    /// Bearer hooks can be refused before the body is read.
    pub fn needs_body_to_verify(&self) -> bool {
        matches!(self.auth, HookAuth::Hmac(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{HookConfig, UserConfig};

    fn config() -> Config {
        let mut c = Config::default();
        c.users.push(UserConfig {
            name: "alice".into(),
            token_env: "T_ALICE".into(),
            roles: vec![Role::Operator],
        });
        c.users.push(UserConfig {
            name: "vic".into(),
            token_env: "T_VIC".into(),
            roles: vec![Role::Viewer],
        });
        c.hooks.insert(
            "am".into(),
            HookConfig {
                format: HookFormat::Alertmanager,
                bearer_token_env: Some("T_HOOK".into()),
                ..Default::default()
            },
        );
        c
    }

    fn env(k: &str) -> Option<String> {
        match k {
            "T_ALICE" => Some("alice-token".into()),
            "T_VIC" => Some("vic-token".into()),
            "T_HOOK" => Some("hook-token".into()),
            _ => None,
        }
    }

    fn headers(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
        h
    }

    #[test]
    fn roles_gate_each_kind_of_request() {
        let ids = Identities::with_env(&config(), &env).unwrap();
        assert_eq!(ids.authorize(&headers("alice-token"), Need::Operate).unwrap().name, "alice");
        assert_eq!(ids.authorize(&headers("vic-token"), Need::Read).unwrap().name, "vic");
        assert_eq!(ids.authorize(&headers("vic-token"), Need::Operate).unwrap_err().status, 403);
        assert_eq!(ids.authorize(&headers("alice-token"), Need::Decide).unwrap_err().status, 403);
        assert_eq!(ids.authorize(&headers("nope"), Need::Read).unwrap_err().status, 401);
        assert_eq!(ids.authorize(&HeaderMap::new(), Need::Read).unwrap_err().status, 401);
    }

    #[test]
    fn every_missing_secret_is_named_with_its_owner() {
        let mut c = config();
        c.hooks.insert(
            "both".into(),
            HookConfig {
                format: HookFormat::Json,
                bearer_token_env: Some("A".into()),
                hmac_secret_env: Some("B".into()),
                ..Default::default()
            },
        );
        c.hooks.insert(
            "neither".into(),
            HookConfig { format: HookFormat::Json, ..Default::default() },
        );
        let problems =
            Identities::with_env(&c, &|k| (k != "T_VIC").then(|| env(k)).flatten()).unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:#?}");
        assert!(problems[0].contains("user `vic`") && problems[0].contains("T_VIC is not set"));
        assert!(problems[1].contains("hook `both`") && problems[1].contains("choose one"));
        assert!(problems[2].contains("hook `neither`"));
    }
}
