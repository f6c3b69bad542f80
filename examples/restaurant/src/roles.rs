//! Which parts a process runs, wiring, and graceful shutdown.
//!
//! `all` (the embedded default) runs everything in one process. In
//! production each role runs as its own processes, as many as needed:
//! `serve` (HTTP, WebSocket, console), `saga` (saga workers), `relay`
//! (outbox relay) and `agent` (on site, one per restaurant).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{self, AppState, KeyCache, RateLimiter};
use crate::config::{Config, Role, SqliteSync};
use crate::db::{self, Db};
use crate::flow::results::Results;
use crate::flow::{Deps, Sagas};
use crate::messaging::{Bus, Names, Outbox};
use crate::printing::{self, Agent};
use crate::provider::{self, AfterSync, GuardedProvider, HttpProvider, PaymentProvider};
use crate::store::{keys, printers};
use crate::telemetry;
use counterfoil_outbox::InProcessBus;

/// Demo keys for local use only (created with `--demo`, the default).
pub(crate) const DEMO_KEYS: [(&str, &str); 2] = [("demo-1", "rk_demo_1"), ("demo-2", "rk_demo_2")];
/// The demo operator key (when `--operator-key` is not given).
pub(crate) const DEMO_OPERATOR_KEY: &str = "ok_demo_operator";

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Runs the configured role until SIGTERM or Ctrl-C.
pub(crate) async fn run(config: Config) -> Result<(), BoxError> {
    let metrics = telemetry::init_metrics()?;
    let stop = CancellationToken::new();
    let tasks = TaskTracker::new();
    let role = config.role;

    if role == Role::Simulator {
        let sim =
            provider::simulator::start(config.provider_sim_listen, stop.child_token()).await?;
        println!("provider simulator: {}", sim.url);
        shutdown_signal().await;
        stop.cancel();
        return Ok(());
    }

    // Parts of one process can share the in-process bus; separate
    // processes need RabbitMQ.
    let bus = match &config.amqp_url {
        Some(url) => Bus::Amqp(url.clone()),
        None if role == Role::All => Bus::InProcess(InProcessBus::new()),
        None => return Err("roles other than `all` need --amqp-url (RabbitMQ)".into()),
    };
    let names = Names {
        prefix: config.amqp_prefix.clone(),
    };
    let specs = config.printer_specs();
    // Simulated printers run where the agent runs.
    let mut sims = printing::Simulators::default();

    // The agent needs only its own database and the bus.
    if role.runs(Role::Agent) {
        let restaurant = config.agent_restaurant.clone();
        if role == Role::Agent && restaurant.is_none() {
            return Err("--role agent needs --agent-restaurant".into());
        }
        let journal_url = config.agent_database_url();
        // The fiscal journal's intent must be on disk before the printer
        // gets a byte, and it is written inside the device actor: no
        // grouping there.
        let agent_sync = match config.sqlite_sync {
            SqliteSync::Grouped => SqliteSync::Full,
            other => other,
        };
        let journal = Db::connect(&journal_url, config.sqlite_connections, agent_sync)
            .await
            .map_err(|e| {
                format!(
                    "cannot open the agent database {}: {e}",
                    db::redact(&journal_url)
                )
            })?;
        db::migrate::run(&journal, "agent_migrations", db::migrate::AGENT).await?;
        let fiscal = printing::fiscal_journal(&journal).await?;
        let mine: Vec<_> = specs
            .iter()
            .filter(|s| restaurant.as_ref().is_none_or(|r| *r == s.restaurant))
            .cloned()
            .collect();
        let dialect = config.printer_dialect.fiscal();
        std::fs::create_dir_all(&config.data_dir)?;
        sims = printing::simulators(&mine, dialect, &config.data_dir, &fiscal).await?;
        let agent = Agent {
            outbox: Outbox::open(&journal).await?,
            journal,
            fiscal,
            dialect,
            bus: bus.clone(),
            names: names.clone(),
            specs: specs.clone(),
            sims: sims.clone(),
        };
        let agent_stop = stop.child_token();
        tasks.spawn(async move {
            if let Err(e) = printing::run(agent, restaurant, agent_stop).await {
                tracing::error!(error = %e, "print agent stopped");
            }
        });
        tracing::info!("print agent started");
    }
    if role == Role::Agent {
        tasks.close();
        shutdown_signal().await;
        stop.cancel();
        let _ = tokio::time::timeout(config.shutdown_grace, tasks.wait()).await;
        return Ok(());
    }

    let url = config.database_url();
    let Some((db, outbox)) = open_database(&config, &url).await? else {
        // Stopped while waiting for the database.
        return Ok(());
    };
    let durable = db.durability(config.sqlite_sync);

    // The provider, for the roles that run saga steps: over HTTP, behind a
    // circuit breaker and retries.
    let provider: Option<Arc<dyn PaymentProvider>> = if role.runs(Role::Saga) {
        let http: Arc<dyn PaymentProvider> = match &config.provider_url {
            Some(url) => Arc::new(HttpProvider::new(url, config.provider_timeout)?),
            None => {
                let sim =
                    provider::simulator::start(config.provider_sim_listen, stop.child_token())
                        .await?;
                println!("provider simulator: {}", sim.url);
                Arc::new(HttpProvider::new(&sim.url, config.provider_timeout)?)
            }
        };
        let guarded: Arc<dyn PaymentProvider> = Arc::new(GuardedProvider::new(http)?);
        Some(Arc::new(AfterSync::new(guarded, durable.clone())))
    } else {
        None
    };
    // `serve` starts sagas in the request's transaction, `saga` runs them
    // and resumes them with the agents' reports.
    let sagas = Sagas::new(Deps {
        db: db.clone(),
        provider,
        fiscal_deadline: config.fiscal_deadline,
        outbox: outbox.clone(),
        names: names.clone(),
    })
    .await?;

    let mut consumers = Vec::new();
    if role.runs(Role::Saga) {
        tasks.spawn(
            sagas
                .clone()
                .run_workers(config.saga_concurrency, stop.child_token()),
        );
        let results = Arc::new(Results::new(db.clone(), sagas.clone(), durable.clone()));
        consumers.extend(
            bus.subscribe(
                &names.results_queue(),
                &names.results_exchange(),
                "#",
                results,
            )
            .await?,
        );
        tracing::info!("saga workers started");
    }

    let mut relays = Vec::new();
    if role.runs(Role::Relay) {
        relays.push(outbox.relay(&bus, durable.clone())?);
        tracing::info!("outbox relay started");
    }

    if role.runs(Role::Serve) {
        let tail = api::tail::start(db.clone(), durable.clone(), stop.child_token()).await?;
        let state = AppState {
            db: db.clone(),
            keys: Arc::new(KeyCache::default()),
            limiter: Arc::new(RateLimiter::new(config.rate_limit, config.rate_burst)),
            tail,
            metrics,
            sims: sims.clone(),
            sagas: sagas.clone(),
            outbox: outbox.clone(),
            names: names.clone(),
            bus: bus.clone(),
            durable: durable.clone(),
        };
        let idem_store = api::idempotency::store(
            &db,
            config
                .redis_url
                .as_deref()
                .map(|u| (u, config.redis_prefix.as_str())),
        )
        .await?;
        let idem = api::Idempotent {
            payments: api::idempotency::layer(
                idem_store.clone(),
                "create_payment",
                config.max_body_bytes,
            )?,
            refunds: api::idempotency::layer(idem_store, "create_refund", config.max_body_bytes)?,
        };
        let app = api::router(state, config.max_body_bytes, idem);
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        println!("listening on http://{addr}");
        println!("console: http://{addr}/console");
        println!("API page: http://{addr}/api (OpenAPI document: /openapi.json)");
        if config.demo {
            for (r, k) in DEMO_KEYS {
                println!("demo key for {r}: {k}   (console: http://{addr}/console#key={k})");
            }
            if config.operator_key.is_none() {
                println!(
                    "demo operator key: {DEMO_OPERATOR_KEY}   (local use only; set --operator-key in production)"
                );
            }
        }
        let server_stop = stop.child_token();
        tasks.spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(server_stop.cancelled_owned())
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "HTTP server stopped");
            }
        });
        tasks.spawn(telemetry::refresh_gauges(db.clone(), stop.child_token()));
    }
    tasks.close();

    shutdown_signal().await;
    tracing::info!("shutting down: finishing work in flight");
    stop.cancel();
    if tokio::time::timeout(config.shutdown_grace, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!(grace = ?config.shutdown_grace, "work still in flight after the grace period; its leases lapse and another process takes over");
    }
    db_close(&db).await;
    Ok(())
}

async fn db_close(db: &Db) {
    let close = async {
        match db {
            Db::Postgres(p) => p.close().await,
            Db::Sqlite(p) => p.close().await,
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), close).await;
}

/// Opens the server's database: connects, migrates, seeds and opens the
/// outbox. A PostgreSQL that cannot be reached yet (restarting, or the
/// network not up) is tried again with backoff for up to `--startup-wait`,
/// so a supervisor need not restart the process in a loop; any other error,
/// and every SQLite error, ends at once. `None` when stopped while waiting.
async fn open_database(config: &Config, url: &str) -> Result<Option<(Db, Outbox)>, BoxError> {
    let open = || async {
        let max = if url.starts_with("sqlite:") {
            config.sqlite_connections
        } else {
            16
        };
        let db = Db::connect(url, max, config.sqlite_sync).await?;
        db.migrate().await?;
        seed(config, &db).await?;
        let outbox = Outbox::open(&db).await?;
        Ok::<_, BoxError>((db, outbox))
    };
    let retry = url.starts_with("postgres:") || url.starts_with("postgresql:");
    let deadline = tokio::time::Instant::now() + config.startup_wait;
    let mut delay = Duration::from_millis(100);
    loop {
        let e = match open().await {
            Ok(opened) => return Ok(Some(opened)),
            Err(e) => e,
        };
        if !(retry && unreachable(&*e) && tokio::time::Instant::now() + delay < deadline) {
            return Err(format!("cannot open the database {}: {e}", db::redact(url)).into());
        }
        tracing::warn!(error = %e, retry_in = ?delay, "database not reachable yet; trying again");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shutdown_signal() => return Ok(None),
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// Whether `e` says the database could not be reached or is starting or
/// stopping (SQLSTATE classes 08 and 57P), rather than that something is wrong.
fn unreachable(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(e) = err.downcast_ref::<sqlx::Error>() {
            return match e {
                sqlx::Error::Io(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed => true,
                sqlx::Error::Database(d) => d
                    .code()
                    .is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
                _ => false,
            };
        }
        if err.is::<std::io::Error>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// Creates restaurants, printers and keys from the configuration.
async fn seed(config: &Config, db: &Db) -> Result<(), sqlx::Error> {
    if config.demo {
        for (r, k) in DEMO_KEYS {
            keys::ensure_restaurant(db, r).await?;
            keys::insert(
                db,
                k,
                &keys::Principal::Restaurant(r.to_owned()),
                "demo key",
            )
            .await?;
        }
        if config.operator_key.is_none() {
            keys::insert(
                db,
                DEMO_OPERATOR_KEY,
                &keys::Principal::Operator,
                "demo operator key",
            )
            .await?;
        }
    }
    if let Some(k) = &config.operator_key {
        keys::insert(
            db,
            k,
            &keys::Principal::Operator,
            "operator key from configuration",
        )
        .await?;
    }
    for p in config.printer_specs() {
        keys::ensure_restaurant(db, &p.restaurant).await?;
        let address = match &p.address {
            crate::config::PrinterAddress::Simulated => "sim".to_owned(),
            crate::config::PrinterAddress::Tcp(a) => format!("tcp://{a}"),
        };
        printers::ensure(db, &p.id, &p.restaurant, &address).await?;
    }
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use sqlx::Connection;
    use sqlx::postgres::{PgConnectOptions, PgConnection};

    use super::{BoxError, unreachable};

    #[tokio::test]
    async fn only_an_unreachable_database_is_waited_for() {
        // Nothing listens on port 1: refused, worth waiting for.
        let refused = PgConnection::connect("postgres://postgres@127.0.0.1:1/x")
            .await
            .unwrap_err();
        assert!(unreachable(&refused), "{refused}");
        // Found through the source chain, as the outbox wraps it.
        let wrapped: BoxError = Box::new(counterfoil_outbox::Error::Backend(Box::new(
            sqlx::Error::PoolTimedOut,
        )));
        assert!(unreachable(&*wrapped));
        // What waiting cannot fix.
        assert!(!unreachable(&sqlx::Error::Configuration("bad".into())));
        let plain: BoxError = "a migration failed".into();
        assert!(!unreachable(&*plain));
        // A login that a running server refuses.
        if let Ok(url) = std::env::var("TEST_POSTGRES_URL") {
            let options = PgConnectOptions::from_str(&url)
                .unwrap()
                .username("no_such_role");
            let refused = PgConnection::connect_with(&options).await.unwrap_err();
            assert!(!unreachable(&refused), "{refused}");
        }
    }
}
