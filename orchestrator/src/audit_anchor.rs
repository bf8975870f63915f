//! Audit anchors: signed checkpoints of the audit chain's head kept outside
//! the database, so that what the chain alone cannot show — its newest
//! entries deleted, or an entry rewritten and every hash after it
//! recomputed — is caught by `lifeboat audit verify --anchors FILE`.
//!
//! An anchor is one JSON line `{"v":1,"id":…,"hash":…,"at":…,"by":…,"sig":…}`:
//! the id and hash of the newest entry at `at`, signed with HMAC-SHA256 under
//! a key from the environment (`[audit] anchor_key_env`). Lines are appended
//! to `[audit] anchor_file` (opened with `O_APPEND`, fsynced after each
//! line) by `lifeboat audit anchor` and by `lifeboat serve` (at start, every
//! `anchor_every` when the head moved, and after a graceful shutdown).
//! Only a chain that verifies is anchored.
//!
//! [`check`] holds each anchor against the stored log: an anchored id past
//! the newest entry is a truncated tail; a stored hash that differs from
//! the anchored one is a rewrite at or before that id; a line whose
//! signature does not verify is forged or altered.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::store::Store;
use crate::store::audit::{GENESIS, walk};

/// The format version written in every line.
pub const VERSION: u32 = 1;

/// The shortest key accepted: shorter keys can be guessed from the file.
pub const MIN_KEY_BYTES: usize = 16;

/// The HMAC-SHA256 key anchors are signed with. `Debug` never shows it.
#[derive(Clone)]
pub struct AnchorKey(Vec<u8>);

impl std::fmt::Debug for AnchorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AnchorKey(***)")
    }
}

impl AnchorKey {
    pub fn new(bytes: &[u8]) -> Result<AnchorKey, String> {
        if bytes.len() < MIN_KEY_BYTES {
            return Err(format!(
                "is {} bytes long; an anchor key needs at least {MIN_KEY_BYTES} (e.g. `openssl rand -hex 32`)",
                bytes.len()
            ));
        }
        Ok(AnchorKey(bytes.to_vec()))
    }

    /// From the environment variable `var`; the error names it.
    pub fn from_env(var: &str) -> Result<AnchorKey, String> {
        match std::env::var(var) {
            Ok(v) if !v.is_empty() => AnchorKey::new(v.as_bytes())
                .map_err(|why| format!("the audit anchor key in {var} {why}")),
            _ => Err(format!(
                "the audit anchor key variable {var} is not set ([audit] anchor_key_env)"
            )),
        }
    }

    fn mac(&self, anchor: &Anchor) -> Hmac<Sha256> {
        // HMAC accepts keys of any length: `new_from_slice` cannot fail.
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        let id = anchor.id.to_string();
        let v = anchor.v.to_string();
        for field in ["lifeboat-audit-anchor", &v, &id, &anchor.hash, &anchor.at, &anchor.by] {
            mac.update(&(field.len() as u64).to_be_bytes());
            mac.update(field.as_bytes());
        }
        mac
    }
}

/// One checkpoint of the chain's head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Anchor {
    pub v: u32,
    /// The newest entry's id (0: the log was empty).
    pub id: i64,
    /// That entry's hash (`GENESIS` for an empty log).
    pub hash: String,
    /// When it was taken, RFC 3339.
    pub at: String,
    /// Who took it: `serve <worker>` or `cli <user>`.
    pub by: String,
    /// Lowercase hex HMAC-SHA256 over every field above.
    pub sig: String,
}

impl Anchor {
    /// The signed anchor of `head` (`None`: an empty log).
    pub fn sign(key: &AnchorKey, head: Option<&(i64, String)>, at_ms: i64, by: &str) -> Anchor {
        let (id, hash) = head.cloned().unwrap_or((0, GENESIS.to_string()));
        let at = chrono::DateTime::from_timestamp_millis(at_ms)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .unwrap_or_else(|| at_ms.to_string());
        let mut anchor =
            Anchor { v: VERSION, id, hash, at, by: by.to_string(), sig: String::new() };
        anchor.sig = hex(&key.mac(&anchor).finalize().into_bytes());
        anchor
    }

    /// Whether `sig` is this key's signature of the other fields (compared
    /// in constant time).
    pub fn signed_by(&self, key: &AnchorKey) -> bool {
        unhex(&self.sig).is_some_and(|sig| key.mac(self).verify_slice(&sig).is_ok())
    }

    /// The line written to the file, without its line feed.
    pub fn line(&self) -> String {
        serde_json::to_string(self).expect("an anchor serializes")
    }
}

fn hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    hex::decode(text).ok()
}

/// Appends `anchor` as one line to `path` (created if missing), with
/// `O_APPEND` so concurrent writers never overwrite each other, and fsyncs
/// it (and, for a new file, its directory) before returning.
pub fn append(path: &Path, anchor: &Anchor) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let created = !path.exists();
    let mut file = std::fs::OpenOptions::new().append(true).create(true).mode(0o640).open(path)?;
    let mut line = anchor.line();
    line.push('\n');
    // One write of one short line: appended whole.
    file.write_all(line.as_bytes())?;
    file.sync_all()?;
    if created {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// One line of an anchor file: its number (from 1) and the anchor, or why
/// it is not one.
pub type Line = (usize, Result<Anchor, String>);

/// Every non-blank line of the file at `path`.
pub fn read(path: &Path) -> std::io::Result<Vec<Line>> {
    let text = std::fs::read(path)?;
    Ok(String::from_utf8_lossy(&text)
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| (i + 1, serde_json::from_str::<Anchor>(l).map_err(|e| e.to_string())))
        .collect())
}

/// The ids a file's anchors name, to look their stored hashes up.
pub fn anchored_ids(lines: &[Line]) -> BTreeSet<i64> {
    lines.iter().filter_map(|(_, a)| a.as_ref().ok()).map(|a| a.id).collect()
}

/// How an anchor disagrees with the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Not an anchor line (the parse error).
    Malformed(String),
    /// The signature does not verify under the key: forged, altered, or
    /// signed with another key.
    Forged,
    /// The anchored entry is past the newest stored one.
    Truncated { last_id: i64 },
    /// The stored entry at the anchored id has another hash. `since`: the
    /// newest anchored id below it that still matches (the rewrite is after it).
    Rewritten { stored: String, since: Option<i64> },
    /// The anchored entry is missing while later ones exist.
    Missing,
}

/// An anchor that failed, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub line: usize,
    pub anchor: Option<Anchor>,
    pub problem: Problem,
}

impl Failure {
    /// A short name of the problem, for `--json`.
    pub fn kind(&self) -> &'static str {
        match self.problem {
            Problem::Malformed(_) => "malformed",
            Problem::Forged => "forged",
            Problem::Truncated { .. } => "truncated",
            Problem::Rewritten { .. } => "rewritten",
            Problem::Missing => "missing",
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}", self.line)?;
        match (&self.anchor, &self.problem) {
            // Nothing a forged line says can be trusted: shown as a claim.
            (Some(a), Problem::Forged) => write!(f, " (claims entry {})", a.id)?,
            (Some(a), _) => write!(f, " (entry {} anchored at {} by {})", a.id, a.at, a.by)?,
            (None, _) => {}
        }
        f.write_str(": ")?;
        let id = self.anchor.as_ref().map_or(0, |a| a.id);
        match &self.problem {
            Problem::Malformed(why) => write!(f, "not an anchor: {why}"),
            Problem::Forged => f.write_str(
                "its signature does not verify: the line was forged or altered, or signed with another key",
            ),
            Problem::Truncated { last_id } => write!(
                f,
                "the log ends at entry {last_id}: entries {}..{id} were deleted (tail truncated)",
                last_id + 1
            ),
            Problem::Rewritten { stored, since } => {
                let anchored = self.anchor.as_ref().map_or("", |a| a.hash.as_str());
                write!(
                    f,
                    "entry {id} has hash {}…, the anchor recorded {}…: an entry ",
                    &stored[..stored.len().min(12)],
                    &anchored[..anchored.len().min(12)]
                )?;
                match since {
                    Some(s) => write!(f, "after {s} and at or before {id}")?,
                    None => write!(f, "at or before {id}")?,
                }
                f.write_str(" was rewritten or deleted and the chain recomputed")
            }
            Problem::Missing => write!(f, "entry {id} is missing from the log (deleted)"),
        }
    }
}

/// What checking a file of anchors against the log found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Anchors whose signature verified.
    pub signed: usize,
    /// Anchors that match the log.
    pub matched: usize,
    /// The newest id a matching anchor covers.
    pub covered: Option<i64>,
    pub failures: Vec<Failure>,
}

/// Holds every line against the log, whose newest stored entry is
/// `last_id` and whose stored hashes at the anchored ids are `hashes`.
pub fn check(
    lines: &[Line],
    key: &AnchorKey,
    last_id: i64,
    hashes: &BTreeMap<i64, String>,
) -> Report {
    let mut report = Report::default();
    let mut rewritten = Vec::new();
    for (line, parsed) in lines {
        let fail = |anchor: Option<&Anchor>, problem| Failure {
            line: *line,
            anchor: anchor.cloned(),
            problem,
        };
        let anchor = match parsed {
            Err(why) => {
                report.failures.push(fail(None, Problem::Malformed(why.clone())));
                continue;
            }
            Ok(a) => a,
        };
        if anchor.v != VERSION || anchor.id < 0 {
            let why = format!("version {} id {} is not a v{VERSION} anchor", anchor.v, anchor.id);
            report.failures.push(fail(None, Problem::Malformed(why)));
            continue;
        }
        if !anchor.signed_by(key) {
            report.failures.push(fail(Some(anchor), Problem::Forged));
            continue;
        }
        report.signed += 1;
        let problem = if anchor.id == 0 {
            // The log was empty: nothing it could have lost. (A signed
            // anchor of id 0 always carries GENESIS.)
            None
        } else if anchor.id > last_id {
            Some(Problem::Truncated { last_id })
        } else {
            match hashes.get(&anchor.id) {
                None => Some(Problem::Missing),
                Some(stored) if *stored != anchor.hash => {
                    Some(Problem::Rewritten { stored: stored.clone(), since: None })
                }
                Some(_) => None,
            }
        };
        match problem {
            None => {
                report.matched += 1;
                report.covered = report.covered.max(Some(anchor.id));
            }
            Some(p) => {
                if matches!(p, Problem::Rewritten { .. }) {
                    rewritten.push(report.failures.len());
                }
                report.failures.push(fail(Some(anchor), p));
            }
        }
    }
    // Narrow each rewrite down to after the newest matching anchor below it.
    let matching: BTreeSet<i64> = lines
        .iter()
        .filter_map(|(_, a)| a.as_ref().ok())
        .filter(|a| a.v == VERSION && a.signed_by(key))
        .filter(|a| a.id == 0 || (a.id <= last_id && hashes.get(&a.id) == Some(&a.hash)))
        .map(|a| a.id)
        .collect();
    for i in rewritten {
        let failure = &mut report.failures[i];
        let id = failure.anchor.as_ref().map_or(0, |a| a.id);
        if let Problem::Rewritten { since, .. } = &mut failure.problem {
            *since = matching.range(..id).next_back().copied();
        }
    }
    report
}

/// Where and how `serve` and `audit anchor` write anchors, from `[audit]`.
#[derive(Debug, Clone)]
pub struct Sink {
    pub file: PathBuf,
    pub key: AnchorKey,
}

impl Sink {
    /// From the configuration: `None` when `anchor_file` is not set; an
    /// error when it is but the key is missing or too short.
    pub fn from_config(
        audit: &crate::config::AuditConfig,
        base: &Path,
    ) -> Result<Option<Sink>, String> {
        let Some(file) = &audit.anchor_file else { return Ok(None) };
        let key = AnchorKey::from_env(&audit.anchor_key_env)?;
        Ok(Some(Sink { file: base.join(file), key }))
    }
}

/// Why no anchor was written.
#[derive(Debug, thiserror::Error)]
pub enum AnchorError {
    #[error("reading the audit log: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("the audit chain is broken ({0}); it is not anchored: run `lifeboat audit verify`")]
    Broken(crate::store::audit::AuditBreak),
    #[error("cannot append to the anchor file {}: {source}", file.display())]
    Write { file: PathBuf, source: std::io::Error },
}

/// Anchors the head of one store's log, checking only what was appended
/// since its last anchor (a full walk the first time).
pub struct Checkpointer {
    store: Arc<dyn Store>,
    sink: Sink,
    by: String,
    /// The head this process verified and anchored last.
    last: Mutex<Option<Option<(i64, String)>>>,
}

impl Checkpointer {
    pub fn new(store: Arc<dyn Store>, sink: Sink, by: String) -> Checkpointer {
        Checkpointer { store, sink, by, last: Mutex::new(None) }
    }

    /// Verifies the chain from the last anchored head and, if the head
    /// moved (or nothing was anchored yet), appends a signed anchor of it.
    /// The anchor written, if one was.
    pub async fn checkpoint(&self) -> Result<Option<Anchor>, AnchorError> {
        let mut last = self.last.lock().await;
        let from = last.clone().flatten();
        let walked = walk(&*self.store, from, &BTreeSet::new()).await?;
        if let Some(b) = walked.broken {
            return Err(AnchorError::Broken(b));
        }
        if last.as_ref() == Some(&walked.head) {
            return Ok(None);
        }
        let anchor =
            Anchor::sign(&self.sink.key, walked.head.as_ref(), crate::store::now_ms(), &self.by);
        let file = self.sink.file.clone();
        let line = anchor.clone();
        tokio::task::spawn_blocking(move || append(&file, &line))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
            .map_err(|source| AnchorError::Write { file: self.sink.file.clone(), source })?;
        *last = Some(walked.head);
        Ok(Some(anchor))
    }

    /// `serve`'s task: a checkpoint now and every `every` until `shutdown`.
    /// (The last one, after the server stopped, is the caller's.)
    pub async fn run(self: Arc<Self>, every: Duration, shutdown: CancellationToken) {
        loop {
            self.checkpoint_logged().await;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }

    /// A checkpoint whose failure is logged, not returned.
    pub async fn checkpoint_logged(&self) {
        match self.checkpoint().await {
            Ok(Some(a)) => {
                tracing::info!(audit.id = a.id, file = %self.sink.file.display(), "Audit head anchored.")
            }
            Ok(None) => {}
            Err(e @ AnchorError::Broken(_)) => tracing::error!("{e}"),
            Err(e) => tracing::warn!("audit anchor: {e}; retrying at the next checkpoint"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::AuditRecord;
    use crate::store::audit::{entry_hash, payload_text, sha256_hex};

    fn key() -> AnchorKey {
        AnchorKey::new(b"0123456789abcdef0123456789abcdef").unwrap()
    }

    /// A chain of `n` entries whose payloads are `tag`-`id`.
    fn chain(n: i64, tag: &str) -> Vec<AuditRecord> {
        let mut prev = GENESIS.to_string();
        (1..=n)
            .map(|id| {
                let payload = serde_json::json!({ "n": format!("{tag}-{id}") });
                let mut e = AuditRecord {
                    id,
                    at: id,
                    actor: "alice".into(),
                    action: "run".into(),
                    run_id: None,
                    step_id: None,
                    payload_sha256: sha256_hex(payload_text(&payload).as_bytes()),
                    payload,
                    prev_hash: prev.clone(),
                    hash: String::new(),
                };
                e.hash = entry_hash(&e);
                prev = e.hash.clone();
                e
            })
            .collect()
    }

    fn anchor_at(log: &[AuditRecord], id: i64) -> Line {
        let head = (id > 0).then(|| (id, log[id as usize - 1].hash.clone()));
        (id as usize + 1, Ok(Anchor::sign(&key(), head.as_ref(), 1_767_225_600_000, "test")))
    }

    /// `check` of `lines` against the stored `log`.
    fn against(lines: &[Line], log: &[AuditRecord]) -> Report {
        let wanted = anchored_ids(lines);
        let hashes = log.iter().filter(|e| wanted.contains(&e.id)).map(|e| (e.id, e.hash.clone()));
        check(lines, &key(), log.last().map_or(0, |e| e.id), &hashes.collect())
    }

    #[test]
    fn anchors_of_an_untouched_log_match_and_cover_up_to_the_newest() {
        let log = chain(10, "a");
        let lines = [anchor_at(&log, 0), anchor_at(&log, 4), anchor_at(&log, 7)];
        let report = against(&lines, &log);
        assert_eq!(report.failures, []);
        assert_eq!((report.signed, report.matched, report.covered), (3, 3, Some(7)));
    }

    #[test]
    fn a_deleted_tail_is_named_by_the_anchor_past_it() {
        let log = chain(10, "a");
        let lines = [anchor_at(&log, 4), anchor_at(&log, 9)];
        let report = against(&lines, &log[..7]);
        assert_eq!(report.failures.len(), 1, "{report:?}");
        let f = &report.failures[0];
        assert_eq!((f.line, f.problem.clone()), (10, Problem::Truncated { last_id: 7 }));
        assert!(f.to_string().contains("entries 8..9 were deleted"), "{f}");
        assert_eq!(report.covered, Some(4));
    }

    #[test]
    fn a_rewrite_with_the_chain_recomputed_is_named_and_narrowed() {
        let log = chain(10, "a");
        let lines = [anchor_at(&log, 3), anchor_at(&log, 6), anchor_at(&log, 9)];
        // Entry 5 rewritten and every hash after it recomputed: the chain
        // itself verifies, but entries 5.. hash differently.
        let mut forged = chain(10, "a");
        let rechained = chain(10, "b");
        forged[4..].clone_from_slice(&rechained[4..]);
        for i in 4..10 {
            forged[i].prev_hash = forged[i - 1].hash.clone();
            forged[i].hash = entry_hash(&forged[i]);
        }
        assert!(crate::store::audit::verify_chain(&forged, GENESIS.into(), 1).is_ok());
        let report = against(&lines, &forged);
        let kinds: Vec<(i64, &str)> =
            report.failures.iter().map(|f| (f.anchor.as_ref().unwrap().id, f.kind())).collect();
        assert_eq!(kinds, [(6, "rewritten"), (9, "rewritten")]);
        assert_eq!(
            report.failures[0].problem,
            Problem::Rewritten { stored: forged[5].hash.clone(), since: Some(3) }
        );
        assert!(report.failures[0].to_string().contains("after 3 and at or before 6"));
    }

    #[test]
    fn a_tampered_forged_or_garbled_line_is_reported() {
        let log = chain(5, "a");
        let (n, good) = anchor_at(&log, 5);
        let mut moved = good.clone().unwrap();
        moved.id = 9; // claims a longer log; the signature no longer matches
        let other_key = Anchor::sign(
            &AnchorKey::new(b"another key of sixteen+ bytes").unwrap(),
            Some(&(5, log[4].hash.clone())),
            0,
            "mallory",
        );
        let mut bad_sig = good.clone().unwrap();
        bad_sig.sig = "zz".into();
        let lines = [
            (n, good),
            (7, Ok(moved)),
            (8, Ok(other_key)),
            (9, Ok(bad_sig)),
            (10, Err("expected value at line 1 column 1".into())),
        ];
        let report = against(&lines, &log);
        let kinds: Vec<(usize, &str)> =
            report.failures.iter().map(|f| (f.line, f.kind())).collect();
        assert_eq!(kinds, [(7, "forged"), (8, "forged"), (9, "forged"), (10, "malformed")]);
        assert_eq!((report.signed, report.matched), (1, 1));
    }

    #[test]
    fn lines_round_trip_through_a_file_appended_by_several_writers() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("anchors.jsonl");
        let log = chain(3, "a");
        for id in 1..=3 {
            append(&file, &anchor_at(&log, id).1.unwrap()).unwrap();
        }
        std::fs::OpenOptions::new()
            .append(true)
            .open(&file)
            .unwrap()
            .write_all(b"\n{oops\n")
            .unwrap();
        let lines = read(&file).unwrap();
        assert_eq!(lines.len(), 4);
        assert!(lines[..3].iter().all(|(_, a)| a.as_ref().is_ok_and(|a| a.signed_by(&key()))));
        assert_eq!(lines[3].0, 5, "line numbers count blank lines");
        assert!(lines[3].1.is_err());
    }

    #[test]
    fn short_or_missing_keys_are_refused_and_never_printed() {
        assert!(AnchorKey::new(b"short").unwrap_err().contains("at least 16"));
        assert_eq!(format!("{:?}", key()), "AnchorKey(***)");
        let err = AnchorKey::from_env("LIFEBOAT_TEST_UNSET_ANCHOR_KEY_VAR").unwrap_err();
        assert!(err.contains("LIFEBOAT_TEST_UNSET_ANCHOR_KEY_VAR is not set"), "{err}");
    }
}
