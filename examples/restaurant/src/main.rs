//! Run with
//!
//! ```text
//! cargo run --release -p restaurant
//! ```
//!
//! The Counterfoil reference server: card payments that end as exactly one
//! fiscal receipt, for many restaurants, with live status for the till.
//!
//! With no flags it runs the embedded default: an SQLite file under `./data`,
//! an in-process message bus, a simulated payment provider on loopback and
//! simulated fiscal printers, all in this one process. It prints where the
//! web console is and the demo API keys. In production the same binary runs
//! as separate roles (`--role serve|saga|relay|agent`) on PostgreSQL and
//! RabbitMQ; see `docs/operations.md`.
//!
//! One concept per module:
//!
//! | module | what it holds |
//! |---|---|
//! | [`config`] | flags and environment variables |
//! | [`roles`] | which parts a process runs, and graceful shutdown |
//! | [`telemetry`] | JSON logs, correlation id, W3C trace context, Prometheus, OTLP spans |
//! | [`db`] | the connection pool and the server's own migrations |
//! | [`domain`] | payments, refunds, receipt lines, statuses |
//! | [`store`] | the server's SQL: payments, refunds, events, keys, printers |
//! | [`api`] | the HTTP API under `/v1`, problem+json, auth, rate limits |
//! | [`provider`] | the payment provider trait, its HTTP client and simulator |
//! | [`flow`] | the payment and refund sagas |
//! | [`messaging`] | print jobs and results between cloud and restaurants |
//! | [`printing`] | the on-site print agent and its printers |

mod api;
mod config;
mod db;
mod domain;
mod flow;
mod messaging;
mod printing;
mod provider;
mod roles;
mod store;
mod telemetry;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let config = config::Config::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("restaurant: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    // The OTLP batch exporter, when configured, runs on the runtime.
    let otlp = match runtime.block_on(async { telemetry::init_logging(&config) }) {
        Ok(otlp) => otlp,
        Err(e) => {
            eprintln!("restaurant: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let flush_within = config.shutdown_grace.min(std::time::Duration::from_secs(5));
    let result = runtime.block_on(roles::run(config));
    // The runtime still runs the exporter while its last spans are sent.
    if let Some(otlp) = otlp {
        otlp.shutdown(flush_within);
    }
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "restaurant stopped with an error");
            eprintln!("restaurant: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
