//! The QUIC endpoint: quinn over rustls (TLS 1.3 only, no 0-RTT), ALPN
//! `spillway/1`, this host's identity as certificate, pinned peer keys on
//! both sides. It takes a bound `std::net::UdpSocket`, the one seam through
//! which tests can wrap, drop or partition the host's datagrams
//! ([`PeerEndpoint::bind_with_faults`] wraps it in the `faults` socket).

use crate::peer::faults::{FaultStats, Faults, FaultySocket};
use crate::peer::{HostIdentity, PinnedPeers};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The ALPN protocol every peer connection speaks.
pub const ALPN: &[u8] = b"spillway/1";

/// The name clients put in the TLS handshake; peers are identified by key,
/// not by name.
const SERVER_NAME: &str = "spillway-host";

/// Why a connection to a peer was not made. What the caller should do
/// follows from the variant, never from the text.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnectError {
    /// The host there showed a key this host does not pin: it is not the
    /// member expected at that address (another cluster, or a stranger).
    #[error("the host at {addr} is not a member this host knows: {reason}")]
    NotPinned { addr: SocketAddr, reason: String },
    /// The host there refused this host's key: it does not pin it (not a
    /// member there, or a ticket it does not accept).
    #[error("the host at {addr} refused this host's key")]
    Refused { addr: SocketAddr },
    /// No connection: unreachable, timed out, or a local fault; trying
    /// again later may work.
    #[error("connecting to {addr}: {reason}")]
    Failed { addr: SocketAddr, reason: String },
}

/// Which side's TLS refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TlsRefusal {
    /// This host's verifier refused the peer's certificate.
    ByUs,
    /// The peer closed the connection with a TLS alert.
    ByPeer,
}

/// Whether `e` is a TLS refusal, and whose: QUIC carries a TLS alert as a
/// crypto error (codes 0x100 to 0x1ff), raised locally by our verifier or
/// received in the peer's close.
pub(crate) fn tls_refusal(e: &quinn::ConnectionError) -> Option<TlsRefusal> {
    let crypto = |code: quinn::TransportErrorCode| (0x100..0x200).contains(&u64::from(code));
    match e {
        quinn::ConnectionError::TransportError(t) if crypto(t.code) => Some(TlsRefusal::ByUs),
        quinn::ConnectionError::ConnectionClosed(c) if crypto(c.error_code) => {
            Some(TlsRefusal::ByPeer)
        }
        _ => None,
    }
}

/// A host's QUIC endpoint (cheap to clone).
#[derive(Debug, Clone)]
pub struct PeerEndpoint {
    endpoint: quinn::Endpoint,
}

fn tls_error(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(format!("TLS configuration: {e}"))
}

/// How long a silent peer connection lives: a dead host's connections
/// close this soon, which ends the burst jobs it had accepted
/// (`executor_lost`, or a re-run elsewhere for idempotent ones).
const PEER_IDLE_TIMEOUT: Duration = Duration::from_secs(3);
/// Keep-alives on idle connections, well inside the idle timeout.
const KEEP_ALIVE: Duration = Duration::from_millis(500);

fn transport() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(PEER_IDLE_TIMEOUT).expect("3 s is a valid idle timeout"),
    ));
    t.keep_alive_interval(Some(KEEP_ALIVE));
    t
}

impl PeerEndpoint {
    /// Serves and connects on `socket` as `identity`, accepting the peers
    /// `peers` pins.
    pub fn bind(
        socket: std::net::UdpSocket,
        identity: &HostIdentity,
        peers: PinnedPeers,
    ) -> std::io::Result<Self> {
        Self::bind_with(socket, identity, peers, None)
    }

    /// Like [`PeerEndpoint::bind`], with `faults` applied to every datagram
    /// this endpoint sends (chaos tests only); the counters say what was
    /// done to them.
    pub fn bind_with_faults(
        socket: std::net::UdpSocket,
        identity: &HostIdentity,
        peers: PinnedPeers,
        faults: Faults,
    ) -> std::io::Result<(Self, Arc<FaultStats>)> {
        let stats = Arc::new(FaultStats::default());
        let endpoint = Self::bind_with(socket, identity, peers, Some((faults, stats.clone())))?;
        Ok((endpoint, stats))
    }

    fn bind_with(
        socket: std::net::UdpSocket,
        identity: &HostIdentity,
        peers: PinnedPeers,
        faults: Option<(Faults, Arc<FaultStats>)>,
    ) -> std::io::Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_error)?
            .with_client_cert_verifier(Arc::new(peers.clone()))
            .with_single_cert(vec![identity.certificate()], identity.private_key())
            .map_err(tls_error)?;
        server.alpn_protocols = vec![ALPN.to_vec()];
        server.max_early_data_size = 0;
        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_error)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(peers))
            .with_client_auth_cert(vec![identity.certificate()], identity.private_key())
            .map_err(tls_error)?;
        client.alpn_protocols = vec![ALPN.to_vec()];
        client.enable_early_data = false;

        let transport = Arc::new(transport());
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(
            QuicServerConfig::try_from(server).map_err(tls_error)?,
        ));
        server.transport_config(transport.clone());
        let mut client = quinn::ClientConfig::new(Arc::new(
            QuicClientConfig::try_from(client).map_err(tls_error)?,
        ));
        client.transport_config(transport);
        let runtime = Arc::new(quinn::TokioRuntime);
        let mut socket = quinn::Runtime::wrap_udp_socket(&*runtime, socket)?;
        if let Some((faults, stats)) = faults {
            tracing::warn!(%faults, "chaos: this host's QUIC endpoint drops, duplicates and delays datagrams");
            socket = Arc::new(FaultySocket::new(socket, faults, stats));
        }
        let mut endpoint = quinn::Endpoint::new_with_abstract_socket(
            quinn::EndpointConfig::default(),
            Some(server),
            socket,
            runtime,
        )?;
        endpoint.set_default_client_config(client);
        Ok(Self { endpoint })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// Connects to the peer at `addr` (fails unless both keys are pinned).
    pub async fn connect(&self, addr: SocketAddr) -> Result<quinn::Connection, ConnectError> {
        let connecting =
            self.endpoint
                .connect(addr, SERVER_NAME)
                .map_err(|e| ConnectError::Failed {
                    addr,
                    reason: e.to_string(),
                })?;
        connecting.await.map_err(|e| match tls_refusal(&e) {
            Some(TlsRefusal::ByUs) => ConnectError::NotPinned {
                addr,
                reason: e.to_string(),
            },
            Some(TlsRefusal::ByPeer) => ConnectError::Refused { addr },
            None => ConnectError::Failed {
                addr,
                reason: e.to_string(),
            },
        })
    }

    /// The next incoming connection attempt; `None` once closed.
    pub async fn accept(&self) -> Option<quinn::Incoming> {
        self.endpoint.accept().await
    }

    /// Closes every connection.
    pub fn close(&self) {
        self.endpoint.close(0u32.into(), b"shutting down");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tls_alert_in_the_peers_close_is_its_refusal_and_nothing_else_is() {
        let closed = |code| {
            quinn::ConnectionError::ConnectionClosed(quinn::ConnectionClose {
                error_code: code,
                frame_type: None,
                reason: bytes::Bytes::new(),
            })
        };
        // bad_certificate (42) as QUIC carries it.
        let alert = closed(quinn::TransportErrorCode::crypto(42));
        assert_eq!(tls_refusal(&alert), Some(TlsRefusal::ByPeer));
        let protocol = closed(quinn::TransportErrorCode::PROTOCOL_VIOLATION);
        assert_eq!(tls_refusal(&protocol), None);
        let app = quinn::ConnectionError::ApplicationClosed(quinn::ApplicationClose {
            error_code: 3u32.into(),
            reason: bytes::Bytes::from_static(b"no longer a member"),
        });
        assert_eq!(tls_refusal(&app), None);
        assert_eq!(tls_refusal(&quinn::ConnectionError::TimedOut), None);
        // (Our own verifier's refusal, `ByUs`, is a local transport error
        // quinn does not let tests build; the wrong-cluster join test in
        // cli/tests/cluster.rs shows it.)
    }
}
