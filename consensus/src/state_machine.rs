//! The replicated state machine: applies committed commands to a
//! [`ControlState`], builds snapshots of it, and installs snapshots sent by
//! the leader.
//!
//! The state lives in memory; the latest snapshot lives on disk
//! (`dir/snapshot.bin`, written to a temporary file, synced and renamed), so
//! a restarted host loads the snapshot and openraft replays the committed log
//! after it.

use crate::OpenError;
use crate::command::ControlResponse;
use crate::format::{self, Migration, SNAPSHOT_FORMAT};
use crate::state::ControlState;
use crate::types::TypeConfig;
use futures::{Stream, TryStreamExt};
use openraft::EntryPayload;
use openraft::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use serde::{Deserialize, Serialize};
use std::io::{self, Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::Mutex;

type C = TypeConfig;

const SNAPSHOT_FILE: &str = "snapshot.bin";

/// A snapshot as it is stored: its metadata and the serialized state.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMetaOf<C>,
    data: Vec<u8>,
}

#[derive(Debug, Default)]
struct Inner {
    last_applied: Option<LogIdOf<C>>,
    membership: StoredMembershipOf<C>,
    state: ControlState,
    snapshot: Option<StoredSnapshot>,
}

/// The control state machine of one host. Cheap to clone.
#[derive(Debug, Clone)]
pub struct StateMachine {
    inner: Arc<Mutex<Inner>>,
    dir: PathBuf,
    migration: Option<Migration>,
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

impl StateMachine {
    /// Opens the state machine whose snapshots live in `dir`, restoring the
    /// latest snapshot if there is one.
    pub fn open(dir: &Path) -> Result<Self, OpenError> {
        let path = dir.join(SNAPSHOT_FILE);
        let err = |reason: String| OpenError::Snapshot {
            path: path.clone(),
            reason,
        };
        crate::log_store::owner_only_dir(dir).map_err(|e| err(e.to_string()))?;
        let mut inner = Inner::default();
        let mut migration = None;
        match std::fs::read(&path) {
            Ok(bytes) => {
                let (version, payload) = format::read_snapshot(&bytes)
                    .map_err(|e| OpenError::from_format(&path, e, err))?;
                let stored: StoredSnapshot =
                    postcard::from_bytes(payload).map_err(|e| err(e.to_string()))?;
                let mut stored = stored;
                inner.state = ControlState::decode_format(&stored.data, version)
                    .map_err(|e| err(e.to_string()))?;
                inner.last_applied = stored.meta.last_log_id;
                inner.membership = stored.meta.last_membership.clone();
                if version < SNAPSHOT_FORMAT {
                    // 0 to 1: the same payload, with a header and checksum;
                    // 1 to 2: the state gains `gpu_isolation` (empty).
                    stored.data =
                        postcard::to_allocvec(&inner.state).map_err(|e| err(e.to_string()))?;
                    persist(dir, &stored).map_err(|e| err(e.to_string()))?;
                    migration = Some(Migration {
                        store: path.clone(),
                        from: version,
                        to: SNAPSHOT_FORMAT,
                    });
                }
                inner.snapshot = Some(stored);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(e.to_string())),
        }
        Ok(Self {
            inner: Arc::new(Mutex::new(inner)),
            dir: dir.to_owned(),
            migration,
        })
    }

    /// The migration opening this state machine made, if its snapshot was
    /// of an earlier format.
    pub fn migration(&self) -> Option<&Migration> {
        self.migration.as_ref()
    }

    /// A copy of the current control state.
    pub async fn state(&self) -> ControlState {
        self.inner.lock().await.state.clone()
    }

    /// The control state and the last entry it includes (its index and
    /// term), read together.
    pub async fn state_at(&self) -> (ControlState, Option<(u64, u64)>) {
        let inner = self.inner.lock().await;
        let at = inner.last_applied.map(|id| (id.index, id.leader_id.term));
        (inner.state.clone(), at)
    }

    fn persist(&self, snapshot: &StoredSnapshot) -> io::Result<()> {
        persist(&self.dir, snapshot)
    }
}

/// Writes `snapshot` to `dir`'s snapshot file in this build's format: to a
/// temporary file, synced, then renamed over the old one.
fn persist(dir: &Path, snapshot: &StoredSnapshot) -> io::Result<()> {
    let path = dir.join(SNAPSHOT_FILE);
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    let payload = postcard::to_allocvec(snapshot).map_err(invalid)?;
    file.write_all(&format::write_snapshot(&payload))?;
    file.sync_all()?;
    std::fs::rename(&tmp, &path)
}

impl RaftSnapshotBuilder<C> for StateMachine {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<C, Self::SnapshotData>, io::Error> {
        let mut inner = self.inner.lock().await;
        let data = postcard::to_allocvec(&inner.state).map_err(invalid)?;
        let meta = SnapshotMetaOf::<C> {
            last_log_id: inner.last_applied,
            last_membership: inner.membership.clone(),
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        };
        self.persist(&stored)?;
        inner.snapshot = Some(stored);
        Ok(SnapshotOf::<C, Self::SnapshotData> {
            meta,
            snapshot: Cursor::new(data),
        })
    }
}

impl RaftStateMachine<C> for StateMachine {
    type SnapshotData = Cursor<Vec<u8>>;
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdOf<C>>, StoredMembershipOf<C>), io::Error> {
        let inner = self.inner.lock().await;
        Ok((inner.last_applied, inner.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<C>, io::Error>> + Unpin + Send,
    {
        let mut inner = self.inner.lock().await;
        while let Some((entry, responder)) = entries.try_next().await? {
            inner.last_applied = Some(entry.log_id);
            let response = match &entry.payload {
                EntryPayload::Blank => ControlResponse::Done,
                EntryPayload::Normal(command) => inner.state.apply(command),
                EntryPayload::Membership(m) => {
                    inner.membership = StoredMembershipOf::<C>::new(Some(entry.log_id), m.clone());
                    ControlResponse::Done
                }
            };
            if let Some(responder) = responder {
                responder.send(response);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<C>,
        snapshot: Self::SnapshotData,
    ) -> Result<(), io::Error> {
        // A host of the earlier build (a rolling upgrade) sends its format:
        // read it forward and keep it in this build's.
        let state = ControlState::decode_sent(&snapshot.into_inner()).map_err(invalid)?;
        let data = postcard::to_allocvec(&state).map_err(invalid)?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        self.persist(&stored)?;
        let mut inner = self.inner.lock().await;
        inner.state = state;
        inner.last_applied = meta.last_log_id;
        inner.membership = meta.last_membership.clone();
        inner.snapshot = Some(stored);
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<C, Self::SnapshotData>>, io::Error> {
        let inner = self.inner.lock().await;
        Ok(inner
            .snapshot
            .as_ref()
            .map(|s| SnapshotOf::<C, Self::SnapshotData> {
                meta: s.meta.clone(),
                snapshot: Cursor::new(s.data.clone()),
            }))
    }
}
