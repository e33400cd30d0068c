//! What this binary does when re-executed as a child: the bare axum server, or the simulators.

use crate::load::Error;
use crate::procs::{BETRUST_SECRET, GU1_API_KEY, GU1_WEBHOOK_SECRET, TENANT_KEY};
use axum::{
    Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use bytes::Bytes;
use std::io::{BufRead, Write};
use std::sync::Arc;

struct BareState {
    body: Bytes,
    bearer: String,
}

/// `GET /v1/verifications/{id}`: checks the bearer token, answers the stored body. The same shape
/// as the gateway's handler without the store, policy, telemetry and middleware.
async fn bare_get(
    State(state): State<Arc<BareState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let authorized = headers
        .get(header::AUTHORIZATION)
        .is_some_and(|v| v.as_bytes() == state.bearer.as_bytes());
    if !authorized {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    if id.is_empty() {
        return StatusCode::NOT_FOUND.into_response();
    }
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.body.clone(),
    )
        .into_response()
}

/// `kyc-bench --bare-server BODY_FILE`: serves on `127.0.0.1:0`, prints `listening on ADDR`.
pub fn bare_server(body_file: &str) -> Result<(), Error> {
    let body = Bytes::from(std::fs::read(body_file)?);
    let state = Arc::new(BareState {
        body,
        bearer: format!("Bearer {TENANT_KEY}"),
    });
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("listening on {}", listener.local_addr()?);
        std::io::stdout().flush()?;
        let app = Router::new()
            .route("/v1/verifications/{id}", get(bare_get))
            .with_state(state);
        axum::serve(listener, app).await?;
        Ok(())
    })
}

/// `kyc-bench --simulators`: starts both simulators, prints `betrust URL` and `gu1 URL`, then
/// answers `token_requests` and `transactions` read on stdin, one number a line; exits at EOF.
pub fn simulators() -> Result<(), Error> {
    let runtime = tokio::runtime::Runtime::new()?;
    let (betrust, gu1) = runtime.block_on(async {
        let betrust = kyc_sandbox::BetrustSim::start(kyc_sandbox::BetrustSimConfig {
            client_secret: BETRUST_SECRET.into(),
            ..Default::default()
        })
        .await?;
        let gu1 = kyc_sandbox::Gu1Sim::start(kyc_sandbox::Gu1SimConfig {
            api_key: GU1_API_KEY.into(),
            webhook_secret: GU1_WEBHOOK_SECRET.into(),
            ..Default::default()
        })
        .await?;
        Ok::<_, std::io::Error>((betrust, gu1))
    })?;
    let mut out = std::io::stdout();
    writeln!(out, "betrust {}", betrust.base_url())?;
    writeln!(out, "gu1 {}", gu1.base_url())?;
    out.flush()?;
    for line in std::io::stdin().lock().lines() {
        let answer = match line?.trim() {
            "token_requests" => betrust.token_requests(),
            "transactions" => betrust.transactions_created(),
            _ => 0,
        };
        writeln!(out, "{answer}")?;
        out.flush()?;
    }
    drop((betrust, gu1));
    Ok(())
}
