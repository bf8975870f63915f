//! The lab runbooks (workflows/lab/) against the lab's real servers
//! (lab/lab.sh): a Postgres primary and streaming standby, BIND9 with
//! TSIG-keyed updates, HAProxy in front. In order, on one lab: a wrong TSIG
//! key or an unreachable HAProxy socket fails before anything changes; a
//! promote refused (the `standby` connection points at the primary) rolls
//! back (primary unfenced, DNS and HAProxy untouched); a standby behind the RPO is refused before
//! promoting; the happy failover (writes through HAProxy land on the new
//! primary, DNS answers it, no committed row lost); and the failback.
//! Skipped only where Postgres 15, BIND9 or HAProxy is not installed, and
//! never under scripts/test.sh (`util::tool_missing`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::util::{Sandbox, root, stderr, step};

/// A lab from `lab/lab.sh up`, torn down on drop.
struct Lab {
    env: HashMap<String, String>,
    dir: String,
    psql: PathBuf,
}

impl Lab {
    fn start() -> Option<Lab> {
        let bin = PathBuf::from("/usr/lib/postgresql/15/bin");
        let missing: Vec<&str> = [
            (bin.join("pg_rewind"), "postgresql-15"),
            (PathBuf::from("/usr/sbin/named"), "bind9"),
            (PathBuf::from("/usr/sbin/haproxy"), "haproxy"),
            (PathBuf::from("/usr/bin/dig"), "bind9-dnsutils"),
        ]
        .into_iter()
        .filter(|(path, _)| !path.exists())
        .map(|(_, package)| package)
        .collect();
        if !missing.is_empty() {
            crate::util::tool_missing(&format!("the lab needs {missing:?}"));
            return None;
        }
        let out = lab_sh(&["up"]);
        assert!(out.status.success(), "lab/lab.sh up failed:\n{}", stderr(&out));
        let env: HashMap<String, String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix("export ")?.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let dir = env["LIFEBOAT_LAB_DIR"].clone();
        Some(Lab { env, dir, psql: bin.join("psql") })
    }

    /// A sandbox with lab/lifeboat.toml's connections, people and channel,
    /// its connection URLs from the lab (`overrides` replace some).
    fn sandbox(&self, name: &str, overrides: &[(&str, &str)]) -> Sandbox {
        let config = std::fs::read_to_string(root().join("lab/lifeboat.toml")).unwrap();
        let from_users = &config[config.find("[[users]]").expect("lab/lifeboat.toml has users")..];
        let mut sb = Sandbox::new(name).config(from_users);
        for (k, v) in &self.env {
            sb = sb.env(k, v);
        }
        for (k, v) in overrides {
            sb = sb.env(k, v);
        }
        sb
    }

    /// `psql URL -tAc SQL`'s output, trimmed; panics when it fails.
    fn sql(&self, url_var: &str, sql: &str) -> String {
        let out = Command::new(&self.psql)
            .args([self.env[url_var].as_str(), "-XtAqc", sql])
            .env("PGCONNECT_TIMEOUT", "3")
            .output()
            .expect("run psql");
        assert!(out.status.success(), "psql {url_var} {sql}: {}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// What the lab's DNS server answers for db.lab.example A.
    fn dns(&self) -> String {
        let server = &self.env["LIFEBOAT_LAB_DNS_SERVER"];
        let (host, port) = server.split_once(':').unwrap();
        let out = Command::new("dig")
            .args(["+short", "+time=2", "+tries=1", "-p", port, &format!("@{host}")])
            .args(["db.lab.example", "A"])
            .output()
            .expect("run dig");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `lab/lab.sh status`: servers, DNS and HAProxy as a person reads them.
    fn status(&self) -> String {
        let out = lab_sh(&["status", &self.dir]);
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    fn break_it(&self, what: &[&str]) {
        let mut args = vec!["break", self.dir.as_str()];
        args.extend(what);
        let out = lab_sh(&args);
        assert!(out.status.success(), "lab/lab.sh {args:?}:\n{}", stderr(&out));
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = lab_sh(&["down", &self.dir]);
    }
}

fn lab_sh(args: &[&str]) -> std::process::Output {
    Command::new("bash")
        .arg(root().join("lab/lab.sh"))
        .args(args)
        .current_dir(Path::new("/tmp"))
        .output()
        .expect("run lab/lab.sh")
}

fn failover() -> String {
    root().join("workflows/lab/pg-failover.yaml").display().to_string()
}

fn error(doc: &Value, id: &str) -> String {
    step(doc, id)["error"].as_str().unwrap_or_default().to_string()
}

/// The lab as it starts: the primary takes writes, DNS and HAProxy point at it.
fn assert_untouched(lab: &Lab, when: &str) {
    let status = lab.status();
    assert!(
        status.contains("postgres primary (127.0.0.1") && status.contains("primary (takes writes)"),
        "{when}: the primary is not writable:\n{status}"
    );
    assert!(status.contains("standby (read-only)"), "{when}: the standby changed:\n{status}");
    assert_eq!(lab.dns(), "127.0.0.1", "{when}: DNS changed:\n{status}");
    assert!(status.contains(" UP weight 100") && status.contains("pg2 127.0.0.2"), "{status}");
    assert!(
        status.lines().any(|l| l.starts_with("haproxy: pg2") && l.ends_with("weight 0")),
        "{when}: HAProxy changed:\n{status}"
    );
}

#[test]
fn the_lab_fails_over_and_back_and_undoes_what_a_failure_leaves() {
    let Some(lab) = Lab::start() else { return };
    let primary_url = lab.env["LIFEBOAT_LAB_PRIMARY_URL"].clone();

    // doctor reaches every lab connection by its scheme: SQL, DNS, HAProxy.
    let sb = lab.sandbox("lab-doctor", &[]);
    let out = sb.lifeboat(&["doctor", "--json"]);
    let report: Value = serde_json::from_slice(&out.stdout).expect("doctor --json");
    let connection = |name: &str| {
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["check"] == "connection" && c["target"] == name)
            .unwrap_or_else(|| panic!("no connection {name}: {report:#}"))
            .clone()
    };
    for name in ["primary", "standby", "frontend", "dns", "lb"] {
        assert_eq!(connection(name)["status"], "pass", "{:#}", connection(name));
    }
    let dns = connection("dns")["detail"].as_str().unwrap().to_string();
    assert!(dns.contains("serves zone lab.example. (SOA serial"), "{dns}");
    let lb = connection("lb")["detail"].as_str().unwrap().to_string();
    assert!(lb.starts_with("HAProxy 2."), "{lb}");
    assert!(!report.to_string().contains(&lab.env["LIFEBOAT_LAB_DNS_URL"]), "the DNS URL leaked");

    // A wrong TSIG key: the preflight fails naming the key; nothing changes.
    let dns_url = &lab.env["LIFEBOAT_LAB_DNS_URL"];
    let (head, tail) = dns_url.split_once('@').unwrap();
    let wrong = format!(
        "{}:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA%3D@{tail}",
        &head[..head.rfind(':').unwrap()]
    );
    let sb = lab.sandbox("lab-tsig", &[("LIFEBOAT_LAB_DNS_URL", &wrong)]);
    let (code, doc) = sb.run_wait(&failover(), &["severity=P0", "force=true"]);
    assert_ne!(code, Some(0), "{doc:#}");
    let refused = error(&doc, "preflight_dns");
    assert!(refused.contains("rejected TSIG key `lab-key`"), "{refused}");
    assert!(!doc.to_string().contains("AAAAAAAAAAAAAAAAAAAA"), "the TSIG secret leaked: {doc:#}");
    assert_eq!(step(&doc, "fence")["status"], "cancelled", "{doc:#}");
    assert_untouched(&lab, "after a wrong TSIG key");

    // An HAProxy socket that is not there: named, with what to check.
    let sb = lab
        .sandbox("lab-socket", &[("LIFEBOAT_LAB_HAPROXY_URL", "unix:///nonexistent/admin.sock")]);
    let (code, doc) = sb.run_wait(&failover(), &["severity=P0", "force=true"]);
    assert_ne!(code, Some(0), "{doc:#}");
    let unreachable = error(&doc, "preflight_lb");
    assert!(
        unreachable.starts_with(
            "connection `lb`: cannot reach the HAProxy runtime API at socket /nonexistent/admin.sock"
        ),
        "{unreachable}"
    );
    assert_eq!(crate::util::attempts(&doc, "preflight_lb").len(), 2, "retried: {doc:#}");
    assert_eq!(step(&doc, "preflight_dns")["status"], "rolled_back", "the marker is removed");
    assert_untouched(&lab, "after an unreachable HAProxy socket");

    // Promote refused (the `standby` connection points at the primary):
    // the fence is undone, DNS and HAProxy were never touched.
    // (`lab/lab.sh break DIR promote-fails` does the same to DIR/lab.env.)
    let sb = lab.sandbox("lab-promote", &[("LIFEBOAT_LAB_STANDBY_URL", &primary_url)]);
    let (code, doc) = sb.run_wait(&failover(), &["severity=P0", "force=true"]);
    assert_ne!(code, Some(0), "{doc:#}");
    assert_eq!(doc["status"], "rolled_back", "{doc:#}");
    assert_eq!(step(&doc, "fence")["outputs"]["changed"], true, "{doc:#}");
    assert_eq!(step(&doc, "fence")["status"], "rolled_back", "unfenced: {doc:#}");
    assert!(error(&doc, "promote").contains("is already a primary"), "{doc:#}");
    assert_eq!(step(&doc, "dns_switch")["status"], "cancelled");
    assert_eq!(lab.sql("LIFEBOAT_LAB_PRIMARY_URL", "SHOW default_transaction_read_only"), "off");
    assert_untouched(&lab, "after a refused promote");

    // The standby replays late: refused before promoting, and undone.
    lab.break_it(&["delay", "3600"]);
    lab.sql("LIFEBOAT_LAB_WRITE_URL", "INSERT INTO orders (note) VALUES ('late 1'), ('late 2')");
    let sb = lab.sandbox("lab-rpo", &[]);
    let (code, doc) = sb.run_wait(&failover(), &["severity=P0", "force=true", "catchup_seconds=2"]);
    assert_ne!(code, Some(0), "{doc:#}");
    assert_eq!(doc["status"], "rolled_back", "{doc:#}");
    let lag = error(&doc, "catchup");
    assert!(lag.starts_with("connection `standby`: replay lag did not drop within 2 s"), "{lag}");
    assert_eq!(step(&doc, "promote")["status"], "cancelled", "never promoted: {doc:#}");
    assert_eq!(lab.sql("LIFEBOAT_LAB_STANDBY_URL", "SELECT pg_is_in_recovery()"), "t");
    assert_untouched(&lab, "after the RPO guard refused");
    lab.break_it(&["delay", "0"]);

    // The happy failover: the primary goes down with rows committed.
    lab.sql(
        "LIFEBOAT_LAB_WRITE_URL",
        "INSERT INTO orders (note) SELECT 'before' FROM generate_series(1, 20)",
    );
    let committed = lab.sql("LIFEBOAT_LAB_PRIMARY_URL", "SELECT count(*) FROM orders");
    lab.break_it(&["stop-primary"]);
    let sb = lab.sandbox("lab-failover", &[]);
    let (code, doc) = sb.run_wait(&failover(), &["severity=P0"]);
    assert_eq!(code, Some(0), "{doc:#}");
    let outputs = &doc["outputs"];
    assert_eq!(outputs["written_on"], "127.0.0.2", "{doc:#}");
    assert_eq!(outputs["lag_at_promote_bytes"], "0", "{doc:#}");
    assert_eq!(step(&doc, "fence")["status"], "skipped", "a down primary cannot be fenced");
    assert_eq!(lab.dns(), "127.0.0.2");
    let status = lab.status();
    assert!(status.contains("haproxy: pg1 127.0.0.1") && status.contains("MAINT"), "{status}");
    assert!(status.contains("through haproxy: connected to 127.0.0.2"), "{status}");
    assert_eq!(
        lab.sql("LIFEBOAT_LAB_STANDBY_URL", "SELECT count(*) FROM orders"),
        committed,
        "every committed row is on the new primary"
    );
    let first_write = crate::util::attempts(&doc, "verify_write")
        .last()
        .map(|a| crate::util::ms(&a["finished_at"]))
        .unwrap();
    eprintln!(
        "lab failover: first write accepted {} ms after the run started",
        first_write - crate::util::ms(&doc["started_at"])
    );

    // Failback: the old primary is rebuilt, caught up and primary again.
    lab.sql("LIFEBOAT_LAB_WRITE_URL", "INSERT INTO orders (note) VALUES ('while failed over')");
    let sb = lab.sandbox("lab-failback", &[]);
    let lab_pg = root().join("lab/pg.sh").display().to_string();
    let failback = root().join("workflows/lab/pg-failback.yaml").display().to_string();
    let (code, doc) = sb.run_wait(
        &failback,
        &[&format!("lab_dir={}", lab.dir), &format!("lab_pg={lab_pg}"), "auto=true"],
    );
    assert_eq!(code, Some(0), "{doc:#}");
    assert_eq!(doc["outputs"]["primary"], "127.0.0.1", "{doc:#}");
    assert_untouched(&lab, "after the failback");
    let total = lab.sql("LIFEBOAT_LAB_PRIMARY_URL", "SELECT count(*) FROM orders");
    assert_eq!(total.parse::<u64>().unwrap(), committed.parse::<u64>().unwrap() + 1);
    assert!(
        crate::util::eventually(std::time::Duration::from_secs(10), || {
            lab.sql("LIFEBOAT_LAB_STANDBY_URL", "SELECT count(*) FROM orders") == total
        }),
        "the rebuilt standby streams from the old primary again"
    );
}
