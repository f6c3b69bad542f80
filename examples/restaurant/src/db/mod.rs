//! The server database: PostgreSQL in production, an SQLite file in the
//! embedded default. The server's SQL is written once, with `$1` parameters
//! that both backends accept; only what differs (claiming work with
//! `FOR UPDATE SKIP LOCKED`, auto-increment ids) is written twice.

mod durable;
pub(crate) mod migrate;

pub(crate) use durable::Durability;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, Postgres, Sqlite, SqlitePool, Transaction};

/// A connection pool on one of the two backends.
#[derive(Debug, Clone)]
pub(crate) enum Db {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// A transaction on one of the two backends. Crates that must write inside
/// the caller's transaction (saga start, outbox enqueue) take the inner one.
#[derive(Debug)]
pub(crate) enum Tx {
    Postgres(Transaction<'static, Postgres>),
    Sqlite(Transaction<'static, Sqlite>),
}

impl Db {
    /// Connects to `url` (`postgres://...` or `sqlite://...`), creating the
    /// SQLite file and its directory when missing.
    pub(crate) async fn connect(
        url: &str,
        max_connections: u32,
        sync: crate::config::SqliteSync,
    ) -> Result<Db, sqlx::Error> {
        if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let options = PgConnectOptions::from_str(url)?;
            // One connection first: its error says why (refused, unknown
            // host, bad password), where the pool's would only say that it
            // timed out.
            sqlx::Connection::close(
                <sqlx::PgConnection as sqlx::Connection>::connect_with(&options).await?,
            )
            .await?;
            let pool = PgPoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options)
                .await?;
            Ok(Db::Postgres(pool))
        } else if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(match sync {
                    crate::config::SqliteSync::Full => SqliteSynchronous::Full,
                    crate::config::SqliteSync::Grouped | crate::config::SqliteSync::Normal => {
                        SqliteSynchronous::Normal
                    }
                })
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true);
            if let Some(dir) = options.get_filename().parent()
                && !dir.as_os_str().is_empty()
                && !Path::new(dir).exists()
            {
                std::fs::create_dir_all(dir).map_err(sqlx::Error::Io)?;
            }
            // No ping before each acquire: a connection to a local file is
            // not lost the way a socket is, and on SQLite each ping is a
            // round trip to the connection's thread, on the path of every
            // transaction (sqlx still pings once on release).
            let pool = SqlitePoolOptions::new()
                .max_connections(max_connections.min(8))
                .test_before_acquire(false)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options)
                .await?;
            Ok(Db::Sqlite(pool))
        } else {
            Err(sqlx::Error::Configuration(
                format!(
                    "database URL must start with postgres:// or sqlite:// (got `{}`)",
                    redact(url)
                )
                .into(),
            ))
        }
    }

    /// What must wait for commits to reach the disk: group commit for an
    /// SQLite file with `--sqlite-sync grouped`, nothing otherwise. Call on
    /// a runtime (it spawns the syncer).
    pub(crate) fn durability(&self, sync: crate::config::SqliteSync) -> Durability {
        match (self, sync) {
            (Db::Sqlite(p), crate::config::SqliteSync::Grouped) => {
                let file = p.connect_options().get_filename().to_owned();
                if file.as_os_str().is_empty() || file.as_os_str() == ":memory:" {
                    Durability::none()
                } else {
                    Durability::grouped(&file)
                }
            }
            _ => Durability::none(),
        }
    }

    /// Applies the server's own migrations (table `app_migrations`).
    pub(crate) async fn migrate(&self) -> Result<(), sqlx::Error> {
        migrate::run(self, "app_migrations", migrate::SERVER).await
    }

    /// Begins a write transaction (`BEGIN IMMEDIATE` on SQLite, so two
    /// writers queue instead of failing on a lock upgrade).
    pub(crate) async fn begin(&self) -> Result<Tx, sqlx::Error> {
        Ok(match self {
            Db::Postgres(p) => Tx::Postgres(p.begin().await?),
            Db::Sqlite(p) => Tx::Sqlite(p.begin_with("BEGIN IMMEDIATE").await?),
        })
    }

    /// A connection of the pool, outside any transaction: each statement
    /// on it commits on its own.
    pub(crate) async fn acquire(&self) -> Result<Pooled, sqlx::Error> {
        Ok(match self {
            Db::Postgres(p) => Pooled::Postgres(p.acquire().await?),
            Db::Sqlite(p) => Pooled::Sqlite(p.acquire().await?),
        })
    }

    /// `SELECT 1`, for the readiness probe.
    pub(crate) async fn ping(&self) -> Result<(), sqlx::Error> {
        match self {
            Db::Postgres(p) => sqlx::query("SELECT 1").execute(p).await.map(drop),
            Db::Sqlite(p) => sqlx::query("SELECT 1").execute(p).await.map(drop),
        }
    }
}

impl Tx {
    pub(crate) async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Postgres(t) => t.commit().await,
            Tx::Sqlite(t) => t.commit().await,
        }
    }
}

/// A URL with its password replaced, for logs and errors.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// A borrowed connection inside a transaction of either backend.
#[derive(Debug)]
pub(crate) enum Conn<'a> {
    Postgres(&'a mut sqlx::PgConnection),
    Sqlite(&'a mut sqlx::SqliteConnection),
}

/// Anything that holds a connection the server's SQL can run on: its own
/// [`Tx`], a saga step's transaction (so a step's business rows, print job
/// and events commit with the saga's checkpoint), or a connection of the
/// pool outside any transaction ([`Pooled`]), so a read is written once for
/// both.
pub(crate) trait AsConn {
    /// The connection, in its open transaction if it has one.
    fn conn(&mut self) -> Result<Conn<'_>, sqlx::Error>;
}

impl AsConn for Conn<'_> {
    fn conn(&mut self) -> Result<Conn<'_>, sqlx::Error> {
        Ok(match self {
            Conn::Postgres(c) => Conn::Postgres(c),
            Conn::Sqlite(c) => Conn::Sqlite(c),
        })
    }
}

/// A connection checked out of the server's pool ([`Db::acquire`]).
pub(crate) enum Pooled {
    Postgres(sqlx::pool::PoolConnection<sqlx::Postgres>),
    Sqlite(sqlx::pool::PoolConnection<sqlx::Sqlite>),
}

impl AsConn for Pooled {
    fn conn(&mut self) -> Result<Conn<'_>, sqlx::Error> {
        Ok(match self {
            Pooled::Postgres(c) => Conn::Postgres(c),
            Pooled::Sqlite(c) => Conn::Sqlite(c),
        })
    }
}

impl AsConn for Tx {
    fn conn(&mut self) -> Result<Conn<'_>, sqlx::Error> {
        Ok(match self {
            Tx::Postgres(t) => Conn::Postgres(t),
            Tx::Sqlite(t) => Conn::Sqlite(t),
        })
    }
}

impl AsConn for counterfoil_saga::StepTx {
    fn conn(&mut self) -> Result<Conn<'_>, sqlx::Error> {
        if self.postgres().is_some() {
            match self.postgres() {
                Some(t) => Ok(Conn::Postgres(t)),
                None => Err(no_sql()),
            }
        } else {
            match self.sqlite() {
                Some(t) => Ok(Conn::Sqlite(t)),
                None => Err(no_sql()),
            }
        }
    }
}

fn no_sql() -> sqlx::Error {
    sqlx::Error::Configuration("the saga store has no SQL transaction".into())
}

/// Runs the same query text on whichever backend `$db` (a `&Db`) holds:
/// `on_db!(db, |e| sqlx::query("...").bind(x).execute(e))`.
macro_rules! on_db {
    ($db:expr, |$e:ident| $body:expr) => {
        match $db {
            $crate::db::Db::Postgres($e) => $body.await,
            $crate::db::Db::Sqlite($e) => $body.await,
        }
    };
}

/// As [`on_db!`] for anything holding a transaction ([`AsConn`]).
macro_rules! on_tx {
    ($tx:expr, |$e:ident| $body:expr) => {
        match $crate::db::AsConn::conn($tx) {
            Ok($crate::db::Conn::Postgres($e)) => $body.await,
            Ok($crate::db::Conn::Sqlite($e)) => $body.await,
            Err(err) => Err(err),
        }
    };
}

pub(crate) use {on_db, on_tx};

#[cfg(test)]
mod tests {
    use super::{Db, redact};
    use crate::config::SqliteSync;

    /// `--sqlite-sync` and `--sqlite-connections` reach SQLite.
    #[tokio::test]
    async fn sqlite_settings_reach_the_database() {
        let dir = std::env::temp_dir().join(format!("restaurant-db-{}", uuid::Uuid::new_v4()));
        let url = format!("sqlite://{}/x.sqlite", dir.display());
        for (sync, want_sync, connections, want_pool) in [
            (SqliteSync::Full, 2, 3, 3),
            (SqliteSync::Normal, 1, 1, 1),
            // Group commit: NORMAL, with the log synced before effects.
            (SqliteSync::Grouped, 1, 2, 2),
            // At most 8: SQLite has one writer.
            (SqliteSync::Normal, 1, 64, 8),
        ] {
            let Db::Sqlite(pool) = Db::connect(&url, connections, sync).await.unwrap() else {
                panic!("not SQLite");
            };
            let (mode,): (i64,) = sqlx::query_as("PRAGMA synchronous")
                .fetch_one(&pool)
                .await
                .unwrap();
            assert_eq!(mode, want_sync, "{sync:?}");
            let (journal,): (String,) = sqlx::query_as("PRAGMA journal_mode")
                .fetch_one(&pool)
                .await
                .unwrap();
            assert_eq!(journal, "wal");
            assert_eq!(pool.options().get_max_connections(), want_pool);
            // No ping round trip to the connection's thread per acquire.
            assert!(!pool.options().get_test_before_acquire());
            pool.close().await;
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("sqlite://data/x.sqlite"), "sqlite://data/x.sqlite");
        assert_eq!(redact("redis://h:6379"), "redis://h:6379");
    }
}
