//! The production shape: PostgreSQL for all state, RabbitMQ for messages,
//! Redis for idempotency keys, separate `serve`,
//! `saga` (two of them), `relay` and per-restaurant `agent` processes of the
//! real binary, and one provider simulator process. A saga process is
//! killed with SIGKILL mid-run and an agent is restarted; every payment
//! still ends as exactly one capture and one receipt.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::collections::{HashMap, HashSet};

use common::*;
use serde_json::{Value, json};

#[tokio::test]
async fn separate_roles_on_postgres_finish_every_payment_exactly_once() {
    let Some(db) = postgres_schema("prod").await else {
        return;
    };
    let Ok(amqp) = std::env::var("TEST_AMQP_URL") else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "TEST_AMQP_URL is required when CI=true"
        );
        eprintln!("skipping: TEST_AMQP_URL is not set");
        return;
    };
    // A fresh prefix: this run's exchanges and queues are its own.
    let prefix = format!("restaurant-test-{}", uuid::Uuid::new_v4().simple());
    let dir = temp_dir("prod");
    let env = [
        ("DATABASE_URL", db.as_str()),
        ("AMQP_URL", amqp.as_str()),
        ("AMQP_PREFIX", prefix.as_str()),
    ];
    let sim = spawn_until(
        &dir,
        &["--role", "simulator"],
        &[],
        Some("provider simulator: "),
    );
    let provider = sim.provider.clone().unwrap();
    // Idempotency keys in Redis when it is there (a fresh prefix per run).
    let redis = std::env::var("TEST_REDIS_URL").ok();
    let redis_prefix = format!("restaurant-test:{}:", uuid::Uuid::new_v4().simple());
    let mut serve_env = env.to_vec();
    if let Some(url) = &redis {
        serve_env.push(("REDIS_URL", url.as_str()));
        serve_env.push(("REDIS_PREFIX", redis_prefix.as_str()));
    } else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "TEST_REDIS_URL is required when CI=true"
        );
        eprintln!("TEST_REDIS_URL not set: idempotency keys in PostgreSQL");
    }
    let serve = spawn(&dir, &["--role", "serve"], &serve_env, true);
    let saga_args = [
        "--role",
        "saga",
        "--provider-url",
        provider.as_str(),
        "--provider-timeout",
        "1s",
    ];
    let mut saga1 = spawn(&dir, &saga_args, &env, false);
    let _saga2 = spawn(&dir, &saga_args, &env, false);
    // The relay starts while its database is out of reach: it waits for it
    // instead of exiting, and works once it is back.
    let db_line = Line::to(&db);
    db_line.set_up(false);
    let relay_env = [
        ("DATABASE_URL", db_line.url.as_str()),
        ("AMQP_URL", amqp.as_str()),
        ("AMQP_PREFIX", prefix.as_str()),
    ];
    let mut relay = spawn(&dir, &["--role", "relay"], &relay_env, false);
    wait_for_log(&dir, "database not reachable yet").await;
    assert!(
        relay.child.try_wait().unwrap().is_none(),
        "the relay exited without its database"
    );
    db_line.set_up(true);
    let agent_db = |r: &str| format!("sqlite://{}/agent-{r}.sqlite", dir.display());
    let (a1, a2) = (agent_db("demo-1"), agent_db("demo-2"));
    let (a1, a2) = (a1.as_str(), a2.as_str());
    // demo-1's agent reaches the broker through the shop's line, which the
    // test can cut.
    let line = Line::to(&amqp);
    let agent1_env = [
        ("DATABASE_URL", db.as_str()),
        ("AMQP_URL", line.url.as_str()),
        ("AMQP_PREFIX", prefix.as_str()),
    ];
    let mut agent1 = spawn(&dir, &agent_args("demo-1", a1), &agent1_env, false);
    let _agent2 = spawn(&dir, &agent_args("demo-2", a2), &env, false);

    // Payments from both restaurants, each sent twice with the same key.
    let mut ids = HashMap::new();
    for i in 0..24 {
        let (key, r) = if i % 2 == 0 {
            (KEY1, "demo-1")
        } else {
            (KEY2, "demo-2")
        };
        let printer = format!("{r}-p{}", 1 + i % 4 / 2);
        let body = order(r, &printer, 1000 + i * 10);
        let idem = format!("prod-{i}");
        let (s1, p1) = serve
            .post(key, "/v1/payments", &body, &[("idempotency-key", &idem)])
            .await;
        let (s2, p2) = serve
            .post(key, "/v1/payments", &body, &[("idempotency-key", &idem)])
            .await;
        assert!(s1 == 202 || s1 == 200, "{s1}: {p1}");
        assert!(s2 == 200 || s2 == 202, "{p2}");
        assert_eq!(p1["id"], p2["id"]);
        ids.insert(p1["id"].as_str().unwrap().to_owned(), key);
        if i == 8 {
            // A saga worker dies mid-run; its leases lapse and the other
            // worker takes over.
            saga1.child.kill().unwrap();
            saga1.child.wait().unwrap();
        }
        if i == 14 {
            // The on-site agent of demo-1 restarts while the shop's line
            // is down: it starts anyway, and consumes once the line is back.
            agent1.child.kill().unwrap();
            agent1.child.wait().unwrap();
            line.set_up(false);
            agent1 = spawn(&dir, &agent_args("demo-1", a1), &agent1_env, false);
            wait_for_log(&dir, "broker out of reach").await;
            assert!(
                agent1.child.try_wait().unwrap().is_none(),
                "the agent exited without its broker"
            );
            line.set_up(true);
        }
    }
    for (id, key) in &ids {
        let p = serve
            .wait_payment(key, id, 90, |p| p["status"] == "fiscalized")
            .await;
        assert!(p["receipt"]["number"].as_u64().unwrap() > 0);
    }
    // A refund ends in a reversal receipt.
    let (first, key) = ids.iter().next().unwrap();
    let (_, p) = serve.get(key, &format!("/v1/payments/{first}")).await;
    let (status, refund) = serve
        .post(
            key,
            &format!("/v1/payments/{first}/refunds"),
            &json!({ "amount": p["amount"], "reason": "prod test" }),
            &[("idempotency-key", "prod-refund")],
        )
        .await;
    assert_eq!(status, 202, "{refund}");
    serve
        .wait_payment(key, first, 60, |p| p["refunds"][0]["status"] == "reversed")
        .await;

    // The provider's ledger: one authorization and one capture per payment.
    let ledger: Vec<Value> = serve
        .http
        .get(format!("{provider}/ledger"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for id in ids.keys() {
        assert_eq!(ledger_count(&ledger, "authorize", id), 1, "{id}");
        assert_eq!(ledger_count(&ledger, "capture", id), 1, "{id}");
    }
    // Receipt numbers are unique per printer: nothing printed twice.
    let mut seen = HashSet::new();
    for (id, key) in &ids {
        let (_, p) = serve.get(key, &format!("/v1/payments/{id}")).await;
        let r = &p["receipt"];
        assert!(
            seen.insert((
                r["printer"].as_str().unwrap().to_owned(),
                r["number"].as_u64().unwrap()
            )),
            "{p}"
        );
    }
    // The agents' journals hold exactly one printed outcome per sale key.
    for url in [a1, a2] {
        let pool = sqlx::SqlitePool::connect(url).await.unwrap();
        let rows: Vec<(String, Option<String>)> =
            sqlx::query_as("SELECT sale_key, outcome FROM agent_journal")
                .fetch_all(&pool)
                .await
                .unwrap();
        for (key, outcome) in rows {
            let o: Value = serde_json::from_str(outcome.as_deref().unwrap_or("null")).unwrap();
            assert_eq!(o["result"], "printed", "{key}: {o}");
        }
        pool.close().await;
    }
    // Tenant isolation holds across processes too.
    let (id1, _) = ids.iter().find(|(_, k)| **k == KEY1).unwrap();
    assert_eq!(serve.get(KEY2, &format!("/v1/payments/{id1}")).await.0, 404);
    late_reports_change_nothing(&serve, &db, &amqp, &prefix, id1).await;
    drop(agent1);
    delete_topology(&amqp, &prefix).await;
}

#[tokio::test]
async fn a_role_gives_up_on_its_database_after_the_startup_wait_and_at_once_on_a_refused_login() {
    let run = async |url: &str, wait: &str| {
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_restaurant"))
            .args([
                "--role",
                "relay",
                "--log-format",
                "text",
                "--startup-wait",
                wait,
            ])
            .args(["--database-url", url])
            .args(["--amqp-url", "amqp://guest:guest@127.0.0.1:1/%2f"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        // Bounds a wrong retry loop: the right behaviour ends in about a second.
        let out =
            tokio::time::timeout(std::time::Duration::from_secs(60), child.wait_with_output())
                .await
                .unwrap_or_else(|_| panic!("the relay is still waiting for {url}"))
                .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // Nothing listens: it waits, says so, then gives up with the cause.
    let err = run("postgres://postgres@127.0.0.1:1/test", "1s").await;
    assert!(err.contains("database not reachable yet"), "{err}");
    assert!(err.contains("cannot open the database"), "{err}");
    assert!(err.contains("refused"), "{err}");
    // A running server refuses the login: no waiting, however long allowed.
    let Some(db) = std::env::var("TEST_POSTGRES_URL").ok() else {
        assert!(std::env::var("CI").as_deref() != Ok("true"));
        return;
    };
    let rest = db.split_once("://").map_or(db.as_str(), |(_, r)| r);
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let bad = format!("postgres://no_such_role@{host}");
    let err = run(&bad, "10m").await;
    assert!(!err.contains("database not reachable yet"), "{err}");
    assert!(err.contains("no_such_role"), "{err}");
}

/// A TCP line to a service (the broker, the database) that can be cut:
/// while down, connections are accepted and dropped at once.
struct Line {
    url: String,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Line {
    /// A line to the service at `url` (`scheme://user:pass@host:port/…`);
    /// its own `url` goes through the line.
    fn to(service: &str) -> Line {
        use std::sync::atomic::Ordering;
        let after_at = service.rsplit_once('@').map_or(service, |(_, h)| h);
        let target = after_at.split('/').next().unwrap().to_owned();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let url = service.replacen(&target, &addr.to_string(), 1);
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let flag = up.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                listener.set_nonblocking(true).unwrap();
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let Ok((mut inbound, _)) = listener.accept().await else {
                        continue;
                    };
                    if !flag.load(Ordering::SeqCst) {
                        drop(inbound);
                        continue;
                    }
                    let target = target.clone();
                    tokio::spawn(async move {
                        if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                }
            });
        });
        Line { url, up }
    }

    fn set_up(&self, up: bool) {
        self.up.store(up, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Waits until a process's log under `dir` contains `needle`.
async fn wait_for_log(dir: &std::path::Path, needle: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let name = entry.file_name();
            if name.to_string_lossy().starts_with("stderr-")
                && std::fs::read_to_string(entry.path()).is_ok_and(|t| t.contains(needle))
            {
                return;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no process logged {needle:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Deletes this run's queues and exchanges.
/// Reports for a job already recorded, each one sent twice as RabbitMQ
/// can redeliver it: a later "unknown" and a later "not printed" for a
/// receipt that printed. The consumer takes them (inbox rows), and the
/// payment keeps its receipt: no park, no second outcome in its journey,
/// its saga still completed.
async fn late_reports_change_nothing(
    serve: &Server,
    db: &str,
    amqp: &str,
    prefix: &str,
    payment: &str,
) {
    use counterfoil_outbox::{AmqpPublisher, Destination, OutboxMessage, Publisher};
    let path = format!("/v1/payments/{payment}");
    let (_, before) = serve.get(KEY1, &path).await;
    let printed = |p: &Value| {
        p["journey"]
            .as_array()
            .unwrap()
            .iter()
            // Outcomes of the sale's receipt jobs (a refund's reversal is
            // in the journey too).
            .filter(|e| {
                e["kind"]
                    .as_str()
                    .is_some_and(|k| k.starts_with("receipt."))
                    && e["detail"]["kind"] == "receipt"
            })
            .cloned()
            .collect::<Vec<_>>()
    };
    let outcomes = printed(&before);
    assert_eq!(outcomes.len(), 1, "{before}");
    assert_eq!(outcomes[0]["kind"], "receipt.printed");
    let job = outcomes[0]["detail"]["job"].as_str().unwrap().to_owned();
    let printer = before["receipt"]["printer"].as_str().unwrap().to_owned();
    let publisher = AmqpPublisher::builder(amqp).build().unwrap();
    let dest = Destination::new(format!("{prefix}.results"), format!("outcome.{printer}"));
    let mut ids = Vec::new();
    for outcome in [
        json!({ "result": "unknown", "detail": "late report" }),
        json!({ "result": "not_printed", "detail": "late report" }),
    ] {
        let body = json!({ "type": "outcome", "key": job, "outcome": outcome });
        let msg = OutboxMessage::json(dest.clone(), &body).unwrap();
        ids.push(msg.id.to_string());
        let sent = publisher.publish(&[msg.clone(), msg]).await;
        assert!(sent.iter().all(Result::is_ok), "{sent:?}");
    }
    let pool = sqlx::PgPool::connect(db).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM inbox_messages \
             WHERE consumer = 'restaurant-results' AND message_id::text = ANY($1)",
        )
        .bind(&ids)
        .fetch_one(&pool)
        .await
        .unwrap();
        if n == 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the late reports were never consumed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (state,): (String,) = sqlx::query_as("SELECT status FROM saga_instances WHERE id = $1")
        .bind(before["saga_id"].as_str().unwrap())
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    assert_eq!(state, "completed");
    let (_, after) = serve.get(KEY1, &path).await;
    assert_eq!(after["status"], "fiscalized", "{after}");
    assert_eq!(after["receipt"], before["receipt"]);
    assert_eq!(printed(&after), outcomes, "{after}");
}

async fn delete_topology(amqp: &str, prefix: &str) {
    use counterfoil_outbox::{
        AmqpConsumer, HandlerError, IncomingMessage, QueueTopology, handler_fn,
    };
    let noop = std::sync::Arc::new(handler_fn(|_m: IncomingMessage| async {
        Ok::<(), HandlerError>(())
    }));
    let queues = [
        QueueTopology::new(format!("{prefix}.print.demo-1"))
            .bind(format!("{prefix}.print"), "demo-1.*"),
        QueueTopology::new(format!("{prefix}.print.demo-2"))
            .bind(format!("{prefix}.print"), "demo-2.*"),
        QueueTopology::new(format!("{prefix}.results")).bind(format!("{prefix}.results"), "#"),
    ];
    for (i, t) in queues.into_iter().enumerate() {
        let c = AmqpConsumer::builder(amqp, t, noop.clone())
            .build()
            .unwrap();
        if let Err(e) = c.delete_topology(i == 2).await {
            eprintln!("could not delete the test topology: {e}");
        }
    }
}

fn agent_args<'a>(restaurant: &'a str, journal: &'a str) -> [&'a str; 6] {
    [
        "--role",
        "agent",
        "--agent-restaurant",
        restaurant,
        "--agent-database-url",
        journal,
    ]
}
