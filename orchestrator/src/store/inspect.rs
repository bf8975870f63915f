//! Looking at a database without changing it, for `lifeboat doctor`:
//! whether it answers, which migrations it has against the ones this
//! binary carries, SQLite's journal mode and the Postgres server's clock.
//! Opening a [`Store`](super::Store) migrates; this never does (a check
//! that fixed what it checks would hide the problem from the next replica).

use std::str::FromStr;
use std::time::Duration;

use sqlx::Connection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};

use super::{Result, StoreError};

/// How long inspecting may wait for a database that does not answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What [`inspect`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    /// `sqlite` or `postgres`.
    pub backend: &'static str,
    /// Versions of the migrations applied (successfully) in the database.
    pub applied: Vec<i64>,
    /// Versions of the migrations this binary carries.
    pub expected: Vec<i64>,
    /// SQLite's file (`None` on Postgres).
    pub file: Option<std::path::PathBuf>,
    /// SQLite's `journal_mode` (`wal` when lifeboat made the file).
    pub journal_mode: Option<String>,
    /// The Postgres server's clock, Unix ms, read in the same round trip.
    pub server_now_ms: Option<i64>,
}

impl Inspection {
    /// Migrations this binary carries that the database lacks.
    pub fn missing(&self) -> Vec<i64> {
        self.expected.iter().copied().filter(|v| !self.applied.contains(v)).collect()
    }

    /// Migrations the database has that this binary does not know: it was
    /// migrated by a newer lifeboat.
    pub fn unknown(&self) -> Vec<i64> {
        self.applied.iter().copied().filter(|v| !self.expected.contains(v)).collect()
    }
}

/// Connects to `url` once, reads, and disconnects. A SQLite file that does
/// not exist is reported as such, not created.
pub async fn inspect(url: &str) -> Result<Inspection> {
    let work = async {
        if url.starts_with("sqlite:") {
            inspect_sqlite(url).await
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            inspect_postgres(url).await
        } else {
            // `open` names the schemes a URL may have.
            super::open(url).await.map(|_| unreachable!("open refuses other schemes"))
        }
    };
    tokio::time::timeout(CONNECT_TIMEOUT, work).await.unwrap_or_else(|_| {
        Err(StoreError::Config(format!(
            "the database did not answer within {} s",
            CONNECT_TIMEOUT.as_secs()
        )))
    })
}

/// The file of a `sqlite:` URL when it does not exist yet.
pub fn missing_sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    let options = SqliteConnectOptions::from_str(url).ok()?;
    let file = options.get_filename();
    (url.starts_with("sqlite:") && !file.exists()).then(|| file.to_path_buf())
}

fn versions(migrator: &sqlx::migrate::Migrator) -> Vec<i64> {
    migrator.iter().filter(|m| m.migration_type.is_up_migration()).map(|m| m.version).collect()
}

async fn inspect_sqlite(url: &str) -> Result<Inspection> {
    if let Some(file) = missing_sqlite_file(url) {
        return Err(StoreError::Config(format!(
            "{} does not exist (lifeboat creates it at its first start)",
            file.display()
        )));
    }
    let options = SqliteConnectOptions::from_str(url)?.read_only(true);
    let file = options.get_filename().to_path_buf();
    let mut conn = SqliteConnection::connect_with(&options).await?;
    let journal_mode: String =
        sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&mut conn).await?;
    let has_table: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations')",
    )
    .fetch_one(&mut conn)
    .await?;
    let applied = if has_table {
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(&mut conn)
            .await?
    } else {
        Vec::new()
    };
    conn.close().await?;
    Ok(Inspection {
        backend: "sqlite",
        applied,
        expected: versions(&super::sqlite::MIGRATOR),
        file: Some(file),
        journal_mode: Some(journal_mode.to_lowercase()),
        server_now_ms: None,
    })
}

async fn inspect_postgres(url: &str) -> Result<Inspection> {
    let (url, schema) = super::postgres::split_url(url)?;
    let options = sqlx::postgres::PgConnectOptions::from_str(&url)?;
    let mut conn = sqlx::postgres::PgConnection::connect_with(&options).await?;
    // The schema lifeboat would use: the named one, else `lifeboat`, else
    // the `public` of a deployment from before schemas.
    let table: Option<String> = sqlx::query_scalar(
        "SELECT table_schema FROM information_schema.tables \
         WHERE table_name = '_sqlx_migrations' AND table_schema = ANY($1) \
         ORDER BY array_position($1, table_schema::text) LIMIT 1",
    )
    .bind(if schema.explicit {
        vec![schema.name.clone()]
    } else {
        vec![schema.name.clone(), "public".to_string()]
    })
    .fetch_optional(&mut conn)
    .await?;
    let applied =
        match &table {
            // The name came from the catalogue and passed `Schema`'s rules or is `public`.
            Some(found) => sqlx::query_scalar(&format!(
                "SELECT version FROM \"{found}\"._sqlx_migrations WHERE success ORDER BY version"
            ))
            .fetch_all(&mut conn)
            .await?,
            None => Vec::new(),
        };
    let now_ms: i64 =
        sqlx::query_scalar("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint")
            .fetch_one(&mut conn)
            .await?;
    conn.close().await?;
    Ok(Inspection {
        backend: "postgres",
        applied,
        expected: versions(&super::postgres::MIGRATOR),
        file: None,
        journal_mode: None,
        server_now_ms: Some(now_ms),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_fresh_sqlite_file_is_found_migrated_in_wal_mode_and_a_missing_one_is_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.db");
        let url = format!("sqlite://{}", path.display());
        let e = inspect(&url).await.unwrap_err().to_string();
        assert!(e.contains("does not exist"), "{e}");
        assert!(!path.exists(), "inspecting created the file");

        let url = format!("sqlite://{}", dir.path().join("lifeboat.db").display());
        drop(super::super::open(&url).await.unwrap());
        let found = inspect(&url).await.unwrap();
        assert_eq!(found.backend, "sqlite");
        assert_eq!(found.journal_mode.as_deref(), Some("wal"));
        assert!(!found.expected.is_empty());
        assert_eq!(found.missing(), Vec::<i64>::new());
        assert_eq!(found.unknown(), Vec::<i64>::new());
    }

    #[tokio::test]
    async fn an_unmigrated_sqlite_file_lacks_every_migration() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.db");
        let url = format!("sqlite://{}", path.display());
        let opts = SqliteConnectOptions::from_str(&url).unwrap().create_if_missing(true);
        SqliteConnection::connect_with(&opts).await.unwrap().close().await.unwrap();
        let found = inspect(&url).await.unwrap();
        assert_eq!(found.missing(), found.expected);
        assert_eq!(found.journal_mode.as_deref(), Some("delete"));
    }
}
