//! The load client: closed loop, one HTTP/1.1 keep-alive connection per task, each latency
//! recorded in an HDR histogram (microseconds).

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Errors of the harness: a message is all it needs.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// One request a load task sends, and the status that counts as success.
pub struct Req {
    /// `GET`, `POST`.
    pub method: Method,
    /// The path and query.
    pub path: String,
    /// A JSON body, if any.
    pub body: Option<Bytes>,
    /// The answer's status that counts as a success; any other is an error.
    pub expect: u16,
}

impl Req {
    /// A `GET` expecting 200.
    pub fn get(path: String) -> Req {
        Req {
            method: Method::GET,
            path,
            body: None,
            expect: 200,
        }
    }

    /// A `POST` of a JSON body, expecting `expect`.
    pub fn post(path: &str, body: String, expect: u16) -> Req {
        Req {
            method: Method::POST,
            path: path.to_owned(),
            body: Some(Bytes::from(body)),
            expect,
        }
    }
}

/// Makes the `seq`-th request of task `task`.
pub type MakeReq = Arc<dyn Fn(usize, u64) -> Req + Send + Sync>;

/// One HTTP/1.1 connection.
pub struct Conn {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: String,
    bearer: Option<String>,
}

impl Conn {
    /// Connects to `addr`; every request will carry `Authorization: Bearer {key}` if given.
    pub async fn open(addr: SocketAddr, key: Option<&str>) -> Result<Conn, Error> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Conn {
            sender,
            host: addr.to_string(),
            bearer: key.map(|k| format!("Bearer {k}")),
        })
    }

    /// Sends one request and reads the whole answer.
    pub async fn send(&mut self, req: &Req) -> Result<(StatusCode, Bytes), Error> {
        let mut builder = Request::builder()
            .method(req.method.clone())
            .uri(&req.path)
            .header(header::HOST, &self.host);
        if let Some(bearer) = &self.bearer {
            builder = builder.header(header::AUTHORIZATION, bearer);
        }
        if req.body.is_some() {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
        }
        let request = builder.body(Full::new(req.body.clone().unwrap_or_default()))?;
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

/// One request on a fresh connection: for set-up steps, not for measuring.
pub async fn once(addr: SocketAddr, key: Option<&str>, req: Req) -> Result<(u16, Bytes), Error> {
    let mut conn = Conn::open(addr, key).await?;
    let (status, body) = conn.send(&req).await?;
    Ok((status.as_u16(), body))
}

/// How long a cell warms up and measures.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// Requests sent but not recorded, first.
    pub warmup: Duration,
    /// Then the measured window.
    pub measure: Duration,
}

/// What one cell measured.
#[derive(Clone, Debug)]
pub struct Stats {
    /// Connections (closed-loop callers).
    pub conns: usize,
    /// Requests completed inside the measured window with the expected status.
    pub count: u64,
    /// Answers with another status, or failed connections, inside the window.
    pub errors: u64,
    /// The first unexpected answer, to show what went wrong.
    pub first_error: Option<String>,
    /// Successful requests per second over the window.
    pub rps: f64,
    /// Median latency, microseconds.
    pub p50_us: u64,
    /// 99th percentile latency, microseconds.
    pub p99_us: u64,
    /// Largest latency, microseconds.
    pub max_us: u64,
    /// CPU time (user and system) the serving process used over the window, per request
    /// counted, microseconds.
    pub cpu_us_per_request: f64,
}

impl Stats {
    /// The cell as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "conns": self.conns,
            "count": self.count,
            "errors": self.errors,
            "first_error": self.first_error,
            "rps": (self.rps * 10.0).round() / 10.0,
            "p50_us": self.p50_us,
            "p99_us": self.p99_us,
            "max_us": self.max_us,
            "cpu_us_per_request": (self.cpu_us_per_request * 10.0).round() / 10.0,
        })
    }

    /// `7.1k/s p50 0.52 ms p99 2.10 ms`.
    pub fn short(&self) -> String {
        format!(
            "{}/s p50 {} p99 {} cpu {:.0} µs/req",
            rate(self.rps),
            ms(self.p50_us),
            ms(self.p99_us),
            self.cpu_us_per_request
        )
    }
}

/// `7.1k` or `950`.
pub fn rate(rps: f64) -> String {
    if rps >= 1000.0 {
        format!("{:.1}k", rps / 1000.0)
    } else {
        format!("{rps:.0}")
    }
}

/// Microseconds as `0.52 ms`.
pub fn ms(us: u64) -> String {
    format!("{:.2} ms", us as f64 / 1000.0)
}

struct TaskResult {
    hist: Histogram<u64>,
    count: u64,
    errors: u64,
    first_error: Option<String>,
}

/// Runs `conns` closed-loop tasks against `addr` for `timing.warmup + timing.measure`, recording
/// the requests that start inside the measured window and finish before it ends, and the CPU
/// time process `serving` used over the window.
pub async fn cell(
    addr: SocketAddr,
    key: Option<&str>,
    conns: usize,
    timing: Timing,
    make: MakeReq,
    serving: u32,
) -> Result<Stats, Error> {
    let start = Instant::now();
    let window_start = start + timing.warmup;
    let window_end = window_start + timing.measure;
    let cpu = tokio::spawn(async move {
        tokio::time::sleep_until(window_start.into()).await;
        let before = crate::procs::cpu_us(serving)?;
        tokio::time::sleep_until(window_end.into()).await;
        Ok::<u64, Error>(crate::procs::cpu_us(serving)?.saturating_sub(before))
    });
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..conns {
        let make = make.clone();
        let key = key.map(str::to_owned);
        tasks.spawn(async move {
            let mut result = TaskResult {
                hist: Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid bounds"),
                count: 0,
                errors: 0,
                first_error: None,
            };
            let mut conn: Option<Conn> = None;
            let mut seq = 0u64;
            loop {
                let now = Instant::now();
                if now >= window_end {
                    break;
                }
                let req = make(task, seq);
                seq += 1;
                let sent = Instant::now();
                let outcome = match conn.as_mut() {
                    Some(c) => c.send(&req).await,
                    None => match Conn::open(addr, key.as_deref()).await {
                        Ok(mut c) => {
                            let out = c.send(&req).await;
                            conn = Some(c);
                            out
                        }
                        Err(e) => Err(e),
                    },
                };
                let done = Instant::now();
                let recorded = sent >= window_start && done <= window_end;
                match outcome {
                    Ok((status, _)) if status.as_u16() == req.expect => {
                        if recorded {
                            let us = (done - sent).as_micros().max(1) as u64;
                            let _ = result.hist.record(us.min(120_000_000));
                            result.count += 1;
                        }
                    }
                    Ok((status, body)) => {
                        if recorded {
                            result.errors += 1;
                        }
                        result.first_error.get_or_insert_with(|| {
                            format!(
                                "{} {} answered {status}: {}",
                                req.method,
                                req.path,
                                String::from_utf8_lossy(&body[..body.len().min(200)])
                            )
                        });
                    }
                    Err(e) => {
                        if recorded {
                            result.errors += 1;
                        }
                        result
                            .first_error
                            .get_or_insert_with(|| format!("{} {}: {e}", req.method, req.path));
                        conn = None;
                        // A refused connection must not spin.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            result
        });
    }
    let mut hist: Histogram<u64> = Histogram::new_with_bounds(1, 120_000_000, 3)?;
    let (mut count, mut errors, mut first_error) = (0, 0, None);
    while let Some(done) = tasks.join_next().await {
        let done = done?;
        hist.add(&done.hist)?;
        count += done.count;
        errors += done.errors;
        if first_error.is_none() {
            first_error = done.first_error;
        }
    }
    let cpu_us = cpu.await??;
    Ok(Stats {
        cpu_us_per_request: cpu_us as f64 / count.max(1) as f64,
        conns,
        count,
        errors,
        first_error,
        rps: count as f64 / timing.measure.as_secs_f64(),
        p50_us: hist.value_at_quantile(0.5),
        p99_us: hist.value_at_quantile(0.99),
        max_us: hist.max(),
    })
}

/// A small deterministic mix of `task` and `seq`, to pick rows without a random-number crate.
pub fn mix(task: usize, seq: u64) -> u64 {
    let mut x = (task as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seq.wrapping_add(0x632B_E59B);
    x ^= x >> 33;
    x = x.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    x ^= x >> 33;
    x = x.wrapping_mul(0xC4CE_B9FE_1A85_EC53);
    x ^ (x >> 33)
}
