//! Starts the real `restaurant` binary as a child process and talks to it
//! over HTTP, as a till would.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub(crate) const KEY1: &str = "rk_demo_1";
pub(crate) const KEY2: &str = "rk_demo_2";
pub(crate) const OPERATOR: &str = "ok_demo_operator";

/// A running server process; killed on drop.
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) base: String,
    pub(crate) provider: Option<String>,
    pub(crate) dir: PathBuf,
    pub(crate) http: reqwest::Client,
    lines: mpsc::Receiver<String>,
}

pub(crate) fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "restaurant-{tag}-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Spawns the binary with `args` (plus a free port and a fresh data dir
/// unless given) and waits for it to listen (when it serves).
pub(crate) fn spawn(dir: &PathBuf, args: &[&str], envs: &[(&str, &str)], serves: bool) -> Server {
    spawn_until(
        dir,
        args,
        envs,
        if serves { Some("listening on ") } else { None },
    )
}

/// As [`spawn`], waiting for a stdout line starting with `wait_for`.
pub(crate) fn spawn_until(
    dir: &PathBuf,
    args: &[&str],
    envs: &[(&str, &str)],
    wait_for: Option<&str>,
) -> Server {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_restaurant"));
    cmd.args(["--log-format", "json", "--log", "warn"])
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("AMQP_URL")
        .env_remove("REDIS_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(
            std::fs::File::create(
                dir.join(format!("stderr-{}.log", uuid::Uuid::new_v4().simple())),
            )
            .unwrap(),
        ));
    for (k, v) in envs {
        cmd.env(k, v);
    }
    if !args.contains(&"--listen") {
        cmd.args(["--listen", "127.0.0.1:0"]);
    }
    let mut child = cmd.spawn().expect("start the restaurant binary");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut base = String::new();
    let mut provider = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while let Some(prefix) = wait_for {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .expect("the process printed its address");
        if let Some(a) = line.strip_prefix("listening on ") {
            base = a.trim().to_owned();
        }
        if let Some(a) = line.strip_prefix("provider simulator: ") {
            provider = Some(a.trim().to_owned());
        }
        if line.starts_with(prefix) {
            break;
        }
    }
    Server {
        child,
        base,
        provider,
        dir: dir.clone(),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(90))
            .build()
            .unwrap(),
        lines: rx,
    }
}

/// The embedded default on a fresh data dir.
pub(crate) fn embedded(tag: &str, extra: &[&str]) -> Server {
    let dir = temp_dir(tag);
    spawn(&dir, extra, &[], true)
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn order(restaurant: &str, printer: &str, amount: i64) -> Value {
    json!({
        "restaurant": restaurant,
        "order_ref": format!("T-{}", uuid::Uuid::new_v4().simple()),
        "amount": amount,
        "currency": "EUR",
        "method": "card",
        "printer": printer,
        "lines": [
            { "text": "Margherita", "quantity": 1000, "unit_price": amount - 300, "vat": "A" },
            { "text": "Water", "quantity": 2000, "unit_price": 150, "vat": "B" }
        ]
    })
}

impl Server {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub(crate) async fn post(
        &self,
        key: &str,
        path: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut req = self.http.post(self.url(path)).bearer_auth(key).json(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.json::<Value>().await.unwrap_or(Value::Null);
        (status, body)
    }

    pub(crate) async fn put(
        &self,
        key: &str,
        path: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut req = self.http.put(self.url(path)).bearer_auth(key).json(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json::<Value>().await.unwrap_or(Value::Null))
    }

    pub(crate) async fn get(&self, key: &str, path: &str) -> (u16, Value) {
        let resp = self
            .http
            .get(self.url(path))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json::<Value>().await.unwrap_or(Value::Null))
    }

    /// Takes a payment and waits for its final status.
    pub(crate) async fn pay(&self, key: &str, idem: &str, body: &Value) -> Value {
        let (status, p) = self
            .post(
                key,
                "/v1/payments",
                body,
                &[("idempotency-key", idem), ("prefer", "wait=20")],
            )
            .await;
        assert!(status == 200 || status == 202, "{status}: {p}");
        p
    }

    /// Polls a payment until `pred` holds (at most `secs`).
    pub(crate) async fn wait_payment(
        &self,
        key: &str,
        id: &str,
        secs: u64,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        self.wait_for(key, &format!("/v1/payments/{id}"), secs, pred)
            .await
    }

    /// Polls `GET path` until it answers 200 with a body `pred` holds for
    /// (at most `secs`).
    pub(crate) async fn wait_for(
        &self,
        key: &str,
        path: &str,
        secs: u64,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let (status, body) = self.get(key, path).await;
            assert_eq!(status, 200, "{body}");
            if pred(&body) {
                return body;
            }
            assert!(Instant::now() < deadline, "{path} never got there: {body}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The provider simulator's ledger.
    pub(crate) async fn ledger(&self) -> Vec<Value> {
        let url = format!(
            "{}/ledger",
            self.provider.as_ref().expect("a provider simulator")
        );
        self.http
            .get(url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Sets the provider simulator's faults.
    pub(crate) async fn provider_faults(&self, faults: &Value) {
        let url = format!(
            "{}/faults",
            self.provider.as_ref().expect("a provider simulator")
        );
        let r = self.http.put(url).json(faults).send().await.unwrap();
        assert!(r.status().is_success());
    }

    /// A simulated printer's electronic journal.
    pub(crate) async fn journal(&self, printer: &str) -> Vec<Value> {
        let (status, j) = self
            .get(
                OPERATOR,
                &format!("/v1/printers/{printer}/simulator/journal"),
            )
            .await;
        assert_eq!(status, 200, "{j}");
        j.as_array().unwrap().clone()
    }

    /// Sets a simulated printer's faults and waits until the agent applied them.
    pub(crate) async fn printer_faults(&self, printer: &str, faults: &Value) {
        let (status, body) = self
            .put(
                OPERATOR,
                &format!("/v1/printers/{printer}/simulator"),
                faults,
                &[("prefer", "wait=10")],
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }

    /// Sends SIGTERM and waits for the exit status.
    pub(crate) fn terminate(&mut self, within: Duration) -> Option<i32> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// A stdout line starting with `prefix`, if printed so far.
    pub(crate) fn stdout_line(&self, prefix: &str) -> Option<String> {
        self.lines.try_iter().find(|l| l.starts_with(prefix))
    }
}

/// Counts ledger operations of `kind` that were approved and refer to `reference`.
pub(crate) fn ledger_count(ledger: &[Value], kind: &str, reference: &str) -> usize {
    ledger
        .iter()
        .filter(|o| o["kind"] == kind && o["status"] == "approved" && o["reference"] == reference)
        .count()
}

/// Counts journal documents for `sale_key_prefix`.
pub(crate) fn journal_count(journal: &[Value], sale_key_prefix: &str) -> usize {
    journal
        .iter()
        .filter(|e| {
            e["sale_key"]
                .as_str()
                .is_some_and(|k| k.starts_with(sale_key_prefix))
        })
        .count()
}

/// A PostgreSQL URL for this test in its own fresh schema, or `None` (with
/// a message) when `TEST_POSTGRES_URL` is unset; with `CI=true` a missing
/// URL fails.
pub(crate) async fn postgres_schema(tag: &str) -> Option<String> {
    let Ok(url) = std::env::var("TEST_POSTGRES_URL") else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "TEST_POSTGRES_URL is required when CI=true"
        );
        eprintln!("skipping: TEST_POSTGRES_URL is not set");
        return None;
    };
    let schema = format!("restaurant_{tag}_{}", uuid::Uuid::new_v4().simple());
    let pool = sqlx::PgPool::connect(&url)
        .await
        .expect("connect to TEST_POSTGRES_URL");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let sep = if url.contains('?') { '&' } else { '?' };
    Some(format!("{url}{sep}options=-c%20search_path%3D{schema}"))
}
