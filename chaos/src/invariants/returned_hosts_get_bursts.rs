//! A host that comes back (started again after `kill -9`, or resumed) is
//! offered burst jobs again within a bound: if no burst reaches it within
//! [`BOUND_MS`] of its outage's end while its peers go on bursting (at
//! least [`MIN_BURSTS`] jobs sent after that bound, before one reached it
//! and before its next outage, ran on a host other than the one they were
//! sent to), its peers no longer count it free. This catches a returning
//! host left out whatever the reason (its load reports dropped as stale,
//! its membership or residency not restored).

use super::Violation;
use crate::history::{Attempt, History, Outcome};

pub const NAME: &str = "returned_hosts_get_bursts";

/// How long a returning host may take to be offered bursts again: a few
/// gossip rounds and a rejoin.
pub const BOUND_MS: u64 = 3_000;

/// Bursts elsewhere past the bound that make none reaching the host a
/// finding (a few may all land elsewhere by chance).
pub const MIN_BURSTS: usize = 8;

/// Where a completed burst attempt ran.
fn burst_ran_on(attempt: &Attempt) -> Option<&str> {
    match &attempt.outcome {
        Outcome::Completed {
            ran_on,
            burst: true,
            ..
        } => Some(ran_on),
        _ => None,
    }
}

pub fn check(h: &History) -> Vec<Violation> {
    let mut found = Vec::new();
    for outage in &h.outages {
        let me = h.host(outage.host);
        let next_outage = h
            .outages
            .iter()
            .filter(|o| o.host == outage.host && o.from_ms > outage.to_ms)
            .map(|o| o.from_ms)
            .min()
            .unwrap_or(u64::MAX);
        // Bursts from other hosts while this one was back, in send order.
        let mut bursts: Vec<(u64, bool)> = h
            .jobs
            .iter()
            .flat_map(|j| &j.attempts)
            .filter(|a| a.host != outage.host && a.sent_ms >= outage.to_ms)
            .filter(|a| a.ended_ms <= next_outage)
            .filter_map(|a| burst_ran_on(a).map(|on| (a.sent_ms, on == me)))
            .collect();
        bursts.sort_unstable();
        let first_here = bursts.iter().find(|(_, here)| *here).map(|(at, _)| *at);
        let bound = outage.to_ms + BOUND_MS;
        if first_here.is_some_and(|at| at <= bound) {
            continue;
        }
        let elsewhere = bursts
            .iter()
            .filter(|(at, here)| !here && *at >= bound && first_here.is_none_or(|f| *at < f))
            .count();
        if elsewhere >= MIN_BURSTS {
            let first = first_here.map_or("none reached it".to_owned(), |at| {
                format!("the first reached it at {at} ms")
            });
            found.push(Violation::new(
                NAME,
                format!(
                    "{me} was back at {} ms; {elsewhere} jobs burst elsewhere from {bound} ms on, and {first}",
                    outage.to_ms
                ),
            ));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::JobRecord;
    use crate::history::fixture;

    /// `n` jobs sent to n1 from `from_ms` on, each burst to `ran_on`.
    fn bursts(n: u64, from_ms: u64, ran_on: &str) -> Vec<JobRecord> {
        (0..n)
            .map(|i| {
                let plan = fixture::plan(100 + i, false);
                JobRecord {
                    attempts: vec![Attempt {
                        host: 0,
                        sent_ms: from_ms + i * 100,
                        ended_ms: from_ms + i * 100 + 50,
                        outcome: Outcome::Completed {
                            job_id: format!("b{i}"),
                            ran_on: ran_on.into(),
                            burst: true,
                            replay: false,
                            body: String::new(),
                        },
                    }],
                    plan,
                }
            })
            .collect()
    }

    #[test]
    fn a_returned_host_that_never_gets_a_burst_is_caught() {
        // n3 was out from 35 to 200 ms; 25 bursts from 4 s on all went to n2.
        let mut h = fixture::clean();
        h.jobs.extend(bursts(25, 4_000, "n2"));
        let v = check(&h);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(
            v[0].detail,
            "n3 was back at 200 ms; 25 jobs burst elsewhere from 3200 ms on, and none reached it"
        );
        // One reaching it late, after many went elsewhere, is caught too.
        h.jobs.extend(bursts(1, 9_000, "n3"));
        let v = check(&h);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(
            v[0].detail.ends_with("the first reached it at 9000 ms"),
            "{v:?}"
        );
    }

    #[test]
    fn one_burst_reaching_it_or_too_few_bursts_is_fine() {
        // One reaching it within the bound: fine, however many follow elsewhere.
        let mut h = fixture::clean();
        h.jobs.extend(bursts(1, 2_000, "n3"));
        h.jobs.extend(bursts(25, 4_000, "n2"));
        assert_eq!(check(&h), vec![]);
        // Too few elsewhere to say.
        let mut h = fixture::clean();
        h.jobs.extend(bursts(7, 4_000, "n2"));
        assert_eq!(check(&h), vec![]);
        // Bursts within the bound do not count.
        let mut h = fixture::clean();
        h.jobs.extend(bursts(25, 300, "n2"));
        h.jobs.retain(|j| j.attempts[0].sent_ms < 3_200);
        assert_eq!(check(&h), vec![]);
    }
}
