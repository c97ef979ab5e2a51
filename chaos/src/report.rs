//! What a scenario run amounts to: counts of outcomes, failover times and
//! the violations found, derived from its [`History`] (pure).

use crate::history::{History, Outcome};
use crate::invariants::{self, Violation, at_most_once, one_outcome};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    pub scenario: String,
    pub seed: u64,
    /// `namespaces`, `loopback`, or why it was skipped.
    pub net: String,
    pub skipped: Option<String>,
    pub sent: usize,
    pub completed: usize,
    /// Ended with a typed refusal or failure that says it never ran.
    pub refused: usize,
    /// Ended with a typed failure that may have run (or says nothing).
    pub failed: usize,
    /// The host was down or paused and never answered.
    pub unanswered: usize,
    pub lost: usize,
    pub duplicated: usize,
    /// Idempotent jobs that needed more than one attempt.
    pub retried: usize,
    /// From each fault aimed at the leader to the first report of a new one.
    pub failover_ms: Vec<u64>,
    pub converged_after_ms: Option<u64>,
    pub violations: Vec<Violation>,
}

impl ScenarioReport {
    pub fn from_history(h: &History, net: &str) -> Self {
        let mut r = Self::skipped(&h.scenario, h.seed, net, None);
        r.sent = h.jobs.len();
        for job in &h.jobs {
            match job.attempts.last().map(|a| &a.outcome) {
                Some(Outcome::Completed { .. }) => r.completed += 1,
                Some(o) if o.never_ran() => r.refused += 1,
                Some(Outcome::Error { .. } | Outcome::Untyped { .. }) => r.failed += 1,
                Some(Outcome::Unanswered { .. } | Outcome::NoAnswer { .. }) | None => {
                    r.unanswered += 1;
                }
            }
            r.retried += usize::from(job.attempts.len() > 1);
        }
        r.lost = one_outcome::lost(h);
        r.duplicated = at_most_once::check(h).len();
        r.failover_ms = failover_ms(h);
        r.converged_after_ms = h.end.as_ref().and_then(|e| e.converged_after_ms);
        r.violations = invariants::check_all(h);
        r
    }

    pub fn skipped(scenario: &str, seed: u64, net: &str, why: Option<String>) -> Self {
        Self {
            scenario: scenario.to_owned(),
            seed,
            net: net.to_owned(),
            skipped: why,
            sent: 0,
            completed: 0,
            refused: 0,
            failed: 0,
            unanswered: 0,
            lost: 0,
            duplicated: 0,
            retried: 0,
            failover_ms: Vec::new(),
            converged_after_ms: None,
            violations: Vec::new(),
        }
    }

    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    pub const HEADER: &str = "scenario                 net         sent  done  refused  failed  unanswered  lost  dup  retried  failover_ms  converged_ms  result";

    /// One row of the table.
    pub fn row(&self) -> String {
        if let Some(why) = &self.skipped {
            return format!("{:<24} {:<10}  skipped: {why}", self.scenario, self.net);
        }
        let failover = match self.failover_ms.as_slice() {
            [] => "-".to_owned(),
            v => v.iter().map(u64::to_string).collect::<Vec<_>>().join(","),
        };
        let converged = self
            .converged_after_ms
            .map_or("-".to_owned(), |ms| ms.to_string());
        let result = match self.violations.len() {
            0 => "ok".to_owned(),
            n => format!("{n} VIOLATION(S)"),
        };
        format!(
            "{:<24} {:<10} {:>5} {:>5} {:>8} {:>7} {:>11} {:>5} {:>4} {:>8} {:>12} {:>13}  {result}",
            self.scenario,
            self.net,
            self.sent,
            self.completed,
            self.refused,
            self.failed,
            self.unanswered,
            self.lost,
            self.duplicated,
            self.retried,
            failover,
            converged
        )
    }
}

/// For each fault aimed at the leader: the time to the first report, by a
/// host other than the old leader, of a different leader.
pub fn failover_ms(h: &History) -> Vec<u64> {
    h.faults
        .iter()
        .filter_map(|f| {
            let old = f.leader_before.as_deref()?;
            h.leaders
                .iter()
                .filter(|o| o.at_ms >= f.at_ms && h.host(o.host) != old)
                .find(|o| o.leader.as_deref().is_some_and(|l| l != old))
                .map(|o| o.at_ms - f.at_ms)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{FaultRecord, fixture};

    #[test]
    fn counts_follow_the_final_attempt() {
        let r = ScenarioReport::from_history(&fixture::clean(), "loopback");
        assert_eq!(
            (r.sent, r.completed, r.refused, r.failed, r.unanswered),
            (3, 2, 1, 0, 0)
        );
        assert_eq!((r.lost, r.duplicated, r.retried), (0, 0, 1));
        assert!(r.passed());
        assert!(r.row().ends_with("ok"), "{}", r.row());
    }

    #[test]
    fn failover_is_timed_from_the_fault_to_a_new_leader() {
        let mut h = fixture::clean();
        h.faults.push(FaultRecord {
            at_ms: 40,
            action: "kill -9 n1 (leader)".into(),
            hosts: vec![0],
            leader_before: Some("n1".into()),
        });
        // n2 reports no leader at 50 ms and itself at 60 ms.
        assert_eq!(failover_ms(&h), vec![20]);
    }
}
