//! Join tickets: what `spillway ticket create` prints and `spillway host
//! --join` consumes.
//!
//! A ticket carries the cluster id, the members' QUIC addresses and keys
//! (so the joining host knows whom to trust), an expiry, and a fresh
//! one-time ed25519 key. The log records the one-time key's public half
//! (`IssueTicket`); the joining host presents the key as its certificate
//! in the QUIC handshake, which is how a host that is not yet a member gets
//! through a handshake at all, and only to send one join request. The
//! issuing member signs the ticket with its identity key; the admitting
//! member checks that signature against the issuer's committed key.
//!
//! A ticket is a secret (it holds a private key): it is never logged, and
//! its `Debug` shows only the cluster and expiry.

use crate::peer::HostIdentity;
use serde::{Deserialize, Serialize};
use spillway_consensus::{JOIN_VERSION, PublicKey};

/// The text form starts with this.
const PREFIX: &str = "swj1_";

/// A member as a ticket lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketMember {
    pub id: u64,
    pub key: PublicKey,
    pub quic_addr: String,
}

/// The signed part of a ticket. Its `Debug` leaves out the secret key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketBody {
    pub version: u16,
    pub cluster_id: String,
    pub expires_unix_ms: u64,
    pub issuer: u64,
    pub members: Vec<TicketMember>,
    /// The one-time key (PKCS#8 DER): the secret part.
    secret_key: Vec<u8>,
}

/// A signed join ticket.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinTicket {
    pub body: TicketBody,
    pub signature: Vec<u8>,
}

impl std::fmt::Debug for TicketBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TicketBody")
            .field("cluster_id", &self.cluster_id)
            .field("expires_unix_ms", &self.expires_unix_ms)
            .field("issuer", &self.issuer)
            .field("members", &self.members)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for JoinTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinTicket")
            .field("cluster_id", &self.body.cluster_id)
            .field("expires_unix_ms", &self.body.expires_unix_ms)
            .finish_non_exhaustive()
    }
}

/// A ticket string that is not a ticket.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    #[error("not a join ticket (it should start with {PREFIX})")]
    Prefix,
    #[error("the join ticket is damaged: {0}")]
    Damaged(String),
    #[error("the join ticket's key is unusable: {0}")]
    Key(String),
}

impl JoinTicket {
    /// Makes a ticket signed by `issuer`, with a fresh one-time key.
    /// Returns it with the one-time key's public half (for the log).
    pub fn issue(
        issuer: &HostIdentity,
        issuer_id: u64,
        cluster_id: String,
        members: Vec<TicketMember>,
        expires_unix_ms: u64,
    ) -> Result<(Self, PublicKey), TicketError> {
        let one_time = HostIdentity::generate().map_err(|e| TicketError::Key(e.to_string()))?;
        let body = TicketBody {
            version: JOIN_VERSION,
            cluster_id,
            expires_unix_ms,
            issuer: issuer_id,
            members,
            secret_key: one_time.pkcs8_der(),
        };
        let signature = issuer.sign(&body.signed_bytes());
        Ok((Self { body, signature }, one_time.public_key()))
    }

    /// The one-time identity the joining host handshakes with.
    pub fn identity(&self) -> Result<HostIdentity, TicketError> {
        HostIdentity::from_pkcs8_der(&self.body.secret_key)
            .map_err(|e| TicketError::Key(e.to_string()))
    }

    /// Whether the issuer's key signed this ticket.
    pub fn signed_by(&self, issuer_key: &PublicKey) -> bool {
        HostIdentity::verify(issuer_key, &self.body.signed_bytes(), &self.signature)
    }

    /// The text form: `swj1_` and hex.
    pub fn encode(&self) -> String {
        let bytes = postcard::to_stdvec(self).expect("tickets serialise");
        format!("{PREFIX}{}", hex::encode(bytes))
    }

    pub fn decode(text: &str) -> Result<Self, TicketError> {
        let hex_part = text
            .trim()
            .strip_prefix(PREFIX)
            .ok_or(TicketError::Prefix)?;
        let bytes = hex::decode(hex_part).map_err(|e| TicketError::Damaged(e.to_string()))?;
        postcard::from_bytes(&bytes).map_err(|e| TicketError::Damaged(e.to_string()))
    }
}

impl TicketBody {
    fn signed_bytes(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("tickets serialise")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_verifies_and_detects_tampering() {
        let issuer = HostIdentity::generate().unwrap();
        let members = vec![TicketMember {
            id: 1,
            key: issuer.public_key(),
            quic_addr: "127.0.0.1:7071".into(),
        }];
        let (ticket, key) = JoinTicket::issue(&issuer, 1, "sw-a".into(), members, 99).unwrap();
        let text = ticket.encode();
        let back = JoinTicket::decode(&text).unwrap();
        assert_eq!(back, ticket);
        assert!(back.signed_by(&issuer.public_key()));
        assert_eq!(back.identity().unwrap().public_key(), key);
        assert!(!format!("{back:?}").contains(&hex::encode(&back.body.secret_key)));

        let mut forged = back.clone();
        forged.body.members[0].quic_addr = "10.0.0.9:7071".into();
        assert!(
            !forged.signed_by(&issuer.public_key()),
            "addresses are signed"
        );
        let other = HostIdentity::generate().unwrap();
        assert!(!back.signed_by(&other.public_key()));
        assert_eq!(
            JoinTicket::decode("swt_abc").unwrap_err(),
            TicketError::Prefix
        );
        assert!(matches!(
            JoinTicket::decode(&text[..text.len() - 4]),
            Err(TicketError::Damaged(_))
        ));
    }
}
