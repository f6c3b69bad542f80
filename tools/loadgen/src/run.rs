//! The load generator: flows of payment → fiscal receipt (with duplicate
//! retries, refunds and Z reports) driven over real HTTP, their outcomes
//! taken from the WebSocket, open-loop at a rate or closed-loop with N
//! clients.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use reqwest::Method;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::client::{Api, Patience};
use crate::events::{self, Finals};
use crate::mix::{self, Mix};
use crate::report;
use crate::stats::{Counters, Latencies, Percentiles};

/// Options of a load run.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct RunArgs {
    /// Server base URLs (any `serve` instance), comma separated.
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:8080")]
    pub(crate) base: Vec<String>,
    /// Restaurant API keys as `RESTAURANT=KEY`, comma separated. Default:
    /// the demo keys.
    #[arg(long, value_delimiter = ',')]
    pub(crate) key: Vec<String>,
    /// Flows to start.
    #[arg(long, default_value_t = 1000)]
    pub(crate) flows: u64,
    /// Stop starting flows after this many seconds (with `--flows`, the
    /// first limit reached wins).
    #[arg(long)]
    pub(crate) duration: Option<u64>,
    /// Open loop: start this many flows per second regardless of answers.
    #[arg(long)]
    pub(crate) rate: Option<f64>,
    /// Closed loop (without `--rate`): this many clients, each running one
    /// flow after the other.
    #[arg(long, default_value_t = 16)]
    pub(crate) clients: usize,
    /// Open loop: most flows in flight; later starts wait (and count late).
    #[arg(long, default_value_t = 8192)]
    pub(crate) max_in_flight: usize,
    #[command(flatten)]
    pub(crate) mix: Mix,
    /// Seed of the traffic mix.
    #[arg(long, default_value_t = 1)]
    pub(crate) seed: u64,
    /// Longest wait for a payment's or refund's outcome, in seconds.
    #[arg(long, default_value_t = 120)]
    pub(crate) wait_secs: u64,
    /// Directory for `summary.json`, `flows.jsonl` and `report.svg`.
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
    /// Seconds between progress lines (0: none).
    #[arg(long, default_value_t = 2)]
    pub(crate) progress: u64,
}

/// A restaurant the load goes to.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) restaurant: String,
    pub(crate) key: String,
    pub(crate) printers: Vec<String>,
}

/// What the client saw of one flow (one line of `flows.jsonl`).
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub(crate) struct FlowRecord {
    pub(crate) n: u64,
    pub(crate) restaurant: String,
    pub(crate) idempotency_key: String,
    pub(crate) amount: i64,
    pub(crate) payment: Option<String>,
    pub(crate) status: Option<String>,
    pub(crate) refund: Option<String>,
    pub(crate) refund_amount: Option<i64>,
    pub(crate) refund_status: Option<String>,
    pub(crate) error: Option<String>,
}

/// A fault injected during the run, for the plot.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Marker {
    pub(crate) second: f64,
    pub(crate) label: String,
}

/// Markers shared with the chaos runner.
pub(crate) type Markers = Arc<Mutex<Vec<Marker>>>;

/// The end of a run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Summary {
    pub(crate) mode: String,
    pub(crate) flows_started: u64,
    pub(crate) flows_finished: u64,
    pub(crate) elapsed_s: f64,
    /// Finished flows (final status reached or given up) per second.
    pub(crate) flows_per_s: f64,
    /// Fiscalized payments per second of the run.
    pub(crate) fiscalized_per_s: f64,
    pub(crate) accepted: u64,
    pub(crate) not_accepted: u64,
    pub(crate) fiscalized: u64,
    pub(crate) declined: u64,
    pub(crate) voided: u64,
    pub(crate) parked: u64,
    pub(crate) no_outcome: u64,
    pub(crate) duplicates_sent: u64,
    pub(crate) duplicate_mismatches: u64,
    pub(crate) http_retries: u64,
    pub(crate) refunds: u64,
    pub(crate) reversed: u64,
    pub(crate) refunds_not_reversed: u64,
    pub(crate) z_reports: u64,
    pub(crate) ws_reconnects: u64,
    pub(crate) accept: Percentiles,
    pub(crate) accept_to_fiscalized: Percentiles,
}

struct Ctx {
    api: Api,
    targets: Vec<Target>,
    ids: Vec<(String, Vec<String>)>,
    mix: Mix,
    seed: u64,
    run_id: String,
    finals: Arc<Finals>,
    counters: Arc<Counters>,
    lat: Arc<Latencies>,
    wait: Duration,
    records: Mutex<Vec<FlowRecord>>,
}

/// The demo keys the server creates with `--demo` (its default).
pub(crate) const DEMO_KEYS: [(&str, &str); 2] = [("demo-1", "rk_demo_1"), ("demo-2", "rk_demo_2")];

/// Finds each key's printers.
pub(crate) async fn discover(api: &Api, keys: &[(String, String)]) -> Result<Vec<Target>, String> {
    let mut out = Vec::new();
    for (restaurant, key) in keys {
        let ans = api
            .call(
                Method::GET,
                key,
                "/v1/printers",
                None,
                None,
                Patience::DEFAULT,
            )
            .await?;
        if ans.status != 200 {
            return Err(format!(
                "GET /v1/printers for {restaurant}: {} {}",
                ans.status, ans.body
            ));
        }
        let printers: Vec<String> = ans
            .body
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|p| p.get("restaurant").and_then(Value::as_str) == Some(restaurant))
                    .filter_map(|p| p.get("id").and_then(Value::as_str).map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        if printers.is_empty() {
            return Err(format!("restaurant {restaurant} has no printers"));
        }
        out.push(Target {
            restaurant: restaurant.clone(),
            key: key.clone(),
            printers,
        });
    }
    Ok(out)
}

/// Parses `RESTAURANT=KEY` pairs; the demo keys when empty.
pub(crate) fn parse_keys(keys: &[String]) -> Result<Vec<(String, String)>, String> {
    if keys.is_empty() {
        return Ok(DEMO_KEYS
            .iter()
            .map(|(r, k)| ((*r).to_owned(), (*k).to_owned()))
            .collect());
    }
    keys.iter()
        .map(|s| {
            s.split_once('=')
                .map(|(r, k)| (r.to_owned(), k.to_owned()))
                .ok_or_else(|| format!("key `{s}`: expected RESTAURANT=KEY"))
        })
        .collect()
}

/// Runs the load; `markers` are drawn on the plot.
pub(crate) async fn run(
    args: &RunArgs,
    targets: Vec<Target>,
    markers: Markers,
) -> Result<(Summary, Vec<FlowRecord>), String> {
    let counters = Arc::new(Counters::default());
    let api = Api::new(args.base.clone(), counters.clone())?;
    let stop = CancellationToken::new();
    let finals = Arc::new(Finals::default());
    let mut watchers = Vec::new();
    for t in &targets {
        let (tx, rx) = tokio::sync::oneshot::channel();
        watchers.push(tokio::spawn(events::watch(
            api.bases(),
            t.key.clone(),
            finals.clone(),
            counters.clone(),
            Some(tx),
            stop.clone(),
        )));
        tokio::time::timeout(Duration::from_secs(30), rx)
            .await
            .map_err(|_| format!("no WebSocket to the server for {}", t.restaurant))?
            .map_err(|_| format!("no WebSocket to the server for {}", t.restaurant))?;
    }
    let start = Instant::now();
    let lat = Arc::new(Latencies::new(start));
    let ctx = Arc::new(Ctx {
        api,
        ids: targets
            .iter()
            .map(|t| (t.restaurant.clone(), t.printers.clone()))
            .collect(),
        targets,
        mix: args.mix.clone(),
        seed: args.seed,
        run_id: uuid::Uuid::new_v4().simple().to_string()[..12].to_owned(),
        finals,
        counters: counters.clone(),
        lat: lat.clone(),
        wait: Duration::from_secs(args.wait_secs),
        records: Mutex::new(Vec::new()),
    });
    let progress = (args.progress > 0).then(|| {
        tokio::spawn(progress_lines(
            counters.clone(),
            lat.clone(),
            Duration::from_secs(args.progress),
            stop.clone(),
        ))
    });
    let deadline = args.duration.map(|d| start + Duration::from_secs(d));
    let mode = match args.rate {
        Some(rate) if rate > 0.0 => {
            open_loop(&ctx, rate, args.flows, deadline, args.max_in_flight).await;
            format!("open loop at {rate} flows/s")
        }
        _ => {
            closed_loop(&ctx, args.clients.max(1), args.flows, deadline).await;
            format!("closed loop with {} clients", args.clients.max(1))
        }
    };
    let elapsed = start.elapsed().as_secs_f64();
    stop.cancel();
    for w in watchers {
        let _ = w.await;
    }
    if let Some(p) = progress {
        let _ = p.await;
    }
    let records = std::mem::take(&mut *ctx.records.lock());
    let c = &counters;
    let g = Counters::get;
    let summary = Summary {
        mode,
        flows_started: g(&c.started),
        flows_finished: g(&c.finished),
        elapsed_s: elapsed,
        flows_per_s: g(&c.finished) as f64 / elapsed.max(1e-9),
        fiscalized_per_s: g(&c.fiscalized) as f64 / elapsed.max(1e-9),
        accepted: g(&c.accepted),
        not_accepted: g(&c.not_accepted),
        fiscalized: g(&c.fiscalized),
        declined: g(&c.declined),
        voided: g(&c.voided),
        parked: g(&c.parked),
        no_outcome: g(&c.no_outcome),
        duplicates_sent: g(&c.duplicates),
        duplicate_mismatches: g(&c.duplicate_mismatch),
        http_retries: g(&c.http_retries),
        refunds: g(&c.refunds),
        reversed: g(&c.reversed),
        refunds_not_reversed: g(&c.refunds_other),
        z_reports: g(&c.z_reports),
        ws_reconnects: g(&c.ws_reconnects),
        accept: lat.accept(),
        accept_to_fiscalized: lat.fiscal(),
    };
    if let Some(dir) = &args.out {
        write_outputs(dir, &summary, &records, &lat, &markers.lock())?;
    }
    Ok((summary, records))
}

fn write_outputs(
    dir: &std::path::Path,
    summary: &Summary,
    records: &[FlowRecord],
    lat: &Latencies,
    markers: &[Marker],
) -> Result<(), String> {
    let io = |e: std::io::Error| format!("{}: {e}", dir.display());
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut flows = String::new();
    for r in records {
        flows.push_str(&serde_json::to_string(r).unwrap_or_default());
        flows.push('\n');
    }
    std::fs::write(dir.join("flows.jsonl"), flows).map_err(io)?;
    let series = lat.series();
    let doc = json!({ "summary": summary, "series": series, "markers": markers });
    std::fs::write(
        dir.join("summary.json"),
        serde_json::to_string_pretty(&doc).unwrap_or_default(),
    )
    .map_err(io)?;
    std::fs::write(
        dir.join("report.svg"),
        report::svg(summary, &series, markers),
    )
    .map_err(io)?;
    Ok(())
}

async fn progress_lines(
    c: Arc<Counters>,
    lat: Arc<Latencies>,
    every: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let g = Counters::get;
        let last = lat.last_second();
        eprintln!(
            "[{:>6.1}s] started {} accepted {} fiscalized {} declined {} refunds {}/{} in flight {} retries {} | last 1s: {} fiscalized, p99 accept {:.1} ms, p99 accept→fiscalized {:.1} ms",
            lat.start().elapsed().as_secs_f64(),
            g(&c.started),
            g(&c.accepted),
            g(&c.fiscalized),
            g(&c.declined),
            g(&c.reversed),
            g(&c.refunds),
            g(&c.started).saturating_sub(g(&c.finished)),
            g(&c.http_retries),
            last.as_ref().map_or(0, |p| p.fiscalized),
            last.as_ref().map_or(0.0, |p| p.accept_p99_ms),
            last.as_ref().map_or(0.0, |p| p.fiscal_p99_ms),
        );
    }
}

async fn open_loop(
    ctx: &Arc<Ctx>,
    rate: f64,
    flows: u64,
    deadline: Option<Instant>,
    max_in_flight: usize,
) {
    let gate = Arc::new(Semaphore::new(max_in_flight.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    let start = Instant::now();
    for n in 0..flows {
        let due = start + Duration::from_secs_f64(n as f64 / rate);
        if deadline.is_some_and(|d| due >= d) {
            break;
        }
        tokio::time::sleep_until(due.into()).await;
        let Ok(permit) = gate.clone().acquire_owned().await else {
            break;
        };
        let ctx = ctx.clone();
        tasks.spawn(async move {
            // Latency counts from when the flow was due (no coordinated
            // omission when the server falls behind).
            flow(&ctx, n, due).await;
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

async fn closed_loop(ctx: &Arc<Ctx>, clients: usize, flows: u64, deadline: Option<Instant>) {
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let ctx = ctx.clone();
        let next = next.clone();
        tasks.spawn(async move {
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= flows || deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                flow(&ctx, n, Instant::now()).await;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

fn id_of(body: &Value) -> Option<String> {
    body.get("id").and_then(Value::as_str).map(str::to_owned)
}

async fn flow(ctx: &Ctx, n: u64, due: Instant) {
    let c = &ctx.counters;
    Counters::inc(&c.started);
    let rec = run_flow(ctx, n, due).await;
    Counters::inc(&c.finished);
    ctx.records.lock().push(rec);
}

async fn run_flow(ctx: &Ctx, n: u64, due: Instant) -> FlowRecord {
    let c = &ctx.counters;
    let plan = mix::plan(ctx.seed, n, &ctx.mix, &ctx.ids);
    let Some(t) = ctx.targets.get(plan.target) else {
        return FlowRecord::default();
    };
    let idem = format!("lg-{}-{n}", ctx.run_id);
    let mut rec = FlowRecord {
        n,
        restaurant: t.restaurant.clone(),
        idempotency_key: idem.clone(),
        amount: plan.amount,
        ..FlowRecord::default()
    };
    let post = || {
        ctx.api.call(
            Method::POST,
            &t.key,
            "/v1/payments",
            Some(&idem),
            Some(&plan.body),
            Patience::DEFAULT,
        )
    };
    // Accept latency is the first request's; an in-flight duplicate may
    // be held until the first one completes.
    let timed = || async { (post().await, Instant::now()) };
    let ((first, accepted_at), concurrent) = if plan.dup_concurrent {
        let (a, (b, _)) = tokio::join!(timed(), timed());
        (a, Some(b))
    } else {
        (timed().await, None)
    };
    let answer = match first {
        Ok(a) if a.status == 200 || a.status == 202 => a,
        Ok(a) => {
            Counters::inc(&c.not_accepted);
            rec.error = Some(format!("payment answered {}: {}", a.status, a.body));
            return rec;
        }
        Err(e) => {
            Counters::inc(&c.not_accepted);
            rec.error = Some(format!("payment not accepted: {e}"));
            return rec;
        }
    };
    Counters::inc(&c.accepted);
    ctx.lat
        .accepted(accepted_at, accepted_at.saturating_duration_since(due));
    let Some(id) = id_of(&answer.body) else {
        rec.error = Some("payment answer without id".into());
        return rec;
    };
    rec.payment = Some(id.clone());
    let second = match concurrent {
        Some(b) => Some(b),
        None if plan.dup => Some(post().await),
        None => None,
    };
    if let Some(second) = second {
        Counters::inc(&c.duplicates);
        match second {
            Ok(a) if id_of(&a.body).as_deref() == Some(id.as_str()) => {}
            // 409/429 on an in-flight duplicate is allowed; another id is not.
            Ok(a) if id_of(&a.body).is_some() => Counters::inc(&c.duplicate_mismatch),
            _ => {}
        }
    }
    if plan.z_report
        && let Some(printer) = t.printers.get(plan.printer)
    {
        let path = format!("/v1/printers/{printer}/reports/z");
        let zkey = format!("{idem}-z");
        if let Ok(a) = ctx
            .api
            .call(
                Method::POST,
                &t.key,
                &path,
                Some(&zkey),
                None,
                Patience::DEFAULT,
            )
            .await
            && a.status < 300
        {
            Counters::inc(&c.z_reports);
        }
    }
    let status = match ctx.finals.wait(&id, ctx.wait).await {
        Some((at, status)) => {
            if status == "fiscalized" {
                ctx.lat
                    .fiscalized(at, at.saturating_duration_since(accepted_at));
            }
            Some(status)
        }
        None => poll_status(ctx, &t.key, &id).await,
    };
    match status.as_deref() {
        Some("fiscalized") => Counters::inc(&c.fiscalized),
        Some("declined") => Counters::inc(&c.declined),
        Some("voided") => Counters::inc(&c.voided),
        Some("parked") => Counters::inc(&c.parked),
        _ => Counters::inc(&c.no_outcome),
    }
    rec.status.clone_from(&status);
    if status.as_deref() == Some("fiscalized")
        && let Some(amount) = plan.refund
    {
        refund(ctx, t, &id, &idem, amount, plan.dup, &mut rec).await;
    }
    rec
}

async fn poll_status(ctx: &Ctx, key: &str, id: &str) -> Option<String> {
    let path = format!("/v1/payments/{id}");
    let a = ctx
        .api
        .call(Method::GET, key, &path, None, None, Patience::DEFAULT)
        .await
        .ok()?;
    a.body
        .get("status")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

async fn refund(
    ctx: &Ctx,
    t: &Target,
    id: &str,
    idem: &str,
    amount: i64,
    dup: bool,
    rec: &mut FlowRecord,
) {
    let c = &ctx.counters;
    let path = format!("/v1/payments/{id}/refunds");
    let rkey = format!("{idem}-r");
    let body = json!({ "amount": amount, "reason": "loadgen refund" });
    let send = || {
        ctx.api.call(
            Method::POST,
            &t.key,
            &path,
            Some(&rkey),
            Some(&body),
            Patience::DEFAULT,
        )
    };
    rec.refund_amount = Some(amount);
    let refund_id = match send().await {
        Ok(a) if a.status == 200 || a.status == 202 => id_of(&a.body),
        Ok(a) => {
            rec.error = Some(format!("refund answered {}: {}", a.status, a.body));
            None
        }
        Err(e) => {
            rec.error = Some(format!("refund not accepted: {e}"));
            None
        }
    };
    let Some(refund_id) = refund_id else {
        Counters::inc(&c.refunds_other);
        return;
    };
    Counters::inc(&c.refunds);
    rec.refund = Some(refund_id.clone());
    if dup {
        Counters::inc(&c.duplicates);
        if let Ok(a) = send().await
            && id_of(&a.body).is_some_and(|x| x != refund_id)
        {
            Counters::inc(&c.duplicate_mismatch);
        }
    }
    let status = match ctx.finals.wait(&refund_id, ctx.wait).await {
        Some((_, s)) => Some(s),
        None => {
            let p = format!("/v1/payments/{id}");
            ctx.api
                .call(Method::GET, &t.key, &p, None, None, Patience::DEFAULT)
                .await
                .ok()
                .and_then(|a| {
                    a.body.get("refunds")?.as_array()?.iter().find_map(|r| {
                        (r.get("id")?.as_str()? == refund_id)
                            .then(|| r.get("status")?.as_str().map(str::to_owned))?
                    })
                })
        }
    };
    if status.as_deref() == Some("reversed") {
        Counters::inc(&c.reversed);
    } else {
        Counters::inc(&c.refunds_other);
    }
    rec.refund_status = status;
}
