//! `POST /v1/functions/{name}/invoke`: a job's path through this host.
//!
//! ingress (auth, size, deadline) → scheduler (`place`: here, a peer, the
//! local queue, or a refusal) → here: artifact fetch if missing, queue,
//! node over the socket; a peer: one QUIC stream per attempt, candidates
//! tried in turn → response with the receipt headers (`spillway-node`
//! names the host that ran it, `spillway-burst` whether it was a peer). If
//! the client goes away first, the handler is dropped: the node link
//! cancels a local job, and a dropped dispatch stream makes the peer cancel
//! its.
//!
//! A request with `spillway-idempotency-key` claims the key first (see
//! [`crate::idempotency`]): a repeat gets the first outcome, with
//! `spillway-idempotent-replay: true`, and never runs the job again.

use super::{ApiError, App};
use crate::burst::origin::{Accepted, Attempt, Offer};
use crate::idempotency::{self, Claim, Key, Running};
use crate::link::{JobFailed, JobOutput};
use crate::peer::Dispatch;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use spillway_proto::{Completion, Execute, Failure, JobId, JobSpec, NodeId, Refusal, TenantId};
use spillway_scheduler::{Decision, Fallback};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tracing::Instrument;

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
    let idempotency_key = idempotency_key(&headers)?;
    let here_only = here_only(&headers)?;
    let accepted = Instant::now();
    let tenant = TenantId::admin();
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
    let digest = function.digest;
    let job = new_job_id();
    let span = tracing::info_span!("ingress", job = %job, function = %name);
    let spec = JobSpec {
        tenant,
        function: name,
        digest,
        accelerator: function.accelerator,
        deadline_ms,
        memory_limit_bytes: function.memory_limit_bytes,
        idempotent: function.idempotent,
        placement: Default::default(),
    };
    let context = Context {
        trace: header(&headers, "traceparent"),
        idempotency_key,
        here_only,
    };
    let outcome = run(&app, job, spec, input.to_vec(), accepted, context)
        .instrument(span)
        .await;
    let seconds = accepted.elapsed().as_secs_f64();
    match &outcome {
        Ok(ran) => {
            app.metrics.job_ended("ok", seconds);
            if !ran.burst {
                let exec_ms = ran.completion.exec_us as f64 / 1000.0;
                app.queue.record_exec(exec_ms);
            }
        }
        Err(e) => app.metrics.job_ended(e.code, seconds),
    }
    let finished = Finished {
        job,
        outcome: outcome.map(Arc::new).map_err(|e| e.with_job(job)),
    };
    if let Some(running) = running
        && finished.worth_remembering()
    {
        running.finish(finished.clone(), finished.weight(), Instant::now());
    }
    Ok(respond(finished, false))
}

/// The `spillway-placement` header: `local` keeps the job on this host
/// (queued here when full, never sent to a peer); `any` (the default)
/// lets the scheduler choose.
fn here_only(headers: &HeaderMap) -> Result<bool, ApiError> {
    match headers.get("spillway-placement").map(|v| v.to_str()) {
        None | Some(Ok("any")) => Ok(false),
        Some(Ok("local")) => Ok(true),
        Some(_) => Err(ApiError::bad_request(
            "bad_placement",
            "spillway-placement must be `local` or `any`",
        )),
    }
}

/// The `spillway-idempotency-key` header, checked.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("spillway-idempotency-key") else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(key) if idempotency::valid_key(key) => Ok(Some(key.to_owned())),
        _ => Err(ApiError::bad_request(
            "bad_idempotency_key",
            format!(
                "spillway-idempotency-key must be 1 to {} visible ASCII characters",
                idempotency::MAX_KEY_LEN
            ),
        )),
    }
}

/// How a job ended, as remembered under its idempotency key.
#[derive(Debug, Clone)]
pub(crate) struct Finished {
    job: JobId,
    outcome: Result<Arc<Ran>, ApiError>,
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
        Ok(ran) => receipt(finished.job, &ran),
        Err(e) => e.into_response(),
    };
    if replay {
        response.headers_mut().insert(
            "spillway-idempotent-replay",
            HeaderValue::from_static("true"),
        );
    }
    response
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// What travels with a job besides the job itself.
struct Context {
    trace: Option<String>,
    idempotency_key: Option<String>,
    /// `spillway-placement: local`: run here or queue here, never burst.
    here_only: bool,
}

/// A job that ran: its output, where, and how long it waited before
/// running.
#[derive(Debug)]
pub(crate) struct Ran {
    body: Bytes,
    completion: Completion,
    queue: Duration,
    host: NodeId,
    burst: bool,
}

impl Ran {
    fn new(output: JobOutput, queue: Duration, host: NodeId, burst: bool) -> Self {
        Self {
            body: Bytes::from(output.body),
            completion: output.completion,
            queue,
            host,
            burst,
        }
    }
}

/// The job, what it needs to be sent anywhere, and its deadline.
struct Job<'a> {
    app: &'a App,
    id: JobId,
    spec: JobSpec,
    input: Vec<u8>,
    context: Context,
    accepted: Instant,
    deadline: Instant,
}

/// Where a placement led: the job ended here, or a peer took it.
enum Placed {
    Ended(Result<Ran, ApiError>),
    Peer(Accepted),
}

/// Peers lost with an idempotent job before it gives up.
const MAX_LOST_PEERS: u32 = 3;

fn executor_lost() -> ApiError {
    Failure::ExecutorLost { may_have_run: true }.into()
}

/// Where the scheduler says, then there. An idempotent job whose peer is
/// lost mid-job is placed again; any other ends `executor_lost`.
async fn run(
    app: &App,
    id: JobId,
    spec: JobSpec,
    input: Vec<u8>,
    accepted: Instant,
    context: Context,
) -> Result<Ran, ApiError> {
    let deadline = accepted + Duration::from_millis(spec.deadline_ms);
    let job = Job {
        app,
        id,
        spec,
        input,
        context,
        accepted,
        deadline,
    };
    let mut lost = 0;
    loop {
        let taken = match job.place(lost > 0).await {
            Placed::Ended(outcome) => return outcome,
            Placed::Peer(taken) => taken,
        };
        let peer = NodeId(taken.peer());
        let span = tracing::info_span!("burst", job = %id, peer = %peer);
        match taken.outcome(deadline).instrument(span).await {
            Attempt::Done(Ok(output)) => {
                app.control.burst().sent.fetch_add(1, Ordering::Relaxed);
                let exec = Duration::from_micros(output.completion.exec_us);
                let queue = accepted.elapsed().saturating_sub(exec);
                return Ok(Ran::new(output, queue, peer, true));
            }
            Attempt::Done(Err(JobFailed { failure, exec_us })) => {
                return Err(ApiError {
                    exec_ms: exec_us.map(|us| us as f64 / 1000.0),
                    ..failure.into()
                });
            }
            Attempt::Lost(why)
                if job.spec.idempotent && lost < MAX_LOST_PEERS && Instant::now() < deadline =>
            {
                tracing::warn!(job = %id, %peer, "peer lost mid-job ({why}); idempotent, placing it again");
                lost += 1;
            }
            Attempt::Lost(why) => {
                tracing::warn!(job = %id, %peer, "peer lost mid-job: {why}");
                return Err(executor_lost());
            }
        }
    }
}

impl Job<'_> {
    /// The scheduler's decision, for the job as it stands now.
    fn decide(&self) -> Decision {
        let control = &self.app.control;
        control.burst().decide(
            &self.spec,
            &control.state(),
            control.id,
            (&self.app.queue, &self.app.link.status()),
            self.context.here_only,
        )
    }

    /// One placement. `lost_before`: a peer was lost with this job, so a
    /// refusal now must not claim it never ran.
    async fn place(&self, lost_before: bool) -> Placed {
        let refused = |refusal: Refusal| -> ApiError {
            if lost_before {
                executor_lost()
            } else {
                Failure::from(refusal).into()
            }
        };
        match self.decide() {
            Decision::Local | Decision::Queue { .. } => self.here().await,
            Decision::Refuse(refusal) => Placed::Ended(Err(refused(refusal))),
            Decision::Peer {
                candidates,
                fallback,
            } => match self.offer(&candidates).await {
                Ok(Some(taken)) => Placed::Peer(taken),
                Err(e) => Placed::Ended(Err(e)),
                Ok(None) => match fallback {
                    Fallback::Queue => self.here().await,
                    Fallback::Refuse(refusal) => Placed::Ended(Err(refused(refusal))),
                },
            },
        }
    }

    /// Offers the job to `candidates` in turn; `None` if none took it. A
    /// peer lost before answering may have run it: fatal unless the job
    /// is idempotent.
    async fn offer(&self, candidates: &[NodeId]) -> Result<Option<Accepted>, ApiError> {
        for (attempt, peer) in candidates.iter().enumerate() {
            let remaining_ms = self
                .deadline
                .saturating_duration_since(Instant::now())
                .as_millis() as u64;
            if remaining_ms == 0 {
                return Ok(None);
            }
            let dispatch = Dispatch {
                execute: Execute {
                    job: self.id,
                    spec: self.spec.clone(),
                    input: self.input.clone(),
                    remaining_ms,
                },
                input_len: 0, // set when it is sent
                trace: self.context.trace.clone(),
                idempotency_key: self.context.idempotency_key.clone(),
                attempt: attempt as u32 + 1,
            };
            match self
                .app
                .control
                .offer(peer.0, dispatch, self.deadline)
                .await
            {
                Offer::Accepted(taken) => return Ok(Some(taken)),
                Offer::NotRun(why) => {
                    tracing::debug!(job = %self.id, %peer, "not run on the peer: {why}");
                }
                Offer::Lost(why) if self.spec.idempotent => {
                    tracing::warn!(job = %self.id, %peer, "no clear answer ({why}); idempotent, trying on");
                }
                Offer::Lost(why) => {
                    tracing::warn!(job = %self.id, %peer, "no clear answer: {why}");
                    return Err(executor_lost());
                }
            }
        }
        Ok(None)
    }

    fn deadline_exceeded(&self) -> ApiError {
        ApiError {
            may_have_run: Some(false),
            ..Failure::DeadlineExceeded {
                deadline_ms: self.spec.deadline_ms,
            }
            .into()
        }
    }

    /// A queued job placed again: `Some` when a peer took it (or the
    /// attempt ended it), `None` to keep waiting here.
    async fn leave_for_peer(&self) -> Option<Placed> {
        let Decision::Peer { candidates, .. } = self.decide() else {
            return None;
        };
        match self.offer(&candidates).await {
            Ok(Some(taken)) => Some(Placed::Peer(taken)),
            Ok(None) => None,
            Err(e) => Some(Placed::Ended(Err(e))),
        }
    }

    /// Here: artifact, admission, queue, node. While the job waits in the
    /// queue it is placed again every gossip round and whenever a peer is
    /// known to have room, and leaves the queue for a peer that takes it.
    async fn here(&self) -> Placed {
        let app = self.app;
        // An artifact this host's node lacks comes from a holder first.
        if !app.link.status().held.contains(&self.spec.digest) {
            let fetch = app
                .control
                .ensure_artifact(self.spec.digest)
                .instrument(tracing::info_span!("fetch", job = %self.id));
            match tokio::time::timeout_at(self.deadline.into(), fetch).await {
                Ok(Ok(())) => {}
                Ok(Err(failure)) => {
                    return Placed::Ended(Err(ApiError {
                        may_have_run: Some(false),
                        ..failure.into()
                    }));
                }
                Err(_) => return Placed::Ended(Err(self.deadline_exceeded())),
            }
        }
        let status = app.link.status();
        if let Some(cap) = &status.capabilities {
            app.queue.resize(cap.slots);
        }
        let waiting = match app.queue.admit(&self.spec, &status) {
            Ok(w) => w,
            Err(refusal) => return Placed::Ended(Err(Failure::from(refusal).into())),
        };
        let acquire = async {
            let slot = waiting.slot(self.deadline).await?;
            app.link.wait_up(self.deadline).await.then_some(slot)
        };
        let mut acquire = std::pin::pin!(acquire);
        let burst = app.control.burst();
        let every = burst.gossip_every;
        let mut replace = tokio::time::interval_at((Instant::now() + every).into(), every);
        let may_leave = burst.enabled && !self.context.here_only;
        let slot = loop {
            tokio::select! {
                // A slot free now wins over any wake-up (a stored one would
                // otherwise send a job that need not wait to a peer).
                biased;
                slot = &mut acquire => break slot,
                () = burst.room.notified(), if may_leave => {}
                _ = replace.tick(), if may_leave => {}
            }
            if let Some(placed) = self.leave_for_peer().await {
                return placed;
            }
        };
        let Some(_slot) = slot else {
            // Never ran: the deadline passed while it waited.
            return Placed::Ended(Err(self.deadline_exceeded()));
        };
        let queue = self.accepted.elapsed();
        let remaining_ms = self
            .deadline
            .saturating_duration_since(Instant::now())
            .as_millis() as u64;
        let exec = Execute {
            job: self.id,
            spec: self.spec.clone(),
            input: self.input.clone(),
            remaining_ms,
        };
        let result = app
            .link
            .execute(exec)
            .instrument(tracing::info_span!("node", job = %self.id))
            .await;
        Placed::Ended(match result {
            Ok(output) => Ok(Ran::new(output, queue, NodeId(app.control.id), false)),
            Err(JobFailed { failure, exec_us }) => Err(ApiError {
                exec_ms: exec_us.map(|us| us as f64 / 1000.0),
                ..failure.into()
            }),
        })
    }
}

fn receipt(job: JobId, ran: &Ran) -> Response {
    let Ran {
        body,
        completion,
        queue,
        host,
        burst,
    } = ran;
    let mut response = (StatusCode::OK, body.clone()).into_response();
    let h = response.headers_mut();
    let mut set = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    };
    set("content-type", "application/octet-stream".into());
    set("spillway-job-id", job.to_string());
    set("spillway-node", host.to_string());
    set("spillway-burst", burst.to_string());
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
