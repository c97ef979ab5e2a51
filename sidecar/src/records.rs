//! The JSON shapes of artifacts and functions in the HTTP API, converted
//! from and to the control log's entries (`spillway_consensus`), and the
//! rule for names clients may use.

use serde::{Deserialize, Serialize};
use spillway_consensus::{ArtifactEntry, FunctionEntry};
use spillway_proto::{Accelerator, ArtifactKind};

/// A stored artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRecord {
    pub name: String,
    pub digest: String,
    pub size: u64,
    /// `component`, `kernel_pack` or `weights`.
    #[serde(default)]
    pub kind: ArtifactKind,
    /// The hosts whose nodes hold a checked copy, as the control log
    /// records them (`n1`, …): in a listing; an upload's answer leaves it
    /// out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holders: Vec<String>,
}

/// A registered function: what to run and under which limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionRecord {
    pub name: String,
    /// The artifact as given at creation (a name or a digest).
    pub artifact: String,
    pub digest: String,
    pub accelerator: AcceleratorName,
    pub deadline_ms: u64,
    pub memory_limit_bytes: u64,
    pub idempotent: bool,
    /// The kernel packs its guest may launch from, by name.
    #[serde(default)]
    pub kernel_packs: Vec<String>,
    /// The weights its guest may open, by name.
    #[serde(default)]
    pub weights: Vec<String>,
    /// The model name it serves under the OpenAI-compatible API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openai_model: Option<String>,
}

/// `accelerator` as it appears in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AcceleratorName {
    None,
    #[default]
    Preferred,
    Required,
}

impl From<AcceleratorName> for Accelerator {
    fn from(a: AcceleratorName) -> Self {
        match a {
            AcceleratorName::None => Accelerator::None,
            AcceleratorName::Preferred => Accelerator::Preferred,
            AcceleratorName::Required => Accelerator::Required,
        }
    }
}

/// A name clients may use: 1 to 64 of `a-z 0-9 - _ .`, starting with a
/// letter or digit.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
}

impl From<Accelerator> for AcceleratorName {
    fn from(a: Accelerator) -> Self {
        match a {
            Accelerator::None => AcceleratorName::None,
            Accelerator::Preferred => AcceleratorName::Preferred,
            Accelerator::Required => AcceleratorName::Required,
        }
    }
}

impl From<&ArtifactEntry> for ArtifactRecord {
    fn from(a: &ArtifactEntry) -> Self {
        Self {
            name: a.name.clone(),
            digest: a.digest.to_string(),
            size: a.size,
            kind: a.kind,
            holders: Vec::new(),
        }
    }
}

impl From<&FunctionEntry> for FunctionRecord {
    fn from(f: &FunctionEntry) -> Self {
        Self {
            name: f.name.clone(),
            artifact: f.artifact.clone(),
            digest: f.digest.to_string(),
            accelerator: f.accelerator.into(),
            deadline_ms: f.deadline_ms,
            memory_limit_bytes: f.memory_limit_bytes,
            idempotent: f.idempotent,
            kernel_packs: f.kernel_packs.iter().map(|p| p.name.clone()).collect(),
            weights: f.weights.iter().map(|w| w.name.clone()).collect(),
            openai_model: f.openai_model.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for ok in ["echo", "gemm-2", "a.b_c", "9lives"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "Echo", "-x", "a/b", "a b", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
