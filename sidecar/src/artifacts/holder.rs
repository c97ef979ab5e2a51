//! The holder's side of an artifact fetch: this host's node's stored copy,
//! read a chunk at a time as the peer service streams it to the member
//! that asked (`peer::artifact`), from the byte it asks for (0, or where a
//! broken transfer stopped). Opening has the node check its whole copy; a
//! damaged copy is refused (and forgotten, so residency stops naming this
//! host), never sent.
//!
//! What it is not: the fetching side (`fetch`).

use crate::executors::Executors;
use crate::peer::artifact::{ArtifactChunks, ArtifactRefusal};
use spillway_proto::{Digest, Failure};
use std::sync::Arc;

/// The node's copy of one artifact, being sent.
#[derive(Debug)]
pub(crate) struct HeldArtifact {
    executors: Arc<Executors>,
    digest: Digest,
    size: u64,
    offset: u64,
    /// The first chunk, read when the copy was checked.
    first: Option<Vec<u8>>,
}

impl HeldArtifact {
    /// Opens the node's copy of `digest` (checked whole against it by the
    /// node's read at offset 0), to be sent from byte `from` on.
    pub(crate) async fn open(
        executors: Arc<Executors>,
        digest: Digest,
        from: u64,
    ) -> Result<Self, ArtifactRefusal> {
        let (size, first) = executors
            .read_artifact(digest, 0)
            .await
            .map_err(|f| refusal(&executors, digest, f))?;
        if from > size {
            return Err(ArtifactRefusal::PastTheEnd { from, size });
        }
        Ok(Self {
            executors,
            digest,
            size,
            offset: from,
            first: (from == 0).then_some(first),
        })
    }
}

fn refusal(executors: &Executors, digest: Digest, failure: Failure) -> ArtifactRefusal {
    match failure {
        Failure::UnknownArtifact { .. } => ArtifactRefusal::NotHeld,
        Failure::InvalidArtifact { reason } => {
            tracing::error!(%digest, "a peer asked for an artifact whose stored copy is damaged: {reason}");
            executors.forget_artifact(&digest);
            ArtifactRefusal::Damaged
        }
        other => ArtifactRefusal::Unavailable(other.to_string()),
    }
}

impl ArtifactChunks for HeldArtifact {
    fn size(&self) -> u64 {
        self.size
    }

    fn from(&self) -> u64 {
        self.offset
    }

    async fn next(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        if self.offset >= self.size {
            return Ok(None);
        }
        let bytes = match self.first.take() {
            Some(first) => first,
            None => {
                let (size, bytes) = self
                    .executors
                    .read_artifact(self.digest, self.offset)
                    .await
                    .map_err(std::io::Error::other)?;
                if size != self.size {
                    return Err(std::io::Error::other("the stored copy changed size"));
                }
                bytes
            }
        };
        if bytes.is_empty() {
            return Err(std::io::Error::other("the stored copy ended early"));
        }
        self.offset += bytes.len() as u64;
        Ok(Some(bytes))
    }
}
