//! Group commit on SQLite: a create is answered only once its batch is durable, so `kill -9` in
//! the middle of a burst of concurrent creates loses none that was answered.

use crate::harness::*;
use reqwest::StatusCode;
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Callers creating at once, each one create after another until the gateway dies.
const CALLERS: usize = 32;

/// How many creates are answered before each kill: enough for many batches.
const ANSWERED_BEFORE_KILL: usize = 150;

/// Bursts, each ended by a kill: each kill lands at a moment of its own in some batch's life.
const ROUNDS: usize = 3;

#[tokio::test]
async fn kill_9_mid_burst_loses_no_answered_create_on_sqlite() {
    let mut w = World::start().await;
    w.create(person("warm", "sub-warm", "CL")).await;
    // (reference, id) of every create answered 201.
    let answered: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    for round in 0..ROUNDS {
        let run = format!("{}-{round}", ulid::Ulid::generate());
        let before = answered.lock().unwrap().len();
        let callers: Vec<_> = (0..CALLERS)
            .map(|caller| {
                let (http, base, answered) = (w.http.clone(), w.base.clone(), answered.clone());
                let run = run.clone();
                tokio::spawn(async move {
                    for n in 0.. {
                        let reference = format!("burst-{run}-{caller}-{n}");
                        let body = person(&reference, &format!("sub-{caller}-{n}"), "CL");
                        let sent = http
                            .post(format!("{base}/v1/verifications"))
                            .bearer_auth(ALPHA_KEY)
                            .json(&body)
                            .send()
                            .await;
                        // The gateway died: this caller's answer, if any, is lost with it.
                        let Ok(response) = sent else { return };
                        if response.status() != StatusCode::CREATED {
                            continue;
                        }
                        let Ok(v) = response.json::<Value>().await else {
                            return;
                        };
                        let id = v["id"].as_str().unwrap().to_owned();
                        answered.lock().unwrap().push((reference, id));
                    }
                })
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        while answered.lock().unwrap().len() < before + ANSWERED_BEFORE_KILL {
            assert!(Instant::now() < deadline, "the burst did not get going");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        w.kill_and_restart();
        for caller in callers {
            caller.await.unwrap();
        }
    }
    let answered = answered.lock().unwrap().clone();
    assert!(answered.len() >= ROUNDS * ANSWERED_BEFORE_KILL);
    for (reference, id) in &answered {
        let (status, v) = w.get(&format!("/v1/verifications/{id}"), ALPHA_KEY).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{id} was answered 201 before the kill and is gone"
        );
        assert_eq!(v["reference"], reference.as_str());
        let (_, history) = w
            .get(&format!("/v1/verifications/{id}/history"), ALPHA_KEY)
            .await;
        assert_eq!(history.as_array().map(Vec::len), Some(1), "{history}");
    }
}
