//! Identifiers: hosts, tenants, jobs and content digests.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A host in the cluster. Single-host deployments use `NodeId(1)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

/// `n2` (as hosts are shown) or `2`.
impl FromStr for NodeId {
    type Err = std::num::ParseIntError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.strip_prefix('n').unwrap_or(s).parse().map(NodeId)
    }
}

/// A tenant: the owner of functions, artifacts and quotas.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TenantId(pub String);

impl TenantId {
    /// The cluster operator's tenant: the admin token acts for it, and it
    /// always exists.
    pub fn admin() -> Self {
        Self("admin".to_owned())
    }

    pub fn is_admin(&self) -> bool {
        self.0 == "admin"
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One invocation, unique across the cluster (128 random bits), shown as 32
/// hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct JobId(pub u128);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// The BLAKE3 digest of an artifact's bytes: its name in every cache.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }

    /// The lowercase hex form, also used as the file name in caches.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "blake3:{}", self.to_hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A string that is not a digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a digest: expected `blake3:` followed by 64 hex digits, got {0:?}")]
pub struct DigestParseError(pub String);

impl FromStr for Digest {
    type Err = DigestParseError;

    /// Accepts `blake3:<64 hex>` or the bare 64 hex digits.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex_part = s.strip_prefix("blake3:").unwrap_or(s);
        let mut out = [0u8; 32];
        if hex_part.len() != 64 || hex::decode_to_slice(hex_part, &mut out).is_err() {
            return Err(DigestParseError(s.to_owned()));
        }
        Ok(Self(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ids_parse_as_shown_or_bare() {
        assert_eq!("n2".parse::<NodeId>().unwrap(), NodeId(2));
        assert_eq!("17".parse::<NodeId>().unwrap(), NodeId(17));
        assert_eq!(NodeId(5).to_string().parse::<NodeId>().unwrap(), NodeId(5));
        assert!("x2".parse::<NodeId>().is_err());
        assert!("n".parse::<NodeId>().is_err());
    }

    #[test]
    fn digest_round_trips_through_text() {
        let d = Digest::of(b"hello");
        assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
        assert_eq!(d.to_hex().parse::<Digest>().unwrap(), d);
        assert!("blake3:zz".parse::<Digest>().is_err());
        assert!("".parse::<Digest>().is_err());
    }

    #[test]
    fn job_id_shows_as_32_hex_digits() {
        assert_eq!(JobId(255).to_string(), format!("{:0>32}", "ff"));
    }
}
