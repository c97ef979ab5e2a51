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
    /// Written by a later build than this one: run that build, or restore
    /// the copy of the state directory taken before the upgrade.
    #[error(
        "{path} was written by a newer Spillway (format {found}; this build reads up to {supported}): run the newer build, or restore the copy taken before upgrading"
    )]
    NewerFormat {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
}

impl OpenError {
    /// `error`, met opening `path`, as an `OpenError` (`damaged` makes the
    /// variant for a damaged store).
    pub(crate) fn from_format(
        path: &std::path::Path,
        error: crate::format::FormatError,
        damaged: impl FnOnce(String) -> Self,
    ) -> Self {
        match error {
            crate::format::FormatError::Newer { found, supported } => Self::NewerFormat {
                path: path.to_owned(),
                found,
                supported,
            },
            other => damaged(other.to_string()),
        }
    }
}
