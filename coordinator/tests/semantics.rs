//! ZooKeeper's semantics as its users rely on them, checked against a one-replica store: through
//! `zookeeper-client` (the client the runtime uses) for what a client can ask, and over raw
//! sockets for what no well-behaved client sends or where the client would hide the server's
//! answer. Every create mode, versions and Stat fields, ACLs, each watch trigger rule and the
//! event-before-data ordering, multi and multiRead, sessions across reconnects and expiry, and
//! malformed input.
//!
//! Each test names the guarantee it checks. Waiting is always a poll with a deadline.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::FutureExt;
use squall_coordinator::acl::generate_digest;
use squall_coordinator::jute::{JUTE_MAX_BUFFER, split_frame};
use squall_coordinator::proto::records::{
    AddWatchRequest, AuthPacket, CheckVersionRequest, CreateRequest, DeleteRequest, ExistsRequest, GetChildrenRequest,
    GetDataRequest, SetDataRequest, SetWatches2, SyncRequest, add_watch_mode, event_type,
};
use squall_coordinator::proto::{self, ConnectRequest, ConnectResponse, MultiOp, Request, Response, WatcherEvent};
use squall_coordinator::replica::Replica;
use squall_coordinator::{Acl, KeeperError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use zookeeper_client as zk;

mod common;

use common::{DEADLINE, eventually, four_letter, start_standalone};

async fn start(dir: &Path) -> Replica {
    start_standalone(dir).await
}

/// The connector every client here uses: a 2 s session, the replica's maximum.
fn connector() -> zk::Connector {
    zk::Client::connector().with_session_timeout(Duration::from_secs(2))
}

async fn connect(addr: SocketAddr) -> zk::Client {
    connector().connect(&addr.to_string()).await.expect("client connects")
}

fn options(mode: zk::CreateMode) -> zk::CreateOptions<'static> {
    mode.with_acls(zk::Acls::anyone_all())
}

fn open() -> zk::CreateOptions<'static> {
    options(zk::CreateMode::Persistent)
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Awaits `future`, failing the test after [`DEADLINE`].
async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, future).await.unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// The next event of a one-shot watcher as (type, path).
async fn fired(what: &str, watcher: zk::OneshotWatcher) -> (zk::EventType, String) {
    let event = within(what, watcher.changed()).await;
    (event.event_type, event.path)
}

/// A number from the `mntr` four-letter word.
async fn mntr(addr: SocketAddr, key: &str) -> i64 {
    let answer = four_letter(addr, "mntr").await;
    let line = answer.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix('\t')).expect(key);
    line.parse().unwrap()
}

/// How long an auth may take to be answered.
const AUTH_DEADLINE: Duration = Duration::from_secs(3);

/// Authenticates the session as `user:password` with the digest scheme. Bounded: a reply under
/// another xid than the request's sends the client into a reconnect loop rather than an error.
async fn add_digest(client: &zk::Client, user_password: &str) {
    match tokio::time::timeout(AUTH_DEADLINE, client.auth("digest", user_password.as_bytes())).await {
        Ok(result) => result.unwrap(),
        Err(_) => panic!("auth as {user_password} got no answer the client recognized in {AUTH_DEADLINE:?}"),
    }
}

fn assert_err<T: std::fmt::Debug>(result: Result<T, zk::Error>, expected: zk::Error, what: &str) {
    match result {
        Err(e) if e == expected => {}
        other => panic!("{what}: expected {expected:?}, got {other:?}"),
    }
}

// ---- create modes --------------------------------------------------------------------------

/// Guarantee: ephemeral-sequential nodes take the parent's next sequence number, whichever
/// session creates them, belong to their session (ephemeralOwner) and go when it closes; the
/// numbering goes on from the parent's count of creates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ephemeral_sequential_nodes_are_numbered_by_their_parent_and_owned_by_their_session() {
    let dir = tempfile::tempdir().unwrap();
    let replica = start(dir.path()).await;
    let a = connect(replica.client_addr()).await;
    let b = connect(replica.client_addr()).await;
    a.create("/locks", b"", &open()).await.unwrap();
    let lock = options(zk::CreateMode::EphemeralSequential);
    let (stat_a0, a0) = a.create("/locks/lock-", b"a", &lock).await.unwrap();
    let (_, b0) = b.create("/locks/lock-", b"b", &lock).await.unwrap();
    let (_, a1) = a.create("/locks/lock-", b"a", &lock).await.unwrap();
    assert_eq!((a0.into_i64(), b0.into_i64(), a1.into_i64()), (0, 1, 2));
    assert_eq!(stat_a0.ephemeral_owner, a.session_id().0);
    let b_stat = b.check_stat("/locks/lock-0000000001").await.unwrap().unwrap();
    assert_eq!(b_stat.ephemeral_owner, b.session_id().0);

    // What a lock recipe waits on: its predecessor's deletion, and the change of the children.
    let (_, predecessor) = b.check_and_watch_stat("/locks/lock-0000000000").await.unwrap();
    let (_, _, children) = b.get_and_watch_children("/locks").await.unwrap();
    drop(a);
    let gone = (zk::EventType::NodeDeleted, "/locks/lock-0000000000".to_string());
    assert_eq!(fired("the predecessor to go with its session", predecessor).await, gone);
    let changed = (zk::EventType::NodeChildrenChanged, "/locks".to_string());
    assert_eq!(fired("the children to change", children).await, changed);
    eventually("a's ephemerals to go with its session", || async {
        b.list_children("/locks").await.unwrap() == vec!["lock-0000000001"]
    })
    .await;
    let (_, next) = b.create("/locks/lock-", b"", &lock).await.unwrap();
    assert_eq!(next.into_i64(), 3, "sequence numbers are never reused");
    replica.shutdown().await;
}

/// Guarantee: an ephemeral node cannot have children, whatever the child's mode
/// (NoChildrenForEphemerals), and the refused creates leave no trace on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ephemerals_cannot_have_children() {
    let dir = tempfile::tempdir().unwrap();
    let replica = start(dir.path()).await;
    let zk = connect(replica.client_addr()).await;
    zk.create("/eph", b"", &options(zk::CreateMode::Ephemeral)).await.unwrap();
    let modes = [
        (zk::CreateMode::Persistent, "/eph/p"),
        (zk::CreateMode::Ephemeral, "/eph/e"),
        (zk::CreateMode::PersistentSequential, "/eph/ps-"),
        (zk::CreateMode::EphemeralSequential, "/eph/es-"),
        (zk::CreateMode::Container, "/eph/c"),
    ];
    for (mode, path) in modes {
        assert_err(zk.create(path, b"", &options(mode)).await, zk::Error::NoChildrenForEphemerals, path);
    }
    let ttl = open().with_ttl(Duration::from_secs(10));
    assert_err(zk.create("/eph/ttl", b"", &ttl).await, zk::Error::NoChildrenForEphemerals, "TTL child");
    let (children, stat) = zk.get_children("/eph").await.unwrap();
    assert!(children.is_empty());
    assert_eq!((stat.cversion, stat.num_children), (0, 0), "a refused create counts nothing");
    replica.shutdown().await;
}

/// Guarantee: the server deletes a container once its last child is gone (watchers see
/// NodeDeleted); a container that never had a child, or still has one, stays. createContainer
/// returns the new node's Stat, which shows no owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_is_deleted_after_its_last_child_goes() {
    let dir = tempfile::tempdir().unwrap();
    let replica = start(dir.path()).await;
    let zk = connect(replica.client_addr()).await;
    let watcher = connect(replica.client_addr()).await;
    let container = options(zk::CreateMode::Container);

    let (stat, _) = zk.create("/used", b"c", &container).await.unwrap();
    assert_eq!(Some(stat), zk.check_stat("/used").await.unwrap(), "createContainer returns the node's Stat");
    assert_eq!((stat.ephemeral_owner, stat.data_length), (0, 1));
    zk.create("/never-used", b"", &container).await.unwrap();
    zk.create("/kept", b"", &container).await.unwrap();
    zk.create("/kept/child", b"", &open()).await.unwrap();
    zk.create("/used/a", b"", &open()).await.unwrap();
    zk.create("/used/b", b"", &open()).await.unwrap();
    zk.delete("/used/a", None).await.unwrap();
    assert!(zk.check_stat("/used").await.unwrap().is_some(), "a container with a child left stays");

    let (_, _, gone) = watcher.get_and_watch_data("/used").await.unwrap();
    zk.delete("/used/b", None).await.unwrap();
    assert_eq!(fired("the emptied container to go", gone).await, (zk::EventType::NodeDeleted, "/used".into()));
    // The leader's scan that removed /used saw the other two and left them.
    assert!(zk.check_stat("/never-used").await.unwrap().is_some(), "a container that never had a child stays");
    assert!(zk.check_stat("/kept").await.unwrap().is_some(), "a container with a child stays");
    replica.shutdown().await;
}

/// Guarantee: a persistent or persistent-sequential node with a TTL is deleted once it has no
/// children and has not changed for its TTL, not before; one with a child stays until the child
/// goes. createTTL returns the new node's Stat, which shows no owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_nodes_are_deleted_once_childless_and_unchanged_for_their_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let replica = start(dir.path()).await;
    let zk = connect(replica.client_addr()).await;
    let watcher = connect(replica.client_addr()).await;
    let ttl = Duration::from_millis(300);
    let with_ttl = open().with_ttl(ttl);
    let sequential_with_ttl = options(zk::CreateMode::PersistentSequential).with_ttl(ttl);

    // Older than /ttl: when /ttl goes, this one is past its TTL too, and only its child keeps it.
    zk.create("/ttl-parent", b"", &with_ttl).await.unwrap();
    zk.create("/ttl-parent/child", b"", &open()).await.unwrap();
    let created_at = Instant::now();
    let (stat, _) = zk.create("/ttl", b"x", &with_ttl).await.unwrap();
    assert_eq!(Some(stat), zk.check_stat("/ttl").await.unwrap(), "createTTL returns the node's Stat");
    assert_eq!(stat.ephemeral_owner, 0);
    let (_, seq) = zk.create("/ttl-seq-", b"", &sequential_with_ttl).await.unwrap();
    let seq_path = format!("/ttl-seq-{seq}");
    assert!(zk.check_stat(&seq_path).await.unwrap().is_some());

    let (_, _, gone) = watcher.get_and_watch_data("/ttl").await.unwrap();
    assert_eq!(fired("the TTL node to go", gone).await, (zk::EventType::NodeDeleted, "/ttl".into()));
    // Less 10 ms: the server stamps and compares wall-clock milliseconds.
    let lived = created_at.elapsed();
    assert!(lived >= ttl - Duration::from_millis(10), "deleted {lived:?} after its creation, before its TTL");
    eventually("the sequential TTL node to go", || async { zk.check_stat(&seq_path).await.unwrap().is_none() }).await;
    assert!(zk.check_stat("/ttl-parent").await.unwrap().is_some(), "a TTL node with a child stays");

    zk.delete("/ttl-parent/child", None).await.unwrap();
    eventually("the TTL node to go once childless", || async { zk.check_stat("/ttl-parent").await.unwrap().is_none() })
        .await;
    replica.shutdown().await;
}

// ---- versions and Stat ---------------------------------------------------------------------

/// Guarantee: delete and setData with a version other than the node's fail with BadVersion and
/// change nothing; no version (-1) matches any.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_version_fails_with_bad_version_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let replica = start(dir.path()).await;
    let zk = connect(replica.client_addr()).await;
    zk.create("/v", b"a", &open()).await.unwrap();
    assert_eq!(zk.set_data("/v", b"b", Some(0)).await.unwrap().version, 1);

    assert_err(zk.delete("/v", Some(0)).await, zk::Error::BadVersion, "delete at a stale version");
    assert_err(zk.set_data("/v", b"c", Some(7)).await, zk::Error::BadVersion, "setData at a wrong version");
    let (data, stat) = zk.get_data("/v").await.unwrap();
    assert_eq!((data.as_slice(), stat.version), (&b"b"[..], 1));

    assert_eq!(zk.set_data("/v", b"d", None).await.unwrap().version, 2);
    zk.delete("/v", Some(2)).await.unwrap();
    assert_eq!(zk.check_stat("/v").await.unwrap(), None);
    replica.shutdown().await;
}

/// Guarantee: the Stat follows ZooKeeper's bookkeeping. A create sets czxid = mzxid = pzxid and
/// ctime = mtime (the wall clock); a child create or delete moves the parent's pzxid and
/// cversion (which counts both) and numChildren, never its mzxid or version; setData moves
/// mzxid, mtime, version and dataLength; setACL moves only aversion. getData, exists and
/// getChildren2 report the same Stat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stat_fields_follow_creates_deletes_and_sets() {
    let dir = tempfile::tempdir().unwrap();
    let replica = start(dir.path()).await;
    let zk = connect(replica.client_addr()).await;

    let before = now_ms();
    let (created, _) = zk.create("/s", b"abc", &open()).await.unwrap();
    let after = now_ms();
    assert!(created.czxid > 0);
    assert_eq!((created.mzxid, created.pzxid), (created.czxid, created.czxid));
    assert_eq!(created.ctime, created.mtime);
    assert!((before - 5_000..=after + 5_000).contains(&created.ctime), "ctime {} is not the wall clock", created.ctime);
    let counters = (created.version, created.cversion, created.aversion, created.data_length, created.num_children);
    assert_eq!(counters, (0, 0, 0, 3, 0));
    assert_eq!(created.ephemeral_owner, 0);

    let (a, _) = zk.create("/s/a", b"", &open()).await.unwrap();
    let (b, _) = zk.create("/s/b", b"", &open()).await.unwrap();
    assert!(a.czxid < b.czxid, "zxids grow");
    let (_, after_creates) = zk.get_children("/s").await.unwrap();
    assert_eq!((after_creates.cversion, after_creates.num_children, after_creates.pzxid), (2, 2, b.czxid));
    zk.delete("/s/a", None).await.unwrap();
    let (children, parent) = zk.get_children("/s").await.unwrap();
    assert_eq!(children, vec!["b"]);
    assert_eq!((parent.cversion, parent.num_children), (3, 1), "cversion counts creates and deletes");
    assert!(parent.pzxid > b.czxid, "the delete moved pzxid");
    assert_eq!(
        (parent.mzxid, parent.version, parent.ctime, parent.mtime),
        (created.mzxid, 0, created.ctime, created.mtime)
    );

    let set = zk.set_data("/s", b"hello!", None).await.unwrap();
    assert_eq!((set.version, set.data_length), (1, 6));
    assert!(set.mzxid > parent.pzxid);
    assert!(set.mtime >= set.ctime);
    assert_eq!(
        (set.czxid, set.ctime, set.cversion, set.pzxid, set.num_children),
        (created.czxid, created.ctime, 3, parent.pzxid, 1)
    );

    let (data, via_get_data) = zk.get_data("/s").await.unwrap();
    assert_eq!(data, b"hello!");
    assert_eq!(via_get_data, set);
    assert_eq!(zk.check_stat("/s").await.unwrap(), Some(set));
    assert_eq!(zk.get_children("/s").await.unwrap().1, set, "getChildren2 returns the node's own Stat");

    let acl_set = zk.set_acl("/s", &zk::Acls::anyone_all(), Some(0)).await.unwrap();
    assert_eq!(acl_set.aversion, 1);
    assert_eq!(zk::Stat { aversion: 0, ..acl_set }, set, "setACL changes nothing but aversion");
    replica.shutdown().await;
}

// ---- ACLs ----------------------------------------------------------------------------------

/// Guarantee: a node created with creator_all by a session authenticated as `digest alice`
/// refuses (NoAuth) every session without that identity — no auth, or the wrong password — for
/// reads, writes, its ACL and its children, and admits any session that authenticates as alice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creator_all_admits_only_the_same_digest_identity() {
    let dir = tempfile::tempdir().unwrap();
    let replica = start(dir.path()).await;
    let addr = replica.client_addr();
    let owner = connect(addr).await;
    add_digest(&owner, "alice:secret").await;
    owner.create("/vault", b"gold", &zk::CreateMode::Persistent.with_acls(zk::Acls::creator_all())).await.unwrap();
    owner.create("/vault/item", b"open", &open()).await.unwrap();

    let stranger = connect(addr).await;
    let impostor = connect(addr).await;
    add_digest(&impostor, "alice:guess").await;
    for (who, c) in [("no auth", &stranger), ("wrong password", &impostor)] {
        assert_err(c.get_data("/vault").await, zk::Error::NoAuth, &format!("{who}: getData"));
        assert_err(c.set_data("/vault", b"lead", None).await, zk::Error::NoAuth, &format!("{who}: setData"));
        assert_err(c.get_children("/vault").await, zk::Error::NoAuth, &format!("{who}: getChildren"));
        assert_err(c.get_acl("/vault").await, zk::Error::NoAuth, &format!("{who}: getACL"));
        // exists needs READ on an existing node too, as in ZooKeeper 3.9's FinalRequestProcessor.
        assert_err(c.check_stat("/vault").await, zk::Error::NoAuth, &format!("{who}: exists"));
        // Creating and deleting children is checked against the parent's ACL.
        assert_err(c.create("/vault/x", b"", &open()).await, zk::Error::NoAuth, &format!("{who}: create child"));
        assert_err(c.delete("/vault/item", None).await, zk::Error::NoAuth, &format!("{who}: delete child"));
    }
    assert_eq!(stranger.get_data("/vault/item").await.unwrap().0, b"open", "a child's own ACL governs reading it");

    let friend = connect(addr).await;
    add_digest(&friend, "alice:secret").await;
    assert_eq!(friend.get_data("/vault").await.unwrap().0, b"gold");
    friend.set_data("/vault", b"platinum", None).await.unwrap();
    friend.create("/vault/x", b"", &open()).await.unwrap();
    friend.delete("/vault/x", None).await.unwrap();
    friend.delete("/vault/item", None).await.unwrap();
    let (acl, _) = friend.get_acl("/vault").await.unwrap();
    let alice = generate_digest("alice:secret");
    assert_eq!(acl, vec![zk::Acl::new(zk::Permission::ALL, zk::AuthId::new("digest", &alice))]);
    replica.shutdown().await;
}

/// Guarantee: a world-readable node can be read by anyone and changed by no one, its creator
/// included; deleting it is governed by its parent's ACL (DELETE on the parent), as in ZooKeeper.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_world_read_only_node_refuses_every_change() {
    let dir = tempfile::tempdir().unwrap();
    let replica = start(dir.path()).await;
    let creator = connect(replica.client_addr()).await;
    let other = connect(replica.client_addr()).await;
    creator.create("/ro", b"r", &zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_read())).await.unwrap();
    for (who, c) in [("creator", &creator), ("other", &other)] {
        assert_eq!(c.get_data("/ro").await.unwrap().0, b"r", "{who}");
        assert!(c.list_children("/ro").await.unwrap().is_empty(), "{who}");
        assert_err(c.set_data("/ro", b"w", None).await, zk::Error::NoAuth, &format!("{who}: setData"));
        assert_err(c.create("/ro/c", b"", &open()).await, zk::Error::NoAuth, &format!("{who}: create child"));
        assert_err(c.set_acl("/ro", &zk::Acls::anyone_all(), None).await, zk::Error::NoAuth, &format!("{who}: setACL"));
    }
    let (acl, stat) = other.get_acl("/ro").await.unwrap();
    assert_eq!((acl.as_slice(), stat.aversion), (&*zk::Acls::anyone_read(), 0));
    other.delete("/ro", None).await.unwrap();
    replica.shutdown().await;
}

/// Guarantee: setACL applies only at the expected ACL version (aversion) and returns the new
/// Stat; getACL returns the list and the Stat, with digest hashes masked for a caller without
/// ADMIN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_acl_checks_the_acl_version() {
    let dir = tempfile::tempdir().unwrap();
    let replica = start(dir.path()).await;
    let zk = connect(replica.client_addr()).await;
    zk.create("/acl", b"", &open()).await.unwrap();
    let alice = generate_digest("alice:secret");
    let acl = [
        zk::Acl::new(zk::Permission::ALL, zk::AuthId::new("digest", &alice)),
        zk::Acl::new(zk::Permission::READ, zk::AuthId::anyone()),
    ];
    let stat = zk.set_acl("/acl", &acl, Some(0)).await.unwrap();
    assert_eq!((stat.aversion, stat.version), (1, 0));
    assert_err(zk.set_acl("/acl", &zk::Acls::anyone_all(), Some(0)).await, zk::Error::NoAuth, "no ADMIN any more");

    let (seen, seen_stat) = zk.get_acl("/acl").await.unwrap();
    assert_eq!(seen_stat, stat);
    let masked = [
        zk::Acl::new(zk::Permission::ALL, zk::AuthId::new("digest", "alice:x")),
        zk::Acl::new(zk::Permission::READ, zk::AuthId::anyone()),
    ];
    assert_eq!(seen, masked, "without ADMIN the digest hash is masked");

    let admin = connect(replica.client_addr()).await;
    add_digest(&admin, "alice:secret").await;
    assert_eq!(admin.get_acl("/acl").await.unwrap().0, acl);
    assert_err(admin.set_acl("/acl", &zk::Acls::anyone_all(), Some(0)).await, zk::Error::BadVersion, "stale aversion");
    assert_eq!(admin.set_acl("/acl", &zk::Acls::anyone_all(), Some(1)).await.unwrap().aversion, 2);
    assert_eq!(admin.set_acl("/acl", &zk::Acls::anyone_all(), None).await.unwrap().aversion, 3);
    replica.shutdown().await;
}

/// Guarantee: an empty ACL, an unknown scheme, a malformed digest id and `auth` without an
/// authenticated identity are refused with InvalidAcl, and nothing is created or changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_acl_is_refused_with_invalid_acl() {
    let dir = tempfile::tempdir().unwrap();
    let replica = start(dir.path()).await;
    let zk = connect(replica.client_addr()).await;
    zk.create("/target", b"", &open()).await.unwrap();

    // The client refuses an empty list for create itself but sends it for setACL.
    assert_err(zk.set_acl("/target", &[], None).await, zk::Error::InvalidAcl, "setACL with an empty list");
    let bad = [
        ("unknown scheme", zk::Acl::new(zk::Permission::ALL, zk::AuthId::new("nosuch", "x"))),
        ("digest id without a hash", zk::Acl::new(zk::Permission::ALL, zk::AuthId::new("digest", "alice"))),
        ("ip id that is no address", zk::Acl::new(zk::Permission::ALL, zk::AuthId::new("ip", "not-an-ip"))),
        ("auth without an authenticated id", zk::Acl::new(zk::Permission::ALL, zk::AuthId::authed())),
    ];
    for (what, acl) in &bad {
        let acl = std::slice::from_ref(acl);
        let create = zk.create("/bad", b"", &zk::CreateMode::Persistent.with_acls(zk::Acls::new(acl))).await;
        assert_err(create, zk::Error::InvalidAcl, &format!("create, {what}"));
        assert_err(zk.set_acl("/target", acl, None).await, zk::Error::InvalidAcl, &format!("setACL, {what}"));
    }
    assert_eq!(zk.check_stat("/bad").await.unwrap(), None);
    let (acl, stat) = zk.get_acl("/target").await.unwrap();
    assert_eq!((acl.as_slice(), stat.aversion), (&*zk::Acls::anyone_all(), 0));
    replica.shutdown().await;
}

/// Guarantee: whoAmI lists the connection's ip identity and each digest identity the session
/// added; authenticating with an unknown scheme fails with AuthFailed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_am_i_lists_the_ip_and_digest_identities() {
    let dir = tempfile::tempdir().unwrap();
    let replica = start(dir.path()).await;
    let zk = connect(replica.client_addr()).await;
    assert_eq!(zk.list_auth_users().await.unwrap(), vec![zk::AuthUser::new("ip", "127.0.0.1")]);
    add_digest(&zk, "alice:secret").await;
    add_digest(&zk, "bob:pw").await;
    let mut users = zk.list_auth_users().await.unwrap();
    users.sort_by(|a, b| (a.scheme(), a.user()).cmp(&(b.scheme(), b.user())));
    let expected = [("digest", "alice"), ("digest", "bob"), ("ip", "127.0.0.1")].map(|(s, u)| zk::AuthUser::new(s, u));
    assert_eq!(users, expected);

    let refused = connect(replica.client_addr()).await;
    let refusal = within("the answer to an unknown auth scheme", refused.auth("nosuch", b"x")).await;
    assert_err(refusal, zk::Error::AuthFailed, "an unknown auth scheme");
    replica.shutdown().await;
}

/// Guarantee (on the wire): the reply to an auth packet carries the request's xid, as
/// ZooKeeper's `processPacket` answers it (`ReplyHeader(h.getXid(), 0, err)`): the Java client
/// sends -4, `zookeeper-client` a sequence number, and each matches the reply by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auth_reply_carries_the_requests_xid() {
    let dir = tempfile::tempdir().unwrap();
    let replica = start(dir.path()).await;
    let mut raw = Raw::connect(replica.client_addr()).await;
    for xid in [proto::xid::AUTH, 7] {
        let auth = AuthPacket { auth_type: 0, scheme: "digest".into(), auth: b"alice:secret".to_vec() };
        raw.send(xid, &Request::Auth(auth)).await;
        let frame = raw.frame().await.expect("an auth reply");
        let (header, _) = proto::decode_reply(&frame, 100).unwrap();
        assert_eq!((header.xid, header.err), (xid, 0), "the reply to an auth sent with xid {xid}");
    }
    assert!(matches!(raw.call(&exists("/", false)).await, Ok(Response::Stat(_))), "the connection goes on");
    replica.shutdown().await;
}

// ---- watches -------------------------------------------------------------------------------

/// Guarantee: a data watch set by getData or by exists on an existing node fires NodeDeleted
/// when the node is deleted, and a child watch fires NodeDeleted when its node itself is
/// deleted (not NodeChildrenChanged); an exists watch on a missing node fires NodeCreated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_fire_node_deleted_when_their_node_goes() {
    let dir = tempfile::tempdir().unwrap();
    let replica = start(dir.path()).await;
    let zk = connect(replica.client_addr()).await;
    let other = connect(replica.client_addr()).await;
    zk.create("/d", b"", &open()).await.unwrap();
    zk.create("/p", b"", &open()).await.unwrap();

    let (_, _, data) = zk.get_and_watch_data("/d").await.unwrap();
    let (_, exists) = zk.check_and_watch_stat("/d").await.unwrap();
    let (_, _, children) = zk.get_and_watch_children("/p").await.unwrap();
    let (missing, created) = zk.check_and_watch_stat("/later").await.unwrap();
    assert!(missing.is_none());

    other.delete("/d", None).await.unwrap();
    assert_eq!(fired("the data watch", data).await, (zk::EventType::NodeDeleted, "/d".into()));
    assert_eq!(fired("the exists watch", exists).await, (zk::EventType::NodeDeleted, "/d".into()));
    other.delete("/p", None).await.unwrap();
    assert_eq!(fired("the child watch", children).await, (zk::EventType::NodeDeleted, "/p".into()));
    other.create("/later", b"", &open()).await.unwrap();
    assert_eq!(
        fired("the exists watch on a missing node", created).await,
        (zk::EventType::NodeCreated, "/later".into())
    );
    replica.shutdown().await;
}

/// Guarantee (what the server sends, seen on a raw connection): a one-shot watch fires once,
/// however many changes follow; several watch-setting reads of one node by one session bring a
/// single notification; a child watch fires NodeChildrenChanged once for two new children.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_shot_watch_fires_once() {
    let dir = tempfile::tempdir().unwrap();
    let replica = start(dir.path()).await;
    let writer = connect(replica.client_addr()).await;
    let mut raw = Raw::connect(replica.client_addr()).await;

    assert_eq!(raw.call(&exists("/once", true)).await, Err(KeeperError::NoNode.code()));
    writer.create("/once", b"", &open()).await.unwrap();
    assert_eq!(raw.event().await, notification(event_type::NODE_CREATED, "/once"));

    raw.call(&get_data("/once", true)).await.unwrap();
    raw.call(&exists("/once", true)).await.unwrap();
    raw.call(&Request::GetChildren(GetChildrenRequest { path: "/once".into(), watch: true })).await.unwrap();
    assert_eq!(raw.call(&exists("/marker", true)).await, Err(KeeperError::NoNode.code()));
    writer.set_data("/once", b"1", None).await.unwrap();
    writer.set_data("/once", b"2", None).await.unwrap();
    writer.create("/once/a", b"", &open()).await.unwrap();
    writer.create("/once/b", b"", &open()).await.unwrap();
    writer.create("/marker", b"", &open()).await.unwrap();
    let events = [raw.event().await, raw.event().await, raw.event().await];
    assert_eq!(
        events,
        [
            notification(event_type::NODE_DATA_CHANGED, "/once"),
            notification(event_type::NODE_CHILDREN_CHANGED, "/once"),
            notification(event_type::NODE_CREATED, "/marker"),
        ],
        "one notification per watch, then nothing until the marker"
    );
    replica.shutdown().await;
}

/// Guarantee: a persistent watch reports the data and child events of its own path —
/// NodeCreated, every NodeDataChanged, NodeChildrenChanged, NodeDeleted — and stays; a
/// persistent-recursive watch reports NodeCreated, NodeDataChanged and NodeDeleted of its path
/// and every descendant and never NodeChildrenChanged. Checked through the client and, since
/// the client drops events it has no watcher for, on a raw connection too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_and_recursive_watches_report_exactly_their_events() {
    let dir = tempfile::tempdir().unwrap();
    let replica = start(dir.path()).await;
    let zk = connect(replica.client_addr()).await;
    let writer = connect(replica.client_addr()).await;
    let mut raw = Raw::connect(replica.client_addr()).await;
    let mut persistent = zk.watch("/p", zk::AddWatchMode::Persistent).await.unwrap();
    let mut recursive = zk.watch("/r", zk::AddWatchMode::PersistentRecursive).await.unwrap();
    for (path, mode) in [("/p", add_watch_mode::PERSISTENT), ("/r", add_watch_mode::PERSISTENT_RECURSIVE)] {
        raw.call(&Request::AddWatch(AddWatchRequest { path: path.into(), mode })).await.unwrap();
    }

    writer.create("/p", b"", &open()).await.unwrap();
    writer.create("/p/c", b"", &open()).await.unwrap();
    writer.set_data("/p/c", b"x", None).await.unwrap();
    writer.create("/p/c/g", b"", &open()).await.unwrap();
    writer.delete("/p/c/g", None).await.unwrap();
    writer.set_data("/p", b"1", None).await.unwrap();
    writer.set_data("/p", b"2", None).await.unwrap();
    writer.delete("/p/c", None).await.unwrap();
    writer.delete("/p", None).await.unwrap();
    writer.create("/r", b"", &open()).await.unwrap();
    writer.create("/r/a", b"", &open()).await.unwrap();
    writer.create("/r/a/b", b"", &open()).await.unwrap();
    writer.set_data("/r/a/b", b"x", None).await.unwrap();
    writer.create("/rx", b"", &open()).await.unwrap();
    writer.delete("/r/a/b", None).await.unwrap();
    writer.delete("/r/a", None).await.unwrap();
    // The persistent watch outlived its node's deletion: this is the last event.
    writer.create("/p", b"", &open()).await.unwrap();

    use zk::EventType::*;
    let expected_p = [
        NodeCreated,
        NodeChildrenChanged,
        NodeDataChanged,
        NodeDataChanged,
        NodeChildrenChanged,
        NodeDeleted,
        NodeCreated,
    ]
    .map(|kind| (kind, "/p".to_string()));
    let expected_r = [
        (NodeCreated, "/r"),
        (NodeCreated, "/r/a"),
        (NodeCreated, "/r/a/b"),
        (NodeDataChanged, "/r/a/b"),
        (NodeDeleted, "/r/a/b"),
        (NodeDeleted, "/r/a"),
    ]
    .map(|(kind, path)| (kind, path.to_string()));
    let mut seen_p = Vec::new();
    for _ in 0..expected_p.len() {
        seen_p.push(next_node_event(&mut persistent).await);
    }
    assert_eq!(seen_p, expected_p, "the persistent watch, through the client");
    let mut seen_r = Vec::new();
    for _ in 0..expected_r.len() {
        seen_r.push(next_node_event(&mut recursive).await);
    }
    assert_eq!(seen_r, expected_r, "the recursive watch, through the client");

    let code = |kind: zk::EventType| match kind {
        NodeCreated => event_type::NODE_CREATED,
        NodeDeleted => event_type::NODE_DELETED,
        NodeDataChanged => event_type::NODE_DATA_CHANGED,
        NodeChildrenChanged => event_type::NODE_CHILDREN_CHANGED,
        Session => unreachable!(),
    };
    // On the wire, in apply order: /p's first six, /r's six, then /p's re-creation.
    let mut expected_wire: Vec<WatcherEvent> =
        expected_p[..6].iter().map(|(kind, path)| notification(code(*kind), path)).collect();
    expected_wire.extend(expected_r.iter().map(|(kind, path)| notification(code(*kind), path)));
    expected_wire.push(notification(event_type::NODE_CREATED, "/p"));
    let mut wire = Vec::new();
    for _ in 0..expected_wire.len() {
        wire.push(raw.event().await);
    }
    assert_eq!(wire, expected_wire, "what the server sent");
    replica.shutdown().await;
}

/// The next node event of a persistent watcher as (type, path), skipping session state events.
async fn next_node_event(watcher: &mut zk::PersistentWatcher) -> (zk::EventType, String) {
    loop {
        let event = within("a persistent watch event", watcher.changed()).await;
        if event.event_type != zk::EventType::Session {
            return (event.event_type, event.path);
        }
    }
}

/// Guarantee: a client sees the watch event for a znode before it sees the new data (ZooKeeper's
/// ordering guarantee): once a read returns data written after a watch was set, that watch has
/// already fired. Reads race the write on purpose, round after round.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_sees_the_watch_event_before_the_new_data() {
    const ROUNDS: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let replica = start(dir.path()).await;
    let reader = connect(replica.client_addr()).await;
    let writer = connect(replica.client_addr()).await;
    writer.create("/order", b"0", &open()).await.unwrap();
    let mut early = Vec::new();
    for round in 1..=ROUNDS {
        let value = round.to_string();
        let (_, _, watch) = reader.get_and_watch_data("/order").await.unwrap();
        let mut watch = Some(watch);
        // The write goes out as its future is made; the reader keeps reads in flight meanwhile.
        let write = writer.set_data("/order", value.as_bytes(), None);
        let deadline = Instant::now() + DEADLINE;
        'reads: loop {
            assert!(Instant::now() < deadline, "round {round}: the write never showed");
            let reads: Vec<_> = (0..8).map(|_| reader.get_data("/order")).collect();
            for read in reads {
                let (data, _) = read.await.unwrap();
                if data == value.as_bytes() {
                    let event = watch.take().unwrap().changed().now_or_never();
                    if !matches!(&event, Some(e) if e.event_type == zk::EventType::NodeDataChanged) {
                        early.push(round);
                    }
                    break 'reads;
                }
            }
        }
        within("the write", write).await.unwrap();
    }
    assert!(
        early.is_empty(),
        "in rounds {early:?} of {ROUNDS}, a read returned the new data before the client had the watch event"
    );
    replica.shutdown().await;
}

// ---- multi ---------------------------------------------------------------------------------

/// Guarantee: a multi whose check fails (BadVersion) applies none of its ops: nodes it created
/// do not exist, data it set is unchanged, the parent's Stat is as before and no sequence
/// number was used. A check sees the effect of the ops before it in the same multi.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_check_rolls_back_the_whole_multi() {
    let dir = tempfile::tempdir().unwrap();
    let replica = start(dir.path()).await;
    let zk = connect(replica.client_addr()).await;
    zk.create("/m", b"v0", &open()).await.unwrap();
    let before = zk.check_stat("/m").await.unwrap().unwrap();

    let mut multi = zk.new_multi_writer();
    multi.add_create("/m/seq-", b"", &options(zk::CreateMode::PersistentSequential)).unwrap();
    multi.add_create("/m/plain", b"", &open()).unwrap();
    multi.add_set_data("/m", b"v1", None).unwrap();
    // The setData above made the version 1.
    multi.add_check_version("/m", 0).unwrap();
    multi.add_delete("/m/plain", None).unwrap();
    let err = multi.commit().await.unwrap_err();
    assert!(matches!(err, zk::MultiWriteError::OperationFailed { index: 3, source: zk::Error::BadVersion }), "{err:?}");
    let (data, stat) = zk.get_data("/m").await.unwrap();
    assert_eq!((data.as_slice(), stat), (&b"v0"[..], before), "the multi left a trace");
    assert!(zk.list_children("/m").await.unwrap().is_empty());
    let (_, seq) = zk.create("/m/seq-", b"", &options(zk::CreateMode::PersistentSequential)).await.unwrap();
    assert_eq!(seq.into_i64(), 0, "the rolled-back create used no sequence number");
    replica.shutdown().await;
}

/// Guarantee: a successful multi returns one result per op, in order — the created paths with
/// their sequence suffix and Stat, the setData's new Stat, check, delete — applied as one
/// transaction (one zxid) whose events all fire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_successful_multi_returns_each_ops_result_in_one_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let replica = start(dir.path()).await;
    let zk = connect(replica.client_addr()).await;
    let observer = connect(replica.client_addr()).await;
    zk.create("/t", b"", &open()).await.unwrap();
    zk.create("/t/old", b"", &open()).await.unwrap();
    let (_, _, data_watch) = observer.get_and_watch_data("/t").await.unwrap();
    let (_, _, old_watch) = observer.get_and_watch_data("/t/old").await.unwrap();

    let sequential = options(zk::CreateMode::PersistentSequential);
    let mut multi = zk.new_multi_writer();
    multi.add_create("/t/job-", b"1", &sequential).unwrap();
    multi.add_create("/t/job-", b"2", &sequential).unwrap();
    multi.add_create("/t/box", b"", &options(zk::CreateMode::Container)).unwrap();
    multi.add_set_data("/t", b"x", Some(0)).unwrap();
    multi.add_check_version("/t", 1).unwrap();
    multi.add_delete("/t/old", None).unwrap();
    let results = multi.commit().await.unwrap();
    assert_eq!(results.len(), 6);
    let created: Vec<(String, zk::Stat)> = results[..3]
        .iter()
        .map(|r| match r {
            zk::MultiWriteResult::Create { path, stat } => (path.clone(), *stat),
            other => panic!("expected a create result, got {other:?}"),
        })
        .collect();
    let paths: Vec<&str> = created.iter().map(|(p, _)| p.as_str()).collect();
    // /t/old was the first child created under /t.
    assert_eq!(paths, ["/t/job-0000000001", "/t/job-0000000002", "/t/box"]);
    let zxid = created[0].1.czxid;
    assert!(created.iter().all(|(_, stat)| stat.czxid == zxid), "one transaction, one zxid");
    for (path, stat) in &created {
        assert_eq!(zk.check_stat(path).await.unwrap(), Some(*stat), "{path}");
    }
    let zk::MultiWriteResult::SetData { stat } = &results[3] else { panic!("{:?}", results[3]) };
    assert_eq!((stat.version, stat.mzxid), (1, zxid));
    assert_eq!(results[4..], [zk::MultiWriteResult::Check, zk::MultiWriteResult::Delete]);
    let event = within("the multi's setData", data_watch.changed()).await;
    assert_eq!((event.event_type, event.path.as_str()), (zk::EventType::NodeDataChanged, "/t"));
    assert_eq!(event.zxid, zxid, "the notification carries the zxid of the change (ZooKeeper 3.9)");
    assert_eq!(fired("the multi's delete", old_watch).await, (zk::EventType::NodeDeleted, "/t/old".into()));
    let mut children = zk.list_children("/t").await.unwrap();
    children.sort();
    assert_eq!(children, ["box", "job-0000000001", "job-0000000002"]);
    replica.shutdown().await;
}

/// Guarantee: multiRead answers each op on its own, in request order: data and children where
/// the nodes exist, NoNode for the missing one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_read_answers_each_op_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let replica = start(dir.path()).await;
    let zk = connect(replica.client_addr()).await;
    zk.create("/r", b"root", &open()).await.unwrap();
    let (child_stat, _) = zk.create("/r/x", b"child", &open()).await.unwrap();

    let mut reader = zk.new_multi_reader();
    reader.add_get_data("/r").unwrap();
    reader.add_get_data("/r/missing").unwrap();
    reader.add_get_children("/r").unwrap();
    reader.add_get_data("/r/x").unwrap();
    reader.add_get_children("/nowhere").unwrap();
    let results = reader.commit().await.unwrap();
    assert_eq!(results.len(), 5);
    assert!(
        matches!(&results[0], zk::MultiReadResult::Data { data, stat } if data == b"root" && stat.num_children == 1)
    );
    assert!(matches!(&results[1], zk::MultiReadResult::Error { err: zk::Error::NoNode }), "{:?}", results[1]);
    assert!(matches!(&results[2], zk::MultiReadResult::Children { children } if children == &["x"]));
    assert!(matches!(&results[3], zk::MultiReadResult::Data { data, stat } if data == b"child" && *stat == child_stat));
    assert!(matches!(&results[4], zk::MultiReadResult::Error { err: zk::Error::NoNode }), "{:?}", results[4]);
    replica.shutdown().await;
}

/// Guarantee (on the wire): a failed multi is answered with err 0 in the reply header and one
/// error result per op, as ZooKeeper reports them: 0 for the ops before the failing one, its
/// error, then RuntimeInconsistency (-2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_multi_reports_zookeepers_per_op_results() {
    let dir = tempfile::tempdir().unwrap();
    let replica = start(dir.path()).await;
    let mut raw = Raw::connect(replica.client_addr()).await;
    let ops = vec![
        MultiOp::Create2(create_request("/rm", 0)),
        MultiOp::Check(CheckVersionRequest { path: "/rm".into(), version: 3 }),
        MultiOp::Delete(DeleteRequest { path: "/rm".into(), version: -1 }),
    ];
    let reply = raw.call(&Request::Multi(ops)).await;
    assert_eq!(reply, Ok(Response::Multi(proto::rollback(3, 1, KeeperError::BadVersion))));
    assert_eq!(raw.call(&exists("/rm", false)).await, Err(KeeperError::NoNode.code()));
    replica.shutdown().await;
}

// ---- getEphemerals, getAllChildrenNumber -------------------------------------------------------

/// Guarantee: getEphemerals lists the calling session's ephemerals whose path starts with the
/// prefix — a string prefix, not a subtree — and only that session's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_ephemerals_lists_this_sessions_ephemerals_by_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let replica = start(dir.path()).await;
    let a = connect(replica.client_addr()).await;
    let b = connect(replica.client_addr()).await;
    let ephemeral = options(zk::CreateMode::Ephemeral);
    a.create("/app", b"", &open()).await.unwrap();
    for path in ["/app/worker-1", "/app/worker-2", "/app/leader", "/apple"] {
        a.create(path, b"", &ephemeral).await.unwrap();
    }
    a.create("/app/config", b"", &open()).await.unwrap();
    b.create("/app/worker-3", b"", &ephemeral).await.unwrap();

    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(sorted(a.list_ephemerals("/app/worker").await.unwrap()), ["/app/worker-1", "/app/worker-2"]);
    let all_a = ["/app/leader", "/app/worker-1", "/app/worker-2", "/apple"];
    assert_eq!(sorted(a.list_ephemerals("/app").await.unwrap()), all_a, "a string prefix: /apple matches /app");
    assert_eq!(sorted(a.list_ephemerals("/").await.unwrap()), all_a);
    assert!(a.list_ephemerals("/nothing").await.unwrap().is_empty());
    assert_eq!(b.list_ephemerals("/").await.unwrap(), ["/app/worker-3"]);
    replica.shutdown().await;
}

/// Guarantee: getAllChildrenNumber counts every descendant of a node, not only its children;
/// NoNode for a missing node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_all_children_number_counts_every_descendant() {
    let dir = tempfile::tempdir().unwrap();
    let replica = start(dir.path()).await;
    let zk = connect(replica.client_addr()).await;
    for path in ["/n", "/n/a", "/n/a/x", "/n/a/y", "/n/a/y/z", "/n/b"] {
        zk.create(path, b"", &open()).await.unwrap();
    }
    assert_eq!(zk.count_descendants_number("/n").await.unwrap(), 5);
    assert_eq!(zk.count_descendants_number("/n/a").await.unwrap(), 3);
    assert_eq!(zk.count_descendants_number("/n/b").await.unwrap(), 0);
    assert_err(zk.count_descendants_number("/missing").await, zk::Error::NoNode, "a missing node");
    replica.shutdown().await;
}

// ---- sessions ------------------------------------------------------------------------------

/// Guarantee: a client whose TCP connection drops reconnects to the same session (id and
/// password) and keeps its ephemerals and watches: changes made while it was away fire its
/// watches on reconnect (setWatches), and watches whose node did not change stay set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnected_session_keeps_its_ephemerals_and_watches() {
    let dir = tempfile::tempdir().unwrap();
    let replica = start(dir.path()).await;
    let proxy = Proxy::start(replica.client_addr()).await;
    let a = connect(proxy.addr).await;
    let c = connect(replica.client_addr()).await;
    for path in ["/s", "/s/data", "/s/kids", "/s/quiet", "/s/doomed"] {
        c.create(path, b"", &open()).await.unwrap();
    }
    a.create("/s/mine", b"", &options(zk::CreateMode::Ephemeral)).await.unwrap();
    let (_, _, data) = a.get_and_watch_data("/s/data").await.unwrap();
    let (_, _, kids) = a.get_and_watch_children("/s/kids").await.unwrap();
    let (_, created) = a.check_and_watch_stat("/s/later").await.unwrap();
    let (_, _, quiet) = a.get_and_watch_data("/s/quiet").await.unwrap();
    let (_, _, doomed) = a.get_and_watch_data("/s/doomed").await.unwrap();

    proxy.refuse(true);
    proxy.cut();
    eventually("a to notice its connection is gone", || async { a.state() == zk::SessionState::Disconnected }).await;
    c.set_data("/s/data", b"changed while away", None).await.unwrap();
    c.create("/s/kids/k", b"", &open()).await.unwrap();
    c.create("/s/later", b"", &open()).await.unwrap();
    c.delete("/s/doomed", None).await.unwrap();
    proxy.refuse(false);

    assert_eq!(fired("the replayed data watch", data).await, (zk::EventType::NodeDataChanged, "/s/data".into()));
    assert_eq!(fired("the replayed child watch", kids).await, (zk::EventType::NodeChildrenChanged, "/s/kids".into()));
    assert_eq!(fired("the replayed exists watch", created).await, (zk::EventType::NodeCreated, "/s/later".into()));
    assert_eq!(
        fired("the replayed watch of a deleted node", doomed).await,
        (zk::EventType::NodeDeleted, "/s/doomed".into())
    );
    assert_eq!(a.state(), zk::SessionState::SyncConnected);
    let mine = c.check_stat("/s/mine").await.unwrap().expect("the ephemeral survived the reconnect");
    assert_eq!(mine.ephemeral_owner, a.session_id().0);
    assert_eq!(a.list_ephemerals("/").await.unwrap(), ["/s/mine"]);
    c.set_data("/s/quiet", b"now", None).await.unwrap();
    assert_eq!(fired("the re-registered watch", quiet).await, (zk::EventType::NodeDataChanged, "/s/quiet".into()));
    replica.shutdown().await;
}

/// Guarantee: another client can resume a session with its id and password; it gets the same
/// session with its ephemerals, the server closes the first client's connection, and closing
/// the session from the second client deletes every ephemeral of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_session_keeps_its_ephemerals_and_closes_the_old_connection() {
    let dir = tempfile::tempdir().unwrap();
    let replica = start(dir.path()).await;
    let proxy = Proxy::start(replica.client_addr()).await;
    let watcher = connect(replica.client_addr()).await;
    // Detached: dropping it never closes the session; through the proxy, so that once the
    // server drops it, it cannot come back and take the session over again.
    let first = connector().with_detached().connect(&proxy.addr.to_string()).await.unwrap();
    first.create("/first-eph", b"", &options(zk::CreateMode::Ephemeral)).await.unwrap();
    proxy.refuse(true);

    let direct = replica.client_addr().to_string();
    let second = within("the session to resume", connector().with_session(first.session().clone()).connect(&direct));
    let second = second.await.unwrap();
    assert_eq!(second.session_id(), first.session_id());
    eventually("the server to close the first connection", || async {
        first.state() != zk::SessionState::SyncConnected
    })
    .await;
    assert_eq!(second.list_ephemerals("/").await.unwrap(), ["/first-eph"]);
    second.create("/second-eph", b"", &options(zk::CreateMode::Ephemeral)).await.unwrap();
    let owner = watcher.check_stat("/second-eph").await.unwrap().unwrap().ephemeral_owner;
    assert_eq!(owner, first.session_id().0, "one session");

    drop(second);
    eventually("the closed session's ephemerals to go", || async {
        watcher.check_stat("/first-eph").await.unwrap().is_none()
            && watcher.check_stat("/second-eph").await.unwrap().is_none()
    })
    .await;
    replica.shutdown().await;
}

/// Guarantee: a write from a client that resumed a session is applied, not answered with the
/// result of an earlier write the session made on another connection. (Clients number their
/// requests from 1 on every new client object, so xids repeat across connections of one
/// session.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_session_has_its_writes_applied() {
    let dir = tempfile::tempdir().unwrap();
    let replica = start(dir.path()).await;
    let proxy = Proxy::start(replica.client_addr()).await;
    let first = connector().with_detached().connect(&proxy.addr.to_string()).await.unwrap();
    first.create("/from-first", b"1", &open()).await.unwrap();
    proxy.refuse(true);
    proxy.cut();

    let direct = replica.client_addr().to_string();
    let second = within("the session to resume", connector().with_session(first.session().clone()).connect(&direct));
    let second = second.await.unwrap();
    // Its first request, as the first client's create was: both carry xid 1.
    let (stat, _) = second.create("/from-second", b"2", &open()).await.unwrap();
    let found = second.check_stat("/from-second").await.unwrap();
    assert!(
        found.is_some(),
        "create /from-second returned {stat:?} (the Stat of /from-first: {:?}) but created nothing",
        second.check_stat("/from-first").await.unwrap()
    );
    assert_eq!(found, Some(stat));
    replica.shutdown().await;
}

/// Guarantee: a reconnect with the right session id and a wrong password is refused the way
/// ZooKeeper refuses an expired session (timeout 0, session 0, zero password, then the
/// connection closes), and the session's own connection and ephemerals are untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_with_a_wrong_password_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let replica = start(dir.path()).await;
    let owner = connect(replica.client_addr()).await;
    owner.create("/owned", b"", &options(zk::CreateMode::Ephemeral)).await.unwrap();
    for passwd in [vec![0x5a; 16], vec![], vec![1, 2, 3]] {
        let refused = Raw::resume(replica.client_addr(), owner.session_id().0, &passwd).await;
        let Err((response, mut raw)) = refused else { panic!("a wrong password {passwd:?} was accepted") };
        assert_eq!((response.timeout, response.session_id, response.passwd), (0, 0, vec![0; 16]));
        raw.expect_closed().await;
    }
    assert_eq!(owner.check_stat("/owned").await.unwrap().unwrap().ephemeral_owner, owner.session_id().0);
    owner.set_data("/owned", b"still mine", None).await.unwrap();
    assert_eq!(owner.state(), zk::SessionState::SyncConnected);
    replica.shutdown().await;
}

/// Guarantee: the server grants a session timeout within [2, 20] ticks (ZooKeeper's
/// minSessionTimeout and maxSessionTimeout defaults), whatever the client asks for, and tells
/// the client in the ConnectResponse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_timeout_is_clamped_to_the_servers_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let replica = start(dir.path()).await;
    let tick = 100;
    for (asked, granted) in [(1, 2 * tick), (150, 2 * tick), (1_000, 1_000), (60_000, 20 * tick), (-5, 2 * tick)] {
        let mut stream = TcpStream::connect(replica.client_addr()).await.unwrap();
        let mut out = Vec::new();
        ConnectRequest { timeout: asked, ..connect_request() }.encode(&mut out);
        stream.write_all(&out).await.unwrap();
        let len = within("a connect response", stream.read_i32()).await.unwrap();
        let mut payload = vec![0; len as usize];
        stream.read_exact(&mut payload).await.unwrap();
        let response = ConnectResponse::decode(&payload).unwrap();
        assert_ne!(response.session_id, 0);
        assert_eq!(response.timeout, granted, "asked for {asked} ms");
    }
    let asked_a_minute = zk::Client::connector().with_session_timeout(Duration::from_secs(60));
    let client = asked_a_minute.connect(&replica.client_addr().to_string()).await.unwrap();
    assert_eq!(client.session_timeout(), Duration::from_millis(20 * tick as u64));
    replica.shutdown().await;
}

/// Guarantee: a client that has seen a newer zxid than the replica's is refused (the connection
/// closes without a session), so that it never reads older state than it saw; a client that
/// has not is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_has_seen_a_newer_zxid_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let replica = start(dir.path()).await;
    let sessions = mntr(replica.client_addr(), "zk_global_sessions").await;
    let mut stream = TcpStream::connect(replica.client_addr()).await.unwrap();
    let mut out = Vec::new();
    let ahead = replica.last_zxid() + 1_000;
    ConnectRequest { last_zxid_seen: ahead, ..connect_request() }.encode(&mut out);
    stream.write_all(&out).await.unwrap();
    let answer = read_until_closed(&mut stream).await;
    if let Some((payload, _)) = split_frame(&answer, usize::MAX >> 1).unwrap() {
        assert_eq!(ConnectResponse::decode(payload).unwrap().session_id, 0, "a session for a client from the future");
    }
    assert_eq!(mntr(replica.client_addr(), "zk_global_sessions").await, sessions);
    let mut up_to_date = TcpStream::connect(replica.client_addr()).await.unwrap();
    let mut out = Vec::new();
    ConnectRequest { last_zxid_seen: replica.last_zxid(), ..connect_request() }.encode(&mut out);
    up_to_date.write_all(&out).await.unwrap();
    let len = within("a connect response", up_to_date.read_i32()).await.unwrap();
    let mut payload = vec![0; len as usize];
    up_to_date.read_exact(&mut payload).await.unwrap();
    assert_ne!(ConnectResponse::decode(&payload).unwrap().session_id, 0);
    replica.shutdown().await;
}

/// Guarantee: a closed session cannot be resumed: the client gets SessionExpired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_session_cannot_be_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let replica = start(dir.path()).await;
    let watcher = connect(replica.client_addr()).await;
    let closed = connect(replica.client_addr()).await;
    let session = closed.session().clone();
    closed.create("/closed-eph", b"", &options(zk::CreateMode::Ephemeral)).await.unwrap();
    drop(closed);
    eventually("the session to close", || async { watcher.check_stat("/closed-eph").await.unwrap().is_none() }).await;
    let addr = replica.client_addr().to_string();
    let resumed = within("the refusal", connector().with_session(session).connect(&addr)).await;
    assert_err(resumed, zk::Error::SessionExpired, "resuming a closed session");
    replica.shutdown().await;
}

/// Guarantee: a session whose client stays away longer than its timeout expires: its
/// ephemerals go (other sessions' watches see NodeDeleted), the client's own watches hear
/// Expired and its requests fail with SessionExpired, and the server refuses to resume it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_loses_its_ephemerals_and_its_client_learns_it() {
    let dir = tempfile::tempdir().unwrap();
    let replica = start(dir.path()).await;
    let proxy = Proxy::start(replica.client_addr()).await;
    let watcher = connect(replica.client_addr()).await;
    let short = zk::Client::connector().with_session_timeout(Duration::from_secs(1));
    let doomed = short.clone().connect(&proxy.addr.to_string()).await.unwrap();
    assert_eq!(doomed.session_timeout(), Duration::from_secs(1));
    let session = doomed.session().clone();
    doomed.create("/doomed", b"", &options(zk::CreateMode::Ephemeral)).await.unwrap();
    // The server moves the session's deadline on each request: this is its last one.
    let last_request = Instant::now();
    let (_, _, own) = doomed.get_and_watch_data("/doomed").await.unwrap();
    let (_, _, others) = watcher.get_and_watch_data("/doomed").await.unwrap();

    proxy.refuse(true);
    proxy.cut();
    assert_eq!(fired("the expired ephemeral to go", others).await, (zk::EventType::NodeDeleted, "/doomed".into()));
    let silent = last_request.elapsed();
    assert!(silent >= Duration::from_secs(1), "expired {silent:?} after its last request, before its timeout");
    let event = within("the client to give up", own.changed()).await;
    assert_eq!((event.event_type, event.session_state), (zk::EventType::Session, zk::SessionState::Expired));
    assert_err(doomed.get_data("/").await, zk::Error::SessionExpired, "a request of the expired session");

    proxy.refuse(false);
    let through_proxy = proxy.addr.to_string();
    let resumed = within("the refusal", short.with_session(session).connect(&through_proxy)).await;
    assert_err(resumed, zk::Error::SessionExpired, "resuming an expired session");
    replica.shutdown().await;
}

/// Guarantee (on the wire): setWatches2 on reconnect restores persistent and
/// persistent-recursive watches; later changes reach the resumed connection. (`zookeeper-client`
/// 0.11 re-sends only one-shot watches, so this needs a raw connection.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_watches2_restores_persistent_watches_on_reconnect() {
    let dir = tempfile::tempdir().unwrap();
    let replica = start(dir.path()).await;
    let writer = connect(replica.client_addr()).await;
    let mut raw = Raw::connect(replica.client_addr()).await;
    for (path, mode) in [("/pp", add_watch_mode::PERSISTENT), ("/rr", add_watch_mode::PERSISTENT_RECURSIVE)] {
        raw.call(&Request::AddWatch(AddWatchRequest { path: path.into(), mode })).await.unwrap();
    }
    let (session, passwd, last_zxid) = (raw.session, raw.passwd.clone(), raw.last_zxid);
    drop(raw);
    writer.create("/pp", b"", &open()).await.unwrap();
    writer.create("/rr", b"", &open()).await.unwrap();

    let mut raw = Raw::resume(replica.client_addr(), session, &passwd).await.unwrap_or_else(|_| panic!("resumes"));
    let watches = SetWatches2 {
        relative_zxid: last_zxid,
        persistent_watches: vec!["/pp".into()],
        persistent_recursive_watches: vec!["/rr".into()],
        ..SetWatches2::default()
    };
    raw.send(proto::xid::SET_WATCHES, &Request::SetWatches2(watches)).await;
    assert_eq!(raw.reply(proto::xid::SET_WATCHES, 105).await, Ok(Response::Empty));
    writer.set_data("/pp", b"x", None).await.unwrap();
    writer.create("/rr/child", b"", &open()).await.unwrap();
    assert_eq!(raw.event().await, notification(event_type::NODE_DATA_CHANGED, "/pp"));
    assert_eq!(raw.event().await, notification(event_type::NODE_CREATED, "/rr/child"));
    replica.shutdown().await;
}

/// Guarantee: when a session is resumed on a new connection, the server closes the old
/// connection entirely, as ZooKeeper does on revalidation: what a client still sends there is
/// not executed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_whose_session_moved_is_closed_and_its_requests_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let replica = start(dir.path()).await;
    let bystander = Bystander::join(replica.client_addr()).await;
    let mut old = Raw::connect(replica.client_addr()).await;
    let mut new = Raw::resume(replica.client_addr(), old.session, &old.passwd).await.unwrap_or_else(|_| panic!());
    old.expect_closed().await;

    // Write creates on the old connection until a write fails (the server's reset) or one of
    // them shows up; each round pings the live connection, which must not stay idle.
    let deadline = Instant::now() + Duration::from_millis(1500);
    let (mut reset, mut sent, mut zombies) = (false, 0, Vec::new());
    while !reset && zombies.is_empty() && Instant::now() < deadline {
        let mut frame = Vec::new();
        proto::encode_request(&mut frame, 100 + sent, &Request::Create(create_request(&format!("/zombie-{sent}"), 0)));
        reset = old.stream.write_all(&frame).await.is_err();
        sent += 1;
        new.call(&Request::Sync(SyncRequest { path: "/".into() })).await.unwrap();
        zombies = bystander.client.list_children("/").await.unwrap();
        zombies.retain(|c| c.starts_with("zombie"));
    }
    assert!(zombies.is_empty(), "creates sent on the connection the session left were executed: {zombies:?}");
    assert!(reset, "the server kept reading the connection the session left");
    assert!(new.call(&exists("/", false)).await.is_ok());
    bystander.assert_untouched().await;
    replica.shutdown().await;
}

// ---- malformed input ----------------------------------------------------------------------------

/// A session that must not notice what other connections do: it owns an ephemeral and writes.
struct Bystander {
    client: zk::Client,
}

impl Bystander {
    async fn join(addr: SocketAddr) -> Bystander {
        let client = connect(addr).await;
        client.create("/bystander", b"", &options(zk::CreateMode::Ephemeral)).await.unwrap();
        Bystander { client }
    }

    async fn assert_untouched(&self) {
        let stat = self.client.check_stat("/bystander").await.unwrap().expect("the bystander's ephemeral survives");
        assert_eq!(stat.ephemeral_owner, self.client.session_id().0);
        self.client.set_data("/bystander", b"still here", None).await.unwrap();
        assert_eq!(self.client.state(), zk::SessionState::SyncConnected);
    }
}

/// Guarantee: a first frame that is a request instead of a ConnectRequest closes the connection
/// without opening a session; other sessions are untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_before_the_handshake_closes_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let replica = start(dir.path()).await;
    let addr = replica.client_addr();
    let bystander = Bystander::join(addr).await;
    let sessions = mntr(addr, "zk_global_sessions").await;
    let requests = [
        (proto::xid::PING, Request::Ping),
        (1, get_data("/bystander", true)),
        (1, Request::Create(create_request("/early", 1))),
        (1, Request::CloseSession),
        (1, Request::WhoAmI),
    ];
    for (xid, request) in &requests {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut frame = Vec::new();
        proto::encode_request(&mut frame, *xid, request);
        stream.write_all(&frame).await.unwrap();
        let answer = read_until_closed(&mut stream).await;
        // Either nothing, or ZooKeeper's refusal of a session (session 0).
        if !answer.is_empty() {
            let (payload, _) = split_frame(&answer, usize::MAX >> 1).unwrap().expect("a whole frame");
            let response = ConnectResponse::decode(payload).unwrap();
            assert_eq!(response.session_id, 0, "{request:?} before the handshake opened a session");
        }
    }
    // An empty frame too.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(&[0, 0, 0, 0]).await.unwrap();
    read_until_closed(&mut stream).await;
    assert_eq!(mntr(addr, "zk_global_sessions").await, sessions, "no session was opened");
    assert_eq!(four_letter(addr, "ruok").await, "imok");
    bystander.assert_untouched().await;
    replica.shutdown().await;
}

/// Guarantee: an op code the server does not serve (unknown, or one a client may not send) is
/// answered with Unimplemented (-6) for its xid, and the connection goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_op_code_gets_unimplemented_and_the_connection_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let replica = start(dir.path()).await;
    let bystander = Bystander::join(replica.client_addr()).await;
    let mut raw = Raw::connect(replica.client_addr()).await;
    // 999 and 42 are no op; 13 (check) is only valid inside a multi; 20 (deleteContainer) and
    // -10 (createSession) are internal to ZooKeeper; 0 is the notification op.
    for op in [999, 42, 13, 20, -10, 0, i32::MIN] {
        assert_eq!(raw.call(&Request::Unsupported(op)).await, Err(KeeperError::Unimplemented.code()), "op {op}");
        assert!(matches!(raw.call(&exists("/bystander", false)).await, Ok(Response::Stat(_))), "after op {op}");
    }
    bystander.assert_untouched().await;
    replica.shutdown().await;
}

/// Guarantee: an invalid path, or deleting a reserved one, is answered with BadArguments (-8)
/// and the connection goes on.
/// setData checks the path first; create resolves the parent first, as ZooKeeper's
/// PrepRequestProcessor does, so only a path whose parent exists reaches the path check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_path_gets_bad_arguments_and_the_connection_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let replica = start(dir.path()).await;
    let bystander = Bystander::join(replica.client_addr()).await;
    bystander.client.create("/raw", b"", &open()).await.unwrap();
    let mut raw = Raw::connect(replica.client_addr()).await;
    let bad_args = Err(KeeperError::BadArguments.code());
    for path in ["a/b", "/a/", "/a//b", "", "/raw/", "/raw/./x", "/raw/..", "/raw\u{0}x"] {
        let set = Request::SetData(SetDataRequest { path: path.into(), data: b"x".to_vec(), version: -1 });
        assert_eq!(raw.call(&set).await, bad_args, "setData {path:?}");
        assert!(raw.call(&exists("/raw", false)).await.is_ok(), "the connection goes on after {path:?}");
    }
    for path in ["/raw/", "/raw/.", "/raw/.."] {
        assert_eq!(raw.call(&Request::Create(create_request(path, 0))).await, bad_args, "create {path:?}");
    }
    for path in ["/", "/zookeeper", "/zookeeper/quota", "/zookeeper/config"] {
        let delete = Request::Delete(DeleteRequest { path: path.into(), version: -1 });
        assert_eq!(raw.call(&delete).await, bad_args, "delete of the reserved {path:?}");
    }
    for path in ["a/b", "/a//b", "/nothing/"] {
        let created = raw.call(&Request::Create(create_request(path, 0))).await;
        assert!(matches!(created, Err(-101 | -8)), "create {path:?}: {created:?}");
    }
    assert_eq!(bystander.client.count_descendants_number("/raw").await.unwrap(), 0);
    assert_eq!(bystander.client.get_data("/raw").await.unwrap().1.version, 0);
    bystander.assert_untouched().await;
    replica.shutdown().await;
}

/// Guarantee: a frame over ZooKeeper's jute.maxbuffer (1 MiB) closes its connection and changes
/// nothing; other sessions are untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_over_one_mib_closes_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let replica = start(dir.path()).await;
    let bystander = Bystander::join(replica.client_addr()).await;
    bystander.client.create("/big", b"small", &open()).await.unwrap();
    let mut raw = Raw::connect(replica.client_addr()).await;
    let data = vec![7u8; JUTE_MAX_BUFFER + 64 * 1024];
    let mut frame = Vec::new();
    proto::encode_request(&mut frame, 1, &Request::SetData(SetDataRequest { path: "/big".into(), data, version: -1 }));
    // The server may close before it has read everything: a failed write is expected.
    let _ = raw.stream.write_all(&frame).await;
    raw.expect_closed().await;
    assert_eq!(bystander.client.get_data("/big").await.unwrap().0, b"small");
    bystander.assert_untouched().await;
    replica.shutdown().await;
}

/// Guarantee: a frame cut short by the end of the stream (or a negative length) closes the
/// connection; other sessions are untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_frame_then_eof_closes_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let replica = start(dir.path()).await;
    let bystander = Bystander::join(replica.client_addr()).await;
    let mut whole = Vec::new();
    proto::encode_request(&mut whole, 1, &Request::Create(create_request("/truncated", 0)));
    for cut in [2, 4, 9, whole.len() - 1] {
        let mut raw = Raw::connect(replica.client_addr()).await;
        raw.stream.write_all(&whole[..cut]).await.unwrap();
        raw.stream.shutdown().await.unwrap();
        raw.expect_closed().await;
    }
    let mut raw = Raw::connect(replica.client_addr()).await;
    raw.stream.write_all(&(-5i32).to_be_bytes()).await.unwrap();
    raw.expect_closed().await;
    assert_eq!(bystander.client.check_stat("/truncated").await.unwrap(), None);
    bystander.assert_untouched().await;
    replica.shutdown().await;
}

/// Guarantee: no sequence of bytes sent after a valid handshake breaks the server: 2,000 random
/// inputs (fixed seed; mostly frames with a real op code and a random body) each get whole
/// reply frames or a closed connection, and afterwards a new client works and other sessions
/// are untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bytes_after_the_handshake_never_break_the_server() {
    const CASES: usize = 2_000;
    let dir = tempfile::tempdir().unwrap();
    let replica = start(dir.path()).await;
    let addr = replica.client_addr();
    let bystander = Bystander::join(addr).await;
    bystander.client.create("/fuzz", b"", &open()).await.unwrap();
    let mut rng = SplitMix64(0x5eed_5a11);
    let mut session = (0i64, vec![0u8; 16]);
    for case in 0..CASES {
        let input = random_input(&mut rng);
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut out = Vec::new();
        ConnectRequest { timeout: 2000, session_id: session.0, passwd: session.1.clone(), ..connect_request() }
            .encode(&mut out);
        out.extend_from_slice(&input);
        // The server may close before reading everything.
        let _ = stream.write_all(&out).await;
        let _ = stream.shutdown().await;
        let mut answer = Vec::new();
        let clean = read_all(&mut stream, &mut answer).await;
        let mut rest = answer.as_slice();
        if let Some((payload, used)) = split_frame(rest, usize::MAX >> 1).unwrap() {
            let response = ConnectResponse::decode(payload).unwrap();
            // A random closeSession may have ended the session: open a new one next time.
            session = (response.session_id, response.passwd);
            rest = &rest[used..];
        }
        while let Some((_, used)) = split_frame(rest, usize::MAX >> 1).unwrap() {
            rest = &rest[used..];
        }
        assert!(!clean || rest.is_empty(), "case {case} ({input:02x?}): the server sent a torn frame");
    }
    let fresh = connect(addr).await;
    fresh.create("/after-fuzz", b"ok", &open()).await.unwrap();
    assert_eq!(fresh.get_data("/after-fuzz").await.unwrap().0, b"ok");
    assert_eq!(four_letter(addr, "ruok").await, "imok");
    bystander.assert_untouched().await;
    replica.shutdown().await;
}

/// Ops the random inputs use: every op a client can name, some it may not, and no op.
/// closeSession (-11) is left out: it would only end the session the inputs share.
const FUZZ_OPS: &[i32] = &[
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 100, 101, 102, 103, 104, 105, 106,
    107, -10, -1, 999,
];
const FUZZ_PATHS: &[&str] = &["/", "/fuzz", "/fuzz/a", "/bystander", "/zookeeper", "/zookeeper/config", "fuzz", "//"];

/// One random input: noise, or a frame with a random or real op and a random body that often
/// starts with a path; its length prefix is sometimes a lie.
fn random_input(rng: &mut SplitMix64) -> Vec<u8> {
    if rng.below(4) == 0 {
        let len = rng.below(64) as usize;
        return rng.bytes(len);
    }
    let mut payload = Vec::new();
    let xid = if rng.below(4) == 0 { rng.next() as i32 } else { rng.below(1000) as i32 + 1 };
    let op = if rng.below(8) == 0 { rng.next() as i32 } else { FUZZ_OPS[rng.below(FUZZ_OPS.len() as u64) as usize] };
    payload.extend_from_slice(&xid.to_be_bytes());
    payload.extend_from_slice(&op.to_be_bytes());
    if rng.below(2) == 0 {
        let path = match rng.below(3) {
            0 => {
                let len = rng.below(12) as usize;
                rng.bytes(len)
            }
            _ => FUZZ_PATHS[rng.below(FUZZ_PATHS.len() as u64) as usize].as_bytes().to_vec(),
        };
        payload.extend_from_slice(&(path.len() as i32).to_be_bytes());
        payload.extend_from_slice(&path);
    }
    let tail = rng.below(48) as usize;
    payload.extend(rng.bytes(tail));
    let len = if rng.below(8) == 0 { rng.next() as i32 } else { payload.len() as i32 };
    let mut frame = len.to_be_bytes().to_vec();
    frame.extend_from_slice(&payload);
    frame
}

/// SplitMix64: a fixed-seed generator, so that a failing case reproduces.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

// ---- raw connections and the proxy ---------------------------------------------------------------

fn connect_request() -> ConnectRequest {
    ConnectRequest {
        protocol_version: 0,
        last_zxid_seen: 0,
        timeout: 2000,
        session_id: 0,
        passwd: vec![0; 16],
        read_only: Some(false),
    }
}

fn create_request(path: &str, flags: i32) -> CreateRequest {
    CreateRequest { path: path.into(), data: Vec::new(), acl: Acl::open_unsafe(), flags }
}

fn exists(path: &str, watch: bool) -> Request {
    Request::Exists(ExistsRequest { path: path.into(), watch })
}

fn get_data(path: &str, watch: bool) -> Request {
    Request::GetData(GetDataRequest { path: path.into(), watch })
}

fn notification(kind: i32, path: &str) -> WatcherEvent {
    WatcherEvent::new(kind, path)
}

/// Reads until the peer closes (or resets) the connection; true for a clean end of stream.
async fn read_all(stream: &mut TcpStream, into: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match within("the server to close the connection", stream.read(&mut chunk)).await {
            Ok(0) => return true,
            Ok(n) => into.extend_from_slice(&chunk[..n]),
            Err(_) => return false,
        }
    }
}

async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut answer = Vec::new();
    read_all(stream, &mut answer).await;
    answer
}

/// A client connection spoken by hand, for what `zookeeper-client` cannot send or would hide.
struct Raw {
    stream: TcpStream,
    inbox: Vec<u8>,
    events: VecDeque<WatcherEvent>,
    next_xid: i32,
    session: i64,
    passwd: Vec<u8>,
    last_zxid: i64,
}

impl Raw {
    /// A new session on a new connection.
    async fn connect(addr: SocketAddr) -> Raw {
        Raw::resume(addr, 0, &[0; 16]).await.unwrap_or_else(|(response, _)| panic!("session refused: {response:?}"))
    }

    /// Resumes `session` (0: a new one) with `passwd`; the refusal and the connection if the
    /// server refuses.
    async fn resume(addr: SocketAddr, session: i64, passwd: &[u8]) -> Result<Raw, (ConnectResponse, Raw)> {
        let stream = TcpStream::connect(addr).await.unwrap();
        let mut raw = Raw {
            stream,
            inbox: Vec::new(),
            events: VecDeque::new(),
            next_xid: 1,
            session: 0,
            passwd: Vec::new(),
            last_zxid: 0,
        };
        let mut out = Vec::new();
        ConnectRequest { session_id: session, passwd: passwd.to_vec(), ..connect_request() }.encode(&mut out);
        raw.stream.write_all(&out).await.unwrap();
        let frame = raw.frame().await.expect("a connect response");
        let response = ConnectResponse::decode(&frame).unwrap();
        if response.session_id == 0 {
            return Err((response, raw));
        }
        raw.session = response.session_id;
        raw.passwd = response.passwd;
        Ok(raw)
    }

    async fn send(&mut self, xid: i32, request: &Request) {
        let mut out = Vec::new();
        proto::encode_request(&mut out, xid, request);
        self.stream.write_all(&out).await.unwrap();
    }

    /// Sends `request` and returns its reply: the body, or the error code.
    async fn call(&mut self, request: &Request) -> Result<Response, i32> {
        let xid = self.next_xid;
        self.next_xid += 1;
        self.send(xid, request).await;
        self.reply(xid, request.op()).await
    }

    /// The reply to `xid`, which must be the next one; notifications before it are kept for
    /// [`Raw::event`].
    async fn reply(&mut self, xid: i32, op: i32) -> Result<Response, i32> {
        loop {
            let frame = self.frame().await.expect("the server closed the connection instead of replying");
            if frame_xid(&frame) == proto::xid::NOTIFICATION {
                self.events.push_back(proto::decode_notification(&frame).unwrap().1);
                continue;
            }
            let (header, body) = proto::decode_reply(&frame, op).unwrap();
            assert_eq!(header.xid, xid, "replies come in request order");
            self.last_zxid = self.last_zxid.max(header.zxid);
            return body.ok_or(header.err);
        }
    }

    /// The next watch notification.
    async fn event(&mut self) -> WatcherEvent {
        if let Some(event) = self.events.pop_front() {
            return event;
        }
        let frame = self.frame().await.expect("the server closed the connection instead of notifying");
        assert_eq!(frame_xid(&frame), proto::xid::NOTIFICATION, "a frame that is no notification");
        proto::decode_notification(&frame).unwrap().1
    }

    /// The next frame's payload; `None` once the server closed the connection.
    async fn frame(&mut self) -> Option<Vec<u8>> {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            if let Some((payload, used)) = split_frame(&self.inbox, usize::MAX >> 1).unwrap() {
                let payload = payload.to_vec();
                self.inbox.drain(..used);
                return Some(payload);
            }
            let mut chunk = [0u8; 16 * 1024];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => panic!("no frame from the server in {DEADLINE:?}"),
                Ok(Ok(0)) => {
                    assert!(self.inbox.is_empty(), "the server closed the connection in the middle of a frame");
                    return None;
                }
                Ok(Err(_)) => return None,
                Ok(Ok(n)) => self.inbox.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Reads until the server closes the connection (replies before that are ignored).
    async fn expect_closed(&mut self) {
        while self.frame().await.is_some() {}
    }
}

fn frame_xid(frame: &[u8]) -> i32 {
    i32::from_be_bytes(frame[..4].try_into().unwrap())
}

/// A TCP proxy in front of the replica: `cut` drops every connection through it and `refuse`
/// turns new ones away, so that a client really loses its connection.
struct Proxy {
    addr: SocketAddr,
    cuts: Arc<tokio::sync::watch::Sender<u64>>,
    refusing: Arc<AtomicBool>,
    accepter: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cuts = Arc::new(tokio::sync::watch::Sender::new(0u64));
        let refusing = Arc::new(AtomicBool::new(false));
        let accepter = tokio::spawn({
            let (cuts, refusing) = (cuts.clone(), refusing.clone());
            async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    if refusing.load(Ordering::SeqCst) {
                        continue;
                    }
                    let mut cut = cuts.subscribe();
                    tokio::spawn(async move {
                        let Ok(mut server) = TcpStream::connect(target).await else { return };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                            _ = cut.changed() => {}
                        }
                    });
                }
            }
        });
        Proxy { addr, cuts, refusing, accepter }
    }

    /// Drops every connection open through the proxy.
    fn cut(&self) {
        self.cuts.send_modify(|n| *n += 1);
    }

    /// While true, new connections are accepted and dropped at once.
    fn refuse(&self, refuse: bool) {
        self.refusing.store(refuse, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accepter.abort();
    }
}
