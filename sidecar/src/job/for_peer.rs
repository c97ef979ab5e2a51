//! The peer's side of a burst: run another host's job on this host's node,
//! if a slot is free right now. The job module's second door, beside the
//! HTTP one (`job::run`).
//!
//! One hop: a burst job is never queued here and never sent on; without a
//! free slot the answer is `Refused(peer_full)` and the origin tries its
//! next candidate. Once accepted, the job takes the same path as a local
//! one (artifact fetched if missing, then the node), and if the origin
//! goes away the stream is stopped and the job cancelled on the node.

use super::JobHost;
use crate::link::JobFailed;
use crate::peer::{Dispatch, DispatchReply, write_dispatch_reply};
use spillway_proto::{Failure, NodeId};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// Answers a member's dispatch on `send`.
pub(crate) async fn run_for_peer(
    host: &JobHost,
    from: [u8; 32],
    dispatch: Dispatch,
    mut send: quinn::SendStream,
) {
    let JobHost {
        control,
        executors,
        queue,
        ..
    } = host;
    let Dispatch {
        mut execute,
        attempt,
        borrowed_quota,
        ..
    } = dispatch;
    let origin = control.state().member_by_key(&from).map(|m| NodeId(m.id));
    let span = tracing::info_span!("burst_in", job = %execute.job, tenant = %execute.spec.tenant, origin = ?origin, attempt = i64::from(attempt));
    // The origin's dispatch span is this one's parent; the node's span
    // will be this one's child (a peer's context is checked as a
    // client's is).
    let received = execute.trace.take();
    let received = received
        .and_then(|t| spillway_telemetry::checked(Some(&t.traceparent), Some(&t.tracestate)));
    spillway_telemetry::continue_trace(&span, received.as_ref());
    execute.trace = spillway_telemetry::carrier_of(&span).or(received);
    // A peer's numbers are not taken on trust: its time left is at most
    // the job's own deadline and this host's longest, and a quota it
    // claims to lend is believed only if it has a share to lend.
    execute.remaining_ms = peer_remaining_ms(
        execute.remaining_ms,
        execute.spec.deadline_ms,
        host.max_deadline,
    );
    let deadline = Instant::now() + Duration::from_millis(execute.remaining_ms);
    let borrowed_quota = borrowed_quota && {
        let state = control.state();
        let quota = state
            .tenant(&execute.spec.tenant)
            .and_then(|t| t.max_concurrent);
        let origin_share = origin.zip(quota).map(|(NodeId(id), quota)| {
            crate::quota::share(quota, &execute.spec.tenant, &state, id)
        });
        crate::quota::may_have_lent(quota, origin_share)
    };
    // The tenant's share of its quota here, held while the job runs,
    // unless the origin lends its own. Taken before the slot, so no
    // slot is ever held by a job the quota turns away. (A refusal here
    // is not this host's demand: the origin counted it already.)
    let permit = match borrowed_quota {
        true => Ok(None),
        false => host
            .quotas
            .permit_for_peer(&execute.spec.tenant, &control.state(), host.id()),
    };
    let admitted = permit.and_then(|permit| {
        // A host on its way down takes no new work: the origin tries
        // another peer.
        if host.stopping.load(Ordering::Relaxed) {
            return Err(spillway_proto::Refusal::PeerFull);
        }
        // Nor does one with no lease of the tenant's GPU memory quota
        // (the job could hold nothing here); that counts as demand.
        if !(host.gpu_quotas).has_room(&execute.spec.tenant, &control.state(), host.id()) {
            return Err(spillway_proto::Refusal::PeerFull);
        }
        let slot = queue.try_slot(&execute.spec, &executors.status())?;
        let assigned =
            (executors.try_assign(&execute.spec)).ok_or(spillway_proto::Refusal::PeerFull)?;
        Ok((permit, slot, assigned))
    });
    let (_permit, slot, assigned) = match admitted {
        Ok(admitted) => admitted,
        Err(refusal) => {
            span.in_scope(|| tracing::debug!("refused a burst job: {refusal}"));
            host.burst_metrics.peer_job_refused(refusal.code());
            if write_dispatch_reply(&mut send, &DispatchReply::Refused(refusal)).await {
                let _ = send.finish();
            }
            return;
        }
    };
    if !write_dispatch_reply(&mut send, &DispatchReply::Accepted).await {
        return; // the origin is gone already; the job never started
    }
    host.burst.received.fetch_add(1, Ordering::Relaxed);
    let spec = execute.spec.clone();
    let deadline_ms = execute.spec.deadline_ms;
    // Chunks the guest emits go to the origin as they come, as fast as
    // the origin reads them (QUIC's flow control holds the writes below,
    // this channel holds the node's window shut).
    let (chunk_tx, mut chunks) = tokio::sync::mpsc::channel(4);
    let work = async {
        let mut fetched = 0;
        if !executors.holds_all(&spec) {
            let fetch = host.artifacts.ensure_job_artifacts(&spec);
            match tokio::time::timeout_at(deadline.into(), fetch).await {
                Ok(Ok(bytes)) => fetched = bytes,
                Ok(Err(failure)) => return Err(JobFailed::from(failure)),
                Err(_) => return Err(Failure::DeadlineExceeded { deadline_ms }.into()),
            }
        }
        let started = Instant::now();
        // Moved in: the executor's place is given back as the job ends.
        let mut assigned = assigned;
        let mut execute = execute;
        // Under this host's share of the tenant's GPU memory quota.
        let _cap = (host.gpu_quotas).cap_here(&mut execute.spec, &control.state(), host.id());
        assigned.fit(&mut execute);
        let mut outcome = assigned.execute_into(execute, &chunk_tx).await;
        // The node lost or discarded its copy: the next job fetches one.
        executors.forget_what_failed(&spec, &outcome);
        if let Ok(output) = &mut outcome {
            queue.record_exec(started.elapsed().as_secs_f64() * 1000.0);
            output.completion.fetched_bytes = fetched;
        }
        outcome
    }
    .instrument(span.clone());
    let mut work = std::pin::pin!(work);
    let stopped = send.stopped();
    let mut stopped = std::pin::pin!(stopped);
    let mut seq = 0u32;
    // Dropping `work` (returning early) cancels the job on the node.
    let gone = || span.in_scope(|| tracing::info!("the origin went away; the job was cancelled"));
    let outcome = loop {
        tokio::select! {
            biased;
            Some(chunk) = chunks.recv() => {
                if !write_dispatch_reply(&mut send, &DispatchReply::Output { seq, chunk }).await {
                    gone();
                    return;
                }
                seq += 1;
            }
            outcome = &mut work => break outcome,
            _ = &mut stopped => {
                gone();
                return;
            }
        }
    };
    drop(slot);
    // Chunks still queued were emitted before the end: they go first.
    while let Ok(chunk) = chunks.try_recv() {
        if !write_dispatch_reply(&mut send, &DispatchReply::Output { seq, chunk }).await {
            return;
        }
        seq += 1;
    }
    host.burst_metrics.peer_job(match &outcome {
        Ok(_) => "ok",
        Err(JobFailed { failure, .. }) => failure.code(),
    });
    let reply = match outcome {
        Ok(output) => DispatchReply::completed(output.body, output.completion, output.executor),
        Err(JobFailed {
            failure, exec_us, ..
        }) => DispatchReply::Failed { failure, exec_us },
    };
    if write_dispatch_reply(&mut send, &reply).await {
        let _ = send.finish();
    }
}

/// The time a peer's job may take here: what the origin says is left, but
/// never more than the job's own deadline or this host's longest (a
/// made-up value cannot overflow the clock or hold a slot for ever).
fn peer_remaining_ms(claimed_ms: u64, job_deadline_ms: u64, longest: Duration) -> u64 {
    let longest_ms = u64::try_from(longest.as_millis()).unwrap_or(u64::MAX);
    claimed_ms.min(job_deadline_ms).min(longest_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_claimed_time_is_clamped_to_the_job_and_the_host() {
        let longest = Duration::from_secs(300);
        for (claimed, job, want) in [
            (1_000, 30_000, 1_000),
            (60_000, 30_000, 30_000),
            (u64::MAX, u64::MAX, 300_000),
            (u64::MAX, 5_000, 5_000),
            (0, 30_000, 0),
        ] {
            assert_eq!(
                peer_remaining_ms(claimed, job, longest),
                want,
                "{claimed} {job}"
            );
        }
    }
}
