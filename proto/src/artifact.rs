//! What kind of thing an artifact is, told from its first bytes, so the
//! sidecar can apply a kind's rules before the node sees the bytes and both
//! agree. The node then validates the kind in full.

use crate::ids::Digest;
use serde::{Deserialize, Serialize};

/// An artifact's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArtifactKind {
    /// A WebAssembly component for the `job-guest` world.
    #[default]
    Component,
    /// A kernel pack: CUDA source or PTX plus a manifest (a JSON document).
    /// Native GPU code: it must be signed by a key its tenant trusts.
    KernelPack,
}

impl ArtifactKind {
    /// The kind `bytes` claim to be: a JSON object is a kernel pack;
    /// anything else is taken for a component (and refused as an invalid
    /// one if it is not).
    pub fn of(bytes: &[u8]) -> Self {
        match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') => ArtifactKind::KernelPack,
            _ => ArtifactKind::Component,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ArtifactKind::Component => "component",
            ArtifactKind::KernelPack => "kernel_pack",
        }
    }
}

/// A kernel pack a function may launch from: the name its guest uses
/// (`gpu.launch("<name>/<kernel>", ...)`) and the pack's digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackRef {
    pub name: String,
    pub digest: Digest,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_told_from_the_first_bytes() {
        assert_eq!(
            ArtifactKind::of(b"\0asm\x0d\0\x01\0"),
            ArtifactKind::Component
        );
        assert_eq!(
            ArtifactKind::of(b"\n  {\"format\": 1}"),
            ArtifactKind::KernelPack
        );
        assert_eq!(ArtifactKind::of(b"garbage"), ArtifactKind::Component);
        assert_eq!(ArtifactKind::of(b""), ArtifactKind::Component);
    }
}
