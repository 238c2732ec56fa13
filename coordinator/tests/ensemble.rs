//! A three-replica ensemble in one process, over TCP on 127.0.0.1, driven by `zookeeper-client`:
//! writes through followers, reads and watches on every replica, and the leader's loss.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Ensemble, client, persistent};
use zookeeper_client as zk;

/// Guarantee: a write made through any replica is applied once, in one order, and visible on
/// every replica; a watch set on one replica fires for a change made through another.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_through_followers_are_seen_everywhere() {
    let ensemble = Ensemble::start().await;
    let leader = ensemble.leader();
    let followers: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    let writer = client(&ensemble.addr(followers[0]).to_string()).await;
    let watcher = client(&ensemble.addr(followers[1]).to_string()).await;
    let reader = client(&ensemble.addr(leader).to_string()).await;

    let (_, _, watch) = watcher.get_and_watch_children("/").await.unwrap();
    writer.create("/shared", b"one", &persistent()).await.unwrap();
    let event = watch.changed().await;
    assert_eq!(event.event_type, zk::EventType::NodeChildrenChanged);
    // The writer's own replica answers only after applying its write.
    assert_eq!(writer.get_data("/shared").await.unwrap().0, b"one");
    // Others catch up; `sync` makes a replica as recent as the leader.
    reader.sync("/shared").await.unwrap();
    assert_eq!(reader.get_data("/shared").await.unwrap().0, b"one");
    watcher.sync("/shared").await.unwrap();
    assert_eq!(watcher.get_data("/shared").await.unwrap().0, b"one");

    let seq = zk::CreateMode::PersistentSequential.with_acls(zk::Acls::anyone_all());
    let mut numbers = BTreeSet::new();
    for client in [&writer, &watcher, &reader, &writer, &watcher, &reader] {
        let (_, n) = client.create("/shared/s-", b"", &seq).await.unwrap();
        assert!(numbers.insert(n.into_i64()), "a sequence number was handed out twice");
    }
    assert_eq!(numbers, (0..6).collect());
    for replica in ensemble.replicas.into_values() {
        replica.shutdown().await;
    }
}

/// Guarantee: when the leader is lost, a new one is elected, writes resume, every write that
/// was acknowledged is present on the survivors, and sessions connected to survivors live on
/// with their ephemerals.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_leaders_loss_loses_no_acknowledged_write() {
    let mut ensemble = Ensemble::start().await;
    let leader = ensemble.leader();
    let survivor = (1..=3).find(|id| *id != leader).unwrap();
    let setup = client(&ensemble.addr(survivor).to_string()).await;
    setup.create("/load", b"", &persistent()).await.unwrap();
    let ephemeral = zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all());
    setup.create("/load/alive", b"", &ephemeral).await.unwrap();

    // Writers connected to every replica, each recording what was acknowledged.
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..6 {
        let addrs = ensemble.all_addrs();
        let (acked, stop) = (acked.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let zk = client(&addrs).await;
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let path = format!("/load/w{w}-{i}");
                if zk.create(&path, b"x", &persistent()).await.is_ok() {
                    acked.lock().unwrap().insert(path);
                }
                i += 1;
            }
        }));
    }
    let wait_for = |n: usize| {
        let acked = acked.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            while acked.lock().unwrap().len() < n {
                assert!(Instant::now() < deadline, "writes stalled at {}", acked.lock().unwrap().len());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    wait_for(200).await;
    let old = ensemble.replicas.remove(&leader).unwrap();
    old.shutdown().await;
    let before = acked.lock().unwrap().len();
    wait_for(before + 200).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for writer in writers {
        writer.await.unwrap();
    }

    let acked = acked.lock().unwrap().clone();
    for (id, replica) in &ensemble.replicas {
        let zk = client(&replica.client_addr().to_string()).await;
        zk.sync("/load").await.unwrap();
        let present: BTreeSet<String> =
            zk.list_children("/load").await.unwrap().into_iter().map(|c| format!("/load/{c}")).collect();
        let missing: Vec<_> = acked.difference(&present).take(5).collect();
        assert!(missing.is_empty(), "replica {id} lost acknowledged writes, e.g. {missing:?}");
        assert!(present.contains("/load/alive"), "a live session's ephemeral vanished on replica {id}");
    }
    assert!(acked.len() >= 400);
    for replica in ensemble.replicas.into_values() {
        replica.shutdown().await;
    }
}

/// Guarantee: a replica cut off from the majority stops serving, as ZooKeeper's servers do —
/// its clients' connections close, new sessions are refused, `srvr` says it is not serving —
/// instead of answering from an ever older state while its clients' sessions expire on the
/// majority's side; once a quorum is back it serves again and its clients' sessions live on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_without_a_quorum_stops_serving_until_it_has_one() {
    // Sessions of up to 10 s: the client must not give its session up (after 1.4 timeouts
    // without a server) while the test stops two replicas and restarts one.
    let mut ensemble = Ensemble::start_with_tick(Duration::from_millis(500)).await;
    let leader = ensemble.leader();
    let isolated = (1..=3).find(|id| *id != leader).unwrap();
    let other = (1..=3).find(|id| *id != leader && *id != isolated).unwrap();
    let addr = ensemble.addr(isolated);
    let kept = common::client_with_timeout(&addr.to_string(), Duration::from_secs(10)).await;
    let ephemeral = zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all());
    kept.create("/mine", b"", &ephemeral).await.unwrap();
    let session = kept.session_id();
    let mut state = kept.state_watcher();

    ensemble.stop(leader).await;
    ensemble.stop(other).await;
    assert_stops_serving(addr, &mut state).await;

    ensemble.restart(other).await;
    common::eventually("the isolated replica to serve again", || async {
        !common::four_letter(addr, "srvr").await.contains("not currently serving")
    })
    .await;
    common::eventually("the old session to reconnect and read", || async {
        matches!(kept.check_stat("/mine").await, Ok(Some(_)))
    })
    .await;
    assert_eq!(kept.session_id(), session, "the session survived");
    ensemble.shutdown().await;
}

/// Guarantee: a leader whose followers are gone stops serving its clients too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_without_a_quorum_stops_serving() {
    let mut ensemble = Ensemble::start().await;
    let leader = ensemble.leader();
    let addr = ensemble.addr(leader);
    let kept = client(&addr.to_string()).await;
    kept.create("/before", b"", &persistent()).await.unwrap();
    let mut state = kept.state_watcher();
    for id in (1..=3).filter(|id| *id != leader) {
        ensemble.stop(id).await;
    }
    assert_stops_serving(addr, &mut state).await;
    ensemble.shutdown().await;
}

/// Waits until the replica at `addr` says it is not serving and the client whose state is
/// `state` lost its connection, then checks that a new session there is refused.
async fn assert_stops_serving(addr: std::net::SocketAddr, state: &mut zk::StateWatcher) {
    let started = Instant::now();
    tokio::time::timeout(common::DEADLINE, async { while state.changed().await != zk::SessionState::Disconnected {} })
        .await
        .expect("the client's connection to the replica without a quorum is closed");
    let disconnected_after = started.elapsed();
    common::eventually("srvr to say the replica is not serving", || async {
        common::four_letter(addr, "srvr").await.contains("not currently serving")
    })
    .await;
    let attempt = tokio::time::timeout(
        Duration::from_secs(2),
        zk::Client::connector().with_session_timeout(Duration::from_secs(2)).connect(&addr.to_string()),
    )
    .await;
    assert!(!matches!(attempt, Ok(Ok(_))), "a new session was opened on a replica without a quorum");
    assert!(disconnected_after < Duration::from_secs(5), "took {disconnected_after:?} to notice");
}

/// Guarantee: a session's writes sent without waiting for replies are applied in the order it
/// sent them and answered in that order, whether its replica leads or forwards them: each
/// versioned setData expects the version the one before it made, and sequence numbers follow
/// the order of the creates.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sessions_pipelined_writes_apply_in_send_order_through_any_replica() {
    const WRITES: i32 = 300;
    let ensemble = Ensemble::start().await;
    let leader = ensemble.leader();
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let sequential = zk::CreateMode::PersistentSequential.with_acls(zk::Acls::anyone_all());
    for id in [follower, leader] {
        let session = client(&ensemble.addr(id).to_string()).await;
        let root = format!("/order-{id}");
        session.create(&root, b"", &persistent()).await.unwrap();
        session.create(&format!("{root}/v"), b"", &persistent()).await.unwrap();
        // Every request is sent when its method is called; none is awaited until all are out.
        let (value, sequence) = (format!("{root}/v"), format!("{root}/s-"));
        let mut sets = Vec::new();
        let mut creates = Vec::new();
        for i in 0..WRITES {
            sets.push(session.set_data(&value, i.to_string().as_bytes(), Some(i)));
            creates.push(session.create(&sequence, b"", &sequential));
        }
        let (sets, creates) =
            futures::future::join(futures::future::join_all(sets), futures::future::join_all(creates)).await;
        for (i, set) in sets.into_iter().enumerate() {
            assert_eq!(set.unwrap().version, i as i32 + 1, "set {i} through replica {id}");
        }
        for (i, create) in creates.into_iter().enumerate() {
            // `v` was the root's first child: the numbers start at 1.
            assert_eq!(create.unwrap().1.into_i64(), i as i64 + 1, "create {i} through replica {id}");
        }
    }
    ensemble.shutdown().await;
}

/// Guarantee: a session's writes through a follower are applied in the order it sent them,
/// however many it has in flight: followers forward several batches at once to the leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sessions_pipelined_writes_through_a_follower_apply_in_order() {
    const SESSIONS: usize = 6;
    const WRITES: usize = 300;
    let ensemble = Ensemble::start().await;
    let leader = ensemble.leader();
    let followers: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    let mut writers = Vec::new();
    for s in 0..SESSIONS {
        let writer = client(&ensemble.addr(followers[s % 2]).to_string()).await;
        writer.create(&format!("/ordered-{s}"), b"", &persistent()).await.unwrap();
        writers.push(writer);
    }
    let sessions = writers.iter().enumerate().map(|(s, writer)| async move {
        let path = format!("/ordered-{s}");
        let writes = (0..WRITES).map(|i| writer.set_data(&path, i.to_string().into_bytes().leak(), None));
        futures::future::join_all(writes).await
    });
    for (s, results) in futures::future::join_all(sessions).await.into_iter().enumerate() {
        let versions: Vec<i32> = results.into_iter().map(|r| r.unwrap().version).collect();
        assert_eq!(versions, (1..=WRITES as i32).collect::<Vec<_>>(), "session {s}'s writes were reordered");
        let (data, stat) = writers[s].get_data(&format!("/ordered-{s}")).await.unwrap();
        assert_eq!((data, stat.version), ((WRITES - 1).to_string().into_bytes(), WRITES as i32));
    }
    for replica in ensemble.replicas.into_values() {
        replica.shutdown().await;
    }
}

/// Guarantee: a replica that was down while the others wrote a snapshot and purged the log
/// behind it catches up from the snapshot (read back from the leader's disk) and the log after.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_behind_the_purged_log_catches_up_from_a_snapshot() {
    let mut ensemble = Ensemble::start().await;
    let leader = ensemble.leader();
    let behind = (1..=3).find(|id| *id != leader).unwrap();
    ensemble.stop(behind).await;
    let writer = client(&ensemble.addr(leader).to_string()).await;
    writer.create("/bulk", b"", &persistent()).await.unwrap();
    // More than a snapshot's `SNAPSHOT_EVERY` (5000) entries plus the 1000 kept behind it.
    let names: Vec<String> = (0..7000).map(|i| format!("/bulk/n{i}")).collect();
    for chunk in names.chunks(200) {
        let creates: Vec<_> = chunk.iter().map(|name| writer.create(name, b"v", &persistent())).collect();
        for created in futures::future::join_all(creates).await {
            created.unwrap();
        }
    }
    ensemble.restart_serving(behind).await;
    // Caught up (a session created through it waits until it is, longer than a client's
    // connect timeout on a loaded machine).
    let target = ensemble.replicas[&leader].last_zxid();
    common::eventually("the restarted replica to catch up", || async {
        ensemble.replicas[&behind].last_zxid() >= target
    })
    .await;
    let reader = client(&ensemble.addr(behind).to_string()).await;
    common::eventually("the restarted replica to hold every znode", || async {
        reader.sync("/bulk").await.is_ok()
            && matches!(reader.get_children("/bulk").await, Ok((children, _)) if children.len() == names.len())
    })
    .await;
    ensemble.shutdown().await;
}
