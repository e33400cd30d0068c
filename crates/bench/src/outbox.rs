//! Part (f): the outbox under another tenant's backlog. A store holds `parked` events of a
//! tenant (`other`) whose endpoint does not work, as the gateway leaves them (parked, no due
//! time); the benchmark tenant's own changes are then delivered to a receiver in this process,
//! and their delivery lag (from the change's time, in the event, to its arrival) is the figure.
//! Its target: p99 at most 1 s. The due scan reads only the heads of lines that are due, so the
//! backlog should cost nothing.

use crate::Ctx;
use crate::create_and_approve;
use crate::db::Store;
use crate::load::Error;
use crate::procs::Gateway;
use crate::report::Figure;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Changes whose deliveries are timed, and how many go on at once.
const CONCURRENCY: usize = 4;

/// Runs part (f).
pub fn part_f(ctx: &mut Ctx) -> Result<(), Error> {
    let (parked, changes) = (ctx.settings.parked_events, ctx.settings.timed_changes);
    let store = ctx.rt.block_on(Store::sqlite(ctx.dir.path(), "outbox"))?;
    let seeding = ctx.rt.block_on(seed_parked(&store.url, parked))?;
    eprintln!("  {parked} parked events of another tenant seeded in {seeding:?}");
    let receiver = ctx.rt.block_on(Receiver::start())?;
    let gateway = Gateway::start_delivering(
        &ctx.binary,
        ctx.dir.path(),
        &store.url,
        &ctx.sims,
        &receiver.url,
    )?;
    let betrust = ctx.sims.betrust_addr()?;
    let addr = gateway.addr;
    let lags = ctx.rt.block_on(async {
        let mut lanes = tokio::task::JoinSet::new();
        for lane in 0..CONCURRENCY {
            lanes.spawn(async move {
                let mut n = lane;
                while n < changes {
                    change(addr, betrust, n).await?;
                    n += CONCURRENCY;
                }
                Ok::<_, Error>(())
            });
        }
        while let Some(done) = lanes.join_next().await {
            done??;
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let lags = receiver.lags();
            if lags.len() >= changes {
                return Ok::<_, Error>(lags);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} of {changes} events delivered within 60 s\n{}",
                    lags.len(),
                    gateway.log.text()
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })?;
    drop(gateway);
    let (p50, p99) = (percentile(&lags, 0.50), percentile(&lags, 0.99));
    eprintln!("  f/lag: {changes} deliveries, p50 {p50:.0} ms, p99 {p99:.0} ms");
    ctx.cells.insert(
        "f/lag".into(),
        json!({"parked": parked, "deliveries": lags.len(), "p50_ms": p50, "p99_ms": p99}),
    );
    ctx.figures.push(Figure::at_most(
        "f",
        format!("delivery lag p99, {parked} events parked for another tenant"),
        p99 / 1000.0,
        "s",
        1.0,
        format!(
            "{:.3} s (p50 {:.3} s, {changes} deliveries)",
            p99 / 1000.0,
            p50 / 1000.0
        ),
    ));
    Ok(())
}

/// Writes `parked` events of tenant `other`, each the only one of its line, parked as the
/// gateway parks them when a tenant's endpoint does not work; answers how long it took.
async fn seed_parked(url: &str, parked: usize) -> Result<Duration, Error> {
    let started = Instant::now();
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await?;
    let hour_ago = (chrono::Utc::now() - chrono::Duration::hours(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    sqlx::query(
        "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < $1) \
         INSERT INTO events (id, tenant, verification_id, event_type, payload, created_at, \
         state, attempts, next_attempt_at, seq, parked) \
         SELECT 'evt_parked_' || n, 'other', 'ver_other_' || n, 'verification.updated', '{}', \
         $2, 'pending', 0, $2, 1, 1 FROM g",
    )
    .bind(parked as i64)
    .bind(&hour_ago)
    .execute(&pool)
    .await?;
    sqlx::query("ANALYZE").execute(&pool).await?;
    pool.close().await;
    Ok(started.elapsed())
}

/// One status change of the benchmark tenant: a verification created, then approved at the
/// BeTrust simulator, whose webhook makes the gateway record the change and its event.
async fn change(
    gateway: std::net::SocketAddr,
    betrust: std::net::SocketAddr,
    n: usize,
) -> Result<(), Error> {
    let body = json!({
        "reference": format!("outbox-{n}"),
        "subject": {"id": format!("outbox-subject-{n}"), "country": "CL"},
    });
    create_and_approve(gateway, betrust, &body).await.map(drop)
}

/// The `q` quantile of `values` (nearest rank).
fn percentile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied().unwrap_or(f64::NAN)
}

/// The benchmark tenant's webhook receiver: answers 204 and keeps each event's delivery lag,
/// milliseconds from the change's time (the event's `timestamp`) to its arrival.
struct Receiver {
    url: String,
    lags: Arc<Mutex<Vec<f64>>>,
}

impl Receiver {
    async fn start() -> Result<Receiver, Error> {
        let lags = Arc::new(Mutex::new(Vec::new()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/events", listener.local_addr()?);
        let record = lags.clone();
        let app = axum::Router::new().route(
            "/events",
            axum::routing::post(move |body: bytes::Bytes| {
                let record = record.clone();
                async move {
                    let arrived = chrono::Utc::now();
                    let changed = serde_json::from_slice::<Value>(&body)
                        .ok()
                        .and_then(|v| v["timestamp"].as_str().map(str::to_owned))
                        .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok());
                    if let Some(changed) = changed {
                        let lag = arrived - changed.with_timezone(&chrono::Utc);
                        record
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(lag.num_microseconds().unwrap_or(i64::MAX) as f64 / 1000.0);
                    }
                    axum::http::StatusCode::NO_CONTENT
                }
            }),
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Receiver { url, lags })
    }

    fn lags(&self) -> Vec<f64> {
        self.lags.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
