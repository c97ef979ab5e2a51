//! The versions of the control state a host keeps on disk, and the
//! migrations from each earlier version to this build's.
//!
//! | store | file | where its version is | this build |
//! | --- | --- | --- | --- |
//! | the Raft log | `raft/log.redb` | its `meta` table, key `format` | [`LOG_FORMAT`] |
//! | the latest snapshot | `raft/state/snapshot.bin` | a header: 8-byte magic, version (u32 LE), the payload's BLAKE3 | [`SNAPSHOT_FORMAT`] |
//!
//! Version 0 is what builds before versioning wrote: a log without a
//! `format` key, and a snapshot file that was the bare postcard encoding of
//! its metadata and state (it cannot start with the magic: its first byte
//! is an `Option` tag, 0 or 1). Opening a store of an earlier version
//! migrates it in place, step by step, and reports a [`Migration`]; a store
//! of a later version is refused (`OpenError::NewerFormat`), never guessed
//! at: upgrades go forward only, and going back means restoring the copy
//! taken before the upgrade (`docs/operations.md`, Upgrades).
//!
//! What it is not: the encoding itself (postcard, in `log_store` and
//! `state_machine`), or the peers' wire protocol (`sidecar/src/peer/wire.rs`).

use std::path::PathBuf;

/// The Raft log's format in this build.
pub const LOG_FORMAT: u32 = 1;
/// The snapshot file's format in this build.
pub const SNAPSHOT_FORMAT: u32 = 2;

/// What a versioned snapshot file starts with.
const SNAPSHOT_MAGIC: &[u8; 8] = b"SPWSNAP\0";
const SNAPSHOT_HEADER: usize = SNAPSHOT_MAGIC.len() + 4 + 32;

/// A store read at an earlier version and brought to this build's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    pub store: PathBuf,
    pub from: u32,
    pub to: u32,
}

/// Why a store's bytes are not a version this build reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// Written by a later build: run that build, or restore the copy taken
    /// before the upgrade.
    #[error("format {found} is newer than this build reads (up to {supported})")]
    Newer { found: u32, supported: u32 },
    /// The header says one thing and the bytes another (a torn or damaged
    /// file): restore it from a backup or a peer.
    #[error("damaged: {0}")]
    Damaged(&'static str),
}

/// What opening the log at `found` (its `format` key, if any) must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogStep {
    /// It is this build's: nothing.
    Current,
    /// Bring it from `from` to [`LOG_FORMAT`] (version 0 to 1: the entries
    /// are the same; the version is written).
    Migrate { from: u32 },
}

/// Decides what the log at version `found` (`None`: no `format` key, version
/// 0) needs.
pub(crate) fn log_step(found: Option<u32>) -> Result<LogStep, FormatError> {
    match found.unwrap_or(0) {
        v if v == LOG_FORMAT => Ok(LogStep::Current),
        v if v < LOG_FORMAT => Ok(LogStep::Migrate { from: v }),
        v => Err(FormatError::Newer {
            found: v,
            supported: LOG_FORMAT,
        }),
    }
}

/// A snapshot file's payload and the version it was written in: version 0
/// is the whole file; later versions are checked against their header.
pub(crate) fn read_snapshot(bytes: &[u8]) -> Result<(u32, &[u8]), FormatError> {
    let Some(rest) = bytes.strip_prefix(SNAPSHOT_MAGIC) else {
        return Ok((0, bytes));
    };
    if bytes.len() < SNAPSHOT_HEADER {
        return Err(FormatError::Damaged("the header is cut short"));
    }
    let version = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes"));
    if version > SNAPSHOT_FORMAT {
        return Err(FormatError::Newer {
            found: version,
            supported: SNAPSHOT_FORMAT,
        });
    }
    let (hash, payload) = rest[4..].split_at(32);
    if blake3::hash(payload).as_bytes() != hash {
        return Err(FormatError::Damaged(
            "the payload does not match its checksum",
        ));
    }
    Ok((version, payload))
}

/// A snapshot file of this build's format around `payload`.
pub(crate) fn write_snapshot(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(SNAPSHOT_HEADER + payload.len());
    out.extend_from_slice(SNAPSHOT_MAGIC);
    out.extend_from_slice(&SNAPSHOT_FORMAT.to_le_bytes());
    out.extend_from_slice(blake3::hash(payload).as_bytes());
    out.extend_from_slice(payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_is_migrated_forward_only() {
        let cases = [
            (None, Ok(LogStep::Migrate { from: 0 })),
            (Some(0), Ok(LogStep::Migrate { from: 0 })),
            (Some(LOG_FORMAT), Ok(LogStep::Current)),
            (
                Some(LOG_FORMAT + 1),
                Err(FormatError::Newer {
                    found: LOG_FORMAT + 1,
                    supported: LOG_FORMAT,
                }),
            ),
        ];
        for (found, want) in cases {
            assert_eq!(log_step(found), want, "{found:?}");
        }
    }

    #[test]
    fn a_snapshot_round_trips_and_version_0_is_the_bare_payload() {
        let payload = b"\x01some postcard bytes";
        let file = write_snapshot(payload);
        assert_eq!(read_snapshot(&file), Ok((SNAPSHOT_FORMAT, &payload[..])));
        // Before versioning the file was the payload itself.
        assert_eq!(read_snapshot(payload), Ok((0, &payload[..])));
        assert_eq!(read_snapshot(b""), Ok((0, &b""[..])));
    }

    #[test]
    fn a_damaged_or_newer_snapshot_is_refused() {
        let file = write_snapshot(b"\x00state");
        let mut flipped = file.clone();
        *flipped.last_mut().unwrap() ^= 1;
        let mut newer = file.clone();
        newer[8..12].copy_from_slice(&(SNAPSHOT_FORMAT + 1).to_le_bytes());
        let cases: [(&[u8], FormatError); 3] = [
            (&file[..20], FormatError::Damaged("the header is cut short")),
            (
                &flipped,
                FormatError::Damaged("the payload does not match its checksum"),
            ),
            (
                &newer,
                FormatError::Newer {
                    found: SNAPSHOT_FORMAT + 1,
                    supported: SNAPSHOT_FORMAT,
                },
            ),
        ];
        for (bytes, want) in cases {
            assert_eq!(read_snapshot(bytes), Err(want));
        }
    }
}
