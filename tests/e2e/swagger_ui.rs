//! Swagger UI in a real headless Chromium, driven through chromedriver's WebDriver HTTP API:
//! open /docs, Authorize with a tenant key, "Try it out" on create, Execute, and find the
//! verification in the gateway.
//!
//! Runs when `chromedriver` and `chromium` are installed; CI sets `KYC_TEST_BROWSER=required` (and
//! installs them) so that a missing browser fails there instead of skipping.

use crate::harness::{ALPHA_KEY, World};
use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

struct Driver {
    child: Child,
    url: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn installed(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Driver {
    async fn start() -> Option<(Driver, String)> {
        if !installed("chromedriver") || !installed("chromium") {
            assert!(
                std::env::var("KYC_TEST_BROWSER").as_deref() != Ok("required"),
                "KYC_TEST_BROWSER=required but chromium/chromedriver are not installed"
            );
            eprintln!("chromium or chromedriver missing: Swagger UI browser test skipped");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let profile = tempfile::tempdir().unwrap();
        let driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
            _profile: profile,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while driver
            .http
            .get(format!("{}/status", driver.url))
            .send()
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            &format!("--user-data-dir={}", driver._profile.path().display()),
        ];
        let session = driver
            .send(
                reqwest::Method::POST,
                "/session",
                Some(json!({"capabilities": {"alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args}
                }}})),
            )
            .await;
        let id = session["sessionId"]
            .as_str()
            .expect("a session")
            .to_string();
        Some((driver, id))
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", self.url));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request.send().await.unwrap().json().await.unwrap();
        answer["value"].clone()
    }
}

struct Browser {
    driver: Driver,
    session: String,
}

impl Browser {
    fn path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    async fn open(&self, url: &str) {
        self.driver
            .send(
                reqwest::Method::POST,
                &self.path("/url"),
                Some(json!({"url": url})),
            )
            .await;
    }

    /// Waits for an element to appear; returns its WebDriver id.
    async fn find(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let found = self
                .driver
                .send(
                    reqwest::Method::POST,
                    &self.path("/element"),
                    Some(json!({"using": "css selector", "value": css})),
                )
                .await;
            if let Some(id) = found[ELEMENT].as_str() {
                return id.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no element {css:?} in Swagger UI"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.driver
            .send(
                reqwest::Method::POST,
                &self.path(&format!("/element/{id}/click")),
                Some(json!({})),
            )
            .await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.driver
            .send(
                reqwest::Method::POST,
                &self.path(&format!("/element/{id}/clear")),
                Some(json!({})),
            )
            .await;
        self.driver
            .send(
                reqwest::Method::POST,
                &self.path(&format!("/element/{id}/value")),
                Some(json!({"text": text})),
            )
            .await;
    }

    async fn text(&self, css: &str) -> String {
        let id = self.find(css).await;
        let value = self
            .driver
            .send(
                reqwest::Method::GET,
                &self.path(&format!("/element/{id}/text")),
                None,
            )
            .await;
        value.as_str().unwrap_or_default().to_string()
    }
}

#[tokio::test]
async fn swagger_ui_authorize_then_try_it_out_creates_a_verification() {
    let Some((driver, session)) = Driver::start().await else {
        return;
    };
    let browser = Browser { driver, session };
    let w = World::start().await;
    browser.open(&format!("{}/docs/", w.base)).await;

    browser.click("button.authorize").await;
    browser.type_into(".auth-container input", ALPHA_KEY).await;
    browser.click(".auth-btn-wrapper button.authorize").await;
    browser.click(".auth-btn-wrapper button.btn-done").await;

    let op = "#operations-verifications-create_verification";
    browser.click(&format!("{op} .opblock-summary")).await;
    browser.click(&format!("{op} .try-out__btn")).await;
    let body = json!({
        "reference": "from-swagger-ui",
        "subject": {"id": "swagger-person", "country": "CL"}
    });
    browser
        .type_into(
            &format!("{op} textarea.body-param__text"),
            &body.to_string(),
        )
        .await;
    browser.click(&format!("{op} .execute")).await;

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = browser
            .text(&format!(
                "{op} .live-responses-table tbody .response-col_status"
            ))
            .await;
        if status.contains("201") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Swagger UI showed status {status:?}, not 201"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, page) = w
        .get("/v1/verifications?reference=from-swagger-ui", ALPHA_KEY)
        .await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1, "{page}");
    assert_eq!(page["items"][0]["subject_id"], "swagger-person");
}
