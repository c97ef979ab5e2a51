//! Every result equals the job's expected output (the workload computes
//! each `spin` answer itself), so no job got another's result or a
//! damaged one.

use super::Violation;
use crate::history::{History, Outcome};

pub const NAME: &str = "expected_output";

pub fn check(h: &History) -> Vec<Violation> {
    h.jobs
        .iter()
        .flat_map(|j| j.attempts.iter().map(move |a| (j, a)))
        .filter_map(|(j, a)| match &a.outcome {
            Outcome::Completed { body, ran_on, .. } if body.as_bytes() != j.plan.expected() => {
                Some(Violation {
                    invariant: NAME,
                    detail: format!(
                        "job {} (run on {ran_on}) answered {body:?}, expected {:?}",
                        j.plan.id,
                        String::from_utf8_lossy(&j.plan.expected())
                    ),
                })
            }
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::fixture;

    #[test]
    fn a_wrong_result_is_caught() {
        let mut h = fixture::clean();
        // Job 0 answered with job 1's result.
        let other = String::from_utf8(h.jobs[1].plan.expected()).unwrap();
        if let Outcome::Completed { body, .. } = &mut h.jobs[0].attempts[0].outcome {
            *body = other;
        }
        let v = check(&h);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(
            v[0].detail.starts_with("job 0 (run on n2) answered"),
            "{v:?}"
        );
    }
}
