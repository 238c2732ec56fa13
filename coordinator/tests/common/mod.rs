//! Replicas in one process, over TCP on 127.0.0.1 — one alone, or an ensemble of three — and
//! the `zookeeper-client` connections and waits the tests drive them with.

// Each test crate that includes this module uses a different part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use squall_coordinator::replica::{Replica, ReplicaConfig};
use zookeeper_client as zk;

/// A loopback address with a port that was free a moment ago.
pub fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// Three replicas, ids 1 to 3, each with its own data directory; a stopped one is removed.
pub struct Ensemble {
    _dirs: Vec<tempfile::TempDir>,
    configs: BTreeMap<u64, ReplicaConfig>,
    pub replicas: BTreeMap<u64, Replica>,
}

impl Ensemble {
    /// Starts three replicas and waits until each knows the leader.
    pub async fn start() -> Ensemble {
        Ensemble::start_with_tick(Duration::from_millis(100)).await
    }

    /// [`Ensemble::start`] with session timeouts clamped to [2, 20] × `tick`.
    pub async fn start_with_tick(tick: Duration) -> Ensemble {
        let raft: BTreeMap<u64, SocketAddr> = (1..=3).map(|id| (id, free_port())).collect();
        let peers: BTreeMap<u64, String> = raft.iter().map(|(id, a)| (*id, a.to_string())).collect();
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let mut starts = Vec::new();
        let mut configs = BTreeMap::new();
        for id in 1..=3u64 {
            let config = ReplicaConfig {
                id,
                data_dir: dirs[id as usize - 1].path().to_path_buf(),
                client_addr: "127.0.0.1:0".parse().unwrap(),
                raft_addr: Some(raft[&id]),
                peers: peers.clone(),
                tick,
                super_user: None,
                // Small, so that tests see snapshots and purges after a few thousand writes.
                snapshot_every: SNAPSHOT_EVERY,
            };
            configs.insert(id, config.clone());
            starts.push(tokio::spawn(Replica::start(config)));
        }
        let mut replicas = BTreeMap::new();
        for (i, start) in starts.into_iter().enumerate() {
            replicas.insert(i as u64 + 1, start.await.unwrap().expect("replica starts"));
        }
        for replica in replicas.values() {
            assert!(replica.wait_ready(Duration::from_secs(20)).await, "no leader elected");
        }
        Ensemble { _dirs: dirs, configs, replicas }
    }

    /// The id of the replica that leads now.
    pub fn leader(&self) -> u64 {
        *self.replicas.iter().find(|(_, r)| r.is_leader()).expect("a leader").0
    }

    /// The client address of replica `id`.
    pub fn addr(&self, id: u64) -> SocketAddr {
        self.replicas[&id].client_addr()
    }

    /// The client addresses of every running replica, as a connect string.
    pub fn all_addrs(&self) -> String {
        self.replicas.values().map(|r| r.client_addr().to_string()).collect::<Vec<_>>().join(",")
    }

    /// Shuts replica `id` down for good: its clients lose their connections, its peers lose it.
    pub async fn stop(&mut self, id: u64) {
        let replica = self.replicas.remove(&id).expect("a running replica");
        replica.shutdown().await;
    }

    /// Starts stopped replica `id` again from its data directory (on a new client port).
    pub async fn restart(&mut self, id: u64) {
        let replica = Replica::start(self.configs[&id].clone()).await.expect("replica restarts");
        self.replicas.insert(id, replica);
    }

    /// [`Ensemble::restart`], then waits until the replica follows a leader and serves.
    pub async fn restart_serving(&mut self, id: u64) {
        self.restart(id).await;
        assert!(self.replicas[&id].wait_ready(Duration::from_secs(20)).await, "replica {id} does not serve again");
    }

    /// Shuts every running replica down.
    pub async fn shutdown(self) {
        for replica in self.replicas.into_values() {
            replica.shutdown().await;
        }
    }
}

/// A client of `addrs` (a connect string) with a 2 s session timeout.
pub async fn client(addrs: &str) -> zk::Client {
    client_with_timeout(addrs, Duration::from_secs(2)).await
}

/// A client of `addrs` (a connect string) asking for `session_timeout`; the replicas clamp it
/// to [2, 20] ticks.
pub async fn client_with_timeout(addrs: &str, session_timeout: Duration) -> zk::Client {
    zk::Client::connector().with_session_timeout(session_timeout).connect(addrs).await.expect("client connects")
}

/// Create options for a persistent znode anyone may change.
pub fn persistent() -> zk::CreateOptions<'static> {
    zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all())
}

/// Entries between snapshots in the test ensembles (a node's default is 100,000).
pub const SNAPSHOT_EVERY: u64 = 5000;

/// How long any single wait may take before a test fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// A one-replica store with its data in `dir`, serving clients on a free loopback port, once it
/// has elected itself.
pub async fn start_standalone(dir: &Path) -> Replica {
    let config = ReplicaConfig::standalone(dir, "127.0.0.1:0".parse().unwrap());
    let replica = Replica::start(config).await.expect("replica starts");
    assert!(replica.wait_ready(DEADLINE).await, "the replica elects itself");
    replica
}

/// Polls `condition` until it holds, failing the test after [`DEADLINE`].
pub async fn eventually<F: Future<Output = bool>>(what: &str, mut condition: impl FnMut() -> F) {
    let deadline = Instant::now() + DEADLINE;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The answer of the server at `addr` to a four-letter word.
pub async fn four_letter(addr: SocketAddr, word: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(word.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(DEADLINE, stream.read_to_string(&mut answer))
        .await
        .expect("timed out waiting for a four-letter answer")
        .unwrap();
    answer
}
