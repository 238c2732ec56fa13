//! A three-replica ensemble of real `squall node` processes on 127.0.0.1, SIGKILLed and restarted
//! for real, driven by `zookeeper-client`: the leader's loss under write load, a full restart,
//! and a session that moves to another replica when its own dies.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zookeeper_client as zk;

use common::*;

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
