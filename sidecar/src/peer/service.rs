//! The server side of the peer protocol: accepts QUIC connections, reads
//! one request per stream and answers it through a [`PeerHandler`] (a
//! dispatch gets the stream's send half, to answer in several frames), and
//! hands a member's datagrams (load gossip) to the handler too.
//!
//! A connection whose key is a ticket's (not a member's) may send only a
//! join request; anything else is refused and the connection closed. A key
//! that is neither never gets past the handshake.

use crate::peer::artifact::{self, ArtifactChunks, ArtifactRefusal};
use crate::peer::pinning::ed25519_key;
use crate::peer::wire::MAX_REPLY;
use crate::peer::wire::{Dispatch, DispatchReply, PeerReply, PeerRequest};
use crate::peer::{PeerEndpoint, PinnedPeers};
use rustls::pki_types::CertificateDer;
use spillway_consensus::PublicKey;
use spillway_proto::{Digest, frame};
use std::future::Future;
use std::sync::Arc;

/// Who sent a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerKind {
    Member(PublicKey),
    /// The holder of a join ticket's one-time key.
    Joiner(PublicKey),
}

/// Answers peer requests.
pub trait PeerHandler: Send + Sync + 'static {
    fn handle(
        &self,
        from: PeerKind,
        request: PeerRequest,
    ) -> impl Future<Output = PeerReply> + Send;

    /// Runs a member's burst job, answering on `send` in
    /// [`DispatchReply`] frames. When the origin goes away, `send` is
    /// stopped ([`quinn::SendStream::stopped`]).
    fn dispatch(
        &self,
        from: PublicKey,
        job: Dispatch,
        send: quinn::SendStream,
    ) -> impl Future<Output = ()> + Send;

    /// A datagram from a member (load gossip). Called on the connection's
    /// reader task: it must not block.
    fn datagram(&self, from: PublicKey, bytes: &[u8]);

    /// The artifact a member asks for, read a chunk at a time as the
    /// service streams it (see [`artifact`]).
    type Artifact: ArtifactChunks;
    /// The artifact `digest`, to be sent from byte `from` on.
    fn artifact(
        &self,
        digest: Digest,
        from: u64,
    ) -> impl Future<Output = Result<Self::Artifact, ArtifactRefusal>> + Send;
}

/// Writes one dispatch answer: its frame, then a `Completed` body raw (a
/// failed write means the origin is gone, which the caller learns from the
/// stream).
pub async fn write_dispatch_reply(send: &mut quinn::SendStream, reply: &DispatchReply) -> bool {
    if send.write_all(&frame::encode(reply)).await.is_err() {
        return false;
    }
    match reply {
        DispatchReply::Completed { body, .. } => send.write_all(body).await.is_ok(),
        _ => true,
    }
}

/// Reads the next dispatch answer frame: `Ok(None)` when the peer
/// finished the stream.
pub async fn read_dispatch_reply(
    recv: &mut quinn::RecvStream,
) -> Result<Option<DispatchReply>, String> {
    let reply = spillway_proto::frame_io::read::<DispatchReply, _>(recv, frame::MAX_FRAME_LEN)
        .await
        .map_err(|e| e.to_string())?;
    match reply {
        Some(DispatchReply::Completed {
            body_len,
            completion,
            executor,
            ..
        }) => {
            let body = read_raw(recv, body_len, MAX_REPLY).await?;
            Ok(Some(DispatchReply::completed(body, completion, executor)))
        }
        other => Ok(other),
    }
}

/// Reads exactly `len` raw bytes (at most `max`) that follow a frame.
pub(crate) async fn read_raw(
    recv: &mut quinn::RecvStream,
    len: u64,
    max: usize,
) -> Result<Vec<u8>, String> {
    let mut collected = Announced::new(len, max)?;
    while let Some(want) = collected.missing() {
        let chunk = recv
            .read_chunk(want, true)
            .await
            .map_err(|e| format!("reading {len} bytes: {e}"))?
            .ok_or_else(|| collected.ended_early())?;
        collected.take(&chunk.bytes);
    }
    Ok(collected.bytes)
}

/// Raw bytes a frame announced, collected as they arrive: the buffer grows
/// with what came, never reserved at the announced length up front (a
/// peer announcing a gigabyte and sending nothing costs nothing).
#[derive(Debug)]
struct Announced {
    bytes: Vec<u8>,
    len: usize,
}

/// What is reserved before any bytes arrive.
const FIRST_RESERVE: usize = 64 << 10;

impl Announced {
    fn new(len: u64, max: usize) -> Result<Self, String> {
        if len > max as u64 {
            return Err(format!("{len} bytes announced, over the limit of {max}"));
        }
        let len = len as usize;
        Ok(Self {
            bytes: Vec::with_capacity(len.min(FIRST_RESERVE)),
            len,
        })
    }

    /// How many bytes are still due, if any.
    fn missing(&self) -> Option<usize> {
        (self.bytes.len() < self.len).then(|| self.len - self.bytes.len())
    }

    fn take(&mut self, chunk: &[u8]) {
        self.bytes.extend_from_slice(chunk);
    }

    fn ended_early(&self) -> String {
        format!(
            "the stream ended after {} of {} bytes",
            self.bytes.len(),
            self.len
        )
    }
}

/// The key a connection's peer proved in the handshake.
pub(crate) fn peer_key(conn: &quinn::Connection) -> Option<PublicKey> {
    let identity = conn.peer_identity()?;
    let certs = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    ed25519_key(certs.first()?).ok()
}

/// Serves peers arriving on `endpoint` until it closes.
pub async fn serve<H: PeerHandler>(endpoint: PeerEndpoint, pinned: PinnedPeers, handler: Arc<H>) {
    use super::admission::{Throttle, should_retry};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let handshaking = Arc::new(AtomicUsize::new(0));
    let refusals = Arc::new(std::sync::Mutex::new(Throttle::new(
        std::time::Duration::from_secs(10),
    )));
    while let Some(incoming) = endpoint.accept().await {
        // Under load, an address must prove it is reachable before it
        // costs a handshake.
        if should_retry(
            handshaking.load(Ordering::Relaxed),
            incoming.remote_address_validated(),
            incoming.may_retry(),
        ) {
            let _ = incoming.retry();
            continue;
        }
        let (handler, pinned) = (handler.clone(), pinned.clone());
        let (handshaking, refusals) = (handshaking.clone(), refusals.clone());
        tokio::spawn(async move {
            handshaking.fetch_add(1, Ordering::Relaxed);
            let handshake = incoming.await;
            handshaking.fetch_sub(1, Ordering::Relaxed);
            let conn = match handshake {
                Ok(conn) => conn,
                Err(e) => {
                    let line = refusals
                        .lock()
                        .expect("throttle lock")
                        .hit(std::time::Instant::now());
                    if let Some(refused) = line {
                        tracing::warn!(refused, "peer handshakes failed (one line per 10 s): {e}");
                    }
                    return;
                }
            };
            let Some(key) = peer_key(&conn) else {
                conn.close(1u32.into(), b"no identity");
                return;
            };
            if !pinned.is_member(&key) {
                // A ticket's holder asks one thing, to join, on one
                // stream; the connection then ends. (Its key is unpinned
                // once the join commits, which must not cut off the answer.)
                serve_one_join(&*handler, key, &pinned, &conn).await;
                return;
            }
            let from = PeerKind::Member(key);
            // Membership is checked again on every stream and datagram,
            // and whenever the pinned keys change: a connection whose key
            // was unpinned (a removed member) is closed, so keep-alives
            // cannot carry rights past a removal.
            let still_pinned = {
                let pinned = pinned.clone();
                move || pinned.is_member(&key)
            };
            let unpinned = |conn: &quinn::Connection| {
                tracing::info!("closing the connection of a peer no longer pinned");
                conn.close(3u32.into(), b"no longer a member");
            };
            {
                let (handler, conn, still_pinned) =
                    (handler.clone(), conn.clone(), still_pinned.clone());
                tokio::spawn(async move {
                    while let Ok(bytes) = conn.read_datagram().await {
                        if !still_pinned() {
                            unpinned(&conn);
                            break;
                        }
                        handler.datagram(key, &bytes);
                    }
                });
            }
            let mut changes = pinned.changes();
            loop {
                let (send, recv) = tokio::select! {
                    accepted = conn.accept_bi() => match accepted {
                        Ok(stream) => stream,
                        Err(_) => break,
                    },
                    changed = changes.changed() => {
                        if changed.is_err() || !still_pinned() {
                            unpinned(&conn);
                            break;
                        }
                        continue;
                    }
                };
                if !still_pinned() {
                    unpinned(&conn);
                    break;
                }
                let handler = handler.clone();
                let conn = conn.clone();
                tokio::spawn(async move {
                    answer(&*handler, from, &conn, send, recv).await;
                });
            }
        });
    }
}

/// How long a ticket's holder has to send its join request, and to close
/// after the answer.
const JOINER_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// A ticket holder's connection: one stream, which must be a join (checked
/// in `answer`), answered whatever the pins do meanwhile; then the
/// connection ends.
async fn serve_one_join<H: PeerHandler>(
    handler: &H,
    key: [u8; 32],
    pinned: &PinnedPeers,
    conn: &quinn::Connection,
) {
    let Ok(Ok((send, recv))) = tokio::time::timeout(JOINER_WAIT, conn.accept_bi()).await else {
        conn.close(2u32.into(), b"no join request");
        return;
    };
    if !pinned.is_pinned(&key) {
        // Used (or never known) by now: the handshake would fail today.
        conn.close(3u32.into(), b"the ticket is no longer accepted");
        return;
    }
    answer(handler, PeerKind::Joiner(key), conn, send, recv).await;
    // The joiner closes once it has read the answer.
    let _ = tokio::time::timeout(JOINER_WAIT, conn.closed()).await;
    conn.close(0u32.into(), b"join answered");
}

async fn answer<H: PeerHandler>(
    handler: &H,
    from: PeerKind,
    conn: &quinn::Connection,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    // A joiner's request is small; members may send snapshots.
    let limit = match from {
        PeerKind::Member(_) => MAX_REPLY,
        PeerKind::Joiner(_) => 64 << 10,
    };
    let request = match spillway_proto::frame_io::read::<PeerRequest, _>(&mut recv, limit).await {
        // Members' requests may carry raw bytes after the frame.
        Ok(Some(mut request)) if matches!(from, PeerKind::Member(_)) => {
            let (len, max) = request.trailing();
            if len > 0 {
                match read_raw(&mut recv, len, max as usize).await {
                    Ok(bytes) => request.attach(bytes),
                    Err(e) => {
                        tracing::warn!("a request's trailing bytes did not arrive: {e}");
                        return;
                    }
                }
            }
            Ok(Some(request))
        }
        other => other,
    };
    let reply = match request {
        Ok(None) => PeerReply::Error("the stream ended before a request".into()),
        Ok(Some(request)) => match (from, request) {
            (PeerKind::Joiner(_), r @ PeerRequest::Join(_)) => handler.handle(from, r).await,
            (PeerKind::Joiner(_), _) => {
                conn.close(2u32.into(), b"ticket holders may only join");
                return;
            }
            (PeerKind::Member(key), PeerRequest::Dispatch(job)) => {
                return handler.dispatch(key, job, send).await;
            }
            (PeerKind::Member(_), PeerRequest::FetchArtifact { digest, from }) => {
                let artifact = handler.artifact(digest, from).await;
                match artifact::send(&mut send, artifact).await {
                    Ok(()) => {
                        let _ = send.finish();
                    }
                    // Cut short: the fetcher must not take it for whole.
                    Err(_) => {
                        let _ = send.reset(0u32.into());
                    }
                }
                return;
            }
            (PeerKind::Member(_), r) => handler.handle(from, r).await,
        },
        Err(e) => PeerReply::Error(format!("bad request: {e}")),
    };
    if send.write_all(&frame::encode(&reply)).await.is_ok() {
        let _ = send.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announced_bytes_are_not_reserved_up_front() {
        let mut a = Announced::new(1 << 30, 1 << 30).unwrap();
        assert!(
            a.bytes.capacity() <= FIRST_RESERVE,
            "{}",
            a.bytes.capacity()
        );
        a.take(&[7; 1000]);
        assert_eq!(a.missing(), Some((1 << 30) - 1000));
        assert!(a.bytes.capacity() < 1 << 20);
        assert!(a.ended_early().contains("after 1000 of"));
        assert!(Announced::new(11, 10).is_err());
        let mut b = Announced::new(3, 10).unwrap();
        b.take(b"abc");
        assert_eq!((b.missing(), b.bytes.as_slice()), (None, &b"abc"[..]));
    }
}
