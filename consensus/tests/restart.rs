//! What survives a restart: log entries, the vote and the committed id (the
//! log store), and the latest snapshot with the control state in it (the
//! state machine).

use openraft::Vote;
use openraft::entry::RaftEntry;
use openraft::storage::{
    IOFlushed, RaftLogReader, RaftLogStorage, RaftSnapshotBuilder, RaftStateMachine,
};
use openraft::testing::log_id;
use spillway_consensus::{
    ControlCommand, LOG_FORMAT, LogStore, Migration, OpenError, SNAPSHOT_FORMAT, StateMachine,
    TypeConfig,
};
use spillway_proto::Digest;

type Entry = openraft::alias::EntryOf<TypeConfig>;

fn put(name: &str, index: u64) -> Entry {
    let command = ControlCommand::PutArtifact {
        name: name.into(),
        digest: Digest::of(name.as_bytes()),
        size: index,
        tenant: spillway_proto::TenantId::admin(),
        signature: None,
        kind: spillway_proto::ArtifactKind::Component,
    };
    Entry::new_normal(log_id::<TypeConfig>(1, 1, index), command)
}

#[tokio::test]
async fn the_log_vote_and_commit_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.redb");
    {
        let mut log = LogStore::open(&path).unwrap();
        log.append([put("a", 1), put("b", 2), put("c", 3)], IOFlushed::noop())
            .await
            .unwrap();
        log.save_vote(&Vote::new(1, 1)).await.unwrap();
        log.save_committed(Some(log_id::<TypeConfig>(1, 1, 2)))
            .await
            .unwrap();
        log.purge(log_id::<TypeConfig>(1, 1, 1)).await.unwrap();
    }
    let mut log = LogStore::open(&path).unwrap();
    let state = log.get_log_state().await.unwrap();
    assert_eq!(
        state.last_purged_log_id,
        Some(log_id::<TypeConfig>(1, 1, 1))
    );
    assert_eq!(state.last_log_id, Some(log_id::<TypeConfig>(1, 1, 3)));
    assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(1, 1)));
    assert_eq!(
        log.read_committed().await.unwrap(),
        Some(log_id::<TypeConfig>(1, 1, 2))
    );
    let entries = log.try_get_log_entries(0..10).await.unwrap();
    assert_eq!(
        entries.iter().map(|e| e.index()).collect::<Vec<_>>(),
        [2, 3]
    );
    assert_eq!(entries[0], put("b", 2));
}

#[tokio::test]
async fn a_snapshot_restores_the_control_state_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let sm_dir = dir.path().join("state");
    {
        let mut sm = StateMachine::open(&sm_dir).unwrap();
        let entries = [put("echo", 1), put("gemm", 2)].map(|e| Ok((e, None)));
        sm.apply(futures::stream::iter(entries)).await.unwrap();
        sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        // Applied after the snapshot: replayed from the log after a restart,
        // not part of the snapshot.
        sm.apply(futures::stream::iter([Ok((put("late", 3), None))]))
            .await
            .unwrap();
        assert!(
            sm.state()
                .await
                .artifact(&spillway_proto::TenantId::admin(), "late")
                .is_some()
        );
    }
    let mut sm = StateMachine::open(&sm_dir).unwrap();
    let state = sm.state().await;
    assert_eq!(
        state
            .artifact(&spillway_proto::TenantId::admin(), "echo")
            .unwrap()
            .digest,
        Digest::of(b"echo")
    );
    assert!(
        state
            .artifact(&spillway_proto::TenantId::admin(), "gemm")
            .is_some()
    );
    assert!(
        state
            .artifact(&spillway_proto::TenantId::admin(), "late")
            .is_none()
    );
    let (applied, _) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id::<TypeConfig>(1, 1, 2)));
    assert!(sm.get_current_snapshot().await.unwrap().is_some());
}

/// A log written before formats were versioned (no `format` key) is read
/// and stamped with this build's version, reported as a migration once; a
/// log of a later format is refused, naming both versions.
#[tokio::test]
async fn an_unversioned_log_is_migrated_and_a_newer_one_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.redb");
    let meta: redb::TableDefinition<'_, &str, &[u8]> = redb::TableDefinition::new("meta");
    let set_format = |value: Option<u32>| {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut table = txn.open_table(meta).unwrap();
            match value {
                Some(v) => {
                    table
                        .insert("format", postcard::to_allocvec(&v).unwrap().as_slice())
                        .unwrap();
                }
                None => {
                    table.remove("format").unwrap();
                }
            }
        }
        txn.commit().unwrap();
    };
    {
        let mut log = LogStore::open(&path).unwrap();
        assert_eq!(log.migration(), None, "a new log is this build's already");
        log.append([put("a", 1)], IOFlushed::noop()).await.unwrap();
    }
    set_format(None);
    {
        let mut log = LogStore::open(&path).unwrap();
        assert_eq!(
            log.migration(),
            Some(&Migration {
                store: path.clone(),
                from: 0,
                to: LOG_FORMAT
            })
        );
        assert_eq!(log.try_get_log_entries(0..5).await.unwrap(), [put("a", 1)]);
    }
    assert_eq!(LogStore::open(&path).unwrap().migration(), None);
    set_format(Some(LOG_FORMAT + 1));
    match LogStore::open(&path) {
        Err(OpenError::NewerFormat {
            path: p,
            found,
            supported,
        }) => {
            assert_eq!(
                (p, found, supported),
                (path.clone(), LOG_FORMAT + 1, LOG_FORMAT)
            );
        }
        other => panic!("{other:?}"),
    }
}

/// A snapshot file written before formats were versioned (the bare
/// payload) is read, and rewritten with this build's header; a damaged one
/// is refused rather than half read.
#[tokio::test]
async fn an_unversioned_snapshot_is_migrated_and_a_damaged_one_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sm_dir = dir.path().join("state");
    let file = sm_dir.join("snapshot.bin");
    {
        let mut sm = StateMachine::open(&sm_dir).unwrap();
        sm.apply(futures::stream::iter([Ok((put("echo", 1), None))]))
            .await
            .unwrap();
        sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
    }
    let versioned = std::fs::read(&file).unwrap();
    assert!(versioned.starts_with(b"SPWSNAP\0"));
    // Format 0: the payload alone (magic 8, version 4, BLAKE3 32).
    std::fs::write(&file, &versioned[44..]).unwrap();
    let sm = StateMachine::open(&sm_dir).unwrap();
    assert_eq!(
        sm.migration(),
        Some(&Migration {
            store: file.clone(),
            from: 0,
            to: SNAPSHOT_FORMAT
        })
    );
    assert!(
        sm.state()
            .await
            .artifact(&spillway_proto::TenantId::admin(), "echo")
            .is_some()
    );
    assert_eq!(
        std::fs::read(&file).unwrap(),
        versioned,
        "rewritten with its header"
    );
    assert_eq!(StateMachine::open(&sm_dir).unwrap().migration(), None);

    let mut damaged = versioned.clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 0xff;
    std::fs::write(&file, &damaged).unwrap();
    let err = StateMachine::open(&sm_dir).unwrap_err();
    assert!(
        matches!(err, OpenError::Snapshot { .. }) && err.to_string().contains("checksum"),
        "{err}"
    );
}
