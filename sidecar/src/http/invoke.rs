//! `POST /v1/functions/{name}/invoke`: a job's path through this host.
//!
//! ingress (auth, size, deadline) → queue (admission, wait for a slot) →
//! node (execute over the socket) → response with the receipt headers. If
//! the client goes away first, the handler is dropped and the guard cancels
//! the job on the node.

use super::{ApiError, App};
use crate::link::{JobFailed, JobOutput, NodeLink};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use spillway_proto::{Execute, Failure, JobId, JobSpec, NodeId, TenantId};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// Cancels the job on the node unless disarmed (the client went away).
struct CancelOnDrop<'a> {
    link: &'a NodeLink,
    job: JobId,
    armed: bool,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            tracing::info!(job = %self.job, "client went away; cancelling the job");
            self.link.cancel(self.job);
        }
    }
}

fn new_job_id() -> JobId {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the OS provides randomness");
    JobId(u128::from_le_bytes(bytes))
}

fn deadline_ms(headers: &HeaderMap, function_ms: u64) -> Result<u64, ApiError> {
    let Some(value) = headers.get("spillway-deadline-ms") else {
        return Ok(function_ms);
    };
    let ms: u64 = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| {
            ApiError::bad_request(
                "bad_deadline",
                "spillway-deadline-ms must be a whole number of milliseconds",
            )
        })?;
    if ms == 0 {
        return Err(ApiError::bad_request(
            "bad_deadline",
            "spillway-deadline-ms must be positive",
        ));
    }
    // A caller may shorten the function's deadline, never extend it.
    Ok(ms.min(function_ms))
}

pub(super) async fn invoke(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    app.authorize(&headers)?;
    let input = body.map_err(|r| ApiError::from_body(r, app.config.max_input_bytes))?;
    let mut function = app.control.state().function(&name).cloned();
    if function.is_none() {
        app.control.catch_up().await;
        function = app.control.state().function(&name).cloned();
    }
    let function = function
        .ok_or_else(|| ApiError::not_found("function", format!("no function named {name:?}")))?;
    let deadline_ms = deadline_ms(&headers, function.deadline_ms)?;
    let digest = function.digest;
    let job = new_job_id();
    let span = tracing::info_span!("ingress", job = %job, function = %name);
    let spec = JobSpec {
        tenant: TenantId::admin(),
        function: name,
        digest,
        accelerator: function.accelerator,
        deadline_ms,
        memory_limit_bytes: function.memory_limit_bytes,
        idempotent: function.idempotent,
        placement: Default::default(),
    };
    let accepted = Instant::now();
    let outcome = run(&app, job, spec, input.to_vec(), accepted)
        .instrument(span)
        .await;
    let seconds = accepted.elapsed().as_secs_f64();
    match outcome {
        Ok((output, queue_ms)) => {
            app.metrics.job_ended("ok", seconds);
            let exec_ms = output.completion.exec_us as f64 / 1000.0;
            app.queue.record_exec(exec_ms);
            Ok(receipt(&app, job, queue_ms, output).into_response())
        }
        Err(e) => {
            app.metrics.job_ended(e.code, seconds);
            Err(e.with_job(job))
        }
    }
}

/// Admission, queue, node. Returns the output and the time spent queued.
async fn run(
    app: &App,
    job: JobId,
    spec: JobSpec,
    input: Vec<u8>,
    accepted: Instant,
) -> Result<(JobOutput, Duration), ApiError> {
    let deadline = accepted + Duration::from_millis(spec.deadline_ms);
    // An artifact this host's node lacks comes from a holder first.
    if !app.link.status().held.contains(&spec.digest) {
        let fetch = app
            .control
            .ensure_artifact(spec.digest)
            .instrument(tracing::info_span!("fetch", job = %job));
        match tokio::time::timeout_at(deadline.into(), fetch).await {
            Ok(Ok(())) => {}
            Ok(Err(failure)) => {
                return Err(ApiError {
                    may_have_run: Some(false),
                    ..failure.into()
                });
            }
            Err(_) => {
                return Err(ApiError {
                    may_have_run: Some(false),
                    ..Failure::DeadlineExceeded {
                        deadline_ms: spec.deadline_ms,
                    }
                    .into()
                });
            }
        }
    }
    let status = app.link.status();
    if let Some(cap) = &status.capabilities {
        app.queue.resize(cap.slots);
    }
    let waiting = app.queue.admit(&spec, &status).map_err(Failure::from)?;
    let slot = async {
        let slot = waiting.slot(deadline).await?;
        app.link.wait_up(deadline).await.then_some(slot)
    }
    .instrument(tracing::info_span!("queue", job = %job))
    .await;
    let Some(_slot) = slot else {
        // Never ran: the deadline passed while it waited.
        return Err(ApiError {
            may_have_run: Some(false),
            ..Failure::DeadlineExceeded {
                deadline_ms: spec.deadline_ms,
            }
            .into()
        });
    };
    let queue_ms = accepted.elapsed();
    let remaining_ms = deadline
        .saturating_duration_since(Instant::now())
        .as_millis() as u64;
    let mut guard = CancelOnDrop {
        link: &app.link,
        job,
        armed: true,
    };
    let exec = Execute {
        job,
        spec,
        input,
        remaining_ms,
    };
    let result = app
        .link
        .execute(exec)
        .instrument(tracing::info_span!("node", job = %job))
        .await;
    guard.armed = false;
    match result {
        Ok(output) => Ok((output, queue_ms)),
        Err(JobFailed { failure, exec_us }) => Err(ApiError {
            exec_ms: exec_us.map(|us| us as f64 / 1000.0),
            ..failure.into()
        }),
    }
}

fn receipt(app: &App, job: JobId, queue: Duration, output: JobOutput) -> Response {
    let JobOutput { body, completion } = output;
    let mut response = (StatusCode::OK, body).into_response();
    let h = response.headers_mut();
    let mut set = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    };
    set("content-type", "application/octet-stream".into());
    set("spillway-job-id", job.to_string());
    set("spillway-node", NodeId(app.control.id).to_string());
    set("spillway-burst", "false".into());
    set("spillway-backend", completion.backend.as_str().into());
    if let Some(gpu) = completion.gpu {
        set("spillway-gpu", gpu.to_string());
    }
    set(
        "spillway-queue-ms",
        format!("{:.3}", queue.as_secs_f64() * 1000.0),
    );
    set(
        "spillway-exec-ms",
        format!("{:.3}", completion.exec_us as f64 / 1000.0),
    );
    response
}
