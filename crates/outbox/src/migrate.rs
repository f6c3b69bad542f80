//! The crate's own migration runner (table `outbox_migrations`).

#![cfg(any(feature = "postgres", feature = "sqlite"))]

use crate::Error;

pub(crate) struct Migration {
    pub(crate) version: i64,
    pub(crate) name: &'static str,
    pub(crate) sql: &'static str,
}

#[cfg(feature = "postgres")]
pub(crate) const POSTGRES: &[Migration] = &[Migration {
    version: 1,
    name: "outbox",
    sql: include_str!("../migrations/postgres/0001_outbox.sql"),
}];

#[cfg(feature = "sqlite")]
pub(crate) const SQLITE: &[Migration] = &[Migration {
    version: 1,
    name: "outbox",
    sql: include_str!("../migrations/sqlite/0001_outbox.sql"),
}];

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS outbox_migrations (
    version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)";

fn now_ms() -> i64 {
    use crate::clock::Clock;
    crate::clock::SystemClock.now_ms()
}

/// Advisory-lock key: the bytes of "cfoutbox".
#[cfg(feature = "postgres")]
const PG_LOCK_KEY: i64 = 0x6366_6f75_7462_6f78;

#[cfg(feature = "postgres")]
pub(crate) async fn run_postgres(pool: &sqlx::PgPool) -> Result<(), Error> {
    use sqlx::Row;
    let mut tx = pool.begin().await.map_err(Error::db)?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(PG_LOCK_KEY)
        .execute(&mut *tx)
        .await
        .map_err(Error::db)?;
    sqlx::query(CREATE_TABLE)
        .execute(&mut *tx)
        .await
        .map_err(Error::db)?;
    let applied: Vec<i64> = sqlx::query("SELECT version FROM outbox_migrations")
        .fetch_all(&mut *tx)
        .await
        .map_err(Error::db)?
        .iter()
        .map(|r| r.try_get::<i64, _>(0))
        .collect::<Result<_, _>>()
        .map_err(Error::db)?;
    for m in POSTGRES.iter().filter(|m| !applied.contains(&m.version)) {
        sqlx::raw_sql(m.sql)
            .execute(&mut *tx)
            .await
            .map_err(|e| Error::Migration {
                version: m.version,
                source: Box::new(e),
            })?;
        sqlx::query(
            "INSERT INTO outbox_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
        )
        .bind(m.version)
        .bind(m.name)
        .bind(now_ms())
        .execute(&mut *tx)
        .await
        .map_err(Error::db)?;
    }
    tx.commit().await.map_err(Error::db)
}

#[cfg(feature = "sqlite")]
pub(crate) async fn run_sqlite(pool: &sqlx::SqlitePool) -> Result<(), Error> {
    use sqlx::Row;
    let mut tx = pool
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(Error::db)?;
    sqlx::query(CREATE_TABLE)
        .execute(&mut *tx)
        .await
        .map_err(Error::db)?;
    let applied: Vec<i64> = sqlx::query("SELECT version FROM outbox_migrations")
        .fetch_all(&mut *tx)
        .await
        .map_err(Error::db)?
        .iter()
        .map(|r| r.try_get::<i64, _>(0))
        .collect::<Result<_, _>>()
        .map_err(Error::db)?;
    for m in SQLITE.iter().filter(|m| !applied.contains(&m.version)) {
        sqlx::raw_sql(m.sql)
            .execute(&mut *tx)
            .await
            .map_err(|e| Error::Migration {
                version: m.version,
                source: Box::new(e),
            })?;
        sqlx::query("INSERT INTO outbox_migrations (version, name, applied_at) VALUES (?, ?, ?)")
            .bind(m.version)
            .bind(m.name)
            .bind(now_ms())
            .execute(&mut *tx)
            .await
            .map_err(Error::db)?;
    }
    tx.commit().await.map_err(Error::db)
}
