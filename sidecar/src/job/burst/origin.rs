//! The origin's side of a burst: one job offered to one peer on its own
//! QUIC stream ([`offer`]: accepted or not, one round trip), and,
//! once accepted, its outcome ([`Accepted::outcome`]).
//!
//! The stream carries the [`Dispatch`] frame, then the peer's answers:
//! `Accepted` or `Refused`, then `Completed` or `Failed`. The two steps are
//! apart so that a job waiting in the local queue can leave it only once a
//! peer has really taken it. Dropping the
//! future (the client went away) drops the stream, which stops the peer's
//! send side; the peer then cancels the job on its node.

use super::Burst;
use crate::link::{JobFailed, JobOutput};
use crate::peer::{Dispatch, DispatchReply, PeerClient, read_dispatch_reply};
use spillway_proto::Failure;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long opening a stream to a peer may take before the next candidate
/// is tried.
const OPEN_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a peer may take to accept or refuse (it answers at once when
/// alive; after this the job is treated as lost there).
const ACCEPT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long after the job's deadline the peer's last answer may take.
const ANSWER_GRACE: Duration = Duration::from_secs(2);
/// The most output one job may bring back (chunks and returned bytes).
const MAX_OUTPUT: usize = spillway_proto::MAX_FRAME_LEN;

/// What became of an accepted job.
#[derive(Debug)]
pub(crate) enum Attempt {
    /// It ran there: its result or its typed failure.
    Done(Result<JobOutput, JobFailed>),
    /// The peer was lost after accepting it: it may have run; `streamed`
    /// when some of its output already went on to the client.
    Lost { why: String, streamed: bool },
}

/// The first answer to an offer.
#[derive(Debug)]
pub(crate) enum Offer {
    /// The peer took a slot: the job runs there now.
    Accepted(Accepted),
    /// It never ran there.
    NotRun(String),
    /// No clear answer: it may have run there.
    Lost(String),
}

/// A job a peer accepted; [`Accepted::outcome`] waits for its end.
#[derive(Debug)]
pub(crate) struct Accepted {
    recv: quinn::RecvStream,
    peer: u64,
    burst: Arc<Burst>,
}

/// Offers `dispatch` to `peer` through `client`: one round trip when the
/// peer is alive. A job the peer takes is counted on its load in `burst`
/// until it ends.
pub(crate) async fn offer(
    (client, burst): (&PeerClient, &Arc<Burst>),
    peer: u64,
    dispatch: Dispatch,
    deadline: Instant,
) -> Offer {
    let job = dispatch.execute.job;
    let open = OPEN_TIMEOUT.min(deadline.saturating_duration_since(Instant::now()));
    let mut recv = match client.open_dispatch(peer, dispatch, open).await {
        Ok(recv) => recv,
        Err(e) => return Offer::NotRun(e.to_string()),
    };
    let first = tokio::time::timeout(ACCEPT_TIMEOUT, read_dispatch_reply(&mut recv)).await;
    // Anything but a clear answer: the acceptance may be what was lost.
    match first {
        Ok(Ok(Some(DispatchReply::Accepted))) => {
            tracing::debug!(%job, peer, "accepted by the peer");
            let burst = burst.clone();
            burst.peer_took(peer);
            Offer::Accepted(Accepted { recv, peer, burst })
        }
        Ok(Ok(Some(DispatchReply::Refused(r)))) => Offer::NotRun(format!("refused: {r}")),
        Ok(Ok(Some(other))) => Offer::Lost(format!("answer before acceptance: {other:?}")),
        Ok(Ok(None)) => Offer::Lost("the peer closed the stream".into()),
        Ok(Err(e)) => Offer::Lost(e.to_string()),
        Err(_) => Offer::Lost(format!("no acceptance within {ACCEPT_TIMEOUT:?}")),
    }
}

impl Accepted {
    pub(crate) fn peer(&self) -> u64 {
        self.peer
    }

    /// Waits for the job's end, at most a little after `deadline` (the
    /// peer enforces the deadline itself). The chunks the guest emitted
    /// there go into `sink` as they come (a streamed job: the next frame is
    /// read only once `sink` took the last, so a client that stops reading
    /// holds the peer back through QUIC's flow control), or else come
    /// before the returned bytes in the output.
    pub(crate) async fn outcome(
        mut self,
        (deadline, deadline_ms): (Instant, u64),
        sink: Option<&tokio::sync::mpsc::Sender<Vec<u8>>>,
    ) -> Attempt {
        let give_up_at = deadline + ANSWER_GRACE;
        let mut chunks = Vec::new();
        let mut expected_seq = 0u32;
        let lost = |why: String, seq: u32| Attempt::Lost {
            why,
            streamed: sink.is_some() && seq > 0,
        };
        loop {
            let next =
                tokio::time::timeout_at(give_up_at.into(), read_dispatch_reply(&mut self.recv))
                    .await;
            return match next {
                Ok(Ok(Some(DispatchReply::Output { seq, chunk }))) if seq == expected_seq => {
                    expected_seq += 1;
                    if let Some(sink) = sink {
                        match tokio::time::timeout_at(give_up_at.into(), sink.send(chunk)).await {
                            Ok(Ok(())) => continue,
                            // The client went away: dropping the stream
                            // cancels the job on the peer.
                            Ok(Err(_)) => Attempt::Done(Err(Failure::Cancelled.into())),
                            Err(_) => {
                                Attempt::Done(Err(Failure::DeadlineExceeded { deadline_ms }.into()))
                            }
                        }
                    } else if chunks.len() + chunk.len() > MAX_OUTPUT {
                        lost(
                            format!("the peer sent over {MAX_OUTPUT} bytes of output"),
                            expected_seq,
                        )
                    } else {
                        chunks.extend_from_slice(&chunk);
                        continue;
                    }
                }
                Ok(Ok(Some(DispatchReply::Completed {
                    body,
                    completion,
                    executor,
                    ..
                }))) => {
                    self.burst.peer_freed(self.peer);
                    chunks.extend_from_slice(&body);
                    Attempt::Done(Ok(JobOutput {
                        body: chunks,
                        completion,
                        executor,
                    }))
                }
                Ok(Ok(Some(DispatchReply::Failed { failure, exec_us }))) => {
                    self.burst.peer_freed(self.peer);
                    Attempt::Done(Err(JobFailed {
                        failure,
                        exec_us,
                        streamed: sink.is_some() && expected_seq > 0,
                    }))
                }
                Ok(Ok(Some(other))) => lost(format!("out-of-order answer {other:?}"), expected_seq),
                Ok(Ok(None)) => lost("the peer closed the stream".into(), expected_seq),
                Ok(Err(e)) => lost(e, expected_seq),
                Err(_) => lost("the peer stopped answering".into(), expected_seq),
            };
        }
    }
}
