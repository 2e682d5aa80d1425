//! The counter's dashboard in a real headless Chromium (driven over WebDriver by Debian's
//! chromedriver): while events flow, the page's table shows exactly the rows of alert-counts,
//! and it follows new alerts without a reload.

#![allow(clippy::unwrap_used)] // a test fails loudly on the first surprise

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use e2e::Pipeline;
use e2e::check::*;
use pipeline_core::rules::AlertRules;
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A chromedriver process and one headless Chromium session.
struct Browser {
    driver: Child,
    base: String,
    profile: std::path::PathBuf,
}

impl Browser {
    fn start() -> Self {
        for path in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                std::path::Path::new(path).exists(),
                "{path} is missing: install Debian's chromium and chromium-driver (scripts/test.sh does)"
            );
        }
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let profile = std::env::temp_dir().join(pipeline_testkit::unique("chromium-profile"));
        let mut browser = Self { driver, base: format!("http://127.0.0.1:{port}"), profile };
        let deadline = Instant::now() + Duration::from_secs(20);
        while http_get(&format!("{}/status", browser.base)).0 != 200 {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        // The flags this machine needs: no sandbox as root, and no background connections
        // (the network is loopback only).
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,900",
        ]
        .iter()
        .map(|a| (*a).to_owned())
        .chain([format!("--user-data-dir={}", browser.profile.display())])
        .collect::<Vec<_>>();
        let caps = json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {"binary": CHROMIUM, "args": args}}}});
        let session = browser.call("POST", "/session", &caps);
        let id = session["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {session}")).to_owned();
        browser.base = format!("{}/session/{id}", browser.base);
        browser
    }

    /// One WebDriver command; returns its `value`.
    fn call(&self, method: &str, path: &str, body: &Value) -> Value {
        let mut curl = Command::new("curl");
        curl.args(["-s", "-X", method]);
        if !body.is_null() {
            curl.args(["-H", "Content-Type: application/json", "--data-binary", &body.to_string()]);
        }
        let out = curl.arg(format!("{}{path}", self.base)).output().unwrap();
        let reply: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("webdriver {path}: {e}: {}", String::from_utf8_lossy(&out.stdout)));
        reply["value"].clone()
    }

    fn open(&self, url: &str) {
        self.call("POST", "/url", &json!({ "url": url }));
    }

    /// Runs `script` in the page and returns what it returns.
    fn eval(&self, script: &str) -> Value {
        self.call("POST", "/execute/sync", &json!({ "script": script, "args": [] }))
    }

    /// The page's window table: window start → row, numbers as the page shows them.
    fn table(&self) -> BTreeMap<String, Value> {
        let rows = self.eval(
            "return Array.from(document.querySelectorAll('#windows tbody tr')).map(tr => \
               [tr.dataset.windowStart, Object.fromEntries(Array.from(tr.cells).map(td => [td.dataset.col, td.textContent]))])",
        );
        rows.as_array().unwrap().iter().map(|r| (r[0].as_str().unwrap().to_owned(), r[1].clone())).collect()
    }

    fn screenshot(&self, path: &std::path::Path) {
        use base64::Engine as _;
        let png = self.call("GET", "/screenshot", &Value::Null);
        let bytes = base64::engine::general_purpose::STANDARD.decode(png.as_str().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = Command::new("curl").args(["-s", "-X", "DELETE", &self.base]).output();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// alert-counts rows as the page prints them (window bounds without milliseconds, numbers as text).
fn as_displayed(counts: &BTreeMap<String, Value>) -> BTreeMap<String, Value> {
    counts
        .iter()
        .map(|(key, row)| {
            let cells: serde_json::Map<String, Value> = row
                .as_object()
                .unwrap()
                .iter()
                .map(|(col, v)| {
                    // As JavaScript prints them: 150.0 is "150" there (Rust's f64 Display agrees).
                    let text = match v {
                        Value::String(s) => s.replace('T', " ").replace(".000Z", "Z"),
                        Value::Number(n) if n.is_f64() => n.as_f64().unwrap().to_string(),
                        other => other.to_string(),
                    };
                    (col.clone(), Value::String(text))
                })
                .collect();
            (key.clone(), Value::Object(cells))
        })
        .collect()
}

/// Polls the open page (no reload) until its table equals `want`.
fn await_table(browser: &Browser, want: &BTreeMap<String, Value>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = browser.table();
        if &got == want {
            return;
        }
        assert!(Instant::now() < deadline, "the page never showed alert-counts:\n got {got:#?}\nwant {want:#?}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[tokio::test]
async fn the_dashboard_shows_alert_counts_live() {
    pipeline_testkit::needs_stack!(Kafka, S3);
    let p = Pipeline::new(3, 919).await;
    let addr = format!("127.0.0.1:{}", free_port());
    let services = vec![p.enricher(&[]), p.detector(&[]), p.counter(&["--metrics-addr", &addr])];
    let browser = Browser::start();
    browser.open(&format!("http://{addr}/"));

    // Two bursts of events: the page, loaded once, must follow the second one by itself.
    let events = regenerate(&p, 31, 1_200, 9_000).await; // 3 hours: a dozen windows
    let join = p.join();
    let rules = AlertRules::default();
    let enriched: Vec<_> = events.iter().map(|e| join.enrich(e.clone()).0.into_owned()).collect();
    for (burst, upto) in [(1, 500), (2, events.len())] {
        let skip = if burst == 1 { 0 } else { 500 };
        let chunk: Vec<_> = events[skip..upto]
            .iter()
            .map(|e| (Some(e.car_id.to_string().into_bytes()), pipeline_core::schema::JsonEvent::encode(e)))
            .collect();
        e2e::produce_raw(&p.sensors, &chunk).await;
        let alerts: Vec<_> = enriched[..upto].iter().filter(|e| !rules.check_event(e).is_empty()).collect();
        let windows = expected_windows(&alerts);
        await_counts(&p.counts, &windows).await;
        let published = latest_counts(&p.counts).await;
        assert_eq!(published, windows);
        await_table(&browser, &as_displayed(&published));
        let counted = browser.eval("return document.getElementById('counted').textContent");
        assert_eq!(counted, Value::String(alerts.len().to_string()), "burst {burst}: the page's alert total");
    }
    if let Some(path) = std::env::var_os("DASHBOARD_SCREENSHOT") {
        browser.screenshot(std::path::Path::new(&path));
    }
    let headers = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
        .arg(format!("http://{addr}/api/windows"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&headers.stdout), "405", "the dashboard is read-only");
    stop_all(services);
}
