//! The delivery contract and the control plane's promises, checked over a
//! [`History`]. One invariant per file; each has a test that plants a
//! violation in a clean history and sees it caught.

use crate::history::History;
use serde::Serialize;

pub mod at_most_once;
pub mod convergence;
pub mod expected_output;
pub mod one_leader;
pub mod one_outcome;
pub mod residency;
pub mod returned_hosts_get_bursts;
pub mod truthful_outcomes;

/// A broken promise: which invariant, and what exactly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub invariant: &'static str,
    pub detail: String,
}

impl Violation {
    pub fn new(invariant: &'static str, detail: String) -> Self {
        Self { invariant, detail }
    }
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.invariant, self.detail)
    }
}

/// An invariant's check over a history.
pub type Check = fn(&History) -> Vec<Violation>;

/// Every invariant, by name.
pub const ALL: [(&str, Check); 8] = [
    (one_outcome::NAME, one_outcome::check),
    (at_most_once::NAME, at_most_once::check),
    (truthful_outcomes::NAME, truthful_outcomes::check),
    (expected_output::NAME, expected_output::check),
    (convergence::NAME, convergence::check),
    (one_leader::NAME, one_leader::check),
    (residency::NAME, residency::check),
    (
        returned_hosts_get_bursts::NAME,
        returned_hosts_get_bursts::check,
    ),
];

/// Checks them all.
pub fn check_all(history: &History) -> Vec<Violation> {
    ALL.iter().flat_map(|(_, check)| check(history)).collect()
}

#[cfg(test)]
mod tests {
    use crate::history::fixture;

    #[test]
    fn the_clean_history_breaks_no_invariant() {
        assert_eq!(super::check_all(&fixture::clean()), vec![]);
    }
}
