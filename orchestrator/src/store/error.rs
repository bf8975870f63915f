//! `StoreError`: what can go wrong below the `Store` seam, by what the caller
//! should do about it. The API's statuses and the CLI's exit codes are chosen
//! from these variants (docs/exit-codes.md), never from message text.

/// A store operation that did not happen, and why.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No run has this id (or id prefix).
    #[error("run {0} not found")]
    NotFound(String),
    /// A run id prefix matches several runs (a few of them listed).
    #[error("run id prefix `{prefix}` matches several runs ({}); type more of it", candidates.join(", "))]
    Ambiguous { prefix: String, candidates: Vec<String> },
    /// The write lost a race: the lease is gone, or a unique key says it exists.
    #[error(transparent)]
    Conflict(#[from] Conflict),
    /// The database cannot be reached or cannot read or write its files
    /// (network, IO, pool timeout, disk full): an outage, not a bad request.
    #[error("database unavailable: {0}")]
    Unavailable(Outage),
    /// The database's schema is not the one this binary knows (migrations
    /// pending, or applied by a newer lifeboat).
    #[error("{0}")]
    SchemaBehind(String),
    /// A stored value does not decode.
    #[error("{}", corrupt_text(run.as_deref(), step.as_deref(), what))]
    Corrupt { run: Option<String>, step: Option<String>, what: String },
    /// The database URL or its options are not usable.
    #[error("{0}")]
    Config(String),
    /// Any other database error: a bug or a state nobody planned for.
    #[error("database: {0}")]
    Database(sqlx::Error),
    /// The same, from the SQLite writer thread's own connection (rusqlite).
    #[error("database: {0}")]
    Sqlite(String),
}

/// The ways a write can lose a race.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Conflict {
    /// The committing worker no longer holds the run's lease (fencing).
    #[error("the lease on run {0} was lost (another worker took it over)")]
    LeaseLost(String),
    /// A unique key already holds this (a queued decision, …).
    #[error("{0}")]
    Exists(String),
}

/// What made the database unavailable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct Outage {
    pub message: String,
    /// Nothing answered (connection refused or lost, pool timeout, a server
    /// shutting down or a database that does not exist yet): it may come
    /// up, so `serve` waits for it when it starts. `false`: it answered but
    /// cannot be used (IO error, disk full, a file that is not a database).
    pub unreachable: bool,
}

impl From<&str> for Outage {
    fn from(message: &str) -> Self {
        Outage { message: message.to_string(), unreachable: false }
    }
}

impl StoreError {
    /// The database did not answer at all (see `Outage::unreachable`).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, StoreError::Unavailable(o) if o.unreachable)
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

fn corrupt_text(run: Option<&str>, step: Option<&str>, what: &str) -> String {
    match (run, step) {
        (Some(run), Some(step)) => {
            format!("stored data is corrupt: run {run}, step `{step}`: {what}")
        }
        (Some(run), None) => format!("stored data is corrupt: run {run}: {what}"),
        _ => format!("stored data is corrupt: {what}"),
    }
}

impl StoreError {
    /// A corrupt value outside any run (an outbox row, a count).
    pub fn corrupt(what: impl Into<String>) -> Self {
        StoreError::Corrupt { run: None, step: None, what: what.into() }
    }

    /// Names the run (and step) a corrupt value belongs to, if not named yet.
    pub fn in_run(self, run: &str, step: Option<&str>) -> Self {
        match self {
            StoreError::Corrupt { run: None, what, .. } => StoreError::Corrupt {
                run: Some(run.to_string()),
                step: step.map(str::to_string),
                what,
            },
            other => other,
        }
    }

    /// The same verdict for another caller (a batch whose commit failed
    /// answers each of its jobs; `sqlx::Error` cannot be cloned).
    pub fn for_another(&self) -> StoreError {
        match self {
            StoreError::NotFound(id) => StoreError::NotFound(id.clone()),
            StoreError::Ambiguous { prefix, candidates } => {
                StoreError::Ambiguous { prefix: prefix.clone(), candidates: candidates.clone() }
            }
            StoreError::Conflict(c) => StoreError::Conflict(c.clone()),
            StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
            StoreError::SchemaBehind(m) => StoreError::SchemaBehind(m.clone()),
            StoreError::Corrupt { run, step, what } => {
                StoreError::Corrupt { run: run.clone(), step: step.clone(), what: what.clone() }
            }
            StoreError::Config(m) => StoreError::Config(m.clone()),
            StoreError::Database(e) => StoreError::Database(sqlx::Error::Protocol(e.to_string())),
            StoreError::Sqlite(m) => StoreError::Sqlite(m.clone()),
        }
    }
}

/// SQLite's primary result codes that mean its file cannot be used:
/// BUSY, NOMEM, READONLY, IOERR, FULL, CANTOPEN, NOLFS, NOTADB.
const SQLITE_UNAVAILABLE: [i64; 8] = [5, 7, 8, 10, 13, 14, 22, 26];

/// Whether a database's error code means "cannot reach or use the database"
/// rather than "this statement is wrong". SQLite codes are numbers (the
/// extended code; its low byte is the primary one), Postgres codes SQLSTATEs.
fn outage_code(code: &str, sqlite: bool) -> bool {
    if sqlite {
        return code.parse::<i64>().is_ok_and(|n| SQLITE_UNAVAILABLE.contains(&(n & 0xff)));
    }
    // 08: connection exception; 53: insufficient resources; 57P0x: the
    // server is shutting down or not accepting connections; 58: system
    // error (IO); 3D000: the database does not exist (dropped).
    code.starts_with("08")
        || code.starts_with("53")
        || code.starts_with("57P")
        || code.starts_with("58")
        || code == "3D000"
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        use sqlx::Error as E;
        match e {
            E::Io(_) | E::Tls(_) | E::PoolTimedOut | E::PoolClosed | E::WorkerCrashed => {
                StoreError::Unavailable(Outage { message: e.to_string(), unreachable: true })
            }
            E::Configuration(_) => StoreError::Config(e.to_string()),
            E::ColumnDecode { .. } | E::Decode(_) => StoreError::corrupt(e.to_string()),
            E::Migrate(m) => (*m).into(),
            E::Database(ref db) => {
                if db.is_unique_violation() {
                    StoreError::Conflict(Conflict::Exists(db.message().to_string()))
                } else if let Some(sqlite) = db.code().and_then(|c| {
                    let sqlite = db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some();
                    outage_code(&c, sqlite).then_some(sqlite)
                }) {
                    // A Postgres server that refuses is away; a SQLite file is there but unusable.
                    StoreError::Unavailable(Outage { message: e.to_string(), unreachable: !sqlite })
                } else {
                    StoreError::Database(e)
                }
            }
            other => StoreError::Database(other),
        }
    }
}

/// SQLite's extended codes for a unique or primary key violation.
const SQLITE_UNIQUE: [i32; 2] = [2067, 1555];

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match &e {
            rusqlite::Error::SqliteFailure(f, _) if SQLITE_UNIQUE.contains(&f.extended_code) => {
                StoreError::Conflict(Conflict::Exists(e.to_string()))
            }
            rusqlite::Error::SqliteFailure(f, _)
                if outage_code(&f.extended_code.to_string(), true) =>
            {
                // The file is there but cannot be used (full disk, IO, locked).
                StoreError::Unavailable(Outage { message: e.to_string(), unreachable: false })
            }
            rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::IntegralValueOutOfRange(..) => StoreError::corrupt(e.to_string()),
            _ => StoreError::Sqlite(e.to_string()),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        use sqlx::migrate::MigrateError as M;
        match e {
            M::Execute(e) | M::ExecuteMigration(e, _) => e.into(),
            M::VersionMissing(v) => StoreError::SchemaBehind(format!(
                "database schema is newer than this lifeboat: migration {v} was applied by another version; upgrade lifeboat"
            )),
            other => StoreError::SchemaBehind(format!("database migrations: {other}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outage_codes_are_told_from_statement_errors() {
        for code in ["10", "522", "14", "26", "13"] {
            assert!(outage_code(code, true), "{code}");
        }
        for code in ["1", "19", "2067", "11"] {
            assert!(!outage_code(code, true), "{code}");
        }
        for code in ["08006", "57P01", "53300", "3D000", "58030"] {
            assert!(outage_code(code, false), "{code}");
        }
        for code in ["23505", "42P01", "40P01", "40001"] {
            assert!(!outage_code(code, false), "{code}");
        }
    }

    #[test]
    fn a_pool_timeout_is_an_outage_and_a_corrupt_value_names_its_run_and_step() {
        assert!(matches!(StoreError::from(sqlx::Error::PoolTimedOut), StoreError::Unavailable(_)));
        let e = StoreError::corrupt("bad JSON").in_run("r1", Some("a"));
        assert_eq!(e.to_string(), "stored data is corrupt: run r1, step `a`: bad JSON");
    }
}
