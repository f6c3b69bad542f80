//! The chaos runner: starts the real server (embedded, or the production
//! shape on PostgreSQL with several `serve`, `saga`, `relay` and `agent`
//! processes), runs the load while injecting faults on a seeded schedule,
//! lets the work drain, and verifies the three records.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::ValueEnum;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::client::{Api, Patience};
use crate::procs::{self, Proc};
use crate::proxy::Proxy;
use crate::run::{self, Marker, Markers, RunArgs, Target};
use crate::verify::{self, Records};

/// Where the server runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Shape {
    /// One `--role all` process on SQLite.
    Embedded,
    /// PostgreSQL and separate `serve`, `saga`, `relay`, `agent` processes.
    Production,
}

/// A fault the runner can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Fault {
    /// SIGKILL a `serve` process, then restart it.
    KillServe,
    /// SIGKILL a `saga` process, then restart it.
    KillSaga,
    /// SIGKILL a `relay` process, then restart it.
    KillRelay,
    /// SIGKILL an `agent` process, then restart it.
    KillAgent,
    /// SIGKILL the embedded `all` process, then restart it.
    KillAll,
    /// `rabbitmqctl stop_app`, then `start_app`.
    Rabbitmq,
    /// Restart the PostgreSQL cluster.
    Postgres,
    /// A printer goes offline for a few seconds.
    PrinterOffline,
    /// A printer runs out of paper for a few seconds.
    PaperOut,
    /// A printer prints, then loses the reply (crash mid-receipt).
    PrinterCrash,
    /// The provider applies a capture, then never answers.
    ProviderTimeout,
    /// The provider answers 500 to the next calls.
    Provider5xx,
    /// An agent's link to the cloud is cut for `--link-cut-secs`.
    LinkCut,
}

impl Fault {
    fn role(self) -> Option<&'static str> {
        match self {
            Fault::KillServe => Some("serve"),
            Fault::KillSaga => Some("saga"),
            Fault::KillRelay => Some("relay"),
            Fault::KillAgent => Some("agent"),
            Fault::KillAll => Some("all"),
            _ => None,
        }
    }

    fn name(self) -> String {
        self.to_possible_value()
            .map(|v| v.get_name().to_owned())
            .unwrap_or_default()
    }
}

/// Options of a chaos run.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ChaosArgs {
    /// Embedded (one process, SQLite) or production (PostgreSQL, roles).
    #[arg(long, value_enum, default_value = "production")]
    pub(crate) shape: Shape,
    /// Restaurants (each with its own API key and, in production, agent).
    #[arg(long, default_value_t = 2)]
    pub(crate) restaurants: usize,
    /// Simulated printers per restaurant.
    #[arg(long, default_value_t = 2)]
    pub(crate) printers: usize,
    /// `serve` processes (production).
    #[arg(long, default_value_t = 2)]
    pub(crate) serve: usize,
    /// `saga` processes (production).
    #[arg(long, default_value_t = 2)]
    pub(crate) saga: usize,
    /// `relay` processes (production).
    #[arg(long, default_value_t = 1)]
    pub(crate) relay: usize,
    /// PostgreSQL URL to create the run's fresh database from (production).
    #[arg(long, env = "TEST_POSTGRES_URL")]
    pub(crate) postgres_url: Option<String>,
    /// RabbitMQ URL handed to the production processes (the agents' goes
    /// through a cuttable proxy).
    #[arg(long, env = "TEST_AMQP_URL")]
    pub(crate) amqp_url: Option<String>,
    /// Use this payment provider instead of the runner's own simulator
    /// (e.g. a `restaurant --role simulator` process).
    #[arg(long)]
    pub(crate) provider_url: Option<String>,
    /// Mean seconds between faults (0: no faults).
    #[arg(long, default_value_t = 0.0)]
    pub(crate) faults_every: f64,
    /// Faults to inject, each once per round in a seeded order. Default: every kill of the shape, printer and
    /// provider faults, and link cuts (PostgreSQL and RabbitMQ restarts
    /// touch shared services: name them to include them).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub(crate) faults: Vec<Fault>,
    /// Seed of the fault schedule.
    #[arg(long, default_value_t = 7)]
    pub(crate) fault_seed: u64,
    /// How long a link cut lasts, in seconds.
    #[arg(long, default_value_t = 60)]
    pub(crate) link_cut_secs: u64,
    /// Longest wait for work to drain after the load, in seconds.
    #[arg(long, default_value_t = 180)]
    pub(crate) drain_secs: u64,
    /// The `restaurant` binary (default: beside this one in the target dir).
    #[arg(long)]
    pub(crate) restaurant_bin: Option<PathBuf>,
    /// Directory for logs, databases and reports (default: a new temp dir).
    #[arg(long)]
    pub(crate) workdir: Option<PathBuf>,
    /// Seconds between RSS samples of every process (`rss.csv`).
    #[arg(long, default_value_t = 5)]
    pub(crate) rss_every: u64,
    /// Seconds of the raw database commit-rate baseline (0: skip).
    #[arg(long, default_value_t = 3)]
    pub(crate) baseline_secs: u64,
    /// Keep the run's PostgreSQL database, and its queues and exchanges on
    /// RabbitMQ.
    #[arg(long)]
    pub(crate) keep: bool,
    /// Extra `restaurant` arguments for every process (e.g.
    /// `--saga-concurrency=64`), comma separated.
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    pub(crate) server_arg: Vec<String>,
    #[command(flatten)]
    pub(crate) run: RunArgs,
}

const OPERATOR: &str = "ok_demo_operator";

/// The end of a chaos run (`chaos.json`).
#[derive(Debug, Serialize)]
struct ChaosSummary {
    shape: Shape,
    processes: Vec<String>,
    faults: BTreeMap<String, u32>,
    run: run::Summary,
    verify: verify::Verdict,
    device_journals: bool,
    baseline_commits_per_s: Option<f64>,
    baseline: String,
    flows_per_commit_rate: Option<f64>,
    rss_max_mib: BTreeMap<String, f64>,
    restarts: BTreeMap<String, u32>,
    /// Processes that exited on their own during the run (each restarted,
    /// as a service manager would).
    exits: BTreeMap<String, u32>,
    /// The production run's database, whose name also prefixes its queues
    /// and exchanges; all are gone after the run unless `--keep`.
    database: Option<String>,
}

struct World {
    bin: PathBuf,
    procs: Mutex<Vec<Proc>>,
    api: Api,
    provider_url: String,
    targets: Vec<Target>,
    proxies: Vec<Proxy>,
    markers: Markers,
    start: Instant,
    link_cut: Duration,
    faults_done: parking_lot::Mutex<BTreeMap<String, u32>>,
    rss: parking_lot::Mutex<BTreeMap<String, u64>>,
    /// Processes that exited on their own (restarted by the supervisor).
    exits: parking_lot::Mutex<BTreeMap<String, u32>>,
}

fn io(p: &Path) -> impl Fn(std::io::Error) -> String + '_ {
    move |e| format!("{}: {e}", p.display())
}

/// `postgres://u@h:p/db?x` with another database name.
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let base = match base[after_scheme..].find('/') {
        Some(i) => &base[..after_scheme + i],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

/// The host:port of a URL, and the URL with it replaced.
fn host_port(url: &str, default_port: u16) -> Option<(String, impl Fn(SocketAddr) -> String + '_)> {
    let start = url.find("://")? + 3;
    let rest = &url[start..];
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let at = authority.rfind('@').map_or(0, |i| i + 1);
    let hp = &authority[at..];
    let hp = if hp.contains(':') {
        hp.to_owned()
    } else {
        format!("{hp}:{default_port}")
    };
    let prefix = &url[..start + at];
    let suffix = &url[start + end..];
    Some((hp, move |a: SocketAddr| format!("{prefix}{a}{suffix}")))
}

fn resolve(hp: &str) -> Result<SocketAddr, String> {
    hp.to_socket_addrs()
        .map_err(|e| format!("{hp}: {e}"))?
        .next()
        .ok_or_else(|| format!("{hp}: no address"))
}

async fn create_database(admin: &str) -> Result<(String, String), String> {
    let name = format!(
        "loadgen_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(admin)
        .await
        .map_err(|e| format!("connect to PostgreSQL: {e}"))?;
    // The name is ours: `loadgen_` and hex digits.
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&pool)
        .await
        .map_err(|e| format!("create database: {e}"))?;
    pool.close().await;
    Ok((name.clone(), with_database(admin, &name)))
}

async fn drop_database(admin: &str, name: &str) {
    if let Ok(pool) = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(admin)
        .await
    {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&pool)
        .await;
        pool.close().await;
    }
}

/// Raw commit rate of PostgreSQL: single-row autocommit inserts from 8
/// connections for `secs` seconds.
async fn pg_commit_rate(url: &str, secs: u64) -> Result<f64, String> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(8)
        .connect(url)
        .await
        .map_err(|e| e.to_string())?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS loadgen_baseline (id BIGSERIAL PRIMARY KEY, v BIGINT NOT NULL)",
    )
    .execute(&pool)
    .await
    .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0_u64;
            while Instant::now() < deadline {
                if sqlx::query("INSERT INTO loadgen_baseline (v) VALUES ($1)")
                    .bind(1_i64)
                    .execute(&pool)
                    .await
                    .is_ok()
                {
                    n += 1;
                }
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap_or(0);
    }
    let rate = total as f64 / start.elapsed().as_secs_f64();
    let _ = sqlx::query("DROP TABLE loadgen_baseline")
        .execute(&pool)
        .await;
    pool.close().await;
    Ok(rate)
}

/// Raw commit rate of SQLite in the same settings as the server (WAL,
/// synchronous FULL): single-row inserts, one writer.
async fn sqlite_commit_rate(dir: &Path, secs: u64) -> Result<f64, String> {
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
    let opts = SqliteConnectOptions::new()
        .filename(dir.join("baseline.sqlite"))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full);
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(opts)
        .await
        .map_err(|e| e.to_string())?;
    sqlx::query("CREATE TABLE IF NOT EXISTS b (id INTEGER PRIMARY KEY, v INTEGER NOT NULL)")
        .execute(&pool)
        .await
        .map_err(|e| e.to_string())?;
    let start = Instant::now();
    let mut n = 0_u64;
    while start.elapsed() < Duration::from_secs(secs) {
        if sqlx::query("INSERT INTO b (v) VALUES (1)")
            .execute(&pool)
            .await
            .is_ok()
        {
            n += 1;
        }
    }
    pool.close().await;
    let _ = std::fs::remove_file(dir.join("baseline.sqlite"));
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

fn default_faults(shape: Shape) -> Vec<Fault> {
    let mut f = match shape {
        Shape::Embedded => vec![Fault::KillAll],
        Shape::Production => vec![
            Fault::KillServe,
            Fault::KillSaga,
            Fault::KillRelay,
            Fault::KillAgent,
            Fault::LinkCut,
        ],
    };
    f.extend([
        Fault::PrinterOffline,
        Fault::PaperOut,
        Fault::PrinterCrash,
        Fault::ProviderTimeout,
        Fault::Provider5xx,
    ]);
    f
}

/// The `chaos` command: `Ok(true)` when the verifier found nothing wrong.
pub(crate) async fn command(args: &ChaosArgs) -> Result<bool, String> {
    let workdir = match &args.workdir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!(
            "loadgen-chaos-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        )),
    };
    std::fs::create_dir_all(&workdir).map_err(io(&workdir))?;
    eprintln!("chaos: working in {}", workdir.display());
    let bin = procs::restaurant_bin(args.restaurant_bin.as_deref())?;
    let stop = CancellationToken::new();
    let mut dropped_db = None;
    let result = chaos(args, &workdir, &bin, &stop, &mut dropped_db).await;
    stop.cancel();
    if let (Some(name), Some(admin)) = (dropped_db, &args.postgres_url)
        && !args.keep
    {
        drop_database(admin, &name).await;
        if let Some(amqp) = &args.amqp_url {
            delete_topology(amqp, &name, &restaurant_names(args.restaurants)).await;
        }
    }
    result
}

/// Deletes the run's queues and exchanges (named after its database), so
/// runs do not pile up quorum queues on the broker.
async fn delete_topology(amqp: &str, prefix: &str, restaurants: &[String]) {
    use counterfoil_outbox::{AmqpConsumer, HandlerError, IncomingMessage, QueueTopology};
    let noop = std::sync::Arc::new(counterfoil_outbox::handler_fn(
        |_m: IncomingMessage| async { Ok::<(), HandlerError>(()) },
    ));
    let print = format!("{prefix}.print");
    let results = format!("{prefix}.results");
    let mut topologies: Vec<QueueTopology> = restaurants
        .iter()
        .map(|r| QueueTopology::new(format!("{print}.{r}")).bind(&print, format!("{r}.*")))
        .collect();
    topologies.push(QueueTopology::new(&results).bind(&results, "#"));
    // Deleting an exchange (or queue) that is gone already is not an error.
    for t in topologies {
        let deleted = match AmqpConsumer::builder(amqp, t, noop.clone()).build() {
            Ok(c) => c.delete_topology(true).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = deleted {
            eprintln!("chaos: could not delete the run's queues and exchanges: {e}");
            return;
        }
    }
}

/// The run's restaurants: `r01`, `r02`, … (at least one).
fn restaurant_names(n: usize) -> Vec<String> {
    (1..=n.max(1)).map(|i| format!("r{i:02}")).collect()
}

async fn chaos(
    args: &ChaosArgs,
    workdir: &Path,
    bin: &Path,
    stop: &CancellationToken,
    db_name: &mut Option<String>,
) -> Result<bool, String> {
    let provider_url = match &args.provider_url {
        Some(u) => u.trim_end_matches('/').to_owned(),
        None => {
            let listen: SocketAddr = ([127, 0, 0, 1], 0).into();
            crate::provider::start(listen, stop.clone())
                .await
                .map_err(|e| format!("provider simulator: {e}"))?
                .url
        }
    };
    let restaurants = restaurant_names(args.restaurants);
    let printers: Vec<String> = restaurants
        .iter()
        .flat_map(|r| (1..=args.printers.max(1)).map(move |p| format!("{r}/{r}-p{p}=sim")))
        .collect();
    let mut common = vec![
        ("RESTAURANT_PRINTERS".to_owned(), printers.join(",")),
        ("RESTAURANT_PROVIDER_URL".to_owned(), provider_url.clone()),
        ("RESTAURANT_PROVIDER_TIMEOUT".to_owned(), "2s".to_owned()),
        ("RESTAURANT_RATE_LIMIT".to_owned(), "100000".to_owned()),
        ("RESTAURANT_RATE_BURST".to_owned(), "100000".to_owned()),
        ("RESTAURANT_LOG".to_owned(), "warn".to_owned()),
        ("RESTAURANT_LOG_FORMAT".to_owned(), "json".to_owned()),
        ("RESTAURANT_SHUTDOWN_GRACE".to_owned(), "2s".to_owned()),
    ];
    let mut list = Vec::new();
    let mut proxies = Vec::new();
    let mut agent_journals = Vec::new();
    let database_url;
    let mut baseline = None;
    let baseline_name;
    let extra = |role: &str, mut v: Vec<String>| {
        v.splice(0..0, ["--role".to_owned(), role.to_owned()]);
        v.extend(args.server_arg.iter().cloned());
        v
    };
    match args.shape {
        Shape::Embedded => {
            let dir = workdir.join("all");
            std::fs::create_dir_all(&dir).map_err(io(&dir))?;
            database_url = format!("sqlite://{}/restaurant.sqlite", dir.display());
            agent_journals.push(format!("sqlite://{}/agent.sqlite", dir.display()));
            let port = procs::free_port()?;
            let mut env = common.clone();
            env.push(("RESTAURANT_DATA_DIR".to_owned(), dir.display().to_string()));
            list.push(Proc::new(
                "all",
                "all",
                extra("all", vec!["--listen".into(), format!("127.0.0.1:{port}")]),
                env,
                workdir.join("all.log"),
                Some(format!("http://127.0.0.1:{port}")),
            ));
            baseline_name =
                "SQLite (WAL, synchronous=FULL) single-row commits, one writer".to_owned();
            if args.baseline_secs > 0 {
                baseline = sqlite_commit_rate(workdir, args.baseline_secs).await.ok();
            }
        }
        Shape::Production => {
            let admin = args
                .postgres_url
                .clone()
                .ok_or("the production shape needs --postgres-url (or TEST_POSTGRES_URL)")?;
            let (name, url) = create_database(&admin).await?;
            // The run's own exchanges and queues too: messages left in a
            // shared queue by another run (or a stopped one) must not reach
            // this run's agents.
            common.push(("AMQP_PREFIX".to_owned(), name.clone()));
            *db_name = Some(name);
            database_url = url;
            baseline_name = "PostgreSQL single-row autocommit inserts, 8 connections".to_owned();
            if args.baseline_secs > 0 {
                baseline = pg_commit_rate(&database_url, args.baseline_secs).await.ok();
            }
            common.push(("DATABASE_URL".to_owned(), database_url.clone()));
            if let Some(a) = &args.amqp_url {
                common.push(("AMQP_URL".to_owned(), a.clone()));
            }
            for i in 1..=args.serve.max(1) {
                let port = procs::free_port()?;
                list.push(Proc::new(
                    &format!("serve-{i}"),
                    "serve",
                    extra(
                        "serve",
                        vec!["--listen".into(), format!("127.0.0.1:{port}")],
                    ),
                    with_dir(&common, workdir, &format!("serve-{i}"))?,
                    workdir.join(format!("serve-{i}.log")),
                    Some(format!("http://127.0.0.1:{port}")),
                ));
            }
            for (role, n) in [("saga", args.saga), ("relay", args.relay)] {
                for i in 1..=n {
                    let name = format!("{role}-{i}");
                    list.push(Proc::new(
                        &name,
                        role,
                        extra(role, Vec::new()),
                        with_dir(&common, workdir, &name)?,
                        workdir.join(format!("{name}.log")),
                        None,
                    ));
                }
            }
            // Each agent reaches the cloud (database, broker) through its
            // own proxy, so its link can be cut alone.
            for r in &restaurants {
                let name = format!("agent-{r}");
                let mut env = with_dir(&common, workdir, &name)?;
                let (hp, rewrite) =
                    host_port(&database_url, 5432).ok_or("database URL without a host")?;
                let db_proxy = Proxy::start(resolve(&hp)?, stop.clone())
                    .await
                    .map_err(|e| format!("proxy: {e}"))?;
                set(&mut env, "DATABASE_URL", rewrite(db_proxy.addr));
                proxies.push((r.clone(), db_proxy));
                if let Some(a) = &args.amqp_url
                    && let Some((hp, rewrite)) = host_port(a, 5672)
                {
                    let amqp_proxy = Proxy::start(resolve(&hp)?, stop.clone())
                        .await
                        .map_err(|e| format!("proxy: {e}"))?;
                    set(&mut env, "AMQP_URL", rewrite(amqp_proxy.addr));
                    proxies.push((r.clone(), amqp_proxy));
                }
                let journal = format!("sqlite://{}/{name}.sqlite", workdir.display());
                agent_journals.push(journal.clone());
                list.push(Proc::new(
                    &name,
                    "agent",
                    extra(
                        "agent",
                        vec![
                            "--agent-restaurant".into(),
                            r.clone(),
                            "--agent-database-url".into(),
                            journal,
                        ],
                    ),
                    env,
                    workdir.join(format!("{name}.log")),
                    None,
                ));
            }
        }
    }

    // Start: the first process migrates the database, then the others.
    let bases: Vec<String> = list.iter().filter_map(|p| p.base.clone()).collect();
    for (i, p) in list.iter_mut().enumerate() {
        p.start(bin)?;
        if i == 0 {
            let base = p.base.clone().unwrap_or_default();
            if !procs::wait_live(&base, Duration::from_secs(120)).await {
                return Err(format!("{} did not come up:\n{}", p.name, p.log_tail()));
            }
        }
    }
    for b in &bases {
        if !procs::wait_live(b, Duration::from_secs(120)).await {
            return Err(format!("{b} did not come up"));
        }
    }
    let api = Api::new(bases.clone(), Arc::default())?;
    let mut keys = Vec::new();
    for r in &restaurants {
        let path = format!("/v1/operator/restaurants/{r}/keys");
        let a = api
            .call(Method::POST, OPERATOR, &path, None, None, Patience::DEFAULT)
            .await?;
        let key = a
            .body
            .get("key")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("create key for {r}: {} {}", a.status, a.body))?;
        keys.push((r.clone(), key.to_owned()));
    }
    let targets = run::discover(&api, &keys).await?;
    let names: Vec<String> = list.iter().map(|p| p.name.clone()).collect();
    eprintln!("chaos: {} processes up: {}", names.len(), names.join(", "));

    let markers = Markers::default();
    let world = Arc::new(World {
        bin: bin.to_owned(),
        procs: Mutex::new(list),
        api: api.clone(),
        provider_url: provider_url.clone(),
        targets: targets.clone(),
        proxies: proxies.iter().map(|(_, p)| p.clone()).collect(),
        markers: markers.clone(),
        start: Instant::now(),
        link_cut: Duration::from_secs(args.link_cut_secs),
        faults_done: parking_lot::Mutex::default(),
        rss: parking_lot::Mutex::default(),
        exits: parking_lot::Mutex::default(),
    });
    let supervisor = tokio::spawn(supervise(world.clone(), stop.clone()));
    let faults_stop = CancellationToken::new();
    let kinds = if args.faults.is_empty() {
        default_faults(args.shape)
    } else {
        args.faults.clone()
    };
    let injector = (args.faults_every > 0.0).then(|| {
        tokio::spawn(inject(
            world.clone(),
            kinds,
            args.faults_every,
            args.fault_seed,
            faults_stop.clone(),
        ))
    });
    let sampler = tokio::spawn(sample_rss(
        world.clone(),
        workdir.join("rss.csv"),
        Duration::from_secs(args.rss_every.max(1)),
        stop.clone(),
    ));

    let out = args.run.out.clone().unwrap_or_else(|| workdir.to_owned());
    let mut run_args = args.run.clone();
    run_args.base.clone_from(&bases);
    run_args.out = Some(out.clone());
    let loaded = run::run(&run_args, targets, markers.clone()).await;
    faults_stop.cancel();
    if let Some(i) = injector {
        let _ = i.await;
    }
    let (summary, records) = loaded?;

    // Recover: every process up, every link restored, faults cleared.
    for p in &world.proxies {
        p.set_cut(false);
    }
    {
        let mut procs = world.procs.lock().await;
        for p in procs.iter_mut() {
            if !p.alive() {
                p.start(&world.bin)?;
            }
        }
    }
    clear_faults(&world).await;
    eprintln!("chaos: load done; draining (at most {} s)", args.drain_secs);
    let drained = drain(&database_url, Duration::from_secs(args.drain_secs)).await;
    eprintln!("chaos: drained: {drained}");

    let (payments, refunds) = verify::load_database(&database_url).await?;
    let ledger = verify::load_ledger(&format!("{provider_url}/ledger")).await?;
    // Device journals can be read only where the simulated printers live
    // in a process that serves HTTP and was never restarted.
    let never_restarted = world.procs.lock().await.iter().all(|p| p.starts == 1);
    let device_journals = args.shape == Shape::Embedded && never_restarted;
    let journals = if device_journals {
        verify::load_journals_api(&bases[0], OPERATOR).await?
    } else {
        let mut j: BTreeMap<String, Vec<verify::JournalEntry>> = BTreeMap::new();
        for url in &agent_journals {
            for (printer, e) in verify::load_agent_journal(url).await? {
                j.entry(printer).or_default().push(e);
            }
        }
        j
    };
    let records = Records {
        payments,
        refunds,
        ledger,
        journals,
        device_journals,
        flows: records,
    };
    let verdict = verify::check(&records, false);
    verdict.print();
    if !device_journals {
        println!(
            "verify: printer records read from the agents' journals (the simulated devices live inside restarted processes)"
        );
    }

    let restarts = world
        .procs
        .lock()
        .await
        .iter()
        .map(|p| (p.name.clone(), p.starts.saturating_sub(1)))
        .collect();
    let chaos = ChaosSummary {
        shape: args.shape,
        processes: names,
        faults: world.faults_done.lock().clone(),
        flows_per_commit_rate: baseline.map(|b| summary.flows_per_s / b),
        baseline_commits_per_s: baseline,
        baseline: baseline_name,
        run: summary.clone(),
        verify: verdict.clone(),
        device_journals,
        rss_max_mib: world
            .rss
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), *v as f64 / 1024.0))
            .collect(),
        restarts,
        exits: world.exits.lock().clone(),
        database: db_name.clone(),
    };
    let text = serde_json::to_string_pretty(&chaos).unwrap_or_default();
    std::fs::write(out.join("chaos.json"), &text).map_err(io(&out))?;
    println!(
        "chaos: {} flows in {:.1} s = {:.1} flows/s ({:.1} fiscalized/s); accept p99 {:.1} ms; accept→fiscalized p50 {:.1} ms p99 {:.1} ms; faults {:?}; baseline {} = {}; max RSS {:?} MiB; report {}",
        summary.flows_finished,
        summary.elapsed_s,
        summary.flows_per_s,
        summary.fiscalized_per_s,
        summary.accept.p99_ms,
        summary.accept_to_fiscalized.p50_ms,
        summary.accept_to_fiscalized.p99_ms,
        chaos.faults,
        chaos.baseline,
        baseline.map_or("not measured".to_owned(), |b| format!(
            "{b:.0} commits/s (ratio {:.3})",
            summary.flows_per_s / b
        )),
        chaos
            .rss_max_mib
            .iter()
            .map(|(k, v)| format!("{k}={v:.0}"))
            .collect::<Vec<_>>(),
        out.join("report.svg").display()
    );
    if !chaos.exits.is_empty() {
        println!(
            "chaos: processes that exited on their own and were restarted: {:?}",
            chaos.exits
        );
    }
    stop.cancel();
    let _ = sampler.await;
    let _ = supervisor.await;
    world.procs.lock().await.clear();
    Ok(verdict.ok() && summary.duplicate_mismatches == 0)
}

fn set(env: &mut Vec<(String, String)>, key: &str, value: String) {
    env.retain(|(k, _)| k != key);
    env.push((key.to_owned(), value));
}

fn with_dir(
    common: &[(String, String)],
    workdir: &Path,
    name: &str,
) -> Result<Vec<(String, String)>, String> {
    let dir = workdir.join(name);
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let mut env = common.to_vec();
    env.push(("RESTAURANT_DATA_DIR".to_owned(), dir.display().to_string()));
    Ok(env)
}

/// Waits until no payment or refund is in a non-final status.
async fn drain(database_url: &str, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok((p, r)) = verify::load_database(database_url).await {
            let open = p
                .iter()
                .filter(|p| {
                    !matches!(
                        p.status.as_str(),
                        "fiscalized" | "declined" | "voided" | "parked"
                    )
                })
                .count()
                + r.iter()
                    .filter(|r| !matches!(r.status.as_str(), "reversed" | "rejected" | "parked"))
                    .count();
            if open == 0 {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    false
}

async fn sample_rss(world: Arc<World>, path: PathBuf, every: Duration, stop: CancellationToken) {
    let mut lines = String::from("seconds,process,pid,rss_kib\n");
    let mut tick = tokio::time::interval(every);
    // Bounded: one sample per tick until the run stops (at most a day).
    for _ in 0..(86_400 / every.as_secs().max(1)) {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let t = world.start.elapsed().as_secs_f64();
        let procs = world.procs.lock().await;
        let mut max = world.rss.lock();
        for p in procs.iter() {
            if let (Some(pid), Some(kib)) = (p.pid(), p.rss_kib()) {
                lines.push_str(&format!("{t:.1},{},{pid},{kib}\n", p.name));
                let m = max.entry(p.name.clone()).or_insert(0);
                *m = (*m).max(kib);
            }
        }
        if let Some(kib) = procs::rss_kib(std::process::id()) {
            lines.push_str(&format!("{t:.1},loadgen,{},{kib}\n", std::process::id()));
        }
        drop(max);
        drop(procs);
        let _ = std::fs::write(&path, &lines);
    }
}

/// Restarts processes that exit on their own, as a service manager
/// (`Restart=always`) would, once a second.
async fn supervise(world: Arc<World>, stop: CancellationToken) {
    for _ in 0..86_400 {
        if !sleep_or(&stop, Duration::from_secs(1)).await {
            break;
        }
        let mut procs = world.procs.lock().await;
        for p in procs.iter_mut() {
            if p.exited() {
                mark(
                    &world,
                    format!("{} exited on its own; restarting it", p.name),
                );
                *world.exits.lock().entry(p.name.clone()).or_insert(0) += 1;
                if let Err(e) = p.start(&world.bin) {
                    eprintln!("chaos: {e}");
                }
            }
        }
    }
}

fn mark(world: &World, label: String) {
    let second = world.start.elapsed().as_secs_f64();
    eprintln!("chaos: [{second:>6.1}s] {label}");
    world.markers.lock().push(Marker { second, label });
}

async fn sleep_or(stop: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        () = stop.cancelled() => false,
        () = tokio::time::sleep(d) => true,
    }
}

/// Injects faults until `stop` (bounded in count).
async fn inject(
    world: Arc<World>,
    kinds: Vec<Fault>,
    every: f64,
    seed: u64,
    stop: CancellationToken,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut cuts = Vec::new();
    let mut order: Vec<Fault> = Vec::new();
    for _ in 0..100_000 {
        let gap = Duration::from_secs_f64(every * rng.random_range(0.5..1.5));
        if !sleep_or(&stop, gap).await {
            break;
        }
        // Every kind once per round, in a seeded order.
        if order.is_empty() {
            order.clone_from(&kinds);
            order.shuffle(&mut rng);
        }
        let Some(kind) = order.pop() else {
            break;
        };
        let pick: u64 = rng.random();
        let hold = Duration::from_millis(rng.random_range(500..3_000));
        match fault(&world, kind, pick, hold, &stop).await {
            Ok(Some(task)) => cuts.push(task),
            Ok(None) => {}
            Err(e) => eprintln!("chaos: {} failed: {e}", kind.name()),
        }
        *world.faults_done.lock().entry(kind.name()).or_insert(0) += 1;
    }
    for c in cuts {
        let _ = c.await;
    }
}

async fn fault(
    world: &Arc<World>,
    kind: Fault,
    pick: u64,
    hold: Duration,
    stop: &CancellationToken,
) -> Result<Option<tokio::task::JoinHandle<()>>, String> {
    if let Some(role) = kind.role() {
        let mut procs = world.procs.lock().await;
        let idx: Vec<usize> = procs
            .iter()
            .enumerate()
            .filter(|(_, p)| p.role == role)
            .map(|(i, _)| i)
            .collect();
        let Some(&i) = idx.get(usize::try_from(pick).unwrap_or(0) % idx.len().max(1)) else {
            return Ok(None);
        };
        let p = &mut procs[i];
        mark(world, format!("SIGKILL {}", p.name));
        p.kill();
        drop(procs);
        tokio::time::sleep(hold.min(Duration::from_secs(2))).await;
        let mut procs = world.procs.lock().await;
        let p = &mut procs[i];
        p.start(&world.bin)?;
        let base = p.base.clone();
        drop(procs);
        if let Some(b) = base
            && !procs::wait_live(&b, Duration::from_secs(60)).await
        {
            return Err(format!("{b} did not come back"));
        }
        return Ok(None);
    }
    match kind {
        Fault::Rabbitmq => {
            mark(world, "RabbitMQ stop_app".into());
            let stopped = run_cmd("rabbitmqctl", &["stop_app"], Duration::from_secs(60)).await;
            tokio::time::sleep(hold).await;
            // Always start it again, even when stopping failed.
            let started = run_cmd("rabbitmqctl", &["start_app"], Duration::from_secs(120)).await;
            mark(world, "RabbitMQ start_app".into());
            stopped.and(started).map(|()| None)
        }
        Fault::Postgres => {
            let version = std::fs::read_dir("/etc/postgresql")
                .map_err(|e| format!("/etc/postgresql: {e}"))?
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .max()
                .ok_or("no PostgreSQL cluster")?;
            mark(world, "PostgreSQL restart".into());
            run_cmd(
                "pg_ctlcluster",
                &["--skip-systemctl-redirect", &version, "main", "restart"],
                Duration::from_secs(120),
            )
            .await
            .map(|()| None)
        }
        Fault::PrinterOffline | Fault::PaperOut | Fault::PrinterCrash => {
            let all: Vec<(&Target, &String)> = world
                .targets
                .iter()
                .flat_map(|t| t.printers.iter().map(move |p| (t, p)))
                .collect();
            let Some(&(_, printer)) =
                all.get(usize::try_from(pick).unwrap_or(0) % all.len().max(1))
            else {
                return Ok(None);
            };
            let (label, faults, hold) = match kind {
                Fault::PrinterOffline => ("offline", json!({ "offline": true }), hold),
                Fault::PaperOut => ("out of paper", json!({ "paper_out": true }), hold),
                _ => (
                    "crashing mid-receipt",
                    json!({ "lose_reply_next": 2 }),
                    hold * 2,
                ),
            };
            mark(world, format!("printer {printer} {label}"));
            printer_faults(world, printer, &faults).await?;
            tokio::time::sleep(hold).await;
            printer_faults(world, printer, &json!({})).await?;
            Ok(None)
        }
        Fault::ProviderTimeout | Fault::Provider5xx => {
            let (label, field, n) = if kind == Fault::ProviderTimeout {
                (
                    "provider times out after the next capture",
                    "timeout_after_capture_next",
                    1,
                )
            } else {
                (
                    "provider answers 500 to the next 3 calls",
                    "error_5xx_next",
                    3,
                )
            };
            mark(world, label.into());
            provider_fault(&world.provider_url, field, n)
                .await
                .map(|()| None)
        }
        Fault::LinkCut => {
            let n = world.proxies.len();
            let Some(p) = world
                .proxies
                .get(usize::try_from(pick).unwrap_or(0) % n.max(1))
                .cloned()
            else {
                return Ok(None);
            };
            mark(
                world,
                format!("agent link via {} cut for {:?}", p.addr, world.link_cut),
            );
            p.set_cut(true);
            let w = world.clone();
            let stop = stop.clone();
            Ok(Some(tokio::spawn(async move {
                // Restored after the cut, or as soon as the load ends.
                let _ = sleep_or(&stop, w.link_cut).await;
                p.set_cut(false);
                mark(&w, format!("agent link via {} restored", p.addr));
            })))
        }
        _ => Ok(None),
    }
}

async fn run_cmd(program: &str, args: &[&str], limit: Duration) -> Result<(), String> {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    match tokio::time::timeout(limit, cmd.status()).await {
        Ok(Ok(s)) if s.success() => Ok(()),
        Ok(Ok(s)) => Err(format!("{program} {}: {s}", args.join(" "))),
        Ok(Err(e)) => Err(format!("{program}: {e}")),
        Err(_) => Err(format!("{program} {}: timed out", args.join(" "))),
    }
}

async fn printer_faults(world: &World, printer: &str, faults: &Value) -> Result<(), String> {
    let path = format!("/v1/printers/{printer}/simulator");
    let a = world
        .api
        .call(
            Method::PUT,
            OPERATOR,
            &path,
            None,
            Some(faults),
            Patience::DEFAULT,
        )
        .await?;
    if a.status >= 300 {
        return Err(format!("PUT {path}: {} {}", a.status, a.body));
    }
    Ok(())
}

async fn provider_fault(url: &str, field: &str, n: u64) -> Result<(), String> {
    let http = reqwest::Client::new();
    let mut f: Value = http
        .get(format!("{url}/faults"))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    let now = f.get(field).and_then(Value::as_u64).unwrap_or(0);
    f[field] = json!(now + n);
    http.put(format!("{url}/faults"))
        .json(&f)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

async fn clear_faults(world: &World) {
    let http = reqwest::Client::new();
    let _ = http
        .put(format!("{}/faults", world.provider_url))
        .json(&json!({}))
        .send()
        .await;
    for t in &world.targets {
        for p in &t.printers {
            if let Err(e) = printer_faults(world, p, &json!({})).await {
                eprintln!("chaos: clear faults of {p}: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn urls_are_rewritten() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/test", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgres://h/test?sslmode=disable", "x"),
            "postgres://h/x?sslmode=disable"
        );
        let (hp, rewrite) = host_port("postgres://postgres@127.0.0.1:5432/x", 5432).unwrap();
        assert_eq!(hp, "127.0.0.1:5432");
        assert_eq!(
            rewrite("127.0.0.1:9".parse().unwrap()),
            "postgres://postgres@127.0.0.1:9/x"
        );
        let (hp, rewrite) = host_port("amqp://guest:guest@localhost/%2f", 5672).unwrap();
        assert_eq!(hp, "localhost:5672");
        assert_eq!(
            rewrite("127.0.0.1:7".parse().unwrap()),
            "amqp://guest:guest@127.0.0.1:7/%2f"
        );
    }
}
