//! An artifact on the wire between hosts: the holder answers a
//! `FetchArtifact { digest, from }` request with one [`ArtifactHeader`]
//! frame, then the artifact's bytes from `from` on, raw on the same stream,
//! then finishes it. The holder sends from its node's copy a chunk at a
//! time ([`ArtifactChunks`]).
//!
//! The receiver ([`receive`]) checks the announced size against what the
//! control log recorded before reading a byte of it, appends the bytes to
//! a spool file as they arrive, hashing them (blake3), and says the copy is
//! whole only when the digest is the one asked for. A transfer that breaks
//! leaves the spool file with the bytes that came, so the caller can ask a
//! holder for the rest (`from` = what it has) instead of starting over.
//! Nothing here stores anything: the caller decides what to do with
//! verified bytes (give them to its node) and with a failure.

use crate::spool::{SpoolError, SpoolWriter};
use serde::{Deserialize, Serialize};
use spillway_proto::Digest;
use spillway_proto::frame_io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The first frame of an artifact stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ArtifactHeader {
    /// The artifact is `size` bytes; those from `from` on follow.
    Follows { size: u64, from: u64 },
    /// The holder will not send it.
    Refused(ArtifactRefusal),
}

/// Why a holder did not send an artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ArtifactRefusal {
    #[error("it does not hold the artifact")]
    NotHeld,
    /// Its stored copy failed its own digest check.
    #[error("its stored copy is damaged")]
    Damaged,
    #[error("it cannot read the artifact now: {0}")]
    Unavailable(String),
    /// The asker wanted bytes from past the artifact's end.
    #[error("byte {from} is past the artifact's {size} bytes")]
    PastTheEnd { from: u64, size: u64 },
}

/// Why fetched bytes were not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("the holder refused: {0}")]
    Refused(ArtifactRefusal),
    #[error("the holder announced {size} bytes; the artifact is {expected} bytes")]
    WrongSize { size: u64, expected: u64 },
    #[error("the holder announced {size} bytes, over the limit of {max}")]
    TooLarge { size: u64, max: u64 },
    /// The holder would send from another byte than the one asked for.
    #[error("the holder would send from byte {from}; byte {asked} was asked for")]
    WrongOffset { from: u64, asked: u64 },
    #[error("the stream ended after {got} of {size} bytes")]
    Truncated { got: u64, size: u64 },
    #[error("the holder sent more bytes than it announced")]
    TooLong,
    /// The bytes arrived whole but hash to something else: discarded.
    #[error("the bytes hash to {got}, not the digest asked for")]
    DigestMismatch { got: Digest },
    #[error("bad header frame: {0}")]
    Header(String),
    #[error("transport: {0}")]
    Io(String),
    /// This host could not write the bytes down: what arrived is not to
    /// be trusted to continue from.
    #[error("spooling: {0}")]
    Spool(String),
}

impl FetchError {
    /// Whether the holder's bytes (or its own copy) were bad, as opposed
    /// to the holder being unreachable or not holding it.
    pub fn is_corruption(&self) -> bool {
        matches!(
            self,
            FetchError::DigestMismatch { .. }
                | FetchError::WrongSize { .. }
                | FetchError::WrongOffset { .. }
                | FetchError::TooLong
                | FetchError::Refused(ArtifactRefusal::Damaged)
        )
    }
}

/// Bytes read from the stream at a time.
const CHUNK: usize = 64 << 10;

/// How long a transfer may go without a byte before the receiver counts it
/// as broken (and its caller resumes it).
pub(crate) const READ_IDLE: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads what the stream has, within [`READ_IDLE`] (`read` is cancel-safe,
/// so a timeout loses nothing).
async fn read_some<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> Result<usize, FetchError> {
    match tokio::time::timeout(READ_IDLE, r.read(buf)).await {
        Ok(read) => read.map_err(|e| FetchError::Io(e.to_string())),
        Err(_) => Err(FetchError::Io(format!("no byte came for {READ_IDLE:?}"))),
    }
}

/// A holder's copy of an artifact, read a chunk at a time (so a holder
/// never loads a whole artifact to send it).
pub trait ArtifactChunks: Send {
    /// Its whole size, announced before the first byte.
    fn size(&self) -> u64;
    /// The offset of the first byte [`ArtifactChunks::next`] gives (asked
    /// before the first call).
    fn from(&self) -> u64 {
        0
    }
    /// The next bytes, or `None` after the last.
    fn next(&mut self) -> impl Future<Output = std::io::Result<Option<Vec<u8>>>> + Send;
}

/// Nothing to send (a host without a node refuses every fetch).
impl ArtifactChunks for std::convert::Infallible {
    fn size(&self) -> u64 {
        match *self {}
    }
    async fn next(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        match *self {}
    }
}

/// Sends an artifact (or the refusal) on an artifact stream. An error
/// after the header leaves the stream short, which the receiver refuses.
pub async fn send<W: AsyncWrite + Unpin, C: ArtifactChunks>(
    w: &mut W,
    artifact: Result<C, ArtifactRefusal>,
) -> std::io::Result<()> {
    let mut chunks = match artifact {
        Ok(chunks) => chunks,
        Err(refusal) => return frame_io::write(w, &ArtifactHeader::Refused(refusal)).await,
    };
    let (size, from) = (chunks.size(), chunks.from());
    frame_io::write(w, &ArtifactHeader::Follows { size, from }).await?;
    let mut sent = from;
    while let Some(bytes) = chunks.next().await? {
        sent += bytes.len() as u64;
        if sent > size {
            return Err(std::io::Error::other("the artifact grew while it was sent"));
        }
        w.write_all(&bytes).await?;
    }
    if sent != size {
        return Err(std::io::Error::other(format!(
            "the artifact ended after {sent} of {size} bytes"
        )));
    }
    Ok(())
}

/// Reads an artifact stream into `into` (a spool file holding the
/// artifact's first `into.size()` bytes, which the request asked to
/// continue from), and returns `Ok` only once it is whole and hashes to
/// `digest`. `expected` is the size the control log recorded (when known);
/// `max` bounds it otherwise. On a broken stream `into` keeps the bytes
/// that came.
pub(crate) async fn receive<R: AsyncRead + Unpin>(
    r: &mut R,
    into: &mut SpoolWriter,
    digest: Digest,
    expected: Option<u64>,
    max: u64,
) -> Result<(), FetchError> {
    let header = tokio::time::timeout(READ_IDLE, frame_io::read::<ArtifactHeader, _>(r, 1024))
        .await
        .map_err(|_| FetchError::Io(format!("no header came for {READ_IDLE:?}")))?
        .map_err(|e| FetchError::Header(e.to_string()))?
        .ok_or_else(|| FetchError::Header("the stream ended before the header".into()))?;
    let size = match header {
        ArtifactHeader::Refused(refusal) => return Err(FetchError::Refused(refusal)),
        ArtifactHeader::Follows { from, .. } if from != into.size() => {
            let asked = into.size();
            return Err(FetchError::WrongOffset { from, asked });
        }
        ArtifactHeader::Follows { size, .. } => size,
    };
    if let Some(expected) = expected
        && size != expected
    {
        return Err(FetchError::WrongSize { size, expected });
    }
    if size > max {
        return Err(FetchError::TooLarge { size, max });
    }
    let spool = |e: SpoolError| FetchError::Spool(e.to_string());
    let mut chunk = vec![0u8; CHUNK];
    while into.size() < size {
        let want = CHUNK.min((size - into.size()) as usize);
        let n = read_some(r, &mut chunk[..want]).await?;
        if n == 0 {
            return Err(FetchError::Truncated {
                got: into.size(),
                size,
            });
        }
        into.write(&chunk[..n]).await.map_err(spool)?;
    }
    let extra = read_some(r, &mut chunk[..1]).await?;
    if extra != 0 {
        return Err(FetchError::TooLong);
    }
    let got = into.digest();
    if got != digest {
        return Err(FetchError::DigestMismatch { got });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: u64 = 1 << 20;

    /// An artifact in memory, handed out in uneven chunks from byte
    /// `.1` on.
    struct InMemory(Vec<u8>, usize);

    impl ArtifactChunks for InMemory {
        fn size(&self) -> u64 {
            self.0.len() as u64
        }
        fn from(&self) -> u64 {
            self.1 as u64
        }
        async fn next(&mut self) -> std::io::Result<Option<Vec<u8>>> {
            let n = (self.0.len() - self.1).min(70_001);
            let chunk = self.0[self.1..self.1 + n].to_vec();
            self.1 += n;
            Ok((n > 0).then_some(chunk))
        }
    }

    async fn sent_from(bytes: Result<&[u8], ArtifactRefusal>, from: usize) -> Vec<u8> {
        let mut wire = Vec::new();
        let artifact = bytes.map(|b| InMemory(b.to_vec(), from));
        send(&mut wire, artifact).await.unwrap();
        wire
    }

    async fn sent(bytes: Result<&[u8], ArtifactRefusal>) -> Vec<u8> {
        sent_from(bytes, 0).await
    }

    fn spool_file(dir: &std::path::Path, max: u64) -> SpoolWriter {
        let spool = crate::spool::Spool::open(dir).unwrap();
        let limits = crate::spool::SizeLimits {
            code: max,
            weights: max,
        };
        spool.create(limits).unwrap()
    }

    async fn contents(into: SpoolWriter) -> Vec<u8> {
        let spooled = into.finish().await.unwrap();
        let mut r = spooled.reader(1 << 20).await.unwrap();
        let mut bytes = Vec::new();
        while let Some(chunk) = r.next().await.unwrap() {
            bytes.extend(chunk);
        }
        assert_eq!(bytes.len() as u64, spooled.size);
        bytes
    }

    async fn received_max(
        wire: &[u8],
        digest: Digest,
        expected: Option<u64>,
        max: u64,
    ) -> Result<Vec<u8>, FetchError> {
        let dir = tempfile::tempdir().unwrap();
        let mut into = spool_file(dir.path(), max);
        receive(&mut &wire[..], &mut into, digest, expected, max).await?;
        Ok(contents(into).await)
    }

    #[tokio::test]
    async fn a_broken_transfer_resumes_where_it_stopped() {
        let a = artifact();
        let (d, size) = (Digest::of(&a), Some(a.len() as u64));
        let dir = tempfile::tempdir().unwrap();
        let mut into = spool_file(dir.path(), MAX);
        // The first holder's stream breaks after 150 001 bytes.
        let wire = sent(Ok(&a)).await;
        let header = wire.len() - a.len();
        let cut = &wire[..header + 150_001];
        let err = receive(&mut &cut[..], &mut into, d, size, MAX).await;
        assert!(
            matches!(err, Err(FetchError::Truncated { got: 150_001, .. })),
            "{err:?}"
        );
        assert_eq!(into.size(), 150_001, "the bytes that came are kept");
        // A holder that would start elsewhere is refused before a byte.
        let elsewhere = sent_from(Ok(&a), 100).await;
        let err = receive(&mut &elsewhere[..], &mut into, d, size, MAX).await;
        assert_eq!(
            err,
            Err(FetchError::WrongOffset {
                from: 100,
                asked: 150_001
            })
        );
        // The rest, from where it stopped, makes the whole checked copy.
        let rest = sent_from(Ok(&a), 150_001).await;
        assert!(rest.len() < a.len() - 150_001 + 32, "only the rest is sent");
        receive(&mut &rest[..], &mut into, d, size, MAX)
            .await
            .unwrap();
        assert_eq!(contents(into).await, a);

        // Resumed bytes that do not make the digest fail the whole copy.
        let mut into = spool_file(dir.path(), MAX);
        let _ = receive(&mut &cut[..], &mut into, d, size, MAX).await;
        let mut bad = a.clone();
        bad[190_000] ^= 1;
        let rest = sent_from(Ok(&bad), 150_001).await;
        let err = receive(&mut &rest[..], &mut into, d, size, MAX)
            .await
            .unwrap_err();
        assert!(err.is_corruption(), "{err:?}");
    }

    async fn received(
        wire: &[u8],
        digest: Digest,
        expected: Option<u64>,
    ) -> Result<Vec<u8>, FetchError> {
        received_max(wire, digest, expected, MAX).await
    }

    /// A holder whose copy is not what it announced.
    struct Lying(InMemory, u64);

    impl ArtifactChunks for Lying {
        fn size(&self) -> u64 {
            self.1
        }
        async fn next(&mut self) -> std::io::Result<Option<Vec<u8>>> {
            self.0.next().await
        }
    }

    #[tokio::test]
    async fn a_holder_never_sends_other_than_it_announced() {
        for announced in [10, 300_000] {
            let mut wire = Vec::new();
            let lying = Lying(InMemory(artifact(), 0), announced);
            assert!(send(&mut wire, Ok(lying)).await.is_err());
            let a = artifact();
            assert!(received(&wire, Digest::of(&a), None).await.is_err());
        }
    }

    fn artifact() -> Vec<u8> {
        // More than one chunk, not a multiple of it.
        (0..200_000u32).map(|i| (i % 251) as u8).collect()
    }

    #[tokio::test]
    async fn whole_bytes_with_the_right_digest_arrive() {
        let a = artifact();
        let wire = sent(Ok(&a)).await;
        let got = received(&wire, Digest::of(&a), Some(a.len() as u64)).await;
        assert_eq!(got.unwrap(), a);
        // Without a recorded size the limit still applies, and passes.
        assert_eq!(received(&wire, Digest::of(&a), None).await.unwrap(), a);
    }

    #[tokio::test]
    async fn a_flipped_byte_is_a_digest_mismatch() {
        let a = artifact();
        let mut bad = a.clone();
        bad[123_456] ^= 1;
        let wire = sent(Ok(&bad)).await;
        let err = received(&wire, Digest::of(&a), Some(a.len() as u64))
            .await
            .unwrap_err();
        assert_eq!(
            err,
            FetchError::DigestMismatch {
                got: Digest::of(&bad)
            }
        );
        assert!(err.is_corruption());
    }

    #[tokio::test]
    async fn sizes_are_checked_before_the_bytes_are_read() {
        let a = artifact();
        let wire = sent(Ok(&a)).await;
        let d = Digest::of(&a);
        assert_eq!(
            received(&wire, d, Some(10)).await.unwrap_err(),
            FetchError::WrongSize {
                size: a.len() as u64,
                expected: 10
            }
        );
        let err = received_max(&wire, d, None, 1000).await.unwrap_err();
        assert_eq!(
            err,
            FetchError::TooLarge {
                size: a.len() as u64,
                max: 1000
            }
        );
    }

    #[tokio::test]
    async fn short_and_long_streams_are_refused() {
        let a = artifact();
        let d = Digest::of(&a);
        let wire = sent(Ok(&a)).await;
        let short = &wire[..wire.len() - 7];
        assert_eq!(
            received(short, d, None).await.unwrap_err(),
            FetchError::Truncated {
                got: a.len() as u64 - 7,
                size: a.len() as u64
            }
        );
        let mut long = wire.clone();
        long.push(0);
        assert_eq!(
            received(&long, d, None).await.unwrap_err(),
            FetchError::TooLong
        );
        assert!(matches!(
            received(&[], d, None).await.unwrap_err(),
            FetchError::Header(_)
        ));
    }

    #[tokio::test]
    async fn a_refusal_is_passed_on() {
        let wire = sent(Err(ArtifactRefusal::Damaged)).await;
        let err = received(&wire, Digest::of(b"x"), None).await.unwrap_err();
        assert_eq!(err, FetchError::Refused(ArtifactRefusal::Damaged));
        assert!(err.is_corruption());
        let wire = sent(Err(ArtifactRefusal::NotHeld)).await;
        let err = received(&wire, Digest::of(b"x"), None).await.unwrap_err();
        assert!(!err.is_corruption());
    }
}
