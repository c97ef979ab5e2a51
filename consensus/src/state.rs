//! The control state: what every host agrees on. Pure: changed only by
//! [`ControlState::apply`], the same on every replica.

use crate::command::{ControlCommand, ControlResponse};
use serde::{Deserialize, Serialize};
use spillway_proto::{Accelerator, Digest, NodeId};
use std::collections::BTreeMap;

/// A named artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactEntry {
    pub name: String,
    pub digest: Digest,
    pub size: u64,
}

/// A registered function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionEntry {
    pub name: String,
    pub digest: Digest,
    pub accelerator: Accelerator,
    pub deadline_ms: u64,
    pub memory_limit_bytes: u64,
    pub idempotent: bool,
}

/// What a host holds of an artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResidencyStatus {
    Fetching,
    Resident,
    Evicted,
}

/// Artifacts, functions and residency.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlState {
    artifacts: BTreeMap<String, ArtifactEntry>,
    functions: BTreeMap<String, FunctionEntry>,
    /// digest → host → status (evicted entries are dropped).
    residency: BTreeMap<Digest, BTreeMap<NodeId, ResidencyStatus>>,
}

impl ControlState {
    /// Applies one command. A rejected command leaves the state unchanged.
    pub fn apply(&mut self, command: &ControlCommand) -> ControlResponse {
        match command {
            ControlCommand::PutArtifact { name, digest, size } => {
                self.artifacts.insert(
                    name.clone(),
                    ArtifactEntry {
                        name: name.clone(),
                        digest: *digest,
                        size: *size,
                    },
                );
            }
            ControlCommand::PutFunction(f) => {
                if !self.artifacts.values().any(|a| a.digest == f.digest) {
                    return ControlResponse::Rejected(format!(
                        "function {} names artifact {} which is not registered",
                        f.name, f.digest
                    ));
                }
                self.functions.insert(f.name.clone(), f.clone());
            }
            ControlCommand::SetResidency {
                host,
                digest,
                status,
            } => {
                let hosts = self.residency.entry(*digest).or_default();
                match status {
                    ResidencyStatus::Evicted => {
                        hosts.remove(host);
                        if hosts.is_empty() {
                            self.residency.remove(digest);
                        }
                    }
                    s => {
                        hosts.insert(*host, *s);
                    }
                }
            }
        }
        ControlResponse::Done
    }

    pub fn artifact(&self, name: &str) -> Option<&ArtifactEntry> {
        self.artifacts.get(name)
    }

    pub fn function(&self, name: &str) -> Option<&FunctionEntry> {
        self.functions.get(name)
    }

    /// Hosts holding `digest` as resident.
    pub fn holders(&self, digest: &Digest) -> Vec<NodeId> {
        self.residency
            .get(digest)
            .into_iter()
            .flatten()
            .filter(|(_, s)| **s == ResidencyStatus::Resident)
            .map(|(h, _)| *h)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn function(name: &str, digest: Digest) -> FunctionEntry {
        FunctionEntry {
            name: name.into(),
            digest,
            accelerator: Accelerator::Preferred,
            deadline_ms: 1000,
            memory_limit_bytes: 1 << 20,
            idempotent: false,
        }
    }

    #[test]
    fn functions_need_a_registered_artifact() {
        let mut s = ControlState::default();
        let d = Digest::of(b"echo");
        let before = s.clone();
        assert!(matches!(
            s.apply(&ControlCommand::PutFunction(function("echo", d))),
            ControlResponse::Rejected(_)
        ));
        assert_eq!(s, before, "a rejected command changes nothing");
        let put = ControlCommand::PutArtifact {
            name: "echo".into(),
            digest: d,
            size: 10,
        };
        assert_eq!(s.apply(&put), ControlResponse::Done);
        assert_eq!(
            s.apply(&ControlCommand::PutFunction(function("echo", d))),
            ControlResponse::Done
        );
        assert_eq!(s.function("echo").unwrap().digest, d);
        assert_eq!(s.artifact("echo").unwrap().size, 10);
    }

    #[test]
    fn residency_tracks_holders_and_eviction() {
        let mut s = ControlState::default();
        let d = Digest::of(b"x");
        let set = |host, status| ControlCommand::SetResidency {
            host: NodeId(host),
            digest: d,
            status,
        };
        s.apply(&set(1, ResidencyStatus::Resident));
        s.apply(&set(2, ResidencyStatus::Fetching));
        assert_eq!(s.holders(&d), vec![NodeId(1)]);
        s.apply(&set(2, ResidencyStatus::Resident));
        assert_eq!(s.holders(&d), vec![NodeId(1), NodeId(2)]);
        s.apply(&set(1, ResidencyStatus::Evicted));
        s.apply(&set(2, ResidencyStatus::Evicted));
        assert!(s.holders(&d).is_empty());
        assert_eq!(
            s,
            ControlState::default(),
            "evicting every holder forgets the digest"
        );
    }
}
