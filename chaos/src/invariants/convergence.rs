//! After healing, the control state converges and the cluster serves.
//!
//! Every host reports the same applied index and the same state
//! fingerprint (a digest of the whole control state) within the bound,
//! and every host runs a job within the bound.

use super::Violation;
use crate::history::History;

pub const NAME: &str = "convergence";

pub fn check(h: &History) -> Vec<Violation> {
    let Some(end) = &h.end else {
        return vec![violation("the run never reached its end checks".into())];
    };
    let mut found = Vec::new();
    let first = end.hosts.first();
    for (i, host) in end.hosts.iter().enumerate() {
        if host.fingerprint.is_none() {
            found.push(violation(format!("{} did not report its state", h.host(i))));
        } else if Some(host) != first {
            found.push(violation(format!(
                "{} holds state {:?} at index {:?}; {} holds {:?} at {:?}",
                h.host(i),
                host.fingerprint,
                host.applied_index,
                h.host(0),
                first.and_then(|f| f.fingerprint.clone()),
                first.and_then(|f| f.applied_index)
            )));
        }
    }
    match end.converged_after_ms {
        Some(ms) if ms <= end.bound_ms => {}
        Some(ms) => found.push(violation(format!(
            "converged {ms} ms after healing, over the {} ms bound",
            end.bound_ms
        ))),
        None => found.push(violation(format!(
            "hosts did not converge within {} ms of healing",
            end.bound_ms
        ))),
    }
    for (i, served) in end.served_after_ms.iter().enumerate() {
        match served {
            Some(ms) if *ms <= end.bound_ms => {}
            _ => found.push(violation(format!(
                "{} did not run a job within {} ms of healing",
                h.host(i),
                end.bound_ms
            ))),
        }
    }
    found
}

fn violation(detail: String) -> Violation {
    Violation::new(NAME, detail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::fixture;

    #[test]
    fn a_host_left_behind_is_caught() {
        let mut h = fixture::clean();
        let end = h.end.as_mut().unwrap();
        end.hosts[2].applied_index = Some(31);
        end.hosts[2].fingerprint = Some("cd".into());
        end.converged_after_ms = None;
        let v = check(&h);
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(v[0].detail.starts_with("n3 holds state"), "{v:?}");
        assert!(v[1].detail.contains("did not converge"), "{v:?}");
    }

    #[test]
    fn a_host_that_stops_serving_is_caught() {
        let mut h = fixture::clean();
        h.end.as_mut().unwrap().served_after_ms[1] = None;
        let v = check(&h);
        assert_eq!(v.len(), 1);
        assert!(v[0].detail.starts_with("n2 did not run a job"));
    }

    #[test]
    fn a_run_without_end_checks_fails() {
        let mut h = fixture::clean();
        h.end = None;
        assert_eq!(check(&h).len(), 1);
    }
}
