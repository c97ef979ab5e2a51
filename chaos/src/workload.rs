//! The workload: which jobs a run sends, where, when, and what each must
//! answer. Pure: a function of the seed.
//!
//! Every job runs the `spin` example guest with its own seed, so every
//! input is distinct (the node's execution journal names a job's input by
//! its digest) and every job has one right answer, computed here.

use crate::rng::SeededRng;
use serde::{Deserialize, Serialize};
use spillway_proto::Digest;

/// The function registered for jobs that must run at most once.
pub const ONCE_FUNCTION: &str = "chaos-once";
/// The function registered as idempotent (retried under a key).
pub const RETRY_FUNCTION: &str = "chaos-retry";

/// How a scenario's load looks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WorkloadShape {
    pub jobs: usize,
    /// Jobs are sent over this long (open loop, random gaps).
    pub spread_ms: u64,
    /// Share of jobs that are idempotent.
    pub idempotent: f64,
    /// `spin` rounds per job (about a nanosecond and a half each).
    pub rounds: (u32, u32),
    /// Which hosts receive jobs (indexes); empty: all of them.
    pub targets: &'static [usize],
    /// `spillway-deadline-ms` on every job, when set.
    pub deadline_ms: Option<u64>,
}

/// One job to send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobPlan {
    pub id: u64,
    /// Milliseconds after the run starts.
    pub at_ms: u64,
    /// The host it is first sent to (index).
    pub host: usize,
    pub idempotent: bool,
    pub rounds: u32,
    pub seed: u64,
    pub deadline_ms: Option<u64>,
}

impl JobPlan {
    pub fn function(&self) -> &'static str {
        match self.idempotent {
            true => RETRY_FUNCTION,
            false => ONCE_FUNCTION,
        }
    }

    /// The guest's input: rounds, then the seed.
    pub fn input(&self) -> Vec<u8> {
        let mut input = self.rounds.to_le_bytes().to_vec();
        input.extend_from_slice(&self.seed.to_le_bytes());
        input
    }

    pub fn input_digest(&self) -> Digest {
        Digest::of(&self.input())
    }

    /// What the guest must answer.
    pub fn expected(&self) -> Vec<u8> {
        spin_answer(self.rounds, self.seed)
    }

    /// The idempotency key an idempotent job is sent (and retried) with.
    pub fn idempotency_key(&self, run_seed: u64) -> Option<String> {
        self.idempotent
            .then(|| format!("chaos-{run_seed:x}-{}", self.id))
    }
}

/// The jobs of one run, in sending order.
pub fn generate(rng: &SeededRng, hosts: usize, shape: &WorkloadShape) -> Vec<JobPlan> {
    let mut rng = rng.fork("workload");
    let mut at = 0;
    let gap = 2 * shape.spread_ms / shape.jobs.max(1) as u64;
    (0..shape.jobs as u64)
        .map(|id| {
            let host = match shape.targets {
                [] => rng.pick(hosts),
                t => t[rng.pick(t.len())],
            };
            let job = JobPlan {
                id,
                at_ms: at.min(shape.spread_ms),
                host,
                idempotent: rng.chance(shape.idempotent),
                rounds: rng.range(u64::from(shape.rounds.0), u64::from(shape.rounds.1)) as u32,
                // Never zero: seed 0 is `spin`'s default start state.
                seed: rng.next_u64() | 1,
                deadline_ms: shape.deadline_ms,
            };
            at += rng.range(0, gap);
            job
        })
        .collect()
}

/// `spin`'s answer: `rounds` xorshift64 steps from its fixed start state
/// XOR `seed`, as 16 lower-case hex digits (see `examples/guests/spin.wat`).
pub fn spin_answer(rounds: u32, seed: u64) -> Vec<u8> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d ^ seed;
    for _ in 0..rounds {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    format!("{x:016x}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPE: WorkloadShape = WorkloadShape {
        jobs: 200,
        spread_ms: 5_000,
        idempotent: 0.5,
        rounds: (10, 20),
        targets: &[],
        deadline_ms: None,
    };

    #[test]
    fn the_same_seed_gives_the_same_jobs() {
        let a = generate(&SeededRng::new(9), 3, &SHAPE);
        assert_eq!(a, generate(&SeededRng::new(9), 3, &SHAPE));
        assert_ne!(a, generate(&SeededRng::new(10), 3, &SHAPE));
    }

    #[test]
    fn jobs_are_distinct_ordered_and_within_the_shape() {
        let jobs = generate(&SeededRng::new(1), 3, &SHAPE);
        assert_eq!(jobs.len(), 200);
        let digests: std::collections::BTreeSet<_> =
            jobs.iter().map(JobPlan::input_digest).collect();
        assert_eq!(digests.len(), 200, "every input is distinct");
        assert!(jobs.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
        assert!(jobs.iter().all(|j| j.at_ms <= 5_000 && j.host < 3));
        assert!(jobs.iter().all(|j| (10..=20).contains(&j.rounds)));
        let idempotent = jobs.iter().filter(|j| j.idempotent).count();
        assert!((60..140).contains(&idempotent), "{idempotent}");
        let only = WorkloadShape {
            targets: &[0],
            ..SHAPE
        };
        assert!(
            generate(&SeededRng::new(1), 3, &only)
                .iter()
                .all(|j| j.host == 0)
        );
    }

    #[test]
    fn the_expected_answer_is_spins() {
        // Zero rounds: the start state XOR the seed, printed.
        assert_eq!(spin_answer(0, 0), b"2545f4914f6cdd1d");
        assert_eq!(spin_answer(0, 1), b"2545f4914f6cdd1c");
        assert_ne!(spin_answer(5, 1), spin_answer(5, 3));
    }
}
