//! A job's way from the scheduler's decision to its outcome: run here
//! (artifact fetch if missing, admission, queue, node), or offer it to the
//! scheduler's peer candidates in turn and wait for the one that took it.
//! While a job waits in the local queue it is placed again every gossip
//! round and whenever a peer is known to have room. A peer lost mid-job:
//! an idempotent job is placed again, any other ends `executor_lost`.
//!
//! What it is not: the HTTP side of a job (`invoke`: parsing, idempotency
//! keys, the receipt) or the placement policy (`spillway-scheduler`).

use super::{ApiError, App};
use crate::burst::origin::{Accepted, Attempt, Offer};
use crate::link::{JobFailed, JobOutput};
use crate::peer::Dispatch;
use crate::quota::QuotaPermit;
use axum::body::Bytes;
use spillway_consensus::MemberState;
use spillway_proto::{Completion, Execute, Failure, JobId, JobSpec, NodeId, Refusal};
use spillway_scheduler::{Decision, Fallback};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// What travels with a job besides the job itself.
pub(super) struct Context {
    pub(super) trace: Option<String>,
    pub(super) idempotency_key: Option<String>,
    /// `spillway-placement: local`: run here or queue here, never burst.
    pub(super) here_only: bool,
}

/// A job that ran: its output, where, and how long it waited before
/// running.
#[derive(Debug)]
pub(crate) struct Ran {
    pub(super) body: Bytes,
    pub(super) completion: Completion,
    pub(super) queue: Duration,
    pub(super) host: NodeId,
    pub(super) burst: bool,
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

/// Where a placement led: the job ended here, or a peer took it (under
/// this host's quota permit when it lent one).
enum Placed {
    Ended(Result<Ran, ApiError>),
    Peer(Accepted, Option<QuotaPermit>),
}

/// Peers lost with an idempotent job before it gives up.
const MAX_LOST_PEERS: u32 = 3;

fn executor_lost() -> ApiError {
    Failure::ExecutorLost { may_have_run: true }.into()
}

/// Where the scheduler says, then there. An idempotent job whose peer is
/// lost mid-job is placed again; any other ends `executor_lost`.
pub(super) async fn run(
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
        // A lent permit is held until the peer's attempt ends.
        let (taken, _lent) = match job.place(lost > 0).await {
            Placed::Ended(outcome) => return outcome,
            Placed::Peer(taken, lent) => (taken, lent),
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
            } => {
                // With room in the tenant's lease here the peer runs the
                // job under it; with none, under its own.
                let lent = self
                    .app
                    .control
                    .quota_permit(&self.spec.tenant)
                    .ok()
                    .flatten();
                match self.offer(&candidates, lent.is_some()).await {
                    Ok(Some(taken)) => Placed::Peer(taken, lent),
                    Err(e) => Placed::Ended(Err(e)),
                    Ok(None) => {
                        drop(lent);
                        match fallback {
                            Fallback::Queue => self.here().await,
                            Fallback::Refuse(refusal) => Placed::Ended(Err(refused(refusal))),
                        }
                    }
                }
            }
        }
    }

    /// Offers the job to `candidates` in turn; `None` if none took it. A
    /// peer lost before answering may have run it: fatal unless the job
    /// is idempotent.
    async fn offer(
        &self,
        candidates: &[NodeId],
        borrowed_quota: bool,
    ) -> Result<Option<Accepted>, ApiError> {
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
                borrowed_quota,
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

    /// Every active peer that carries the job's placement labels, in a
    /// random order (each decides for itself whether it has room).
    fn any_peers(&self) -> Vec<NodeId> {
        let control = &self.app.control;
        let state = control.state();
        let mut peers: Vec<NodeId> = state
            .members()
            .filter(|m| m.id != control.id && m.state == MemberState::Active)
            .filter(|m| {
                self.spec
                    .placement
                    .iter()
                    .all(|(k, v)| m.labels.get(k) == Some(v))
            })
            .map(|m| NodeId(m.id))
            .collect();
        let mut seed = [0u8; 8];
        getrandom::fill(&mut seed).expect("the OS provides randomness");
        let n = peers.len();
        if n > 1 {
            peers.rotate_left(u64::from_le_bytes(seed) as usize % n);
        }
        peers
    }

    /// A queued job placed again: `Some` when a peer took it (under
    /// `permit`, this host's, when there is one) or the attempt ended it,
    /// `None` to keep waiting here.
    async fn leave_for_peer(&self, permit: &mut Option<QuotaPermit>) -> Option<Placed> {
        let Decision::Peer { candidates, .. } = self.decide() else {
            return None;
        };
        match self.offer(&candidates, permit.is_some()).await {
            Ok(Some(taken)) => Some(Placed::Peer(taken, permit.take())),
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
        if !app.link.holds_all(&self.spec) {
            let fetch = app
                .control
                .ensure_job_artifacts(&self.spec)
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
        // A place in the tenant's quota here, held while the job waits and
        // runs here; with none left, only a peer with room in its share can
        // take the job.
        let mut permit = match app.control.quota_permit(&self.spec.tenant) {
            Ok(permit) => permit,
            Err(refusal) => {
                let peers = if self.context.here_only {
                    Vec::new()
                } else {
                    self.any_peers()
                };
                return match self.offer(&peers, false).await {
                    Ok(Some(taken)) => Placed::Peer(taken, None),
                    Ok(None) => Placed::Ended(Err(Failure::from(refusal).into())),
                    Err(e) => Placed::Ended(Err(e)),
                };
            }
        };
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
            if let Some(placed) = self.leave_for_peer(&mut permit).await {
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
        // The node lost or discarded its copy: the next job fetches one.
        match &result {
            Err(JobFailed {
                failure: Failure::UnknownArtifact { digest },
                ..
            }) => app.link.forget_artifact(digest),
            Err(JobFailed {
                failure: Failure::InvalidArtifact { .. },
                ..
            }) => app.link.forget_artifact(&self.spec.digest),
            _ => {}
        }
        Placed::Ended(match result {
            Ok(output) => Ok(Ran::new(output, queue, NodeId(app.control.id), false)),
            Err(JobFailed { failure, exec_us }) => Err(ApiError {
                exec_ms: exec_us.map(|us| us as f64 / 1000.0),
                ..failure.into()
            }),
        })
    }
}
