//! A small migration runner. Each migration set records its applied
//! versions in its own table (`app_migrations` for the server,
//! `agent_migrations` for the print agent), so the crates' migrations (each
//! with their own table) coexist in the same database. Runs are serialized
//! with `pg_advisory_xact_lock` on PostgreSQL and `BEGIN IMMEDIATE` on
//! SQLite, so many processes may start at once.

use futures::TryFutureExt;
use sqlx::AssertSqlSafe;

use super::{Db, Tx, on_tx};

/// One migration, written for both backends.
#[derive(Debug)]
pub(crate) struct Migration {
    pub(crate) version: i64,
    pub(crate) name: &'static str,
    pub(crate) postgres: &'static str,
    pub(crate) sqlite: &'static str,
}

/// The server's migrations.
pub(crate) const SERVER: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        postgres: include_str!("../../migrations/postgres/0001_init.sql"),
        sqlite: include_str!("../../migrations/sqlite/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "print_jobs",
        postgres: include_str!("../../migrations/postgres/0002_print_jobs.sql"),
        sqlite: include_str!("../../migrations/sqlite/0002_print_jobs.sql"),
    },
];

/// The print agent's migrations (its own database).
pub(crate) const AGENT: &[Migration] = &[Migration {
    version: 1,
    name: "journal",
    postgres: include_str!("../../migrations/agent/postgres/0001_journal.sql"),
    sqlite: include_str!("../../migrations/agent/sqlite/0001_journal.sql"),
}];

/// Applies `migrations` not yet recorded in `table`.
pub(crate) async fn run(
    db: &Db,
    table: &'static str,
    migrations: &[Migration],
) -> Result<(), sqlx::Error> {
    // The advisory lock key: a hash of the table name, so each set has its own.
    let lock_key = table.bytes().fold(0x636f_756e_7465_7201_i64, |h, b| {
        h.wrapping_mul(31).wrapping_add(i64::from(b))
    });
    for m in migrations {
        let mut tx = db.begin().await?;
        if let Tx::Postgres(t) = &mut tx {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(lock_key)
                .execute(&mut **t)
                .await?;
        }
        let create = format!(
            "CREATE TABLE IF NOT EXISTS {table} (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)"
        );
        on_tx!(&mut tx, |e| sqlx::query(AssertSqlSafe(create.clone()))
            .execute(e)
            .map_ok(|r| r.rows_affected()))?;
        let select = format!("SELECT version FROM {table} WHERE version = $1");
        let applied: Option<i64> = on_tx!(&mut tx, |e| sqlx::query_scalar(AssertSqlSafe(
            select.clone()
        ))
        .bind(m.version)
        .fetch_optional(e))?;
        if applied.is_some() {
            tx.commit().await?;
            continue;
        }
        match &mut tx {
            Tx::Postgres(t) => {
                sqlx::raw_sql(m.postgres).execute(&mut **t).await?;
            }
            Tx::Sqlite(t) => {
                sqlx::raw_sql(m.sqlite).execute(&mut **t).await?;
            }
        }
        let insert = format!("INSERT INTO {table} (version, name, applied_at) VALUES ($1, $2, $3)");
        on_tx!(&mut tx, |e| sqlx::query(AssertSqlSafe(insert.clone()))
            .bind(m.version)
            .bind(m.name)
            .bind(crate::domain::now_ms())
            .execute(e)
            .map_ok(|r| r.rows_affected()))?;
        tx.commit().await?;
        tracing::info!(
            table,
            version = m.version,
            name = m.name,
            "applied migration"
        );
    }
    Ok(())
}
