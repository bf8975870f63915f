//! The audit log's hash chain: each entry's hash covers the previous entry's
//! hash, so editing, deleting or reordering any entry breaks every hash after
//! it. Both backends compute hashes here, and `lifeboat audit verify` checks
//! them here: one rule, one place. [`walk`] reads the log through any
//! backend and checks it, for `audit verify`, `audit anchor` and the
//! checkpoints of `serve` (`crate::audit_anchor`, which catch what a chain
//! alone cannot: a deleted tail, or a rewrite with the chain recomputed).

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

use super::{AuditRecord, NewAudit, Store, StoreError};

/// Entries read per query by [`walk`].
const PAGE: usize = 1000;

/// The `prev_hash` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The chain's head, which every append reads (the newest entry, by key).
pub(crate) const LAST: &str = "SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1";

/// Hex SHA-256 of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The stored text of a payload, which `payload_sha256` covers.
pub fn payload_text(payload: &serde_json::Value) -> String {
    payload.to_string()
}

/// The hash of one entry: every field but `hash` itself (the payload by
/// its digest), length-prefixed so no two different entries serialize to
/// the same bytes.
pub fn entry_hash(e: &AuditRecord) -> String {
    let mut hasher = Sha256::new();
    let id = e.id.to_string();
    let at = e.at.to_string();
    for field in [
        e.prev_hash.as_str(),
        &id,
        &at,
        &e.actor,
        &e.action,
        e.run_id.as_deref().unwrap_or(""),
        e.step_id.as_deref().unwrap_or(""),
        &e.payload_sha256,
    ] {
        hasher.update((field.len() as u64).to_be_bytes());
        hasher.update(field.as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// The entry that follows `last` (id and hash of the newest entry, if any).
/// Ids are consecutive from 1 so that a gap shows a deleted entry.
pub fn next_record(last: Option<(i64, String)>, entry: NewAudit, at: i64) -> AuditRecord {
    let (id, prev_hash) = match last {
        Some((id, hash)) => (id + 1, hash),
        None => (1, GENESIS.to_string()),
    };
    let mut record = AuditRecord {
        id,
        at,
        actor: entry.actor,
        action: entry.action,
        run_id: entry.run_id,
        step_id: entry.step_id,
        payload_sha256: sha256_hex(payload_text(&entry.payload).as_bytes()),
        payload: entry.payload,
        prev_hash,
        hash: String::new(),
    };
    record.hash = entry_hash(&record);
    record
}

/// Where the chain breaks, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit entry {id}: {reason}")]
pub struct AuditBreak {
    pub id: i64,
    pub reason: String,
}

/// Checks a run of consecutive entries, oldest first. `prev` is the hash the
/// first entry must chain to (`GENESIS` from the start of the log) and
/// `expected_id` its id. Returns the last hash and the next expected id.
pub fn verify_chain(
    entries: &[AuditRecord],
    mut prev: String,
    mut expected_id: i64,
) -> Result<(String, i64), AuditBreak> {
    for e in entries {
        if e.id != expected_id {
            return Err(AuditBreak {
                id: e.id,
                reason: if e.id > expected_id {
                    format!("entries {expected_id}..{} are missing (deleted)", e.id - 1)
                } else {
                    format!("out of order (expected entry {expected_id})")
                },
            });
        }
        if sha256_hex(payload_text(&e.payload).as_bytes()) != e.payload_sha256 {
            return Err(AuditBreak { id: e.id, reason: "payload was edited".into() });
        }
        if e.prev_hash != prev {
            return Err(AuditBreak {
                id: e.id,
                reason: "does not chain to the entry before it (an entry was deleted or edited)"
                    .into(),
            });
        }
        let hash = entry_hash(e);
        if hash != e.hash {
            return Err(AuditBreak { id: e.id, reason: "fields were edited".into() });
        }
        prev = hash;
        expected_id += 1;
    }
    Ok((prev, expected_id))
}

/// What [`walk`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Walk {
    /// Entries whose chain was checked and holds (those before the break).
    pub verified: usize,
    /// The newest entry of the unbroken chain (id, hash); `from` when no
    /// entry followed it, `None` for an empty log.
    pub head: Option<(i64, String)>,
    /// Where the chain breaks, if it does.
    pub broken: Option<AuditBreak>,
    /// The id of the newest stored entry, chained or not (0: none).
    pub last_id: i64,
    /// The stored hash of each entry named in `wanted`, chained or not.
    pub hashes: BTreeMap<i64, String>,
}

/// Reads the log after `from` (the id and hash of an entry already checked;
/// `None`: from the first entry) oldest first, and checks its chain. After
/// a break it goes on reading, only to learn the newest id and the hashes
/// stored at the `wanted` ids.
pub async fn walk(
    store: &dyn Store,
    from: Option<(i64, String)>,
    wanted: &BTreeSet<i64>,
) -> Result<Walk, StoreError> {
    let (mut after, mut prev) = from.clone().unwrap_or((0, GENESIS.to_string()));
    let mut walk = Walk { head: from, last_id: after, ..Walk::default() };
    loop {
        let page = store.audit_list(after, PAGE).await?;
        let Some(last) = page.last() else { return Ok(walk) };
        after = last.id;
        walk.last_id = last.id;
        for e in page.iter().filter(|e| wanted.contains(&e.id)) {
            walk.hashes.insert(e.id, e.hash.clone());
        }
        if walk.broken.is_some() {
            continue;
        }
        let expected = walk.head.as_ref().map_or(1, |(id, _)| id + 1);
        match verify_chain(&page, prev.clone(), expected) {
            Ok((hash, _)) => {
                walk.verified += page.len();
                walk.head = Some((last.id, hash.clone()));
                prev = hash;
            }
            Err(b) => {
                // Entries of this page before the break verified.
                let good = page.iter().position(|e| e.id == b.id).unwrap_or(0);
                walk.verified += good;
                if let Some(e) = good.checked_sub(1).map(|i| &page[i]) {
                    walk.head = Some((e.id, e.hash.clone()));
                }
                walk.broken = Some(b);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: i64) -> Vec<AuditRecord> {
        let mut prev = GENESIS.to_string();
        (1..=n)
            .map(|id| {
                let payload = serde_json::json!({ "n": id });
                let payload_sha256 = sha256_hex(payload_text(&payload).as_bytes());
                let mut e = AuditRecord {
                    id,
                    at: id * 10,
                    actor: "alice".into(),
                    action: "cancel".into(),
                    run_id: Some("r".into()),
                    step_id: None,
                    payload,
                    payload_sha256,
                    prev_hash: prev.clone(),
                    hash: String::new(),
                };
                e.hash = entry_hash(&e);
                let hash = e.hash.clone();
                prev = hash;
                e
            })
            .collect()
    }

    #[test]
    fn an_intact_chain_verifies() {
        let (_, next) = verify_chain(&chain(5), GENESIS.into(), 1).unwrap();
        assert_eq!(next, 6);
    }

    #[test]
    fn edits_deletions_and_reorders_are_named() {
        let mut edited = chain(5);
        edited[2].actor = "mallory".into();
        assert_eq!(verify_chain(&edited, GENESIS.into(), 1).unwrap_err().id, 3);

        let mut payload = chain(5);
        payload[1].payload = serde_json::json!({ "n": 99 });
        let err = verify_chain(&payload, GENESIS.into(), 1).unwrap_err();
        assert_eq!((err.id, err.reason.as_str()), (2, "payload was edited"));

        let mut deleted = chain(5);
        deleted.remove(3);
        let err = verify_chain(&deleted, GENESIS.into(), 1).unwrap_err();
        assert_eq!(err.id, 5);
        assert!(err.reason.contains("missing"), "{err}");

        let mut swapped = chain(5);
        swapped.swap(1, 2);
        assert_eq!(verify_chain(&swapped, GENESIS.into(), 1).unwrap_err().id, 3);
    }
}
