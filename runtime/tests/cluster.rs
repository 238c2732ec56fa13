//! Master election and fencing, membership, deploy and the master's scheduling rounds against a
//! real coordinator (a one-replica Squall store on loopback) through a real ZooKeeper client.

use std::time::Duration;

use serde::Deserialize;
use squall_coordinator::replica::{Replica, ReplicaConfig};
use squall_runtime::cluster::master::{MasterError, schedule_round};
use squall_runtime::cluster::{Candidate, DeployError, Fence, NodeInfo, membership, paths, topologies};
use squall_runtime::component::{BoltFactory, BoxError, InputStream, SpoutFactory, StreamDecl, TaskContext};
use squall_runtime::scheduler::Assignment;
use squall_runtime::{Bolt, BoltOutput, Registry, Spout, SpoutOutput, Tuple};
use zookeeper_client as zk;

const DEADLINE: Duration = Duration::from_secs(10);

#[derive(Deserialize)]
struct Idle {}

struct Done;
impl Spout for Done {
    fn next_tuple(&mut self, _: &mut SpoutOutput<'_>) {}
}

struct Sink;
impl Bolt for Sink {
    fn execute(&mut self, _: &Tuple, _: &mut BoltOutput<'_>) -> Result<(), BoxError> {
        Ok(())
    }
}

impl SpoutFactory for Idle {
    fn declare(&self) -> Vec<StreamDecl> {
        vec![StreamDecl::default_stream(["x"])]
    }
    fn create(&self, _: &TaskContext) -> Result<Box<dyn Spout>, BoxError> {
        Ok(Box::new(Done))
    }
}

impl BoltFactory for Idle {
    fn declare(&self, _: &[InputStream]) -> Result<Vec<StreamDecl>, BoxError> {
        Ok(vec![StreamDecl::default_stream(["x"])])
    }
    fn create(&self, _: &TaskContext) -> Result<Box<dyn Bolt>, BoxError> {
        Ok(Box::new(Sink))
    }
}

fn registry() -> Registry {
    let mut registry = Registry::new();
    registry.spout::<Idle>("idle").bolt::<Idle>("sink").bolt::<Idle>("rare");
    registry
}

const TOPOLOGY: &str = "name: demo\nworkers: 2\nspouts:\n  - { id: s, kind: idle, parallelism: 2 }\n\
                        bolts:\n  - { id: b, kind: sink, parallelism: 4, inputs: [ { from: s } ] }\n";

/// A one-replica store in `dir`, once it serves.
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

fn node(id: &str, kinds: &[&str]) -> NodeInfo {
    NodeInfo {
        id: id.into(),
        host: "127.0.0.1".into(),
        slots: 2,
        worker_port: 6700,
        kinds: kinds.iter().map(|k| k.to_string()).collect(),
        version: "test".into(),
    }
}

async fn assignment(client: &zk::Client, name: &str) -> Assignment {
    Assignment::from_json(&client.get_data(&paths::assignment(name)).await.unwrap().0).unwrap()
}

/// Guarantee: deploy refuses, writing nothing, an invalid file, a kind no live node knows and
/// a duplicate name; the master schedules a deployed topology over the live nodes, moves only
/// the lost node's tasks when a node's session ends, and a deposed master's round is fenced out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_is_checked_and_the_master_schedules_and_reschedules_fenced() {
    let dir = tempfile::tempdir().unwrap();
    let replica = store(dir.path()).await;
    let (admin, node_a, node_b) = (client(&replica).await, client(&replica).await, client(&replica).await);
    membership::register(&node_a, &node("a", &["idle", "sink"])).await.unwrap();
    membership::register(&node_b, &node("b", &["idle", "sink"])).await.unwrap();
    assert_eq!(membership::live_nodes(&admin).await.unwrap().len(), 2);

    let registry = registry();
    let invalid = topologies::deploy(&admin, &registry, "name: x\nbolts: []\n", "x.yaml", None).await.unwrap_err();
    assert!(matches!(invalid, DeployError::Invalid(_)), "{invalid}");
    let rare = TOPOLOGY.replace("kind: sink", "kind: rare");
    let unknown = topologies::deploy(&admin, &registry, &rare, "rare.yaml", None).await.unwrap_err();
    assert!(unknown.to_string().contains("no live node knows component kind 'rare' (component 'b')"), "{unknown}");
    assert!(topologies::list(&admin).await.unwrap().is_empty(), "a refused deploy wrote something");
    assert_eq!(topologies::deploy(&admin, &registry, TOPOLOGY, "demo.yaml", None).await.unwrap(), "demo");
    let duplicate = topologies::deploy(&admin, &registry, TOPOLOGY, "demo.yaml", None).await.unwrap_err();
    assert!(matches!(duplicate, DeployError::Duplicate(ref n) if n == "demo"), "{duplicate}");

    let master = client(&replica).await;
    let candidate = Candidate::join(&master, "a").await.unwrap();
    let fence = Fence { epoch: tokio::time::timeout(DEADLINE, candidate.lead()).await.unwrap().unwrap().epoch };
    let round = schedule_round(&master, fence).await.unwrap();
    assert_eq!(round.written, vec!["demo".to_string()]);
    let first = assignment(&admin, "demo").await;
    let nodes: Vec<&str> = first.workers().iter().map(|w| w.node.as_str()).collect();
    assert_eq!(nodes, vec!["a", "b"], "two workers, one on each node");
    // Nothing changed: nothing written.
    assert!(schedule_round(&master, fence).await.unwrap().written.is_empty());

    // Node b's session ends: its tasks, and only those, move to a.
    drop(node_b);
    let mut moved = None;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while moved.is_none() {
        assert!(tokio::time::Instant::now() < deadline, "node b's znode never went away");
        if membership::live_nodes(&admin).await.unwrap().len() == 1 {
            assert_eq!(schedule_round(&master, fence).await.unwrap().written, vec!["demo".to_string()]);
            moved = Some(assignment(&admin, "demo").await);
        } else {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let second = moved.unwrap();
    assert!(second.workers().iter().all(|w| w.node == "a"));
    let on_b: Vec<u32> = first.workers().iter().filter(|w| w.node == "b").flat_map(|w| w.tasks.iter()).collect();
    let mut relocated = second.moved_since(&first);
    relocated.sort();
    assert_eq!(relocated, on_b, "only the lost node's tasks move");

    // A newer master takes over: the old one's next round (which has a new topology to
    // schedule) is refused, and nothing is written.
    admin.set_data(paths::EPOCH, b"someone else", None).await.unwrap();
    membership::register(&admin, &node("c", &["idle", "sink"])).await.unwrap();
    topologies::deploy(&admin, &registry, TOPOLOGY, "demo.yaml", Some("demo2")).await.unwrap();
    let refused = schedule_round(&master, fence).await.unwrap_err();
    assert!(matches!(refused, MasterError::FencedOut(_)), "{refused}");
    assert_eq!(admin.check_stat(&paths::assignment("demo2")).await.unwrap(), None);
    assert_eq!(assignment(&admin, "demo").await, second);
    replica.shutdown().await;
}

/// Guarantee: a rebalance from 2 to 3 workers moves only tasks onto the new worker, and no
/// more than it takes to even the spread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_moves_only_the_tasks_it_must() {
    let dir = tempfile::tempdir().unwrap();
    let replica = store(dir.path()).await;
    let admin = client(&replica).await;
    for id in ["a", "b", "c"] {
        membership::register(&admin, &node(id, &["idle", "sink"])).await.unwrap();
    }
    topologies::deploy(&admin, &registry(), TOPOLOGY, "demo.yaml", None).await.unwrap();
    let candidate = Candidate::join(&admin, "a").await.unwrap();
    let fence = Fence { epoch: candidate.lead().await.unwrap().epoch };
    schedule_round(&admin, fence).await.unwrap();
    let before = assignment(&admin, "demo").await;
    assert_eq!(before.workers().len(), 2);

    topologies::rebalance(&admin, "demo", 3).await.unwrap();
    assert_eq!(schedule_round(&admin, fence).await.unwrap().written, vec!["demo".to_string()]);
    let after = assignment(&admin, "demo").await;
    assert_eq!(after.workers().len(), 3);
    let moved = after.moved_since(&before);
    let new_worker = after.workers().iter().find(|w| before.tasks_of(&w.node, w.slot).is_none()).unwrap();
    assert!(!moved.is_empty() && moved.iter().all(|t| new_worker.tasks.contains(*t)), "{moved:?}");
    let total = after.layout().task_count() as usize;
    assert_eq!(moved.len(), new_worker.tasks.len() as usize);
    assert!(moved.len() <= total.div_ceil(3), "moved {} of {total}", moved.len());
    replica.shutdown().await;
}

/// Guarantee: `rebalance --parallelism` gives a component a new number of tasks: the master
/// schedules the new layout, every task of it placed once; unknown components and zero tasks
/// are refused, changing nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_can_change_a_components_parallelism() {
    let dir = tempfile::tempdir().unwrap();
    let replica = store(dir.path()).await;
    let admin = client(&replica).await;
    for id in ["a", "b"] {
        membership::register(&admin, &node(id, &["idle", "sink"])).await.unwrap();
    }
    let registry = registry();
    topologies::deploy(&admin, &registry, TOPOLOGY, "demo.yaml", None).await.unwrap();
    let candidate = Candidate::join(&admin, "a").await.unwrap();
    let fence = Fence { epoch: candidate.lead().await.unwrap().epoch };
    schedule_round(&admin, fence).await.unwrap();
    let before = assignment(&admin, "demo").await;

    let refused = topologies::set_parallelism(&admin, &registry, "demo", &[("nope".into(), 3)]).await;
    assert!(refused.unwrap_err().to_string().contains("no component 'nope'"));
    let refused = topologies::set_parallelism(&admin, &registry, "demo", &[("s".into(), 0)]).await;
    assert!(refused.unwrap_err().to_string().contains("at least one task"));
    assert!(schedule_round(&admin, fence).await.unwrap().written.is_empty(), "nothing changed");

    topologies::set_parallelism(&admin, &registry, "demo", &[("s".into(), 4)]).await.unwrap();
    assert_eq!(schedule_round(&admin, fence).await.unwrap().written, vec!["demo".to_string()]);
    let after = assignment(&admin, "demo").await;
    let spouts = after.layout().components().iter().find(|c| c.id == "s").unwrap().tasks();
    assert_eq!(spouts.len(), 4);
    let total = after.layout().task_count();
    assert_eq!(total, before.layout().task_count() + 2);
    let mut placed: Vec<u32> = after.workers().iter().flat_map(|w| w.tasks.iter()).collect();
    placed.sort();
    assert_eq!(placed, (0..total).collect::<Vec<_>>(), "every task placed once");
    replica.shutdown().await;
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

/// Guarantee: a master whose node should step aside (its replica leads the coordinator)
/// resigns as soon as another candidate waits, and that candidate becomes master with a newer
/// epoch; a node that need not step aside keeps the role.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_steps_aside_for_another_candidate_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let replica = store(dir.path()).await;
    let (a, b, observer) = (client(&replica).await, client(&replica).await, client(&replica).await);
    let master = async |observer: &zk::Client| {
        let (data, stat) = observer.get_data(paths::EPOCH).await.ok()?;
        Some((String::from_utf8(data).unwrap(), stat.version))
    };
    let first =
        tokio::spawn(
            async move { squall_runtime::cluster::master::run(a, "a", Duration::from_secs(2), &|| true).await },
        );
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while master(&observer).await.is_none_or(|(node, _)| node != "a") {
        assert!(tokio::time::Instant::now() < deadline, "a never became master");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, a_epoch) = master(&observer).await.unwrap();
    // Alone, a keeps the role although it would step aside.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(master(&observer).await.unwrap(), ("a".to_string(), a_epoch));

    let second =
        tokio::spawn(
            async move { squall_runtime::cluster::master::run(b, "b", Duration::from_secs(2), &|| false).await },
        );
    while master(&observer).await.is_none_or(|(node, _)| node != "b") {
        assert!(tokio::time::Instant::now() < deadline, "b never took over from a");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, b_epoch) = master(&observer).await.unwrap();
    assert!(b_epoch > a_epoch);
    // b stays master: it need not step aside, and a waits in line.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(master(&observer).await.unwrap(), ("b".to_string(), b_epoch));
    first.abort();
    second.abort();
    replica.shutdown().await;
}
