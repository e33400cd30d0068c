//! A real headless Chromium, driven through chromedriver's WebDriver HTTP API, for the tests of
//! the pages the gateway serves (Swagger UI, the dashboard).
//!
//! Those tests are `#[ignore]`d, since they need Debian's `chromium` and `chromium-driver`: plain
//! `cargo test` lists them as ignored, and `.ci/run` installs both and runs them. Run without
//! them, they fail.

use serde_json::{Value, json};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// chromedriver and its Chromium session, with a throwaway profile; both are stopped, and the
/// profile removed, when it is dropped.
pub struct Driver {
    child: Child,
    url: String,
    http: reqwest::Client,
    pub profile: tempfile::TempDir,
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
pub fn processes_naming(needle: &str) -> Vec<u32> {
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
    pub async fn start() -> Driver {
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
                    "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args},
                    // The console's messages, for `Browser::console`.
                    "goog:loggingPrefs": {"browser": "ALL"}
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
    pub fn shut_down(&mut self) {
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

/// A page in the driven browser.
pub struct Browser {
    pub driver: Driver,
}

impl Browser {
    fn path(&self, rest: &str) -> String {
        let session = self.driver.session.as_deref().expect("a live session");
        format!("/session/{session}{rest}")
    }

    pub async fn open(&self, url: &str) {
        self.driver
            .send(
                reqwest::Method::POST,
                &self.path("/url"),
                Some(json!({"url": url})),
            )
            .await;
    }

    /// Waits for an element to appear; returns its WebDriver id.
    pub async fn find(&self, css: &str) -> String {
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
            assert!(Instant::now() < deadline, "no element {css:?} on the page");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.driver
            .send(
                reqwest::Method::POST,
                &self.path(&format!("/element/{id}/click")),
                Some(json!({})),
            )
            .await;
    }

    pub async fn type_into(&self, css: &str, text: &str) {
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
    pub async fn value(&self, css: &str) -> String {
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

    pub async fn text(&self, css: &str) -> String {
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

    /// An attribute of the element (waited for) that `css` selects; `None` when it has none.
    pub async fn attribute(&self, css: &str, name: &str) -> Option<String> {
        let id = self.find(css).await;
        let value = self
            .driver
            .send(
                reqwest::Method::GET,
                &self.path(&format!("/element/{id}/attribute/{name}")),
                None,
            )
            .await;
        value.as_str().map(str::to_string)
    }

    /// Whether the element (waited for) that `css` selects is shown.
    pub async fn displayed(&self, css: &str) -> bool {
        let id = self.find(css).await;
        let value = self
            .driver
            .send(
                reqwest::Method::GET,
                &self.path(&format!("/element/{id}/displayed")),
                None,
            )
            .await;
        value.as_bool().expect("a boolean")
    }

    /// Runs `script` (a function body; `return` answers) in the page; returns what it answers.
    pub async fn execute(&self, script: &str) -> Value {
        self.driver
            .send(
                reqwest::Method::POST,
                &self.path("/execute/sync"),
                Some(json!({"script": script, "args": []})),
            )
            .await
    }

    /// The page's address now.
    pub async fn url(&self) -> String {
        let value = self
            .driver
            .send(reqwest::Method::GET, &self.path("/url"), None)
            .await;
        value.as_str().expect("a URL").to_string()
    }

    /// Sets the window's size, in CSS pixels.
    pub async fn resize(&self, width: u32, height: u32) {
        self.driver
            .send(
                reqwest::Method::POST,
                &self.path("/window/rect"),
                Some(json!({"width": width, "height": height})),
            )
            .await;
    }

    /// The browser console's entries since the last call (`level`, `message`, `source`, ...),
    /// through chromedriver's log API (`goog:loggingPrefs` in the session's capabilities).
    pub async fn console(&self) -> Vec<Value> {
        let entries = self
            .driver
            .send(
                reqwest::Method::POST,
                &self.path("/se/log"),
                Some(json!({"type": "browser"})),
            )
            .await;
        entries.as_array().expect("log entries").clone()
    }

    /// A PNG of the window.
    pub async fn screenshot(&self) -> Vec<u8> {
        use base64::Engine;
        let value = self
            .driver
            .send(reqwest::Method::GET, &self.path("/screenshot"), None)
            .await;
        base64::engine::general_purpose::STANDARD
            .decode(value.as_str().expect("a base64 PNG"))
            .expect("valid base64")
    }
}
