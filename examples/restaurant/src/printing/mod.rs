//! The on-site print agent: receives its restaurant's print jobs from the
//! cloud (recorded in its own database, deduplicated by its inbox, before
//! they are acknowledged), drives each printer through its own actor, keeps
//! the fiscal journal, and reports outcomes and printer status back through
//! its own outbox. A broken link to the cloud delays results and never
//! loses them; the agent needs no connection to the cloud's database.

mod device;
mod fiscal;
mod jobs;
mod journal;
pub(crate) mod simulated;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use counterfoil_breaker::{
    BreakerRegistry, CircuitBreaker, Config as BreakerConfig, OpenDuration, Window,
};
use counterfoil_fiscal::{
    ActorConfig, DatecsPrinter, Dialect, FiscalPrinter, Journal, PgJournal, PrinterHandle,
    SqliteJournal,
};
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::config::{PrinterAddress, PrinterSpec};
use crate::db::{Db, Durability};
use crate::messaging::{Bus, Names, Outbox, ResultMessage};
use crate::store::print_jobs::{JobRow, PrintJob, PrintOutcome};
use crate::store::printers::PrinterState;
use device::{Device, Finisher, Health};
pub(crate) use simulated::Simulators;
use simulated::{SimFaults, SimPrinter};

/// The fiscal journal of `counterfoil-fiscal` in the agent's own database
/// (its `fiscal_` tables, migrations applied).
pub(crate) async fn fiscal_journal(db: &Db) -> Result<Arc<dyn Journal>, counterfoil_fiscal::Error> {
    Ok(match db {
        Db::Postgres(p) => {
            let j = PgJournal::new(p.clone());
            j.migrate().await?;
            Arc::new(j)
        }
        Db::Sqlite(p) => {
            let j = SqliteJournal::new(p.clone());
            j.migrate().await?;
            Arc::new(j)
        }
    })
}

/// Starts the simulated printers among `specs` on loopback, their device
/// state kept in `dir`.
pub(crate) async fn simulators(
    specs: &[PrinterSpec],
    dialect: Dialect,
    dir: &Path,
    journal: &Arc<dyn Journal>,
) -> Result<Simulators, counterfoil_fiscal::Error> {
    let mut sims = HashMap::new();
    for s in specs
        .iter()
        .filter(|s| s.address == PrinterAddress::Simulated)
    {
        let sim = SimPrinter::start(&s.id, dialect, dir, journal.clone()).await?;
        tracing::info!(printer = %s.id, addr = %sim.addr(), "simulated printer started");
        sims.insert(s.id.clone(), sim);
    }
    Ok(Arc::new(sims))
}

/// What the agent needs.
#[derive(Debug, Clone)]
pub(crate) struct Agent {
    /// The agent's own database (journal, jobs, inbox, outbox).
    pub(crate) journal: Db,
    /// The fiscal journal of the device actors, in the same database.
    pub(crate) fiscal: Arc<dyn Journal>,
    pub(crate) outbox: Outbox,
    pub(crate) bus: Bus,
    pub(crate) names: Names,
    pub(crate) specs: Vec<PrinterSpec>,
    pub(crate) dialect: Dialect,
    pub(crate) sims: Simulators,
}

/// A printer's device actor, what the agent's loop last saw, and its breaker.
type Watched = (PrinterHandle, Arc<Mutex<Health>>, CircuitBreaker);

struct Printers {
    devices: HashMap<String, Device>,
    health: HashMap<String, Watched>,
}

/// The device actor's settings: an unreachable device ends a job "not
/// printed" after 2 s (the agent submits it again, through the breaker),
/// and the idle status poll runs every 2 s so the console sees paper and
/// connection changes.
fn actor_config(id: &str) -> ActorConfig {
    let mut cfg = ActorConfig::new(id);
    cfg.offline_wait = Duration::from_secs(2);
    cfg.poll_every = Duration::from_secs(2);
    cfg
}

/// One breaker per printer: three failures in a row open it, for 1 s at
/// first and up to 10 s while the printer stays unreachable.
fn printer_breakers() -> Result<BreakerRegistry<String>, counterfoil_breaker::BuildError> {
    BreakerRegistry::builder()
        .config(
            BreakerConfig::builder()
                .window(Window::ConsecutiveFailures(3))
                .open_duration(
                    OpenDuration::backoff(Duration::from_secs(1), Duration::from_secs(10))
                        .jitter(0.2),
                )
                .build()?,
        )
        .idle_timeout(None)
        .build()
}

/// Runs the agent for `restaurant` (all restaurants when `None`, embedded)
/// until `stop`.
pub(crate) async fn run(
    agent: Agent,
    restaurant: Option<String>,
    stop: CancellationToken,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let breakers = printer_breakers()?;
    let finisher = Finisher {
        journal: agent.journal.clone(),
        outbox: agent.outbox.clone(),
        names: agent.names.clone(),
    };
    let mut tasks = Vec::new();
    let mut ps = Printers {
        devices: HashMap::new(),
        health: HashMap::new(),
    };
    for spec in &agent.specs {
        if restaurant.as_ref().is_some_and(|r| *r != spec.restaurant) {
            continue;
        }
        let driver: Arc<dyn FiscalPrinter> = match (&spec.address, agent.sims.get(&spec.id)) {
            (PrinterAddress::Simulated, Some(sim)) => {
                Arc::new(DatecsPrinter::tcp(sim.addr(), agent.dialect))
            }
            (PrinterAddress::Tcp(addr), _) => {
                Arc::new(DatecsPrinter::tcp(addr.clone(), agent.dialect))
            }
            (PrinterAddress::Simulated, None) => {
                tracing::error!(printer = %spec.id, "simulated printer not started; its jobs wait");
                continue;
            }
        };
        let handle = PrinterHandle::spawn(driver, agent.fiscal.clone(), actor_config(&spec.id));
        let health = Arc::new(Mutex::new(Health::default()));
        let breaker = breakers.get(&spec.id);
        let (dev, task) = device::spawn(
            spec.id.clone(),
            handle.clone(),
            breaker.clone(),
            finisher.clone(),
            health.clone(),
            stop.clone(),
        );
        tasks.push(task);
        ps.devices.insert(spec.id.clone(), dev);
        ps.health.insert(spec.id.clone(), (handle, health, breaker));
    }
    // Jobs in: the cloud's messages, recorded here before they are acked.
    let (received, mut incoming) = mpsc::channel(1024);
    let (queue, pattern) = match &restaurant {
        Some(r) => (agent.names.print_queue(r), format!("{r}.*")),
        None => (agent.names.print_queue("all"), "#".to_owned()),
    };
    let handler = Arc::new(jobs::Jobs::new(agent.journal.clone(), received));
    let consumer = agent
        .bus
        .subscribe(&queue, &agent.names.print_exchange(), &pattern, handler)
        .await?;
    // Results out: the agent's outbox to the cloud.
    // The agent's database syncs every commit (see `SqliteSync::Grouped`).
    let relay = agent.outbox.relay(&agent.bus, Durability::none())?;
    let ps = Arc::new(ps);
    let held = Mutex::new(HashSet::<String>::new());
    tokio::join!(
        intake(&agent, &ps, &held, &finisher, &mut incoming, &stop),
        status(&agent, &ps, &stop),
    );
    if let Some(c) = consumer {
        c.shutdown().await;
    }
    for t in tasks {
        let _ = t.await;
    }
    relay.shutdown().await;
    Ok(())
}

/// Hands recorded jobs to their printer's actor: each new one as the
/// consumer sends it, and every pending job on a scan of the journal at
/// start and every 250 ms (jobs recorded before a restart, or that the
/// channel could not take).
async fn intake(
    agent: &Agent,
    ps: &Printers,
    held: &Mutex<HashSet<String>>,
    finisher: &Finisher,
    incoming: &mut mpsc::Receiver<(String, PrintJob)>,
    stop: &CancellationToken,
) {
    let mut scan = tokio::time::interval(Duration::from_millis(250));
    scan.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            Some((saga_id, job)) = incoming.recv() => {
                if held.lock().insert(job.key.clone()) {
                    dispatch(agent, ps, finisher, saga_id, job).await;
                }
            }
            _ = scan.tick() => match journal::pending(&agent.journal, 500).await {
                Ok(jobs) => {
                    // A job leaves `held` once it is done. Nothing is sent
                    // in between: a job the consumer sent was committed
                    // before this read, so the read sees it.
                    let pending: HashSet<String> =
                        jobs.iter().map(|(_, j)| j.key.clone()).collect();
                    held.lock().retain(|k| pending.contains(k));
                    for (saga_id, job) in jobs {
                        if held.lock().insert(job.key.clone()) {
                            dispatch(agent, ps, finisher, saga_id, job).await;
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "agent cannot read its jobs; retrying"),
            },
        }
    }
}

async fn dispatch(
    agent: &Agent,
    ps: &Printers,
    finisher: &Finisher,
    saga_id: String,
    job: PrintJob,
) {
    let done = |detail: String| PrintOutcome::NotPrinted { detail };
    if job.kind == "simulator" {
        // Control messages for simulated printers skip the device queue, so
        // a printer stuck offline can be brought back.
        let detail = match (agent.sims.get(&job.printer), &job.faults) {
            (Some(sim), Some(f)) => match serde_json::from_value::<SimFaults>(f.clone()) {
                Ok(f) => {
                    sim.set_faults(&f);
                    "faults set"
                }
                Err(_) => "invalid faults",
            },
            _ => "not a simulated printer of this agent",
        };
        record_and_finish(agent, finisher, &saga_id, &job, done(detail.into())).await;
        return;
    }
    if job.kind == "resolve" {
        // A person's answer for an unknown job: it too skips the queue, as
        // the printer may be busy with the jobs behind it.
        let outcome = resolve_unknown(agent, ps, finisher, &job).await;
        record_and_finish(agent, finisher, &saga_id, &job, outcome).await;
        return;
    }
    match ps.devices.get(&job.printer) {
        Some(dev) => {
            dev.submit(JobRow {
                saga_id,
                job,
                outcome: None,
            });
        }
        None => {
            let detail = format!("printer `{}` is not attached to this agent", job.printer);
            record_and_finish(agent, finisher, &saga_id, &job, done(detail)).await;
        }
    }
}

/// Records a person's answer for an unknown job in the fiscal journal
/// (through the printer's actor) and in the agent's journal, and reports
/// the job's new outcome. The command's own outcome says what the job
/// became. Answering again reports the recorded answer again.
async fn resolve_unknown(
    agent: &Agent,
    ps: &Printers,
    finisher: &Finisher,
    cmd: &PrintJob,
) -> PrintOutcome {
    use counterfoil_fiscal::{Document, Error, JobState, Money, Outcome, Resolution};
    let refused = |detail: &str| PrintOutcome::NotPrinted {
        detail: detail.to_owned(),
    };
    let Some(answer) = &cmd.resolve else {
        return refused("a resolve command without an answer");
    };
    let Some((handle, _, _)) = ps.health.get(&cmd.printer) else {
        return refused("the printer is not attached to this agent");
    };
    let job = match journal::received(&agent.journal, &answer.job).await {
        Ok(Some(job)) if job.printer == cmd.printer => job,
        Ok(_) => return refused("this printer's agent never received that job"),
        Err(e) => {
            tracing::warn!(job = %answer.job, error = %e, "cannot read the job to resolve");
            return refused("the agent could not read its journal; send the answer again");
        }
    };
    let resolution = match answer.document_number {
        Some(doc_no) => Resolution::Printed(Document {
            doc_no,
            amount: Money(job.amount.abs()),
            at: None,
            z_no: None,
            recovered: true,
            fm_serial: None,
            serial: None,
        }),
        None => Resolution::NotPrinted,
    };
    let settled = match handle.resolve(&job.key, resolution).await {
        Ok(outcome) => outcome,
        // Answered before (the report may not have been recorded): report
        // what the fiscal journal holds.
        Err(Error::Conflict(_)) => match handle.job(&job.key).await {
            Ok(Some(rec)) if matches!(rec.state, JobState::Printed | JobState::NotPrinted) => {
                match rec.outcome {
                    Some(o) => o,
                    None => return refused("the fiscal journal has no outcome for the job"),
                }
            }
            _ => return refused("the job is not waiting for an answer"),
        },
        Err(e) => {
            tracing::warn!(job = %job.key, error = %e, "cannot resolve the job");
            return refused("the printer's actor could not record the answer; send it again");
        }
    };
    let outcome = match settled {
        Outcome::Printed(d) => PrintOutcome::Printed {
            document: fiscal::document(&job.printer, &job.kind, &d),
        },
        Outcome::NotPrinted(np) => PrintOutcome::NotPrinted { detail: np.reason },
        Outcome::Unknown(e) => return refused(&format!("still unknown: {}", e.note)),
    };
    if let Err(e) = finisher.resolve(&job, &outcome).await {
        tracing::warn!(job = %job.key, error = %e, "cannot record the answer");
        return refused("the agent could not record the answer; send it again");
    }
    tracing::info!(job = %job.key, "a person's answer for an unknown job recorded");
    outcome
}

async fn record_and_finish(
    agent: &Agent,
    finisher: &Finisher,
    saga_id: &str,
    job: &PrintJob,
    outcome: PrintOutcome,
) {
    let res = async {
        journal::intent(&agent.journal, &job.printer, saga_id, job).await?;
        finisher.finish(job, &outcome).await
    };
    if let Err(e) = res.await {
        tracing::warn!(key = %job.key, error = %e, "cannot record a job's outcome; will retry");
    }
}

/// Reports each printer's state to the cloud when it changes.
async fn status(agent: &Agent, ps: &Printers, stop: &CancellationToken) {
    let mut last: HashMap<String, PrinterState> = HashMap::new();
    while !stop.is_cancelled() {
        let queued: HashMap<String, i64> = journal::pending_per_printer(&agent.journal)
            .await
            .map(|v| v.into_iter().collect())
            .unwrap_or_default();
        for (id, (printer, health, breaker)) in &ps.health {
            let h = health.lock().clone();
            let mut state = device::state(printer, &h, breaker);
            state.queued = queued.get(id).copied().unwrap_or(0).try_into().unwrap_or(0);
            if last.get(id) == Some(&state) {
                continue;
            }
            let report = ResultMessage::PrinterStatus {
                printer: id.clone(),
                state: state.clone(),
            };
            let sent = async {
                let msg = agent.names.result(id, &report)?;
                let mut tx = agent.journal.begin().await?;
                agent.outbox.enqueue(&mut tx, &[msg]).await?;
                tx.commit().await?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
            };
            match sent.await {
                Ok(()) => {
                    last.insert(id.clone(), state);
                }
                Err(e) => tracing::warn!(printer = %id, error = %e, "cannot report printer state"),
            }
        }
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}
