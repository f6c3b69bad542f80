//! The migration runner for the SQL backends.
//!
//! Applied versions are recorded in `idem_migrations` (not sqlx's own table),
//! so these migrations coexist with the application's and other crates' in
//! one database. Runs are serialized (`pg_advisory_xact_lock` on PostgreSQL,
//! `BEGIN IMMEDIATE` on SQLite) and idempotent.

/// One embedded migration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Migration {
    pub(crate) version: i64,
    pub(crate) name: &'static str,
    pub(crate) sql: &'static str,
}

#[cfg(feature = "postgres")]
pub(crate) const POSTGRES: &[Migration] = &[Migration {
    version: 1,
    name: "idem_records",
    sql: include_str!("../migrations/postgres/0001_idem_records.sql"),
}];

#[cfg(feature = "sqlite")]
pub(crate) const SQLITE: &[Migration] = &[Migration {
    version: 1,
    name: "idem_records",
    sql: include_str!("../migrations/sqlite/0001_idem_records.sql"),
}];

/// Advisory lock key for PostgreSQL: "idem" in ASCII, constant across releases.
#[cfg(feature = "postgres")]
pub(crate) const PG_LOCK_KEY: i64 = 0x6964_656d_6d69_6772;

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS idem_migrations (\
     version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)";

#[cfg(feature = "postgres")]
pub(crate) async fn run_postgres(pool: &sqlx::PgPool, now_ms: i64) -> Result<u32, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(PG_LOCK_KEY)
        .execute(&mut *tx)
        .await?;
    sqlx::query(CREATE_TABLE).execute(&mut *tx).await?;
    let mut applied = 0;
    for m in POSTGRES {
        let done: Option<i64> =
            sqlx::query_scalar("SELECT version FROM idem_migrations WHERE version = $1")
                .bind(m.version)
                .fetch_optional(&mut *tx)
                .await?;
        if done.is_some() {
            continue;
        }
        sqlx::raw_sql(m.sql).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO idem_migrations (version, name, applied_at) VALUES ($1, $2, $3)")
            .bind(m.version)
            .bind(m.name)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        applied += 1;
    }
    tx.commit().await?;
    Ok(applied)
}

#[cfg(feature = "sqlite")]
pub(crate) async fn run_sqlite(pool: &sqlx::SqlitePool, now_ms: i64) -> Result<u32, sqlx::Error> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    sqlx::query(CREATE_TABLE).execute(&mut *tx).await?;
    let mut applied = 0;
    for m in SQLITE {
        let done: Option<i64> =
            sqlx::query_scalar("SELECT version FROM idem_migrations WHERE version = ?1")
                .bind(m.version)
                .fetch_optional(&mut *tx)
                .await?;
        if done.is_some() {
            continue;
        }
        sqlx::raw_sql(m.sql).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO idem_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)")
            .bind(m.version)
            .bind(m.name)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        applied += 1;
    }
    tx.commit().await?;
    Ok(applied)
}
