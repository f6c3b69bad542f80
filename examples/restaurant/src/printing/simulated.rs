//! Simulated printers: `counterfoil_fiscal::sim` devices that speak the
//! Datecs ISL wire protocol on loopback TCP, started inside the agent. The
//! console's printer controls become the simulator's faults, and the
//! device's electronic journal is readable over HTTP.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use counterfoil_fiscal::sim::{CrashPoint, EjKind, Fault, SimConfig, SimHandle, Simulator};
use counterfoil_fiscal::{Dialect, JobState, Journal, Money};
use serde::{Deserialize, Serialize};

/// Faults to set on a simulated printer: each request sets all of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub(crate) struct SimFaults {
    /// Unreachable until cleared: the device ignores every frame and
    /// refuses new connections.
    pub(crate) offline: bool,
    /// Out of paper: the next sale line runs out, and the document waits
    /// until this is cleared (the paper is refilled).
    pub(crate) paper_out: bool,
    /// Execute the next N frames and drop their replies (a document
    /// printed whose answer never arrives).
    pub(crate) lose_reply_next: u32,
    /// Print the next receipt, then freeze before answering, until the
    /// faults are set again.
    #[serde(default)]
    pub(crate) hang_after_close: bool,
    /// Before the faults are set: move this much cash (minor units,
    /// positive in) at the device's keypad, as a person at the till would,
    /// outside the agent. 0: none.
    #[serde(default)]
    pub(crate) keypad_cash: i64,
}

/// One document in the simulated device's electronic journal.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct JournalEntry {
    /// The device's document number (0 for unnumbered X reports).
    pub(crate) number: u64,
    /// `receipt`, `reversal`, `x_report`, `z_report`, `cash`.
    pub(crate) kind: String,
    /// The sale key the agent printed it under, from the agent's fiscal
    /// journal (receipts and reversals).
    pub(crate) sale_key: Option<String>,
    /// Minor units: reversals and cash out negative; a Z report shows the
    /// receipts less the reversals of its day.
    pub(crate) amount: i64,
    /// When the device printed it (ms since the Unix epoch).
    pub(crate) at: i64,
}

/// Frames to ignore and connections to refuse while "offline": more than
/// any test or demo sends.
const FOREVER: u32 = 1 << 30;

/// A simulated printer: the device and the journal its actor writes.
#[derive(Debug, Clone)]
pub(crate) struct SimPrinter {
    id: String,
    device: SimHandle,
    journal: Arc<dyn Journal>,
}

impl SimPrinter {
    /// Starts the simulated device of printer `id` on loopback, its state
    /// kept in `dir` so that its counters survive a restart of the agent,
    /// as a real device's fiscal memory does.
    pub(crate) async fn start(
        id: &str,
        dialect: Dialect,
        dir: &Path,
        journal: Arc<dyn Journal>,
    ) -> Result<Self, counterfoil_fiscal::Error> {
        let mut cfg = SimConfig::new(dialect);
        // A serial number of its own per printer (stable across restarts),
        // so fiscal memory serials tell the devices apart.
        let n = id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        }) % 1_000_000;
        cfg.serial = format!("DT{n:06}");
        let file: String = id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        cfg.state_file = Some(dir.join(format!("printer-sim-{file}.json")));
        // Nothing here reads the frame transcript, and a printer that runs
        // for weeks must not grow with every frame.
        cfg.transcript_limit = 0;
        let device = Simulator::start(cfg).await?;
        Ok(Self {
            id: id.to_owned(),
            device,
            journal,
        })
    }

    /// The device's address (`127.0.0.1:PORT`).
    pub(crate) fn addr(&self) -> String {
        self.device.addr().to_string()
    }

    /// Sets the faults.
    pub(crate) fn set_faults(&self, f: &SimFaults) {
        if f.keypad_cash != 0 {
            match self.device.cash_at_keypad(Money(f.keypad_cash)) {
                Ok(n) => {
                    tracing::info!(printer = %self.id, document = n, "cash moved at the keypad")
                }
                Err(e) => {
                    tracing::warn!(printer = %self.id, error = ?e, "the keypad refused the cash move")
                }
            }
        }
        self.device.clear_faults();
        if f.offline {
            self.device.inject(Fault::Silent(FOREVER));
            self.device.inject(Fault::RefuseConnections(FOREVER));
        }
        if f.paper_out {
            if !self.device.state().paper_out {
                self.device.inject(Fault::PaperOutAtItem {
                    item: 1,
                    refill_after_polls: 0,
                });
            }
        } else {
            self.device.refill_paper();
        }
        if f.hang_after_close {
            self.device.inject(Fault::Hang(CrashPoint::AfterClose));
        }
        if f.lose_reply_next > 0 {
            self.device
                .inject(Fault::ExecuteThenDrop(f.lose_reply_next));
        }
    }

    /// The device's electronic journal, oldest first, each receipt and
    /// reversal labelled with the sale key the agent's journal printed it
    /// under.
    pub(crate) async fn journal(&self) -> Result<Vec<JournalEntry>, counterfoil_fiscal::Error> {
        let keys: HashMap<u64, String> = self
            .journal
            .in_state(&self.id, JobState::Printed)
            .await?
            .into_iter()
            .filter_map(|r| match r.outcome {
                Some(counterfoil_fiscal::Outcome::Printed(d)) => Some((d.doc_no, r.job_id)),
                _ => None,
            })
            .collect();
        let state = self.device.state();
        Ok(state
            .ej
            .iter()
            .filter_map(|e| {
                let (kind, amount) = match e.kind {
                    EjKind::Receipt => ("receipt", e.amount),
                    EjKind::Reversal => ("reversal", -e.amount),
                    EjKind::XReport => ("x_report", e.amount),
                    EjKind::ZReport => ("z_report", e.amount),
                    EjKind::CashIn | EjKind::CashOut => ("cash", e.amount),
                    _ => return None,
                };
                let sale_key = matches!(kind, "receipt" | "reversal")
                    .then(|| keys.get(&e.doc_no).cloned())
                    .flatten();
                Some(JournalEntry {
                    number: e.doc_no,
                    kind: kind.to_owned(),
                    sale_key,
                    amount,
                    at: e.at,
                })
            })
            .collect())
    }
}

/// The simulated printers of this process, by printer id.
pub(crate) type Simulators = Arc<HashMap<String, SimPrinter>>;
