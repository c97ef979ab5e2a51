//! What a job's placement does after each thing that can happen to it:
//! a candidate declines, a peer goes silent, a peer that took the job is
//! lost, every host refuses. Pure: [`next`] maps an [`Event`] and what the
//! job has been through ([`Attempt`]) to a [`Step`], and the lifecycle in
//! `job` only carries steps out.
//!
//! The rules keep the delivery contract: a job that may have run is never
//! run again unless it is idempotent, and is never reported as refused
//! (which tells the caller it is safe to retry).

use spillway_proto::{Failure, Refusal};

/// Peers lost with an idempotent job before it gives up.
pub(crate) const MAX_LOST_PEERS: u32 = 3;

/// What a job has been through, as the rules need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Attempt {
    /// A second run does no harm.
    pub(crate) idempotent: bool,
    /// Peers lost while they held the job.
    pub(crate) lost: u32,
    /// Its deadline has passed.
    pub(crate) deadline_passed: bool,
    /// Some of its output already went to the client (a streamed job): a
    /// second run would send it again.
    pub(crate) streamed: bool,
}

/// What just happened to the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    /// A candidate answered that it did not run the job.
    NotRun,
    /// A candidate gave no clear answer: it may have started the job.
    NoClearAnswer,
    /// A peer that took the job was lost before its outcome.
    LostMidJob,
    /// The scheduler refused, or every candidate declined and the
    /// fallback refuses.
    Refused(Refusal),
}

/// What the job does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// Offer it to the next candidate.
    TryNext,
    /// Decide again from the start (with one more lost peer counted).
    PlaceAgain,
    /// End it with this failure.
    Fail(Failure),
}

fn executor_lost() -> Failure {
    Failure::ExecutorLost { may_have_run: true }
}

/// The step after `event`.
pub(crate) fn next(attempt: &Attempt, event: Event) -> Step {
    match event {
        Event::NotRun => Step::TryNext,
        Event::NoClearAnswer if attempt.idempotent => Step::TryNext,
        Event::NoClearAnswer => Step::Fail(executor_lost()),
        Event::LostMidJob
            if attempt.idempotent
                && attempt.lost < MAX_LOST_PEERS
                && !attempt.deadline_passed
                && !attempt.streamed =>
        {
            Step::PlaceAgain
        }
        Event::LostMidJob => Step::Fail(executor_lost()),
        // A lost peer may have run it: not a refusal, whatever stops it now.
        Event::Refused(_) if attempt.lost > 0 => Step::Fail(executor_lost()),
        Event::Refused(refusal) => Step::Fail(Failure::Refused(refusal)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_event_leads_to_its_step() {
        let fresh = Attempt {
            idempotent: false,
            lost: 0,
            deadline_passed: false,
            streamed: false,
        };
        let retryable = Attempt {
            idempotent: true,
            ..fresh
        };
        let full = Refusal::QueueFull { retry_after_ms: 5 };
        let lost = Step::Fail(executor_lost());
        let table: Vec<(&str, Attempt, Event, Step)> = vec![
            ("a decline moves on", fresh, Event::NotRun, Step::TryNext),
            (
                "no clear answer: an idempotent job moves on",
                retryable,
                Event::NoClearAnswer,
                Step::TryNext,
            ),
            (
                "no clear answer: any other may have run",
                fresh,
                Event::NoClearAnswer,
                lost.clone(),
            ),
            (
                "lost mid-job: an idempotent job is placed again",
                retryable,
                Event::LostMidJob,
                Step::PlaceAgain,
            ),
            (
                "lost mid-job: any other may have run",
                fresh,
                Event::LostMidJob,
                lost.clone(),
            ),
            (
                "lost mid-job a third time: given up",
                Attempt {
                    lost: MAX_LOST_PEERS,
                    ..retryable
                },
                Event::LostMidJob,
                lost.clone(),
            ),
            (
                "lost mid-job past the deadline: given up",
                Attempt {
                    deadline_passed: true,
                    ..retryable
                },
                Event::LostMidJob,
                lost.clone(),
            ),
            (
                "lost mid-job after output reached the client: not run again",
                Attempt {
                    streamed: true,
                    ..retryable
                },
                Event::LostMidJob,
                lost.clone(),
            ),
            (
                "refused before anything ran: the refusal",
                fresh,
                Event::Refused(full.clone()),
                Step::Fail(Failure::Refused(full.clone())),
            ),
            (
                "refused after a lost peer: it may have run",
                Attempt {
                    lost: 1,
                    ..retryable
                },
                Event::Refused(full),
                lost,
            ),
        ];
        for (name, attempt, event, want) in table {
            assert_eq!(next(&attempt, event), want, "{name}");
        }
    }
}
