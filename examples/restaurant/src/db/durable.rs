//! Group commit for the SQLite database of the embedded default.
//!
//! With `--sqlite-sync grouped` the server's connections commit with
//! `synchronous = NORMAL`: a commit is appended to the write-ahead log and
//! not waited for on disk. One background task makes commits durable in
//! groups, with one `fdatasync` of the log for every commit that came
//! before it. Whatever leaves the process waits for that sync first
//! ([`Durability::barrier`]): the answer to an HTTP request, an event on a
//! WebSocket, a message published to an agent, the acknowledgement of an
//! agent's report, a call to the payment provider. So nobody outside the
//! process can have seen a commit that a power failure takes back, which is
//! what `full` promises, at the cost of one sync per group instead of one
//! per commit.
//!
//! The sync covers every frame SQLite wrote to the log before it started,
//! whichever connection wrote it: `fdatasync` flushes the file, not one
//! descriptor's writes. A checkpoint moves frames to the database file only
//! after syncing the log and syncs the database file after, so frames a
//! checkpoint took are durable too. When SQLite removes the log (the last
//! connection closed, after a checkpoint), there is nothing left to sync.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{Notify, watch};

/// Makes the commits before a point durable before anything depending on
/// them leaves the process. Cheap to clone; a no-op unless built with
/// [`Durability::grouped`].
#[derive(Debug, Clone)]
pub(crate) struct Durability(Option<Arc<Group>>);

/// The group commit state of one database file.
#[derive(Debug)]
struct Group {
    /// Barriers asked for so far; the syncer serves them in groups.
    requested: AtomicU64,
    wake: Notify,
    synced: watch::Sender<Synced>,
    /// Syncs completed, for tests and the metric.
    syncs: AtomicU64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Synced {
    /// Every barrier numbered up to this one is served.
    upto: u64,
    /// A sync failed: what was not synced may be lost, and the kernel may
    /// have dropped the failed pages, so no later sync can be trusted.
    failed: bool,
}

/// The write-ahead log could not be synced: the server must stop taking
/// work on this database.
#[derive(Debug, thiserror::Error)]
#[error("the database's write-ahead log could not be synced; writes are refused until restart")]
pub(crate) struct NotDurable;

impl Durability {
    /// Nothing to wait for: every commit is already durable (PostgreSQL,
    /// SQLite with `synchronous = FULL`) or durability was traded away
    /// (`--sqlite-sync normal`).
    pub(crate) fn none() -> Self {
        Self(None)
    }

    /// Group commit for the SQLite database in `db_file` (WAL mode,
    /// `synchronous = NORMAL`). Spawns the syncer on the current runtime.
    pub(crate) fn grouped(db_file: &Path) -> Self {
        let mut wal = db_file.as_os_str().to_owned();
        wal.push("-wal");
        let wal = PathBuf::from(wal);
        let dir = match db_file.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        };
        let group = Arc::new(Group {
            requested: AtomicU64::new(0),
            wake: Notify::new(),
            synced: watch::Sender::new(Synced::default()),
            syncs: AtomicU64::new(0),
        });
        tokio::spawn(syncer(group.clone(), wal, dir));
        Self(Some(group))
    }

    /// Returns once every commit made before the call is on disk.
    pub(crate) async fn barrier(&self) -> Result<(), NotDurable> {
        let Some(g) = &self.0 else {
            return Ok(());
        };
        let mut rx = g.synced.subscribe();
        // Numbered before the syncer reads the count for its next group, so
        // the sync that serves this barrier starts after the call.
        let ticket = g.requested.fetch_add(1, Ordering::SeqCst) + 1;
        g.wake.notify_one();
        let synced = rx
            .wait_for(|s| s.failed || s.upto >= ticket)
            .await
            .map_err(|_| NotDurable)?;
        if synced.failed {
            Err(NotDurable)
        } else {
            Ok(())
        }
    }

    /// False once a sync has failed.
    pub(crate) fn healthy(&self) -> bool {
        self.0.as_ref().is_none_or(|g| !g.synced.borrow().failed)
    }

    /// Syncs completed so far (0 without group commit).
    #[cfg(test)]
    pub(crate) fn syncs(&self) -> u64 {
        self.0
            .as_ref()
            .map_or(0, |g| g.syncs.load(Ordering::Relaxed))
    }
}

async fn syncer(group: Arc<Group>, wal: PathBuf, dir: PathBuf) {
    let mut served = 0u64;
    let mut log_inode = None;
    loop {
        let target = loop {
            let asked = group.requested.load(Ordering::SeqCst);
            if asked > served {
                break asked;
            }
            group.wake.notified().await;
        };
        let (wal2, dir2) = (wal.clone(), dir.clone());
        let done = tokio::task::spawn_blocking(move || {
            let r = sync_log(&wal2, &dir2, &mut log_inode);
            (log_inode, r)
        })
        .await;
        match done {
            Ok((inode, Ok(()))) => {
                log_inode = inode;
                served = target;
                group.syncs.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("sqlite_group_syncs_total").increment(1);
                group.synced.send_modify(|s| s.upto = target);
            }
            Ok((_, Err(e))) => {
                tracing::error!(error = %e, wal = %wal.display(), "cannot sync the database's write-ahead log; refusing writes until restart");
                group.synced.send_modify(|s| s.failed = true);
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "the write-ahead log sync task failed; refusing writes until restart");
                group.synced.send_modify(|s| s.failed = true);
                return;
            }
        }
    }
}

/// `fdatasync` of the log; the directory too when the log is a new file,
/// so that the file itself survives.
fn sync_log(wal: &Path, dir: &Path, inode: &mut Option<u64>) -> io::Result<()> {
    let log = match File::open(wal) {
        Ok(f) => f,
        // No log: SQLite checkpointed everything into the database file,
        // synced it, and removed the log.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    log.sync_data()?;
    let ino = log.metadata()?.ino();
    if *inode != Some(ino) {
        File::open(dir)?.sync_all()?;
        *inode = Some(ino);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the system's temporary directory.
    fn scratch() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("restaurant-durable-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Group commit over a database whose log holds some frames.
    fn grouped_over_a_log() -> Durability {
        let dir = scratch();
        std::fs::write(dir.join("x.sqlite-wal"), b"frames").unwrap();
        Durability::grouped(&dir.join("x.sqlite"))
    }

    #[tokio::test]
    async fn without_group_commit_a_barrier_returns_at_once() {
        let d = Durability::none();
        d.barrier().await.unwrap();
        assert!(d.healthy());
        assert_eq!(d.syncs(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_barrier_waits_for_a_sync_that_started_after_it() {
        let d = grouped_over_a_log();
        for _ in 0..20 {
            let before = d.syncs();
            d.barrier().await.unwrap();
            // A sync finished before the call cannot serve it.
            assert!(d.syncs() > before);
        }
        assert!(d.healthy());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_barriers_share_syncs() {
        let d = grouped_over_a_log();
        let callers = 64 * 20;
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..64 {
            let d = d.clone();
            tasks.spawn(async move {
                for _ in 0..20 {
                    d.barrier().await.unwrap();
                }
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
        let syncs = d.syncs();
        assert!(
            syncs >= 1 && syncs < callers,
            "{syncs} syncs for {callers} barriers"
        );
    }

    #[tokio::test]
    async fn a_missing_log_has_nothing_to_sync() {
        let dir = scratch();
        let d = Durability::grouped(&dir.join("never-written.sqlite"));
        d.barrier().await.unwrap();
        assert_eq!(d.syncs(), 1);
    }

    #[tokio::test]
    async fn a_failed_sync_fails_every_barrier_after_it() {
        let dir = scratch();
        // The "directory" of the log is a file: opening the log fails with
        // an error other than not-found.
        let blocker = dir.join("file");
        std::fs::write(&blocker, b"").unwrap();
        let d = Durability::grouped(&blocker.join("x.sqlite"));
        assert!(d.barrier().await.is_err());
        assert!(d.barrier().await.is_err());
        assert!(!d.healthy());
    }

    #[tokio::test]
    async fn commits_with_normal_sync_are_in_the_log_a_barrier_syncs() {
        use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
        let dir = scratch();
        let file = dir.join("db.sqlite");
        let pool = sqlx::SqlitePool::connect_with(
            SqliteConnectOptions::new()
                .filename(&file)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal),
        )
        .await
        .unwrap();
        sqlx::query("CREATE TABLE t (v INTEGER)")
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query("INSERT INTO t VALUES (1)")
            .execute(&pool)
            .await
            .unwrap();
        let wal = dir.join("db.sqlite-wal");
        assert!(
            std::fs::metadata(&wal).unwrap().len() > 0,
            "the commit is in the log"
        );
        let d = Durability::grouped(&file);
        d.barrier().await.unwrap();
        assert_eq!(d.syncs(), 1);
        pool.close().await;
    }
}
