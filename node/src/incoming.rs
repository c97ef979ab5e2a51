//! An artifact arriving from the sidecar in chunks (`PutArtifact`, then
//! `ArtifactChunk`s): written to a file in `dir/incoming` while hashed, so
//! the node never holds the whole upload in a frame or a buffer, and
//! checked against the size and digest announced before its first byte.
//!
//! The file removes itself when the upload is dropped unfinished (the
//! sidecar abandoned it, the connection closed, a check failed); leftovers
//! of a node that crashed are removed when the node starts
//! ([`clear`]). A received artifact is not yet stored: the artifact cache
//! validates it and then moves the file into place ([`Received::persist`]).
//!
//! What it is not: validation. A received artifact is bytes that hash to
//! what the sidecar said; whether they are a component is decided after.

use spillway_proto::{ArtifactKind, Digest, Failure};
use std::io::Write;
use std::path::{Path, PathBuf};

/// How much of an artifact's start is read to tell its kind: the first
/// nine bytes, and past any whitespace a kernel pack's JSON begins with.
const KIND_READ: usize = 64 << 10;

/// The folder half-received artifacts live in.
pub(crate) fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("incoming")
}

/// Creates the folder, empty: what is there was left by a node that
/// stopped mid-upload and will never be finished.
pub(crate) fn clear(state_dir: &Path) -> std::io::Result<()> {
    let dir = dir(state_dir);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    crate::owner_only_dir(&dir)
}

/// An upload in progress.
#[derive(Debug)]
pub(crate) struct Incoming {
    file: tempfile::NamedTempFile,
    hasher: blake3::Hasher,
    digest: Digest,
    size: u64,
    received: u64,
}

/// Where an upload stands after a chunk.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Progress {
    /// This many bytes have arrived; more are due.
    More(u64),
    /// Every announced byte has arrived.
    Complete,
}

fn refused(reason: String) -> Failure {
    Failure::InvalidArtifact { reason }
}

fn io_failure(what: &str, e: std::io::Error) -> Failure {
    Failure::Internal {
        message: format!("{what}: {e}"),
    }
}

impl Incoming {
    /// Begins an upload of `size` bytes hashing to `digest`.
    pub(crate) fn begin(state_dir: &Path, digest: Digest, size: u64) -> Result<Self, Failure> {
        if size == 0 {
            return Err(refused("an artifact has at least one byte".into()));
        }
        let file = tempfile::Builder::new()
            .prefix(&digest.to_hex()[..16])
            .suffix(".part")
            .tempfile_in(dir(state_dir))
            .map_err(|e| io_failure("cannot create an incoming artifact file", e))?;
        Ok(Self {
            file,
            hasher: blake3::Hasher::new(),
            digest,
            size,
            received: 0,
        })
    }

    /// Takes the next bytes. More than were announced is refused.
    pub(crate) fn take(&mut self, bytes: &[u8]) -> Result<Progress, Failure> {
        let after = self.received + bytes.len() as u64;
        if after > self.size {
            return Err(refused(format!(
                "{after} bytes arrived for an artifact announced as {} bytes",
                self.size
            )));
        }
        if bytes.is_empty() {
            return Err(refused("an empty chunk".into()));
        }
        self.file
            .write_all(bytes)
            .map_err(|e| io_failure("cannot write an incoming artifact", e))?;
        self.hasher.update(bytes);
        self.received = after;
        Ok(match after == self.size {
            true => Progress::Complete,
            false => Progress::More(after),
        })
    }

    /// The whole artifact, on disk and synced, if it hashes to what was
    /// announced.
    pub(crate) fn finish(self) -> Result<Received, Failure> {
        if self.received != self.size {
            return Err(refused(format!(
                "the upload ended after {} of {} bytes",
                self.received, self.size
            )));
        }
        let got = Digest(*self.hasher.finalize().as_bytes());
        if got != self.digest {
            return Err(refused(format!(
                "the bytes hash to {got}, not the announced {}",
                self.digest
            )));
        }
        self.file
            .as_file()
            .sync_all()
            .map_err(|e| io_failure("cannot sync an incoming artifact", e))?;
        Ok(Received {
            path: self.file.into_temp_path(),
            digest: self.digest,
            size: self.size,
        })
    }
}

/// A whole artifact whose bytes hash to its digest, not yet stored.
#[derive(Debug)]
pub(crate) struct Received {
    path: tempfile::TempPath,
    pub(crate) digest: Digest,
    pub(crate) size: u64,
}

impl Received {
    /// Its bytes (to validate and compile).
    pub(crate) fn read(&self) -> std::io::Result<Vec<u8>> {
        std::fs::read(&self.path)
    }

    /// Where it waits (to check it in place).
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The kind its first bytes tell (see [`ArtifactKind::of`]): at most
    /// [`KIND_READ`] bytes are read.
    pub(crate) fn kind(&self) -> std::io::Result<ArtifactKind> {
        use std::io::Read;
        let mut head = Vec::with_capacity(KIND_READ);
        std::fs::File::open(&self.path)?
            .take(KIND_READ as u64)
            .read_to_end(&mut head)?;
        Ok(ArtifactKind::of(&head))
    }

    /// Moves it to `path` (the artifact store, on the same file system).
    pub(crate) fn persist(self, path: &Path) -> std::io::Result<()> {
        self.path.persist(path).map_err(|e| e.error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> (tempfile::TempDir, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        clear(dir.path()).unwrap();
        (dir, (0..3000u32).map(|i| (i % 251) as u8).collect())
    }

    fn parts(dir: &Path) -> usize {
        std::fs::read_dir(super::dir(dir)).unwrap().count()
    }

    #[test]
    fn chunks_that_add_up_to_the_announced_bytes_are_received() {
        let (dir, bytes) = fixture();
        let mut up = Incoming::begin(dir.path(), Digest::of(&bytes), 3000).unwrap();
        assert_eq!(up.take(&bytes[..1000]).unwrap(), Progress::More(1000));
        assert_eq!(up.take(&bytes[1000..2999]).unwrap(), Progress::More(2999));
        assert_eq!(up.take(&bytes[2999..]).unwrap(), Progress::Complete);
        let received = up.finish().unwrap();
        assert_eq!(received.read().unwrap(), bytes);
        assert_eq!(received.size, 3000);
        let stored = dir.path().join("stored");
        received.persist(&stored).unwrap();
        assert_eq!(std::fs::read(stored).unwrap(), bytes);
        assert_eq!(parts(dir.path()), 0);
    }

    #[test]
    fn wrong_bytes_too_many_or_too_few_are_refused_and_leave_nothing() {
        let (dir, bytes) = fixture();
        let mut other = bytes.clone();
        other[7] ^= 1;
        let mut up = Incoming::begin(dir.path(), Digest::of(&bytes), 3000).unwrap();
        up.take(&other).unwrap();
        assert!(matches!(
            up.finish(),
            Err(Failure::InvalidArtifact { reason }) if reason.contains("hash to")
        ));

        let mut up = Incoming::begin(dir.path(), Digest::of(&bytes), 2000).unwrap();
        assert!(matches!(
            up.take(&bytes),
            Err(Failure::InvalidArtifact { .. })
        ));
        drop(up);

        let mut up = Incoming::begin(dir.path(), Digest::of(&bytes), 3000).unwrap();
        up.take(&bytes[..10]).unwrap();
        assert!(matches!(up.take(&[]), Err(Failure::InvalidArtifact { .. })));
        assert!(matches!(up.finish(), Err(Failure::InvalidArtifact { .. })));

        assert!(Incoming::begin(dir.path(), Digest::of(&[]), 0).is_err());
        assert_eq!(parts(dir.path()), 0, "every part file went with its upload");
    }

    #[test]
    fn leftovers_are_cleared_at_start() {
        let (dir, _) = fixture();
        std::fs::write(super::dir(dir.path()).join("x.part"), b"half").unwrap();
        clear(dir.path()).unwrap();
        assert_eq!(parts(dir.path()), 0);
    }
}
