//! At most one leader per term, across every host's reports.

use super::Violation;
use crate::history::History;
use std::collections::BTreeMap;

pub const NAME: &str = "one_leader";

pub fn check(h: &History) -> Vec<Violation> {
    let mut by_term: BTreeMap<u64, BTreeMap<&str, Vec<&str>>> = BTreeMap::new();
    for o in &h.leaders {
        if let Some(leader) = &o.leader {
            by_term
                .entry(o.term)
                .or_default()
                .entry(leader)
                .or_default()
                .push(h.host(o.host));
        }
    }
    by_term
        .into_iter()
        .filter(|(_, leaders)| leaders.len() > 1)
        .map(|(term, leaders)| {
            let seen: Vec<String> = leaders
                .iter()
                .map(|(l, by)| format!("{l} (seen by {})", dedup(by).join(", ")))
                .collect();
            Violation {
                invariant: NAME,
                detail: format!(
                    "term {term} had {} leaders: {}",
                    leaders.len(),
                    seen.join("; ")
                ),
            }
        })
        .collect()
}

fn dedup<'a>(hosts: &[&'a str]) -> Vec<&'a str> {
    let mut v = hosts.to_vec();
    v.sort_unstable();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{LeaderObservation, fixture};

    #[test]
    fn two_leaders_in_one_term_are_caught() {
        let mut h = fixture::clean();
        h.leaders.push(LeaderObservation {
            at_ms: 70,
            host: 2,
            term: 2,
            leader: Some("n3".into()),
        });
        let v = check(&h);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(
            v[0].detail,
            "term 2 had 2 leaders: n2 (seen by n2); n3 (seen by n3)"
        );
    }
}
