//! Calls to peers: one reused QUIC connection per peer, one bidirectional
//! stream per call (a request frame, a reply frame), a deadline per call.
//! A broken connection is dropped and the next call reconnects.

use crate::peer::PeerEndpoint;
use crate::peer::wire::{Dispatch, MAX_REPLY, PeerReply, PeerRequest};
use spillway_consensus::TransportError;
use spillway_proto::frame;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// How long connecting to a peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Calls peers by host id (cheap to clone).
#[derive(Debug, Clone)]
pub struct PeerClient {
    endpoint: PeerEndpoint,
    addresses: Arc<RwLock<HashMap<u64, SocketAddr>>>,
    connections: Arc<Mutex<HashMap<u64, quinn::Connection>>>,
}

impl PeerClient {
    pub fn new(endpoint: PeerEndpoint) -> Self {
        Self {
            endpoint,
            addresses: Arc::default(),
            connections: Arc::default(),
        }
    }

    /// Where host `id` listens. A changed address drops the old connection.
    pub fn set_address(&self, id: u64, addr: SocketAddr) {
        let old = self
            .addresses
            .write()
            .expect("address book lock")
            .insert(id, addr);
        if old.is_some_and(|a| a != addr) {
            self.connections
                .lock()
                .expect("connections lock")
                .remove(&id);
        }
    }

    async fn connection(&self, target: u64) -> Result<quinn::Connection, TransportError> {
        let cached = self
            .connections
            .lock()
            .expect("connections lock")
            .get(&target)
            .cloned();
        if let Some(c) = cached.filter(|c| c.close_reason().is_none()) {
            return Ok(c);
        }
        let unreachable = |reason: String| TransportError::Unreachable {
            peer: target,
            reason,
        };
        let addr = self
            .addresses
            .read()
            .expect("address book lock")
            .get(&target)
            .copied()
            .ok_or_else(|| unreachable("no known address".into()))?;
        let conn = tokio::time::timeout(CONNECT_TIMEOUT, self.endpoint.connect(addr))
            .await
            .map_err(|_| unreachable(format!("connecting to {addr} timed out")))?
            .map_err(|e| unreachable(format!("connecting to {addr}: {e}")))?;
        self.connections
            .lock()
            .expect("connections lock")
            .insert(target, conn.clone());
        Ok(conn)
    }

    /// Sends `request` to host `target` and waits for its reply; the
    /// deadline covers connecting too.
    pub async fn call(
        &self,
        target: u64,
        request: &PeerRequest,
        deadline: Duration,
    ) -> Result<PeerReply, TransportError> {
        self.call_with(target, request, &[], deadline).await
    }

    /// Host `target`'s status (`None` if it does not answer within
    /// `deadline`).
    pub(crate) async fn status(
        &self,
        target: u64,
        deadline: Duration,
    ) -> Option<super::HostStatus> {
        match self.call(target, &PeerRequest::Status, deadline).await {
            Ok(PeerReply::Status(status)) => Some(status),
            _ => None,
        }
    }

    /// [`PeerClient::call`] with `trailing` raw bytes after the request's
    /// frame (see `PeerRequest::detach`).
    pub(crate) async fn call_with(
        &self,
        target: u64,
        request: &PeerRequest,
        trailing: &[u8],
        deadline: Duration,
    ) -> Result<PeerReply, TransportError> {
        let attempt = async {
            let conn = self.connection(target).await?;
            Ok(exchange(&conn, request, trailing).await)
        };
        match tokio::time::timeout(deadline, attempt).await {
            Ok(Err(e)) => Err(e),
            Ok(Ok(Ok(reply))) => Ok(reply),
            Ok(Ok(Err(e))) => {
                if e.connection_lost() {
                    self.forget(target);
                }
                Err(TransportError::Failed {
                    peer: target,
                    reason: e.to_string(),
                })
            }
            Err(_) => Err(TransportError::Failed {
                peer: target,
                reason: format!("no answer within {deadline:?}"),
            }),
        }
    }
}

impl PeerClient {
    /// Sends `bytes` as one unreliable datagram to host `target`
    /// (connecting first if needed, within `deadline`); returns the
    /// connection's smoothed round-trip time.
    pub async fn send_datagram(
        &self,
        target: u64,
        bytes: bytes::Bytes,
        deadline: Duration,
    ) -> Result<Duration, TransportError> {
        let conn = tokio::time::timeout(deadline, self.connection(target))
            .await
            .map_err(|_| TransportError::Unreachable {
                peer: target,
                reason: format!("no connection within {deadline:?}"),
            })??;
        conn.send_datagram(bytes)
            .map_err(|e| TransportError::Failed {
                peer: target,
                reason: format!("datagram: {e}"),
            })?;
        Ok(conn.rtt())
    }

    /// Opens a stream to host `target` and sends `request` on it (its send
    /// half finished), for a caller that reads a sequence of answers.
    pub async fn open(
        &self,
        target: u64,
        request: &PeerRequest,
        deadline: Duration,
    ) -> Result<quinn::RecvStream, TransportError> {
        self.open_with(target, request, &[], deadline).await
    }

    /// Opens a dispatch stream: the `Dispatch` frame, then its input raw
    /// (see [`Dispatch`]).
    pub async fn open_dispatch(
        &self,
        target: u64,
        dispatch: Dispatch,
        deadline: Duration,
    ) -> Result<quinn::RecvStream, TransportError> {
        let mut request = PeerRequest::Dispatch(dispatch);
        let input = request.detach();
        self.open_with(target, &request, &input, deadline).await
    }

    /// Opens a stream and sends `request`, then `trailing` raw bytes.
    async fn open_with(
        &self,
        target: u64,
        request: &PeerRequest,
        trailing: &[u8],
        deadline: Duration,
    ) -> Result<quinn::RecvStream, TransportError> {
        let failed = |reason: String| TransportError::Failed {
            peer: target,
            reason,
        };
        let attempt = async {
            let conn = self.connection(target).await?;
            let (mut send, recv) = conn.open_bi().await.map_err(|e| {
                self.forget(target);
                failed(e.to_string())
            })?;
            send.write_all(&frame::encode(request))
                .await
                .map_err(|e| failed(e.to_string()))?;
            if !trailing.is_empty() {
                send.write_all(trailing)
                    .await
                    .map_err(|e| failed(e.to_string()))?;
            }
            send.finish().map_err(|e| failed(e.to_string()))?;
            Ok(recv)
        };
        tokio::time::timeout(deadline, attempt)
            .await
            .map_err(|_| failed(format!("no stream within {deadline:?}")))?
    }

    fn forget(&self, target: u64) {
        self.connections
            .lock()
            .expect("connections lock")
            .remove(&target);
    }
}

/// Why one request on a stream got no reply.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// No stream could be opened: the connection is gone (closed, timed
    /// out, or its handshake refused). Reconnect before the next try.
    #[error("no stream: {0}")]
    Open(#[from] quinn::ConnectionError),
    /// The request could not be sent whole: the stream or its connection
    /// broke. Retry on a new connection.
    #[error("sending the request: {0}")]
    Write(#[from] quinn::WriteError),
    /// The stream was finished twice or reset before the request was sent.
    #[error("finishing the request: {0}")]
    Finish(#[from] quinn::ClosedStream),
    /// The reply did not arrive whole (the stream or connection broke, or
    /// the reply was over the limit).
    #[error("reading the reply: {0}")]
    Read(#[from] quinn::ReadToEndError),
    /// The reply arrived but is no frame this version reads: the peer runs
    /// another version or misbehaves. The connection itself is fine.
    #[error("a malformed reply: {0}")]
    Malformed(#[from] frame::FrameError),
}

impl ExchangeError {
    /// Whether the connection is unusable (so it should be dropped and a
    /// new one made for the next request).
    pub fn connection_lost(&self) -> bool {
        match self {
            Self::Open(_) => true,
            Self::Write(quinn::WriteError::ConnectionLost(_)) => true,
            Self::Read(quinn::ReadToEndError::Read(quinn::ReadError::ConnectionLost(_))) => true,
            Self::Write(_) | Self::Finish(_) | Self::Read(_) | Self::Malformed(_) => false,
        }
    }
}

/// One request and its reply on a new stream of `conn`.
pub(crate) async fn exchange(
    conn: &quinn::Connection,
    request: &PeerRequest,
    trailing: &[u8],
) -> Result<PeerReply, ExchangeError> {
    let (mut send, mut recv) = conn.open_bi().await?;
    send.write_all(&frame::encode(request)).await?;
    if !trailing.is_empty() {
        send.write_all(trailing).await?;
    }
    send.finish()?;
    let bytes = recv.read_to_end(MAX_REPLY).await?;
    Ok(frame::decode::<PeerReply>(&bytes, MAX_REPLY).map(|(r, _)| r)?)
}
