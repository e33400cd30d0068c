//! Swagger UI in a real headless Chromium, driven through chromedriver's WebDriver HTTP API.
//!
//! `#[ignore]`d, since it needs Debian's `chromium` and `chromium-driver`: plain `cargo test` lists
//! it as ignored, and `.ci/run` installs both and runs it. Run without them, it fails.

use crate::harness::Sandbox;
use serde_json::{Value, json};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

struct Driver {
    child: Child,
    url: String,
    http: reqwest::Client,
    profile: tempfile::TempDir,
    session: Option<String>,
}

fn installed(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The processes whose command line names `needle` (a browser started with our profile).
fn processes_naming(needle: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
        })
        .collect()
}

impl Driver {
    async fn start() -> Driver {
        assert!(
            installed("chromedriver") && installed("chromium"),
            "this test needs Debian's chromium and chromium-driver (.ci/run installs them)"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let profile = tempfile::tempdir().unwrap();
        let tmp = profile.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        // Its own process group, and its temporary files inside the profile directory, so that
        // shutting down leaves neither a process nor a file behind.
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .env("TMPDIR", &tmp)
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
            profile,
            session: None,
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
            &format!(
                "--user-data-dir={}",
                driver.profile.path().join("chromium").display()
            ),
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
        driver.session = Some(id);
        driver
    }

    /// Ends the browser session (Chromium quits), then chromedriver's whole process group, then
    /// any process still naming the profile. Safe to call twice.
    fn shut_down(&mut self) {
        if let Some(session) = self.session.take() {
            let address = self.url.trim_start_matches("http://").to_string();
            if let Ok(mut stream) = std::net::TcpStream::connect(&address) {
                use std::io::{Read, Write};
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                let _ = write!(
                    stream,
                    "DELETE /session/{session} HTTP/1.1\r\nHost: {address}\r\n\
                     Content-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let _ = stream.read_to_end(&mut Vec::new());
            }
        }
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
        for pid in processes_naming(&self.profile.path().display().to_string()) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
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

impl Drop for Driver {
    fn drop(&mut self) {
        self.shut_down();
    }
}

struct Browser {
    driver: Driver,
}

impl Browser {
    fn path(&self, rest: &str) -> String {
        let session = self.driver.session.as_deref().expect("a live session");
        format!("/session/{session}{rest}")
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

    /// The current value of a form field.
    async fn value(&self, css: &str) -> String {
        let id = self.find(css).await;
        let value = self
            .driver
            .send(
                reqwest::Method::GET,
                &self.path(&format!("/element/{id}/property/value")),
                None,
            )
            .await;
        value.as_str().unwrap_or_default().to_string()
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

impl Browser {
    /// Waits until the operation's live response shows a status; returns it and the body text.
    async fn response_of(&self, op: &str) -> (String, String) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let status = self
                .text(&format!(
                    "{op} .live-responses-table tbody .response-col_status"
                ))
                .await;
            if !status.trim().is_empty() {
                let body = self
                    .text(&format!(
                        "{op} .live-responses-table tbody .response-col_description pre"
                    ))
                    .await;
                return (status.trim().to_string(), body);
            }
            assert!(Instant::now() < deadline, "no response in Swagger UI");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Expands an operation and presses "Try it out".
    async fn try_out(&self, op: &str) {
        self.click(&format!("{op} .opblock-summary")).await;
        self.click(&format!("{op} .try-out__btn")).await;
    }
}

/// A newcomer's first minute, against the real sandbox: Authorize with the printed key, "Try it
/// out" on create and Execute the body Swagger UI fills in from the spec's example, unchanged: 201.
/// Then read it back the same way. Afterwards no Chromium process or profile is left.
#[tokio::test]
#[ignore = "needs chromium and chromedriver; .ci/run installs them and runs it"]
async fn swagger_ui_executes_the_default_create_example_and_reads_it_back() {
    let driver = Driver::start().await;
    let profile = driver.profile.path().to_path_buf();
    let browser = Browser { driver };
    let sandbox = Sandbox::start();
    browser.open(&format!("{}/docs/", sandbox.base)).await;

    browser.click("button.authorize").await;
    browser
        .type_into(".auth-container input", kyc_gateway::sandbox::DEMO_API_KEY)
        .await;
    browser.click(".auth-btn-wrapper button.authorize").await;
    browser.click(".auth-btn-wrapper button.btn-done").await;

    let create = "#operations-verifications-create_verification";
    browser.try_out(create).await;
    let filled = browser
        .value(&format!("{create} textarea.body-param__text"))
        .await;
    let filled: Value = serde_json::from_str(&filled).expect("Swagger UI fills in JSON");
    let spec = kyc_gateway::openapi::document();
    assert_eq!(
        filled, spec["components"]["schemas"]["CreateVerification"]["example"],
        "Swagger UI fills in the spec's example"
    );
    browser.click(&format!("{create} .execute")).await;
    let (status, body) = browser.response_of(create).await;
    assert_eq!(status, "201", "{body}\n{}", sandbox.log());
    let created: Value = serde_json::from_str(&body).unwrap();
    let id = created["id"].as_str().expect("an id").to_string();

    let read = "#operations-verifications-get_verification";
    browser.try_out(read).await;
    browser
        .type_into(&format!("{read} tr[data-param-name=\"id\"] input"), &id)
        .await;
    browser.click(&format!("{read} .execute")).await;
    let (status, body) = browser.response_of(read).await;
    assert_eq!(status, "200", "{body}");
    let read_back: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(read_back, created);
    assert_eq!(read_back["reference"], filled["reference"]);

    let Browser { mut driver } = browser;
    driver.shut_down();
    let leftovers = processes_naming(&profile.display().to_string());
    assert!(leftovers.is_empty(), "Chromium left running: {leftovers:?}");
    drop(driver);
    assert!(!profile.exists(), "the browser profile is removed");
}
