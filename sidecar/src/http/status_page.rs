//! `GET /status`: the cluster's status page, one self-contained HTML file
//! (`status_page/page.html`: styles and script inline, no external asset,
//! so it works offline). The page itself holds no data: its script reads
//! `GET /v1/cluster` every second with a read-scope token of the admin
//! tenant (taken from the URL's `#token=` fragment, which never reaches a
//! server, or typed into the page and kept in the browser's session
//! storage) and draws the hosts (role, health, slots, queue, GPUs and
//! their memory, loaded weights), the burst flows between hosts since the
//! last refresh, and the leader and term.
//!
//! What it is not: an API. Scripts read `/v1/cluster` and `/metrics`.

use axum::http::header;
use axum::response::IntoResponse;

const PAGE: &str = include_str!("status_page/page.html");

pub(super) async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            // Nothing from elsewhere: its own inline script and styles only.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            ),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        PAGE,
    )
}
