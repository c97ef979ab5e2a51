//! `POST /v1/functions/{name}/invoke`: a job's path through this host.
//!
//! ingress (auth, size, deadline, headers) → [`crate::job::run`] (the
//! scheduler's decision, then here or a peer) → response with the receipt
//! headers (`spillway-node` names the host that ran it, `spillway-burst`
//! whether it was a peer). If the client goes away first, the handler is
//! dropped: the node link cancels a local job, and a dropped dispatch
//! stream makes the peer cancel its.
//!
//! A request with `spillway-idempotency-key` claims the key first (see
//! [`crate::idempotency`]): a repeat gets the first outcome, with
//! `spillway-idempotent-replay: true`, and never runs the job again.

use super::request::InvokeHeaders;
use super::{ApiError, App, stream};
use crate::api;
use crate::idempotency::{self, Claim, Key, Running};
use crate::job::{self, Context, Ran};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use spillway_consensus::FunctionEntry;
use spillway_consensus::Scope;
use spillway_proto::{JobId, JobSpec, TenantId};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// A new job id, naming this host as the job's origin.
pub(super) fn new_job_id(app: &App) -> JobId {
    crate::job::results::new_job_id(app.jobs.id())
}

pub(super) async fn invoke(
    State(app): State<Arc<App>>,
    name: Result<Path<String>, PathRejection>,
    query: axum::extract::RawQuery,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    // The token first, from the headers: an unauthenticated request's body
    // is never read.
    let principal = app.authorize(&headers, Scope::Invoke).await?;
    let Path(name) = name.map_err(ApiError::from_path)?;
    tenant_rate(&app, &principal.tenant)?;
    let rules = super::body::BodyRules {
        limit: app.config.max_input_bytes as u64,
        idle: app.config.ingress.body_timeout,
    };
    let input = super::body::read_body(&headers, body, rules, &app.bodies).await?;
    let mut function = app
        .control
        .state()
        .function(&principal.tenant, &name)
        .cloned();
    if function.is_none() {
        app.control.catch_up().await;
        function = app
            .control
            .state()
            .function(&principal.tenant, &name)
            .cloned();
    }
    let function = function
        .ok_or_else(|| ApiError::not_found("function", format!("no function named {name:?}")))?;
    let InvokeHeaders {
        deadline_ms,
        idempotency_key,
        here_only,
        trace,
    } = InvokeHeaders::parse(&headers, function.deadline_ms)?;
    let accepted = Instant::now();
    let tenant = principal.tenant.clone();
    if super::jobs::wants_async(&headers, query.0.as_deref()) {
        if idempotency_key.is_some() {
            return Err(ApiError::bad_request(
                "bad_request",
                "an async invoke takes no idempotency key: its job id is the handle to ask again with",
            ));
        }
        let job = new_job_id(&app);
        let span = tracing::info_span!("ingress", job = %job, tenant = %tenant, function = %name, token = principal.token.as_deref(), mode = "async");
        spillway_telemetry::continue_trace(&span, trace.as_ref());
        let spec = job_spec(&app, tenant, &function, deadline_ms);
        let context = Context {
            trace,
            here_only,
            ..Context::default()
        };
        let started = Started {
            job,
            accepted,
            span,
        };
        return Ok(super::jobs::submit(
            &app,
            started,
            spec,
            input.to_vec(),
            context,
        ));
    }
    let running = match &idempotency_key {
        Some(key) if !app.config.idempotency_ttl.is_zero() => {
            let key = Key {
                tenant: tenant.clone(),
                key: key.clone(),
            };
            let fingerprint = idempotency::fingerprint(&name, &input);
            let deadline = accepted + Duration::from_millis(deadline_ms);
            match claim(&app, key, fingerprint, deadline).await? {
                Keyed::Run(running) => Some(running),
                Keyed::Replay(first) => {
                    app.metrics.idempotent_replays.inc();
                    return Ok(respond(first, true));
                }
            }
        }
        _ => None,
    };
    let job = new_job_id(&app);
    let span = tracing::info_span!("ingress", job = %job, tenant = %tenant, function = %name, token = principal.token.as_deref());
    spillway_telemetry::continue_trace(&span, trace.as_ref());
    let spec = job_spec(&app, tenant, &function, deadline_ms);
    // A request with an idempotency key is answered whole: its outcome is
    // remembered whole, for a repeat.
    let mode = stream::Mode::of(&headers).filter(|_| running.is_none());
    let context = Context {
        trace,
        idempotency_key,
        here_only,
        stream: None,
    };
    let input = input.to_vec();
    let Some(mode) = mode else {
        let outcome = job::run(&app.jobs, job, spec, input, accepted, context)
            .instrument(span)
            .await;
        let finished = ended(&app, job, accepted, outcome);
        if let Some(running) = running
            && finished.worth_remembering()
        {
            running.finish(finished.clone(), finished.weight(), Instant::now());
        }
        return Ok(respond(finished, false));
    };
    let started = Started {
        job,
        accepted,
        span,
    };
    let (task, from) = spawn_streamed(&app, started, spec, input, context);
    let buffered = move |outcome: stream::Outcome| {
        let outcome = outcome.map(|(ran, _)| ran);
        respond(Finished { job, outcome }, false)
    };
    let metrics = &app.metrics.streams;
    Ok(stream::respond((job, accepted), mode, from, task, (metrics, buffered)).await)
}

/// A job as the ingress started it.
pub(super) struct Started {
    pub(super) job: JobId,
    pub(super) accepted: Instant,
    pub(super) span: tracing::Span,
}

/// Runs a job in a task of its own with its chunks streamed: the task
/// (its outcome, with the receipt) and the stream's receiving end. The
/// caller aborts the task when its client goes away.
pub(super) fn spawn_streamed(
    app: &Arc<App>,
    started: Started,
    spec: JobSpec,
    input: Vec<u8>,
    mut context: Context,
) -> (
    tokio::task::JoinHandle<stream::Outcome>,
    job::stream::StreamFrom,
) {
    let Started {
        job,
        accepted,
        span,
    } = started;
    let (to, from) = job::stream::channel();
    context.stream = Some(to);
    let app = app.clone();
    let task = tokio::spawn(
        async move {
            let outcome = job::run(&app.jobs, job, spec, input, accepted, context).await;
            let finished = ended(&app, job, accepted, outcome);
            finished
                .outcome
                .map(|ran| (ran.clone(), receipt_of(job, &ran, false)))
        }
        .instrument(span),
    );
    (task, from)
}

/// The job `function` makes for `tenant`, under the tenant's rules: only
/// hosts with its placement labels; its memory limit caps the function's
/// (0: the host's); its GPU memory cap goes with the job to whichever node
/// runs it.
pub(super) fn job_spec(
    app: &App,
    tenant: TenantId,
    function: &FunctionEntry,
    deadline_ms: u64,
) -> JobSpec {
    let (placement, tenant_memory, tenant_gpu_bytes) =
        app.control
            .state()
            .tenant(&tenant)
            .map_or((BTreeMap::new(), None, None), |t| {
                (
                    t.placement.clone(),
                    t.max_job_memory_bytes,
                    t.max_gpu_memory_bytes,
                )
            });
    let memory_limit_bytes = match (function.memory_limit_bytes, tenant_memory) {
        (0, Some(limit)) => limit,
        (mine, Some(limit)) => mine.min(limit),
        (mine, None) => mine,
    };
    JobSpec {
        tenant,
        function: function.name.clone(),
        digest: function.digest,
        accelerator: function.accelerator,
        deadline_ms,
        memory_limit_bytes,
        idempotent: function.idempotent,
        placement,
        tenant_gpu_bytes,
        kernel_packs: function.kernel_packs.clone(),
        weights: function.weights.clone(),
    }
}

/// A job's end, counted in the metrics (and its time in the queue's
/// estimate when it ran here).
pub(super) fn ended(
    app: &App,
    job: JobId,
    accepted: Instant,
    outcome: Result<Ran, job::Ended>,
) -> Finished {
    let on_peer = match &outcome {
        Ok(ran) => ran.burst,
        Err(ended) => ended.on_peer,
    };
    let outcome = outcome.map_err(ApiError::from);
    let seconds = accepted.elapsed().as_secs_f64();
    if on_peer {
        let code = outcome.as_ref().err().map_or("ok", |e| e.code);
        app.metrics.burst.burst_out(code);
    }
    match &outcome {
        Ok(ran) => {
            app.metrics.job_ended("ok", seconds);
            app.metrics.queue_wait.observe(ran.queue.as_secs_f64());
            if ran.burst {
                app.metrics.burst.ran_on_peer.inc();
            }
            if !ran.burst {
                let exec_ms = ran.completion.exec_us as f64 / 1000.0;
                app.jobs.queue.record_exec(exec_ms);
            }
        }
        Err(e) => app.metrics.job_ended(e.code, seconds),
    }
    Finished {
        job,
        outcome: outcome.map(Arc::new).map_err(|e| e.with_job(job)),
    }
}

/// The tenant's cluster-wide request rate, this host's share of it.
pub(super) fn tenant_rate(app: &App, tenant: &TenantId) -> Result<(), ApiError> {
    let state = app.control.state();
    let Some(rate) = state.tenant(tenant).and_then(|t| t.rate_per_s) else {
        return Ok(());
    };
    let share = crate::quota::rate_share(rate, &state);
    let key = format!("tenant:{tenant}");
    match app.rates.take(&key, share, Instant::now()) {
        Ok(()) => Ok(()),
        Err(wait) => Err(ApiError {
            retry_after_ms: Some(super::error::saturating_ms(wait.as_millis() as u64).max(1)),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("tenant {tenant} is over its rate of {rate}/s across the cluster"),
            )
        }),
    }
}

/// How a job ended, as remembered under its idempotency key.
#[derive(Debug, Clone)]
pub(crate) struct Finished {
    pub(super) job: JobId,
    pub(super) outcome: Result<Arc<Ran>, ApiError>,
}

impl Finished {
    /// Every outcome except one that says the job never ran (a retry may
    /// run it then).
    fn worth_remembering(&self) -> bool {
        match &self.outcome {
            Ok(_) => true,
            Err(e) => e.may_have_run != Some(false),
        }
    }

    /// What it costs to remember: the output and a little more.
    fn weight(&self) -> usize {
        256 + self.outcome.as_ref().map_or(0, |ran| ran.body.len())
    }
}

/// Whether a keyed request runs the job or answers with the first outcome.
enum Keyed {
    Run(Running<Finished>),
    Replay(Finished),
}

/// Claims the idempotency key, waiting (until `deadline`) while a request
/// with the same key runs.
async fn claim(
    app: &App,
    key: Key,
    fingerprint: idempotency::Fingerprint,
    deadline: Instant,
) -> Result<Keyed, ApiError> {
    loop {
        match app.outcomes.claim(key.clone(), fingerprint, Instant::now()) {
            Claim::Run(running) => return Ok(Keyed::Run(running)),
            Claim::Replay(first) => return Ok(Keyed::Replay(first)),
            Claim::Conflict => {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "idempotency_key_reused",
                    "this idempotency key was first used with a different function or input",
                ));
            }
            Claim::Wait(first) => {
                match tokio::time::timeout_at(deadline.into(), idempotency::wait(first)).await {
                    Ok(Some(first)) => return Ok(Keyed::Replay(first)),
                    // The first gave up without an outcome: claim again.
                    Ok(None) => continue,
                    Err(_) => {
                        return Err(ApiError {
                            retry_after_ms: Some(1000),
                            ..ApiError::new(
                                StatusCode::CONFLICT,
                                "idempotency_key_in_flight",
                                "a request with this idempotency key is still running",
                            )
                        });
                    }
                }
            }
        }
    }
}

/// The response for an outcome; `replay` marks one remembered under its
/// idempotency key.
fn respond(finished: Finished, replay: bool) -> Response {
    let mut response = match finished.outcome {
        Ok(ran) => receipt(finished.job, &ran, replay),
        Err(e) => e.into_response(),
    };
    if replay {
        response.headers_mut().insert(
            api::header::IDEMPOTENT_REPLAY,
            HeaderValue::from_static("true"),
        );
    }
    response
}

fn receipt(job: JobId, ran: &Ran, replay: bool) -> Response {
    let mut response = (StatusCode::OK, ran.body.clone()).into_response();
    let h = response.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    receipt_of(job, ran, replay).write_to(h);
    response
}

/// What the answer says about a job that ran.
pub(super) fn receipt_of(job: JobId, ran: &Ran, replay: bool) -> api::Receipt {
    let Ran {
        completion,
        queue,
        host,
        executor,
        burst,
        ..
    } = ran;
    api::Receipt {
        job_id: job.to_string(),
        node: host.to_string(),
        executor: Some(executor.clone()).filter(|e| !e.is_empty()),
        burst: *burst,
        backend: completion.backend.as_str().into(),
        gpu: completion.gpu,
        queue_ms: queue.as_secs_f64() * 1000.0,
        exec_ms: completion.exec_us as f64 / 1000.0,
        weights_loaded_bytes: completion.weights_loaded_bytes,
        fetched_bytes: completion.fetched_bytes,
        idempotent_replay: replay,
    }
}
