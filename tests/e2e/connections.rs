//! Connection limits as a flooding client meets them: slow and idle connections are closed within
//! the `[server]` timeouts while `/healthz` keeps answering, connections past the cap are refused
//! with a problem, and a request not answered in time is a 503.

use crate::harness::*;
use kyc_sandbox::{Fault, FaultRule};
use reqwest::StatusCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The header-read and body timeouts of these tests.
const TIMEOUT: Duration = Duration::from_millis(3000);

fn limits(extra: &[&str]) -> Options {
    Options {
        server_extra: [
            format!("header_read_timeout_ms = {}", TIMEOUT.as_millis()),
            format!("request_body_timeout_ms = {}", TIMEOUT.as_millis()),
        ]
        .into_iter()
        .chain(extra.iter().map(|s| s.to_string()))
        .collect(),
        ..Default::default()
    }
}

/// How a flooding connection behaves.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Behaviour {
    /// Connects and sends nothing.
    Silent,
    /// Sends one request, reads the answer, then stays connected without a word.
    IdleAfterOneRequest,
    /// Sends a request head a header line at a time, never finishing it.
    SlowHead,
    /// Sends a whole head announcing a body, then the body a byte at a time.
    SlowBody,
}

/// What the server did to a flooding connection: when it closed it (since the connection was
/// opened, or since it went idle) and what it sent.
struct Closed {
    behaviour: Behaviour,
    after: Duration,
    received: String,
}

/// Reads until the server closes the connection, writing `drip` every 250 ms meanwhile; gives up
/// after 20 s.
async fn until_closed(stream: &mut TcpStream, drip: Option<&[u8]>, what: &str) -> String {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let give_up = Instant::now() + Duration::from_secs(20);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.tick().await;
    loop {
        tokio::select! {
            read = stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            },
            _ = tick.tick() => {
                assert!(
                    Instant::now() < give_up,
                    "the server never closed a {what} connection; it sent {:?}",
                    String::from_utf8_lossy(&received)
                );
                if let Some(drip) = drip {
                    // A write error means the server is gone: the next read tells.
                    let _ = stream.write_all(drip).await;
                }
            }
        }
    }
    String::from_utf8_lossy(&received).into_owned()
}

async fn flood_one(addr: String, behaviour: Behaviour, ready: Arc<AtomicUsize>) -> Closed {
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    let mut started = Instant::now();
    let (drip, mut received): (Option<&[u8]>, String) = match behaviour {
        Behaviour::Silent => (None, String::new()),
        Behaviour::IdleAfterOneRequest => {
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n")
                .await
                .unwrap();
            let mut buf = [0u8; 1024];
            let n = stream.read(&mut buf).await.unwrap();
            let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
            // Idle from here: the header timer of the next request runs.
            started = Instant::now();
            (None, String::new())
        }
        Behaviour::SlowHead => {
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n")
                .await
                .unwrap();
            (Some(b"X-Slow: y\r\n".as_slice()), String::new())
        }
        Behaviour::SlowBody => {
            let head = format!(
                "POST /v1/verifications HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {ALPHA_KEY}\r\n\
                 Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n{{"
            );
            stream.write_all(head.as_bytes()).await.unwrap();
            (Some(b" ".as_slice()), String::new())
        }
    };
    ready.fetch_add(1, Ordering::SeqCst);
    received.push_str(&until_closed(&mut stream, drip, &format!("{behaviour:?}")).await);
    Closed {
        behaviour,
        after: started.elapsed(),
        received,
    }
}

#[tokio::test]
async fn two_thousand_slow_or_idle_connections_are_closed_within_the_timeouts() {
    // This process holds 2,000 sockets too.
    rlimit::increase_nofile_limit(8192).unwrap();
    let w = World::start_with(limits(&[])).await;
    let addr = w.base.trim_start_matches("http://").to_string();
    let behaviours = [
        Behaviour::Silent,
        Behaviour::IdleAfterOneRequest,
        Behaviour::SlowHead,
        Behaviour::SlowBody,
    ];
    let mut flood = tokio::task::JoinSet::new();
    let ready = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    for i in 0..2000 {
        flood.spawn(flood_one(addr.clone(), behaviours[i % 4], ready.clone()));
    }
    while ready.load(Ordering::SeqCst) < 2000 {
        assert!(
            started.elapsed() < TIMEOUT / 2,
            "the flood took too long to set up"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // While the flood is held, /healthz answers promptly on a connection of its own.
    let health = reqwest::Client::builder().build().unwrap();
    let mut slowest = Duration::ZERO;
    let probing_until = started + TIMEOUT - Duration::from_millis(200);
    while Instant::now() < probing_until {
        let asked = Instant::now();
        let answer = health
            .get(format!("{}/healthz", w.base))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
        slowest = slowest.max(asked.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        slowest < Duration::from_millis(100),
        "/healthz took {slowest:?} during the flood"
    );

    let mut closed = Vec::new();
    while let Some(done) = flood.join_next().await {
        closed.push(done.unwrap());
    }
    assert_eq!(closed.len(), 2000);
    for c in &closed {
        // Closed by the server's timer: not well before it (the server starts it at accept,
        // which a busy client may only see later), and soon after it.
        assert!(
            c.after >= TIMEOUT * 3 / 4,
            "{:?} closed early, after {:?}",
            c.behaviour,
            c.after
        );
        assert!(
            c.after < TIMEOUT + Duration::from_secs(3),
            "{:?} closed late, after {:?}",
            c.behaviour,
            c.after
        );
        if c.behaviour == Behaviour::SlowBody {
            assert!(c.received.starts_with("HTTP/1.1 408"), "{}", c.received);
            assert!(
                c.received.contains("\"code\":\"request_timeout\""),
                "{}",
                c.received
            );
        }
    }
    // And the gateway is as good as new.
    let answer = health
        .get(format!("{}/readyz", w.base))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
}

/// Sends `GET /healthz` on a new connection and reads the whole answer.
async fn raw_healthz(addr: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await
        .unwrap();
    tokio::time::timeout(
        Duration::from_secs(5),
        until_closed(&mut stream, None, "healthz"),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn past_max_connections_a_new_connection_is_refused_with_a_problem() {
    let w = World::start_with(limits(&["max_connections = 20"])).await;
    let addr = w.base.trim_start_matches("http://").to_string();
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(TcpStream::connect(&addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let refused = raw_healthz(&addr).await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    let lower = refused.to_ascii_lowercase();
    assert!(lower.contains("retry-after: 1"), "{refused}");
    assert!(lower.contains("connection: close"), "{refused}");
    assert!(
        lower.contains("content-type: application/problem+json"),
        "{refused}"
    );
    assert!(refused.contains("connection limit"), "{refused}");

    // The held connections time out, and the room they held serves again.
    tokio::time::sleep(TIMEOUT + Duration::from_millis(700)).await;
    let answer = w
        .http
        .get(format!("{}/healthz", w.base))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    drop(held);
}

#[tokio::test]
async fn a_request_not_answered_in_time_is_a_503_problem() {
    let w = World::start_with(Options {
        timeout_ms: 10_000,
        ..limits(&["request_timeout_ms = 1000"])
    })
    .await;
    w.betrust
        .inject(FaultRule::always(Fault::Hang).on_path("/transactions"));
    let asked = Instant::now();
    let (status, problem) = w
        .post(
            "/v1/verifications",
            ALPHA_KEY,
            person("slow-1", "sub-slow-1", "CL"),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{problem}");
    assert_eq!(problem["code"], "unavailable");
    assert!(problem["request_id"].is_string(), "{problem}");
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "{:?}",
        asked.elapsed()
    );
}
