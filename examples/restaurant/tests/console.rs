//! The web console in headless Chromium, driven over the WebDriver protocol
//! (Debian's `chromium` and `chromium-driver`): start a test payment and see
//! it reach "fiscalized" live over the WebSocket.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

struct Driver {
    child: std::process::Child,
    base: String,
    http: reqwest::Client,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Session<'a> {
    d: &'a Driver,
    id: String,
}

impl Session<'_> {
    async fn cmd(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.d.base, self.id);
        let mut req = self.d.http.request(method, url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let v: Value = req.send().await.unwrap().json().await.unwrap();
        v["value"].clone()
    }

    async fn find(&self, css: &str) -> Option<String> {
        let v = self
            .cmd(
                reqwest::Method::POST,
                "/element",
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await;
        v[ELEMENT].as_str().map(str::to_owned)
    }

    async fn wait_for(&self, css: &str, secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(e) = self.find(css).await {
                return e;
            }
            assert!(Instant::now() < deadline, "{css} never appeared");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn text(&self, element: &str) -> String {
        let v = self
            .cmd(
                reqwest::Method::GET,
                &format!("/element/{element}/text"),
                None,
            )
            .await;
        v.as_str().unwrap_or_default().to_owned()
    }

    async fn click(&self, element: &str) {
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{element}/click"),
            Some(json!({})),
        )
        .await;
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn console_payment_reaches_fiscalized_in_headless_chromium() {
    if !Path::new(CHROMEDRIVER).exists() || !Path::new(CHROMIUM).exists() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "chromium and chromium-driver are required when CI=true (apt-get install chromium chromium-driver)"
        );
        eprintln!("skipping: chromium or chromedriver not installed");
        return;
    }
    let s = embedded("browser", &[]);
    let port = free_port();
    let profile = temp_dir("chromium-profile");
    let driver = Driver {
        child: Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
        base: format!("http://127.0.0.1:{port}"),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap(),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ready = driver
            .http
            .get(format!("{}/status", driver.base))
            .send()
            .await;
        if let Ok(r) = ready
            && let Ok(v) = r.json::<Value>().await
            && v["value"]["ready"] == true
        {
            break;
        }
        assert!(Instant::now() < deadline, "chromedriver did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let caps = json!({ "capabilities": { "alwaysMatch": {
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run",
                "--disable-dev-shm-usage",
                format!("--user-data-dir={}", profile.display()),
            ]
        }
    }}});
    let created: Value = driver
        .http
        .post(format!("{}/session", driver.base))
        .json(&caps)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["value"]["sessionId"]
        .as_str()
        .unwrap_or_else(|| panic!("no session: {created}"))
        .to_owned();
    let session = Session { d: &driver, id };

    session
        .cmd(
            reqwest::Method::POST,
            "/url",
            Some(json!({ "url": format!("{}/console#key={KEY1}", s.base) })),
        )
        .await;
    // Connected live, with the restaurant's printers loaded.
    session.wait_for("#pay-printer option", 20).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let conn = session.wait_for("#conn", 5).await;
        if session.text(&conn).await == "live" {
            break;
        }
        assert!(Instant::now() < deadline, "the console never went live");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let submit = session.wait_for("#pay-submit", 5).await;
    session.click(&submit).await;
    let id_el = session.wait_for("#last-payment-id", 20).await;
    let payment = session.text(&id_el).await;
    assert!(!payment.is_empty());
    // The row's status follows the saga live until "fiscalized".
    let css = format!("#payment-{payment} td.status");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(cell) = session.find(&css).await
            && session.text(&cell).await == "fiscalized"
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the console never showed the payment fiscalized"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The journey shows the receipt step.
    let journey = session.wait_for("#journey-steps", 5).await;
    assert!(session.text(&journey).await.contains("receipt.printed"));
    // And the server agrees.
    let (_, p) = s.get(KEY1, &format!("/v1/payments/{payment}")).await;
    assert_eq!(p["status"], "fiscalized");
    session.cmd(reqwest::Method::DELETE, "", None).await;
}
