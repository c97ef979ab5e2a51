//! A job's way from the scheduler's decision to its outcome: run here
//! (artifact fetch if missing, admission, queue, node), or offer it to the
//! scheduler's peer candidates in turn and wait for the one that took it.
//! While a job waits in the local queue it is placed again every gossip
//! round and whenever a peer is known to have room.
//!
//! Every decision of where to run goes through `scheduler::place`
//! (`Job::decide`), the tenant's quota room here included; what follows a
//! decline, a silent peer, a lost peer or a refusal is [`rules::next`],
//! pure. The outcome is a domain one ([`Ran`] or [`Ended`]); `http` turns
//! it into a response.
//!
//! A peer's burst job comes in by the other door, [`for_peer`]: it runs
//! here at once or is refused, never queued or sent on.
//!
//! What it is not: the HTTP side of a job (`http::invoke`: parsing,
//! idempotency keys, the receipt) or the placement policy
//! (`spillway-scheduler`).

pub(crate) mod burst;
pub(crate) mod for_peer;
mod host;
pub(crate) mod results;
pub(crate) mod rules;
pub(crate) mod stream;

pub(crate) use host::JobHost;

use crate::link::{JobFailed, JobOutput};
use crate::peer::Dispatch;
use crate::quota::QuotaPermit;
use burst::origin::{self, Accepted, Attempt as PeerAttempt, Offer};
use bytes::Bytes;
use rules::{Attempt, Event, Step};
use spillway_proto::{Completion, Execute, Failure, JobId, JobSpec, NodeId};
use spillway_scheduler::{ArtifactFacts, Decision, Fallback, TenantRoom, WeightsFacts, place};
use std::time::{Duration, Instant};
use tracing::Instrument;

/// What travels with a job besides the job itself.
#[derive(Debug, Default)]
pub(crate) struct Context {
    /// The client's trace context, checked: what is sent on when this
    /// process exports no spans of its own.
    pub(crate) trace: Option<spillway_proto::TraceCarrier>,
    pub(crate) idempotency_key: Option<String>,
    /// `spillway-placement: local`: run here or queue here, never burst.
    pub(crate) here_only: bool,
    /// Where the guest's chunks go as it emits them, for a streamed
    /// response (`None`: they come back with the output, at the end).
    pub(crate) stream: Option<stream::StreamTo>,
}

/// A job that ran: its output, where, and how long it waited before
/// running.
#[derive(Debug)]
pub(crate) struct Ran {
    pub(crate) body: Bytes,
    pub(crate) completion: Completion,
    pub(crate) queue: Duration,
    pub(crate) host: NodeId,
    /// The executor that ran it, on `host`.
    pub(crate) executor: String,
    pub(crate) burst: bool,
}

impl Ran {
    fn new(output: JobOutput, queue: Duration, host: NodeId, burst: bool) -> Self {
        Self {
            body: Bytes::from(output.body),
            completion: output.completion,
            queue,
            host,
            executor: output.executor,
            burst,
        }
    }
}

/// A job that ended without a result.
#[derive(Debug)]
pub(crate) struct Ended {
    pub(crate) failure: Failure,
    /// How long it ran where it ran, when that host said.
    pub(crate) exec_us: Option<u64>,
    /// It surely never ran (its artifact could not be had, its deadline
    /// passed while it waited), whatever the failure's code says in
    /// general.
    pub(crate) never_ran: bool,
    /// A peer took it: it ended there, or with that peer lost.
    pub(crate) on_peer: bool,
}

impl From<Failure> for Ended {
    fn from(failure: Failure) -> Self {
        Self {
            failure,
            exec_us: None,
            never_ran: false,
            on_peer: false,
        }
    }
}

impl From<JobFailed> for Ended {
    fn from(
        JobFailed {
            failure, exec_us, ..
        }: JobFailed,
    ) -> Self {
        Self {
            failure,
            exec_us,
            never_ran: false,
            on_peer: false,
        }
    }
}

/// The job, what it needs to be sent anywhere, and its deadline.
struct Job<'a> {
    host: &'a JobHost,
    id: JobId,
    spec: JobSpec,
    input: Vec<u8>,
    context: Context,
    accepted: Instant,
    deadline: Instant,
    /// The executor here that was lost with the job, if one was: a job
    /// placed again goes to another first.
    lost_on: std::sync::Mutex<Option<String>>,
}

/// Where a placement led: the job ended here, its executor here was lost
/// with it, or a peer took it (under this host's quota permit when it lent
/// one).
enum Placed {
    Ended(Result<Ran, Ended>),
    LostHere(JobFailed),
    Peer(Accepted, Option<QuotaPermit>),
}

/// Where the scheduler says, then there. An idempotent job whose peer or
/// executor is lost mid-job is placed again (another executor here, or a
/// peer); any other ends `executor_lost`.
pub(crate) async fn run(
    host: &JobHost,
    id: JobId,
    spec: JobSpec,
    input: Vec<u8>,
    accepted: Instant,
    context: Context,
) -> Result<Ran, Ended> {
    let deadline = accepted + Duration::from_millis(spec.deadline_ms);
    let job = Job {
        host,
        id,
        spec,
        input,
        context,
        accepted,
        deadline,
        lost_on: std::sync::Mutex::new(None),
    };
    let mut lost = 0;
    loop {
        // A lent permit is held until the peer's attempt ends.
        let (taken, _lent) = match job.place(lost).await {
            Placed::Ended(outcome) => return outcome,
            Placed::LostHere(failed) => {
                let attempt = rules::Attempt {
                    streamed: failed.streamed,
                    ..job.attempt(lost)
                };
                match rules::next(&attempt, Event::LostMidJob) {
                    Step::PlaceAgain => {
                        tracing::warn!(job = %id, "executor lost mid-job; idempotent, placing it again");
                        lost += 1;
                        continue;
                    }
                    Step::Fail(failure) => return Err(failure.into()),
                    Step::TryNext => {
                        unreachable!("a lost executor is never followed by the next candidate")
                    }
                }
            }
            Placed::Peer(taken, lent) => (taken, lent),
        };
        let peer = NodeId(taken.peer());
        let span = tracing::info_span!("burst", job = %id, peer = %peer);
        let stream = job.context.stream.as_ref();
        if let Some(s) = stream {
            s.running_on.send_replace(Some(stream::RunningOn {
                host: peer,
                burst: true,
            }));
        }
        let sink = stream.map(|s| &s.chunks);
        let deadline_ms = job.spec.deadline_ms;
        let outcome = taken.outcome((deadline, deadline_ms), sink);
        let (why, streamed) = match outcome.instrument(span).await {
            PeerAttempt::Done(Ok(output)) => {
                host.burst.ran_on(peer.0);
                let exec = Duration::from_micros(output.completion.exec_us);
                let queue = accepted.elapsed().saturating_sub(exec);
                return Ok(Ran::new(output, queue, peer, true));
            }
            // The peer's executor was lost with the job: as if the peer was.
            PeerAttempt::Done(Err(failed))
                if matches!(failed.failure, Failure::ExecutorLost { .. }) =>
            {
                ("its executor was lost".to_owned(), failed.streamed)
            }
            PeerAttempt::Done(Err(failed)) => {
                return Err(Ended {
                    on_peer: true,
                    ..failed.into()
                });
            }
            PeerAttempt::Lost { why, streamed } => (why, streamed),
        };
        let attempt = rules::Attempt {
            streamed,
            ..job.attempt(lost)
        };
        match rules::next(&attempt, Event::LostMidJob) {
            Step::PlaceAgain => {
                tracing::warn!(job = %id, %peer, "peer lost mid-job ({why}); idempotent, placing it again");
                lost += 1;
            }
            Step::Fail(failure) => {
                tracing::warn!(job = %id, %peer, "peer lost mid-job: {why}");
                return Err(Ended {
                    on_peer: true,
                    ..failure.into()
                });
            }
            Step::TryNext => unreachable!("a lost peer is never followed by the next candidate"),
        }
    }
}

impl Job<'_> {
    /// The trace context to send with the job from `span`: the span's
    /// own when this process exports spans, else the client's as it came.
    fn trace_from(&self, span: &tracing::Span) -> Option<spillway_proto::TraceCarrier> {
        spillway_telemetry::carrier_of(span).or_else(|| self.context.trace.clone())
    }

    fn attempt(&self, lost: u32) -> Attempt {
        Attempt {
            idempotent: self.spec.idempotent,
            lost,
            deadline_passed: Instant::now() >= self.deadline,
            streamed: false,
        }
    }

    /// The scheduler's decision, for the job as it stands now, given its
    /// tenant's quota `room` here. With burst off (for this host, or for
    /// this job: `here_only`), every job stays here (and one over its
    /// tenant's quota is refused).
    fn decide(&self, room: &TenantRoom) -> Decision {
        let host = self.host;
        let state = host.control.state();
        let load = host.queue.load(&host.executors.status());
        let artifact = ArtifactFacts {
            size: state.artifact_size(&self.spec.digest).unwrap_or(0),
            holders: state.holders(&self.spec.digest).into_iter().collect(),
            weights: (self.spec.weights.iter())
                .map(|w| WeightsFacts {
                    digest: w.digest,
                    size: state.artifact_size(&w.digest).unwrap_or(0),
                    holders: state.holders(&w.digest).into_iter().collect(),
                })
                .collect(),
        };
        let mut view = host
            .burst
            .view(&state, host.id(), host.artifacts.bytes_per_s());
        if !host.burst.enabled || self.context.here_only {
            view.hosts.retain(|h| h.id == view.local);
        }
        let mut pick = [0u8; 8];
        getrandom::fill(&mut pick).expect("the OS provides randomness");
        let policy = &host.burst.policy;
        let now = (Instant::now(), u64::from_le_bytes(pick));
        place(&self.spec, &artifact, &view, &load, policy, room, now)
    }

    /// A refusal, as the rules make it after `lost` lost peers.
    fn refused(&self, lost: u32, refusal: spillway_proto::Refusal) -> Placed {
        match rules::next(&self.attempt(lost), Event::Refused(refusal)) {
            Step::Fail(failure) => Placed::Ended(Err(failure.into())),
            Step::TryNext | Step::PlaceAgain => unreachable!("a refusal ends the job"),
        }
    }

    /// One placement, after `lost` peers were lost with this job. A place
    /// in the tenant's quota here is taken first: held while the job waits
    /// and runs here, or lent to the peer that takes it; with none left,
    /// or no lease here of the tenant's GPU memory quota (the job could
    /// hold no GPU memory here), the scheduler offers the job only to peers
    /// (under their own shares).
    async fn place(&self, lost: u32) -> Placed {
        let host = self.host;
        let state = host.control.state();
        let (permit, room) = match host.quotas.permit(&self.spec.tenant, &state, host.id()) {
            Ok(permit)
                if !host
                    .gpu_quotas
                    .has_room(&self.spec.tenant, &state, host.id()) =>
            {
                (
                    permit,
                    TenantRoom::Exhausted(spillway_proto::Refusal::QuotaExceeded {
                        retry_after_ms: 200,
                    }),
                )
            }
            Ok(permit) => (permit, TenantRoom::Here),
            Err(refusal) => (None, TenantRoom::Exhausted(refusal)),
        };
        let span = tracing::info_span!(
            "place",
            job = %self.id,
            decision = tracing::field::Empty,
            reason = tracing::field::Empty
        );
        let decision = span.in_scope(|| self.decide(&room));
        let (kind, reason) = crate::metrics::decision_labels(&decision, &room);
        span.record("decision", kind).record("reason", reason);
        host.burst_metrics.decided(kind, reason);
        match decision {
            Decision::Local | Decision::Queue { .. } => self.here(permit).await,
            Decision::Refuse(refusal) => self.refused(lost, refusal),
            Decision::Peer {
                candidates,
                fallback,
            } => match self.offer(&candidates, permit.is_some()).await {
                Ok(Some(taken)) => Placed::Peer(taken, permit),
                Err(ended) => Placed::Ended(Err(ended)),
                Ok(None) => match fallback {
                    Fallback::Queue => self.here(permit).await,
                    Fallback::Refuse(refusal) => self.refused(lost, refusal),
                },
            },
        }
    }

    /// Offers the job to `candidates` in turn; `None` if none took it.
    async fn offer(
        &self,
        candidates: &[NodeId],
        borrowed_quota: bool,
    ) -> Result<Option<Accepted>, Ended> {
        for (attempt, peer) in candidates.iter().enumerate() {
            let remaining_ms = self
                .deadline
                .saturating_duration_since(Instant::now())
                .as_millis() as u64;
            if remaining_ms == 0 {
                return Ok(None);
            }
            let span = tracing::info_span!("dispatch", job = %self.id, %peer, attempt = attempt as i64 + 1);
            let dispatch = Dispatch {
                execute: Execute {
                    job: self.id,
                    spec: self.spec.clone(),
                    input: self.input.clone(),
                    remaining_ms,
                    output_window: 0, // the peer sets its own
                    trace: self.trace_from(&span),
                },
                input_len: 0, // set when it is sent
                idempotency_key: self.context.idempotency_key.clone(),
                attempt: attempt as u32 + 1,
                borrowed_quota,
            };
            let through = (&self.host.client, &self.host.burst);
            let offer = origin::offer(through, peer.0, dispatch, self.deadline).instrument(span);
            let (event, why) = match offer.await {
                Offer::Accepted(taken) => return Ok(Some(taken)),
                Offer::NotRun(why) => (Event::NotRun, why),
                Offer::Lost(why) => (Event::NoClearAnswer, why),
            };
            match rules::next(&self.attempt(0), event) {
                Step::TryNext => {
                    tracing::debug!(job = %self.id, %peer, "not run on the peer: {why}");
                }
                Step::Fail(failure) => {
                    tracing::warn!(job = %self.id, %peer, "no clear answer: {why}");
                    return Err(failure.into());
                }
                Step::PlaceAgain => unreachable!("an offer's answer never places again"),
            }
        }
        Ok(None)
    }

    fn deadline_exceeded(&self) -> Ended {
        Ended {
            never_ran: true,
            ..Failure::DeadlineExceeded {
                deadline_ms: self.spec.deadline_ms,
            }
            .into()
        }
    }

    /// A queued job placed again: `Some` when a peer took it (under
    /// `permit`, this host's, when there is one) or the attempt ended it,
    /// `None` to keep waiting here.
    async fn leave_for_peer(&self, permit: &mut Option<QuotaPermit>) -> Option<Placed> {
        let Decision::Peer { candidates, .. } = self.decide(&TenantRoom::Here) else {
            return None;
        };
        match self.offer(&candidates, permit.is_some()).await {
            Ok(Some(taken)) => {
                self.host.burst_metrics.decided("peer", "left_queue");
                Some(Placed::Peer(taken, permit.take()))
            }
            Ok(None) => None,
            Err(e) => Some(Placed::Ended(Err(e))),
        }
    }

    /// Here: artifact, admission, queue, node. While the job waits in the
    /// queue it is placed again every gossip round and whenever a peer is
    /// known to have room, and leaves the queue for a peer that takes it.
    async fn here(&self, mut permit: Option<QuotaPermit>) -> Placed {
        let JobHost {
            executors,
            queue,
            burst,
            artifacts,
            ..
        } = self.host;
        // An artifact this host lacks comes from a holder first.
        let mut fetched = 0;
        if !executors.holds_all(&self.spec) {
            let fetch = artifacts
                .ensure_job_artifacts(&self.spec)
                .instrument(tracing::info_span!("fetch", job = %self.id));
            match tokio::time::timeout_at(self.deadline.into(), fetch).await {
                Ok(Ok(bytes)) => fetched = bytes,
                Ok(Err(failure)) => {
                    return Placed::Ended(Err(Ended {
                        never_ran: true,
                        ..failure.into()
                    }));
                }
                Err(_) => return Placed::Ended(Err(self.deadline_exceeded())),
            }
        }
        let status = executors.status();
        if let Some(slots) = executors.slots() {
            queue.resize(slots);
        }
        let waiting = match queue.admit(&self.spec, &status) {
            Ok(w) => w,
            Err(refusal) => return Placed::Ended(Err(Failure::from(refusal).into())),
        };
        let avoid = self.lost_on.lock().expect("job lock").clone();
        let acquire = async {
            let slot = waiting.slot(self.deadline).await?;
            let assigned = executors.assign(&self.spec, avoid.as_deref(), self.deadline);
            Some((slot, assigned.await))
        }
        .instrument(tracing::info_span!("queue", job = %self.id));
        let mut acquire = std::pin::pin!(acquire);
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
        let (_slot, mut assigned) = match slot {
            Some((slot, Ok(Some(assigned)))) => (slot, assigned),
            Some((_, Err(refusal))) => {
                return Placed::Ended(Err(Ended {
                    never_ran: true,
                    ..Failure::from(refusal).into()
                }));
            }
            // Never ran: the deadline passed while it waited.
            Some((_, Ok(None))) | None => return Placed::Ended(Err(self.deadline_exceeded())),
        };
        let queued = self.accepted.elapsed();
        let remaining_ms = self
            .deadline
            .saturating_duration_since(Instant::now())
            .as_millis() as u64;
        let executor = &assigned.executor().name;
        let span = tracing::info_span!("node", job = %self.id, %executor);
        let mut exec = Execute {
            job: self.id,
            spec: self.spec.clone(),
            input: self.input.clone(),
            remaining_ms,
            output_window: 0,
            trace: self.trace_from(&span),
        };
        // Under this host's share of the tenant's GPU memory quota.
        let state = self.host.control.state();
        let _cap = (self.host.gpu_quotas).cap_here(&mut exec.spec, &state, self.host.id());
        assigned.fit(&mut exec);
        let result = match &self.context.stream {
            Some(s) => {
                s.running_on.send_replace(Some(stream::RunningOn {
                    host: NodeId(self.host.id()),
                    burst: false,
                }));
                assigned
                    .execute_into(exec, &s.chunks)
                    .instrument(span)
                    .await
            }
            None => assigned.execute(exec).instrument(span).await,
        };
        // The node lost or discarded its copy: the next job fetches one.
        executors.forget_what_failed(&self.spec, &result);
        let lost_on = assigned.executor().name.clone();
        drop((permit, assigned));
        if let Err(failed) = &result
            && matches!(failed.failure, Failure::ExecutorLost { .. })
        {
            tracing::warn!(job = %self.id, executor = %lost_on, "executor lost with the job");
            *self.lost_on.lock().expect("job lock") = Some(lost_on);
            return Placed::LostHere(result.expect_err("matched above"));
        }
        Placed::Ended(match result {
            Ok(mut output) => {
                output.completion.fetched_bytes = fetched;
                Ok(Ran::new(output, queued, NodeId(self.host.id()), false))
            }
            Err(failed) => Err(failed.into()),
        })
    }
}
