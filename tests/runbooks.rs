//! The example runbooks in `workflows/` run for real: the `lifeboat` binary
//! drives a fresh simulated estate (`workflows/estate/`) per test — its own
//! state directory in the sandbox and its own port — and each test asserts
//! on the estate's final state (roles, fences, weights, files). On SQLite or
//! Postgres, as the Sandbox picks.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{Sandbox, root, stdout, step};

const PASSPHRASE: &str = "correct horse battery staple";

/// The estate binary, built once per test process (debug profile, next to
/// the `lifeboat` under test, so `CARGO_TARGET_DIR` is honoured).
fn estate_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let profile_dir = PathBuf::from(env!("CARGO_BIN_EXE_lifeboat"))
            .parent()
            .expect("lifeboat's directory")
            .to_path_buf();
        let target_dir = profile_dir.parent().expect("the target directory").to_path_buf();
        let out = Command::new(env!("CARGO"))
            .args(["build", "-q", "-p", "lifeboat-estate", "--target-dir"])
            .arg(&target_dir)
            .current_dir(root())
            .output()
            .expect("run cargo build -p lifeboat-estate");
        assert!(
            out.status.success(),
            "building the estate failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        profile_dir.join("estate")
    })
    .clone()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().unwrap().port()
}

/// The repository's example configuration (channels, groups, hooks the
/// runbooks name), without its database and directory settings.
fn repo_config() -> String {
    std::fs::read_to_string(root().join("lifeboat.toml"))
        .expect("read lifeboat.toml")
        .lines()
        .filter(|l| {
            !["database_url", "workflows_dir", "templates_dir"].iter().any(|k| l.starts_with(k))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

pub(crate) fn workflow(name: &str) -> String {
    root().join("workflows").join(format!("{name}.yaml")).display().to_string()
}

/// A fresh estate for one test, stopped when dropped (also on panic).
pub(crate) struct Estate {
    dir: PathBuf,
    port: u16,
}

impl Estate {
    /// A sandbox with its own estate: `ESTATE_*` set for every lifeboat
    /// process, `workflows/estate/estate` linked into the sandbox (steps run
    /// there), the estate up and reset.
    pub(crate) fn start(name: &str) -> (Sandbox, Estate) {
        let bin = estate_bin();
        let port = free_port();
        let sb = Sandbox::new(name).config(&repo_config());
        let dir = sb.path("estate-state");
        let sb = sb
            .env("ESTATE_DIR", dir.to_str().unwrap())
            .env("ESTATE_PORT", &port.to_string())
            .env("ESTATE_BIN", bin.to_str().unwrap())
            .env("LIFEBOAT_SECRET_BACKUP_PASSPHRASE", PASSPHRASE);
        std::fs::create_dir_all(sb.path("workflows/estate")).unwrap();
        std::os::unix::fs::symlink(
            root().join("workflows/estate/estate"),
            sb.path("workflows/estate/estate"),
        )
        .expect("link the estate wrapper into the sandbox");
        let estate = Estate { dir, port };
        estate.ok(&["up"]);
        estate.ok(&["reset"]);
        (sb, estate)
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `-i estate_url=…` for the runbooks.
    pub(crate) fn input(&self) -> String {
        format!("estate_url={}", self.url())
    }

    /// `estate ARGS…` through the wrapper: (success, last stdout line as JSON).
    fn run(&self, args: &[&str]) -> (bool, Value) {
        let out = Command::new(root().join("workflows/estate/estate"))
            .args(args)
            .env("ESTATE_DIR", &self.dir)
            .env("ESTATE_PORT", self.port.to_string())
            .env("ESTATE_BIN", estate_bin())
            .env_remove("ESTATE_URL")
            .output()
            .expect("run the estate");
        let text = stdout(&out);
        let last = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("null");
        let doc = serde_json::from_str(last).unwrap_or(Value::Null);
        (out.status.success(), doc)
    }

    pub(crate) fn ok(&self, args: &[&str]) -> Value {
        let (ok, doc) = self.run(args);
        assert!(ok, "estate {args:?} failed: {doc}");
        doc
    }

    pub(crate) fn status(&self) -> Value {
        self.ok(&["status"])
    }

    /// The estate as a failover to dc02 leaves it, with dc01 repaired.
    fn failed_over(&self) {
        self.ok(&["break", "dc01"]);
        self.ok(&["fence", "dc01"]);
        self.ok(&["promote", "dc02"]);
        self.ok(&["traffic", "dc01=0", "dc02=100"]);
        self.ok(&["heal", "dc01"]);
    }
}

impl Drop for Estate {
    fn drop(&mut self) {
        let _ = self.run(&["down"]);
    }
}

pub(crate) fn site<'a>(status: &'a Value, name: &str) -> &'a Value {
    &status["sites"][name]
}

pub(crate) fn weight(status: &Value, name: &str) -> u64 {
    status["weights"][name].as_u64().unwrap_or_else(|| panic!("no weight for {name}: {status}"))
}

fn step_status<'a>(doc: &'a Value, id: &str) -> &'a str {
    step(doc, id)["status"].as_str().unwrap_or("?")
}

pub(crate) fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

// --- failover ---------------------------------------------------------------

#[test]
fn failover_p0_fences_the_dead_primary_promotes_the_replica_and_moves_traffic() {
    let (sb, estate) = Estate::start("rb-failover");
    estate.ok(&["break", "dc01"]);
    let started = Instant::now();
    let (code, doc) =
        sb.run_wait(&workflow("failover"), &["failed_site=dc01", "severity=P0", &estate.input()]);
    assert_eq!(code, Some(0), "{doc:#}");
    assert_eq!(doc["status"], "succeeded");
    assert!(started.elapsed() < Duration::from_secs(30), "took {:?}", started.elapsed());

    let s = estate.status();
    assert_eq!(site(&s, "dc02")["role"], "primary", "{s}");
    assert_eq!(s["primary"], "dc02", "dc02 takes the writes: {s}");
    assert_eq!(site(&s, "dc01")["fenced"], true, "{s}");
    assert_eq!((weight(&s, "dc01"), weight(&s, "dc02")), (0, 100));
    assert_eq!(site(&s, "dc03")["replaying"], true, "the standby follows the new primary: {s}");

    assert_eq!(step_status(&doc, "approve"), "skipped", "P0 does not wait for a person");
    for id in ["primary_health", "primary_health_cli"] {
        assert_eq!(step_status(&doc, id), "failed", "{id}: the failed probe is the signal");
    }
    let outputs = &doc["outputs"];
    assert_eq!(text(&outputs["decided_by"]), "automatic (P0)");
    assert_eq!(text(&outputs["traffic_after"]), "dc01=0 dc02=100 dc03=0");
    let summary = text(&outputs["summary"]);
    assert!(summary.contains("dc02 promoted") && summary.contains("within the RTO"), "{summary}");
}

/// The failover's `happy-path` drill scenario (issue #14) holds.
#[test]
fn failover_happy_path_drill_passes_its_scenario() {
    let (sb, estate) = Estate::start("rb-failover-drill");
    let input = estate.input();
    let out = sb.lifeboat(&[
        "drill",
        &workflow("failover"),
        "--scenario",
        "happy-path",
        "-i",
        &input,
        "--wait",
        "--json",
    ]);
    let doc: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", stdout(&out), crate::util::stderr(&out)));
    assert_eq!(out.status.code(), Some(0), "{:#}", doc["verdict"]);
    assert_eq!(
        (doc["mode"].as_str(), doc["verdict"]["passed"].as_bool()),
        (Some("drill"), Some(true))
    );
    assert_eq!(estate.status()["primary"], "dc02");
}

#[test]
fn failover_rolls_back_and_unfences_when_promote_fails() {
    let (sb, estate) = Estate::start("rb-failover-promote-fails");
    estate.ok(&["break", "dc01"]);
    estate.ok(&["fail-next", "promote", "dc02"]);
    let (code, doc) =
        sb.run_wait(&workflow("failover"), &["failed_site=dc01", "severity=P0", &estate.input()]);
    assert_eq!(code, Some(1), "{doc:#}");
    assert_eq!(doc["status"], "rolled_back", "{doc:#}");
    assert_eq!(step_status(&doc, "promote"), "failed");
    let error = step(&doc, "promote")["error"].as_str().unwrap_or_default();
    assert!(error.contains("injected fault"), "{error}");
    assert_eq!(step_status(&doc, "fence_primary"), "rolled_back");

    let s = estate.status();
    assert_eq!(site(&s, "dc01")["fenced"], false, "the rollback unfenced dc01: {s}");
    assert_eq!(site(&s, "dc01")["role"], "primary", "{s}");
    assert_eq!(site(&s, "dc02")["role"], "replica", "{s}");
    assert_eq!((weight(&s, "dc01"), weight(&s, "dc02")), (100, 0), "traffic never moved");
}

#[test]
fn failover_stops_before_promoting_while_replication_lag_stays_above_the_rpo() {
    let (sb, estate) = Estate::start("rb-failover-lag");
    estate.ok(&["lag", "dc02", "10m"]);
    estate.ok(&["break", "dc01"]);
    let (code, doc) = sb.run_wait(
        &workflow("failover"),
        &[
            "failed_site=dc01",
            "severity=P0",
            "max_lag_seconds=5",
            "replay_wait_seconds=2",
            &estate.input(),
        ],
    );
    assert_eq!(code, Some(1), "{doc:#}");
    assert_eq!(doc["status"], "rolled_back", "{doc:#}");
    assert_eq!(step_status(&doc, "rpo_guard"), "failed");
    let error = step(&doc, "rpo_guard")["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("not promoting dc02") && error.contains("RPO guard is 5s"),
        "the error says why: {error}"
    );
    assert_eq!(step_status(&doc, "promote"), "cancelled", "{doc:#}");
    let lag = step(&doc, "wait_for_replay")["outputs"]["json"]["lag_seconds"].as_f64().unwrap();
    assert!(lag > 5.0, "the recorded lag is above the guard: {lag}");

    let s = estate.status();
    assert_eq!(site(&s, "dc02")["role"], "replica", "dc02 was not promoted: {s}");
    assert_eq!(site(&s, "dc01")["fenced"], false, "the fence was rolled back: {s}");
}

// --- failback ---------------------------------------------------------------

#[test]
fn failback_shifts_traffic_gradually_and_demotes_the_dr_site() {
    let (sb, estate) = Estate::start("rb-failback");
    estate.failed_over();
    let (code, doc) = sb
        .run_wait(&workflow("failback"), &["change_id=CHG-42", "soak_seconds=0", &estate.input()]);
    assert_eq!(code, Some(0), "{doc:#}");
    assert_eq!(step_status(&doc, "approve"), "skipped", "an approved change is not asked again");
    let canary: Vec<u64> = step(&doc, "shift_traffic")["outputs"]["items"]
        .as_array()
        .expect("for_each items")
        .iter()
        .map(|i| i["outputs"]["json"]["weight"].as_u64().unwrap())
        .collect();
    assert_eq!(canary, [10, 25, 50, 100]);

    let s = estate.status();
    assert_eq!(s["primary"], "dc01", "{s}");
    assert_eq!(site(&s, "dc01")["fenced"], false, "{s}");
    assert_eq!(site(&s, "dc02")["role"], "replica", "the DR site was demoted: {s}");
    assert_eq!(site(&s, "dc02")["replaying"], true, "{s}");
    assert_eq!((weight(&s, "dc01"), weight(&s, "dc02")), (100, 0));
    assert_eq!(text(&doc["outputs"]["approved_by"]), "change CHG-42");
}

#[test]
fn failback_regression_at_50_percent_returns_traffic_to_the_last_good_step() {
    let (sb, estate) = Estate::start("rb-failback-regress");
    estate.failed_over();
    estate.ok(&["errors", "dc01", "0.25", "--at-weight", "50"]);
    let (code, doc) = sb
        .run_wait(&workflow("failback"), &["change_id=CHG-43", "soak_seconds=0", &estate.input()]);
    assert_eq!(code, Some(1), "{doc:#}");
    assert_eq!(step_status(&doc, "shift_traffic"), "failed");
    let error = step(&doc, "shift_traffic")["error"].as_str().unwrap_or_default();
    assert!(error.contains("canary at 50% is unhealthy"), "{error}");
    assert_eq!(step_status(&doc, "demote_dr"), "cancelled", "the role switch never started");

    let s = estate.status();
    assert_eq!((weight(&s, "dc01"), weight(&s, "dc02")), (25, 75), "the last good step: {s}");
    assert_eq!(s["primary"], "dc02", "dc02 still serves writes: {s}");
}

// --- backup and restore test ----------------------------------------------------

#[test]
fn backup_then_restore_test_round_trips_and_keeps_only_the_newest_backups() {
    let (sb, estate) = Estate::start("rb-backup");
    let backups = sb.path("backups").display().to_string();
    let offsite = sb.path("offsite").display().to_string();
    let scratch = sb.path("scratch").display().to_string();
    let inputs = [
        format!("backup_dir={backups}"),
        format!("offsite_dir={offsite}"),
        "keep_daily=1".to_string(),
        estate.input(),
    ];
    let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    let mut names = Vec::new();
    for _ in 0..2 {
        let (code, doc) = sb.run_wait(&workflow("backup"), &inputs);
        assert_eq!(code, Some(0), "{doc:#}");
        names.push(text(&doc["outputs"]["name"]));
        assert!(text(&doc["outputs"]["rows"]).parse::<u64>().unwrap() >= 1000, "{doc:#}");
    }
    let newest = &names[1];
    for dir in [&backups, &offsite] {
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        assert_eq!(
            files,
            [
                format!("{newest}.db.gz.enc"),
                format!("{newest}.manifest.json"),
                format!("{newest}.sha256"),
            ],
            "{dir}: retention kept one complete backup, and no plaintext"
        );
    }
    let encrypted = std::fs::read(format!("{offsite}/{newest}.db.gz.enc")).unwrap();
    assert!(encrypted.starts_with(b"Salted__"), "openssl's encrypted format");
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{offsite}/{newest}.manifest.json")).unwrap(),
    )
    .unwrap();

    let (code, doc) = sb.run_wait(
        &workflow("restore-test"),
        &[&format!("backup_dir={offsite}"), &format!("scratch_dir={scratch}")],
    );
    assert_eq!(code, Some(0), "{doc:#}");
    assert_eq!(text(&doc["outputs"]["backup"]), *newest);
    assert_eq!(text(&doc["outputs"]["rows_restored"]), manifest["rows"].to_string());
    let restore_seconds: f64 = text(&doc["outputs"]["restore_seconds"]).parse().unwrap();
    assert!(restore_seconds < 30.0, "restore time is recorded: {restore_seconds}");
    assert!(
        std::fs::read_dir(&scratch).unwrap().next().is_none(),
        "a passed restore test cleans its scratch copy"
    );
    drop(estate);
}

#[test]
fn a_corrupted_backup_fails_the_restore_test_and_keeps_the_scratch_copy() {
    let (sb, estate) = Estate::start("rb-restore-corrupt");
    let backups = sb.path("backups").display().to_string();
    let offsite = sb.path("offsite").display().to_string();
    let scratch = sb.path("scratch").display().to_string();
    let (code, doc) = sb.run_wait(
        &workflow("backup"),
        &[&format!("backup_dir={backups}"), &format!("offsite_dir={offsite}"), &estate.input()],
    );
    assert_eq!(code, Some(0), "{doc:#}");
    let name = text(&doc["outputs"]["name"]);
    estate.ok(&["corrupt", &offsite]);

    let (code, doc) = sb.run_wait(
        &workflow("restore-test"),
        &[&format!("backup_dir={offsite}"), &format!("scratch_dir={scratch}")],
    );
    assert_eq!(code, Some(1), "{doc:#}");
    assert_eq!(doc["status"], "failed", "{doc:#}");
    assert_eq!(step_status(&doc, "verify_checksum"), "failed");
    assert_eq!(step_status(&doc, "decrypt"), "skipped", "corrupt data is never decrypted");
    assert_eq!(step_status(&doc, "cleanup"), "skipped");
    assert_eq!(step_status(&doc, "notify_failure"), "succeeded");
    let error = step(&doc, "verdict")["error"].as_str().unwrap_or_default();
    assert!(error.contains("checksum: failed"), "{error}");
    assert!(
        sb.path(&format!("scratch/{name}/{name}.db.gz.enc")).exists(),
        "the scratch copy is kept for the investigation"
    );
    let run = doc["id"].as_str().unwrap();
    let logs = stdout(&sb.ok(&["logs", run]));
    assert!(
        logs.lines().any(|l| l.contains("notification") && l.contains("notify_failure")),
        "a notification is recorded:\n{logs}"
    );
}

// --- crisis escalation --------------------------------------------------------

#[test]
fn every_runbook_validates_against_the_example_configuration() {
    let out =
        crate::util::lifeboat(&["--config", "lifeboat.toml", "validate", "workflows", "--json"]);
    let report: Value = serde_json::from_slice(&out.stdout).expect("validate --json");
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    for name in ["failover", "failback", "backup", "restore-test", "crisis-escalation"] {
        let file = report
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["workflow"] == name)
            .unwrap_or_else(|| panic!("{name} not validated: {report:#}"));
        assert_eq!(file["valid"], true, "{file:#}");
    }
    // Crisis escalation's plan: the severity ladders and who hears about it.
    let out = crate::util::lifeboat(&[
        "graph",
        "workflows/crisis-escalation.yaml",
        "--format",
        "mermaid",
    ]);
    let graph = stdout(&out);
    for id in ["declare", "page_urgent", "page_normal", "acknowledgement", "owner_announced"] {
        assert!(graph.contains(id), "{id} missing from the graph:\n{graph}");
    }
}

// --- people: approval and acknowledgement ------------------------------------

/// The tokens and hook secrets `lifeboat serve` requires for the example
/// configuration (it refuses to start with an unset one).
fn with_people(sb: Sandbox) -> Sandbox {
    sb.env("LIFEBOAT_TOKEN_ALICE", "tok-alice")
        .env("LIFEBOAT_TOKEN_BOB", "tok-bob")
        .env("LIFEBOAT_TOKEN_CAROL", "tok-carol")
        .env("LIFEBOAT_HOOK_TOKEN", "tok-hook")
        .env("LIFEBOAT_INCIDENTS_HMAC", "hmac-incidents")
}

/// `lifeboat ARGS` as a configured user (their token in LIFEBOAT_TOKEN).
fn as_user(sb: &Sandbox, user: &str, args: &[&str]) -> std::process::Output {
    let mut cmd = sb.command(args);
    cmd.args(["--as", user]).env("LIFEBOAT_TOKEN", format!("tok-{user}"));
    cmd.output().expect("run lifeboat")
}

/// Starts a run as OS user `user` (the run's requester); returns its id.
fn start_as(sb: &Sandbox, user: &str, file: &str, inputs: &[&str]) -> String {
    let mut cmd = sb.command(&["run", file]);
    for i in inputs {
        cmd.args(["-i", i]);
    }
    let out = cmd.env("USER", user).output().expect("run lifeboat");
    assert!(out.status.success(), "{}", crate::util::stderr(&out));
    stdout(&out).trim().to_string()
}

#[test]
fn failover_below_p0_waits_for_a_lead_who_did_not_start_it() {
    let (sb, estate) = Estate::start("rb-failover-approval");
    let sb = with_people(sb);
    estate.ok(&["break", "dc01"]);
    let run = start_as(
        &sb,
        "alice",
        &workflow("failover"),
        &["failed_site=dc01", "severity=P1", &estate.input()],
    );
    let serve = sb.serve();
    sb.wait_for(&run, Duration::from_secs(60), |d| step_status(d, "approve") == "waiting");
    // Nothing changed in the estate while the decision is pending.
    assert_eq!(site(&estate.status(), "dc01")["fenced"], false);

    let refused = as_user(&sb, "alice", &["approve", &run, "approve"]);
    assert!(!refused.status.success());
    assert!(crate::util::stderr(&refused).contains("started this run"));
    let ok = as_user(&sb, "bob", &["approve", &run, "approve", "--comment", "dc01 is gone"]);
    assert!(ok.status.success(), "{}", crate::util::stderr(&ok));

    let doc = sb.wait_finished(&run, Duration::from_secs(60));
    drop(serve);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    assert_eq!(step(&doc, "approve")["outputs"]["approved_by"], serde_json::json!(["bob"]));
    assert_eq!(estate.status()["primary"], "dc02");
    // The decision is on the audit trail.
    let audit = stdout(&sb.ok(&["audit", "list", "--run", &run, "--json"]));
    assert!(audit.contains("\"approve\"") && audit.contains("bob"), "{audit}");
}

#[test]
fn crisis_escalation_pages_until_someone_acknowledges() {
    let (sb, _estate) = Estate::start("rb-crisis");
    let sb = with_people(sb);
    let run = start_as(
        &sb,
        "alice",
        &workflow("crisis-escalation"),
        &["incident_id=INC-7", "title=Checkout 5xx", "severity=P1", "service=checkout"],
    );
    let serve = sb.serve();
    let doc =
        sb.wait_for(&run, Duration::from_secs(60), |d| step_status(d, "page_urgent") == "waiting");
    assert_eq!(step_status(&doc, "page_normal"), "skipped", "P1 takes the urgent ladder");
    let ack = as_user(&sb, "carol", &["ack", &run, "page_urgent", "--comment", "on it"]);
    assert!(ack.status.success(), "{}", crate::util::stderr(&ack));

    let doc = sb.wait_finished(&run, Duration::from_secs(60));
    drop(serve);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    assert_eq!(text(&doc["outputs"]["acked_by"]), "carol");
    assert_eq!(text(&doc["outputs"]["tier"]), "1");
    // Tier 1 was paged through the outbox (the pager's routing key is not set
    // here, so that message fails — and the run goes on regardless).
    let pages: Vec<&Value> = doc["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["event"] == "escalated" && n["step"] == "page_urgent")
        .collect();
    assert!(pages.iter().any(|n| n["channel"] == "oncall-pager"), "{:#}", doc["notifications"]);
}
