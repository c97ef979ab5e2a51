//! A host's identity: an ed25519 key pair, kept in `dir/identity.pem`
//! (0600), and a self-signed certificate for it that QUIC presents.

use rcgen::{CertificateParams, KeyPair, PKCS_ED25519};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::path::{Path, PathBuf};

/// The identity key could not be made, read or stored.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("identity key {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not an ed25519 key in PEM; delete it to make a new
    /// identity (the host must then be admitted again).
    #[error("identity key {path} is not a usable ed25519 key: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("cannot make a certificate: {0}")]
    Certificate(String),
}

/// The key pair and certificate of one host.
pub struct HostIdentity {
    key: KeyPair,
    cert: CertificateDer<'static>,
}

impl std::fmt::Debug for HostIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostIdentity")
            .field("public_key", &self.public_key_hex())
            .finish()
    }
}

impl HostIdentity {
    /// A new random identity (not stored).
    pub fn generate() -> Result<Self, IdentityError> {
        let key = KeyPair::generate_for(&PKCS_ED25519)
            .map_err(|e| IdentityError::Certificate(e.to_string()))?;
        Self::from_key(key)
    }

    fn from_key(key: KeyPair) -> Result<Self, IdentityError> {
        let cert = CertificateParams::new(vec!["spillway-host".to_owned()])
            .and_then(|p| p.self_signed(&key))
            .map_err(|e| IdentityError::Certificate(e.to_string()))?;
        Ok(Self {
            cert: cert.der().clone(),
            key,
        })
    }

    /// The identity whose private key is `der` (PKCS#8), as carried by a
    /// join ticket.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, IdentityError> {
        let key = KeyPair::try_from(der).map_err(|e| IdentityError::Certificate(e.to_string()))?;
        if key.public_key_raw().len() != 32 {
            return Err(IdentityError::Certificate("not an ed25519 key".into()));
        }
        Self::from_key(key)
    }

    /// The private key as PKCS#8 DER (to put in a join ticket: a secret).
    pub(crate) fn pkcs8_der(&self) -> Vec<u8> {
        self.key.serialize_der()
    }

    /// Signs `message` with the identity key (ed25519).
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        use rcgen::SigningKey;
        self.key
            .sign(message)
            .expect("ed25519 signing does not fail")
    }

    /// Whether `signature` is `key`'s ed25519 signature of `message`
    /// (checked strictly: see `signing::ed25519_strict`).
    pub fn verify(key: &[u8; 32], message: &[u8], signature: &[u8]) -> bool {
        crate::signing::ed25519_strict(key, message, signature)
    }

    /// Loads the identity in `dir`, creating it on first start.
    pub fn load_or_create(dir: &Path) -> Result<Self, IdentityError> {
        let path = dir.join("identity.pem");
        let io = |source| IdentityError::Io {
            path: path.clone(),
            source,
        };
        match std::fs::read_to_string(&path) {
            Ok(pem) => {
                let key = KeyPair::from_pem(&pem).map_err(|e| IdentityError::Invalid {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                if key.public_key_raw().len() != 32 {
                    return Err(IdentityError::Invalid {
                        path,
                        reason: "not ed25519".into(),
                    });
                }
                Self::from_key(key)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let identity = Self::generate()?;
                crate::owner_only::create_dir(dir).map_err(io)?;
                crate::owner_only::write(&path, identity.key.serialize_pem().as_bytes())
                    .map_err(io)?;
                Ok(identity)
            }
            Err(e) => Err(io(e)),
        }
    }

    /// The raw 32-byte ed25519 public key: the host's name among peers.
    pub fn public_key(&self) -> [u8; 32] {
        self.key
            .public_key_raw()
            .try_into()
            .expect("ed25519 public keys are 32 bytes")
    }

    pub fn public_key_hex(&self) -> String {
        self.public_key()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    pub(crate) fn certificate(&self) -> CertificateDer<'static> {
        self.cert.clone()
    }

    pub(crate) fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.serialize_der()))
    }
}
