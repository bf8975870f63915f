//! The application database: one real SQLite file per site
//! (`sites/<site>.db`, table `orders`), written by a simulated application,
//! replayed by replicas with a measurable lag, snapshotted, restored and
//! checked.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{Connection, Row, SqliteConnection};

pub type DbResult<T> = Result<T, String>;

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS orders (
    id      INTEGER PRIMARY KEY,
    ts_ms   INTEGER NOT NULL,
    site    TEXT    NOT NULL,
    payload TEXT    NOT NULL
)";

/// Rows a fresh estate starts with, spread over the hour before the reset.
pub const SEED_ROWS: i64 = 1000;

fn err(what: &str, path: &Path) -> impl FnOnce(sqlx::Error) -> String {
    let at = format!("{what} {}", path.display());
    move |e| format!("{at}: {e}")
}

/// A site's database, created if missing, in WAL mode.
pub async fn open_site(path: &Path) -> DbResult<SqlitePool> {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(5));
    let pool = SqlitePoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await
        .map_err(err("open", path))?;
    sqlx::query(SCHEMA).execute(&pool).await.map_err(err("create schema in", path))?;
    Ok(pool)
}

/// One connection to a database file that must already exist.
async fn open_file(path: &Path) -> DbResult<SqliteConnection> {
    if !path.is_file() {
        return Err(format!("{}: no such file", path.display()));
    }
    let options = SqliteConnectOptions::from_str("sqlite://")
        .map_err(|e| e.to_string())?
        .filename(path)
        .busy_timeout(Duration::from_secs(5));
    SqliteConnection::connect_with(&options).await.map_err(err("open", path))
}

/// (rows, newest row's time in ms, highest id).
pub async fn stats(pool: &SqlitePool) -> DbResult<(i64, i64, i64)> {
    let row =
        sqlx::query("SELECT COUNT(*), COALESCE(MAX(ts_ms), 0), COALESCE(MAX(id), 0) FROM orders")
            .fetch_one(pool)
            .await
            .map_err(|e| e.to_string())?;
    Ok((row.get(0), row.get(1), row.get(2)))
}

/// Empties the database and writes the seed rows (the same on every site).
pub async fn seed(pool: &SqlitePool, now_ms: i64) -> DbResult<()> {
    let mut tx = pool.begin().await.map_err(|e| e.to_string())?;
    sqlx::query("DELETE FROM orders").execute(&mut *tx).await.map_err(|e| e.to_string())?;
    for i in 0..SEED_ROWS {
        let ts = now_ms - 3_600_000 + i * 3_600;
        sqlx::query("INSERT INTO orders (id, ts_ms, site, payload) VALUES (?, ?, 'dc01', ?)")
            .bind(i + 1)
            .bind(ts)
            .bind(format!("seed-{}", i + 1))
            .execute(&mut *tx)
            .await
            .map_err(|e| e.to_string())?;
    }
    tx.commit().await.map_err(|e| e.to_string())
}

/// The application writes one order on the primary.
pub async fn write(pool: &SqlitePool, site: &str, timeline: u64, now_ms: i64) -> DbResult<()> {
    sqlx::query(
        "INSERT INTO orders (ts_ms, site, payload)
         SELECT ?1, ?2, printf('order-%s-t%d-%d', ?2, ?3, COALESCE(MAX(id), 0) + 1) FROM orders",
    )
    .bind(now_ms)
    .bind(site)
    .bind(timeline as i64)
    .execute(pool)
    .await
    .map_err(|e| e.to_string())?;
    Ok(())
}

/// Replays on `replica` the rows of `source` it lacks that are at least
/// `delay_ms` old. Returns how many rows were applied.
pub async fn replicate(
    source: &SqlitePool,
    replica: &SqlitePool,
    delay_ms: u64,
    now_ms: i64,
) -> DbResult<u64> {
    let (_, _, have) = stats(replica).await?;
    let rows = sqlx::query(
        "SELECT id, ts_ms, site, payload FROM orders WHERE id > ? AND ts_ms <= ? ORDER BY id LIMIT 5000",
    )
    .bind(have)
    .bind(now_ms - delay_ms as i64)
    .fetch_all(source)
    .await
    .map_err(|e| e.to_string())?;
    if rows.is_empty() {
        return Ok(0);
    }
    let mut tx = replica.begin().await.map_err(|e| e.to_string())?;
    for row in &rows {
        sqlx::query("INSERT OR REPLACE INTO orders (id, ts_ms, site, payload) VALUES (?, ?, ?, ?)")
            .bind(row.get::<i64, _>(0))
            .bind(row.get::<i64, _>(1))
            .bind(row.get::<String, _>(2))
            .bind(row.get::<String, _>(3))
            .execute(&mut *tx)
            .await
            .map_err(|e| e.to_string())?;
    }
    tx.commit().await.map_err(|e| e.to_string())?;
    Ok(rows.len() as u64)
}

/// Makes `replica` a prefix of `source` again: deletes its rows that
/// `source` does not have identically (writes that never replicated before
/// a failover). Returns how many were discarded.
pub async fn rebase(source: &SqlitePool, replica: &SqlitePool) -> DbResult<u64> {
    let theirs = tail_rows(source).await?;
    let mine = tail_rows(replica).await?;
    let mut stray: Vec<i64> =
        mine.iter().filter(|(id, p)| theirs.get(id) != Some(p)).map(|(id, _)| *id).collect();
    stray.sort_unstable();
    // Everything from the first divergent row on goes: replay refills it.
    let Some(first) = stray.first() else { return Ok(0) };
    let done = sqlx::query("DELETE FROM orders WHERE id >= ?")
        .bind(first)
        .execute(replica)
        .await
        .map_err(|e| e.to_string())?;
    Ok(done.rows_affected())
}

/// (id, payload) of the rows written after the seed.
async fn tail_rows(pool: &SqlitePool) -> DbResult<std::collections::HashMap<i64, String>> {
    let rows = sqlx::query("SELECT id, payload FROM orders WHERE id > ?")
        .bind(SEED_ROWS)
        .fetch_all(pool)
        .await
        .map_err(|e| e.to_string())?;
    Ok(rows.iter().map(|r| (r.get::<i64, _>(0), r.get::<String, _>(1))).collect())
}

/// Rewinds `replica` so it is `delay_ms` behind: its rows younger than that
/// are replayed again once old enough.
pub async fn rewind(replica: &SqlitePool, delay_ms: u64, now_ms: i64) -> DbResult<u64> {
    let done = sqlx::query("DELETE FROM orders WHERE ts_ms > ? AND id > ?")
        .bind(now_ms - delay_ms as i64)
        .bind(SEED_ROWS / 2)
        .execute(replica)
        .await
        .map_err(|e| e.to_string())?;
    Ok(done.rows_affected())
}

/// Finishes a copy at `tmp`: self-contained (rollback journal, no -wal
/// file), private, then renamed to `dest`. Returns its row count.
async fn seal(tmp: &Path, dest: &Path) -> DbResult<i64> {
    let mut conn = open_file(tmp).await?;
    sqlx::query("PRAGMA journal_mode=DELETE")
        .execute(&mut conn)
        .await
        .map_err(err("finish", tmp))?;
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders")
        .fetch_one(&mut conn)
        .await
        .map_err(err("count rows in", tmp))?;
    conn.close().await.map_err(err("close", tmp))?;
    set_private(tmp)?;
    std::fs::rename(tmp, dest)
        .map_err(|e| format!("rename {} to {}: {e}", tmp.display(), dest.display()))?;
    Ok(rows)
}

fn set_private(path: &Path) -> DbResult<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("chmod {}: {e}", path.display()))
}

fn tmp_for(dest: &Path) -> std::path::PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    dest.with_file_name(name)
}

/// A transactionally consistent copy of a live database (`VACUUM INTO`):
/// returns the copy's row count.
pub async fn snapshot(pool: &SqlitePool, dest: &Path) -> DbResult<i64> {
    let tmp = tmp_for(dest);
    let _ = std::fs::remove_file(&tmp);
    sqlx::query("VACUUM INTO ?")
        .bind(tmp.to_string_lossy().into_owned())
        .execute(pool)
        .await
        .map_err(err("snapshot into", &tmp))?;
    seal(&tmp, dest).await
}

/// Loads the snapshot `src` into a new database at `dest` (replaced).
pub async fn restore(src: &Path, dest: &Path) -> DbResult<i64> {
    let mut conn = open_file(src).await?;
    let tmp = tmp_for(dest);
    let _ = std::fs::remove_file(&tmp);
    sqlx::query("VACUUM INTO ?")
        .bind(tmp.to_string_lossy().into_owned())
        .execute(&mut conn)
        .await
        .map_err(err("restore", src))?;
    conn.close().await.map_err(err("close", src))?;
    seal(&tmp, dest).await
}

/// Rows of the `orders` table of a database file.
pub async fn rowcount(path: &Path) -> DbResult<i64> {
    let mut conn = open_file(path).await?;
    sqlx::query_scalar("SELECT COUNT(*) FROM orders")
        .fetch_one(&mut conn)
        .await
        .map_err(err("count rows in", path))
}

/// `PRAGMA integrity_check` plus the schema the application needs:
/// `Ok(detail)` when sound, `Err(detail)` when not.
pub async fn integrity(path: &Path) -> Result<String, String> {
    let mut conn = open_file(path).await?;
    let lines: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_all(&mut conn)
        .await
        .map_err(err("check", path))?;
    if lines != ["ok"] {
        return Err(lines.join("; "));
    }
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .fetch_all(&mut conn)
            .await
            .map_err(err("read the schema of", path))?;
    if !tables.iter().any(|t| t == "orders") {
        return Err(format!("table `orders` is missing (tables: {})", tables.join(", ")));
    }
    Ok(format!("integrity_check ok; tables: {}", tables.join(", ")))
}
