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
    /// Plain HTTP off loopback without `--insecure-http`: give the host a
    /// certificate (`--tls-cert`, `--tls-key`), listen on loopback, or say
    /// `--insecure-http` when a TLS-terminating proxy is the only way in.
    #[error(
        "refusing to serve plain HTTP on {0}, off loopback: tokens would cross the network in clear; give --tls-cert and --tls-key, listen on 127.0.0.1, or pass --insecure-http behind a TLS-terminating proxy"
    )]
    PlainHttp(SocketAddr),
    /// The TLS certificate, key or client CA is unusable; the error names
    /// the file.
    #[error("TLS on the HTTP API: {0}")]
    Tls(#[from] crate::TlsError),
    /// The state directory is unusable.
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Token(#[from] crate::TokenError),
    #[error(transparent)]
    Identity(#[from] crate::peer::IdentityError),
    #[error(transparent)]
    Control(#[from] spillway_consensus::ControlError),
    #[error(transparent)]
    Ticket(#[from] crate::peer::TicketError),
    /// The cluster refused to admit this host; the reason says why.
    #[error("join refused ({code}): {0}", code = .0.code())]
    JoinRefused(#[from] spillway_consensus::JoinRefusal),
    /// None of the ticket's members could be reached.
    #[error("no member of the ticket's cluster answered: {0}")]
    JoinUnreachable(String),
    /// A backup is restored into a new directory, never over a member's.
    #[error(
        "{dir} belongs to cluster {cluster} already: restore a backup into a new, empty directory"
    )]
    RestoreIntoMember { dir: PathBuf, cluster: String },
    /// The state directory belongs to no cluster and none was asked for.
    #[error(
        "{0} belongs to no cluster: found one with `spillway init`, or join one with `spillway join TICKET`"
    )]
    NoCluster(PathBuf),
    #[error("control plane: {0}")]
    Cluster(String),
}
