//! Async jobs: `POST /v1/functions/{name}/invoke` with `Prefer:
//! respond-async` (or `?async=true`) answers 202 with the job's id at once
//! and runs it on; `GET /v1/jobs/{id}` says how it stands (and, once it
//! ended, its receipt and output or its error); `DELETE /v1/jobs/{id}`
//! cancels it wherever it runs.
//!
//! The record lives on the host that accepted the job (`job::results`),
//! which the id names: any host answers for it by asking that host over
//! QUIC. So a result is readable at every host while its origin is up,
//! for `--async-ttl-s` after the job ends within `--async-results-mib`;
//! if the origin's sidecar stops, its jobs and results are gone (a reader
//! elsewhere gets 503 `origin_unavailable` meanwhile, 404 after it comes
//! back). Only the tenant that submitted a job sees it.

use super::invoke::{self, Finished, Started};
use super::{ApiError, App};
use crate::job::results::{JobMiss, origin_of};
use crate::job::{self, Context};
use crate::peer::{PeerReply, PeerRequest};
use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use spillway_consensus::Scope;
use spillway_proto::{JobId, JobSpec, TenantId};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// How long asking a job's origin may take.
const ORIGIN_TIMEOUT: Duration = Duration::from_secs(3);

/// Whether an invoke asks to be answered at once and run on: `Prefer:
/// respond-async` (RFC 7240), or `async=true` in the query.
pub(super) fn wants_async(headers: &HeaderMap, query: Option<&str>) -> bool {
    let preferred = headers.get_all("prefer").iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',').any(|p| {
                let token = p.split(';').next().unwrap_or("").trim();
                token.eq_ignore_ascii_case("respond-async")
            })
        })
    });
    let asked = query.is_some_and(|q| {
        q.split('&')
            .any(|pair| matches!(pair, "async=true" | "async=1" | "async"))
    });
    preferred || asked
}

fn unix_ms() -> u64 {
    crate::now_unix_ms()
}

/// Starts an async job: 202 with its view, `Location: /v1/jobs/{id}`.
pub(super) fn submit(
    app: &Arc<App>,
    started: Started,
    spec: JobSpec,
    input: Vec<u8>,
    context: Context,
) -> Response {
    let Started {
        job,
        accepted,
        span,
    } = started;
    let (tenant, function) = (spec.tenant.clone(), spec.function.clone());
    let accepted_unix_ms = unix_ms();
    let running = json!({
        "job_id": job.to_string(),
        "function": function,
        "status": "running",
        "accepted_unix_ms": accepted_unix_ms,
    });
    // The task waits until its record exists, so its end always finds it.
    let (go, recorded) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn({
        let app = app.clone();
        let running = running.clone();
        async move {
            if recorded.await.is_err() {
                return;
            }
            let outcome = job::run(&app.jobs, job, spec, input, accepted, context).await;
            let finished = invoke::ended(&app, job, accepted, outcome);
            let view = done(running, &finished);
            app.jobs.results.finish(job, view, Instant::now());
        }
        .instrument(span)
    });
    app.jobs
        .results
        .start(job, tenant, running.clone(), task.abort_handle());
    let _ = go.send(());
    let mut response = (StatusCode::ACCEPTED, Json(running)).into_response();
    let h = response.headers_mut();
    for (name, value) in [
        (header::LOCATION.as_str(), format!("/v1/jobs/{job}")),
        ("preference-applied", "respond-async".to_owned()),
        (crate::api::header::JOB_ID, job.to_string()),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    }
    response
}

/// An ended job's view: the running one with how it ended.
fn done(mut view: Value, finished: &Finished) -> Value {
    view["finished_unix_ms"] = unix_ms().into();
    match &finished.outcome {
        Ok(ran) => {
            view["status"] = "succeeded".into();
            view["receipt"] = serde_json::to_value(invoke::receipt_of(finished.job, ran, false))
                .unwrap_or_default();
            match std::str::from_utf8(&ran.body) {
                Ok(text) => view["output"] = text.into(),
                Err(_) => {
                    use base64::Engine as _;
                    let encoded = base64::engine::general_purpose::STANDARD.encode(&ran.body);
                    view["output_base64"] = encoded.into();
                }
            }
        }
        Err(e) => {
            view["status"] = if e.code == "cancelled" {
                "cancelled"
            } else {
                "failed"
            }
            .into();
            view["error"] = e.to_json()["error"].clone();
        }
    }
    view
}

fn parse_id(id: Result<Path<String>, PathRejection>) -> Result<JobId, ApiError> {
    let Path(id) = id.map_err(ApiError::from_path)?;
    match u128::from_str_radix(&id, 16) {
        Ok(n) if id.len() == 32 => Ok(JobId(n)),
        _ => Err(ApiError::bad_request(
            "bad_job_id",
            format!("{id:?} is not a job id (32 hex digits)"),
        )),
    }
}

/// `GET /v1/jobs/{id}`.
pub(super) async fn get(
    State(app): State<Arc<App>>,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    view(&app, id, &headers, false).await
}

/// `DELETE /v1/jobs/{id}`: cancels it if it still runs; its view.
pub(super) async fn cancel(
    State(app): State<Arc<App>>,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    view(&app, id, &headers, true).await
}

/// Either route: the caller's token, the id, then the job's view.
async fn view(
    app: &App,
    id: Result<Path<String>, PathRejection>,
    headers: &HeaderMap,
    cancel: bool,
) -> Result<Json<Value>, ApiError> {
    let principal = app.authorize(headers, Scope::Invoke).await?;
    let job = parse_id(id)?;
    lookup(app, job, principal.tenant, cancel).await.map(Json)
}

/// The job's view from its origin (here, or asked over QUIC), cancelling
/// it first when asked.
async fn lookup(app: &App, job: JobId, tenant: TenantId, cancel: bool) -> Result<Value, ApiError> {
    let origin = origin_of(job);
    let found = if origin == app.jobs.id() {
        app.jobs.results.answer(job, &tenant, cancel)
    } else {
        let ask = PeerRequest::AsyncJob {
            job,
            tenant,
            cancel,
        };
        match app.jobs.client.call(origin, &ask, ORIGIN_TIMEOUT).await {
            Ok(PeerReply::AsyncJob(found)) => {
                found.map(|view| serde_json::from_str(&view).unwrap_or(Value::String(view)))
            }
            Ok(other) => {
                return Err(ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "origin_unavailable",
                    format!("host {origin} answered {other:?}"),
                ));
            }
            Err(e) => {
                return Err(ApiError {
                    retry_after_ms: Some(1000),
                    ..ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "origin_unavailable",
                        format!("the job's origin, host {origin}, cannot be asked: {e}"),
                    )
                });
            }
        }
    };
    found.map_err(|miss| match miss {
        JobMiss::Unknown => ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_job",
            format!("no job {job} of yours"),
        ),
        JobMiss::Expired => ApiError::new(
            StatusCode::GONE,
            "result_expired",
            format!("job {job} ended and its result has expired"),
        ),
    })
}
