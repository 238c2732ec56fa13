//! Tests of the Raft plumbing with a stand-in state machine: an in-memory key-value map whose
//! snapshots are files in the node's data directory. Clusters run in this process over real TCP
//! on 127.0.0.1 with real raft-log directories.

mod cluster;
mod conformance;
mod kv;
mod network;
mod throughput;

use std::collections::BTreeMap;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::BasicNode;
use openraft::Raft;
use openraft::ServerState;
use openraft::SnapshotPolicy;
use openraft::async_runtime::WatchReceiver;
use tokio::net::TcpListener;
use tokio::time::Instant;

use self::kv::Kv;
use self::kv::KvRequest;
use self::kv::KvState;
use self::kv::KvStateMachine;
use super::LogStore;
use super::NetworkConfig;
use super::RaftRpcServer;
use super::TcpNetwork;

/// How long any wait in these tests may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(20);

fn raft_config() -> Arc<openraft::Config> {
    let config = openraft::Config {
        cluster_name: "squall-test".to_string(),
        heartbeat_interval: 50,
        election_timeout_min: 150,
        election_timeout_max: 300,
        // Snapshots and purges happen during the tests, so both paths are exercised.
        snapshot_policy: SnapshotPolicy::LogsSinceLast(500),
        max_in_snapshot_log_to_keep: 100,
        // Small enough that a snapshot crosses the network in several chunks.
        snapshot_max_chunk_size: 16 << 10,
        ..Default::default()
    };
    Arc::new(config.validate().expect("a valid test config"))
}

/// One replica: its Raft, its RPC server and a view of its state machine.
struct TestNode {
    id: u64,
    addr: String,
    dir: PathBuf,
    raft: Raft<Kv, KvStateMachine>,
    server: Option<RaftRpcServer>,
    state: Arc<std::sync::Mutex<KvState>>,
    store: LogStore<Kv>,
}

impl TestNode {
    /// Starts node `id` on `listener` with its data in `dir` (new or from an earlier run).
    async fn start(id: u64, dir: &Path, listener: TcpListener) -> Self {
        Self::start_with(id, dir, listener, raft_config()).await
    }

    /// [`TestNode::start`] with its own Raft config.
    async fn start_with(id: u64, dir: &Path, listener: TcpListener, config: Arc<openraft::Config>) -> Self {
        let addr = listener.local_addr().unwrap().to_string();
        let store = LogStore::<Kv>::open(dir, &id).unwrap();
        let store_view = store.clone();
        let sm = KvStateMachine::open(dir).unwrap();
        let state = sm.state();
        let network = TcpNetwork::<Kv>::new(id, NetworkConfig::default());
        let raft = Raft::new(id, config, network, store, sm).await.unwrap();
        let server = RaftRpcServer::start(listener, raft.clone(), NetworkConfig::default()).unwrap();
        Self { id, addr, dir: dir.to_path_buf(), raft, server: Some(server), state, store: store_view }
    }

    /// Restarts a stopped node from its directory on its old address.
    async fn restart(id: u64, dir: &Path, addr: &str) -> Self {
        let listener = TcpListener::bind(addr).await.unwrap();
        Self::start(id, dir, listener).await
    }

    /// Stops serving peers, then stops Raft (the order openraft asks for), and waits until the
    /// data directory is free for a restart.
    async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
        self.raft.shutdown().await.unwrap();
        tokio::time::timeout(DEADLINE, self.store.close()).await.expect("openraft lets go of the log store");
    }

    fn map(&self) -> BTreeMap<String, String> {
        self.state.lock().unwrap().map.clone()
    }

    async fn wait_applied(&self, index: u64, what: &str) {
        self.raft
            .wait(Some(DEADLINE))
            .applied_index_at_least(Some(index), format!("node {} applies {what}", self.id))
            .await
            .unwrap();
    }
}

/// A set of replicas; a stopped one leaves its slot empty.
struct TestCluster {
    nodes: Vec<Option<TestNode>>,
    _dirs: Vec<tempfile::TempDir>,
}

impl TestCluster {
    /// Starts `n` nodes with ids 1..=n and initializes them as one cluster.
    async fn start(n: u64) -> Self {
        Self::start_with(n, raft_config()).await
    }

    /// [`TestCluster::start`] with its own Raft config.
    async fn start_with(n: u64, config: Arc<openraft::Config>) -> Self {
        let mut nodes = Vec::new();
        let mut dirs = Vec::new();
        for id in 1..=n {
            let dir = tempfile::tempdir().unwrap();
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            nodes.push(Some(TestNode::start_with(id, dir.path(), listener, config.clone()).await));
            dirs.push(dir);
        }
        let members: BTreeMap<u64, BasicNode> =
            nodes.iter().flatten().map(|node| (node.id, BasicNode::new(&node.addr))).collect();
        nodes[0].as_ref().unwrap().raft.initialize(members).await.unwrap();
        Self { nodes, _dirs: dirs }
    }

    fn node(&self, id: u64) -> &TestNode {
        self.nodes[id as usize - 1].as_ref().expect("the node is running")
    }

    fn running(&self) -> impl Iterator<Item = &TestNode> {
        self.nodes.iter().flatten()
    }

    /// The running leader, once the running nodes agree on one.
    async fn leader(&self) -> &TestNode {
        let deadline = Instant::now() + DEADLINE;
        loop {
            for node in self.running() {
                let metrics = node.raft.metrics().borrow_watched().clone();
                if metrics.state == ServerState::Leader && metrics.current_leader == Some(node.id) {
                    return node;
                }
            }
            assert!(Instant::now() < deadline, "no leader among the running nodes");
            // Wake on the first metrics change of any running node.
            let changes = self.running().map(|node| {
                let mut rx = node.raft.metrics();
                Box::pin(async move { rx.changed().await })
            });
            let _ = tokio::time::timeout_at(deadline, futures::future::select_all(changes)).await;
        }
    }

    async fn stop(&mut self, id: u64) -> TestNodeRecord {
        let node = self.nodes[id as usize - 1].take().expect("the node is running");
        let record = TestNodeRecord { id, dir: node.dir.clone(), addr: node.addr.clone() };
        node.stop().await;
        record
    }

    async fn restart(&mut self, record: &TestNodeRecord) {
        let node = TestNode::restart(record.id, &record.dir, &record.addr).await;
        self.nodes[record.id as usize - 1] = Some(node);
    }

    /// Writes keys `prefix{i}` for `range` with `concurrency` writes in flight, retrying on
    /// leader changes (the puts are idempotent); returns the keys whose writes were acknowledged.
    async fn write(&self, prefix: &str, range: std::ops::Range<u64>, concurrency: usize) -> Vec<String> {
        use futures::StreamExt;
        futures::stream::iter(range)
            .map(|i| self.put(format!("{prefix}{i}"), i.to_string()))
            .buffer_unordered(concurrency)
            .collect()
            .await
    }

    async fn put(&self, key: String, value: String) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let leader = self.leader().await;
            let request = KvRequest { key: key.clone(), value: value.clone() };
            match leader.raft.client_write(request).await {
                Ok(_) => return key,
                Err(e) => assert!(Instant::now() < deadline, "write of {key} keeps failing: {e}"),
            }
        }
    }

    /// Waits until every running node has applied what the leader has.
    async fn wait_converged(&self) {
        let leader = self.leader().await;
        let index = leader.raft.metrics().borrow_watched().last_log_index.expect("the leader has a log");
        for node in self.running() {
            node.wait_applied(index, "the leader's log").await;
        }
    }
}

/// What it takes to restart a stopped node.
struct TestNodeRecord {
    id: u64,
    dir: PathBuf,
    addr: String,
}
