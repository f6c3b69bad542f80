//! A device simulator that speaks the real Datecs ISL wire protocol
//! (classic or X) over TCP on loopback, with scriptable faults and a
//! transcript of every frame. Also an ESC/POS sink that answers `DLE EOT`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), counterfoil_fiscal::Error> {
//! use counterfoil_fiscal::sim::{Fault, SimConfig, Simulator};
//! use counterfoil_fiscal::Dialect;
//!
//! let sim = Simulator::start(SimConfig::new(Dialect::X)).await?;
//! sim.inject(Fault::Nak(2));
//! println!("device listening on {}", sim.addr());
//! # Ok(()) }
//! ```

mod device;
pub mod escpos;
mod fault;

pub use device::{
    CmdErr, DeviceState, DeviceTotals, EjEntry, EjKind, Executed, LastReceipt, OpenDoc,
};
pub use fault::{CrashPoint, Fault};

use crate::clock::{SharedClock, SystemClock};
use crate::error::Error;
use crate::isl::Dialect;
use crate::isl::codec::{self, Decoder, Direction, Event, Frame};
use crate::isl::commands as c;
use fault::Pending;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

/// Simulator settings.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Dialect spoken.
    pub dialect: Dialect,
    /// Listen address. Default: `127.0.0.1:0` (a free port).
    pub addr: String,
    /// File the device state is persisted to after every change, one JSON
    /// line appended per change (the file is rewritten with its last line at
    /// start and every 256 lines; a line cut short by a crash is skipped); a
    /// power cycle restarts from it. The electronic journal goes beside it,
    /// one JSON line per entry appended (`<name>.ej.jsonl`), so each change
    /// writes the counters and not the whole day's journal. Default: none
    /// (state kept in memory, which also survives a simulated power cycle).
    pub state_file: Option<PathBuf>,
    /// Device serial number. Default: `DT000001`.
    pub serial: String,
    /// Interval between SYN bytes while slow. Default: 60 ms (as the device).
    pub syn_interval: Duration,
    /// How long a second connection waits for the first to end before it
    /// is refused as busy. Default: 300 ms.
    pub busy_grace: Duration,
    /// Time after the start of a fiscal day after which a Z report is
    /// required. Default: 24 h.
    pub z_after: Duration,
    /// Device clock. Default: the system clock.
    pub clock: SharedClock,
    /// Most transcript entries kept (oldest dropped); 0 keeps none.
    /// Default: 100 000.
    pub transcript_limit: usize,
}

impl SimConfig {
    /// Defaults for `dialect`.
    pub fn new(dialect: Dialect) -> Self {
        Self {
            dialect,
            addr: "127.0.0.1:0".into(),
            state_file: None,
            serial: "DT000001".into(),
            syn_interval: Duration::from_millis(60),
            busy_grace: Duration::from_millis(300),
            z_after: Duration::from_secs(24 * 3600),
            clock: Arc::new(SystemClock),
            transcript_limit: 100_000,
        }
    }
}

/// One chunk of bytes on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranscriptEntry {
    /// Connection number (1, 2, ...).
    pub conn: u64,
    /// True for host → device.
    pub from_host: bool,
    /// The bytes.
    pub bytes: Vec<u8>,
    /// Device time, ms since the epoch.
    pub at: i64,
}

impl std::fmt::Display for TranscriptEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} #{} {}",
            self.at,
            self.conn,
            if self.from_host { ">" } else { "<" }
        )?;
        for b in &self.bytes {
            write!(f, " {b:02X}")?;
        }
        Ok(())
    }
}

#[derive(Debug)]
struct Core {
    device: DeviceState,
    /// Entries of `device.ej` already appended to the journal file.
    ej_saved: usize,
    /// The state file, open for appending, and the lines it holds.
    state_log: Option<(std::fs::File, usize)>,
    faults: Pending,
    last: Option<(u8, Vec<u8>)>,
    transcript: VecDeque<TranscriptEntry>,
    frames: u64,
}

#[derive(Debug)]
struct Shared {
    cfg: SimConfig,
    addr: SocketAddr,
    core: Mutex<Core>,
    power: watch::Sender<u64>,
    changes: watch::Sender<u64>,
    slot: Arc<Semaphore>,
    stop: watch::Sender<bool>,
}

/// The simulator entry point.
#[derive(Debug, Clone, Copy)]
pub struct Simulator;

/// A running simulator; clones share it. It stops when
/// [`SimHandle::shutdown`] is called or the runtime ends.
#[derive(Debug, Clone)]
pub struct SimHandle {
    shared: Arc<Shared>,
}

enum Act {
    Write(Vec<u8>),
    Syn(u32),
    Reset,
    PowerCycle,
}

impl Simulator {
    /// Binds the listen address and starts serving.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the address cannot be bound or the state file
    /// cannot be read.
    pub async fn start(cfg: SimConfig) -> Result<SimHandle, Error> {
        let device = match &cfg.state_file {
            Some(p) if p.exists() => load(p)?,
            _ => DeviceState::new(cfg.dialect, &cfg.serial, cfg.clock.now_millis()),
        };
        let ej_saved = device.ej.len();
        let listener = TcpListener::bind(&cfg.addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            core: Mutex::new(Core {
                device,
                ej_saved,
                state_log: None,
                faults: Pending::default(),
                last: None,
                transcript: VecDeque::new(),
                frames: 0,
            }),
            addr,
            power: watch::channel(0).0,
            changes: watch::channel(0).0,
            slot: Arc::new(Semaphore::new(1)),
            stop: watch::channel(false).0,
            cfg,
        });
        tokio::spawn(accept_loop(shared.clone(), listener));
        Ok(SimHandle { shared })
    }
}

impl SimHandle {
    /// The address the device listens on.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    fn core(&self) -> std::sync::MutexGuard<'_, Core> {
        self.shared.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Injects a fault.
    pub fn inject(&self, fault: Fault) {
        let mut core = self.core();
        let f = &mut core.faults;
        match fault {
            Fault::RefuseConnections(n) => f.refuse += n,
            Fault::Silent(n) => f.silent += n,
            Fault::ResetMidFrame => f.reset = true,
            Fault::Slow(n) => f.slow += n,
            Fault::Nak(n) => f.nak += n,
            Fault::CorruptChecksum(n) => f.corrupt += n,
            Fault::ExecuteThenDrop(n) => f.drop += n,
            Fault::DuplicateReply(n) => f.dup += n,
            Fault::PaperOutAtItem {
                item,
                refill_after_polls,
            } => f.paper_at = Some((item.max(1), refill_after_polls)),
            Fault::CoverOpen { close_after_polls } => {
                core.device.cover_open = true;
                core.faults.cover_after = (close_after_polls > 0).then_some(close_after_polls);
            }
            Fault::Crash(p) => f.crash = Some(p),
            Fault::Hang(p) => f.hang = Some(p),
            Fault::FiscalMemoryLeft(n) => core.device.fm_records_left = n,
            Fault::ZRequired => core.device.z_required = true,
        }
    }

    /// Clears every pending frame fault.
    pub fn clear_faults(&self) {
        self.core().faults = Pending::default();
    }

    /// Puts paper back.
    pub fn refill_paper(&self) {
        let mut core = self.core();
        core.device.paper_out = false;
        core.faults.refill_after = None;
    }

    /// Closes the cover.
    pub fn close_cover(&self) {
        let mut core = self.core();
        core.device.cover_open = false;
        core.faults.cover_after = None;
    }

    /// Moves cash at the device's own keypad, as a person at the till
    /// would: the device prints a cash document outside any connection,
    /// even while it ignores frames. Returns the document number, or the
    /// device's refusal (an open receipt, a Z report due, a drawer that
    /// would go negative).
    ///
    /// Tests use it to move the device's counters behind the host's back:
    /// a job whose reply was lost then cannot be told apart from this
    /// document, and the host must ask a person.
    pub fn cash_at_keypad(&self, amount: crate::Money) -> Result<u64, CmdErr> {
        let mut core = self.core();
        let now = self.shared.cfg.clock.now_millis();
        let z_after = i64::try_from(self.shared.cfg.z_after.as_millis()).unwrap_or(i64::MAX);
        let data = c::cash(core.device.dialect, amount);
        core.device.run(c::CASH, &data, now, z_after)?;
        persist(&self.shared, &mut core);
        let doc = core.device.last_doc_no;
        drop(core);
        self.shared.changes.send_modify(|n| *n += 1);
        Ok(doc)
    }

    /// Simulates a power cycle now: connections drop, the sequence memory
    /// is lost, the state restarts from what was persisted.
    pub fn power_cycle(&self) {
        let mut core = self.core();
        power_cycle(&self.shared, &mut core);
    }

    /// A copy of the device state.
    pub fn state(&self) -> DeviceState {
        self.core().device.clone()
    }

    /// Frames received and executed or answered so far.
    pub fn frames(&self) -> u64 {
        self.core().frames
    }

    /// Waits until `pred` holds for the device state (checked after every
    /// frame and every power cycle).
    pub async fn wait_for(&self, pred: impl Fn(&DeviceState) -> bool) {
        let mut rx = self.shared.changes.subscribe();
        loop {
            if pred(&self.state()) {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Waits until the device has received at least `n` frames in total.
    pub async fn wait_frames(&self, n: u64) {
        let mut rx = self.shared.changes.subscribe();
        while self.frames() < n {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// A copy of the transcript.
    pub fn transcript(&self) -> Vec<TranscriptEntry> {
        self.core().transcript.iter().cloned().collect()
    }

    /// Empties the transcript.
    pub fn clear_transcript(&self) {
        self.core().transcript.clear();
    }

    /// Stops accepting and closes every connection.
    pub fn shutdown(&self) {
        self.shared.stop.send_replace(true);
    }
}

/// The electronic journal's file beside the state file: one JSON line per
/// entry, appended, so a change costs the size of the device's counters and
/// not of the whole day's journal.
fn ej_path(state: &Path) -> PathBuf {
    state.with_extension("ej.jsonl")
}

/// The state file is rewritten with its last line once it holds this many:
/// a change appends a line, which costs one `write` instead of a new file
/// and a rename over the old one (a flush on ext4) per command.
const STATE_LOG_LINES: usize = 256;

/// Reads a state file and its journal file. The state is the file's last
/// line that decodes (a line cut short by a crash is skipped); the file is
/// rewritten with that line alone. Journal lines for documents the state
/// never recorded (the process died between the two writes) and a last
/// line cut short are dropped, and the journal file is rewritten to match.
fn load(path: &Path) -> Result<DeviceState, Error> {
    let bytes = std::fs::read(path)?;
    let mut last = None;
    let mut first_error = None;
    for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        match serde_json::from_slice::<DeviceState>(line) {
            Ok(d) => last = Some(d),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let mut dev = match (last, first_error) {
        (Some(d), _) => d,
        (None, Some(e)) => return Err(Error::backend(e)),
        (None, None) => {
            return Err(Error::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("state file {} is empty", path.display()),
            )));
        }
    };
    replace_file(path, &state_line(&mut dev)?)?;
    let ej = ej_path(path);
    if let Ok(text) = std::fs::read_to_string(&ej) {
        for line in text.lines() {
            match serde_json::from_str::<EjEntry>(line) {
                Ok(e) if e.doc_no <= dev.last_doc_no => dev.ej.push(e),
                _ => break,
            }
        }
    }
    replace_file(&ej, &ej_lines(&dev.ej)?)?;
    Ok(dev)
}

/// `dev` without its journal, as one line.
fn state_line(dev: &mut DeviceState) -> std::io::Result<Vec<u8>> {
    let ej = std::mem::take(&mut dev.ej);
    let line = serde_json::to_vec(dev).map_err(std::io::Error::other);
    dev.ej = ej;
    let mut line = line?;
    line.push(b'\n');
    Ok(line)
}

/// Replaces the file at `path` with `bytes` whole: written beside it, then
/// renamed over it.
fn replace_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

fn ej_lines(entries: &[EjEntry]) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    for e in entries {
        serde_json::to_writer(&mut buf, e).map_err(std::io::Error::other)?;
        buf.push(b'\n');
    }
    Ok(buf)
}

/// Appends the journal's new entries, then the state (without the journal)
/// as a line of the state file, which is rewritten with that line alone at
/// the first change and every [`STATE_LOG_LINES`] lines.
fn persist(shared: &Shared, core: &mut Core) {
    let Some(path) = &shared.cfg.state_file else {
        return;
    };
    let res = (|| -> std::io::Result<()> {
        use std::io::Write as _;
        if let Some(new) = core.device.ej.get(core.ej_saved..)
            && !new.is_empty()
        {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(ej_path(path))?
                .write_all(&ej_lines(new)?)?;
        }
        core.ej_saved = core.device.ej.len();
        let line = state_line(&mut core.device)?;
        match &mut core.state_log {
            Some((file, lines)) if *lines < STATE_LOG_LINES => {
                file.write_all(&line)?;
                *lines += 1;
            }
            log => {
                *log = None;
                replace_file(path, &line)?;
                let file = std::fs::OpenOptions::new().append(true).open(path)?;
                *log = Some((file, 1));
            }
        }
        Ok(())
    })();
    if let Err(e) = res {
        // Start the file over at the next change.
        core.state_log = None;
        tracing::warn!("simulator could not persist its state: {e}");
    }
}

fn power_cycle(shared: &Shared, core: &mut Core) {
    persist(shared, core);
    // `load` replaces the file: the next change opens it again.
    core.state_log = None;
    if let Some(path) = &shared.cfg.state_file
        && let Ok(dev) = load(path)
    {
        core.ej_saved = dev.ej.len();
        core.device = dev;
    }
    core.last = None;
    core.faults.crash = None;
    shared.power.send_modify(|g| *g += 1);
    shared.changes.send_modify(|n| *n += 1);
}

fn record(shared: &Shared, core: &mut Core, conn: u64, from_host: bool, bytes: &[u8]) {
    if shared.cfg.transcript_limit == 0 {
        return;
    }
    if core.transcript.len() >= shared.cfg.transcript_limit {
        core.transcript.pop_front();
    }
    core.transcript.push_back(TranscriptEntry {
        conn,
        from_host,
        bytes: bytes.to_vec(),
        at: shared.cfg.clock.now_millis(),
    });
}

fn on_frame(shared: &Shared, core: &mut Core, f: Frame) -> Vec<Act> {
    core.frames += 1;
    let d = shared.cfg.dialect;
    let faults = &mut core.faults;
    if faults.reset {
        faults.reset = false;
        return vec![Act::Reset];
    }
    if faults.silent > 0 {
        faults.silent -= 1;
        return vec![];
    }
    if faults.nak > 0 {
        faults.nak -= 1;
        return vec![Act::Write(vec![codec::NAK])];
    }
    let mut acts = Vec::new();
    if let Some((seq, bytes)) = &core.last
        && *seq == f.seq
    {
        // Same sequence number as the last frame: repeat, do not execute.
        let mut out = bytes.clone();
        if core.faults.corrupt > 0 {
            core.faults.corrupt -= 1;
            corrupt(&mut out);
        }
        acts.push(Act::Write(out));
        return acts;
    }
    let crash = core.faults.crash;
    let before = |p: Option<CrashPoint>| {
        (p == Some(CrashPoint::BeforePayment) && f.cmd == c::PAYMENT)
            || (p == Some(CrashPoint::BeforeClose) && f.cmd == c::CLOSE)
    };
    let after = |p: Option<CrashPoint>| {
        (p == Some(CrashPoint::AfterPayment) && f.cmd == c::PAYMENT)
            || (p == Some(CrashPoint::AfterClose) && f.cmd == c::CLOSE)
    };
    if before(crash) {
        return vec![Act::PowerCycle];
    }
    let hang = core.faults.hang;
    if before(hang) {
        core.faults.hang = None;
        core.faults.silent = u32::MAX;
        return vec![];
    }
    if f.cmd == c::SALE
        && let Some((k, refill)) = core.faults.paper_at
    {
        if k <= 1 {
            core.device.paper_out = true;
            core.faults.paper_at = None;
            core.faults.refill_after = (refill > 0).then_some(refill);
        } else {
            core.faults.paper_at = Some((k - 1, refill));
        }
    }
    if f.cmd == c::STATUS {
        if let Some(n) = core.faults.refill_after {
            if n <= 1 {
                core.device.paper_out = false;
                core.faults.refill_after = None;
            } else {
                core.faults.refill_after = Some(n - 1);
            }
        }
        if let Some(n) = core.faults.cover_after {
            if n <= 1 {
                core.device.cover_open = false;
                core.faults.cover_after = None;
            } else {
                core.faults.cover_after = Some(n - 1);
            }
        }
    }
    let now = shared.cfg.clock.now_millis();
    let z_after = i64::try_from(shared.cfg.z_after.as_millis()).unwrap_or(i64::MAX);
    let ex = core.device.execute(f.cmd, &f.data, now, z_after);
    if ex.changed {
        persist(shared, core);
    }
    let bytes = codec::encode_reply(d, f.seq, f.cmd, &ex.data, &ex.status)
        .or_else(|_| codec::encode_reply(d, f.seq, f.cmd, b"", &ex.status))
        .unwrap_or_default();
    core.last = Some((f.seq, bytes.clone()));
    let faults = &mut core.faults;
    if faults.slow > 0 {
        acts.push(Act::Syn(faults.slow));
        faults.slow = 0;
    }
    if ex.changed && after(crash) {
        acts.push(Act::PowerCycle);
        return acts;
    }
    if ex.changed && after(hang) {
        core.faults.hang = None;
        core.faults.silent = u32::MAX;
        return acts;
    }
    if faults.drop > 0 {
        faults.drop -= 1;
        return acts;
    }
    let mut out = bytes.clone();
    if faults.corrupt > 0 {
        faults.corrupt -= 1;
        corrupt(&mut out);
    }
    acts.push(Act::Write(out));
    if faults.dup > 0 {
        faults.dup -= 1;
        acts.push(Act::Write(bytes));
    }
    acts
}

fn corrupt(frame: &mut [u8]) {
    // Flip a checksum nibble (second-to-last byte before the terminator).
    let n = frame.len();
    if n >= 3 {
        frame[n - 2] ^= 0x01;
    }
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    let mut stop = shared.stop.subscribe();
    let mut conn_no = 0u64;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => return,
        };
        let Ok((stream, _)) = accepted else { continue };
        conn_no += 1;
        let refuse = {
            let mut core = shared.core.lock().unwrap_or_else(|e| e.into_inner());
            if core.faults.refuse > 0 {
                core.faults.refuse -= 1;
                true
            } else {
                false
            }
        };
        if refuse {
            let _ = stream.set_zero_linger();
            drop(stream);
            continue;
        }
        let shared = shared.clone();
        let id = conn_no;
        tokio::spawn(async move {
            let permit =
                tokio::time::timeout(shared.cfg.busy_grace, shared.slot.clone().acquire_owned())
                    .await;
            let Ok(Ok(_permit)) = permit else {
                // Busy with another connection.
                let _ = stream.set_zero_linger();
                return;
            };
            serve(shared, stream, id).await;
        });
    }
}

async fn serve(shared: Arc<Shared>, mut stream: TcpStream, id: u64) {
    let _ = stream.set_nodelay(true);
    let mut power = shared.power.subscribe();
    let mut stop = shared.stop.subscribe();
    if *stop.borrow() {
        return;
    }
    let mut decoder = Decoder::new(shared.cfg.dialect, Direction::Request);
    let mut buf = vec![0u8; 4096];
    loop {
        let n = tokio::select! {
            r = stream.read(&mut buf) => match r { Ok(0) | Err(_) => return, Ok(n) => n },
            _ = power.changed() => return,
            _ = stop.changed() => return,
        };
        decoder.push(&buf[..n]);
        let mut plan = Vec::new();
        {
            let mut core = shared.core.lock().unwrap_or_else(|e| e.into_inner());
            record(&shared, &mut core, id, true, &buf[..n]);
            while let Some(ev) = decoder.next_event() {
                match ev {
                    Event::Frame(f) => plan.extend(on_frame(&shared, &mut core, f)),
                    Event::Bad(_) => plan.push(Act::Write(vec![codec::NAK])),
                    Event::Nak | Event::Syn => {}
                }
            }
        }
        shared.changes.send_modify(|n| *n += 1);
        for act in plan {
            match act {
                Act::Write(bytes) => {
                    {
                        let mut core = shared.core.lock().unwrap_or_else(|e| e.into_inner());
                        record(&shared, &mut core, id, false, &bytes);
                    }
                    if stream.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
                Act::Syn(k) => {
                    for _ in 0..k {
                        if stream.write_all(&[codec::SYN]).await.is_err() {
                            return;
                        }
                        tokio::time::sleep(shared.cfg.syn_interval).await;
                    }
                }
                Act::Reset => {
                    let _ = stream.set_zero_linger();
                    return;
                }
                Act::PowerCycle => {
                    {
                        let mut core = shared.core.lock().unwrap_or_else(|e| e.into_inner());
                        power_cycle(&shared, &mut core);
                    }
                    let _ = stream.set_zero_linger();
                    return;
                }
            }
        }
    }
}
