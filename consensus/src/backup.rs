//! Backups of the control state: what a new cluster needs to take over an
//! old one's tenants, tokens, functions and artifact records, the log
//! position it was taken at, and its file format.
//!
//! A backup is taken from any member after a linearizable read (so it holds
//! every change acknowledged before it was asked for), or offline from a
//! stopped host's state directory (its snapshot and the committed entries
//! after it: the way back when quorum is lost). A new cluster founded from
//! one (`ControlCommand::Restore`) gets a new id and its own members; what
//! the backup carries replaces its empty namespaces, and the old admin
//! token and scoped tokens keep working. Residency is not carried: the new
//! hosts hold no artifact until one is copied in or uploaded again.
//!
//! The file: an 8-byte magic, the format version (u32 LE), the BLAKE3 of
//! the payload, then the payload (postcard). What it is not: a copy of the
//! Raft log (only the state it leads to), or of artifacts' bytes.

use crate::entries::{ArtifactEntry, AuditRecord, FunctionEntry, TenantEntry};
use crate::tokens::TokenEntry;
use serde::{Deserialize, Serialize};
use spillway_proto::TenantId;
use std::collections::{BTreeMap, VecDeque};

/// The backup file's format in this build.
pub const BACKUP_FORMAT: u32 = 1;
const MAGIC: &[u8; 8] = b"SPWBKUP\0";
const HEADER: usize = MAGIC.len() + 4 + 32;

/// What a restored cluster takes over from the old one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupContents {
    pub admin_token_hash: [u8; 32],
    pub tenants: BTreeMap<TenantId, TenantEntry>,
    pub tokens: BTreeMap<String, TokenEntry>,
    pub artifacts: BTreeMap<(TenantId, String), ArtifactEntry>,
    pub functions: BTreeMap<(TenantId, String), FunctionEntry>,
    pub audit: VecDeque<AuditRecord>,
}

/// A backup: the contents and where in the old cluster's log they stand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backup {
    /// The cluster it was taken from.
    pub cluster_id: String,
    /// The last log entry the state includes: its index and term.
    pub index: u64,
    pub term: u64,
    /// When, and by which host (Unix ms; host id).
    pub taken_unix_ms: u64,
    pub taken_by: u64,
    pub contents: BackupContents,
}

/// Why bytes are not a backup this build reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackupError {
    /// Not a backup file at all (another file given by mistake).
    #[error("not a Spillway backup (it does not start with the backup header)")]
    NotABackup,
    /// Made by a later build: restore it with that build.
    #[error("backup format {found} is newer than this build reads (up to {supported})")]
    Newer { found: u32, supported: u32 },
    /// Cut short or changed since it was written: use another copy.
    #[error("the backup is damaged: {0}")]
    Damaged(String),
}

impl Backup {
    /// A backup read from a stopped host's Raft directory (`DIR/sidecar/raft`):
    /// its snapshot, and the entries after it that its log records as
    /// committed. The way back when quorum is lost and no member can answer
    /// `GET /v1/backup`. (Opening the stores brings them to this build's
    /// format, as the host's next start would.)
    pub async fn read_offline(
        raft_dir: &std::path::Path,
        taken_by: u64,
        now_unix_ms: u64,
    ) -> Result<Backup, crate::ControlError> {
        use openraft::storage::{RaftLogReader as _, RaftLogStorage as _, RaftStateMachine as _};
        let failed = |e: std::io::Error| crate::ControlError::Raft(e.to_string());
        let mut log = crate::LogStore::open(&raft_dir.join("log.redb"))?;
        let mut machine = crate::StateMachine::open(&raft_dir.join("state"))?;
        let committed = log.read_committed().await.map_err(failed)?;
        let (_, applied) = machine.state_at().await;
        if let Some(committed) = committed {
            let from = applied.map_or(0, |(index, _)| index + 1);
            if committed.index >= from {
                let entries = log
                    .try_get_log_entries(from..=committed.index)
                    .await
                    .map_err(failed)?;
                let entries = entries.into_iter().map(|e| Ok((e, None)));
                machine
                    .apply(futures::stream::iter(entries))
                    .await
                    .map_err(failed)?;
            }
        }
        let (state, at) = machine.state_at().await;
        Self::of(&state, at, taken_by, now_unix_ms).ok_or_else(|| {
            crate::ControlError::Raft(format!("{}: no founded cluster in it", raft_dir.display()))
        })
    }

    /// The backup of `state`, whose last entry is `at` (index, term); `None`
    /// before the cluster is founded.
    pub(crate) fn of(
        state: &crate::ControlState,
        at: Option<(u64, u64)>,
        taken_by: u64,
        now_unix_ms: u64,
    ) -> Option<Self> {
        let (contents, (index, term)) = (state.backup_contents()?, at?);
        Some(Backup {
            cluster_id: state.cluster_id().to_owned(),
            index,
            term,
            taken_unix_ms: now_unix_ms,
            taken_by,
            contents,
        })
    }

    /// The backup as a file.
    pub fn encode(&self) -> Vec<u8> {
        let payload = postcard::to_allocvec(self).expect("a backup always encodes");
        let mut out = Vec::with_capacity(HEADER + payload.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&BACKUP_FORMAT.to_le_bytes());
        out.extend_from_slice(blake3::hash(&payload).as_bytes());
        out.extend_from_slice(&payload);
        out
    }

    /// A backup file read back, checked against its header.
    pub fn decode(bytes: &[u8]) -> Result<Self, BackupError> {
        let rest = bytes.strip_prefix(MAGIC).ok_or(BackupError::NotABackup)?;
        if bytes.len() < HEADER {
            return Err(BackupError::Damaged("the header is cut short".into()));
        }
        let version = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes"));
        if version > BACKUP_FORMAT {
            return Err(BackupError::Newer {
                found: version,
                supported: BACKUP_FORMAT,
            });
        }
        let (hash, payload) = rest[4..].split_at(32);
        if blake3::hash(payload).as_bytes() != hash {
            return Err(BackupError::Damaged(
                "its contents do not match its checksum".into(),
            ));
        }
        postcard::from_bytes(payload).map_err(|e| BackupError::Damaged(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup() -> Backup {
        Backup {
            cluster_id: "sw-old".into(),
            index: 42,
            term: 3,
            taken_unix_ms: 1_700_000_000_000,
            taken_by: 2,
            contents: BackupContents {
                admin_token_hash: [7; 32],
                tenants: BTreeMap::new(),
                tokens: BTreeMap::new(),
                artifacts: BTreeMap::new(),
                functions: BTreeMap::new(),
                audit: VecDeque::new(),
            },
        }
    }

    #[test]
    fn a_backup_round_trips() {
        let b = backup();
        assert_eq!(Backup::decode(&b.encode()), Ok(b));
    }

    #[test]
    fn what_is_not_a_readable_backup_says_why() {
        let file = backup().encode();
        let mut flipped = file.clone();
        *flipped.last_mut().unwrap() ^= 1;
        let mut newer = file.clone();
        newer[8..12].copy_from_slice(&(BACKUP_FORMAT + 1).to_le_bytes());
        let cases: [(&[u8], BackupError); 5] = [
            (b"", BackupError::NotABackup),
            (b"SPWSNAP\0not a backup", BackupError::NotABackup),
            (
                &file[..20],
                BackupError::Damaged("the header is cut short".into()),
            ),
            (
                &flipped,
                BackupError::Damaged("its contents do not match its checksum".into()),
            ),
            (
                &newer,
                BackupError::Newer {
                    found: BACKUP_FORMAT + 1,
                    supported: BACKUP_FORMAT,
                },
            ),
        ];
        for (bytes, want) in cases {
            assert_eq!(Backup::decode(bytes), Err(want));
        }
    }
}
