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

/// The entries served from the store's recent entries are the entries on disk: after appends,
/// an overwrite of the tail (truncate and append in a new term), a purge, and enough appends to
/// evict, each range read equals the same range read by a reopened store, which has none kept
/// in memory and decodes everything from disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_from_recent_entries_match_the_log_on_disk() {
    use openraft::RaftLogReader;
    use openraft::entry::RaftEntry;
    use openraft::storage::IOFlushed;
    use openraft::storage::RaftLogStorage;
    use openraft::vote::RaftLeaderId;

    use super::kv::KvRequest;

    type Entry = <Kv as openraft::RaftTypeConfig>::Entry;
    let leader = |term: u64| <Kv as openraft::RaftTypeConfig>::LeaderId::new(term, 1).to_committed();
    let entry = |term: u64, index: u64| {
        let request = KvRequest { key: format!("k{index}"), value: format!("t{term}") };
        Entry::new_normal(openraft::LogId::new(leader(term), index), request)
    };
    let shown = |entries: Vec<Entry>| entries.iter().map(|e| format!("{e}")).collect::<Vec<_>>();

    let dir = tempfile::tempdir().unwrap();
    let mut store = LogStore::<Kv>::open(dir.path(), &0).unwrap();
    store.append((0..100).map(|i| entry(1, i)), IOFlushed::noop()).await.unwrap();
    store.truncate_after(Some(openraft::LogId::new(leader(1), 59))).await.unwrap();
    store.append((60..120).map(|i| entry(2, i)), IOFlushed::noop()).await.unwrap();
    store.purge(openraft::LogId::new(leader(1), 9)).await.unwrap();
    // More than are kept in memory: the oldest of these are read from disk.
    store.append((120..9000).map(|i| entry(2, i)), IOFlushed::noop()).await.unwrap();
    let ranges = [(0, 20), (10, 70), (55, 65), (100, 130), (700, 900), (8990, 9010), (9000, 9001)];
    let mut from_memory = Vec::new();
    for (start, end) in ranges {
        from_memory.push(shown(store.try_get_log_entries(start..end).await.unwrap()));
    }
    let first = store.try_get_log_entries(10..11).await.unwrap();
    assert_eq!(first[0].index(), 10, "the purge kept index 10");
    store.close().await;

    let mut reopened = LogStore::<Kv>::open(dir.path(), &0).unwrap();
    for ((start, end), expected) in ranges.into_iter().zip(from_memory) {
        let on_disk = shown(reopened.try_get_log_entries(start..end).await.unwrap());
        assert_eq!(on_disk, expected, "range {start}..{end}");
    }
    let overwritten = reopened.try_get_log_entries(60..61).await.unwrap();
    assert!(format!("{}", overwritten[0]).contains("t2"), "{}", overwritten[0]);
}
