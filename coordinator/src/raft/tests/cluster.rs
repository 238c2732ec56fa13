//! Three replicas in this process over TCP on 127.0.0.1: replication, failover, recovery.

use std::collections::BTreeSet;

use openraft::RaftLogReader;
use openraft::async_runtime::WatchReceiver;
use openraft::storage::RaftLogStorage;
use openraft::vote::RaftLeaderId;

use super::TestCluster;
use super::TestNode;
use crate::raft::LogStore;
use crate::raft::StoreOpenError;
use crate::raft::tests::kv::Kv;

/// Guarantee: a write acknowledged by the leader is applied by every replica, survives the
/// leader's loss, and is still there after the old leader restarts from its directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn raft_cluster_replicates_fails_over_and_recovers() {
    let mut cluster = TestCluster::start(3).await;
    let mut acked: BTreeSet<String> = BTreeSet::new();

    acked.extend(cluster.write("a", 0..2000, 64).await);
    cluster.wait_converged().await;
    let reference = cluster.leader().await.map();
    for node in cluster.running() {
        assert_eq!(node.map(), reference, "node {} diverges", node.id);
    }

    let old = cluster.leader().await;
    let old_id = old.id;
    let old_metrics = old.raft.metrics().borrow_watched().clone();
    let old_committed = old_metrics.local_committed.expect("the leader has committed entries").index;
    let record = cluster.stop(old_id).await;

    let new = cluster.leader().await;
    assert_ne!(new.id, old_id);
    // Enough writes that the new leader snapshots and purges past what the old leader has.
    acked.extend(cluster.write("b", 0..1200, 64).await);

    // What the old leader's directory holds: its vote, its log and its commit point.
    {
        let mut store = LogStore::<Kv>::open(&record.dir, &old_id).unwrap();
        let vote = store.read_vote().await.unwrap().expect("a saved vote");
        assert!(vote.leader_id().term() >= old_metrics.vote.leader_id().term(), "vote went back to {vote}");
        let state = store.get_log_state().await.unwrap();
        assert!(state.last_log_id.map(|id| id.index) >= Some(old_committed), "log entries were lost");
        let committed = store.read_committed().await.unwrap().expect("a saved commit point");
        assert_eq!(committed.index, old_committed, "the saved commit point is not the last one");
    }
    cluster.restart(&record).await;
    let restarted = cluster.node(old_id);
    // Replayed from its own directory up to where it had committed, whoever leads.
    restarted.wait_applied(old_committed, "its own committed entries").await;

    acked.extend(cluster.write("c", 0..300, 64).await);
    cluster.wait_converged().await;
    let reference = cluster.leader().await.map();
    for node in cluster.running() {
        let map = node.map();
        assert_eq!(map, reference, "node {} diverges", node.id);
        let missing: Vec<_> = acked.iter().filter(|key| !map.contains_key(*key)).take(5).collect();
        assert!(missing.is_empty(), "node {} lost acknowledged writes, e.g. {missing:?}", node.id);
    }
    assert_eq!(acked.len(), 3500);
}

/// Leadership moves to the named node over the transfer-leader RPC, and writes go on there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn raft_cluster_transfers_leadership() {
    let cluster = TestCluster::start(3).await;
    cluster.write("a", 0..100, 16).await;
    cluster.wait_converged().await;
    let leader = cluster.leader().await;
    let target = (1..=3).find(|id| *id != leader.id).unwrap();
    leader.raft.trigger().transfer_leader(target).await.unwrap();
    cluster
        .node(target)
        .raft
        .wait(Some(super::DEADLINE))
        .metrics(|m| m.current_leader == Some(target) && m.state == openraft::ServerState::Leader, "target leads")
        .await
        .unwrap();
    cluster.write("b", 0..100, 16).await;
    cluster.wait_converged().await;
    assert!(cluster.running().all(|node| node.map().len() == 200));
}

/// Guarantee: a replica restarted alone, with no peer to learn the commit point from, comes
/// back with every entry it knew to be committed applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn raft_node_restarted_alone_recovers_its_committed_state() {
    let mut cluster = TestCluster::start(3).await;
    let acked = cluster.write("k", 0..300, 32).await;
    cluster.wait_converged().await;

    let leader_id = cluster.leader().await.id;
    let follower_id = (1..=3).find(|id| *id != leader_id).unwrap();
    let follower = cluster.node(follower_id);
    let last = cluster.node(leader_id).raft.metrics().borrow_watched().last_log_index.unwrap();
    // The follower learns the commit point from the leader's next AppendEntries or heartbeat.
    follower
        .raft
        .wait(Some(super::DEADLINE))
        .committed_index_at_least(Some(last), "the follower learns the commit point")
        .await
        .unwrap();
    let before = follower.map();

    let mut records = Vec::new();
    for id in 1..=3 {
        records.push(cluster.stop(id).await);
    }
    let record = records.iter().find(|r| r.id == follower_id).unwrap();
    let alone = TestNode::restart(record.id, &record.dir, &record.addr).await;
    alone.wait_applied(last, "its committed entries, alone").await;
    assert_eq!(alone.map(), before);
    assert!(acked.iter().all(|key| before.contains_key(key)));
    alone.stop().await;
}

/// A data directory initialized by one node is refused to another, with a message that names the
/// directory and both ids, and is left as it was.
#[tokio::test]
async fn raft_store_of_another_node_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(LogStore::<Kv>::open(dir.path(), &1).unwrap());
    let err = LogStore::<Kv>::open(dir.path(), &2).unwrap_err();
    assert!(matches!(err, StoreOpenError::WrongNode { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains(&dir.path().display().to_string()) && msg.contains("belongs to node 1, not to node 2"),
        "{msg}"
    );
    LogStore::<Kv>::open(dir.path(), &1).expect("the owner still opens it");
}

/// A damaged identity file or a damaged log is refused with a message naming what is wrong.
#[tokio::test]
async fn raft_store_corrupt_identity_or_log_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(LogStore::<Kv>::open(dir.path(), &1).unwrap());
    let meta = dir.path().join("meta.json");
    let good = std::fs::read(&meta).unwrap();
    std::fs::write(&meta, &good[..good.len() / 2]).unwrap();
    let err = LogStore::<Kv>::open(dir.path(), &1).unwrap_err();
    assert!(matches!(err, StoreOpenError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("meta.json is not a valid identity file"), "{err}");
    assert_eq!(std::fs::read(&meta).unwrap(), &good[..good.len() / 2], "the refused directory was changed");

    // A damaged record in the middle of the log (not a torn tail) is refused by raft-log.
    std::fs::write(&meta, &good).unwrap();
    let chunk = std::fs::read_dir(dir.path().join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap() != "LOCK")
        .expect("a chunk file");
    // Two copies of the chunk's (only) record, the second with a bad checksum.
    let mut bytes = std::fs::read(&chunk).unwrap();
    bytes.extend_from_slice(&bytes.clone());
    *bytes.last_mut().unwrap() ^= 0xff;
    std::fs::write(&chunk, &bytes).unwrap();
    let err = LogStore::<Kv>::open(dir.path(), &1).unwrap_err();
    assert!(matches!(err, StoreOpenError::Log { .. }), "{err}");
    assert!(err.to_string().contains("cannot open the Raft log in"), "{err}");
    assert_eq!(std::fs::read(&chunk).unwrap(), bytes, "the refused log was changed");
}

/// `close` returns once the last handle is gone, and the directory can be opened again then.
#[tokio::test]
async fn raft_store_close_waits_for_every_handle() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::<Kv>::open(dir.path(), &1).unwrap();
    let held_by_raft = store.clone();
    let mut closing = tokio::spawn(store.close());
    assert!(tokio::time::timeout(std::time::Duration::from_millis(50), &mut closing).await.is_err());
    assert!(LogStore::<Kv>::open(dir.path(), &1).is_err(), "the directory is still locked");
    drop(held_by_raft);
    closing.await.unwrap();
    LogStore::<Kv>::open(dir.path(), &1).expect("the directory is free once closed");
}
