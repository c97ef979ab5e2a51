//! The log store and state machine against openraft's own storage
//! conformance suite, on real files in a temporary directory.

use openraft::StorageError;
use openraft::testing::log::{StoreBuilder, Suite};
use spillway_consensus::{LogStore, StateMachine, TypeConfig};

struct OnDisk;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for OnDisk {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = LogStore::open(&dir.path().join("log.redb")).expect("open the log");
        let sm = StateMachine::open(&dir.path().join("state")).expect("open the state machine");
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_openraft_storage_suite() {
    Suite::test_all(OnDisk).await.expect("storage suite");
}
