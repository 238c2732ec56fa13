//! A three-replica ensemble of real `squall node` processes on 127.0.0.1, SIGKILLed and restarted
//! for real, driven by `zookeeper-client`: the leader's loss under write load, a full restart,
//! and a session that moves to another replica when its own dies.
//!
//! Every process belongs to an [`Ensemble`] that SIGKILLs it when the test ends, passed or
//! failed; a failing test prints each node's log (its stderr at `RUST_LOG=info`). Waits poll a
//! condition against a deadline.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zookeeper_client as zk;

/// The nodes' tick: session timeouts are clamped to 20 ticks, so 200 ms allows [`SESSION_TIMEOUT`].
const TICK: &str = "200ms";
/// The session timeout every client asks for.
const SESSION_TIMEOUT: Duration = Duration::from_secs(4);
/// How long a wait may take before the test fails: generous, the machine is shared.
const DEADLINE: Duration = Duration::from_secs(20);
/// The bound asserted on the time from the leader's SIGKILL to the first acknowledged write.
const RECOVERY_BOUND: Duration = Duration::from_secs(15);
/// How many log lines of each node a failing test prints.
const LOG_TAIL: usize = 150;

/// The first of `count` consecutive loopback ports no one listens on.
///
/// Ports come from below the kernel's ephemeral range (which starts at 32768 unless changed),
/// so the many outgoing connections of the processes under test cannot take one between the
/// moment it is picked and the moment a node binds it; each is handed out once per run, and
/// `count` consecutive ports are free (a node's worker slots listen on consecutive ports).
fn free_ports(count: u16) -> SocketAddr {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    // Spread test binaries and runs apart: start from a place the process id picks.
    let base = 20_000 + (std::process::id() as usize * 7919) % 10_000;
    loop {
        let offset = NEXT.fetch_add(usize::from(count), Ordering::Relaxed);
        let port = (base + offset) % 12_000 + 20_000;
        let free = (0..count).all(|i| TcpListener::bind(("127.0.0.1", port as u16 + i)).is_ok());
        if free {
            return SocketAddr::from(([127, 0, 0, 1], port as u16));
        }
    }
}

/// A loopback address no one listens on (see [`free_ports`]).
fn free_addr() -> SocketAddr {
    free_ports(1)
}

/// The answer of the node at `addr` to a four-letter word; `None` while it does not answer.
async fn four_letter(addr: SocketAddr, word: &'static str) -> Option<String> {
    tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        stream.write_all(word.as_bytes()).ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).ok()?;
        Some(answer)
    })
    .await
    .unwrap()
}

/// What `srvr` on `addr` says after `Mode: `; `None` while the node does not answer.
async fn mode(addr: SocketAddr) -> Option<String> {
    let srvr = four_letter(addr, "srvr").await?;
    srvr.lines().find_map(|line| line.strip_prefix("Mode: ")).map(str::to_string)
}

/// One replica's identity: the same on every start.
struct NodeSpec {
    client: SocketAddr,
    /// The first of the ports its workers listen on (`--worker-port`).
    worker_port: u16,
    raft: SocketAddr,
    data_dir: PathBuf,
    log: PathBuf,
}

/// Three `squall node` processes with fixed ids, ports and data directories, any of which may be
/// killed and started again.
struct Ensemble {
    /// Holds the data directories and logs; kept (not deleted) when a test fails.
    dir: Option<tempfile::TempDir>,
    nodes: BTreeMap<u64, NodeSpec>,
    running: BTreeMap<u64, Child>,
    /// Arguments every node gets besides its identity.
    extra: Vec<String>,
}

impl Ensemble {
    /// Starts replicas 1 to 3.
    fn start() -> Ensemble {
        Ensemble::start_with(&[])
    }

    /// Starts replicas 1 to 3, each also given `extra` arguments.
    fn start_with(extra: &[&str]) -> Ensemble {
        let dir = tempfile::tempdir().unwrap();
        let nodes = (1..=3u64)
            .map(|id| {
                let spec = NodeSpec {
                    client: free_addr(),
                    worker_port: free_ports(2).port(),
                    raft: free_addr(),
                    data_dir: dir.path().join(format!("node{id}")),
                    log: dir.path().join(format!("node{id}.log")),
                };
                (id, spec)
            })
            .collect();
        let extra = extra.iter().map(|a| a.to_string()).collect();
        let mut ensemble = Ensemble { dir: Some(dir), nodes, running: BTreeMap::new(), extra };
        for id in 1..=3 {
            ensemble.spawn(id);
        }
        ensemble
    }

    /// Starts replica `id` with its id, data directory, ports and peers; its stderr is appended
    /// to its log.
    fn spawn(&mut self, id: u64) {
        assert!(!self.running.contains_key(&id), "node {id} is already running");
        let spec = &self.nodes[&id];
        let mut log = File::options().create(true).append(true).open(&spec.log).unwrap();
        writeln!(log, "=== test: starting node {id} ===").unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_squall"));
        command.args(["node", "--id", &id.to_string(), "--tick", TICK]);
        command.arg("--data-dir").arg(&spec.data_dir);
        command.args(["--listen", &spec.client.to_string(), "--raft", &spec.raft.to_string()]);
        for (peer, peer_spec) in &self.nodes {
            command.args(["--peer", &format!("{peer}={}", peer_spec.raft)]);
        }
        command.args(&self.extra);
        if self.extra.iter().any(|a| a == "--slots") {
            command.args(["--worker-port", &spec.worker_port.to_string()]);
        }
        let child = command
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start node {id}: {e}"));
        self.running.insert(id, child);
    }

    /// SIGKILLs replica `id` and reaps it; returns the instant the signal was sent.
    fn kill(&mut self, id: u64) -> Instant {
        let mut child = self.running.remove(&id).unwrap_or_else(|| panic!("node {id} is not running"));
        child.kill().unwrap();
        let killed = Instant::now();
        child.wait().unwrap();
        killed
    }

    /// Asserts that no running node has exited on its own.
    fn assert_running(&mut self, when: &str) {
        let exited: Vec<String> = self
            .running
            .iter_mut()
            .filter_map(|(id, child)| child.try_wait().unwrap().map(|status| format!("node {id} ({status})")))
            .collect();
        assert!(exited.is_empty(), "{when}: {} exited on their own", exited.join(", "));
    }

    fn addr(&self, id: u64) -> SocketAddr {
        self.nodes[&id].client
    }

    /// Every replica's client address, as a connect string.
    fn connect_string(&self) -> String {
        self.nodes.values().map(|n| n.client.to_string()).collect::<Vec<_>>().join(",")
    }

    /// Waits until one running replica leads and every other running one follows; returns the
    /// leader.
    async fn wait_for_leader(&self) -> u64 {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let mut modes = Vec::new();
            for &id in self.running.keys() {
                modes.push((id, mode(self.addr(id)).await));
            }
            let leaders: Vec<u64> =
                modes.iter().filter(|(_, m)| m.as_deref() == Some("leader")).map(|(id, _)| *id).collect();
            let followers = modes.iter().filter(|(_, m)| m.as_deref() == Some("follower")).count();
            if leaders.len() == 1 && followers == modes.len() - 1 {
                return leaders[0];
            }
            assert!(Instant::now() < deadline, "no single leader among the running nodes: {modes:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The last [`LOG_TAIL`] lines of each node's log.
    fn logs(&self) -> String {
        let mut out = String::new();
        for (id, spec) in &self.nodes {
            let text = std::fs::read_to_string(&spec.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL)..];
            out += &format!("----- node {id}: {} (last {} lines) -----\n", spec.log.display(), tail.len());
            for line in tail {
                out += line;
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for Ensemble {
    fn drop(&mut self) {
        // Read before any kill: killing one node must not be blamed on another.
        let exited: Vec<String> = self
            .running
            .iter_mut()
            .filter_map(|(id, child)| child.try_wait().ok().flatten().map(|status| format!("node {id} ({status})")))
            .collect();
        for child in self.running.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            if !exited.is_empty() {
                eprintln!("exited on their own before the test ended: {}", exited.join(", "));
            }
            eprintln!("{}", self.logs());
            if let Some(dir) = self.dir.take() {
                eprintln!("node data and logs kept in {}", dir.keep().display());
            }
        }
    }
}

/// A client of `connect_string` with [`SESSION_TIMEOUT`]; retries until [`DEADLINE`].
async fn connect(connect_string: &str) -> zk::Client {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match zk::Client::connector().with_session_timeout(SESSION_TIMEOUT).connect(connect_string).await {
            Ok(client) => return client,
            Err(e) if Instant::now() < deadline => eprintln!("connecting to {connect_string}: {e}; retrying"),
            Err(e) => panic!("cannot connect to {connect_string}: {e}"),
        }
    }
}

fn persistent() -> zk::CreateOptions<'static> {
    zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all())
}

fn ephemeral() -> zk::CreateOptions<'static> {
    zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all())
}

/// Retries `read` after `sync(path)` while the ensemble is electing a leader, up to
/// [`DEADLINE`]: what the client's replica holds once it has caught up with the leader.
async fn synced<T, F: Future<Output = Result<T, zk::Error>>>(
    client: &zk::Client,
    path: &str,
    read: impl Fn() -> F,
) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let result = match client.sync(path).await {
            Ok(()) => read().await,
            Err(e) => Err(e),
        };
        match result {
            Ok(value) => return value,
            Err(e) if Instant::now() < deadline => {
                eprintln!("sync and read {path}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("cannot sync and read {path}: {e}"),
        }
    }
}

/// Whether `path` exists on the client's replica once it has caught up with the leader.
async fn synced_exists(client: &zk::Client, path: &str) -> bool {
    synced(client, path, || client.check_stat(path)).await.is_some()
}

/// Asserts that replica `id` at `addr` alone holds every path of `acked` in `dir`.
async fn assert_holds(id: u64, addr: SocketAddr, dir: &str, acked: &BTreeSet<String>, when: &str) {
    let client = connect(&addr.to_string()).await;
    let children = synced(&client, dir, || client.list_children(dir)).await;
    let present: BTreeSet<String> = children.into_iter().map(|c| format!("{dir}/{c}")).collect();
    let missing: Vec<&String> = acked.difference(&present).collect();
    assert!(
        missing.is_empty(),
        "{when}: node {id} lacks {} of {} acknowledged znodes, e.g. {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
}

/// An acknowledged create: its path, when it was sent and when it was acknowledged.
struct Ack {
    path: String,
    sent: Instant,
    acked: Instant,
}

/// Writers creating `/load/w<k>-<i>` in a loop, each with its own session on every replica,
/// recording each acknowledged create.
struct WriteLoad {
    acks: Arc<Mutex<Vec<Ack>>>,
    failures: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    writers: Vec<tokio::task::JoinHandle<()>>,
}

impl WriteLoad {
    async fn start(writers: usize, connect_string: &str) -> WriteLoad {
        let acks = Arc::new(Mutex::new(Vec::new()));
        let failures = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut handles = Vec::new();
        for k in 0..writers {
            let client = connect(connect_string).await;
            let (acks, failures, stop) = (acks.clone(), failures.clone(), stop.clone());
            handles.push(tokio::spawn(async move {
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let path = format!("/load/w{k}-{i}");
                    let sent = Instant::now();
                    match client.create(&path, b"x", &persistent()).await {
                        Ok(_) => acks.lock().unwrap().push(Ack { path, sent, acked: Instant::now() }),
                        Err(_) => {
                            failures.fetch_add(1, Ordering::Relaxed);
                            // Not a wait for anything: keeps a disconnected client from spinning.
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
            }));
        }
        WriteLoad { acks, failures, stop, writers: handles }
    }

    fn count(&self) -> usize {
        self.acks.lock().unwrap().len()
    }

    /// Waits until `n` creates were acknowledged, up to [`DEADLINE`].
    async fn wait_for(&self, n: usize, what: &str) {
        let deadline = Instant::now() + DEADLINE;
        while self.count() < n {
            assert!(
                Instant::now() < deadline,
                "{what}: writes stalled at {} acknowledged (wanted {n}), {} failed",
                self.count(),
                self.failures.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The first acknowledgement after `t`, and the first of a create sent after `t`.
    fn first_after(&self, t: Instant) -> (Option<Duration>, Option<Duration>) {
        let acks = self.acks.lock().unwrap();
        let acked = acks.iter().filter(|a| a.acked > t).map(|a| a.acked - t).min();
        let sent_and_acked = acks.iter().filter(|a| a.sent > t).map(|a| a.acked - t).min();
        (acked, sent_and_acked)
    }

    /// Stops the writers; returns every acknowledged path.
    async fn stop(self) -> BTreeSet<String> {
        self.stop.store(true, Ordering::Relaxed);
        for writer in self.writers {
            writer.await.unwrap();
        }
        eprintln!("write load: {} failed creates", self.failures.load(Ordering::Relaxed));
        self.acks.lock().unwrap().iter().map(|a| a.path.clone()).collect()
    }
}

/// Guarantee: when the leader is SIGKILLed under write load, a new leader is elected and writes
/// resume; every acknowledged create is on both survivors, and a session connected to a
/// survivor keeps its ephemeral. The killed replica, restarted, catches up with every
/// acknowledged create, and a full restart of all three keeps them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_leaders_sigkill_under_load_loses_no_acknowledged_write_and_a_full_restart_keeps_all() {
    let started = Instant::now();
    let mut ensemble = Ensemble::start();
    let leader = ensemble.wait_for_leader().await;
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    let holder = connect(&ensemble.addr(follower).to_string()).await;
    holder.create("/load", b"", &persistent()).await.unwrap();
    holder.create("/alive", b"", &ephemeral()).await.unwrap();

    let load = WriteLoad::start(6, &ensemble.connect_string()).await;
    load.wait_for(200, "before the kill").await;
    let killed = ensemble.kill(leader);
    let before = load.count();
    let new_leader = ensemble.wait_for_leader().await;
    let elected = killed.elapsed();
    assert_ne!(new_leader, leader);
    load.wait_for(before + 200, "after the leader's kill").await;
    let (first_ack, first_new_write) = load.first_after(killed);
    eprintln!(
        "leader {leader} SIGKILLed: node {new_leader} reports leading after {elected:?}; first acknowledged write \
         after {first_ack:?}; first acknowledged write sent after the kill after {first_new_write:?}"
    );
    let recovery = first_new_write.expect("a write sent after the kill was acknowledged");
    assert!(recovery < RECOVERY_BOUND, "writes resumed only {recovery:?} after the leader's kill");
    let acked = load.stop().await;
    ensemble.assert_running("under write load after the leader's kill");
    eprintln!("{} creates acknowledged, {before} of them before the kill", acked.len());

    let survivors: Vec<u64> = (1..=3).filter(|&id| id != leader).collect();
    for &id in &survivors {
        assert_holds(id, ensemble.addr(id), "/load", &acked, "after the leader's kill").await;
    }
    // The holder's session outlives a whole session timeout on the new leader's clock.
    let mut readers = Vec::new();
    for &id in &survivors {
        readers.push((id, connect(&ensemble.addr(id).to_string()).await));
    }
    let deadline = killed + 2 * SESSION_TIMEOUT;
    loop {
        for (id, reader) in &readers {
            assert!(
                synced_exists(reader, "/alive").await,
                "node {id}: the ephemeral of a session on surviving node {follower} vanished {:?} after the kill",
                killed.elapsed()
            );
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(readers);
    holder.create("/alive-after-failover", b"", &ephemeral()).await.unwrap();

    let restart = Instant::now();
    ensemble.spawn(leader);
    assert_holds(leader, ensemble.addr(leader), "/load", &acked, "after its restart").await;
    eprintln!("node {leader} restarted and caught up in {:?}", restart.elapsed());
    let reader = connect(&ensemble.addr(leader).to_string()).await;
    assert!(synced_exists(&reader, "/alive").await, "node {leader} lacks a live session's ephemeral after its restart");
    drop(reader);
    drop(holder);
    ensemble.assert_running("after the restart of the killed leader");

    for id in 1..=3 {
        ensemble.kill(id);
    }
    let restart = Instant::now();
    for id in 1..=3 {
        ensemble.spawn(id);
    }
    ensemble.wait_for_leader().await;
    for id in 1..=3 {
        assert_holds(id, ensemble.addr(id), "/load", &acked, "after a full restart").await;
    }
    eprintln!("full restart: every node holds every acknowledged znode after {:?}", restart.elapsed());
    ensemble.assert_running("after the full restart");
    eprintln!("test took {:?}", started.elapsed());
}

/// Guarantee: a session whose replica dies moves to another replica within its timeout and
/// keeps its ephemerals, whether the client moves it by itself (it knows every replica) or is
/// told to (it knew only the dead one); the moved session keeps working, stays alive past its
/// timeout, and closing it removes its ephemerals.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_session_moves_to_another_replica_with_its_ephemerals_when_its_replica_dies() {
    let started = Instant::now();
    let mut ensemble = Ensemble::start();
    let leader = ensemble.wait_for_leader().await;
    let (roaming, home) = connect_to_a_follower(&ensemble, leader).await;
    let refuge = (1..=3).find(|&id| id != leader && id != home).unwrap();
    roaming.create("/roaming", b"", &ephemeral()).await.unwrap();
    let pinned = connect(&ensemble.addr(home).to_string()).await;
    pinned.create("/pinned", b"", &ephemeral()).await.unwrap();
    let mut roaming_state = roaming.state_watcher();

    let killed = ensemble.kill(home);
    // The pinned client knows only its dead replica: its session is taken to another one.
    let moved = zk::Client::connector()
        .with_session(pinned.session().clone())
        .with_session_timeout(SESSION_TIMEOUT)
        .connect(&ensemble.addr(refuge).to_string())
        .await
        .unwrap_or_else(|e| panic!("the session could not move to node {refuge}: {e}"));
    eprintln!("a session moved to node {refuge} {:?} after node {home} was killed", killed.elapsed());
    assert_eq!(moved.session_id(), pinned.session_id());
    let reconnected = tokio::time::timeout(DEADLINE, async {
        loop {
            match roaming_state.changed().await {
                zk::SessionState::SyncConnected => return,
                state => assert!(!state.is_terminated(), "the roaming session ended: {state:?}"),
            }
        }
    })
    .await;
    assert!(reconnected.is_ok(), "the roaming client did not reconnect: {:?}", roaming.state());
    eprintln!("the roaming client reconnected by itself {:?} after node {home} was killed", killed.elapsed());

    for (client, kept, new) in [(&moved, "/pinned", "/pinned-moved"), (&roaming, "/roaming", "/roaming-moved")] {
        let (_, stat) = client.get_data(kept).await.unwrap_or_else(|e| panic!("{kept} after the move: {e}"));
        assert_eq!(stat.ephemeral_owner, client.session_id().0, "the owner of {kept}");
        client.create(new, b"", &ephemeral()).await.unwrap_or_else(|e| panic!("create {new} after the move: {e}"));
    }

    // Alive past their timeout: the leader hears of them from the replicas they moved to.
    let observer = connect(&ensemble.addr(leader).to_string()).await;
    let ephemerals = ["/pinned", "/pinned-moved", "/roaming", "/roaming-moved"];
    let deadline = killed + 2 * SESSION_TIMEOUT;
    loop {
        for path in ephemerals {
            assert!(synced_exists(&observer, path).await, "{path} vanished {:?} after the move", killed.elapsed());
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(moved.state(), zk::SessionState::SyncConnected);
    assert_eq!(roaming.state(), zk::SessionState::SyncConnected);
    ensemble.assert_running(&format!("after node {home}'s kill"));

    drop((moved, pinned, roaming));
    let deadline = Instant::now() + DEADLINE;
    for path in ephemerals {
        while synced_exists(&observer, path).await {
            assert!(Instant::now() < deadline, "{path} outlived its closed session");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    eprintln!("test took {:?}", started.elapsed());
}

/// A client given every replica that happens to land on a follower, and that follower.
async fn connect_to_a_follower(ensemble: &Ensemble, leader: u64) -> (zk::Client, u64) {
    for _ in 0..30 {
        let client = connect(&ensemble.connect_string()).await;
        let listed = format!("/session:{}[", client.session_id());
        for id in (1..=3).filter(|&id| id != leader) {
            if four_letter(ensemble.addr(id), "stat").await.is_some_and(|stat| stat.contains(&listed)) {
                return (client, id);
            }
        }
    }
    panic!("30 clients of every replica, none of them on a follower");
}

/// The nodes whose slots run a worker of `topology`'s assignment, and its task count; `None`
/// while it has none.
async fn placement(client: &zk::Client, topology: &str) -> Option<(BTreeSet<String>, u64)> {
    let (data, _) = client.get_data(&format!("/squall/assignments/{topology}")).await.ok()?;
    let assignment: serde_json::Value = serde_json::from_slice(&data).unwrap();
    let nodes = assignment["workers"].as_array()?.iter().map(|w| w["node"].as_str().unwrap().to_string()).collect();
    let tasks = assignment["layout"].as_array()?.iter().map(|c| c["parallelism"].as_u64().unwrap()).sum::<u64>();
    Some((nodes, tasks))
}

/// Runs `squall ARGS...` to completion.
fn squall(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_squall")).args(args).stdin(Stdio::null()).output().unwrap()
}

/// Guarantee: nodes that join the cluster (`--slots`) register under /squall/nodes and elect
/// one master, which schedules a deployed topology over them; when a node that runs one of its
/// workers is killed, its tasks move to the survivors within the session timeout plus a
/// scheduling round; a second deploy under the same name is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deployed_topology_is_scheduled_over_the_nodes_and_moves_off_a_killed_one() {
    let mut ensemble = Ensemble::start_with(&["--slots", "2"]);
    ensemble.wait_for_leader().await;
    let target = ensemble.connect_string();
    let client = connect(&target).await;
    let deadline = Instant::now() + DEADLINE;
    while client.list_children("/squall/nodes").await.map(|n| n.len()).unwrap_or(0) < 3 {
        assert!(Instant::now() < deadline, "the nodes did not all register");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let topology = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/wordcount.yaml");
    let deployed = squall(&["deploy", topology, "--coordinator", &target]);
    assert!(deployed.status.success(), "{}", String::from_utf8_lossy(&deployed.stderr));
    assert_eq!(String::from_utf8_lossy(&deployed.stdout).trim(), "deployed wordcount");
    let again = squall(&["deploy", topology, "--coordinator", &target]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already deployed"), "{again:?}");

    let deadline = Instant::now() + DEADLINE;
    let (nodes, tasks) = loop {
        if let Some(placed) = placement(&client, "wordcount").await {
            break placed;
        }
        assert!(Instant::now() < deadline, "wordcount was not scheduled: {}", ensemble.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(nodes.len(), 2, "two workers on two nodes: {nodes:?}");
    let listed = squall(&["list", "--coordinator", &target]);
    let listed = String::from_utf8_lossy(&listed.stdout).to_string();
    assert!(listed.contains("wordcount") && listed.contains("active"), "{listed}");

    let victim: u64 = nodes.iter().next().unwrap().parse().unwrap();
    let killed = ensemble.kill(victim);
    let client = connect(&ensemble.connect_string()).await;
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some((now, now_tasks)) = placement(&client, "wordcount").await {
            if !now.contains(&victim.to_string()) {
                assert_eq!(now_tasks, tasks);
                break;
            }
        }
        assert!(Instant::now() < deadline, "node {victim}'s tasks did not move: {}", ensemble.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("node {victim}'s workers were rescheduled {:?} after its SIGKILL", killed.elapsed());
    ensemble.assert_running("after rescheduling");
}

/// Guarantee: word count deployed on three nodes runs in worker processes the supervisors
/// start, its tuples crossing between workers over TCP, and counts exactly what a plain loop
/// counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn word_count_deployed_on_three_nodes_counts_exactly() {
    let mut ensemble = Ensemble::start_with(&["--slots", "2"]);
    ensemble.wait_for_leader().await;
    let target = ensemble.connect_string();
    let input = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/storm.txt");
    let text = std::fs::read_to_string(input).unwrap();
    let mut expected: BTreeMap<String, i64> = BTreeMap::new();
    for word in text.split_whitespace() {
        *expected.entry(word.to_string()).or_default() += 1;
    }
    let total: i64 = expected.values().sum();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("counts.jsonl");
    let yaml = format!(
        "name: wc\nworkers: 3\nconfig: {{ message_timeout: 30s }}\nspouts:\n  - {{ id: lines, kind: file, args: {{ path: {input} }} }}\n\
         bolts:\n  - {{ id: split, kind: split, parallelism: 2, args: {{ field: line }}, inputs: [ {{ from: lines }} ] }}\n\
         \x20 - {{ id: count, kind: count, parallelism: 2, args: {{ key: word }}, inputs: [ {{ from: split, grouping: {{ fields: [word] }} }} ] }}\n\
         \x20 - {{ id: out, kind: file_sink, args: {{ path: {} }}, inputs: [ {{ from: count, grouping: global }} ] }}\n",
        out.display()
    );
    let file = dir.path().join("wc.yaml");
    std::fs::write(&file, yaml).unwrap();
    let client = connect(&target).await;
    let deadline = Instant::now() + DEADLINE;
    while client.list_children("/squall/nodes").await.map(|n| n.len()).unwrap_or(0) < 3 {
        assert!(Instant::now() < deadline, "the nodes did not all register");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deployed = squall(&["deploy", file.to_str().unwrap(), "--coordinator", &target]);
    assert!(deployed.status.success(), "{}", String::from_utf8_lossy(&deployed.stderr));

    let deadline = Instant::now() + DEADLINE;
    let counted = loop {
        let written = std::fs::read_to_string(&out).unwrap_or_default();
        if written.lines().count() as i64 >= total {
            break written;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {total} counts after {DEADLINE:?}: {}",
            written.lines().count(),
            ensemble.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut finals: BTreeMap<String, i64> = BTreeMap::new();
    for line in counted.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let entry = finals.entry(v["word"].as_str().unwrap().to_string()).or_default();
        *entry = (*entry).max(v["count"].as_i64().unwrap());
    }
    assert_eq!(finals, expected);
    let workers = client.list_children("/squall/workers/wc").await.unwrap();
    assert_eq!(workers.len(), 3, "{workers:?}");
    // `status` shows each component, where it runs, and the counts the workers publish.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let status = squall(&["status", "wc", "--coordinator", &target]);
        let status = String::from_utf8_lossy(&status.stdout).to_string();
        let count_line = status.lines().find(|l| l.starts_with("count ")).unwrap_or_default().to_string();
        if status.starts_with("wc: active, 3 workers (3 running)") && count_line.contains(&format!(" {total} ")) {
            assert!(status.lines().any(|l| l.starts_with("lines ")), "{status}");
            break;
        }
        assert!(Instant::now() < deadline, "status never showed {total} executed by count: {status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Killed: every worker's znode goes (the process exits, its session ends), then the
    // topology's record.
    let killed = squall(&["kill", "wc", "--coordinator", &target]);
    assert!(killed.status.success(), "{}", String::from_utf8_lossy(&killed.stderr));
    let deadline = Instant::now() + DEADLINE;
    loop {
        let workers = client.list_children("/squall/workers/wc").await.unwrap_or_default();
        let record = client.check_stat("/squall/topologies/wc").await.unwrap();
        if workers.is_empty() && record.is_none() {
            break;
        }
        assert!(Instant::now() < deadline, "after kill: workers {workers:?}, record {record:?}: {}", ensemble.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let unknown = squall(&["kill", "wc", "--coordinator", &target]);
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no topology named 'wc'"), "{unknown:?}");
    ensemble.assert_running("after counting and killing");
}

/// A topology `lines` on a running cluster: a file spout of 20,000 numbered lines, a filter
/// with 3 tasks, a file sink; acking on, with a short message timeout so lost trees replay soon.
struct LinesRun {
    client: zk::Client,
    lines: Vec<String>,
    out: PathBuf,
    _dir: tempfile::TempDir,
}

impl LinesRun {
    /// Deploys it once every node has registered, and returns when its three workers have
    /// registered and lines reach the sink.
    async fn deploy(ensemble: &Ensemble) -> LinesRun {
        let target = ensemble.connect_string();
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("lines.txt");
        let lines: Vec<String> = (0..20_000).map(|i| format!("line-{i}")).collect();
        std::fs::write(&input, lines.join("\n") + "\n").unwrap();
        let out = dir.path().join("out.jsonl");
        let yaml = format!(
            "name: lines\nworkers: 3\nconfig: {{ message_timeout: 2s, max_spout_pending: 200 }}\n\
             spouts:\n  - {{ id: read, kind: file, args: {{ path: {} }} }}\n\
             bolts:\n  - {{ id: pass, kind: filter, parallelism: 3, args: {{ field: line, contains: line }}, inputs: [ {{ from: read }} ] }}\n\
             \x20 - {{ id: out, kind: file_sink, args: {{ path: {} }}, inputs: [ {{ from: pass, grouping: global }} ] }}\n",
            input.display(),
            out.display()
        );
        let file = dir.path().join("lines.yaml");
        std::fs::write(&file, yaml).unwrap();
        let client = connect(&target).await;
        let deadline = Instant::now() + DEADLINE;
        while client.list_children("/squall/nodes").await.map(|n| n.len()).unwrap_or(0) < 3 {
            assert!(Instant::now() < deadline, "the nodes did not all register");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let deployed = squall(&["deploy", file.to_str().unwrap(), "--coordinator", &target]);
        assert!(deployed.status.success(), "{}", String::from_utf8_lossy(&deployed.stderr));
        let deadline = Instant::now() + DEADLINE;
        while std::fs::read_to_string(&out).map(|t| t.lines().count()).unwrap_or(0) < 100
            || client.list_children("/squall/workers/lines").await.map(|w| w.len()).unwrap_or(0) < 3
        {
            assert!(Instant::now() < deadline, "the workers did not all start: {}", ensemble.logs());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        LinesRun { client, lines, out, _dir: dir }
    }

    /// The pid of worker `name` (`<node>-<slot>`), from its znode; `None` while it has none.
    async fn pid_of(&self, name: &str) -> Option<i64> {
        let (data, _) = self.client.get_data(&format!("/squall/workers/lines/{name}")).await.ok()?;
        serde_json::from_slice::<serde_json::Value>(&data).ok()?["pid"].as_i64()
    }

    /// Waits until every line has reached the sink at least once.
    async fn assert_every_line_arrives(&self, ensemble: &Ensemble) {
        let deadline = Instant::now() + DEADLINE * 2;
        loop {
            let written = std::fs::read_to_string(&self.out).unwrap_or_default();
            let seen: BTreeSet<&str> = written.lines().filter_map(|l| l.split('"').nth(3)).collect();
            let missing = self.lines.iter().filter(|l| !seen.contains(l.as_str())).count();
            if missing == 0 {
                return;
            }
            assert!(Instant::now() < deadline, "{missing} lines never arrived: {}", ensemble.logs());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Guarantee: a worker killed with SIGKILL is started again by its node's supervisor, and
/// every line of a file spout still reaches the sink at least once (the trees the dead worker
/// held are replayed).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_worker_is_restarted_and_every_line_still_arrives() {
    let mut ensemble = Ensemble::start_with(&["--slots", "2"]);
    ensemble.wait_for_leader().await;
    let run = LinesRun::deploy(&ensemble).await;
    let workers = run.client.list_children("/squall/workers/lines").await.unwrap();
    let victim = workers.iter().max().unwrap().clone();
    let pid = run.pid_of(&victim).await.expect("the worker's pid");
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    let deadline = Instant::now() + DEADLINE;
    while run.pid_of(&victim).await.is_none_or(|now| now == pid) {
        assert!(Instant::now() < deadline, "worker {victim} was not restarted: {}", ensemble.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    run.assert_every_line_arrives(&ensemble).await;
    ensemble.assert_running("after a worker's SIGKILL");
}

/// Guarantee: when a whole node is SIGKILLed, its workers go with it, the master moves their
/// tasks to the other nodes within the session timeout plus a scheduling round, and every line
/// still reaches the sink at least once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_nodes_tasks_move_and_every_line_still_arrives() {
    let mut ensemble = Ensemble::start_with(&["--slots", "2"]);
    ensemble.wait_for_leader().await;
    let run = LinesRun::deploy(&ensemble).await;
    let workers = run.client.list_children("/squall/workers/lines").await.unwrap();
    let victim: u64 = workers.iter().max().unwrap().split('-').next().unwrap().parse().unwrap();
    let killed = ensemble.kill(victim);
    let client = connect(&ensemble.connect_string()).await;
    let deadline = Instant::now() + DEADLINE;
    loop {
        let placed = placement(&client, "lines").await;
        let workers = client.list_children("/squall/workers/lines").await.unwrap_or_default();
        let off_victim = |node: &String| node.split('-').next() != Some(&victim.to_string());
        if placed.is_some_and(|(nodes, _)| !nodes.contains(&victim.to_string()))
            && workers.len() == 3
            && workers.iter().all(off_victim)
        {
            break;
        }
        assert!(Instant::now() < deadline, "node {victim}'s workers did not move: {workers:?}: {}", ensemble.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("node {victim}'s workers run elsewhere {:?} after its SIGKILL", killed.elapsed());
    run.assert_every_line_arrives(&ensemble).await;
    ensemble.assert_running("after a node's SIGKILL");
}

/// Guarantee: when the master's node is SIGKILLed, another node becomes master with a newer
/// epoch, reschedules the dead node's workers from the znodes alone, and the workers on the
/// other nodes run on untouched (same processes); every line still arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_master_is_replaced_and_running_workers_are_not_interrupted() {
    let mut ensemble = Ensemble::start_with(&["--slots", "2"]);
    ensemble.wait_for_leader().await;
    let run = LinesRun::deploy(&ensemble).await;
    let (master, stat) = run.client.get_data("/squall/master/epoch").await.unwrap();
    let master = String::from_utf8(master).unwrap();
    let epoch = stat.version;
    let mut survivors = BTreeMap::new();
    for worker in run.client.list_children("/squall/workers/lines").await.unwrap() {
        if !worker.starts_with(&format!("{master}-")) {
            survivors.insert(worker.clone(), run.pid_of(&worker).await.unwrap());
        }
    }
    ensemble.kill(master.parse().unwrap());
    let client = connect(&ensemble.connect_string()).await;
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Ok((now, stat)) = client.get_data("/squall/master/epoch").await {
            if stat.version > epoch && now != master.as_bytes() {
                break;
            }
        }
        assert!(Instant::now() < deadline, "no new master after node {master}'s SIGKILL: {}", ensemble.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let run = LinesRun { client, ..run };
    run.assert_every_line_arrives(&ensemble).await;
    for (worker, pid) in survivors {
        assert_eq!(run.pid_of(&worker).await, Some(pid), "worker {worker} was restarted");
    }
    ensemble.assert_running("after the master's SIGKILL");
}

/// A process killed when the test ends, passed or failed.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Guarantee: a node started with `--coordinator` hosts no replica and joins an existing
/// ensemble for the cluster roles: it registers, leads as the only master candidate, and runs
/// the workers of a deployed topology, whose lines all arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_joins_an_existing_ensemble_with_coordinator_and_runs_workers() {
    let ensemble = Ensemble::start();
    ensemble.wait_for_leader().await;
    let target = ensemble.connect_string();
    let dir = tempfile::tempdir().unwrap();
    let (_node, _) = join_node_nine(&target, dir.path());
    let input = dir.path().join("in.txt");
    std::fs::write(&input, "a b\nb c\nc d\n").unwrap();
    let out = dir.path().join("out.jsonl");
    let yaml = format!(
        "name: joined\nworkers: 2\nspouts:\n  - {{ id: read, kind: file, args: {{ path: {} }} }}\n\
         bolts:\n  - {{ id: words, kind: split, parallelism: 2, args: {{ field: line }}, inputs: [ {{ from: read }} ] }}\n\
         \x20 - {{ id: out, kind: file_sink, args: {{ path: {} }}, inputs: [ {{ from: words, grouping: global }} ] }}\n",
        input.display(),
        out.display()
    );
    let file = dir.path().join("joined.yaml");
    std::fs::write(&file, yaml).unwrap();
    let client = connect(&target).await;
    let deadline = Instant::now() + DEADLINE;
    while client.list_children("/squall/nodes").await.unwrap_or_default() != ["9"] {
        let log = std::fs::read_to_string(dir.path().join("node9.log")).unwrap_or_default();
        assert!(Instant::now() < deadline, "node 9 did not register: {log}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deployed = squall(&["deploy", file.to_str().unwrap(), "--coordinator", &target]);
    assert!(deployed.status.success(), "{}", String::from_utf8_lossy(&deployed.stderr));
    let deadline = Instant::now() + DEADLINE;
    while std::fs::read_to_string(&out).map(|t| t.lines().count()).unwrap_or(0) < 6 {
        let log = std::fs::read_to_string(dir.path().join("node9.log")).unwrap_or_default();
        assert!(Instant::now() < deadline, "the words did not all arrive: {log}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(client.get_data("/squall/master/epoch").await.unwrap().0, b"9");
}

/// Guarantee: a node whose coordinator is away (the ensemble lost its quorum for a few
/// seconds) keeps its workers running — the same processes — and goes on once the store is
/// back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_keep_running_while_the_coordinator_is_away() {
    let mut ensemble = Ensemble::start();
    ensemble.wait_for_leader().await;
    let target = ensemble.connect_string();
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("node9.log");
    let log = File::create(&log_path).unwrap();
    let worker_port = free_ports(2).port().to_string();
    let _node = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_squall"))
            .args(["node", "--id", "9", "--coordinator", &target, "--slots", "2", "--worker-port", &worker_port])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let yaml = "name: idle\nworkers: 2\nspouts:\n  - { id: gen, kind: generator, args: { rate: 100 } }\n\
                bolts:\n  - { id: drop, kind: filter, args: { field: line, equals: never }, inputs: [ { from: gen } ] }\n";
    let file = dir.path().join("idle.yaml");
    std::fs::write(&file, yaml).unwrap();
    let client = connect(&target).await;
    let deadline = Instant::now() + DEADLINE;
    while client.list_children("/squall/nodes").await.unwrap_or_default() != ["9"] {
        assert!(Instant::now() < deadline, "node 9 did not register");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deployed = squall(&["deploy", file.to_str().unwrap(), "--coordinator", &target]);
    assert!(deployed.status.success(), "{}", String::from_utf8_lossy(&deployed.stderr));
    let pids = |client: zk::Client| async move {
        let mut pids = BTreeMap::new();
        for worker in client.list_children("/squall/workers/idle").await.unwrap_or_default() {
            if let Ok((data, _)) = client.get_data(&format!("/squall/workers/idle/{worker}")).await {
                let about: serde_json::Value = serde_json::from_slice(&data).unwrap();
                pids.insert(worker, about["pid"].as_i64().unwrap());
            }
        }
        pids
    };
    let deadline = Instant::now() + DEADLINE;
    let before = loop {
        let pids = pids(client.clone()).await;
        if pids.len() == 2 {
            break pids;
        }
        assert!(Instant::now() < deadline, "the workers did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    drop(client);

    // The store loses its quorum for longer than the sessions' timeout.
    ensemble.kill(1);
    ensemble.kill(2);
    tokio::time::sleep(Duration::from_secs(4)).await;
    for (worker, pid) in &before {
        assert_eq!(unsafe { libc::kill(*pid as i32, 0) }, 0, "worker {worker} died while the store was away");
    }
    ensemble.spawn(1);
    ensemble.spawn(2);
    ensemble.wait_for_leader().await;
    let client = connect(&ensemble.connect_string()).await;
    let deadline = Instant::now() + DEADLINE;
    loop {
        let now = pids(client.clone()).await;
        if now == before {
            break;
        }
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        assert!(Instant::now() < deadline, "the workers did not come back as they were: {now:?} vs {before:?}: {log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts node 9, which joins `target` with `--coordinator` and 2 slots, serving HTTP on
/// a free port it returns; its log is in `dir`.
fn join_node_nine(target: &str, dir: &std::path::Path) -> (KillOnDrop, SocketAddr) {
    let log = File::create(dir.join("node9.log")).unwrap();
    let worker_port = free_ports(2).port().to_string();
    let http = free_addr();
    let node = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_squall"))
            .args(["node", "--id", "9", "--coordinator", target, "--slots", "2", "--worker-port", &worker_port])
            .args(["--http", &http.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    (node, http)
}

/// The body of `GET path` on `addr`, if it answers 200.
fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    // In two pieces, as a client may send it: the server must wait for the whole line.
    stream.set_nodelay(true).ok()?;
    stream.write_all(b"GET ").ok()?;
    stream.write_all(format!("{path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// What topology `name`'s workers last published as emitted by component `component`.
async fn emitted(client: &zk::Client, name: &str, component: &str) -> u64 {
    let mut total = 0;
    for worker in client.list_children(&format!("/squall/workers/{name}")).await.unwrap_or_default() {
        if let Ok((data, _)) = client.get_data(&format!("/squall/workers/{name}/{worker}")).await {
            let about: serde_json::Value = serde_json::from_slice(&data).unwrap();
            total += about["components"][component]["emitted"].as_u64().unwrap_or(0);
        }
    }
    total
}

/// Guarantee: `deactivate` pauses a running topology's spouts and `activate` resumes them; a
/// live setting changed with `squall config` is applied by the running worker, and `status`
/// shows the version each worker applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deactivate_pauses_the_spouts_and_activate_resumes_them() {
    let ensemble = Ensemble::start();
    ensemble.wait_for_leader().await;
    let target = ensemble.connect_string();
    let dir = tempfile::tempdir().unwrap();
    let (_node, http) = join_node_nine(&target, dir.path());
    let yaml = "name: paced\nworkers: 1\nspouts:\n  - { id: gen, kind: generator, args: { rate: 500 } }\n\
                bolts:\n  - { id: drop, kind: filter, args: { field: line, equals: never }, inputs: [ { from: gen } ] }\n";
    let file = dir.path().join("paced.yaml");
    std::fs::write(&file, yaml).unwrap();
    let client = connect(&target).await;
    let deadline = Instant::now() + DEADLINE;
    while client.list_children("/squall/nodes").await.unwrap_or_default() != ["9"] {
        assert!(Instant::now() < deadline, "node 9 did not register");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deployed = squall(&["deploy", file.to_str().unwrap(), "--coordinator", &target]);
    assert!(deployed.status.success(), "{}", String::from_utf8_lossy(&deployed.stderr));
    let deadline = Instant::now() + DEADLINE;
    while emitted(&client, "paced", "gen").await == 0 {
        assert!(Instant::now() < deadline, "the spout never emitted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let paused = squall(&["deactivate", "paced", "--coordinator", &target]);
    assert!(paused.status.success(), "{}", String::from_utf8_lossy(&paused.stderr));
    // Paused once two published counts 2.5 s apart are equal.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let before = emitted(&client, "paced", "gen").await;
        tokio::time::sleep(Duration::from_millis(2500)).await;
        if emitted(&client, "paced", "gen").await == before {
            break;
        }
        assert!(Instant::now() < deadline, "the spout did not pause");
    }
    let stopped_at = emitted(&client, "paced", "gen").await;
    // The node's HTTP endpoint reports the same counts.
    let metrics = tokio::task::spawn_blocking(move || http_get(http, "/metrics")).await.unwrap().unwrap();
    let line = format!("squall_tuples_emitted_total{{node=\"9\",topology=\"paced\",component=\"gen\"}} {stopped_at}");
    assert!(metrics.lines().any(|l| l == line), "{line} not in:\n{metrics}");
    let status = tokio::task::spawn_blocking(move || http_get(http, "/status")).await.unwrap().unwrap();
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["workers"].as_array().unwrap().len(), 1, "{status}");
    let resumed = squall(&["activate", "paced", "--coordinator", &target]);
    assert!(resumed.status.success(), "{}", String::from_utf8_lossy(&resumed.stderr));
    let deadline = Instant::now() + DEADLINE;
    while emitted(&client, "paced", "gen").await <= stopped_at {
        assert!(Instant::now() < deadline, "the spout did not resume");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A live setting reaches the running worker, and `status` says which version it applied.
    let refused = squall(&["config", "paced", "workers=3", "--coordinator", &target]);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("cannot change while the topology runs"), "{refused:?}");
    for (setting, version) in [("max_spout_pending=50", "v0"), ("max_spout_pending=80", "v1")] {
        let changed = squall(&["config", "paced", setting, "--coordinator", &target]);
        assert!(changed.status.success(), "{}", String::from_utf8_lossy(&changed.stderr));
        let deadline = Instant::now() + DEADLINE;
        loop {
            let status = squall(&["status", "paced", "--coordinator", &target]);
            let status = String::from_utf8_lossy(&status.stdout).to_string();
            if status.contains(&format!("live configuration applied by each worker: 9-0 {version}")) {
                break;
            }
            assert!(Instant::now() < deadline, "{setting} was not applied: {status}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
