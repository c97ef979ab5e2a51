//! Bearer tokens.
//!
//! The **admin token** (`swt_…`) is generated when a cluster is founded,
//! shown once, and stored only as its BLAKE3 hash: in the founding host's
//! `dir/admin-token.blake3`, and in the control log, from which every host
//! checks it. **Scoped tokens** ([`ScopedToken`], `swk_<id>_<secret>`) are
//! made through the API; the log keeps their id, scopes, expiry and the
//! hash of their secret. Requests present either as `Authorization: Bearer
//! <token>`; comparisons are of hashes, in constant time.

use std::path::{Path, PathBuf};

const FILE: &str = "admin-token.blake3";

/// The admin token's hash, and the secret itself when this start created it.
#[derive(Clone)]
pub struct AdminToken {
    hash: blake3::Hash,
    /// The secret, only on the start that generated it (to be shown once).
    pub created: Option<String>,
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminToken").finish_non_exhaustive()
    }
}

/// The token file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot access the admin token file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Delete the file to generate a new token (all clients need the new one).
    #[error("the admin token file {0} is corrupt")]
    Corrupt(PathBuf),
    #[error("no randomness available: {0}")]
    Random(String),
}

impl AdminToken {
    /// A new random secret: `swt_` and 64 hex digits (256 bits).
    pub fn generate_secret() -> Result<String, TokenError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| TokenError::Random(e.to_string()))?;
        Ok(format!("swt_{}", hex::encode(bytes)))
    }

    /// Stores the hash of `secret` as the admin token of the host at `dir`
    /// (used by `spillway up`, which prints the secret itself).
    pub fn install(dir: &Path, secret: &str) -> Result<(), TokenError> {
        let path = dir.join(FILE);
        let io = |source| TokenError::Io {
            path: path.clone(),
            source,
        };
        crate::owner_only::create_dir(dir).map_err(io)?;
        crate::owner_only::write(&path, blake3::hash(secret.as_bytes()).to_hex().as_bytes())
            .map_err(io)
    }

    /// Loads the token hash from `dir`, creating a token if there is none.
    pub fn load_or_create(dir: &Path) -> Result<Self, TokenError> {
        let path = dir.join(FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let hash = blake3::Hash::from_hex(text.trim())
                    .map_err(|_| TokenError::Corrupt(path.clone()))?;
                Ok(Self {
                    hash,
                    created: None,
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let secret = Self::generate_secret()?;
                Self::install(dir, &secret)?;
                Ok(Self {
                    hash: blake3::hash(secret.as_bytes()),
                    created: Some(secret),
                })
            }
            Err(source) => Err(TokenError::Io { path, source }),
        }
    }

    /// The token whose hash is `hash` (as the control log holds it).
    pub fn from_hash(hash: [u8; 32]) -> Self {
        Self {
            hash: blake3::Hash::from_bytes(hash),
            created: None,
        }
    }

    /// The token's BLAKE3 hash.
    pub fn hash_bytes(&self) -> [u8; 32] {
        *self.hash.as_bytes()
    }

    /// Whether `presented` is the admin token (constant-time).
    pub fn verify(&self, presented: &str) -> bool {
        blake3::hash(presented.as_bytes()) == self.hash
    }
}

/// A scoped API token: `swk_`, a public id of 16 hex digits, `_`, and a
/// secret of 64 hex digits (256 bits) of which the log keeps only the hash.
pub struct ScopedToken {
    pub id: String,
    secret: String,
}

impl std::fmt::Debug for ScopedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScopedToken")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl ScopedToken {
    const PREFIX: &'static str = "swk_";

    /// A new random token.
    pub fn generate() -> Result<Self, TokenError> {
        let mut id = [0u8; 8];
        let mut secret = [0u8; 32];
        for bytes in [&mut id[..], &mut secret[..]] {
            getrandom::fill(bytes).map_err(|e| TokenError::Random(e.to_string()))?;
        }
        Ok(Self {
            id: hex::encode(id),
            secret: hex::encode(secret),
        })
    }

    /// Splits a presented token into id and secret; `None` if it is not a
    /// scoped token.
    pub fn parse(presented: &str) -> Option<Self> {
        let rest = presented.strip_prefix(Self::PREFIX)?;
        let (id, secret) = rest.split_once('_')?;
        let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
        (hex(id, 16) && hex(secret, 64)).then(|| Self {
            id: id.to_owned(),
            secret: secret.to_owned(),
        })
    }

    /// The hash the log keeps.
    pub fn hash_bytes(&self) -> [u8; 32] {
        *blake3::hash(self.secret.as_bytes()).as_bytes()
    }

    /// Whether the secret hashes to `hash` (constant-time).
    pub fn matches(&self, hash: [u8; 32]) -> bool {
        blake3::hash(self.secret.as_bytes()) == blake3::Hash::from_bytes(hash)
    }

    /// The token as the client presents it (a secret: show it once).
    pub fn reveal(&self) -> String {
        format!("{}{}_{}", Self::PREFIX, self.id, self.secret)
    }
}

/// Who a request acts as, once its token checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Principal {
    pub(crate) tenant: spillway_proto::TenantId,
    /// The scoped token's id (`None`: the admin token).
    pub(crate) token: Option<String>,
}

/// Why a presented token does not let a request through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum Denial {
    /// This host has not applied the cluster's founding entry yet: retry.
    #[error("this host has not caught up with the control log yet")]
    NotReady,
    #[error("the token is not valid for this cluster")]
    Invalid,
    #[error("token {0} was revoked")]
    Revoked(String),
    #[error("token {0} expired")]
    Expired(String),
    #[error("token {0} lacks the {1} scope")]
    MissingScope(String, String),
}

/// Checks `token` against the control state: the admin token may do
/// anything; a scoped token must be live at `now_unix_ms` and hold
/// `scope`. Pure: the HTTP ingress and the leader (for a change another
/// member forwards) decide alike.
pub(crate) fn authenticate(
    state: &spillway_consensus::ControlState,
    token: &str,
    scope: spillway_consensus::Scope,
    now_unix_ms: u64,
) -> Result<Principal, Denial> {
    use spillway_consensus::TokenDenial;
    let hash = state.admin_token_hash().ok_or(Denial::NotReady)?;
    if let Some(scoped) = ScopedToken::parse(token) {
        let entry = state
            .token(&scoped.id)
            .filter(|e| scoped.matches(e.hash))
            .ok_or(Denial::Invalid)?;
        return match entry.check(scope, now_unix_ms) {
            Ok(()) => Ok(Principal {
                tenant: entry.tenant.clone(),
                token: Some(entry.id.clone()),
            }),
            Err(TokenDenial::Revoked) => Err(Denial::Revoked(entry.id.clone())),
            Err(TokenDenial::Expired) => Err(Denial::Expired(entry.id.clone())),
            Err(TokenDenial::MissingScope(s)) => {
                Err(Denial::MissingScope(entry.id.clone(), s.as_str().into()))
            }
        };
    }
    match AdminToken::from_hash(hash).verify(token) {
        true => Ok(Principal {
            tenant: spillway_proto::TenantId::admin(),
            token: None,
        }),
        false => Err(Denial::Invalid),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_loaded_and_verified() {
        let dir = tempfile::tempdir().unwrap();
        let first = AdminToken::load_or_create(dir.path()).unwrap();
        let secret = first.created.clone().expect("first start creates a token");
        let again = AdminToken::load_or_create(dir.path()).unwrap();
        assert!(again.created.is_none());
        assert!(again.verify(&secret));
        assert!(!again.verify("swt_wrong"));
        let stored = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert!(!stored.contains(&secret[4..]), "only the hash is stored");
    }

    #[test]
    fn scoped_tokens_round_trip_and_only_their_secret_matches() {
        let t = ScopedToken::generate().unwrap();
        let shown = t.reveal();
        let back = ScopedToken::parse(&shown).unwrap();
        assert_eq!(back.id, t.id);
        assert!(back.matches(t.hash_bytes()));
        let other = ScopedToken::generate().unwrap();
        assert!(!other.matches(t.hash_bytes()));
        assert!(
            !format!("{t:?}").contains(&shown[21..]),
            "Debug hides the secret"
        );
        for bad in [
            "swt_00",
            "swk_zz_00",
            "swk_0011223344556677",
            &shown[..shown.len() - 1],
        ] {
            assert!(ScopedToken::parse(bad).is_none(), "{bad}");
        }
    }
}
