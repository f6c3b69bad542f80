//! Shared test helpers: real PostgreSQL schemas, SQLite files, RabbitMQ names.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// The URL in `var`, or `None` (with a message) when unset outside CI.
pub fn service_url(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            assert!(!ci(), "{var} must be set when CI=true");
            eprintln!("skipping: {var} is not set");
            None
        }
    }
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// A fresh schema in the test database; drop it with [`PgTestDb::cleanup`].
pub struct PgTestDb {
    pub pool: PgPool,
    pub schema: String,
    url: String,
}

impl PgTestDb {
    pub async fn new(max_connections: u32) -> Option<Self> {
        let url = service_url("TEST_POSTGRES_URL")?;
        let schema = unique("outbox_test");
        let admin = PgPool::connect(&url).await.expect("postgres reachable");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&admin)
            .await
            .unwrap();
        admin.close().await;
        let pool = Self::pool_for(&url, &schema, max_connections).await;
        Some(Self { pool, schema, url })
    }

    pub async fn pool_for(url: &str, schema: &str, max_connections: u32) -> PgPool {
        let opts = PgConnectOptions::from_str(url)
            .unwrap()
            .options([("search_path", schema)]);
        PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(opts)
            .await
            .unwrap()
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub async fn cleanup(self) {
        self.pool.close().await;
        let admin = PgPool::connect(&self.url).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA {} CASCADE",
            self.schema
        )))
        .execute(&admin)
        .await
        .unwrap();
        admin.close().await;
    }
}

/// A fresh SQLite file in WAL mode.
pub async fn sqlite_pool() -> (SqlitePool, std::path::PathBuf) {
    let path = std::env::temp_dir().join(format!("{}.db", unique("outbox_test")));
    (sqlite_pool_at(&path).await, path)
}

pub async fn sqlite_pool_at(path: &std::path::Path) -> SqlitePool {
    let opts = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(10));
    SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(opts)
        .await
        .unwrap()
}

pub fn remove_sqlite(path: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
}

use std::sync::Arc;

use counterfoil_outbox::{
    Handler, HandlerError, InboxOutcome, IncomingMessage, MessageId, PgInbox, handler_fn,
};
use tokio::sync::mpsc::UnboundedSender;

/// What a test handler saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub id: MessageId,
    pub duplicate: bool,
    pub payload: Vec<u8>,
    pub partition_key: Option<String>,
    pub delivery_count: u32,
}

pub const EFFECTS_DDL: &str =
    "CREATE TABLE effects (message_id UUID PRIMARY KEY, payload BYTEA NOT NULL)";

/// A fresh schema with the outbox tables and the `effects` table, and its
/// outbox store.
pub async fn outbox_db(
    max_connections: u32,
) -> Option<(PgTestDb, counterfoil_outbox::PgOutboxStore)> {
    let db = PgTestDb::new(max_connections).await?;
    let store = counterfoil_outbox::PgOutboxStore::new(db.pool.clone());
    store.migrate().await.unwrap();
    sqlx::query(EFFECTS_DDL).execute(&db.pool).await.unwrap();
    Some((db, store))
}

/// A consumer handler in the recommended shape: inbox row first, then the
/// business effect, in one PostgreSQL transaction; reports after commit.
pub fn pg_inbox_handler(
    pool: PgPool,
    consumer: &'static str,
    seen: UnboundedSender<Seen>,
) -> Arc<dyn Handler> {
    let inbox = PgInbox::new(pool.clone());
    Arc::new(handler_fn(move |m: IncomingMessage| {
        let (pool, inbox, seen) = (pool.clone(), inbox.clone(), seen.clone());
        async move {
            let mut tx = pool.begin().await.map_err(HandlerError::retry)?;
            let outcome = inbox
                .try_begin(&mut tx, consumer, m.id)
                .await
                .map_err(HandlerError::retry)?;
            if outcome == InboxOutcome::New {
                sqlx::query("INSERT INTO effects (message_id, payload) VALUES ($1, $2)")
                    .bind(m.id.as_uuid())
                    .bind(&m.payload)
                    .execute(&mut *tx)
                    .await
                    .map_err(HandlerError::retry)?;
            }
            tx.commit().await.map_err(HandlerError::retry)?;
            let _ = seen.send(Seen {
                id: m.id,
                duplicate: outcome == InboxOutcome::Duplicate,
                payload: m.payload.clone(),
                partition_key: m.partition_key.clone(),
                delivery_count: m.delivery_count,
            });
            Ok(())
        }
    }))
}

pub async fn recv_n<T>(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<T>,
    n: usize,
    within: Duration,
) -> Vec<T> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let next = tokio::time::timeout(within, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out after {} of {n}", out.len()));
        out.push(next.expect("channel closed"));
    }
    out
}

/// Drops a WAL outbox's replication slot and publication, and optionally a
/// schema, when dropped: on a thread with its own runtime and connections,
/// so it also runs while a failed test unwinds (a leaked slot would keep WAL
/// on the test server for good).
pub struct SlotGuard {
    pub url: String,
    pub name: String,
    pub schema: Option<String>,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let (url, name, schema) = (self.url.clone(), self.name.clone(), self.schema.take());
        run_detached(async move {
            let admin = PgPool::connect(&url).await.unwrap();
            let outbox = counterfoil_outbox::PgLogicalOutbox::new(admin.clone())
                .name(&name)
                .unwrap();
            for _ in 0..100 {
                // The slot is busy while a relay's read is still running.
                if outbox.drop_slot().await.is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if let Some(schema) = schema {
                sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
                    .execute(&admin)
                    .await
                    .unwrap();
            }
            admin.close().await;
        });
    }
}

/// Runs `work` to its end on a thread with its own runtime, so a `Drop` can
/// wait for it, also while a failed test unwinds.
fn run_detached(work: impl std::future::Future<Output = ()> + Send + 'static) {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(work);
    })
    .join()
    .ok();
}

/// Deletes a test's queues (its dead-letter queue too) and its exchange when
/// dropped: on a thread with its own runtime and connection, so it also runs
/// while a failed test unwinds. Deleting what the test already deleted is a
/// no-op.
pub struct TopologyGuard {
    url: String,
    topology: Option<counterfoil_outbox::QueueTopology>,
}

impl TopologyGuard {
    pub fn new(url: &str, topology: &counterfoil_outbox::QueueTopology) -> Self {
        Self {
            url: url.to_owned(),
            topology: Some(topology.clone()),
        }
    }
}

impl Drop for TopologyGuard {
    fn drop(&mut self) {
        let (url, Some(topology)) = (self.url.clone(), self.topology.take()) else {
            return;
        };
        run_detached(async move {
            let noop = std::sync::Arc::new(counterfoil_outbox::handler_fn(
                |_m: counterfoil_outbox::IncomingMessage| async { Ok(()) },
            ));
            let consumer = counterfoil_outbox::AmqpConsumer::builder(&url, topology, noop)
                .build()
                .unwrap();
            if let Err(e) = consumer.delete_topology(true).await {
                eprintln!("could not delete a test's queues: {e}");
            }
        });
    }
}
