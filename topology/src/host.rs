//! One member of the cluster as this host's scheduler sees it.

use crate::LoadSample;
use spillway_proto::NodeId;
use std::collections::BTreeMap;
use std::time::Duration;

/// A member: what it offers, whether it takes work, its load and how far
/// away it is.
#[derive(Debug, Clone, PartialEq)]
pub struct HostView {
    pub id: NodeId,
    /// An active member (not joining, draining or removed).
    pub accepting: bool,
    /// GPUs its node reported.
    pub gpus: u32,
    /// Placement labels (`zone=a`, `pool=batch`).
    pub labels: BTreeMap<String, String>,
    /// Its latest gossiped load; `None` before the first report.
    pub load: Option<LoadSample>,
    /// Smoothed round trip to it, from the QUIC connection.
    pub rtt: Option<Duration>,
}

impl HostView {
    /// Whether every label in `wanted` is on this host with the same value.
    pub fn has_labels(&self, wanted: &BTreeMap<String, String>) -> bool {
        wanted.iter().all(|(k, v)| self.labels.get(k) == Some(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_must_all_match() {
        let host = HostView {
            id: NodeId(1),
            accepting: true,
            gpus: 0,
            labels: [("zone".to_owned(), "a".to_owned())].into(),
            load: None,
            rtt: None,
        };
        let want = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(host.has_labels(&want(&[])));
        assert!(host.has_labels(&want(&[("zone", "a")])));
        assert!(!host.has_labels(&want(&[("zone", "b")])));
        assert!(!host.has_labels(&want(&[("zone", "a"), ("pool", "x")])));
    }
}
