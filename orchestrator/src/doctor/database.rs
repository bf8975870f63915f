//! Doctor's checks of the database and of who works on it: reachable and
//! migrated (without migrating it), SQLite in WAL mode on a local disk, a
//! sane clock, and the `serve` replicas with their leases.

use std::path::Path;
use std::sync::Arc;

use super::{Finding, Setup};
use crate::store::Store;
use crate::store::inspect::{Inspection, inspect};

/// Clock skew against the Postgres server that leases tolerate badly.
const SKEW_WARN_MS: i64 = 1_000;
const SKEW_FAIL_MS: i64 = 5_000;

/// File systems SQLite's locking (and so WAL) cannot be trusted on.
const NETWORK_FILESYSTEMS: &[&str] =
    &["nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "ceph", "glusterfs", "fuse.sshfs", "afs"];

/// The database's findings; the store when it is migrated, for the
/// checks that read it (opening an unmigrated one would migrate it).
pub(super) async fn check(setup: &Setup, findings: &mut Vec<Finding>) -> Option<Arc<dyn Store>> {
    let url = setup.database_url.as_str();
    let target = crate::app::redact_url(url);
    if let Some(file) = crate::store::inspect::missing_sqlite_file(url) {
        findings.push(Finding::warn(
            "database",
            target,
            format!("{} does not exist yet", file.display()),
            "nothing to do if this is a new install: lifeboat creates it at its first start",
        ));
        clock(None, findings);
        return None;
    }
    let found = match inspect(url).await {
        Ok(found) => found,
        Err(e) => {
            let fix = if url.starts_with("sqlite:") {
                "check database_url (or --database-url), or start lifeboat once to create it"
            } else {
                "check that Postgres runs and database_url's host, port, user and password are right"
            };
            findings.push(Finding::fail("database", target, e.to_string(), fix));
            clock(None, findings);
            return None;
        }
    };
    let migrated = migrations(&found, &target, findings);
    if let Some(file) = &found.file {
        sqlite_file(&found, file, &target, findings);
    }
    clock(found.server_now_ms, findings);
    if !migrated {
        return None;
    }
    if let Some(store) = &setup.store {
        return Some(store.clone());
    }
    match crate::store::open(url).await {
        Ok(store) => Some(store),
        Err(e) => {
            findings.push(Finding::fail("database", target, e.to_string(), "see the error"));
            None
        }
    }
}

/// Whether every migration this binary carries is applied.
fn migrations(found: &Inspection, target: &str, findings: &mut Vec<Finding>) -> bool {
    let (missing, unknown) = (found.missing(), found.unknown());
    if !unknown.is_empty() {
        findings.push(Finding::fail(
            "database",
            target,
            format!("migrated by a newer lifeboat (migrations {unknown:?} unknown to this binary)"),
            "upgrade this lifeboat to the version the other replicas run",
        ));
        return false;
    }
    if !missing.is_empty() {
        findings.push(Finding::fail(
            "database",
            target,
            format!(
                "reachable, but {} of {} migrations are not applied ({missing:?})",
                missing.len(),
                found.expected.len()
            ),
            "run `lifeboat migrate` (serve also migrates at start)",
        ));
        return false;
    }
    findings.push(Finding::pass(
        "database",
        target,
        format!("{} reachable, {} migrations applied", found.backend, found.applied.len()),
    ));
    true
}

fn sqlite_file(found: &Inspection, file: &Path, target: &str, findings: &mut Vec<Finding>) {
    match found.journal_mode.as_deref() {
        Some("wal") => findings.push(Finding::pass("sqlite", target, "journal_mode=wal")),
        other => findings.push(Finding::warn(
            "sqlite",
            target,
            format!("journal_mode={}", other.unwrap_or("?")),
            "start lifeboat once: it sets WAL mode, which lets readers and the writer work together",
        )),
    }
    let canonical = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
    match filesystem_of(&canonical) {
        Some((mount, fstype)) if NETWORK_FILESYSTEMS.contains(&fstype.as_str()) => {
            findings.push(Finding::fail(
                "sqlite",
                target,
                format!("{} is on {fstype} ({mount}), a network file system", canonical.display()),
                "keep the SQLite file on a local disk (SQLite's locks are unreliable over the \
                 network), or use Postgres",
            ))
        }
        Some((mount, fstype)) => findings.push(Finding::pass(
            "sqlite",
            target,
            format!("on a local {fstype} file system ({mount})"),
        )),
        None => {}
    }
}

/// The mount point and file system type holding `path`, from
/// `/proc/self/mountinfo` (the longest mount point that prefixes it).
fn filesystem_of(path: &Path) -> Option<(String, String)> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mount_of(&info, path)
}

fn mount_of(mountinfo: &str, path: &Path) -> Option<(String, String)> {
    mountinfo
        .lines()
        .filter_map(|line| {
            // `id parent maj:min root mount-point options [optional...] - fstype source super`
            let (before, after) = line.split_once(" - ")?;
            let mount = before.split(' ').nth(4)?.replace("\\040", " ");
            let fstype = after.split(' ').next()?.to_string();
            path.starts_with(&mount).then_some((mount, fstype))
        })
        .max_by_key(|(mount, _)| mount.len())
}

/// Against the Postgres server's clock when there is one, else against the
/// build date (a clock before it was reset).
fn clock(server_now_ms: Option<i64>, findings: &mut Vec<Finding>) {
    let now = crate::store::now_ms();
    if let Some(server) = server_now_ms {
        let skew = now - server;
        let detail = format!("{skew:+} ms from the Postgres server's clock");
        let fix = "run NTP (chrony or systemd-timesyncd) here and on the database server: \
                   leases compare clocks across replicas";
        findings.push(match skew.abs() {
            s if s >= SKEW_FAIL_MS => Finding::fail("clock", "system", detail, fix),
            s if s >= SKEW_WARN_MS => Finding::warn("clock", "system", detail, fix),
            _ => Finding::pass("clock", "system", detail),
        });
        return;
    }
    let built = chrono::NaiveDate::parse_from_str(env!("LIFEBOAT_BUILD_DATE"), "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc().timestamp_millis());
    match built {
        Some(built) if now < built - 86_400_000 => findings.push(Finding::fail(
            "clock",
            "system",
            format!("the clock says {}, before this binary was built", iso(now)),
            "set the clock (and run NTP): timers, leases and retention read it",
        )),
        _ => findings.push(Finding::pass("clock", "system", iso(now))),
    }
}

fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map_or_else(|| ms.to_string(), |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

/// `serve` replicas alive within one lease, their leases, and runs whose
/// worker died (waiting for a takeover).
pub(super) async fn replicas(store: &dyn Store, setup: &Setup, findings: &mut Vec<Finding>) {
    let now = crate::store::now_ms();
    let lease = setup.config.executor.lease.as_millis() as i64;
    let workers = match store.workers(now - 86_400_000).await {
        Ok(workers) => workers,
        Err(e) => {
            findings.push(Finding::fail("replicas", "workers", e.to_string(), "see the error"));
            return;
        }
    };
    let ahead = workers.iter().map(|w| w.heartbeat_at - now).max().unwrap_or(0);
    if ahead > SKEW_FAIL_MS {
        findings.push(Finding::fail(
            "clock",
            "system",
            format!("a worker's heartbeat is {ahead} ms in this machine's future"),
            "run NTP on every replica: this clock is behind the others",
        ));
    }
    let (live, dead): (Vec<_>, Vec<_>) =
        workers.iter().partition(|w| w.heartbeat_at >= now - lease);
    let stranded: usize = dead.iter().map(|w| w.leases.len()).sum();
    if live.is_empty() {
        findings.push(Finding::warn(
            "replicas",
            "serve",
            "no live worker: runs started by webhooks, schedules and the API wait for one",
            "start lifeboat serve (systemctl start lifeboat)",
        ));
    } else {
        let names: Vec<String> = live
            .iter()
            .map(|w| {
                format!(
                    "{}/{} ({} leases, heartbeat {} s ago)",
                    w.host,
                    w.pid,
                    w.leases.len(),
                    (now - w.heartbeat_at).max(0) / 1000
                )
            })
            .collect();
        findings.push(Finding::pass(
            "replicas",
            "serve",
            format!("{} live: {}", live.len(), names.join(", ")),
        ));
    }
    if stranded > 0 {
        findings.push(Finding::warn(
            "replicas",
            "leases",
            format!(
                "{stranded} run(s) leased by a worker that stopped; a live one takes them over"
            ),
            "nothing if a replica is live (takeover after the lease); else start one",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
30 22 0:40 / /mnt/share rw,relatime shared:9 - nfs4 fs:/export rw,vers=4.2
31 22 0:41 / /mnt/my\\040disk rw - xfs /dev/vdb rw
";

    #[test]
    fn the_longest_mount_point_holding_a_path_gives_its_file_system() {
        let of = |p: &str| mount_of(MOUNTINFO, Path::new(p)).unwrap();
        assert_eq!(of("/var/lib/lifeboat/lifeboat.db"), ("/".into(), "ext4".into()));
        assert_eq!(of("/mnt/share/lifeboat.db"), ("/mnt/share".into(), "nfs4".into()));
        assert_eq!(of("/mnt/my disk/x.db").1, "xfs");
        assert_eq!(of("/mnt/shared/x.db").1, "ext4", "a prefix of a name is not its mount");
    }

    #[test]
    fn a_skewed_clock_warns_then_fails() {
        let now = crate::store::now_ms();
        for (server, status) in [
            (now, super::super::Status::Pass),
            (now - 2_000, super::super::Status::Warn),
            (now + 60_000, super::super::Status::Fail),
        ] {
            let mut findings = Vec::new();
            clock(Some(server), &mut findings);
            assert_eq!(findings[0].status, status, "{findings:?}");
        }
    }
}
