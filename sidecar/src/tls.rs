//! TLS on the HTTP API: the host's certificate chain and key (PEM files)
//! and, for operators who want mutual TLS, a CA whose client certificates
//! the API takes (any other client is refused in the handshake). The files
//! are read again when they change (checked every few seconds, so a
//! renewed certificate or a Kubernetes secret swapped under its mount
//! takes effect by itself) or at SIGHUP; new connections get the new
//! configuration, open ones keep theirs. A reload that fails (a
//! half-written file, a key that does not match) keeps the one in force
//! and says why in the log.
//!
//! What it is not: the peers' QUIC TLS (`peer::identity`, certificates
//! pinned to host keys), or authorization (bearer tokens still decide what
//! a request may do; a client certificate only lets it connect).

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use tokio_rustls::TlsAcceptor;

/// Where a host's TLS material lives (`--tls-cert`, `--tls-key`,
/// `--tls-client-ca`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first (PEM).
    pub cert: PathBuf,
    /// The private key of the leaf (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// Mutual TLS: only clients with a certificate this CA (PEM, one or
    /// more certificates) signed may connect.
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    fn paths(&self) -> impl Iterator<Item = &Path> {
        [Some(&self.cert), Some(&self.key), self.client_ca.as_ref()]
            .into_iter()
            .flatten()
            .map(PathBuf::as_path)
    }
}

/// Why the TLS files could not be used. Each names the file: fix it, and
/// the host takes it at its next start, or at once if it is running.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no PEM certificate in it (a `BEGIN CERTIFICATE` block)")]
    NoCertificate { path: PathBuf },
    #[error("{path}: no PEM private key in it (PKCS#8, PKCS#1 or SEC1): {reason}")]
    NoKey { path: PathBuf, reason: String },
    #[error("{path}: not a PEM certificate: {reason}")]
    BadCertificate { path: PathBuf, reason: String },
    #[error("{cert} with {key}: not a usable certificate and key: {source}")]
    Pair {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
    #[error("{path}: not a usable CA for client certificates: {reason}")]
    ClientCa { path: PathBuf, reason: String },
}

/// What the files looked like when last read: their modification time,
/// size and inode (a renamed or re-linked file is a change too).
type Fingerprint = Vec<Option<(SystemTime, u64, u64)>>;

fn fingerprint(files: &TlsFiles) -> Fingerprint {
    use std::os::unix::fs::MetadataExt as _;
    files
        .paths()
        .map(|p| {
            let m = std::fs::metadata(p).ok()?;
            Some((m.modified().ok()?, m.len(), m.ino()))
        })
        .collect()
}

/// The API's TLS configuration in force, and the files it comes from.
#[derive(Debug)]
pub(crate) struct ServerTls {
    files: TlsFiles,
    current: RwLock<(Arc<rustls::ServerConfig>, Fingerprint)>,
}

impl ServerTls {
    /// Reads the files; refuses what would not serve.
    pub(crate) fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let seen = fingerprint(&files);
        let config = server_config(&files)?;
        Ok(Self {
            current: RwLock::new((config, seen)),
            files,
        })
    }

    /// The acceptor for a new connection.
    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.read().expect("tls lock").0.clone())
    }

    /// Reads the files again if they changed since last read (or always,
    /// with `force`): `Ok(true)` when a new configuration is in force.
    /// On an error the old one stays.
    pub(crate) fn reload(&self, force: bool) -> Result<bool, TlsError> {
        let seen = fingerprint(&self.files);
        if !force && self.current.read().expect("tls lock").1 == seen {
            return Ok(false);
        }
        // Remember what was tried, so a bad file is reported once, not at
        // every check, and tried again when it changes.
        self.current.write().expect("tls lock").1 = seen.clone();
        let config = server_config(&self.files)?;
        *self.current.write().expect("tls lock") = (config, seen);
        Ok(true)
    }
}

/// Reloads `tls` at SIGHUP and when its files change (checked `every`),
/// until the process ends. Without TLS it still takes SIGHUP (`systemctl
/// reload`), which would otherwise end the process, and says there is
/// nothing to reload.
pub(crate) async fn watch(tls: Option<Arc<ServerTls>>, every: Duration) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!("cannot watch SIGHUP ({e}): the TLS files reload only when they change");
            None
        }
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let force = tokio::select! {
            _ = tick.tick() => false,
            Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => None } } => true,
        };
        let Some(tls) = &tls else {
            if force {
                tracing::info!("SIGHUP: no TLS files to reload");
            }
            continue;
        };
        match tls.reload(force) {
            Ok(true) => {
                tracing::info!(cert = %tls.files.cert.display(), "TLS certificate reloaded")
            }
            Ok(false) => {}
            Err(e) => tracing::error!("TLS reload failed, keeping the certificate in force: {e}"),
        }
    }
}

/// A rustls server configuration from the files (HTTP/1.1, ring).
fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certificates(&files.cert)?;
    let key = private_key(&files.key)?;
    let pair = |source| TlsError::Pair {
        cert: files.cert.clone(),
        key: files.key.clone(),
        source,
    };
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(pair)?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let ca = |reason: String| TlsError::ClientCa {
                path: path.clone(),
                reason,
            };
            let mut roots = rustls::RootCertStore::empty();
            for cert in certificates(path)? {
                roots.add(cert).map_err(|e| ca(e.to_string()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| ca(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(pair)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Every certificate in a PEM file (at least one).
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadCertificate {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// The first private key in a PEM file.
fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::NoKey {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Material {
        dir: tempfile::TempDir,
    }

    impl Material {
        fn new() -> Self {
            Self {
                dir: tempfile::tempdir().unwrap(),
            }
        }

        fn write(&self, name: &str, text: &str) -> PathBuf {
            let path = self.dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        }

        /// A self-signed certificate for localhost and its key.
        fn pair(&self, prefix: &str) -> (PathBuf, PathBuf) {
            let key = rcgen::KeyPair::generate().unwrap();
            let params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
            let cert = params.self_signed(&key).unwrap();
            (
                self.write(&format!("{prefix}.crt"), &cert.pem()),
                self.write(&format!("{prefix}.key"), &key.serialize_pem()),
            )
        }
    }

    #[test]
    fn a_certificate_and_its_key_load_and_reload_only_on_change() {
        let m = Material::new();
        let (cert, key) = m.pair("a");
        let files = TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: Some(cert.clone()),
        };
        let tls = ServerTls::load(files).unwrap();
        assert!(!tls.reload(false).unwrap(), "nothing changed");
        assert!(tls.reload(true).unwrap(), "SIGHUP reads them anyway");
        // A new pair written over the old one is taken.
        let (cert2, key2) = m.pair("b");
        std::fs::rename(cert2, &cert).unwrap();
        std::fs::rename(key2, &key).unwrap();
        assert!(tls.reload(false).unwrap());
    }

    #[test]
    fn a_bad_reload_keeps_the_configuration_in_force_and_is_reported_once() {
        let m = Material::new();
        let (cert, key) = m.pair("a");
        let tls = ServerTls::load(TlsFiles {
            cert,
            key: key.clone(),
            client_ca: None,
        })
        .unwrap();
        let before = format!("{:?}", Arc::as_ptr(tls.acceptor().config()));
        let (_, other_key) = m.pair("b");
        std::fs::write(&key, std::fs::read(&other_key).unwrap()).unwrap();
        let err = tls.reload(false).unwrap_err();
        assert!(matches!(err, TlsError::Pair { .. }), "{err}");
        assert!(
            !tls.reload(false).unwrap(),
            "the same bad files are not retried"
        );
        let after = format!("{:?}", Arc::as_ptr(tls.acceptor().config()));
        assert_eq!(before, after);
    }

    #[test]
    fn bad_files_are_named() {
        let m = Material::new();
        let (cert, key) = m.pair("a");
        let empty = m.write("empty.pem", "");
        let garbage = m.write("garbage.pem", "-----BEGIN CERTIFICATE-----\nnot base64!\n");
        let missing = m.dir.path().join("missing.pem");
        let cases: Vec<(TlsFiles, &str)> = vec![
            (
                TlsFiles {
                    cert: missing.clone(),
                    key: key.clone(),
                    client_ca: None,
                },
                "missing.pem: No such file",
            ),
            (
                TlsFiles {
                    cert: empty.clone(),
                    key: key.clone(),
                    client_ca: None,
                },
                "empty.pem: no PEM certificate",
            ),
            (
                TlsFiles {
                    cert: garbage,
                    key: key.clone(),
                    client_ca: None,
                },
                "garbage.pem: not a PEM certificate",
            ),
            (
                TlsFiles {
                    cert: cert.clone(),
                    key: empty.clone(),
                    client_ca: None,
                },
                "empty.pem: no PEM private key",
            ),
            (
                TlsFiles {
                    cert: cert.clone(),
                    key: cert.clone(),
                    client_ca: None,
                },
                "a.crt: no PEM private key",
            ),
            (
                TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                    client_ca: Some(empty),
                },
                "empty.pem: no PEM certificate",
            ),
        ];
        for (files, want) in cases {
            let err = ServerTls::load(files.clone()).unwrap_err().to_string();
            assert!(err.contains(want), "{files:?}: {err}");
        }
    }
}
