//! Helpers shared by the integration tests: a webhook receiver on loopback.

#![allow(dead_code)]

use axum::{Router, body::Bytes, extract::State, http::HeaderMap, routing::post};
use std::time::Duration;
use tokio::{net::TcpListener, sync::mpsc};

/// One webhook as the receiver got it.
pub struct ReceivedWebhook {
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A loopback HTTP server that records every POST to `/hook`.
pub struct WebhookReceiver {
    pub url: String,
    received: mpsc::UnboundedReceiver<ReceivedWebhook>,
    task: tokio::task::JoinHandle<()>,
}

impl WebhookReceiver {
    pub async fn start() -> WebhookReceiver {
        let (tx, rx) = mpsc::unbounded_channel();
        let app = Router::new()
            .route(
                "/hook",
                post(
                    |State(tx): State<mpsc::UnboundedSender<ReceivedWebhook>>,
                     headers: HeaderMap,
                     body: Bytes| async move {
                        let _ = tx.send(ReceivedWebhook { headers, body });
                        "ok"
                    },
                ),
            )
            .with_state(tx);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        WebhookReceiver {
            url,
            received: rx,
            task,
        }
    }

    /// The next webhook; fails the test if none arrives within 5 s.
    pub async fn next(&mut self) -> ReceivedWebhook {
        tokio::time::timeout(Duration::from_secs(5), self.received.recv())
            .await
            .expect("a webhook within 5 s")
            .expect("receiver open")
    }

    /// Whether a webhook is already waiting (finish() returns after delivery, so no waiting).
    pub fn has_pending(&mut self) -> bool {
        !self.received.is_empty()
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A client with a generous timeout, so a broken sim fails the test instead of hanging it.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}
