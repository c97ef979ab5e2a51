//! Every request the API answers, counted in `spillway_http_requests_total`
//! and timed in `spillway_http_request_seconds` by the route it matched
//! (its pattern, `/v1/functions/{name}/invoke`: names and ids do not make
//! series), method and status; `unmatched` for a path no route has.
//!
//! What it is not: access logging (the request spans), or the jobs'
//! own series (`spillway_jobs_total`, by outcome).

use super::App;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use std::sync::Arc;
use std::time::Instant;

pub(super) async fn observe(
    State(app): State<Arc<App>>,
    matched: Option<MatchedPath>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let route = matched.map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let response = next.run(request).await;
    app.metrics.http.observe(
        &route,
        &method,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}
