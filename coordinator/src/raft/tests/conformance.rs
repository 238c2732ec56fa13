//! openraft's storage conformance suite against [`LogStore`] (with the test state machine).

use std::io;

use openraft::ErrorSubject;
use openraft::ErrorVerb;
use openraft::StorageError;
use openraft::testing::log::StoreBuilder;
use openraft::testing::log::Suite;

use super::kv::Kv;
use super::kv::KvStateMachine;
use crate::raft::LogStore;

/// Builds each store of the suite in a fresh temp dir, which the guard removes afterwards.
struct TempStores;

impl StoreBuilder<Kv, LogStore<Kv>, KvStateMachine, tempfile::TempDir> for TempStores {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore<Kv>, KvStateMachine), StorageError<Kv>> {
        let failed = |e: io::Error| StorageError::from_io_error(ErrorSubject::Store, ErrorVerb::Write, e);
        let dir = tempfile::tempdir().map_err(failed)?;
        let store = LogStore::open(dir.path(), &0).map_err(|e| failed(io::Error::other(e)))?;
        let sm = KvStateMachine::open(dir.path()).map_err(failed)?;
        Ok((dir, store, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_log_store_passes_openraft_storage_suite() {
    Suite::test_all(TempStores).await.unwrap();
}
