//! The durable journal: intent and baseline before the first frame of a
//! document, outcome after.

mod memory;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

pub use memory::InMemoryJournal;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use postgres::PgJournal;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use sqlite::SqliteJournal;

use crate::error::Error;
use crate::outcome::{Outcome, Snapshot};
use crate::receipt::Job;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// Where a job stands in the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum JobState {
    /// Intent and baseline recorded; frames may have reached the device.
    Pending,
    /// Ended with exactly one document.
    Printed,
    /// Ended with no document; may be submitted again.
    NotPrinted,
    /// Ended in doubt; waits for a person.
    Unknown,
}

impl JobState {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Printed => "printed",
            JobState::NotPrinted => "not_printed",
            JobState::Unknown => "unknown",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => JobState::Pending,
            "printed" => JobState::Printed,
            "not_printed" => JobState::NotPrinted,
            "unknown" => JobState::Unknown,
            _ => return None,
        })
    }

    /// The state an outcome leads to.
    pub fn of(o: &Outcome) -> Self {
        match o {
            Outcome::Printed(_) => JobState::Printed,
            Outcome::NotPrinted(_) => JobState::NotPrinted,
            Outcome::Unknown(_) => JobState::Unknown,
        }
    }
}

/// One job as the journal holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    /// The caller's idempotent job id (e.g. the sale id).
    pub job_id: String,
    /// The printer it belongs to.
    pub printer_id: String,
    /// The job.
    pub job: Job,
    /// Where it stands.
    pub state: JobState,
    /// Attempts started (1 for the first).
    pub attempt: u32,
    /// Device counters read before the current attempt's first frame.
    pub baseline: Option<Snapshot>,
    /// The outcome, once there is one.
    pub outcome: Option<Outcome>,
    /// Created, ms since the epoch.
    pub created_at: i64,
    /// Last change, ms since the epoch.
    pub updated_at: i64,
}

/// Totals over printed jobs, to compare with the device's own totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct JournalTotals {
    /// Printed fiscal receipts.
    pub receipts: u64,
    /// Their amounts.
    pub receipts_amount: i64,
    /// Printed storno receipts.
    pub reversals: u64,
    /// Their amounts.
    pub reversals_amount: i64,
}

/// A durable store of print jobs.
///
/// Every implementation passes the same conformance suite
/// (`tests/journal.rs`).
#[async_trait]
pub trait Journal: Send + Sync + std::fmt::Debug {
    /// Records the intent of an attempt and the device baseline, before the
    /// first frame. Creates the record on the first attempt.
    ///
    /// # Errors
    ///
    /// [`Error::Conflict`] when `job_id` is known with a different job or
    /// printer; [`Error::Backend`] when the store fails.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the write is one statement.
    async fn record_intent(
        &self,
        printer_id: &str,
        job_id: &str,
        job: &Job,
        attempt: u32,
        baseline: &Snapshot,
        now: i64,
    ) -> Result<(), Error>;

    /// Records the outcome of the current attempt.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when the store fails.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the write is one statement.
    async fn record_outcome(&self, job_id: &str, outcome: &Outcome, now: i64) -> Result<(), Error>;

    /// One job.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when the store fails.
    async fn get(&self, job_id: &str) -> Result<Option<JobRecord>, Error>;

    /// Jobs of `printer_id` in state `state`, oldest first.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when the store fails.
    async fn in_state(&self, printer_id: &str, state: JobState) -> Result<Vec<JobRecord>, Error>;

    /// Totals over the printed receipts and reversals of `printer_id`.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when the store fails.
    async fn totals(&self, printer_id: &str) -> Result<JournalTotals, Error>;
}

fn _obj_safe(_: &dyn Journal) {}

/// Shared helpers for the SQL backends.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) mod sql {
    use super::*;

    #[cfg(feature = "sqlite")]
    pub(crate) const MIGRATIONS_SQLITE: &[(i64, &str)] = &[(
        1,
        include_str!("../../migrations/sqlite/0001_fiscal_jobs.sql"),
    )];
    #[cfg(feature = "postgres")]
    pub(crate) const MIGRATIONS_POSTGRES: &[(i64, &str)] = &[(
        1,
        include_str!("../../migrations/postgres/0001_fiscal_jobs.sql"),
    )];

    pub(crate) fn json<T: Serialize>(v: &T) -> Result<String, Error> {
        serde_json::to_string(v).map_err(Error::backend)
    }

    pub(crate) fn unjson<T: for<'de> Deserialize<'de>>(s: &str) -> Result<T, Error> {
        serde_json::from_str(s).map_err(Error::backend)
    }

    pub(crate) fn outcome_cols(o: &Outcome) -> (Option<i64>, Option<i64>) {
        match o {
            Outcome::Printed(d) => (i64::try_from(d.doc_no).ok(), Some(d.amount.0)),
            _ => (None, None),
        }
    }

    /// Builds a record from the row's columns.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn record(
        job_id: String,
        printer_id: String,
        job: String,
        state: String,
        attempt: i64,
        baseline: Option<String>,
        outcome: Option<String>,
        created_at: i64,
        updated_at: i64,
    ) -> Result<JobRecord, Error> {
        Ok(JobRecord {
            job_id,
            printer_id,
            job: unjson(&job)?,
            state: JobState::parse(&state)
                .ok_or_else(|| Error::BadReply(format!("unknown job state {state:?}")))?,
            attempt: u32::try_from(attempt).unwrap_or(u32::MAX),
            baseline: baseline.as_deref().map(unjson).transpose()?,
            outcome: outcome.as_deref().map(unjson).transpose()?,
            created_at,
            updated_at,
        })
    }

    pub(crate) fn check_same(rec: &JobRecord, printer_id: &str, job: &Job) -> Result<(), Error> {
        if rec.printer_id != printer_id || &rec.job != job {
            Err(Error::Conflict(rec.job_id.clone()))
        } else {
            Ok(())
        }
    }
}
