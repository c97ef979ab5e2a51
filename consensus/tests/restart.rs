//! What survives a restart: log entries, the vote and the committed id (the
//! log store), and the latest snapshot with the control state in it (the
//! state machine).

use openraft::Vote;
use openraft::entry::RaftEntry;
use openraft::storage::{
    IOFlushed, RaftLogReader, RaftLogStorage, RaftSnapshotBuilder, RaftStateMachine,
};
use openraft::testing::log_id;
use spillway_consensus::{ControlCommand, LogStore, StateMachine, TypeConfig};
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
