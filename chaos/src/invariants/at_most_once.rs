//! A job that is not idempotent runs at most once, anywhere in the
//! cluster.
//!
//! Read from the nodes' execution journals (each line written before the
//! guest starts, so a run cut short by a kill still counts), matched to
//! jobs by the digest of their input, which the workload makes unique.
//! An idempotent job may run again after its executor was lost; this
//! invariant does not count those.

use super::Violation;
use crate::history::History;

pub const NAME: &str = "at_most_once";

pub fn check(h: &History) -> Vec<Violation> {
    let runs = h.runs_by_input();
    h.jobs
        .iter()
        .filter(|j| !j.plan.idempotent)
        .filter_map(|j| {
            let digest = j.plan.input_digest().to_hex();
            let n = runs.get(digest.as_str()).copied().unwrap_or(0);
            (n > 1).then(|| {
                let hosts: Vec<&str> = h
                    .executions
                    .iter()
                    .filter(|e| e.input_digest == digest)
                    .map(|e| h.host(e.host))
                    .collect();
                Violation {
                    invariant: NAME,
                    detail: format!(
                        "job {} (not idempotent) ran {n} times, on {}",
                        j.plan.id,
                        hosts.join(", ")
                    ),
                }
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Execution, fixture};

    #[test]
    fn a_second_run_of_a_job_that_is_not_idempotent_is_caught() {
        let mut h = fixture::clean();
        let again = Execution {
            host: 2,
            job_id: "j9".into(),
            ..h.executions[0].clone()
        };
        h.executions.push(again);
        let v = check(&h);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].detail, "job 0 (not idempotent) ran 2 times, on n2, n3");
    }

    #[test]
    fn an_idempotent_job_may_run_again() {
        // The fixture's job 1 ran on n2 and n3.
        assert_eq!(check(&fixture::clean()), vec![]);
    }
}
