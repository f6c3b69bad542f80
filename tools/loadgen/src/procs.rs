//! Processes of the real `restaurant` binary: start, SIGKILL, restart,
//! readiness and resident memory.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One server process (a role) and how to start it again.
#[derive(Debug)]
pub(crate) struct Proc {
    pub(crate) name: String,
    pub(crate) role: String,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    log: PathBuf,
    /// `http://127.0.0.1:PORT` for processes that serve HTTP.
    pub(crate) base: Option<String>,
    child: Option<Child>,
    pub(crate) starts: u32,
}

impl Proc {
    pub(crate) fn new(
        name: &str,
        role: &str,
        args: Vec<String>,
        envs: Vec<(String, String)>,
        log: PathBuf,
        base: Option<String>,
    ) -> Self {
        Self {
            name: name.to_owned(),
            role: role.to_owned(),
            args,
            envs,
            log,
            base,
            child: None,
            starts: 0,
        }
    }

    /// Starts the process (its output is appended to its log file).
    pub(crate) fn start(&mut self, bin: &Path) -> Result<(), String> {
        let open = || {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.log)
                .map_err(|e| format!("{}: {e}", self.log.display()))
        };
        let mut cmd = Command::new(bin);
        cmd.args(&self.args)
            .env_remove("DATABASE_URL")
            .env_remove("AMQP_URL")
            .env_remove("REDIS_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::from(open()?))
            .stderr(Stdio::from(open()?));
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("start {} ({}): {e}", self.name, bin.display()))?;
        self.child = Some(child);
        self.starts += 1;
        Ok(())
    }

    /// SIGKILL, and reap.
    pub(crate) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `false` when the process exited on its own.
    pub(crate) fn alive(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// `true` when the process was started and has exited on its own (not
    /// killed by us); reaps it.
    pub(crate) fn exited(&mut self) -> bool {
        let gone = match &mut self.child {
            Some(c) => !matches!(c.try_wait(), Ok(None)),
            None => false,
        };
        if gone {
            self.child = None;
        }
        gone
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Resident set size in KiB.
    pub(crate) fn rss_kib(&self) -> Option<u64> {
        rss_kib(self.pid()?)
    }

    /// The last lines of its log, for error messages.
    pub(crate) fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(8)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Resident set size of a process, in KiB.
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// A free loopback port for a server that the run starts, kills and starts
/// again on the same port. It is taken outside the kernel's ephemeral range
/// (`net.ipv4.ip_local_port_range`): a port from that range can be handed to
/// any outgoing connection (a pool's connection to PostgreSQL, say) or bind
/// to port 0 between this check and the server's bind, or while the server
/// is down, and the server then fails with "address already in use".
pub(crate) fn free_port() -> Result<u16, String> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok();
    let (lo, hi) = range
        .as_deref()
        .and_then(parse_port_range)
        .unwrap_or((32768, 60999));
    let mut rng = rand::rng();
    for _ in 0..200 {
        let Some(port) = port_outside(lo, hi, &mut rng) else {
            break;
        };
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    // No room outside the range (or all of it taken): any free port.
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// `"32768\t60999\n"` → `(32768, 60999)`.
fn parse_port_range(s: &str) -> Option<(u16, u16)> {
    let mut it = s.split_whitespace().map(str::parse::<u16>);
    match (it.next(), it.next()) {
        (Some(Ok(lo)), Some(Ok(hi))) if lo <= hi => Some((lo, hi)),
        _ => None,
    }
}

/// Lowest port a run's servers use: clear of the well-known and of the
/// usual service ports below it.
const FIRST_PORT: u16 = 20_000;

/// A random port in `[FIRST_PORT, lo)` or `(hi, 65535]`, whichever is wider;
/// `None` when both are empty.
fn port_outside(lo: u16, hi: u16, rng: &mut impl rand::Rng) -> Option<u16> {
    let below = (FIRST_PORT < lo).then_some(FIRST_PORT..lo);
    let above = (hi < u16::MAX).then(|| hi + 1..u16::MAX);
    let width = |r: &Option<std::ops::Range<u16>>| r.as_ref().map_or(0, |r| r.len());
    let pick = if width(&below) >= width(&above) {
        below
    } else {
        above
    };
    pick.filter(|r| !r.is_empty()).map(|r| rng.random_range(r))
}

/// Waits until `GET {base}/health/live` answers 200.
pub(crate) async fn wait_live(base: &str, timeout: Duration) -> bool {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(r) = http
            .get(format!("{base}/health/live"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            && r.status().is_success()
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Finds the `restaurant` binary: `explicit`, else `RESTAURANT_BIN`, else
/// beside this executable in the cargo target directory (building it with
/// cargo when it is not there yet).
pub(crate) fn restaurant_bin(explicit: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(p) = explicit {
        return Ok(p.to_owned());
    }
    if let Some(p) = std::env::var_os("RESTAURANT_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(|e| format!("current executable: {e}"))?;
    // target/<profile>/loadgen or target/<profile>/deps/<test binary>.
    let mut dirs = Vec::new();
    if let Some(d) = exe.parent() {
        dirs.push(d.to_owned());
        if d.ends_with("deps")
            && let Some(p) = d.parent()
        {
            dirs.push(p.to_owned());
        }
    }
    let name = format!("restaurant{}", std::env::consts::EXE_SUFFIX);
    if let Some(found) = dirs.iter().map(|d| d.join(&name)).find(|p| p.is_file()) {
        return Ok(found);
    }
    let profile_dir = dirs.last().cloned().unwrap_or_default();
    let release = profile_dir.ends_with("release");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-p", "restaurant"]);
    if release {
        cmd.arg("--release");
    }
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run cargo to build the server: {e}"))?;
    let built = profile_dir.join(&name);
    if status.success() && built.is_file() {
        Ok(built)
    } else {
        Err(format!(
            "the restaurant binary is not at {} (build it with `cargo build -p restaurant`, or set RESTAURANT_BIN)",
            built.display()
        ))
    }
}

#[cfg(test)]
mod port_tests {
    use super::*;

    #[test]
    fn ports_are_taken_outside_the_ephemeral_range() {
        assert_eq!(parse_port_range("32768\t60999\n"), Some((32768, 60999)));
        assert_eq!(parse_port_range("9 8"), None);
        assert_eq!(parse_port_range("x"), None);
        let mut rng = rand::rng();
        for _ in 0..1000 {
            let p = port_outside(32768, 60999, &mut rng).unwrap();
            assert!((FIRST_PORT..32768).contains(&p), "{p}");
            let p = port_outside(1024, 50000, &mut rng).unwrap();
            assert!(p > 50000, "{p}");
        }
        assert_eq!(port_outside(1024, u16::MAX, &mut rng), None);
        let p = free_port().unwrap();
        let (lo, hi) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .as_deref()
            .and_then(parse_port_range)
            .unwrap_or((32768, 60999));
        assert!(
            !(lo..=hi).contains(&p),
            "{p} is in the ephemeral range {lo}-{hi}"
        );
        std::net::TcpListener::bind(("127.0.0.1", p)).expect("the port is free");
    }
}
