//! Every accepted job ends in exactly one typed outcome, and nothing is
//! lost.
//!
//! An attempt is lost when its host stayed up (neither killed nor paused
//! while the request was open) and still nothing came back within the
//! client's bound (the job's deadline and a grace). Every answer must be
//! typed: a 200 with a job id, or a JSON error with a `code`. And one job
//! id is one job's: two different requests answered with the same job id
//! means one outcome was handed out twice.

use super::Violation;
use crate::history::{History, Outcome};
use std::collections::BTreeMap;

pub const NAME: &str = "one_outcome";

pub fn check(h: &History) -> Vec<Violation> {
    let mut found = Vec::new();
    let mut owner: BTreeMap<&str, u64> = BTreeMap::new();
    for job in &h.jobs {
        if job.attempts.is_empty() {
            found.push(violation(format!("job {} was never sent", job.plan.id)));
        }
        for a in &job.attempts {
            match &a.outcome {
                Outcome::NoAnswer { waited_ms }
                    if !h.out_between(a.host, a.sent_ms, a.ended_ms) =>
                {
                    found.push(violation(format!(
                        "job {} lost: {} stayed up and did not answer in {waited_ms} ms",
                        job.plan.id,
                        h.host(a.host)
                    )));
                }
                Outcome::Untyped { status, body } => found.push(violation(format!(
                    "job {}: {} answered {status} without a typed error: {body:?}",
                    job.plan.id,
                    h.host(a.host)
                ))),
                _ => {}
            }
            if let Some(id) = a.outcome.job_id() {
                let first = *owner.entry(id).or_insert(job.plan.id);
                if first != job.plan.id {
                    found.push(violation(format!(
                        "job id {id} answered two requests: jobs {first} and {}",
                        job.plan.id
                    )));
                }
            }
        }
    }
    found
}

/// Attempts that count as lost (for the report).
pub fn lost(h: &History) -> usize {
    check(h)
        .iter()
        .filter(|v| v.detail.contains(" lost: "))
        .count()
}

fn violation(detail: String) -> Violation {
    Violation::new(NAME, detail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::fixture;

    #[test]
    fn a_healthy_host_that_never_answers_lost_the_job() {
        let mut h = fixture::clean();
        h.jobs[0].attempts[0].outcome = Outcome::NoAnswer { waited_ms: 9000 };
        let v = check(&h);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].detail.contains("job 0 lost"), "{v:?}");
        assert_eq!(lost(&h), 1);
    }

    #[test]
    fn no_answer_from_a_host_that_was_down_is_not_a_loss() {
        let mut h = fixture::clean();
        // n3 is out from 35 ms on; the refused job went there at 20 ms.
        h.jobs[2].attempts[0].outcome = Outcome::NoAnswer { waited_ms: 9000 };
        h.jobs[2].attempts[0].ended_ms = 9020;
        assert_eq!(check(&h), vec![]);
    }

    #[test]
    fn an_untyped_answer_is_caught() {
        let mut h = fixture::clean();
        h.jobs[2].attempts[0].outcome = Outcome::Untyped {
            status: 500,
            body: "oops".into(),
        };
        assert!(check(&h)[0].detail.contains("without a typed error"));
    }

    #[test]
    fn one_job_id_answering_two_requests_is_caught() {
        let mut h = fixture::clean();
        if let Outcome::Completed { job_id, .. } = &mut h.jobs[1].attempts[1].outcome {
            *job_id = "j1".into();
        }
        let v = check(&h);
        assert_eq!(v.len(), 1);
        assert!(
            v[0].detail.contains("job id j1 answered two requests"),
            "{v:?}"
        );
    }
}
