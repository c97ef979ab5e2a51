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
    /// A model's weights: a safetensors file (a little-endian `u64` header
    /// length, a JSON header naming each tensor's dtype, shape and byte
    /// range, then the tensors' bytes). Data, never code.
    Weights,
}

/// The largest safetensors header the format allows (the reference
/// parser's limit): a length prefix above it is not a weights file.
pub const MAX_WEIGHTS_HEADER: u64 = 100_000_000;

impl ArtifactKind {
    /// The kind `bytes` (an artifact's first bytes: [`KIND_PREFIX`] of them
    /// are enough) claim to be: a safetensors length prefix followed by a
    /// JSON object is weights; a JSON object is a kernel pack; anything
    /// else is taken for a component (and refused as an invalid one if it
    /// is not).
    pub fn of(bytes: &[u8]) -> Self {
        if let Some(prefix) = bytes.get(..8)
            && bytes.get(8) == Some(&b'{')
        {
            let header = u64::from_le_bytes(prefix.try_into().expect("eight bytes"));
            if (2..=MAX_WEIGHTS_HEADER).contains(&header) {
                return ArtifactKind::Weights;
            }
        }
        match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') => ArtifactKind::KernelPack,
            _ => ArtifactKind::Component,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ArtifactKind::Component => "component",
            ArtifactKind::KernelPack => "kernel_pack",
            ArtifactKind::Weights => "weights",
        }
    }
}

/// How many first bytes decide an artifact's kind, but for a kernel pack
/// that starts with more whitespace than that (see [`KindProbe`]).
pub const KIND_PREFIX: usize = 9;

/// An artifact's kind told as its bytes arrive, without keeping them: the
/// first [`KIND_PREFIX`] bytes and the first one that is not whitespace.
#[derive(Debug, Clone, Default)]
pub struct KindProbe {
    head: Vec<u8>,
    first_visible: Option<u8>,
}

impl KindProbe {
    /// Takes the next bytes of the artifact.
    pub fn feed(&mut self, bytes: &[u8]) {
        let room = KIND_PREFIX.saturating_sub(self.head.len());
        self.head.extend_from_slice(&bytes[..room.min(bytes.len())]);
        if self.first_visible.is_none() {
            self.first_visible = bytes.iter().copied().find(|b| !b.is_ascii_whitespace());
        }
    }

    /// The kind, once enough bytes arrived to tell it for sure (`None`
    /// before: fewer than [`KIND_PREFIX`] bytes, or only whitespace).
    pub fn decided(&self) -> Option<ArtifactKind> {
        let weights = ArtifactKind::of(&self.head) == ArtifactKind::Weights;
        (self.head.len() == KIND_PREFIX && (weights || self.first_visible.is_some()))
            .then(|| self.kind())
    }

    /// The kind of the bytes fed so far (at the end: the artifact's kind).
    pub fn kind(&self) -> ArtifactKind {
        match ArtifactKind::of(&self.head) {
            ArtifactKind::Weights => ArtifactKind::Weights,
            _ if self.first_visible == Some(b'{') => ArtifactKind::KernelPack,
            _ => ArtifactKind::Component,
        }
    }
}

/// An artifact a function names beside its component: a kernel pack its
/// guest launches from (`gpu.launch("<name>/<kernel>", ...)`) or weights
/// it opens (`gpu.weights("<name>", "<tensor>")`), by the name the guest
/// uses and the artifact's digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedArtifact {
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
        let weights = |header: u64, next: u8| {
            let mut b = header.to_le_bytes().to_vec();
            b.push(next);
            b
        };
        for (bytes, kind) in [
            (weights(120, b'{'), ArtifactKind::Weights),
            (weights(MAX_WEIGHTS_HEADER, b'{'), ArtifactKind::Weights),
            // Too long a header, too short, or no JSON object after it.
            (
                weights(MAX_WEIGHTS_HEADER + 1, b'{'),
                ArtifactKind::Component,
            ),
            (weights(1, b'{'), ArtifactKind::Component),
            (weights(120, b'['), ArtifactKind::Component),
            // A pack whose JSON has a brace at byte 8 is still a pack (its
            // first eight bytes read as a huge length).
            (b"{\"a\":  {}}".to_vec(), ArtifactKind::KernelPack),
        ] {
            assert_eq!(ArtifactKind::of(&bytes), kind, "{bytes:?}");
        }
    }

    #[test]
    fn a_probe_tells_the_kind_whatever_the_chunking() {
        let mut safetensors = 64u64.to_le_bytes().to_vec();
        safetensors.extend_from_slice(b"{\"w\":{}}");
        let pack = b"\n\n  {\"format\": 1}".to_vec();
        let component = b"\0asm\x0d\0\x01\0\x07".to_vec();
        for bytes in [safetensors, pack, component] {
            let whole = ArtifactKind::of(&bytes);
            for chunk in 1..=bytes.len() {
                let mut probe = KindProbe::default();
                for part in bytes.chunks(chunk) {
                    if let Some(kind) = probe.decided() {
                        assert_eq!(kind, whole, "decided early, wrongly: {bytes:?} by {chunk}");
                    }
                    probe.feed(part);
                }
                assert_eq!(probe.kind(), whole, "{bytes:?} by {chunk}");
                assert_eq!(probe.decided(), Some(whole), "{bytes:?} by {chunk}");
            }
        }
        // A pack led by more whitespace than the prefix is still a pack.
        let mut probe = KindProbe::default();
        probe.feed(b"             ");
        assert_eq!(probe.decided(), None);
        probe.feed(b"{}");
        assert_eq!(probe.kind(), ArtifactKind::KernelPack);
    }
}
