//! `GET /dashboard`: the product managers' page (provider comparison, charts per day, the
//! experiment, a replay form), as static files embedded in the binary.
//!
//! The page carries no data: its script asks the API with the tenant key the reader types, so
//! these routes sit outside the API's authentication and outside the OpenAPI spec. Everything
//! is compiled in (no CDN, no file read at run time), so the page works offline and a deploy
//! cannot pair a binary with another version's page.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

/// Only the gateway's own files may load, run or be fetched: the page has no inline script or
/// style, so an injected `<script>` would not run even if markup got in.
const CONTENT_SECURITY_POLICY: &str =
    "default-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The page's files: path, content type, body. Each is an embedded file of
/// `assets/dashboard/` (see its README for where the vendored chart library comes from).
const FILES: &[(&str, &str, &[u8])] = &[
    (
        "/dashboard",
        "text/html; charset=utf-8",
        include_bytes!("../../assets/dashboard/index.html"),
    ),
    (
        "/dashboard/dashboard.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/dashboard/dashboard.js"),
    ),
    (
        "/dashboard/dashboard.css",
        "text/css; charset=utf-8",
        include_bytes!("../../assets/dashboard/dashboard.css"),
    ),
    (
        "/dashboard/favicon.svg",
        "image/svg+xml",
        include_bytes!("../../assets/dashboard/favicon.svg"),
    ),
    (
        "/dashboard/vendor/uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/dashboard/vendor/uPlot.iife.min.js"),
    ),
    (
        "/dashboard/vendor/uPlot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../../assets/dashboard/vendor/uPlot.min.css"),
    ),
];

/// The page's routes; they need no state, so they merge into any router.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    FILES
        .iter()
        .fold(Router::new(), |router, &(path, content_type, body)| {
            router.route(path, get(move || async move { serve(content_type, body) }))
        })
}

/// One file, with the headers that keep it inert elsewhere: the CSP, no content sniffing, no
/// referrer sent from the page, and revalidation so an upgraded gateway's page is seen at once.
fn serve(content_type: &'static str, body: &'static [u8]) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}
