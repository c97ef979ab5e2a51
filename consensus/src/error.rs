//! Errors opening the control plane's storage.

use std::path::PathBuf;

/// The log or state-machine storage could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The log database is unusable (another process holds it, or it is
    /// corrupt); the message says which.
    #[error("cannot open the Raft log at {path}: {reason}")]
    Log { path: PathBuf, reason: String },
    /// The snapshot file exists but cannot be read.
    #[error("cannot read the snapshot at {path}: {reason}")]
    Snapshot { path: PathBuf, reason: String },
}
