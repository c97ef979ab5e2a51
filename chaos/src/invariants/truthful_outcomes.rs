//! An outcome tells the truth about whether the job ran.
//!
//! A refusal or failure with `may_have_run: false` promises the job never
//! started, so no journal may show it. A result promises it did, so some
//! journal must. (Checked on jobs sent once; an idempotent job's retries
//! share one input, so its attempts cannot be told apart in the journals.)

use super::Violation;
use crate::history::{History, Outcome};

pub const NAME: &str = "truthful_outcomes";

pub fn check(h: &History) -> Vec<Violation> {
    let runs = h.runs_by_input();
    let mut found = Vec::new();
    for j in &h.jobs {
        let digest = j.plan.input_digest().to_hex();
        let ran = runs.get(digest.as_str()).copied().unwrap_or(0);
        for a in &j.attempts {
            if a.outcome.never_ran() && ran > 0 && j.attempts.len() == 1 {
                found.push(Violation {
                    invariant: NAME,
                    detail: format!(
                        "job {} was answered may_have_run: false by {} but ran {ran} time(s)",
                        j.plan.id,
                        h.host(a.host)
                    ),
                });
            }
            if matches!(a.outcome, Outcome::Completed { replay: false, .. }) && ran == 0 {
                found.push(Violation {
                    invariant: NAME,
                    detail: format!(
                        "job {} got a result from {} but no node journaled running it",
                        j.plan.id,
                        h.host(a.host)
                    ),
                });
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Execution, fixture};

    #[test]
    fn a_refused_job_that_ran_is_caught() {
        let mut h = fixture::clean();
        h.executions.push(Execution {
            host: 2,
            job_id: "j4".into(),
            input_digest: h.jobs[2].plan.input_digest().to_hex(),
            unix_ms: 5,
        });
        let v = check(&h);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(
            v[0].detail
                .contains("job 2 was answered may_have_run: false")
        );
    }

    #[test]
    fn a_result_nobody_ran_is_caught() {
        let mut h = fixture::clean();
        h.executions.remove(0);
        let v = check(&h);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].detail.contains("job 0 got a result"), "{v:?}");
    }
}
