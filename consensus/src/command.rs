//! The commands the control log carries, and what applying one answers.

use crate::state::{FunctionEntry, ResidencyStatus};
use serde::{Deserialize, Serialize};
use spillway_proto::{Digest, NodeId};
use std::fmt;

/// A change to the control state. Every one is a log entry, so the log is
/// also the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlCommand {
    /// Names an artifact (a new name, or a new version under the name).
    PutArtifact {
        name: String,
        digest: Digest,
        size: u64,
    },
    /// Registers or replaces a function.
    PutFunction(FunctionEntry),
    /// Reports what a host holds of an artifact.
    SetResidency {
        host: NodeId,
        digest: Digest,
        status: ResidencyStatus,
    },
}

impl fmt::Display for ControlCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlCommand::PutArtifact { name, digest, .. } => {
                write!(f, "put artifact {name} = {digest}")
            }
            ControlCommand::PutFunction(func) => write!(f, "put function {}", func.name),
            ControlCommand::SetResidency {
                host,
                digest,
                status,
            } => {
                write!(f, "residency of {digest} on {host}: {status:?}")
            }
        }
    }
}

/// The answer to an applied command.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ControlResponse {
    /// Applied.
    #[default]
    Done,
    /// Not applied; the state is unchanged. The reason names what was wrong.
    Rejected(String),
}
