//! Why a sidecar could not start. Errors of single requests are
//! [`crate::http::ApiError`]s; errors of jobs are `proto` failures.

use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    /// Fix the named configuration value.
    #[error("invalid sidecar configuration: {0}")]
    Config(#[from] crate::ConfigError),
    /// The HTTP address is taken or not ours; pick another `--listen`.
    #[error("cannot serve HTTP on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The state directory is unusable.
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Token(#[from] crate::TokenError),
    /// The registry file exists but is not ours or is corrupt.
    #[error("cannot read the registry {path}: {reason}")]
    Registry { path: PathBuf, reason: String },
}
