//! The `postgres` step kind against a real primary and streaming standby
//! (lab/pg.sh): status on both, fence (writes refused) rolled back by
//! its automatic unfence, a read-only query_one, wait_for_catchup with and without a
//! delayed standby, promote refused on the primary and done on the standby,
//! and a refused connection. Skipped only where Postgres 15 is not installed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{Sandbox, root, stderr, step};

/// A primary and a standby from `lab/pg.sh start`, stopped on drop.
struct Lab {
    bin: PathBuf,
    dir: String,
    primary: String,
    standby: String,
}

impl Lab {
    /// `None` when the Postgres binaries the lab needs are not installed.
    fn start() -> Option<Lab> {
        let bin = std::env::var("LIFEBOAT_PG_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|_| PathBuf::from("/usr/lib/postgresql/15/bin"));
        if !bin.join("postgres").exists() || !bin.join("pg_basebackup").exists() {
            crate::util::tool_missing(&format!("no Postgres 15 in {}", bin.display()));
            return None;
        }
        let out = lab(&["start"]);
        assert!(out.status.success(), "lab/pg.sh start failed:\n{}", stderr(&out));
        let exports = String::from_utf8_lossy(&out.stdout).to_string();
        let var = |name: &str| {
            exports
                .lines()
                .find_map(|l| l.strip_prefix(&format!("export {name}=")))
                .unwrap_or_else(|| panic!("no {name} in lab/pg.sh's output:\n{exports}"))
                .to_string()
        };
        Some(Lab {
            bin,
            dir: var("LIFEBOAT_LAB_DIR"),
            primary: var("LIFEBOAT_LAB_PRIMARY_URL"),
            standby: var("LIFEBOAT_LAB_STANDBY_URL"),
        })
    }

    fn break_it(&self, args: &[&str]) {
        let mut all = vec!["break", self.dir.as_str()];
        all.extend(args);
        let out = lab(&all);
        assert!(out.status.success(), "lab/pg.sh {all:?} failed:\n{}", stderr(&out));
    }

    /// `psql URL -tAc SQL`, started (not waited for).
    fn psql(&self, url: &str, sql: &str) -> Command {
        let mut cmd = Command::new(self.bin.join("psql"));
        cmd.args([url, "-tAc", sql]).stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd
    }

    fn password(&self) -> String {
        let url = url::Url::parse(&self.primary).expect("lab URL");
        url.password().expect("lab URL has a password").to_string()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = lab(&["stop", &self.dir]);
    }
}

fn lab(args: &[&str]) -> std::process::Output {
    Command::new("bash")
        .arg(root().join("lab/pg.sh"))
        .args(args)
        .current_dir(Path::new("/tmp"))
        .output()
        .expect("run lab/pg.sh")
}

const CONNECTIONS: &str = "[connections.primary]\nurl_env = \"LAB_PRIMARY_URL\"\n\n\
                           [connections.standby]\nurl_env = \"LAB_STANDBY_URL\"\n";

fn sandbox(name: &str, lab: &Lab) -> Sandbox {
    Sandbox::new(name)
        .config(CONNECTIONS)
        .env("LAB_PRIMARY_URL", &lab.primary)
        .env("LAB_STANDBY_URL", &lab.standby)
}

/// Runs `yaml` (written as `file`) to its end: (exit code, run document).
fn run(sb: &Sandbox, file: &str, yaml: &str, password: &str) -> (Option<i32>, Value) {
    sb.write(file, yaml);
    let (code, doc) = sb.run_wait(file, &[]);
    assert!(!doc.to_string().contains(password), "the URL's password leaked: {doc:#}");
    (code, doc)
}

fn error(doc: &Value, id: &str) -> String {
    step(doc, id)["error"].as_str().unwrap_or_default().to_string()
}

const STATUS: &str = r#"name: pg-status
steps:
  table:
    uses: sql
    with:
      connection: primary
      query: "CREATE TABLE IF NOT EXISTS orders (id int PRIMARY KEY, note text)"
    irreversible: true
  row:
    needs: [table]
    uses: sql
    with: { connection: primary, query: "INSERT INTO orders VALUES (1, 'first')" }
    irreversible: true
  catchup:
    needs: [row]
    uses: postgres
    with: { action: wait_for_catchup, connection: primary, max_lag_bytes: 0, within_seconds: 20, interval_ms: 100 }
  primary:
    needs: [catchup]
    uses: postgres
    with: { action: status, connection: primary }
  standby:
    needs: [catchup]
    uses: postgres
    with: { action: status, connection: standby }
  replicated:
    needs: [catchup]
    uses: postgres
    with:
      action: query_one
      connection: standby
      query: "SELECT id, note, $1::text AS echoed FROM orders WHERE id = $2::int"
      params: ["x'); DROP TABLE orders; --", 1]
"#;

const FENCE: &str = r#"name: pg-fence
steps:
  fence:
    uses: postgres
    with: { action: fence, connection: primary }
  write:
    needs: [fence]
    uses: sql
    with: { connection: primary, query: "INSERT INTO orders VALUES (2, 'while fenced')" }
    irreversible: true
"#;

const WRITE: &str = r#"name: pg-write
steps:
  write:
    uses: sql
    with: { connection: primary, query: "INSERT INTO orders VALUES (3, 'after unfence')" }
    irreversible: true
  read_only:
    needs: [write]
    uses: postgres
    with: { action: query_one, connection: primary, query: "INSERT INTO orders VALUES (4, 'no') RETURNING id" }
"#;

const PROMOTE_PRIMARY: &str = r#"name: pg-promote-primary
steps:
  promote:
    uses: postgres
    with: { action: promote, connection: primary }
"#;

const LAGGING: &str = r#"name: pg-lagging
steps:
  row:
    uses: sql
    with: { connection: primary, query: "INSERT INTO orders VALUES (5, 'delayed')" }
    irreversible: true
  catchup:
    needs: [row]
    uses: postgres
    with: { action: wait_for_catchup, connection: standby, max_lag_bytes: 0, within_seconds: 2, interval_ms: 100 }
  bounded:
    needs: [row]
    uses: postgres
    timeout: 1s
    with: { action: wait_for_catchup, connection: standby, max_lag_seconds: 0, interval_ms: 100 }
"#;

const PROMOTE: &str = r#"name: pg-promote
steps:
  catchup:
    uses: postgres
    with: { action: wait_for_catchup, connection: standby, max_lag_bytes: 0, max_lag_seconds: 5, within_seconds: 30, interval_ms: 100 }
  promote:
    needs: [catchup]
    uses: postgres
    with: { action: promote, connection: standby }
    irreversible: true
  write:
    needs: [promote]
    uses: sql
    with: { connection: standby, query: "INSERT INTO orders VALUES (6, 'on the new primary')" }
    irreversible: true
  status:
    needs: [write]
    uses: postgres
    with: { action: status, connection: standby }
  rows:
    needs: [write]
    uses: postgres
    with: { action: query_one, connection: standby, query: "SELECT count(*) AS n, max(id) AS last FROM orders" }
"#;

const OLD_PRIMARY: &str = r#"name: pg-old-primary
steps:
  status:
    uses: postgres
    with: { action: status, connection: primary }
"#;

#[test]
fn the_postgres_kind_operates_a_real_primary_and_standby() {
    let Some(lab) = Lab::start() else { return };
    let password = lab.password();
    let sb = sandbox("postgres-kind", &lab);

    // Status on both, after the standby has replayed a row written on the primary.
    let (code, doc) = run(&sb, "status.yaml", STATUS, &password);
    assert_eq!(code, Some(0), "{doc:#}");
    let primary = &step(&doc, "primary")["outputs"];
    assert_eq!(primary["role"], "primary", "{primary:#}");
    assert_eq!(primary["in_recovery"], false);
    assert_eq!(primary["read_only"], false);
    let standbys = primary["standbys"].as_array().expect("standbys");
    assert_eq!(standbys.len(), 1, "{primary:#}");
    assert_eq!(standbys[0]["state"], "streaming");
    assert_eq!(standbys[0]["client_addr"], "127.0.0.1");
    assert!(primary["current_lsn"].as_str().is_some_and(|l| l.contains('/')), "{primary:#}");
    let standby = &step(&doc, "standby")["outputs"];
    assert_eq!(standby["role"], "standby", "{standby:#}");
    assert_eq!(standby["in_recovery"], true);
    assert_eq!(standby["standbys"], serde_json::json!([]));
    assert!(standby["replay_lsn"].as_str().is_some_and(|l| l.contains('/')), "{standby:#}");
    assert_eq!(standby["replay_lag_bytes"], 0, "{standby:#}");
    assert_eq!(step(&doc, "catchup")["outputs"]["replay_lag_bytes"], 0);
    assert_eq!(
        step(&doc, "replicated")["outputs"],
        serde_json::json!({"found": true, "row": {"id": 1, "note": "first", "echoed": "x'); DROP TABLE orders; --"}})
    );

    // A session open before the fence (it could hold a writable transaction).
    let mut session = lab.psql(&lab.primary, "SELECT pg_sleep(120)").spawn().expect("psql");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = lab
            .psql(
                &lab.primary,
                "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(120)'",
            )
            .output()
            .expect("psql");
        if String::from_utf8_lossy(&seen.stdout).trim() == "1" {
            break;
        }
        assert!(Instant::now() < deadline, "the psql session never showed up");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Fenced, the primary refuses the write; the run rolls back by
    // unfencing, the fence's automatic rollback (the step writes none).
    let (code, doc) = run(&sb, "fence.yaml", FENCE, &password);
    assert_ne!(code, Some(0), "{doc:#}");
    assert_eq!(doc["status"], "rolled_back", "{doc:#}");
    assert_eq!(step(&doc, "fence")["rollback"]["status"], "succeeded", "{doc:#}");
    let fence = &step(&doc, "fence")["outputs"];
    assert_eq!(fence["changed"], true, "{fence:#}");
    assert_eq!(fence["was_read_only"], false);
    assert_eq!(fence["terminated_sessions"].as_array().map(Vec::len), Some(1), "{fence:#}");
    let ended = session.wait().expect("psql ends");
    assert!(!ended.success(), "the open session was terminated by the fence");
    let refused = error(&doc, "write");
    assert!(refused.contains("read-only transaction"), "{refused}");

    // Unfenced, it takes writes again; query_one stays read-only even so.
    let (code, doc) = run(&sb, "write.yaml", WRITE, &password);
    assert_ne!(code, Some(0), "{doc:#}");
    assert_eq!(step(&doc, "write")["status"], "succeeded", "{doc:#}");
    let read_only = error(&doc, "read_only");
    assert!(
        read_only.starts_with("connection `primary`: running the query: cannot execute INSERT in a read-only transaction"),
        "{read_only}"
    );

    // Promote on the primary: refused, naming the connection.
    let (code, doc) = run(&sb, "promote-primary.yaml", PROMOTE_PRIMARY, &password);
    assert_ne!(code, Some(0), "{doc:#}");
    let refused = error(&doc, "promote");
    assert!(refused.starts_with("connection `primary` is already a primary"), "{refused}");
    assert_eq!(crate::util::attempts(&doc, "promote").len(), 1, "not retried: {doc:#}");

    // A standby applying WAL late: the wait gives up naming the last lag.
    lab.break_it(&["delay", "3600"]);
    let (code, doc) = run(&sb, "lagging.yaml", LAGGING, &password);
    assert_ne!(code, Some(0), "{doc:#}");
    let lag = error(&doc, "catchup");
    assert!(
        lag.starts_with("connection `standby`: replay lag did not drop within 2 s (last: "),
        "{lag}"
    );
    assert!(lag.contains("bound: 0 bytes"), "{lag}");
    let timed_out = error(&doc, "bounded");
    assert!(
        timed_out.starts_with(
            "timed out after 1s waiting for connection `standby` to catch up; last replay lag "
        ),
        "{timed_out}"
    );
    assert!(!lag.contains("last: 0 bytes"), "{lag}");

    // Delay lifted: it catches up, is promoted and takes writes.
    lab.break_it(&["delay", "0"]);
    let (code, doc) = run(&sb, "promote.yaml", PROMOTE, &password);
    assert_eq!(code, Some(0), "{doc:#}");
    assert_eq!(step(&doc, "promote")["outputs"]["promoted"], true, "{doc:#}");
    eprintln!("promote took {} ms", step(&doc, "promote")["outputs"]["took_ms"]);
    assert_eq!(step(&doc, "status")["outputs"]["role"], "primary");
    assert_eq!(step(&doc, "status")["outputs"]["in_recovery"], false);
    let rows = &step(&doc, "rows")["outputs"]["row"];
    assert_eq!(rows["n"], 4, "rows 1, 3, 5 replicated and 6 written: {rows:#}");
    assert_eq!(rows["last"], 6);

    // The old primary down: a refused connection, named, with what to do.
    lab.break_it(&["stop-primary"]);
    let (code, doc) = run(&sb, "old-primary.yaml", OLD_PRIMARY, &password);
    assert_ne!(code, Some(0), "{doc:#}");
    let refused = error(&doc, "status");
    assert!(refused.starts_with("connection `primary`: cannot connect: "), "{refused}");
    assert!(refused.contains("check that the server is up"), "{refused}");
}
