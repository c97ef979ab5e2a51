//! Certificate verification by pinned keys: a peer is accepted when its
//! certificate's ed25519 key is one of the pinned keys, and the TLS 1.3
//! handshake signature verifies with that same key. Names, chains and
//! expiry do not matter: the key is the identity, and membership (the
//! control log) says which keys are in.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};
use std::collections::HashSet;
use std::sync::{Arc, RwLock};

/// The ed25519 OID, 1.3.101.112.
const ED25519_OID: &str = "1.3.101.112";

/// The keys this host accepts in a handshake: members' identity keys, and
/// the one-time keys of join tickets (whose holders may only ask to join).
/// Cheap to clone; every clone sees changes: a member joining or leaving
/// takes effect on the next handshake, and open connections hear of every
/// change ([`PinnedPeers::changes`]) so the peer service closes those
/// whose key is no longer pinned.
#[derive(Clone)]
pub struct PinnedPeers {
    keys: Arc<RwLock<Keys>>,
    algorithms: WebPkiSupportedAlgorithms,
    changes: Arc<tokio::sync::watch::Sender<u64>>,
}

#[derive(Debug, Default)]
struct Keys {
    members: HashSet<[u8; 32]>,
    tickets: HashSet<[u8; 32]>,
}

impl std::fmt::Debug for PinnedPeers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (m, t) = self
            .keys
            .read()
            .map(|k| (k.members.len(), k.tickets.len()))
            .unwrap_or_default();
        f.debug_struct("PinnedPeers")
            .field("members", &m)
            .field("tickets", &t)
            .finish()
    }
}

impl Default for PinnedPeers {
    fn default() -> Self {
        Self {
            keys: Arc::default(),
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
            changes: Arc::new(tokio::sync::watch::channel(0).0),
        }
    }
}

/// The ed25519 public key in a certificate, parsed properly (never found
/// by searching the bytes).
pub(crate) fn ed25519_key(cert: &CertificateDer<'_>) -> Result<[u8; 32], Error> {
    let bad = |why: &str| Error::General(format!("peer certificate rejected: {why}"));
    let (_, parsed) =
        x509_parser::parse_x509_certificate(cert.as_ref()).map_err(|_| bad("not X.509"))?;
    let spki = parsed.public_key();
    if spki.algorithm.algorithm.to_id_string() != ED25519_OID {
        return Err(bad("not an ed25519 key"));
    }
    spki.subject_public_key
        .data
        .as_ref()
        .try_into()
        .map_err(|_| bad("malformed ed25519 key"))
}

impl PinnedPeers {
    /// Accepts `key` as a member's from now on.
    pub fn pin(&self, key: [u8; 32]) {
        self.keys
            .write()
            .expect("pinned keys lock")
            .members
            .insert(key);
        self.changed();
    }

    /// Accepts `key` as a join ticket's (its holder may only ask to join).
    pub fn pin_ticket(&self, key: [u8; 32]) {
        self.keys
            .write()
            .expect("pinned keys lock")
            .tickets
            .insert(key);
        self.changed();
    }

    /// Stops accepting `key`; the peer service closes its open connections.
    pub fn unpin(&self, key: &[u8; 32]) {
        {
            let mut keys = self.keys.write().expect("pinned keys lock");
            keys.members.remove(key);
            keys.tickets.remove(key);
        }
        self.changed();
    }

    /// Replaces every pinned key (from the committed membership).
    pub fn replace(
        &self,
        members: impl IntoIterator<Item = [u8; 32]>,
        tickets: impl IntoIterator<Item = [u8; 32]>,
    ) {
        let members: HashSet<[u8; 32]> = members.into_iter().collect();
        let tickets: HashSet<[u8; 32]> = tickets.into_iter().collect();
        {
            let mut keys = self.keys.write().expect("pinned keys lock");
            if keys.members == members && keys.tickets == tickets {
                return;
            }
            keys.members = members;
            keys.tickets = tickets;
        }
        self.changed();
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Ticks on every change of the pinned keys.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Whether `key` is pinned at all (a member's or a ticket's).
    pub fn is_pinned(&self, key: &[u8; 32]) -> bool {
        let keys = self.keys.read().expect("pinned keys lock");
        keys.members.contains(key) || keys.tickets.contains(key)
    }

    /// Whether `key` is a member's (not just a ticket's).
    pub fn is_member(&self, key: &[u8; 32]) -> bool {
        self.keys
            .read()
            .expect("pinned keys lock")
            .members
            .contains(key)
    }

    fn check(&self, cert: &CertificateDer<'_>) -> Result<(), Error> {
        let key = ed25519_key(cert)?;
        let keys = self.keys.read().expect("pinned keys lock");
        if keys.members.contains(&key) || keys.tickets.contains(&key) {
            Ok(())
        } else {
            Err(Error::General(
                "peer certificate rejected: key is not a member".into(),
            ))
        }
    }
}

/// Only ed25519 handshake signatures: every host key is ed25519.
const SCHEMES: [SignatureScheme; 1] = [SignatureScheme::ED25519];

fn tls12_refused() -> Error {
    Error::General("TLS 1.2 is not accepted".into())
}

impl PinnedPeers {
    /// The TLS 1.3 handshake signature, checked with the certificate's key
    /// (the key `check` found pinned).
    fn handshake_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }
}

impl ServerCertVerifier for PinnedPeers {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        self.check(end_entity)
            .map(|()| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        Err(tls12_refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.handshake_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        SCHEMES.to_vec()
    }
}

impl ClientCertVerifier for PinnedPeers {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        self.check(end_entity)
            .map(|()| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        Err(tls12_refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.handshake_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        SCHEMES.to_vec()
    }
}
