//! Run with
//!
//! ```text
//! cargo run --release -p loadgen -- --help
//! ```
//!
//! The end-to-end proof for the Counterfoil reference server:
//!
//! * `loadgen run` drives a running server over HTTP and WebSocket
//!   (payments, duplicate retries, refunds, Z reports), open-loop at a rate
//!   or closed-loop with N clients, and reports throughput, HDR latency
//!   percentiles and an SVG plot of latency over time;
//! * `loadgen verify` compares the server's database, the payment
//!   provider's ledger and the printers' fiscal journals after a run and
//!   exits non-zero on any discrepancy;
//! * `loadgen chaos` starts the server itself (embedded, or the production
//!   shape: PostgreSQL and several `serve`/`saga`/`relay`/`agent`
//!   processes), runs the load while injecting faults on a seeded schedule,
//!   drains, and verifies.
//!
//! | module | what it holds |
//! |---|---|
//! | [`mix`] | the seeded traffic mix |
//! | [`client`] | HTTP calls with retries that reuse the Idempotency-Key |
//! | [`events`] | the WebSocket watcher that sees payments finish |
//! | [`stats`] | counters and HDR histograms |
//! | [`run`] | open and closed loops, flows, outputs |
//! | [`report`] | the SVG plot |
//! | [`verify`] | the three-way verifier |
//! | [`provider`] | a payment provider simulator outside the server |
//! | [`procs`] | server processes, their roles and RSS |
//! | [`proxy`] | a loopback TCP proxy whose link can be cut |
//! | [`chaos`] | the chaos runner |

mod chaos;
mod client;
mod events;
mod mix;
mod procs;
mod provider;
mod proxy;
mod report;
mod run;
mod stats;
mod verify;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    about = "Load generator, verifier and chaos runner for the Counterfoil reference server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Drive a running server and report throughput and latency.
    Run(run::RunArgs),
    /// Compare database, provider ledger and printer journals.
    Verify(verify::VerifyArgs),
    /// Start the server, load it while injecting faults, then verify.
    Chaos(Box<chaos::ChaosArgs>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadgen: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Command::Run(args) => {
                let keys = run::parse_keys(&args.key)?;
                let api = client::Api::new(args.base.clone(), std::sync::Arc::default())?;
                let targets = run::discover(&api, &keys).await?;
                let (summary, _) = run::run(&args, targets, run::Markers::default()).await?;
                println!(
                    "{}",
                    serde_json::to_string_pretty(&summary).unwrap_or_default()
                );
                Ok(summary.duplicate_mismatches == 0)
            }
            Command::Verify(args) => {
                let verdict = verify::command(&args).await?;
                verdict.print();
                Ok(verdict.ok())
            }
            Command::Chaos(args) => chaos::command(&args).await,
        }
    });
    // Hanging provider replies and sockets must not hold the exit.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::from(2)
        }
    }
}
