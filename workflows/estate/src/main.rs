//! `estate`: a small simulated estate for lifeboat's runbooks — three sites
//! (dc01 primary, dc02 active secondary, dc03 standby), a traffic director,
//! a replicated SQLite database, fencing and fault injection — run as a
//! daemon with an HTTP control plane, driven by this CLI.
//!
//! Exit status: 0 done/healthy, 1 refused or failed (reason on stderr),
//! 2 usage. A verb's result is ONE JSON object on the last stdout line.

mod client;
mod daemon;
mod db;
mod state;

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use serde_json::{Value, json};

#[derive(Parser)]
#[command(name = "estate", about = "A simulated estate for lifeboat's runbooks", version)]
struct Cli {
    /// State directory (site databases, state.json, pidfile, log).
    #[arg(long, env = "ESTATE_DIR", default_value = "workflows/estate/.state", global = true)]
    dir: PathBuf,
    /// Control-plane URL; default http://127.0.0.1:$ESTATE_PORT.
    #[arg(long, env = "ESTATE_URL", global = true)]
    url: Option<String>,
    /// Port when no URL is given.
    #[arg(long, env = "ESTATE_PORT", default_value_t = 9100, global = true)]
    port: u16,
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Subcommand)]
enum Verb {
    /// Start the estate daemon in the background (idempotent).
    Up,
    /// Stop the daemon.
    Down,
    /// A fresh, healthy estate (the daemon keeps running if it was).
    Reset,
    /// Run the daemon in the foreground (what `up` starts).
    #[command(hide = true)]
    Serve,
    /// Everything: roles, health, fences, lag, rows, weights, faults.
    Status,
    /// Exit 0 if SITE is up, 1 if down.
    Health { site: String },
    /// SITE's role and fence.
    Role { site: String },
    /// Cut SITE off from clients, storage and replication (works while it is down).
    Fence { site: String },
    /// Lift the fence (refused for a stale primary: split-brain guard).
    Unfence { site: String },
    /// Make SITE the primary (refused while another unfenced site is primary).
    Promote { site: String },
    /// Make SITE a replica of the current primary, discarding writes that never replicated.
    Demote { site: String },
    /// SITE's replication lag; with DELAY (e.g. 30s, 0s), inject that replay delay.
    Lag { site: String, delay: Option<String> },
    /// Set traffic weights, e.g. `dc01=0 dc02=100` (others keep theirs; total 100).
    Traffic {
        #[arg(required = true)]
        weights: Vec<String>,
    },
    /// The weights as one line of `traffic` arguments.
    Weights,
    /// SITE's error rate; with --max, exit 1 when above it.
    ErrorRate {
        site: String,
        #[arg(long)]
        max: Option<f64>,
    },
    /// Inject an error rate at SITE once its weight reaches --at-weight (0 clears).
    Errors {
        site: String,
        rate: f64,
        #[arg(long, default_value_t = 0)]
        at_weight: u32,
    },
    /// Take SITE down.
    Break { site: String },
    /// Bring SITE back (its role and fence are unchanged).
    Heal { site: String },
    /// Make the next VERB (promote, demote, fence, unfence, traffic) on SITE fail.
    FailNext { verb: String, site: String },
    /// Consistent snapshot of the primary's (or --site's) database into DEST.
    Snapshot {
        dest: PathBuf,
        #[arg(long)]
        site: Option<String>,
    },
    /// Load snapshot SRC into a new database at DEST (replaced).
    Restore { src: PathBuf, dest: PathBuf },
    /// Rows in DB: a site name or a database file.
    Rowcount { db: String },
    /// Integrity check of database file DB: exit 0 ok, 1 corrupt.
    Integrity { db: PathBuf },
    /// Corrupt a file (a backup) in place; a directory: its newest *.enc file.
    Corrupt { path: PathBuf },
}

/// A verb's outcome: the JSON to print and whether it succeeded.
type Outcome = Result<(Value, bool), String>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let url = cli.url.clone().unwrap_or_else(|| format!("http://127.0.0.1:{}", cli.port));
    let dir = std::path::absolute(&cli.dir).unwrap_or_else(|_| cli.dir.clone());
    match run(cli.verb, &dir, &url) {
        Ok((mut doc, ok)) => {
            // Every result says when it was observed (scripts measure waits with it).
            if let Some(map) = doc.as_object_mut() {
                map.entry("at_ms").or_insert_with(|| json!(daemon::now_ms()));
            }
            println!("{doc}");
            if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
        Err(message) => {
            eprintln!("estate: {message}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio: {e}"))
}

fn run(verb: Verb, dir: &Path, url: &str) -> Outcome {
    let site_post =
        |site: &str, action: &str| call(url, "POST", &format!("/sites/{site}/{action}"), None);
    match verb {
        Verb::Up => up(dir, url),
        Verb::Down => down(dir, url),
        Verb::Reset => reset(dir, url),
        Verb::Serve => {
            runtime()?.block_on(daemon::serve(dir.to_path_buf(), client::port(url)?))?;
            Ok((json!({"stopped": true}), true))
        }
        Verb::Status => call(url, "GET", "/status", None),
        Verb::Health { site } => {
            let (status, doc) = raw(url, "GET", &format!("/sites/{site}/health"), None)?;
            match status {
                200 => Ok((doc, true)),
                503 => {
                    eprintln!("estate: {site} is down");
                    Ok((doc, false))
                }
                _ => Err(error_of(&doc, status)),
            }
        }
        Verb::Role { site } => call(url, "GET", &format!("/sites/{site}/role"), None),
        Verb::Fence { site } => site_post(&site, "fence"),
        Verb::Unfence { site } => site_post(&site, "unfence"),
        Verb::Promote { site } => site_post(&site, "promote"),
        Verb::Demote { site } => site_post(&site, "demote"),
        Verb::Break { site } => site_post(&site, "break"),
        Verb::Heal { site } => site_post(&site, "heal"),
        Verb::Lag { site, delay: None } => call(url, "GET", &format!("/sites/{site}/lag"), None),
        Verb::Lag { site, delay: Some(d) } => {
            let body = json!({"delay_ms": parse_duration(&d)?});
            call(url, "POST", &format!("/sites/{site}/lag"), Some(&body))
        }
        Verb::Traffic { weights } => {
            let mut map = BTreeMap::new();
            for pair in &weights {
                let (site, w) = pair
                    .split_once('=')
                    .ok_or_else(|| format!("`{pair}`: expected SITE=WEIGHT, e.g. dc02=100"))?;
                let w: u32 = w.parse().map_err(|_| format!("`{pair}`: weight must be 0..100"))?;
                map.insert(site.to_string(), w);
            }
            call(url, "POST", "/traffic", Some(&json!({"weights": map})))
        }
        Verb::Weights => {
            let (doc, _) = call(url, "GET", "/traffic", None)?;
            // Plain text on purpose: scripts pass it back to `traffic`.
            println!("{}", doc["line"].as_str().unwrap_or_default());
            std::process::exit(0);
        }
        Verb::ErrorRate { site, max } => {
            let (doc, _) = call(url, "GET", &format!("/metrics/error_rate?site={site}"), None)?;
            let rate = doc["error_rate"].as_f64().unwrap_or(1.0);
            let ok = max.is_none_or(|m| rate <= m);
            if !ok {
                eprintln!("estate: error rate of {site} is {rate}, above {}", max.unwrap_or(0.0));
            }
            Ok((doc, ok))
        }
        Verb::Errors { site, rate, at_weight } => {
            let body = json!({"rate": rate, "at_weight": at_weight});
            call(url, "POST", &format!("/sites/{site}/errors"), Some(&body))
        }
        Verb::FailNext { verb, site } => {
            call(url, "POST", "/faults/fail-next", Some(&json!({"verb": verb, "site": site})))
        }
        Verb::Snapshot { dest, site } => {
            let dest = std::path::absolute(&dest).map_err(|e| e.to_string())?;
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| format!("{}: {e}", parent.display()))?;
            }
            call(url, "POST", "/snapshot", Some(&json!({"dest": dest, "site": site})))
        }
        Verb::Restore { src, dest } => {
            if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)
                    .map_err(|e| format!("{}: {e}", parent.display()))?;
            }
            let rows = runtime()?.block_on(db::restore(&src, &dest))?;
            Ok((json!({"path": dest, "rows": rows, "from": src}), true))
        }
        Verb::Rowcount { db } if is_site(&db) => {
            call(url, "GET", &format!("/sites/{db}/rows"), None)
        }
        Verb::Rowcount { db } => {
            let rows = runtime()?.block_on(db::rowcount(Path::new(&db)))?;
            Ok((json!({"path": db, "rows": rows}), true))
        }
        Verb::Integrity { db } => match runtime()?.block_on(db::integrity(&db)) {
            Ok(detail) => Ok((json!({"path": db, "ok": true, "detail": detail}), true)),
            Err(detail) => {
                eprintln!("estate: {} is corrupt: {detail}", db.display());
                Ok((json!({"path": db, "ok": false, "detail": detail}), false))
            }
        },
        Verb::Corrupt { path } => corrupt(&path),
    }
}

fn is_site(name: &str) -> bool {
    name.len() > 2 && name.starts_with("dc") && name[2..].bytes().all(|b| b.is_ascii_digit())
}

/// `500ms`, `30s`, `5m`, `1h` -> milliseconds.
fn parse_duration(text: &str) -> Result<u64, String> {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (n, unit) = text.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("`{text}` is not a duration (e.g. 30s)"))?;
    let factor = match unit {
        "ms" => 1,
        "s" | "" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(format!("`{text}`: unknown unit `{unit}` (ms, s, m, h)")),
    };
    Ok(n * factor)
}

fn error_of(doc: &Value, status: u16) -> String {
    doc["error"].as_str().map(String::from).unwrap_or_else(|| format!("HTTP {status}"))
}

fn raw(url: &str, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Value), String> {
    client::request(url, method, path, body).map_err(|e| match e {
        client::Error::Down(m) => format!("{m}; start it with `estate up`"),
        client::Error::Other(m) => m,
    })
}

/// A request that must answer 2xx.
fn call(url: &str, method: &str, path: &str, body: Option<&Value>) -> Outcome {
    let (status, doc) = raw(url, method, path, body)?;
    if (200..300).contains(&status) { Ok((doc, true)) } else { Err(error_of(&doc, status)) }
}

/// The daemon answering at `url`, if it is the one of `dir`: its pid.
fn running(dir: &Path, url: &str) -> Result<Option<u32>, String> {
    match client::request(url, "GET", "/healthz", None) {
        Err(client::Error::Down(_)) => Ok(None),
        Err(client::Error::Other(m)) => Err(m),
        Ok((_, doc)) if doc["dir"].as_str() == Some(&dir.to_string_lossy()) => {
            Ok(doc["pid"].as_u64().map(|p| p as u32))
        }
        Ok((_, doc)) => Err(format!(
            "{url} is served by another estate (state directory {}); \
             use another ESTATE_PORT or stop it",
            doc["dir"]
        )),
    }
}

fn up(dir: &Path, url: &str) -> Outcome {
    let port = client::port(url)?;
    if let Some(pid) = running(dir, url)? {
        let (status, _) = call(url, "GET", "/status", None)?;
        return Ok((
            json!({"up": true, "already_running": true, "pid": pid, "status": status}),
            true,
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let log_path = dir.join("daemon.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| format!("{}: {e}", log_path.display()))?;
    let exe = std::env::current_exe().map_err(|e| format!("own path: {e}"))?;
    // Own process group, no inherited pipes: the daemon outlives the step
    // (or shell) that started it, like real infrastructure.
    let mut child = Command::new(exe)
        .arg("serve")
        .env("ESTATE_DIR", dir)
        .env("ESTATE_URL", url)
        .env("ESTATE_PORT", port.to_string())
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("start the daemon: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(pid) = running(dir, url)? {
            let (status, _) = call(url, "GET", "/status", None)?;
            return Ok((
                json!({"up": true, "already_running": false, "pid": pid, "status": status}),
                true,
            ));
        }
        if let Ok(Some(exit)) = child.try_wait() {
            // Lost a race with another `up`? Then that one answers.
            if let Some(pid) = running(dir, url)? {
                return Ok((json!({"up": true, "already_running": true, "pid": pid}), true));
            }
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            return Err(format!(
                "the daemon exited ({exit}); {}:\n{}",
                log_path.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the daemon did not answer at {url} within 15s; see {}",
                log_path.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn pid_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let state = stat.rsplit(')').next().unwrap_or("").split_whitespace().next();
        !matches!(state, Some("Z" | "X"))
    })
}

fn down(dir: &Path, url: &str) -> Outcome {
    let pidfile = daemon::pid_file(dir);
    let pid = running(dir, url)?
        .or_else(|| std::fs::read_to_string(&pidfile).ok().and_then(|p| p.trim().parse().ok()));
    let Some(pid) = pid.filter(|p| pid_alive(*p)) else {
        let _ = std::fs::remove_file(&pidfile);
        return Ok((json!({"up": false, "was_running": false}), true));
    };
    let _ = client::request(url, "POST", "/shutdown", None);
    let deadline = Instant::now() + Duration::from_secs(5);
    while pid_alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if pid_alive(pid) {
        let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
    }
    let _ = std::fs::remove_file(&pidfile);
    Ok((json!({"up": false, "was_running": true, "pid": pid}), true))
}

fn reset(dir: &Path, url: &str) -> Outcome {
    if running(dir, url)?.is_some() {
        let (status, _) = call(url, "POST", "/reset", None)?;
        return Ok((json!({"reset": true, "running": true, "status": status}), true));
    }
    // Not running: forget the state; the next `up` starts fresh. Backups
    // and other directories in the state directory are kept.
    let _ = std::fs::remove_file(dir.join("state.json"));
    if dir.join("sites").exists() {
        std::fs::remove_dir_all(dir.join("sites")).map_err(|e| format!("reset: {e}"))?;
    }
    Ok((json!({"reset": true, "running": false}), true))
}

/// Flips bytes in the middle of a file, as a bad disk or a bad copy would.
fn corrupt(path: &Path) -> Outcome {
    let target = if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "enc"))
            .collect();
        files.sort();
        files.pop().ok_or_else(|| format!("no *.enc file in {}", path.display()))?
    } else {
        path.to_path_buf()
    };
    let mut bytes = std::fs::read(&target).map_err(|e| format!("{}: {e}", target.display()))?;
    if bytes.is_empty() {
        return Err(format!("{} is empty", target.display()));
    }
    let at = bytes.len() / 2;
    let end = (at + 16).min(bytes.len());
    for b in &mut bytes[at..end] {
        *b ^= 0xFF;
    }
    std::fs::write(&target, &bytes).map_err(|e| format!("{}: {e}", target.display()))?;
    Ok((json!({"corrupted": target, "offset": at, "bytes": end - at}), true))
}
