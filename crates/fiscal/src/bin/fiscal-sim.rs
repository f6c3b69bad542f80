//! Run with `cargo run -p counterfoil-fiscal --bin fiscal-sim -- --dialect x --listen 127.0.0.1:4999`
//!
//! A simulated Datecs fiscal printer on TCP. Options:
//!
//! * `--dialect classic|x` (default `x`)
//! * `--listen ADDR` (default `127.0.0.1:4999`)
//! * `--state FILE` persist the device state (survives restarts)
//! * `--admin ADDR` a line-based admin port: send a fault (`nak 2`,
//!   `paper-out 3 2`, `crash after-payment`, ...), `power-cycle`, `refill`,
//!   `close-cover`, `state` or `transcript`
//! * `--fault SPEC` inject a fault at start (repeatable)

use counterfoil_fiscal::Dialect;
use counterfoil_fiscal::sim::{Fault, SimConfig, SimHandle, Simulator};
use std::process::ExitCode;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

fn usage() -> ExitCode {
    eprintln!(
        "usage: fiscal-sim [--dialect classic|x] [--listen ADDR] [--state FILE] [--admin ADDR] [--fault SPEC]..."
    );
    ExitCode::from(2)
}

async fn admin(sim: SimHandle, addr: String) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("admin port on {}", listener.local_addr()?);
    loop {
        let (s, _) = listener.accept().await?;
        let sim = sim.clone();
        tokio::spawn(async move {
            let (r, mut w) = s.into_split();
            let mut lines = BufReader::new(r).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let answer = match line.trim() {
                    "power-cycle" => {
                        sim.power_cycle();
                        "ok".to_owned()
                    }
                    "refill" => {
                        sim.refill_paper();
                        "ok".to_owned()
                    }
                    "close-cover" => {
                        sim.close_cover();
                        "ok".to_owned()
                    }
                    "state" => serde_json::to_string(&sim.state()).unwrap_or_default(),
                    "transcript" => sim
                        .transcript()
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("\n"),
                    other => match other.parse::<Fault>() {
                        Ok(f) => {
                            sim.inject(f);
                            "ok".to_owned()
                        }
                        Err(e) => format!("error: {e}"),
                    },
                };
                if w.write_all(format!("{answer}\n").as_bytes()).await.is_err() {
                    return;
                }
            }
        });
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut cfg = SimConfig::new(Dialect::X);
    cfg.addr = "127.0.0.1:4999".into();
    let mut admin_addr = None;
    let mut faults = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let Some(v) = args.next() else {
            return usage();
        };
        match a.as_str() {
            "--dialect" => match v.parse() {
                Ok(d) => cfg.dialect = d,
                Err(e) => {
                    eprintln!("{e}");
                    return usage();
                }
            },
            "--listen" => cfg.addr = v,
            "--state" => cfg.state_file = Some(v.into()),
            "--admin" => admin_addr = Some(v),
            "--fault" => match v.parse::<Fault>() {
                Ok(f) => faults.push(f),
                Err(e) => {
                    eprintln!("{e}");
                    return usage();
                }
            },
            _ => return usage(),
        }
    }
    let sim = match Simulator::start(cfg).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    for f in faults {
        sim.inject(f);
    }
    eprintln!("simulated fiscal printer on {}", sim.addr());
    if let Some(a) = admin_addr {
        let s = sim.clone();
        tokio::spawn(async move {
            if let Err(e) = admin(s, a).await {
                eprintln!("admin port: {e}");
            }
        });
    }
    let _ = tokio::signal::ctrl_c().await;
    ExitCode::SUCCESS
}
