//! Which Postgres schema lifeboat's tables live in: `?schema=NAME` in the
//! database URL, `lifeboat` when it names none. The schema is created when
//! missing and is every connection's `search_path`, so lifeboat's tables
//! (and sqlx's `_sqlx_migrations`) never meet a database's other tables,
//! and an unqualified `steps` in the store's SQL is always lifeboat's.
//!
//! A database migrated by a lifeboat from before schemas has its tables in
//! `public`; they are used there (with a warning) until an operator moves
//! them, see docs/postgres.md.

use sqlx::postgres::{PgConnectOptions, PgConnection};
use std::str::FromStr;

use super::MIGRATOR;
use crate::store::{Result, StoreError};

/// The schema of a URL that names none.
pub const DEFAULT_SCHEMA: &str = "lifeboat";

/// The schema a database URL asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schema {
    pub name: String,
    /// Named in the URL: used as is, never exchanged for the `public` of a
    /// deployment from before schemas (only the default is).
    pub explicit: bool,
}

impl Default for Schema {
    fn default() -> Self {
        Schema { name: DEFAULT_SCHEMA.into(), explicit: false }
    }
}

impl Schema {
    /// An explicitly chosen schema, validated.
    pub fn named(name: &str) -> Result<Schema> {
        validate(name)?;
        Ok(Schema { name: name.into(), explicit: true })
    }
}

/// Takes lifeboat's own `schema` parameter out of a Postgres URL: the URL
/// sqlx (and libpq) understand, and the schema it asks for.
pub fn split_url(url: &str) -> Result<(String, Schema)> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_string(), Schema::default()));
    };
    let mut schema = Schema::default();
    let mut kept = Vec::new();
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("schema", name)) => schema = Schema::named(name)?,
            None if pair == "schema" => return Err(invalid("")),
            _ => kept.push(pair),
        }
    }
    let url = if kept.is_empty() { base.to_string() } else { format!("{base}?{}", kept.join("&")) };
    Ok((url, schema))
}

/// Connect options for `url` whose `search_path` is the schema it names (or
/// `lifeboat`): for tools and tests that read lifeboat's tables directly.
pub fn connect_options(url: &str) -> Result<PgConnectOptions> {
    let (url, schema) = split_url(url)?;
    Ok(PgConnectOptions::from_str(&url)?.options([("search_path", schema.name)]))
}

/// Unquoted-identifier rules, lowercase only (Postgres folds unquoted names
/// to lowercase, so `Lifeboat` would name two schemas depending on quoting),
/// and not `pg_…`, which Postgres reserves.
fn validate(name: &str) -> Result<()> {
    let usable = name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !name.starts_with("pg_");
    if usable { Ok(()) } else { Err(invalid(name)) }
}

fn invalid(name: &str) -> StoreError {
    StoreError::Config(format!(
        "database_url: `schema={name}` is not a schema name lifeboat accepts: use lowercase \
         letters, digits and `_`, starting with a letter or `_`, at most 63 characters, not \
         starting with `pg_`"
    ))
}

/// Decides where lifeboat's tables are, creates that schema if it is
/// missing and makes it `conn`'s `search_path`; returns its name. Called
/// under the migration lock, so replicas starting together neither race on
/// `CREATE SCHEMA` nor decide differently.
pub(super) async fn prepare(conn: &mut PgConnection, schema: &Schema) -> Result<String> {
    // First start in this schema, and an older lifeboat's tables in `public`.
    let legacy = schema.name != "public"
        && !has_migrations(conn, &schema.name).await?
        && lifeboat_in_public(conn).await?;
    let name = if legacy && !schema.explicit {
        tracing::warn!(
            "lifeboat's tables are in schema `public`, where lifeboat put them before it had a \
             schema of its own; using them there. To move them into schema `{}`, see \
             docs/postgres.md; to keep them in `public`, add `?schema=public` to database_url.",
            schema.name
        );
        "public".to_string()
    } else {
        if legacy {
            tracing::warn!(
                "schema `{}` is new, but `public` holds the tables of an older lifeboat; they \
                 are left where they are (docs/postgres.md says how to move them).",
                schema.name
            );
        }
        schema.name.clone()
    };
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
            .bind(&name)
            .fetch_one(&mut *conn)
            .await?;
    // Only when missing: `CREATE SCHEMA IF NOT EXISTS` checks for CREATE on
    // the database before it looks, which a role given a schema lacks.
    if !exists {
        sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS \"{name}\""))
            .execute(&mut *conn)
            .await
            .map_err(|e| cannot_create(e, &name))?;
        tracing::info!(schema = %name, "Created the schema for lifeboat's tables.");
    }
    sqlx::query(&format!("SET search_path TO \"{name}\"")).execute(&mut *conn).await?;
    Ok(name)
}

/// Someone has migrated `schema` (lifeboat, or another sqlx program that
/// chose it: the migrator then refuses the foreign migrations).
async fn has_migrations(conn: &mut PgConnection, schema: &str) -> Result<bool> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = $1 \
         AND tablename = '_sqlx_migrations')",
    )
    .bind(schema)
    .fetch_one(conn)
    .await?)
}

/// `public._sqlx_migrations` records lifeboat's first migration (same
/// version and checksum): an older lifeboat's tables, not another program's.
async fn lifeboat_in_public(conn: &mut PgConnection) -> Result<bool> {
    let Some(first) = MIGRATOR.iter().next() else { return Ok(false) };
    let readable: bool = sqlx::query_scalar(
        "SELECT CASE WHEN to_regclass('public._sqlx_migrations') IS NULL THEN false \
         ELSE has_table_privilege('public._sqlx_migrations', 'SELECT') END",
    )
    .fetch_one(&mut *conn)
    .await?;
    if !readable {
        return Ok(false);
    }
    let checksum: Option<Vec<u8>> = sqlx::query_scalar(
        "SELECT checksum FROM public._sqlx_migrations WHERE version = $1 AND success",
    )
    .bind(first.version)
    .fetch_optional(conn)
    .await?;
    Ok(checksum.is_some_and(|c| c == *first.checksum))
}

/// A refused `CREATE SCHEMA` says what to grant or create.
fn cannot_create(e: sqlx::Error, name: &str) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("42501") => {
            StoreError::Config(format!(
                "cannot create schema `{name}` for lifeboat's tables ({}): grant the role CREATE \
                 on the database, or create the schema beforehand (`CREATE SCHEMA {name} \
                 AUTHORIZATION <role>`); see docs/postgres.md",
                db.message()
            ))
        }
        _ => e.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_parameter_is_taken_out_of_the_url() {
        let (url, schema) = split_url("postgres://u:p@h/db?sslmode=disable&schema=ops").unwrap();
        assert_eq!(url, "postgres://u:p@h/db?sslmode=disable");
        assert_eq!(schema, Schema { name: "ops".into(), explicit: true });
        let (url, schema) = split_url("postgres://u@h/db?schema=_lb2").unwrap();
        assert_eq!((url.as_str(), schema.name.as_str()), ("postgres://u@h/db", "_lb2"));
        let (url, schema) = split_url("postgres://u@h/db?sslmode=require").unwrap();
        assert_eq!(url, "postgres://u@h/db?sslmode=require");
        assert_eq!(schema, Schema::default());
    }

    #[test]
    fn a_schema_that_is_not_a_plain_lowercase_identifier_is_refused_naming_the_field() {
        let long = "s".repeat(64);
        for bad in ["", "Ops", "1ops", "ops-b", "a\"b", "pg_ops", "o%20p", long.as_str()] {
            let err = split_url(&format!("postgres://u@h/db?schema={bad}")).unwrap_err();
            assert!(matches!(err, StoreError::Config(_)), "{bad}: {err:?}");
            assert!(err.to_string().contains("database_url: `schema="), "{err}");
        }
        assert!(matches!(split_url("postgres://u@h/db?schema"), Err(StoreError::Config(_))));
        assert!(split_url(&format!("postgres://u@h/db?schema={}", "s".repeat(63))).is_ok());
    }
}
