//! API tokens in the control log: each scoped, stored as a hash, with an
//! optional expiry, revocable. Every host checks a presented token against
//! its own copy of the log, so a revocation takes effect on a host as soon
//! as that host applies it.
//!
//! What it is not: the secret (only its BLAKE3 hash is here) or the check
//! itself (the sidecar's `auth`). Tenants come with the tenants issue;
//! until then every token acts for the admin tenant.

use serde::{Deserialize, Serialize};
use spillway_proto::TenantId;
use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Scope {
    /// Everything, including membership, tickets and tokens.
    Admin,
    /// Run functions.
    Invoke,
    /// Upload artifacts and register functions.
    Publish,
    /// List artifacts, functions and the cluster.
    Read,
}

impl Scope {
    pub fn as_str(&self) -> &'static str {
        match self {
            Scope::Admin => "admin",
            Scope::Invoke => "invoke",
            Scope::Publish => "publish",
            Scope::Read => "read",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A scope name that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scope {0:?} (admin, invoke, publish or read)")]
pub struct ScopeError(String);

impl FromStr for Scope {
    type Err = ScopeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Scope::Admin),
            "invoke" => Ok(Scope::Invoke),
            "publish" => Ok(Scope::Publish),
            "read" => Ok(Scope::Read),
            other => Err(ScopeError(other.to_owned())),
        }
    }
}

/// One token, as the log keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenEntry {
    /// The public part of the token (it names the token in lists and
    /// revocations; the secret is not derivable from it).
    pub id: String,
    /// BLAKE3 of the secret part.
    pub hash: [u8; 32],
    pub tenant: TenantId,
    pub scopes: BTreeSet<Scope>,
    /// Free text to tell tokens apart.
    pub label: String,
    pub created_unix_ms: u64,
    pub expires_unix_ms: Option<u64>,
    pub revoked: bool,
    /// Requests a second it may make on each host (`None`: no limit).
    pub rate_per_s: Option<u32>,
}

/// Why a token does not let a request through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenDenial {
    Revoked,
    Expired,
    /// Valid, but without the scope the request needs.
    MissingScope(Scope),
}

impl TokenEntry {
    /// Whether this token may act with `scope` at `now_unix_ms` (`Admin`
    /// implies every scope).
    pub fn check(&self, scope: Scope, now_unix_ms: u64) -> Result<(), TokenDenial> {
        if self.revoked {
            return Err(TokenDenial::Revoked);
        }
        if self.expires_unix_ms.is_some_and(|e| now_unix_ms >= e) {
            return Err(TokenDenial::Expired);
        }
        if self.scopes.contains(&Scope::Admin) || self.scopes.contains(&scope) {
            Ok(())
        } else {
            Err(TokenDenial::MissingScope(scope))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(scopes: &[Scope]) -> TokenEntry {
        TokenEntry {
            id: "t1".into(),
            hash: [0; 32],
            tenant: TenantId::admin(),
            scopes: scopes.iter().copied().collect(),
            label: String::new(),
            created_unix_ms: 0,
            expires_unix_ms: Some(1_000),
            revoked: false,
            rate_per_s: None,
        }
    }

    #[test]
    fn scopes_expiry_and_revocation_decide() {
        let t = token(&[Scope::Invoke, Scope::Read]);
        assert_eq!(t.check(Scope::Invoke, 0), Ok(()));
        assert_eq!(t.check(Scope::Read, 999), Ok(()));
        assert_eq!(
            t.check(Scope::Publish, 0),
            Err(TokenDenial::MissingScope(Scope::Publish))
        );
        assert_eq!(t.check(Scope::Invoke, 1_000), Err(TokenDenial::Expired));
        let admin = token(&[Scope::Admin]);
        assert_eq!(admin.check(Scope::Publish, 0), Ok(()));
        let revoked = TokenEntry {
            revoked: true,
            ..admin
        };
        assert_eq!(revoked.check(Scope::Read, 0), Err(TokenDenial::Revoked));
        for s in ["admin", "invoke", "publish", "read"] {
            assert_eq!(s.parse::<Scope>().unwrap().as_str(), s);
        }
        assert!("root".parse::<Scope>().is_err());
    }
}
