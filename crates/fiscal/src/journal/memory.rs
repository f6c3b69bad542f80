//! In-memory journal (tests, and embedded runs that accept losing it).

use super::{Job, JobRecord, JobState, Journal, JournalTotals};
use crate::error::Error;
use crate::outcome::{Outcome, Snapshot};
use async_trait::async_trait;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

/// A journal held in memory. Same behaviour as the SQL journals, no durability.
#[derive(Debug, Default)]
pub struct InMemoryJournal {
    rows: Mutex<Rows>,
}

#[derive(Debug, Default)]
struct Rows {
    by_id: BTreeMap<String, JobRecord>,
    /// (printer, state) → (created_at, job id), so state queries do not scan.
    index: HashMap<(String, JobState), BTreeSet<(i64, String)>>,
}

impl Rows {
    fn reindex(&mut self, job_id: &str, old: Option<JobState>) {
        let Some(r) = self.by_id.get(job_id) else {
            return;
        };
        let key = (r.created_at, r.job_id.clone());
        let printer = r.printer_id.clone();
        let new = r.state;
        if let Some(old) = old
            && let Some(set) = self.index.get_mut(&(printer.clone(), old))
        {
            set.remove(&key);
        }
        self.index.entry((printer, new)).or_default().insert(key);
    }
}

impl InMemoryJournal {
    /// An empty journal.
    pub fn new() -> Self {
        Self::default()
    }

    fn rows(&self) -> std::sync::MutexGuard<'_, Rows> {
        self.rows.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl Journal for InMemoryJournal {
    async fn record_intent(
        &self,
        printer_id: &str,
        job_id: &str,
        job: &Job,
        attempt: u32,
        baseline: &Snapshot,
        now: i64,
    ) -> Result<(), Error> {
        let mut rows = self.rows();
        let old = rows.by_id.get(job_id).map(|r| r.state);
        match rows.by_id.get_mut(job_id) {
            Some(r) => {
                if r.printer_id != printer_id || &r.job != job {
                    return Err(Error::Conflict(job_id.to_owned()));
                }
                r.state = JobState::Pending;
                r.attempt = attempt;
                r.baseline = Some(baseline.clone());
                r.outcome = None;
                r.updated_at = now;
            }
            None => {
                rows.by_id.insert(
                    job_id.to_owned(),
                    JobRecord {
                        job_id: job_id.to_owned(),
                        printer_id: printer_id.to_owned(),
                        job: job.clone(),
                        state: JobState::Pending,
                        attempt,
                        baseline: Some(baseline.clone()),
                        outcome: None,
                        created_at: now,
                        updated_at: now,
                    },
                );
            }
        }
        rows.reindex(job_id, old);
        Ok(())
    }

    async fn record_outcome(&self, job_id: &str, outcome: &Outcome, now: i64) -> Result<(), Error> {
        let mut rows = self.rows();
        let r = rows
            .by_id
            .get_mut(job_id)
            .ok_or_else(|| Error::BadReply(format!("no job {job_id}")))?;
        let old = r.state;
        r.state = JobState::of(outcome);
        r.outcome = Some(outcome.clone());
        r.updated_at = now;
        rows.reindex(job_id, Some(old));
        Ok(())
    }

    async fn get(&self, job_id: &str) -> Result<Option<JobRecord>, Error> {
        Ok(self.rows().by_id.get(job_id).cloned())
    }

    async fn in_state(&self, printer_id: &str, state: JobState) -> Result<Vec<JobRecord>, Error> {
        let rows = self.rows();
        Ok(rows
            .index
            .get(&(printer_id.to_owned(), state))
            .into_iter()
            .flatten()
            .filter_map(|(_, id)| rows.by_id.get(id).cloned())
            .collect())
    }

    async fn totals(&self, printer_id: &str) -> Result<JournalTotals, Error> {
        let mut t = JournalTotals::default();
        for r in self.rows().by_id.values() {
            if r.printer_id != printer_id {
                continue;
            }
            if let Some(Outcome::Printed(d)) = &r.outcome {
                match r.job {
                    Job::Receipt(_) => {
                        t.receipts += 1;
                        t.receipts_amount += d.amount.0;
                    }
                    Job::Reversal(_) => {
                        t.reversals += 1;
                        t.reversals_amount += d.amount.0;
                    }
                    _ => {}
                }
            }
        }
        Ok(t)
    }
}
