//! Swagger UI in a real headless Chromium (see [`crate::browser`]).
//!
//! `#[ignore]`d, since it needs Debian's `chromium` and `chromium-driver`: plain `cargo test` lists
//! it as ignored, and `.ci/run` installs both and runs it. Run without them, it fails.

use crate::browser::{Browser, Driver, processes_naming};
use crate::harness::Sandbox;
use serde_json::Value;
use std::time::{Duration, Instant};

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
        .type_into(
            ".auth-container input",
            kyc_gateway::devtools::sandbox::DEMO_API_KEY,
        )
        .await;
    browser.click(".auth-btn-wrapper button.authorize").await;
    browser.click(".auth-btn-wrapper button.btn-done").await;

    let create = "#operations-verifications-create_verification";
    browser.try_out(create).await;
    let filled = browser
        .value(&format!("{create} textarea.body-param__text"))
        .await;
    let filled: Value = serde_json::from_str(&filled).expect("Swagger UI fills in JSON");
    let spec = kyc_gateway::http::openapi::document();
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
