//! Master election and fencing against a real coordinator (a one-replica Squall store on
//! loopback) through a real ZooKeeper client.

use std::time::Duration;

use squall_coordinator::replica::{Replica, ReplicaConfig};
use squall_runtime::cluster::{Candidate, Fence, paths};
use zookeeper_client as zk;

const DEADLINE: Duration = Duration::from_secs(10);

async fn store(dir: &std::path::Path) -> Replica {
    let replica = Replica::start(ReplicaConfig::standalone(dir, "127.0.0.1:0".parse().unwrap())).await.unwrap();
    assert!(replica.wait_ready(DEADLINE).await);
    replica
}

async fn client(replica: &Replica) -> zk::Client {
    zk::Client::connector()
        .with_session_timeout(Duration::from_secs(2))
        .connect(&replica.client_addr().to_string())
        .await
        .unwrap()
}

/// A fenced write: the epoch check, then a setData of `/squall/topologies` to `data`.
async fn fenced_write(client: &zk::Client, fence: Fence, data: &[u8]) -> Result<(), zk::MultiWriteError> {
    let mut writer = fence.writer(client);
    writer.add_set_data(paths::TOPOLOGIES, data, None).unwrap();
    writer.commit().await.map(|_| ())
}

/// Guarantee: one candidate leads at a time; when it goes, the next one leads with a newer
/// epoch, and the writes of the deposed master — fenced by its old epoch — are refused while
/// the new master's go through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_candidate_leads_with_a_newer_epoch_and_the_old_master_is_fenced_out() {
    let dir = tempfile::tempdir().unwrap();
    let replica = store(dir.path()).await;
    let (first_client, second_client, observer) =
        (client(&replica).await, client(&replica).await, client(&replica).await);

    let first = Candidate::join(&first_client, "node-a").await.unwrap();
    let second = Candidate::join(&second_client, "node-b").await.unwrap();
    let first_epoch = tokio::time::timeout(DEADLINE, first.lead()).await.unwrap().unwrap().epoch;
    let mut waiting = tokio::spawn(async move { second.lead().await });
    // The second candidate waits while the first is alive.
    assert!(tokio::time::timeout(Duration::from_millis(300), &mut waiting).await.is_err());
    fenced_write(&first_client, Fence { epoch: first_epoch }, b"from a").await.unwrap();

    // The first master's session ends (its client is dropped, or it would expire); its
    // candidate znode goes with it.
    drop(first);
    drop(first_client);
    let second_epoch = tokio::time::timeout(DEADLINE, waiting).await.unwrap().unwrap().unwrap().epoch;
    assert!(second_epoch > first_epoch, "{second_epoch} after {first_epoch}");
    assert_eq!(observer.get_data(paths::EPOCH).await.unwrap().0, b"node-b");

    // A master that still believes in the old epoch (paused, say) is refused, untouched.
    let error = fenced_write(&observer, Fence { epoch: first_epoch }, b"stale").await.unwrap_err();
    assert!(Fence::is_fenced_out(&error), "{error}");
    assert_eq!(observer.get_data(paths::TOPOLOGIES).await.unwrap().0, b"from a");
    fenced_write(&second_client, Fence { epoch: second_epoch }, b"from b").await.unwrap();
    assert_eq!(observer.get_data(paths::TOPOLOGIES).await.unwrap().0, b"from b");
    replica.shutdown().await;
}
