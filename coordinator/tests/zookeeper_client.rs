//! The coordinator as a ZooKeeper client sees it: a one-replica store started on loopback and
//! driven by `zookeeper-client`, the same client the runtime uses.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

mod common;

use common::{eventually, four_letter, persistent, start_standalone};
use squall_coordinator::replica::Replica;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zookeeper_client as zk;

async fn start(dir: &Path) -> Replica {
    start_standalone(dir).await
}

async fn client(addr: SocketAddr) -> zk::Client {
    common::client(&addr.to_string()).await
}

/// Guarantee: create, getData, setData with versions, getChildren and delete behave as on
/// ZooKeeper, with its error codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn znode_operations_behave_as_on_zookeeper() {
    let dir = tempfile::tempdir().unwrap();
    let replica = start(dir.path()).await;
    let zk = client(replica.client_addr()).await;

    let (stat, _) = zk.create("/app", b"v1", &persistent()).await.unwrap();
    assert_eq!(stat.version, 0);
    assert_eq!(zk.get_data("/app").await.unwrap().0, b"v1");
    assert!(matches!(zk.create("/app", b"", &persistent()).await, Err(zk::Error::NodeExists)));
    assert!(matches!(zk.create("/missing/child", b"", &persistent()).await, Err(zk::Error::NoNode)));

    let stat = zk.set_data("/app", b"v2", Some(0)).await.unwrap();
    assert_eq!(stat.version, 1);
    assert!(matches!(zk.set_data("/app", b"v3", Some(0)).await, Err(zk::Error::BadVersion)));

    let seq = zk::CreateMode::PersistentSequential.with_acls(zk::Acls::anyone_all());
    let (_, first) = zk.create("/app/job-", b"", &seq).await.unwrap();
    let (_, second) = zk.create("/app/job-", b"", &seq).await.unwrap();
    assert_eq!(first.into_i64(), 0);
    assert_eq!(second.into_i64(), 1);
    let mut children = zk.list_children("/app").await.unwrap();
    children.sort();
    assert_eq!(children, vec!["job-0000000000", "job-0000000001"]);

    assert!(matches!(zk.delete("/app", None).await, Err(zk::Error::NotEmpty)));
    zk.delete("/app/job-0000000000", None).await.unwrap();
    zk.delete("/app/job-0000000001", Some(0)).await.unwrap();
    zk.delete("/app", None).await.unwrap();
    assert_eq!(zk.check_stat("/app").await.unwrap(), None);
    replica.shutdown().await;
}

/// Guarantee: one-shot data, child and exists watches fire once with ZooKeeper's event types,
/// and a persistent-recursive watch sees every change below its path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_fire_with_zookeeper_event_types() {
    let dir = tempfile::tempdir().unwrap();
    let replica = start(dir.path()).await;
    let zk = client(replica.client_addr()).await;
    let other = client(replica.client_addr()).await;

    let (_, exists) = zk.check_and_watch_stat("/w").await.unwrap();
    let mut recursive = zk.watch("/w", zk::AddWatchMode::PersistentRecursive).await.unwrap();
    other.create("/w", b"", &persistent()).await.unwrap();
    let event = exists.changed().await;
    assert_eq!((event.event_type, event.path.as_str()), (zk::EventType::NodeCreated, "/w"));

    let (_, _, data) = zk.get_and_watch_data("/w").await.unwrap();
    let (_, _, children) = zk.get_and_watch_children("/w").await.unwrap();
    other.set_data("/w", b"x", None).await.unwrap();
    let event = data.changed().await;
    assert_eq!((event.event_type, event.path.as_str()), (zk::EventType::NodeDataChanged, "/w"));
    other.create("/w/c", b"", &persistent()).await.unwrap();
    let event = children.changed().await;
    assert_eq!((event.event_type, event.path.as_str()), (zk::EventType::NodeChildrenChanged, "/w"));

    let mut seen = Vec::new();
    for _ in 0..3 {
        let event = recursive.changed().await;
        seen.push((event.event_type, event.path));
    }
    assert_eq!(
        seen,
        vec![
            (zk::EventType::NodeCreated, "/w".to_string()),
            (zk::EventType::NodeDataChanged, "/w".to_string()),
            (zk::EventType::NodeCreated, "/w/c".to_string()),
        ]
    );
    replica.shutdown().await;
}

/// Guarantee: a session's ephemerals go when it closes, and when it expires after its client
/// vanished without closing it; watchers see NodeDeleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ephemerals_go_with_their_session_closed_or_expired() {
    let dir = tempfile::tempdir().unwrap();
    let replica = start(dir.path()).await;
    let watcher = client(replica.client_addr()).await;

    let owner = client(replica.client_addr()).await;
    let ephemeral = zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all());
    owner.create("/closed", b"", &ephemeral).await.unwrap();
    assert_eq!(owner.list_ephemerals("/").await.unwrap(), vec!["/closed"]);
    let (_, _, gone) = watcher.get_and_watch_data("/closed").await.unwrap();
    drop(owner);
    let event = gone.changed().await;
    assert_eq!(event.event_type, zk::EventType::NodeDeleted);

    // A client that vanishes without closeSession: a raw connection that creates an
    // ephemeral, then is dropped.
    let started = Instant::now();
    raw_session_with_ephemeral(replica.client_addr(), "/expired").await;
    assert!(watcher.check_stat("/expired").await.unwrap().is_some());
    eventually("the expired session's ephemeral to go", || async {
        watcher.check_stat("/expired").await.unwrap().is_none()
    })
    .await;
    assert!(started.elapsed() >= Duration::from_millis(2000), "expired before its 2 s timeout");
    replica.shutdown().await;
}

/// Opens a session with a 2 s timeout over a raw socket, creates an ephemeral at `path`, and
/// closes the socket without closing the session.
async fn raw_session_with_ephemeral(addr: SocketAddr, path: &str) {
    use squall_coordinator::proto::{self, ConnectRequest, Request, records::CreateRequest};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut out = Vec::new();
    let connect = ConnectRequest {
        protocol_version: 0,
        last_zxid_seen: 0,
        timeout: 2000,
        session_id: 0,
        passwd: vec![0; 16],
        read_only: Some(false),
    };
    connect.encode(&mut out);
    let create =
        CreateRequest { path: path.into(), data: vec![], acl: squall_coordinator::Acl::open_unsafe(), flags: 1 };
    proto::encode_request(&mut out, 1, &Request::Create(create));
    stream.write_all(&out).await.unwrap();
    for _ in 0..2 {
        let len = stream.read_i32().await.unwrap();
        let mut frame = vec![0; len as usize];
        stream.read_exact(&mut frame).await.unwrap();
    }
}

/// Guarantee: every acknowledged write survives a restart of the replica from its data
/// directory, sequential counters included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let replica = start(dir.path()).await;
    let zk = client(replica.client_addr()).await;
    zk.create("/durable", b"", &persistent()).await.unwrap();
    for i in 0..200 {
        zk.create(&format!("/durable/n{i}"), format!("{i}").as_bytes(), &persistent()).await.unwrap();
    }
    let seq = zk::CreateMode::PersistentSequential.with_acls(zk::Acls::anyone_all());
    let (_, first) = zk.create("/durable/s-", b"", &seq).await.unwrap();
    // The suffix is the parent's count of child creates, as in ZooKeeper.
    assert_eq!(first.into_i64(), 200);
    drop(zk);
    replica.shutdown().await;

    let replica = start(dir.path()).await;
    let zk = client(replica.client_addr()).await;
    assert_eq!(zk.list_children("/durable").await.unwrap().len(), 201);
    assert_eq!(zk.get_data("/durable/n199").await.unwrap().0, b"199");
    let (_, next) = zk.create("/durable/s-", b"", &seq).await.unwrap();
    assert_eq!(next.into_i64(), 201, "the sequence counter survived");
    replica.shutdown().await;
}

/// Guarantee: a multi applies all its ops or none, with ZooKeeper's per-op results.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_is_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let replica = start(dir.path()).await;
    let zk = client(replica.client_addr()).await;
    let mut writer = zk.new_multi_writer();
    writer.add_create("/m1", b"", &persistent()).unwrap();
    writer.add_create("/m2", b"", &persistent()).unwrap();
    writer.commit().await.unwrap();
    let mut writer = zk.new_multi_writer();
    writer.add_create("/m3", b"", &persistent()).unwrap();
    writer.add_delete("/absent", None).unwrap();
    let err = writer.commit().await.unwrap_err();
    assert!(matches!(err, zk::MultiWriteError::OperationFailed { index: 1, source: zk::Error::NoNode }), "{err:?}");
    assert!(zk.check_stat("/m3").await.unwrap().is_none(), "the failed multi left /m3 behind");
    assert!(zk.check_stat("/m2").await.unwrap().is_some());
    replica.shutdown().await;
}

/// Guarantee: the four-letter words answer on the client port, in ZooKeeper's format.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_letter_words_answer_on_the_client_port() {
    let dir = tempfile::tempdir().unwrap();
    let replica = start(dir.path()).await;
    let addr = replica.client_addr();
    assert_eq!(four_letter(addr, "ruok").await, "imok");
    let srvr = four_letter(addr, "srvr").await;
    assert!(srvr.starts_with("Zookeeper version: 3.8"), "{srvr}");
    assert!(srvr.contains("Mode: standalone"), "{srvr}");
    assert!(four_letter(addr, "mntr").await.contains("zk_znode_count\t"));
    assert!(four_letter(addr, "envi").await.contains("zookeeper.version=3.8"));
    assert!(four_letter(addr, "conf").await.contains(&format!("clientPort={}", addr.port())));
    replica.shutdown().await;
}

/// Guarantee: a malformed or oversized frame closes that connection only; the server goes on
/// serving everyone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_close_only_their_connection() {
    let dir = tempfile::tempdir().unwrap();
    let replica = start(dir.path()).await;
    let zk = client(replica.client_addr()).await;
    zk.create("/alive", b"", &persistent()).await.unwrap();
    for garbage in [vec![0x7f, 0xff, 0xff, 0xff, 1, 2, 3], vec![0, 0, 0, 4, 9, 9, 9, 9], vec![0xff; 64]] {
        let mut stream = tokio::net::TcpStream::connect(replica.client_addr()).await.unwrap();
        stream.write_all(&garbage).await.unwrap();
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
        assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "the server kept a bad connection open: {read:?}");
    }
    assert!(zk.check_stat("/alive").await.unwrap().is_some());
    replica.shutdown().await;
}
