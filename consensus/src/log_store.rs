//! The durable Raft log: entries, vote, committed and purged ids in one redb
//! database. Every write transaction commits with redb's immediate
//! durability (fsync), so an acknowledged append or vote survives a crash.

use crate::OpenError;
use crate::format::{self, LOG_FORMAT, LogStep, Migration};
use crate::types::TypeConfig;
use openraft::alias::{EntryOf, LogIdOf, VoteOf};
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::Arc;

type C = TypeConfig;

const LOG: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("meta");
const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const LAST_PURGED: &str = "last_purged";
/// The log's format version (`format`); absent before versioning.
const FORMAT: &str = "format";

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

fn encode<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    postcard::to_allocvec(value).map_err(io_err)
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> io::Result<T> {
    postcard::from_bytes(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// The Raft log of one host. Cheap to clone (one shared database).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    migration: Option<Migration>,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore").finish_non_exhaustive()
    }
}

impl LogStore {
    /// Opens (or creates) the log at `path`.
    pub fn open(path: &Path) -> Result<Self, OpenError> {
        let err = |reason: String| OpenError::Log {
            path: path.to_owned(),
            reason,
        };
        if let Some(parent) = path.parent() {
            owner_only_dir(parent).map_err(|e| err(e.to_string()))?;
        }
        let existed = path.exists();
        let db = Database::create(path).map_err(|e| err(e.to_string()))?;
        let txn = db.begin_write().map_err(|e| err(e.to_string()))?;
        txn.open_table(LOG).map_err(|e| err(e.to_string()))?;
        txn.open_table(META).map_err(|e| err(e.to_string()))?;
        txn.commit().map_err(|e| err(e.to_string()))?;
        let mut store = Self {
            db: Arc::new(db),
            migration: None,
        };
        let found: Option<u32> = store.meta(FORMAT).map_err(|e| err(e.to_string()))?;
        match format::log_step(found).map_err(|e| OpenError::from_format(path, e, err))? {
            LogStep::Current => {}
            LogStep::Migrate { from } => {
                // 0 to 1: the entries are unchanged; the version is written.
                store
                    .set_meta(FORMAT, &LOG_FORMAT)
                    .map_err(|e| err(e.to_string()))?;
                store.migration = existed.then(|| Migration {
                    store: path.to_owned(),
                    from,
                    to: LOG_FORMAT,
                });
            }
        }
        Ok(store)
    }

    /// The migration opening this log made, if it was of an earlier format.
    pub fn migration(&self) -> Option<&Migration> {
        self.migration.as_ref()
    }

    fn meta<T: DeserializeOwned>(&self, key: &str) -> io::Result<Option<T>> {
        let txn = self.db.begin_read().map_err(io_err)?;
        let table = txn.open_table(META).map_err(io_err)?;
        match table.get(key).map_err(io_err)? {
            Some(v) => Ok(Some(decode(v.value())?)),
            None => Ok(None),
        }
    }

    fn set_meta<T: Serialize>(&self, key: &str, value: &T) -> io::Result<()> {
        let bytes = encode(value)?;
        let txn = self.db.begin_write().map_err(io_err)?;
        txn.open_table(META)
            .map_err(io_err)?
            .insert(key, bytes.as_slice())
            .map_err(io_err)?;
        txn.commit().map_err(io_err)
    }

    /// Removes the entries with index in `range`, and records `purged` if
    /// given, in one transaction.
    fn remove(&self, range: impl RangeBounds<u64>, purged: Option<&LogIdOf<C>>) -> io::Result<()> {
        let txn = self.db.begin_write().map_err(io_err)?;
        {
            let mut log = txn.open_table(LOG).map_err(io_err)?;
            log.retain_in(range, |_, _| false).map_err(io_err)?;
            if let Some(id) = purged {
                let bytes = encode(id)?;
                txn.open_table(META)
                    .map_err(io_err)?
                    .insert(LAST_PURGED, bytes.as_slice())
                    .map_err(io_err)?;
            }
        }
        txn.commit().map_err(io_err)
    }
}

impl RaftLogReader<C> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<EntryOf<C>>, io::Error> {
        let txn = self.db.begin_read().map_err(io_err)?;
        let table = txn.open_table(LOG).map_err(io_err)?;
        let mut entries = Vec::new();
        for item in table.range::<u64>(range).map_err(io_err)? {
            let (_, v) = item.map_err(io_err)?;
            entries.push(decode(v.value())?);
        }
        Ok(entries)
    }

    async fn read_vote(&mut self) -> Result<Option<VoteOf<C>>, io::Error> {
        self.meta(VOTE)
    }
}

impl RaftLogStorage<C> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<C>, io::Error> {
        let last_purged: Option<LogIdOf<C>> = self.meta(LAST_PURGED)?;
        let txn = self.db.begin_read().map_err(io_err)?;
        let table = txn.open_table(LOG).map_err(io_err)?;
        let last = match table.last().map_err(io_err)? {
            Some((_, v)) => Some(decode::<EntryOf<C>>(v.value())?.log_id()),
            None => last_purged,
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &VoteOf<C>) -> Result<(), io::Error> {
        self.set_meta(VOTE, vote)
    }

    async fn save_committed(&mut self, committed: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        self.set_meta(COMMITTED, &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogIdOf<C>>, io::Error> {
        Ok(self.meta::<Option<LogIdOf<C>>>(COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<C>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = EntryOf<C>> + Send,
        I::IntoIter: Send,
    {
        let result = (|| {
            let txn = self.db.begin_write().map_err(io_err)?;
            {
                let mut log = txn.open_table(LOG).map_err(io_err)?;
                for entry in entries {
                    let bytes = encode(&entry)?;
                    log.insert(entry.index(), bytes.as_slice())
                        .map_err(io_err)?;
                }
            }
            txn.commit().map_err(io_err)
        })();
        match result {
            Ok(()) => {
                callback.io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.io_completed(Err(io::Error::new(e.kind(), e.to_string())));
                Err(e)
            }
        }
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        let from = last_log_id.map_or(0, |id| id.index() + 1);
        self.remove(from.., None)
    }

    async fn purge(&mut self, log_id: LogIdOf<C>) -> Result<(), io::Error> {
        self.remove(..=log_id.index(), Some(&log_id))
    }
}

/// Creates `dir` and its missing parents readable by their owner only
/// (0700): state never opens to other users.
pub(crate) fn owner_only_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}
