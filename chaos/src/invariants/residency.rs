//! Residency lists only hosts that really hold the artifact: every host
//! the final residency table names for a digest has a file with exactly
//! those bytes in its node's artifact cache.

use super::Violation;
use crate::history::History;

pub const NAME: &str = "residency";

pub fn check(h: &History) -> Vec<Violation> {
    let Some(end) = &h.end else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for (digest, holders) in &end.residency {
        for host in holders {
            let holds = end.held.get(host).is_some_and(|held| held.contains(digest));
            if !holds {
                found.push(Violation {
                    invariant: NAME,
                    detail: format!("residency lists {host} for {digest}, which it does not hold"),
                });
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::fixture;

    #[test]
    fn a_listed_host_without_the_bytes_is_caught() {
        let mut h = fixture::clean();
        let end = h.end.as_mut().unwrap();
        end.residency.get_mut("d1").unwrap().push("n3".into());
        let v = check(&h);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(
            v[0].detail,
            "residency lists n3 for d1, which it does not hold"
        );
    }

    #[test]
    fn holding_more_than_listed_is_fine() {
        // n2 holds d2, which the table does not list: a copy not yet
        // recorded is harmless; a listed copy that is missing is not.
        assert_eq!(check(&fixture::clean()), vec![]);
    }
}
