//! Where an artifact's bytes wait on disk between the network and the
//! node: an upload's body or a peer's copy is written to a file in
//! `dir/spool` as it arrives, hashed (BLAKE3) and counted on the way, so
//! the sidecar never holds a whole artifact in memory. A [`Spooled`]
//! artifact knows its digest, size and kind before the node sees a byte,
//! and its file goes when it is dropped; what a crashed sidecar left is
//! removed when the next one opens the spool.
//!
//! What it is not: the artifact store. The node keeps artifacts; a spooled
//! file lives only until the node has taken it (`NodeLink::put_artifact`).

use spillway_proto::{ArtifactKind, Digest, KindProbe};
use std::path::{Path, PathBuf};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The most bytes an artifact may have, by its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SizeLimits {
    /// Components and kernel packs (code).
    pub(crate) code: u64,
    /// Weights (safetensors files).
    pub(crate) weights: u64,
}

impl SizeLimits {
    /// The limit for an artifact of `kind` (`None`: not told yet, so the
    /// larger one).
    pub(crate) fn of(self, kind: Option<ArtifactKind>) -> u64 {
        match kind {
            Some(ArtifactKind::Weights) => self.weights,
            Some(ArtifactKind::Component | ArtifactKind::KernelPack) => self.code,
            None => self.largest(),
        }
    }

    /// The larger limit: what any artifact may have before its kind is
    /// known.
    pub(crate) fn largest(self) -> u64 {
        self.code.max(self.weights)
    }
}

/// Why bytes could not be spooled.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SpoolError {
    /// More than the limit of its kind arrived: refuse the artifact as too
    /// large.
    #[error("{} is over the limit of {limit} bytes", kind.map_or("the artifact", |k| k.name()))]
    TooLarge {
        limit: u64,
        kind: Option<ArtifactKind>,
    },
    /// The local disk failed: an operator must look (space, permissions).
    #[error("cannot write to the spool: {0}")]
    Io(#[from] std::io::Error),
}

/// The folder artifacts are spooled in.
#[derive(Debug)]
pub(crate) struct Spool {
    dir: PathBuf,
}

impl Spool {
    /// Opens `dir/spool`, emptied of what an earlier sidecar left.
    pub(crate) fn open(dir: &Path) -> std::io::Result<Self> {
        let dir = dir.join("spool");
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        crate::owner_only::create_dir(&dir)?;
        Ok(Self { dir })
    }

    /// A new spool file that takes at most `limits`' bytes for the kind
    /// its first bytes tell.
    pub(crate) fn create(&self, limits: SizeLimits) -> Result<SpoolWriter, SpoolError> {
        let file = tempfile::Builder::new()
            .suffix(".part")
            .tempfile_in(&self.dir)?;
        let (file, path) = file.into_parts();
        Ok(SpoolWriter {
            file: tokio::fs::File::from_std(file),
            path,
            hasher: blake3::Hasher::new(),
            size: 0,
            limits,
            probe: KindProbe::default(),
        })
    }
}

/// A spool file being written.
#[derive(Debug)]
pub(crate) struct SpoolWriter {
    file: tokio::fs::File,
    path: tempfile::TempPath,
    hasher: blake3::Hasher,
    size: u64,
    limits: SizeLimits,
    /// Tells the kind from the first bytes ([`ArtifactKind::of`]).
    probe: KindProbe,
}

impl SpoolWriter {
    /// Appends `bytes`; refused once the total passes the limit of the
    /// artifact's kind (the larger limit while the kind is not told yet).
    pub(crate) async fn write(&mut self, bytes: &[u8]) -> Result<(), SpoolError> {
        let size = self.size + bytes.len() as u64;
        self.probe.feed(bytes);
        let kind = self.probe.decided();
        let limit = self.limits.of(kind);
        if size > limit {
            return Err(SpoolError::TooLarge { limit, kind });
        }
        self.file.write_all(bytes).await?;
        self.hasher.update(bytes);
        self.size = size;
        Ok(())
    }

    /// The kind, once its first bytes told it.
    pub(crate) fn kind(&self) -> Option<ArtifactKind> {
        self.probe.decided()
    }

    /// Bytes written so far.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// The digest of the bytes written so far.
    pub(crate) fn digest(&self) -> Digest {
        Digest(*self.hasher.finalize().as_bytes())
    }

    /// The whole artifact, flushed to its file.
    pub(crate) async fn finish(mut self) -> Result<Spooled, SpoolError> {
        self.file.flush().await?;
        let kind = self.probe.kind();
        let limit = self.limits.of(Some(kind));
        if self.size > limit {
            // Too short to tell its kind before it ended.
            return Err(SpoolError::TooLarge {
                limit,
                kind: Some(kind),
            });
        }
        Ok(Spooled {
            digest: self.digest(),
            size: self.size,
            kind,
            path: self.path,
        })
    }
}

/// A whole artifact on disk, its digest, size and kind known.
#[derive(Debug)]
pub(crate) struct Spooled {
    path: tempfile::TempPath,
    pub(crate) digest: Digest,
    pub(crate) size: u64,
    pub(crate) kind: ArtifactKind,
}

impl Spooled {
    /// Reads it from the start, `chunk` bytes at a time.
    pub(crate) async fn reader(&self, chunk: usize) -> std::io::Result<SpoolReader> {
        Ok(SpoolReader {
            file: tokio::fs::File::open(&self.path).await?,
            chunk,
        })
    }
}

/// A spooled artifact read in chunks.
#[derive(Debug)]
pub(crate) struct SpoolReader {
    file: tokio::fs::File,
    chunk: usize,
}

impl SpoolReader {
    /// The next chunk (full-size but for the last), or `None` at the end.
    pub(crate) async fn next(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        let mut bytes = vec![0; self.chunk];
        let mut filled = 0;
        while filled < bytes.len() {
            let n = self.file.read(&mut bytes[filled..]).await?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        bytes.truncate(filled);
        Ok((filled > 0).then_some(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flat(limit: u64) -> SizeLimits {
        SizeLimits {
            code: limit,
            weights: limit,
        }
    }

    #[tokio::test]
    async fn each_kind_has_its_own_limit() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let limits = SizeLimits {
            code: 16,
            weights: 64,
        };
        let mut weights = 40u64.to_le_bytes().to_vec();
        weights.push(b'{');
        weights.resize(60, b' ');
        let mut w = spool.create(limits).unwrap();
        for part in weights.chunks(7) {
            w.write(part).await.unwrap();
        }
        assert_eq!(w.finish().await.unwrap().kind, ArtifactKind::Weights);
        // A component is refused as soon as it passes the code limit.
        let mut w = spool.create(limits).unwrap();
        w.write(b"\0asm\x0d\0\x01\0\0\0").await.unwrap();
        let refused = w.write(&[0; 8]).await;
        assert!(
            matches!(
                refused,
                Err(SpoolError::TooLarge {
                    limit: 16,
                    kind: Some(ArtifactKind::Component)
                })
            ),
            "{refused:?}"
        );
        // One that passes it before its kind is told: as soon as it is.
        let mut w = spool.create(limits).unwrap();
        w.write(&[b' '; 20]).await.unwrap();
        assert_eq!(w.kind(), None);
        let refused = w.write(b"{}").await;
        assert!(
            matches!(
                refused,
                Err(SpoolError::TooLarge {
                    limit: 16,
                    kind: Some(ArtifactKind::KernelPack)
                })
            ),
            "{refused:?}"
        );
        // Or at its end, when it ends before its kind is told.
        let mut w = spool.create(limits).unwrap();
        w.write(&[b' '; 20]).await.unwrap();
        let refused = w.finish().await;
        assert!(
            matches!(refused, Err(SpoolError::TooLarge { limit: 16, .. })),
            "{refused:?}"
        );
    }

    fn files(dir: &Path) -> usize {
        std::fs::read_dir(dir.join("spool")).unwrap().count()
    }

    #[tokio::test]
    async fn bytes_come_back_in_chunks_with_their_digest_size_and_kind() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let bytes: Vec<u8> = (0..10_000u32).map(|i| (i % 253) as u8).collect();
        let mut w = spool.create(flat(10_000)).unwrap();
        for part in bytes.chunks(3000) {
            w.write(part).await.unwrap();
        }
        assert_eq!(w.size(), 10_000);
        let spooled = w.finish().await.unwrap();
        assert_eq!(spooled.digest, Digest::of(&bytes));
        assert_eq!(spooled.size, 10_000);
        assert_eq!(spooled.kind, ArtifactKind::of(&bytes));
        let mut r = spooled.reader(4096).await.unwrap();
        let mut back = Vec::new();
        let mut sizes = Vec::new();
        while let Some(chunk) = r.next().await.unwrap() {
            sizes.push(chunk.len());
            back.extend(chunk);
        }
        assert_eq!(back, bytes);
        assert_eq!(sizes, [4096, 4096, 1808]);
        assert_eq!(files(dir.path()), 1);
        drop(spooled);
        assert_eq!(files(dir.path()), 0, "the file goes with the artifact");
    }

    #[tokio::test]
    async fn the_kind_is_read_past_leading_whitespace_even_across_writes() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let mut w = spool.create(flat(100)).unwrap();
        w.write(b"  \n").await.unwrap();
        w.write(b" {\"kernels\": []}").await.unwrap();
        assert_eq!(w.finish().await.unwrap().kind, ArtifactKind::KernelPack);
        let mut w = spool.create(flat(100)).unwrap();
        w.write(b"\0asm").await.unwrap();
        assert_eq!(w.finish().await.unwrap().kind, ArtifactKind::Component);
    }

    #[tokio::test]
    async fn past_the_limit_is_too_large_and_leftovers_are_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let mut w = spool.create(flat(10)).unwrap();
        w.write(&[1; 10]).await.unwrap();
        assert!(matches!(
            w.write(&[1]).await,
            Err(SpoolError::TooLarge { limit: 10, .. })
        ));
        drop(w);
        assert_eq!(files(dir.path()), 0);
        std::fs::write(dir.path().join("spool/left.part"), b"x").unwrap();
        let _spool = Spool::open(dir.path()).unwrap();
        assert_eq!(files(dir.path()), 0);
    }
}
