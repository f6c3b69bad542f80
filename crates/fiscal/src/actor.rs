//! One actor per device: a queue per printer, the journal around every
//! document, reconciliation after any doubt, status polling through the
//! same queue.

use crate::clock::{SharedClock, SystemClock};
use crate::error::Error;
use crate::journal::{JobRecord, JobState, Journal};
use crate::message::{DeviceMessage, codes};
use crate::outcome::{Document, Evidence, NotPrinted, Outcome, Snapshot};
use crate::printer::FiscalPrinter;
use crate::receipt::{Job, Receipt};
use crate::reconcile::{Decision, Expect, decide};
use crate::validate::{validate_cash, validate_receipt};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// Configuration of a device actor.
#[derive(Debug, Clone)]
pub struct ActorConfig {
    /// The printer's id in the journal.
    pub printer_id: String,
    /// Jobs waiting beyond this many make `submit` wait. Default: 256.
    pub queue: usize,
    /// First wait between retries; doubles up to `max_backoff`. Default: 200 ms.
    pub backoff: Duration,
    /// Longest wait between retries. Default: 10 s.
    pub max_backoff: Duration,
    /// Attempts per job when an attempt ends "not printed" after a
    /// transport fault. Default: 3.
    pub max_attempts: u32,
    /// How long to wait for an unreachable device before giving up on this
    /// call: before the first frame the job ends not printed (`E101`);
    /// after it, the job stays pending and is reconciled when the device
    /// answers again. Default: 30 s.
    pub offline_wait: Duration,
    /// Status poll while idle (also settles pending jobs). Default: 30 s.
    pub poll_every: Duration,
    /// Clock for journal timestamps. Default: [`SystemClock`].
    pub clock: SharedClock,
}

impl ActorConfig {
    /// Defaults for `printer_id`.
    pub fn new(printer_id: impl Into<String>) -> Self {
        Self {
            printer_id: printer_id.into(),
            queue: 256,
            backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            max_attempts: 3,
            offline_wait: Duration::from_secs(30),
            poll_every: Duration::from_secs(30),
            clock: Arc::new(SystemClock),
        }
    }
}

/// Paper state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Paper {
    /// Not known yet.
    #[default]
    Unknown,
    /// Paper present.
    Ok,
    /// Running low.
    Low,
    /// Out: documents pause until refilled.
    Out,
}

/// What a console shows about a printer.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PrinterStatus {
    /// The printer id.
    pub printer_id: String,
    /// The device answered the last exchange.
    pub online: bool,
    /// Paper state.
    pub paper: Paper,
    /// Cover open.
    pub cover_open: bool,
    /// A fiscal receipt is open on the device.
    pub receipt_open: bool,
    /// Last document number the device reported.
    pub last_document: Option<u64>,
    /// Last Z report number the device reported.
    pub z_no: Option<u32>,
    /// The job being printed, if any.
    pub current_job: Option<String>,
    /// Jobs waiting for an answer from the device that stay pending.
    pub pending_jobs: usize,
    /// Device messages of the last status (errors and warnings).
    pub messages: Vec<DeviceMessage>,
    /// Last error talking to the device.
    pub last_error: Option<String>,
    /// When this was last updated, ms since the epoch.
    pub updated_at: i64,
}

/// How a person resolves an `Unknown` job after checking the device journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Resolution {
    /// The device printed it as this document.
    Printed(Document),
    /// The device did not print it; the job may be submitted again.
    NotPrinted,
}

enum Msg {
    Submit {
        job_id: String,
        job: Job,
        reply: oneshot::Sender<Result<Outcome, Error>>,
    },
    Refresh {
        reply: oneshot::Sender<Result<PrinterStatus, Error>>,
    },
    Resolve {
        job_id: String,
        resolution: Resolution,
        reply: oneshot::Sender<Result<Outcome, Error>>,
    },
}

/// The handle of a device actor; clones share the actor. The actor stops
/// when the last handle is dropped.
///
/// # Examples
///
/// See the crate documentation.
#[derive(Debug, Clone)]
pub struct PrinterHandle {
    printer_id: String,
    tx: mpsc::Sender<Msg>,
    status: watch::Receiver<PrinterStatus>,
    printer: Arc<dyn FiscalPrinter>,
    journal: Arc<dyn Journal>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Msg::Submit { job_id, .. } => write!(f, "Submit({job_id})"),
            Msg::Refresh { .. } => f.write_str("Refresh"),
            Msg::Resolve { job_id, .. } => write!(f, "Resolve({job_id})"),
        }
    }
}

impl PrinterHandle {
    /// Starts the actor of one device on the current tokio runtime. It
    /// first settles jobs the journal holds as pending (a crash or timeout
    /// of an earlier run), then serves the queue.
    pub fn spawn(
        printer: Arc<dyn FiscalPrinter>,
        journal: Arc<dyn Journal>,
        config: ActorConfig,
    ) -> PrinterHandle {
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        let initial = PrinterStatus {
            printer_id: config.printer_id.clone(),
            ..PrinterStatus::default()
        };
        let (status_tx, status_rx) = watch::channel(initial);
        let actor = Actor {
            printer: printer.clone(),
            journal: journal.clone(),
            cfg: config.clone(),
            status: status_tx,
            serials: tokio::sync::OnceCell::new(),
        };
        tokio::spawn(actor.run(rx));
        PrinterHandle {
            printer_id: config.printer_id,
            tx,
            status: status_rx,
            printer,
            journal,
        }
    }

    /// The printer id.
    pub fn printer_id(&self) -> &str {
        &self.printer_id
    }

    /// Submits a job under an idempotent `job_id` (e.g. the sale id) and
    /// waits for its end.
    ///
    /// Submitting the same id again returns the recorded outcome of a
    /// printed or unknown job, and tries again after "not printed".
    ///
    /// # Errors
    ///
    /// * [`Error::Invalid`]: the job failed validation; nothing was sent.
    /// * [`Error::Conflict`]: the id was used for another job.
    /// * [`Error::Offline`]: the device stopped answering in the middle of
    ///   the document; the job stays pending in the journal and is settled
    ///   when the device answers again (submit again or read [`Self::job`]).
    /// * [`Error::Backend`]: the journal failed.
    /// * [`Error::Stopped`]: the actor is gone.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the actor finishes the job even if this future is dropped.
    pub async fn submit(&self, job_id: &str, job: Job) -> Result<Outcome, Error> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Submit {
                job_id: job_id.to_owned(),
                job,
                reply,
            })
            .await
            .map_err(|_| Error::Stopped)?;
        rx.await.map_err(|_| Error::Stopped)?
    }

    /// Shorthand for `submit(job_id, Job::Receipt(receipt))`.
    ///
    /// # Errors
    ///
    /// As [`Self::submit`].
    pub async fn print_receipt(&self, job_id: &str, receipt: Receipt) -> Result<Outcome, Error> {
        self.submit(job_id, Job::Receipt(receipt)).await
    }

    /// The journal record of a job.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when the journal fails.
    pub async fn job(&self, job_id: &str) -> Result<Option<JobRecord>, Error> {
        self.journal.get(job_id).await
    }

    /// Jobs of this printer waiting for a person.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when the journal fails.
    pub async fn unknown_jobs(&self) -> Result<Vec<JobRecord>, Error> {
        self.journal
            .in_state(&self.printer_id, JobState::Unknown)
            .await
    }

    /// The latest known status, without waiting for the queue. Paper and
    /// cover come from the last reply the driver saw, so they are current
    /// even while a document is paused.
    pub fn status(&self) -> PrinterStatus {
        let mut s = self.status.borrow().clone();
        if let Some(live) = self.printer.last_status() {
            apply_flags(&mut s, &live);
        }
        s
    }

    /// A receiver that sees every status update.
    pub fn subscribe(&self) -> watch::Receiver<PrinterStatus> {
        self.status.clone()
    }

    /// Polls the device through the actor's queue.
    ///
    /// # Errors
    ///
    /// [`Error::Stopped`] when the actor is gone. A device that does not
    /// answer is reported as `online: false`, not as an error.
    pub async fn refresh_status(&self) -> Result<PrinterStatus, Error> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Refresh { reply })
            .await
            .map_err(|_| Error::Stopped)?;
        rx.await.map_err(|_| Error::Stopped)?
    }

    /// Resolves an `Unknown` job after a person checked the device.
    ///
    /// # Errors
    ///
    /// [`Error::Conflict`] when the job is not in the unknown state;
    /// [`Error::Backend`] when the journal fails.
    pub async fn resolve(&self, job_id: &str, resolution: Resolution) -> Result<Outcome, Error> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Resolve {
                job_id: job_id.to_owned(),
                resolution,
                reply,
            })
            .await
            .map_err(|_| Error::Stopped)?;
        rx.await.map_err(|_| Error::Stopped)?
    }
}

fn apply_flags(s: &mut PrinterStatus, r: &crate::status::StatusReport) {
    let f = r.flags;
    s.paper = if f.paper_out {
        Paper::Out
    } else if f.paper_low {
        Paper::Low
    } else {
        Paper::Ok
    };
    s.cover_open = f.cover_open;
    s.receipt_open = f.receipt_open;
    s.messages = r
        .messages
        .iter()
        .filter(|m| m.severity != crate::message::Severity::Info)
        .cloned()
        .collect();
}

struct Actor {
    printer: Arc<dyn FiscalPrinter>,
    journal: Arc<dyn Journal>,
    cfg: ActorConfig,
    status: watch::Sender<PrinterStatus>,
    /// The device's serial numbers, read once, stamped on printed documents.
    serials: tokio::sync::OnceCell<(String, String)>,
}

/// Why an attempt could not finish.
enum Stuck {
    /// A real error to hand back.
    Err(Error),
}

impl Actor {
    async fn run(self, mut rx: mpsc::Receiver<Msg>) {
        let _ = self.settle_pending(None).await;
        self.refresh().await;
        let mut tick = tokio::time::interval(self.cfg.poll_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                msg = rx.recv() => {
                    let Some(msg) = msg else { break };
                    match msg {
                        Msg::Submit { job_id, job, reply } => {
                            self.status.send_modify(|s| s.current_job = Some(job_id.clone()));
                            let started = std::time::Instant::now();
                            let res = self.process(&job_id, &job).await;
                            let label = match &res {
                                Ok(Outcome::Printed(_)) => "printed",
                                Ok(Outcome::NotPrinted(_)) => "not_printed",
                                Ok(Outcome::Unknown(_)) => "unknown",
                                Err(_) => "error",
                            };
                            metrics::counter!("fiscal_jobs_total", "printer" => self.cfg.printer_id.clone(),
                                "kind" => job.kind(), "outcome" => label).increment(1);
                            metrics::histogram!("fiscal_job_seconds", "printer" => self.cfg.printer_id.clone())
                                .record(started.elapsed().as_secs_f64());
                            self.status.send_modify(|s| s.current_job = None);
                            match &res {
                                // The device just answered: no need to poll it again.
                                Ok(Outcome::Printed(d)) => self.note_printed(&job, d),
                                _ => self.refresh().await,
                            }
                            let _ = reply.send(res);
                        }
                        Msg::Refresh { reply } => {
                            let _ = self.settle_pending(None).await;
                            self.refresh().await;
                            let _ = reply.send(Ok(self.status.borrow().clone()));
                        }
                        Msg::Resolve { job_id, resolution, reply } => {
                            let _ = reply.send(self.resolve(&job_id, resolution).await);
                        }
                    }
                }
                _ = tick.tick() => {
                    let _ = self.settle_pending(None).await;
                    self.refresh().await;
                }
            }
        }
    }

    fn now(&self) -> i64 {
        self.cfg.clock.now_millis()
    }

    fn note_printed(&self, job: &Job, d: &Document) {
        let live = self.printer.last_status();
        let now = self.now();
        self.status.send_modify(|s| {
            s.updated_at = now;
            s.online = true;
            s.last_error = None;
            if !matches!(job, Job::Duplicate | Job::Report(crate::ReportKind::X)) {
                s.last_document = Some(d.doc_no);
            }
            if let Some(z) = d.z_no {
                s.z_no = Some(z);
            }
            if let Some(live) = &live {
                apply_flags(s, live);
            }
        });
    }

    async fn refresh(&self) {
        let snap = self.printer.snapshot().await;
        let pending = self
            .journal
            .in_state(&self.cfg.printer_id, JobState::Pending)
            .await
            .map(|v| v.len())
            .unwrap_or(0);
        let live = self.printer.last_status();
        let now = self.now();
        self.status.send_modify(|s| {
            s.updated_at = now;
            s.pending_jobs = pending;
            match &snap {
                Ok(snap) => {
                    s.online = true;
                    s.last_document = Some(snap.last_doc_no);
                    s.z_no = Some(snap.z_no);
                    s.last_error = None;
                }
                Err(e) => {
                    s.online = false;
                    s.last_error = Some(e.to_string());
                }
            }
            if let Some(live) = &live {
                apply_flags(s, live);
            }
            if let Ok(snap) = &snap {
                s.receipt_open = snap.open.is_some();
            }
        });
    }

    async fn resolve(&self, job_id: &str, resolution: Resolution) -> Result<Outcome, Error> {
        let rec = self
            .journal
            .get(job_id)
            .await?
            .ok_or_else(|| Error::Conflict(job_id.to_owned()))?;
        if rec.state != JobState::Unknown {
            return Err(Error::Conflict(job_id.to_owned()));
        }
        let outcome = match resolution {
            Resolution::Printed(d) => {
                // Stamped with the device's serials like any printed
                // document, so a reversal can refer to it.
                self.read_serials().await;
                self.stamp(Outcome::Printed(d)).await
            }
            Resolution::NotPrinted => Outcome::NotPrinted(NotPrinted {
                code: None,
                reason: "resolved by a person: not printed".into(),
            }),
        };
        self.journal
            .record_outcome(job_id, &outcome, self.now())
            .await?;
        Ok(outcome)
    }

    fn validate(&self, job: &Job) -> Result<(), Error> {
        let limits = &self.printer.capabilities().limits;
        match job {
            Job::Receipt(r) => validate_receipt(r, limits).map(|_| ()),
            Job::Reversal(r) => validate_receipt(&r.receipt, limits).map(|_| ()),
            Job::Cash(a) => validate_cash(*a, limits),
            Job::Report(_) | Job::Duplicate => Ok(()),
        }
        .map_err(Error::Invalid)
    }

    /// Reads a snapshot, retrying with backoff for up to `offline_wait`.
    async fn snapshot_within(&self) -> Result<Snapshot, Error> {
        let deadline = tokio::time::Instant::now() + self.cfg.offline_wait;
        let mut wait = self.cfg.backoff;
        loop {
            match self.printer.snapshot().await {
                Ok(s) => return Ok(s),
                Err(e) => {
                    tracing::debug!(printer = %self.cfg.printer_id, "snapshot failed: {e}");
                    if tokio::time::Instant::now() + wait > deadline {
                        self.status.send_modify(|s| {
                            s.online = false;
                            s.last_error = Some(e.to_string());
                        });
                        return Err(e);
                    }
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(self.cfg.max_backoff);
                }
            }
        }
    }

    /// Settles every pending job of this printer except `skip`.
    async fn settle_pending(&self, skip: Option<&str>) -> Result<(), Error> {
        let pending = self
            .journal
            .in_state(&self.cfg.printer_id, JobState::Pending)
            .await?;
        for rec in pending {
            if Some(rec.job_id.as_str()) == skip {
                continue;
            }
            tracing::info!(job = %rec.job_id, "settling a pending job");
            match self.settle(&rec).await {
                Ok(Outcome::NotPrinted(_)) => {
                    // Interrupted before anything printed: finish the job now.
                    let _ = self.attempts(&rec.job_id, &rec.job, rec.attempt).await;
                }
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reconciles a pending job from its recorded baseline and records the outcome.
    async fn settle(&self, rec: &JobRecord) -> Result<Outcome, Error> {
        let limits = &self.printer.capabilities().limits;
        let Some(expect) = Expect::of(&rec.job, limits) else {
            return Err(Error::Conflict(rec.job_id.clone()));
        };
        let outcome = match &rec.baseline {
            Some(b) => self.reconcile(&expect, b, None).await?,
            None => Outcome::Unknown(Evidence {
                baseline: None,
                observed: None,
                note: "no baseline was recorded".into(),
            }),
        };
        if matches!(outcome, Outcome::Printed(_)) {
            self.read_serials().await;
        }
        let outcome = self.stamp(outcome).await;
        self.journal
            .record_outcome(&rec.job_id, &outcome, self.now())
            .await?;
        Ok(outcome)
    }

    /// Applies the recipe until it ends in a decision.
    async fn reconcile(
        &self,
        expect: &Expect,
        baseline: &Snapshot,
        cause: Option<&Error>,
    ) -> Result<Outcome, Error> {
        let mut last_note = String::new();
        for _round in 0..6 {
            let observed = self.snapshot_within().await?;
            match decide(expect, baseline, &observed) {
                Decision::Printed(d) => return Ok(Outcome::Printed(d)),
                Decision::NotPrinted(why) => {
                    return Ok(Outcome::NotPrinted(NotPrinted {
                        code: cause.and_then(|e| e.code()).map(str::to_owned),
                        reason: match cause {
                            Some(e) => format!("{e}; {why}"),
                            None => why,
                        },
                    }));
                }
                Decision::Unknown(note) => {
                    return Ok(Outcome::Unknown(Evidence {
                        baseline: Some(baseline.clone()),
                        observed: Some(observed),
                        note,
                    }));
                }
                Decision::CancelOpen => match self.printer.cancel_open().await {
                    Ok(()) => {
                        return Ok(Outcome::NotPrinted(NotPrinted {
                            code: cause.and_then(|e| e.code()).map(str::to_owned),
                            reason: "an interrupted receipt without payment was cancelled".into(),
                        }));
                    }
                    Err(e) => last_note = format!("cancel failed: {e}"),
                },
                Decision::FinishOpen(payments) => {
                    if let Err(e) = self.printer.finish_open(&payments).await {
                        last_note = format!("finishing the open receipt failed: {e}");
                    }
                    // Read the device again to confirm.
                }
            }
        }
        Ok(Outcome::Unknown(Evidence {
            baseline: Some(baseline.clone()),
            observed: None,
            note: format!("reconciliation did not converge: {last_note}"),
        }))
    }

    async fn execute(&self, job: &Job) -> Result<Document, Error> {
        match job {
            Job::Receipt(r) => self.printer.print_receipt(r).await,
            Job::Reversal(r) => self.printer.print_reversal(r).await,
            Job::Report(k) => self.printer.report(*k).await,
            Job::Cash(a) => self.printer.cash_move(*a).await,
            Job::Duplicate => self.printer.duplicate_last().await.map(|()| Document {
                doc_no: 0,
                amount: crate::Money::ZERO,
                at: None,
                z_no: None,
                recovered: false,
                fm_serial: None,
                serial: None,
            }),
        }
    }

    async fn process(&self, job_id: &str, job: &Job) -> Result<Outcome, Error> {
        self.validate(job)?;
        let mut attempt = 0;
        if let Some(rec) = self.journal.get(job_id).await? {
            if rec.printer_id != self.cfg.printer_id || &rec.job != job {
                return Err(Error::Conflict(job_id.to_owned()));
            }
            match rec.state {
                JobState::Printed | JobState::Unknown => {
                    return rec
                        .outcome
                        .ok_or_else(|| Error::BadReply("outcome missing".into()));
                }
                JobState::Pending => match self.settle(&rec).await? {
                    Outcome::NotPrinted(_) => {}
                    other => return Ok(other),
                },
                JobState::NotPrinted => {}
            }
            attempt = rec.attempt;
        }
        self.settle_pending(Some(job_id)).await?;
        self.attempts(job_id, job, attempt).await
    }

    async fn attempts(&self, job_id: &str, job: &Job, mut attempt: u32) -> Result<Outcome, Error> {
        let limits = self.printer.capabilities().limits.clone();
        let expect = Expect::of(job, &limits).ok_or_else(|| Error::Conflict(job_id.to_owned()))?;
        let mut wait = self.cfg.backoff;
        let first = attempt;
        loop {
            attempt += 1;
            let baseline = match self.baseline().await {
                Ok(b) => b,
                Err(Stuck::Err(e)) => {
                    let outcome = Outcome::NotPrinted(NotPrinted {
                        code: e.code().map(str::to_owned),
                        reason: format!("nothing sent: {e}"),
                    });
                    if attempt > 1 {
                        self.journal
                            .record_outcome(job_id, &outcome, self.now())
                            .await?;
                    }
                    return Ok(outcome);
                }
            };
            self.read_serials().await;
            self.journal
                .record_intent(
                    &self.cfg.printer_id,
                    job_id,
                    job,
                    attempt,
                    &baseline,
                    self.now(),
                )
                .await?;
            let (outcome, retry) = match self.execute(job).await {
                Ok(doc) => (Outcome::Printed(doc), false),
                Err(e) => {
                    tracing::warn!(job = %job_id, "attempt {attempt} failed: {e}; reconciling");
                    let retry = e.is_in_doubt() && expect != Expect::NonFiscal;
                    (self.reconcile(&expect, &baseline, Some(&e)).await?, retry)
                }
            };
            let outcome = self.stamp(outcome).await;
            self.journal
                .record_outcome(job_id, &outcome, self.now())
                .await?;
            let again = matches!(outcome, Outcome::NotPrinted(_))
                && retry
                && attempt - first < self.cfg.max_attempts;
            if !again {
                return Ok(outcome);
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(self.cfg.max_backoff);
        }
    }

    /// Reads the device's serial numbers once (right after a baseline, while
    /// the device answers); a failure is left for the next document.
    async fn read_serials(&self) {
        let _ = self
            .serials
            .get_or_try_init(|| async {
                self.printer.info().await.map(|i| (i.serial, i.fm_serial))
            })
            .await;
    }

    /// Adds the device's serial numbers, when known, to a printed document.
    async fn stamp(&self, outcome: Outcome) -> Outcome {
        match (outcome, self.serials.get()) {
            (Outcome::Printed(mut doc), Some((serial, fm))) if doc.fm_serial.is_none() => {
                doc.serial = Some(serial.clone());
                doc.fm_serial = Some(fm.clone());
                Outcome::Printed(doc)
            }
            (outcome, _) => outcome,
        }
    }

    /// Reads the baseline; cancels a leftover open receipt without payment.
    async fn baseline(&self) -> Result<Snapshot, Stuck> {
        for _ in 0..3 {
            let b = self.snapshot_within().await.map_err(Stuck::Err)?;
            match b.open {
                None => return Ok(b),
                Some(o) if o.tender.0 == 0 => {
                    tracing::warn!(printer = %self.cfg.printer_id, "cancelling a leftover open receipt");
                    let _ = self.printer.cancel_open().await;
                }
                Some(_) => {
                    return Err(Stuck::Err(Error::Rejected(DeviceMessage::new(
                        codes::E407_RECEIPT_OPEN,
                        "a receipt with payments that this journal does not know is open",
                    ))));
                }
            }
        }
        Err(Stuck::Err(Error::Rejected(DeviceMessage::new(
            codes::E407_RECEIPT_OPEN,
            "an open receipt could not be cancelled",
        ))))
    }
}
