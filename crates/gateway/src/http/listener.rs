//! The accept loop: every connection is served under the `[server]` limits, so slow or idle
//! clients cannot hold the gateway's sockets and file descriptors.
//!
//! - hyper's header-read timer (`header_read_timeout_ms`) closes a connection that has not sent a
//!   whole request head in time. hyper starts it whenever it waits for a head, so it also closes
//!   a kept-alive connection that stays silent that long.
//! - The body and whole-request timeouts are layers on the router (see `crate::http::server`).
//! - At most `max_connections` connections are served at once, and never more than the process's
//!   open-file limit leaves room for (less [`RESERVED_FDS`] for the store, provider clients and
//!   logs), so accepting never runs out of descriptors and `/healthz` keeps answering. Past the
//!   cap a new connection gets a `503` problem with `Retry-After` and is closed; when even the
//!   refusals pile up, it is closed at once.

use crate::http::problem::ApiError;
use axum::Router;
use axum::extract::{ConnectInfo, Request};
use axum::response::IntoResponse;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// Descriptors kept out of the connection budget: the store's pool, provider and webhook
/// clients, the listener, log files.
pub const RESERVED_FDS: u64 = 256;

/// Refusals answered at once past the connection cap; beyond them a connection is just closed.
const MAX_REFUSALS: usize = 256;

/// How long a refused connection may take to send its request head before it is closed.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(1);

/// How long open connections get to finish after shutdown is asked.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// The connection limits of `[server]`.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// hyper's header-read timer (see the module docs).
    pub header_read_timeout: Duration,
    /// The configured cap, before the open-file limit lowers it.
    pub max_connections: usize,
}

/// Raises the soft open-file limit to the hard one where it is lower, and answers how many
/// connections fit: `wanted`, or fewer when the limit leaves no room for them.
pub fn connection_budget(wanted: usize) -> usize {
    let limit = rlimit::increase_nofile_limit(u64::MAX)
        .or_else(|_| rlimit::getrlimit(rlimit::Resource::NOFILE).map(|(soft, _)| soft))
        .unwrap_or(1024);
    let room = if limit > 2 * RESERVED_FDS {
        limit - RESERVED_FDS - MAX_REFUSALS as u64
    } else {
        limit / 2
    };
    let budget = wanted
        .min(usize::try_from(room).unwrap_or(usize::MAX))
        .max(1);
    if budget < wanted {
        tracing::warn!(
            max_connections = wanted,
            open_file_limit = limit,
            serving = budget,
            "server.max_connections lowered to fit the open-file limit"
        );
    }
    budget
}

/// Serves `router` on `listener` until `shutdown` completes, then lets open connections finish
/// for up to [`SHUTDOWN_GRACE`]. Each request carries the peer address as `ConnectInfo`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    let budget = connection_budget(limits.max_connections);
    tracing::info!(max_connections = budget, "connection limits set");
    let connections = Arc::new(Semaphore::new(budget));
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS));
    // HTTP/1.1 only: sniffing for HTTP/2 would wait on a silent connection with no timer running.
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors (another part of the process used more than its
                    // reserve) or a connection reset before accept: wait a little, go on.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            match refusals.clone().try_acquire_owned() {
                Ok(refusal) => {
                    tokio::spawn(async move {
                        refuse(stream).await;
                        drop(refusal);
                    });
                }
                Err(_) => drop(stream),
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service =
            hyper::service::service_fn(move |mut request: Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                router.clone().oneshot(request.map(axum::body::Body::new))
            });
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            // A client that goes away or times out ends its connection; nothing to report.
            let _ = connection.await;
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the shutdown grace period; closing them");
    }
}

/// Answers one request on a connection past the cap with `503` and closes it.
async fn refuse(stream: TcpStream) {
    let service = hyper::service::service_fn(|_request| async {
        let mut response =
            ApiError::Unavailable("the gateway is at its connection limit; retry shortly".into())
                .into_response();
        let headers = response.headers_mut();
        headers.insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
        headers.insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from_static("1"),
        );
        Ok::<_, std::convert::Infallible>(response)
    });
    let mut http1 = http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(REFUSAL_TIMEOUT)
        .keep_alive(false);
    let _ = tokio::time::timeout(
        REFUSAL_TIMEOUT * 2,
        http1.serve_connection(TokioIo::new(stream), service),
    )
    .await;
}
