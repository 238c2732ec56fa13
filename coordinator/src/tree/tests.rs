use super::*;
use crate::watch::EventType::{NodeChildrenChanged, NodeCreated, NodeDataChanged, NodeDeleted};

const S1: SessionId = 0x0100_0000_0000_0001;
const S2: SessionId = 0x0100_0000_0000_0002;

fn anyone() -> Caller<'static> {
    Caller::new(S1, &[])
}

fn txn(zxid: Zxid) -> Txn {
    Txn::new(zxid, 1_000 + zxid)
}

fn create(tree: &mut ZnodeTree, zxid: Zxid, path: &str) -> Created {
    tree.create(txn(zxid), anyone(), CreateRequest::new(path, vec![])).unwrap().value
}

fn create_mode(tree: &mut ZnodeTree, zxid: Zxid, caller: Caller<'_>, path: &str, mode: CreateMode) -> String {
    tree.create(txn(zxid), caller, CreateRequest::new(path, vec![]).mode(mode)).unwrap().value.path
}

fn ev(kind: EventType, path: &str, zxid: Zxid) -> WatchEvent {
    WatchEvent::new(kind, path, zxid)
}

fn create_err(tree: &mut ZnodeTree, caller: Caller<'_>, req: CreateRequest) -> KeeperError {
    let before = tree.snapshot();
    let err = tree.create(txn(99), caller, req).unwrap_err();
    assert_eq!(tree.snapshot(), before, "a failed create changes nothing");
    err
}

fn children(tree: &ZnodeTree, path: &str) -> Vec<String> {
    tree.get_children(anyone(), path).unwrap().0
}

// ---- the fresh tree ----------------------------------------------------------------------------

#[test]
fn fresh_tree_has_root_and_reserved_nodes() {
    let tree = ZnodeTree::default();
    assert_eq!(tree.node_count(), 4);
    assert_eq!(children(&tree, "/"), vec!["zookeeper"]);
    assert_eq!(children(&tree, "/zookeeper"), vec!["config", "quota"]);
    let root = tree.stat("/").unwrap();
    // ZooKeeper shows cversion -1 on a fresh root: 2 × 0 creates − 1 child.
    assert_eq!(root, Stat { cversion: -1, num_children: 1, ..Stat::default() });
    assert_eq!(tree.stat("/zookeeper").unwrap().cversion, -2);
    assert_eq!(tree.stat("/zookeeper/quota").unwrap(), Stat::default());
    assert_eq!(tree.get_acl(anyone(), "/zookeeper/config").unwrap().0, Acl::read_unsafe());
    assert_eq!(tree.get_acl(anyone(), "/").unwrap().0, Acl::open_unsafe());
    tree.check_invariants().unwrap();
}

// ---- create ------------------------------------------------------------------------------------

#[test]
fn create_sets_stat_and_bumps_parent() {
    let mut tree = ZnodeTree::default();
    let applied = tree.create(Txn::new(5, 777), anyone(), CreateRequest::new("/a", b"hello".to_vec())).unwrap();
    assert_eq!(applied.value.path, "/a");
    let stat = applied.value.stat;
    assert_eq!(
        stat,
        Stat {
            czxid: 5,
            mzxid: 5,
            ctime: 777,
            mtime: 777,
            version: 0,
            cversion: 0,
            aversion: 0,
            ephemeral_owner: 0,
            data_length: 5,
            num_children: 0,
            pzxid: 5
        }
    );
    assert_eq!(applied.events, vec![ev(NodeCreated, "/a", 5), ev(NodeChildrenChanged, "/", 5)]);
    let root = tree.stat("/").unwrap();
    assert_eq!((root.cversion, root.pzxid, root.num_children), (0, 5, 2));
    assert_eq!(tree.get_data(anyone(), "/a").unwrap(), (&b"hello"[..], stat));

    let applied = tree.create(Txn::new(6, 778), anyone(), CreateRequest::new("/a/b", vec![])).unwrap();
    assert_eq!(applied.events, vec![ev(NodeCreated, "/a/b", 6), ev(NodeChildrenChanged, "/a", 6)]);
    let a = tree.stat("/a").unwrap();
    assert_eq!((a.cversion, a.pzxid, a.num_children, a.mzxid, a.version), (1, 6, 1, 5, 0));
    tree.check_invariants().unwrap();
}

#[test]
fn create_errors_match_zookeeper() {
    let mut tree = ZnodeTree::default();
    create(&mut tree, 1, "/a");
    let eph = create_mode(&mut tree, 2, anyone(), "/e", CreateMode::Ephemeral);
    assert_eq!(create_err(&mut tree, anyone(), CreateRequest::new("/a", vec![])), KeeperError::NodeExists);
    assert_eq!(create_err(&mut tree, anyone(), CreateRequest::new("/", vec![])), KeeperError::NodeExists);
    assert_eq!(create_err(&mut tree, anyone(), CreateRequest::new("/zookeeper", vec![])), KeeperError::NodeExists);
    assert_eq!(create_err(&mut tree, anyone(), CreateRequest::new("/x/y", vec![])), KeeperError::NoNode);
    // ZooKeeper finds the parent before it validates the whole path, so "/a//b" has no parent.
    assert_eq!(create_err(&mut tree, anyone(), CreateRequest::new("/a//b", vec![])), KeeperError::NoNode);
    assert_eq!(
        create_err(&mut tree, anyone(), CreateRequest::new(format!("{eph}/c"), vec![])),
        KeeperError::NoChildrenForEphemerals
    );
    for bad in ["a", "", "/a/", "/a/.", "/a/..", "/a\0b", "/a/\u{1}"] {
        assert_eq!(
            create_err(&mut tree, anyone(), CreateRequest::new(bad, vec![])),
            KeeperError::BadArguments,
            "{bad:?}"
        );
    }
    assert_eq!(create_err(&mut tree, anyone(), CreateRequest::new("/b", vec![]).acl(vec![])), KeeperError::InvalidAcl);
    let bad_scheme = vec![Acl::new(perms::ALL, Id::new("x509", "CN=me"))];
    assert_eq!(
        create_err(&mut tree, anyone(), CreateRequest::new("/b", vec![]).acl(bad_scheme)),
        KeeperError::InvalidAcl
    );
    assert_eq!(
        create_err(&mut tree, anyone(), CreateRequest::new("/b", vec![]).acl(Acl::creator_all())),
        KeeperError::InvalidAcl
    );
    // InvalidAcl is checked before the parent.
    assert_eq!(
        create_err(&mut tree, anyone(), CreateRequest::new("/x/y", vec![]).acl(vec![])),
        KeeperError::InvalidAcl
    );
    tree.check_invariants().unwrap();
}

#[test]
fn data_size_limit_is_one_mebibyte_minus_one() {
    let mut tree = ZnodeTree::default();
    let max = vec![7u8; MAX_DATA_LEN];
    let made = tree.create(txn(1), anyone(), CreateRequest::new("/big", max.clone())).unwrap().value;
    assert_eq!(made.stat.data_length, 1_048_575);
    assert_eq!(
        create_err(&mut tree, anyone(), CreateRequest::new("/big2", vec![0; MAX_DATA_LEN + 1])),
        KeeperError::BadArguments
    );
    assert_eq!(
        tree.set_data(txn(2), anyone(), "/big", vec![0; MAX_DATA_LEN + 1], -1).unwrap_err(),
        KeeperError::BadArguments
    );
    assert_eq!(tree.get_data(anyone(), "/big").unwrap().0, &max[..]);
    assert_eq!(tree.set_config(txn(3), vec![0; MAX_DATA_LEN + 1]).unwrap_err(), KeeperError::BadArguments);
    let op = Op::Create(CreateRequest::new("/big3", vec![0; MAX_DATA_LEN + 1]));
    assert_eq!(tree.multi(txn(4), anyone(), vec![op]).unwrap_err().error, KeeperError::BadArguments);
}

// ---- sequential numbering ----------------------------------------------------------------------

#[test]
fn sequential_suffix_is_the_parents_create_counter() {
    let mut tree = ZnodeTree::default();
    create(&mut tree, 1, "/q");
    let seq = |tree: &mut ZnodeTree, zxid| create_mode(tree, zxid, anyone(), "/q/n-", CreateMode::PersistentSequential);
    assert_eq!(seq(&mut tree, 2), "/q/n-0000000000");
    assert_eq!(seq(&mut tree, 3), "/q/n-0000000001");
    assert_eq!(seq(&mut tree, 4), "/q/n-0000000002");
    tree.delete(txn(5), anyone(), "/q/n-0000000001", -1).unwrap();
    // Deletes do not give numbers back, and a plain create uses one up too.
    assert_eq!(seq(&mut tree, 6), "/q/n-0000000003");
    create(&mut tree, 7, "/q/plain");
    assert_eq!(create_mode(&mut tree, 8, anyone(), "/q/", CreateMode::EphemeralSequential), "/q/0000000005");
    assert_eq!(children(&tree, "/q"), vec!["0000000005", "n-0000000000", "n-0000000002", "n-0000000003", "plain"]);
    // Stat.cversion counts creates and deletes: 6 creates + 1 delete.
    let q = tree.stat("/q").unwrap();
    assert_eq!((q.cversion, q.num_children, q.pzxid), (7, 5, 8));
    // A name already taken is NodeExists, and the counter does not move on failure: the
    // sequential create keeps failing until another create moves the counter on.
    create(&mut tree, 9, "/q/n-0000000007");
    let seq_req = || CreateRequest::new("/q/n-", vec![]).mode(CreateMode::PersistentSequential);
    assert_eq!(create_err(&mut tree, anyone(), seq_req()), KeeperError::NodeExists);
    assert_eq!(create_err(&mut tree, anyone(), seq_req()), KeeperError::NodeExists);
    create(&mut tree, 10, "/q/other");
    assert_eq!(seq(&mut tree, 10), "/q/n-0000000008");
    // Under the root: the root's counter (one create so far, /q).
    assert_eq!(create_mode(&mut tree, 11, anyone(), "/", CreateMode::PersistentSequential), "/0000000001");
    tree.check_invariants().unwrap();
}

#[test]
fn sequential_suffix_formats_negative_counters_like_java() {
    let mut tree = ZnodeTree::default();
    create(&mut tree, 1, "/q");
    let q = tree.lookup("/q").unwrap();
    tree.node_mut(q).cversion = i32::MAX;
    assert_eq!(create_mode(&mut tree, 2, anyone(), "/q/s", CreateMode::PersistentSequential), "/q/s2147483647");
    // The counter overflows past 2^31 as in ZooKeeper; String.format("%010d", -2147483648).
    assert_eq!(create_mode(&mut tree, 3, anyone(), "/q/s", CreateMode::PersistentSequential), "/q/s-2147483648");
}

// ---- ephemerals and sessions -------------------------------------------------------------------

#[test]
fn ephemerals_belong_to_their_session() {
    let mut tree = ZnodeTree::default();
    create(&mut tree, 1, "/app");
    let s2 = Caller::new(S2, &[]);
    create_mode(&mut tree, 2, anyone(), "/app/a", CreateMode::Ephemeral);
    create_mode(&mut tree, 3, anyone(), "/app/ab", CreateMode::Ephemeral);
    create_mode(&mut tree, 4, anyone(), "/b", CreateMode::EphemeralSequential);
    create_mode(&mut tree, 5, s2, "/app/c", CreateMode::Ephemeral);
    assert_eq!(tree.stat("/app/a").unwrap().ephemeral_owner, S1);
    assert_eq!(tree.node_type("/app/c"), Some(NodeType::Ephemeral(S2)));
    assert_eq!(tree.get_ephemerals(S1, "/"), vec!["/app/a", "/app/ab", "/b0000000001"]);
    assert_eq!(tree.get_ephemerals(S1, ""), tree.get_ephemerals(S1, " / "));
    // A string prefix, as ZooKeeper matches it: "/app/a" also matches "/app/ab".
    assert_eq!(tree.get_ephemerals(S1, "/app/a"), vec!["/app/a", "/app/ab"]);
    assert_eq!(tree.get_ephemerals(S2, "/"), vec!["/app/c"]);
    assert!(tree.get_ephemerals(77, "/").is_empty());
    assert_eq!(tree.ephemeral_count(), 4);
    assert_eq!(tree.sessions_with_ephemerals(), vec![S1, S2]);
    // Session 0 (or one that looks like a container or TTL owner) cannot own ephemerals.
    let nobody = Caller::new(0, &[]);
    assert_eq!(
        create_err(&mut tree, nobody, CreateRequest::new("/z", vec![]).mode(CreateMode::Ephemeral)),
        KeeperError::BadArguments
    );
    let weird = Caller::new(i64::MIN, &[]);
    assert_eq!(
        create_err(&mut tree, weird, CreateRequest::new("/z", vec![]).mode(CreateMode::Ephemeral)),
        KeeperError::BadArguments
    );
    tree.check_invariants().unwrap();
}

#[test]
fn close_session_deletes_only_that_sessions_ephemerals() {
    let mut tree = ZnodeTree::default();
    create(&mut tree, 1, "/app");
    let s2 = Caller::new(S2, &[]);
    create_mode(&mut tree, 2, anyone(), "/app/x", CreateMode::Ephemeral);
    create_mode(&mut tree, 3, anyone(), "/e", CreateMode::Ephemeral);
    create_mode(&mut tree, 4, s2, "/app/y", CreateMode::Ephemeral);
    create(&mut tree, 5, "/app/p");
    let closed = tree.close_session(txn(9), S1);
    assert_eq!(closed.value, vec!["/app/x", "/e"]);
    assert_eq!(
        closed.events,
        vec![
            ev(NodeDeleted, "/app/x", 9),
            ev(NodeChildrenChanged, "/app", 9),
            ev(NodeDeleted, "/e", 9),
            ev(NodeChildrenChanged, "/", 9)
        ]
    );
    assert_eq!(children(&tree, "/app"), vec!["p", "y"]);
    assert_eq!(tree.stat("/app").unwrap().pzxid, 9);
    assert_eq!(tree.stat("/").unwrap().pzxid, 9);
    assert!(tree.get_ephemerals(S1, "/").is_empty());
    assert_eq!(tree.get_ephemerals(S2, "/"), vec!["/app/y"]);
    assert_eq!(tree.sessions_with_ephemerals(), vec![S2]);
    // Closing again, or a session with nothing, is a no-op.
    let again = tree.close_session(txn(10), S1);
    assert!(again.value.is_empty() && again.events.is_empty());
    tree.check_invariants().unwrap();
}

#[test]
fn close_session_ignores_acls() {
    let mut tree = ZnodeTree::default();
    let alice = [acl::digest_id("alice:pw")];
    let locked = vec![Acl::new(perms::CREATE | perms::READ, alice[0].clone())];
    tree.create(txn(1), Caller::new(S2, &alice), CreateRequest::new("/locked", vec![]).acl(locked)).unwrap();
    create_mode(&mut tree, 2, Caller::new(S1, &alice), "/locked/e", CreateMode::Ephemeral);
    assert_eq!(tree.delete(txn(3), anyone(), "/locked/e", -1).unwrap_err(), KeeperError::NoAuth);
    assert_eq!(tree.close_session(txn(4), S1).value, vec!["/locked/e"]);
}

// ---- containers and TTL ------------------------------------------------------------------------

#[test]
fn containers_expire_once_emptied() {
    let mut tree = ZnodeTree::default();
    create_mode(&mut tree, 1, anyone(), "/c", CreateMode::Container);
    let stat = tree.stat("/c").unwrap();
    assert_eq!(stat.ephemeral_owner, 0, "ZooKeeper shows 0 for containers");
    assert_eq!(tree.node_type("/c"), Some(NodeType::Container));
    assert!(tree.expired_nodes(i64::MAX).is_empty(), "a container that never had a child stays");
    create(&mut tree, 2, "/c/kid");
    assert!(tree.expired_nodes(i64::MAX).is_empty(), "a container with children stays");
    assert_eq!(tree.delete_expired(txn(3), "/c").unwrap_err(), KeeperError::NotEmpty);
    tree.delete(txn(4), anyone(), "/c/kid", -1).unwrap();
    assert_eq!(tree.expired_nodes(0), vec!["/c"]);
    let deleted = tree.delete_expired(txn(5), "/c").unwrap();
    assert_eq!(deleted.events, vec![ev(NodeDeleted, "/c", 5), ev(NodeChildrenChanged, "/", 5)]);
    assert_eq!(tree.stat("/c"), None);
    assert_eq!(tree.stat("/").unwrap().pzxid, 5);
    assert_eq!(tree.delete_expired(txn(6), "/c").unwrap_err(), KeeperError::NoNode);
    create(&mut tree, 7, "/p");
    assert_eq!(tree.delete_expired(txn(8), "/p").unwrap_err(), KeeperError::BadVersion, "not a container");
    assert_eq!(tree.delete_expired(txn(8), "/zookeeper/quota").unwrap_err(), KeeperError::BadVersion);
    tree.check_invariants().unwrap();
}

#[test]
fn ttl_nodes_expire_after_ttl_without_changes() {
    let mut tree = ZnodeTree::default();
    let ttl_req = |path: &str, ttl| CreateRequest::new(path, vec![]).mode(CreateMode::PersistentWithTtl).ttl(ttl);
    tree.create(Txn::new(1, 1_000), anyone(), ttl_req("/t", 100)).unwrap();
    assert_eq!(tree.node_type("/t"), Some(NodeType::Ttl(100)));
    assert_eq!(tree.stat("/t").unwrap().ephemeral_owner, 0);
    assert!(tree.expired_nodes(1_100).is_empty(), "mtime + ttl is not yet past");
    assert_eq!(tree.expired_nodes(1_101), vec!["/t"]);
    assert_eq!(tree.delete_expired(Txn::new(2, 1_100), "/t").unwrap_err(), KeeperError::BadVersion);
    // setData moves mtime; a child holds it too.
    tree.set_data(Txn::new(3, 1_050), anyone(), "/t", b"x", -1).unwrap();
    assert!(tree.expired_nodes(1_101).is_empty());
    tree.create(Txn::new(4, 1_060), anyone(), CreateRequest::new("/t/kid", vec![])).unwrap();
    assert!(tree.expired_nodes(10_000).is_empty());
    tree.delete(Txn::new(5, 1_070), anyone(), "/t/kid", -1).unwrap();
    assert_eq!(tree.expired_nodes(1_151), vec!["/t"]);
    tree.delete_expired(Txn::new(6, 1_151), "/t").unwrap();
    assert_eq!(tree.stat("/t"), None);

    let seq = CreateRequest::new("/s-", vec![]).mode(CreateMode::PersistentSequentialWithTtl).ttl(5);
    let made = tree.create(Txn::new(7, 2_000), anyone(), seq).unwrap().value;
    assert_eq!(made.path, "/s-0000000001");
    assert_eq!(tree.expired_nodes(2_006), vec!["/s-0000000001"]);
    tree.check_invariants().unwrap();
}

#[test]
fn ttl_arguments_are_checked() {
    let mut tree = ZnodeTree::default();
    let req = |mode, ttl: Option<i64>| CreateRequest { ttl, ..CreateRequest::new("/t", vec![]).mode(mode) };
    for bad in [None, Some(0), Some(-5), Some(MAX_TTL_MS + 1)] {
        assert_eq!(
            create_err(&mut tree, anyone(), req(CreateMode::PersistentWithTtl, bad)),
            KeeperError::BadArguments,
            "{bad:?}"
        );
    }
    for mode in [CreateMode::Persistent, CreateMode::Ephemeral, CreateMode::Container, CreateMode::PersistentSequential]
    {
        assert_eq!(create_err(&mut tree, anyone(), req(mode, Some(10))), KeeperError::BadArguments, "{mode:?}");
        assert_eq!(create_err(&mut tree, anyone(), req(mode, Some(0))), KeeperError::BadArguments, "{mode:?}");
    }
    // ttl −1 is what non-TTL creates send.
    tree.create(txn(1), anyone(), req(CreateMode::Persistent, Some(-1))).unwrap();
    tree.create(
        txn(2),
        anyone(),
        CreateRequest::new("/max", vec![]).mode(CreateMode::PersistentWithTtl).ttl(MAX_TTL_MS),
    )
    .unwrap();
    assert_eq!(tree.node_type("/max"), Some(NodeType::Ttl(MAX_TTL_MS)));
}

// ---- delete ------------------------------------------------------------------------------------

#[test]
fn delete_rules_and_bookkeeping() {
    let mut tree = ZnodeTree::default();
    create(&mut tree, 1, "/a");
    create(&mut tree, 2, "/a/b");
    tree.set_data(txn(3), anyone(), "/a/b", vec![1], -1).unwrap();
    let before = tree.snapshot();
    assert_eq!(tree.delete(txn(4), anyone(), "/a", -1).unwrap_err(), KeeperError::NotEmpty);
    assert_eq!(tree.delete(txn(4), anyone(), "/a/b", 0).unwrap_err(), KeeperError::BadVersion);
    assert_eq!(tree.delete(txn(4), anyone(), "/a/nope", -1).unwrap_err(), KeeperError::NoNode);
    assert_eq!(tree.delete(txn(4), anyone(), "/nope/x", -1).unwrap_err(), KeeperError::NoNode);
    assert_eq!(tree.delete(txn(4), anyone(), "/a/", -1).unwrap_err(), KeeperError::NoNode);
    assert_eq!(tree.delete(txn(4), anyone(), "nope", -1).unwrap_err(), KeeperError::BadArguments);
    assert_eq!(tree.delete(txn(4), anyone(), "/a\0", -1).unwrap_err(), KeeperError::BadArguments);
    assert_eq!(tree.snapshot(), before);
    let a_before = tree.stat("/a").unwrap();
    let deleted = tree.delete(txn(5), anyone(), "/a/b", 1).unwrap();
    assert_eq!(deleted.events, vec![ev(NodeDeleted, "/a/b", 5), ev(NodeChildrenChanged, "/a", 5)]);
    let a = tree.stat("/a").unwrap();
    assert_eq!(a.cversion, a_before.cversion + 1, "a delete counts as a child change");
    assert_eq!((a.num_children, a.pzxid, a.mzxid), (0, 5, 1));
    tree.delete(txn(6), anyone(), "/a", -1).unwrap();
    assert_eq!(tree.stat("/a"), None);
    assert_eq!(tree.node_count(), 4);
    tree.check_invariants().unwrap();
}

#[test]
fn reserved_zookeeper_subtree() {
    let mut tree = ZnodeTree::default();
    for special in ["/", "/zookeeper", "/zookeeper/quota", "/zookeeper/config"] {
        assert_eq!(tree.delete(txn(1), anyone(), special, -1).unwrap_err(), KeeperError::BadArguments, "{special}");
    }
    // As in ZooKeeper: /zookeeper and /zookeeper/quota are open (quota znodes live there), but
    // /zookeeper/config is read-only for everyone but the super user.
    create(&mut tree, 2, "/zookeeper/quota/app");
    tree.delete(txn(3), anyone(), "/zookeeper/quota/app", -1).unwrap();
    assert_eq!(create_err(&mut tree, anyone(), CreateRequest::new("/zookeeper/config/x", vec![])), KeeperError::NoAuth);
    assert_eq!(tree.set_data(txn(4), anyone(), "/zookeeper/config", vec![1], -1).unwrap_err(), KeeperError::NoAuth);
    assert_eq!(tree.set_acl(anyone(), "/zookeeper/config", &Acl::open_unsafe(), -1).unwrap_err(), KeeperError::NoAuth);
    assert_eq!(tree.get_data(anyone(), "/zookeeper/config").unwrap().0, b"");
    let applied = tree.set_config(txn(5), b"server.1=127.0.0.1:2888:3888".to_vec()).unwrap();
    assert_eq!(applied.events, vec![ev(NodeDataChanged, "/zookeeper/config", 5)]);
    assert_eq!(applied.value.version, 1);
    assert_eq!(tree.get_data(anyone(), "/zookeeper/config").unwrap().0, b"server.1=127.0.0.1:2888:3888");
    tree.check_invariants().unwrap();
}

// ---- setData, check, setACL --------------------------------------------------------------------

#[test]
fn set_data_is_versioned() {
    let mut tree = ZnodeTree::default();
    create(&mut tree, 1, "/a");
    let applied = tree.set_data(Txn::new(2, 5_000), anyone(), "/a", b"v1", 0).unwrap();
    assert_eq!(applied.events, vec![ev(NodeDataChanged, "/a", 2)]);
    let s = applied.value;
    assert_eq!((s.version, s.mzxid, s.mtime, s.czxid, s.data_length, s.pzxid), (1, 2, 5_000, 1, 2, 1));
    assert_eq!(tree.set_data(txn(3), anyone(), "/a", b"v2", 0).unwrap_err(), KeeperError::BadVersion);
    assert_eq!(tree.set_data(txn(3), anyone(), "/a", b"v2", 1).unwrap().value.version, 2);
    assert_eq!(tree.set_data(txn(4), anyone(), "/a", b"v3", -1).unwrap().value.version, 3);
    assert_eq!(tree.get_data(anyone(), "/a").unwrap().0, b"v3");
    assert_eq!(tree.set_data(txn(5), anyone(), "/b", vec![], -1).unwrap_err(), KeeperError::NoNode);
    assert_eq!(tree.set_data(txn(5), anyone(), "/a/", vec![], -1).unwrap_err(), KeeperError::BadArguments);
    assert_eq!(tree.set_data(txn(5), anyone(), "a", vec![], -1).unwrap_err(), KeeperError::BadArguments);
    // Data of the root can be set too.
    assert_eq!(tree.set_data(txn(6), anyone(), "/", b"r", -1).unwrap().value.version, 1);
}

#[test]
fn versions_wrap_skipping_minus_one() {
    assert_eq!(next_version(0, -1), Ok(1));
    assert_eq!(next_version(5, 5), Ok(6));
    assert_eq!(next_version(5, 4), Err(KeeperError::BadVersion));
    assert_eq!(next_version(i32::MAX, i32::MAX), Ok(i32::MIN));
    // ZOOKEEPER-4743: −2 → 0, so a version never reads as "any".
    assert_eq!(next_version(-2, -2), Ok(0));
    let mut tree = ZnodeTree::default();
    create(&mut tree, 1, "/a");
    let a = tree.lookup("/a").unwrap();
    tree.node_mut(a).version = -2;
    assert_eq!(tree.set_data(txn(2), anyone(), "/a", vec![], -2).unwrap().value.version, 0);
}

#[test]
fn check_compares_versions() {
    let mut tree = ZnodeTree::default();
    create(&mut tree, 1, "/a");
    tree.set_data(txn(2), anyone(), "/a", vec![], -1).unwrap();
    assert_eq!(tree.check(anyone(), "/a", 1), Ok(()));
    assert_eq!(tree.check(anyone(), "/a", -1), Ok(()));
    assert_eq!(tree.check(anyone(), "/a", 0), Err(KeeperError::BadVersion));
    assert_eq!(tree.check(anyone(), "/b", 0), Err(KeeperError::NoNode));
    assert_eq!(tree.check(anyone(), "b", 0), Err(KeeperError::BadArguments));
    let locked = vec![Acl::new(perms::WRITE, Id::anyone())];
    tree.create(txn(3), anyone(), CreateRequest::new("/w", vec![]).acl(locked)).unwrap();
    assert_eq!(tree.check(anyone(), "/w", 0), Err(KeeperError::NoAuth), "check needs READ");
}

#[test]
fn set_acl_is_versioned_and_needs_admin() {
    let mut tree = ZnodeTree::default();
    let alice = [acl::digest_id("alice:pw")];
    let as_alice = Caller::new(S1, &alice);
    create(&mut tree, 1, "/a");
    let stat = tree.set_acl(as_alice, "/a", &Acl::creator_all(), 0).unwrap();
    assert_eq!((stat.aversion, stat.version, stat.mzxid, stat.cversion), (1, 0, 1, 0));
    assert_eq!(tree.get_acl(as_alice, "/a").unwrap().0, vec![Acl::new(perms::ALL, alice[0].clone())]);
    assert_eq!(tree.set_acl(anyone(), "/a", &Acl::open_unsafe(), -1).unwrap_err(), KeeperError::NoAuth);
    assert_eq!(tree.set_acl(as_alice, "/a", &Acl::open_unsafe(), 0).unwrap_err(), KeeperError::BadVersion);
    assert_eq!(tree.set_acl(as_alice, "/a", &[], -1).unwrap_err(), KeeperError::InvalidAcl);
    assert_eq!(tree.set_acl(as_alice, "/nope", &Acl::open_unsafe(), -1).unwrap_err(), KeeperError::NoNode);
    assert_eq!(tree.set_acl(as_alice, "nope", &Acl::open_unsafe(), -1).unwrap_err(), KeeperError::BadArguments);
    assert_eq!(tree.set_acl(as_alice, "/a", &Acl::open_unsafe(), 1).unwrap().aversion, 2);
    assert_eq!(tree.get_acl(anyone(), "/a").unwrap().0, Acl::open_unsafe());
    tree.check_invariants().unwrap();
}

// ---- reads and ACL enforcement -----------------------------------------------------------------

#[test]
fn reads_need_read_permission() {
    let mut tree = ZnodeTree::default();
    let write_only = vec![Acl::new(perms::WRITE | perms::CREATE, Id::anyone())];
    tree.create(txn(1), anyone(), CreateRequest::new("/w", b"secret".to_vec()).acl(write_only)).unwrap();
    create(&mut tree, 2, "/w/kid");
    assert_eq!(tree.get_data(anyone(), "/w").unwrap_err(), KeeperError::NoAuth);
    assert_eq!(tree.get_children(anyone(), "/w").unwrap_err(), KeeperError::NoAuth);
    assert_eq!(tree.exists(anyone(), "/w").unwrap_err(), KeeperError::NoAuth);
    assert_eq!(tree.get_all_children_number(anyone(), "/w").unwrap_err(), KeeperError::NoAuth);
    assert_eq!(tree.get_acl(anyone(), "/w").unwrap_err(), KeeperError::NoAuth);
    // Without READ the node can still be written and have children created.
    tree.set_data(txn(3), anyone(), "/w", vec![], -1).unwrap();
    for read in [
        tree.get_data(anyone(), "/none").map(drop),
        tree.get_children(anyone(), "/none").map(drop),
        tree.get_acl(anyone(), "/none").map(drop),
        tree.get_all_children_number(anyone(), "/none").map(drop),
    ] {
        assert_eq!(read, Err(KeeperError::NoNode));
    }
    assert_eq!(tree.exists(anyone(), "/none"), Ok(None));
    assert_eq!(tree.exists(anyone(), "/w\0"), Err(KeeperError::BadArguments));
    assert_eq!(tree.exists(anyone(), "/w/kid").unwrap().unwrap().czxid, 2);
}

#[test]
fn write_create_delete_permissions() {
    let mut tree = ZnodeTree::default();
    let read_only = vec![Acl::new(perms::READ, Id::anyone())];
    tree.create(txn(1), anyone(), CreateRequest::new("/r", vec![]).acl(read_only)).unwrap();
    assert_eq!(tree.set_data(txn(2), anyone(), "/r", vec![1], -1).unwrap_err(), KeeperError::NoAuth);
    assert_eq!(create_err(&mut tree, anyone(), CreateRequest::new("/r/x", vec![])), KeeperError::NoAuth);
    // Delete is decided by the parent's ACL, not the node's.
    let no_delete = vec![Acl::new(perms::ALL & !perms::DELETE, Id::anyone())];
    tree.create(txn(3), anyone(), CreateRequest::new("/p", vec![]).acl(no_delete)).unwrap();
    tree.create(txn(4), anyone(), CreateRequest::new("/p/c", vec![]).acl(vec![Acl::new(0, Id::anyone())])).unwrap();
    assert_eq!(tree.delete(txn(5), anyone(), "/p/c", -1).unwrap_err(), KeeperError::NoAuth);
    tree.delete(txn(6), anyone(), "/r", -1).unwrap();
    // NoAuth on the parent comes before NoNode for the child, as in ZooKeeper.
    assert_eq!(tree.delete(txn(7), anyone(), "/p/missing", -1).unwrap_err(), KeeperError::NoAuth);
}

#[test]
fn digest_acls_and_masking() {
    let mut tree = ZnodeTree::default();
    let alice = [acl::digest_id("alice:pw")];
    let bob = [acl::digest_id("bob:pw")];
    let digest_acl = vec![Acl::new(perms::ALL, alice[0].clone()), Acl::new(perms::READ, Id::anyone())];
    tree.create(txn(1), anyone(), CreateRequest::new("/d", b"x".to_vec()).acl(digest_acl.clone())).unwrap();
    assert_eq!(tree.set_data(txn(2), Caller::new(S2, &bob), "/d", vec![], -1).unwrap_err(), KeeperError::NoAuth);
    tree.set_data(txn(3), Caller::new(S2, &alice), "/d", vec![], -1).unwrap();
    // READ without ADMIN sees the digest masked; ADMIN sees it whole.
    let masked = tree.get_acl(Caller::new(S2, &bob), "/d").unwrap().0;
    assert_eq!(masked[0].id, Id::new("digest", "alice:x"));
    assert_eq!(tree.get_acl(Caller::new(S2, &alice), "/d").unwrap().0, digest_acl);
    // The id is stored as given: an ACL with the digest of the password works with auth data.
    let by_hash = vec![Acl::new(perms::ALL, Id::new("digest", acl::generate_digest("carol:s3cret")))];
    tree.create(txn(4), anyone(), CreateRequest::new("/c", vec![]).acl(by_hash)).unwrap();
    let carol = [acl::digest_id("carol:s3cret")];
    assert!(tree.get_data(Caller::new(S1, &carol), "/c").is_ok());
    assert_eq!(tree.get_data(anyone(), "/c").unwrap_err(), KeeperError::NoAuth);
}

#[test]
fn super_user_passes_every_check() {
    let super_digest = acl::generate_digest("super:test");
    let mut tree = ZnodeTree::new(TreeConfig { super_digest: Some(super_digest) });
    let root_ids = [acl::digest_id("super:test")];
    let root = Caller::new(S2, &root_ids);
    let nothing = vec![Acl::new(0, Id::anyone())];
    tree.create(txn(1), anyone(), CreateRequest::new("/locked", b"x".to_vec()).acl(nothing)).unwrap();
    assert_eq!(tree.get_data(anyone(), "/locked").unwrap_err(), KeeperError::NoAuth);
    assert_eq!(tree.get_data(root, "/locked").unwrap().0, b"x");
    tree.set_data(txn(2), root, "/locked", vec![], -1).unwrap();
    tree.create(txn(3), root, CreateRequest::new("/locked/kid", vec![])).unwrap();
    tree.delete(txn(4), root, "/locked/kid", -1).unwrap();
    tree.set_data(txn(5), root, "/zookeeper/config", b"cfg", -1).unwrap();
    tree.set_acl(root, "/locked", &Acl::open_unsafe(), -1).unwrap();
    // A wrong password is just another digest id.
    let wrong = [acl::digest_id("super:nope")];
    assert_eq!(
        tree.set_data(txn(6), Caller::new(S2, &wrong), "/zookeeper/config", vec![], -1).unwrap_err(),
        KeeperError::NoAuth
    );
    // Without the configured digest the same id is nobody special.
    let plain = ZnodeTree::default();
    assert_eq!(
        plain.check_acl(plain.lookup("/zookeeper/config").unwrap(), perms::WRITE, root),
        Err(KeeperError::NoAuth)
    );
}

#[test]
fn ip_acls_match_callers_address() {
    let mut tree = ZnodeTree::default();
    let acl = vec![Acl::new(perms::ALL, Id::new("ip", "10.0.0.0/8"))];
    tree.create(txn(1), anyone(), CreateRequest::new("/ip", vec![]).acl(acl)).unwrap();
    let inside = [Id::new("ip", "10.1.2.3")];
    let outside = [Id::new("ip", "192.168.1.1")];
    assert!(tree.get_data(Caller::new(S1, &inside), "/ip").is_ok());
    assert_eq!(tree.get_data(Caller::new(S1, &outside), "/ip").unwrap_err(), KeeperError::NoAuth);
}

#[test]
fn children_and_descendant_counts() {
    let mut tree = ZnodeTree::default();
    for (i, p) in ["/a", "/a/b", "/a/c", "/a/b/d", "/e"].iter().enumerate() {
        create(&mut tree, i as i64 + 1, p);
    }
    let (kids, stat) = tree.get_children(anyone(), "/a").unwrap();
    assert_eq!(kids, vec!["b", "c"]);
    assert_eq!(stat.num_children, 2);
    assert_eq!(tree.get_all_children_number(anyone(), "/a").unwrap(), 3);
    assert_eq!(tree.get_all_children_number(anyone(), "/a/c").unwrap(), 0);
    // All nodes but the root, /zookeeper's three included (ZooKeeper: nodes.size() − 2).
    assert_eq!(tree.get_all_children_number(anyone(), "/").unwrap(), 8);
    assert!(children(&tree, "/a/b/d").is_empty());
}

#[test]
fn failed_changes_leave_no_trace() {
    let mut tree = ZnodeTree::default();
    create(&mut tree, 1, "/a");
    create(&mut tree, 2, "/a/b");
    let before = tree.snapshot();
    let _ = tree.delete(txn(3), anyone(), "/a", -1);
    let _ = tree.set_data(txn(3), anyone(), "/a", vec![], 7);
    let _ = tree.set_acl(anyone(), "/a", &Acl::open_unsafe(), 7);
    let _ = tree.create(txn(3), anyone(), CreateRequest::new("/a/b", vec![]));
    let _ = tree.delete_expired(txn(3), "/a/b");
    assert_eq!(tree.snapshot(), before);
}

// ---- multi -------------------------------------------------------------------------------------

fn create_op(path: &str) -> Op {
    Op::Create(CreateRequest::new(path, vec![]))
}

#[test]
fn multi_applies_all_ops_in_order() {
    let mut tree = ZnodeTree::default();
    create(&mut tree, 1, "/old");
    let ops = vec![
        create_op("/m"),
        Op::Create(CreateRequest::new("/m/s-", b"d".to_vec()).mode(CreateMode::PersistentSequential)),
        Op::SetData { path: "/m".into(), data: b"top".to_vec(), version: 0 },
        Op::Check { path: "/m".into(), version: 1 },
        Op::Delete { path: "/old".into(), version: -1 },
    ];
    let applied = tree.multi(Txn::new(7, 70), anyone(), ops).unwrap();
    let results = applied.value;
    assert_eq!(results.len(), 5);
    let OpResult::Create(first) = &results[0] else { panic!("{results:?}") };
    assert_eq!((first.path.as_str(), first.stat.czxid), ("/m", 7));
    let OpResult::Create(second) = &results[1] else { panic!("{results:?}") };
    assert_eq!(second.path, "/m/s-0000000000");
    let OpResult::SetData(stat) = &results[2] else { panic!("{results:?}") };
    assert_eq!((stat.version, stat.mzxid, stat.num_children), (1, 7, 1));
    assert_eq!(&results[3..], &[OpResult::Check, OpResult::Delete]);
    assert!(results.iter().all(|r| r.error_code().is_none()));
    assert_eq!(
        applied.events,
        vec![
            ev(NodeCreated, "/m", 7),
            ev(NodeChildrenChanged, "/", 7),
            ev(NodeCreated, "/m/s-0000000000", 7),
            ev(NodeChildrenChanged, "/m", 7),
            ev(NodeDataChanged, "/m", 7),
            ev(NodeDeleted, "/old", 7),
            ev(NodeChildrenChanged, "/", 7),
        ]
    );
    assert_eq!(tree.stat("/old"), None);
    assert_eq!(tree.get_data(anyone(), "/m").unwrap().0, b"top");
    assert!(tree.multi(txn(8), anyone(), vec![]).unwrap().value.is_empty());
    tree.check_invariants().unwrap();
}

#[test]
fn failed_multi_rolls_back_byte_for_byte() {
    let mut tree = ZnodeTree::default();
    create(&mut tree, 1, "/a");
    create(&mut tree, 2, "/a/x");
    tree.set_data(txn(3), anyone(), "/a/x", b"keep", -1).unwrap();
    create_mode(&mut tree, 4, anyone(), "/a/eph", CreateMode::Ephemeral);
    create_mode(&mut tree, 5, anyone(), "/box", CreateMode::Container);
    create(&mut tree, 6, "/box/in");
    let before = tree.snapshot();
    let ops = vec![
        Op::SetData { path: "/a/x".into(), data: b"lost".to_vec(), version: 1 },
        Op::Delete { path: "/a/x".into(), version: -1 },
        Op::Delete { path: "/a/eph".into(), version: -1 },
        Op::Delete { path: "/box/in".into(), version: -1 },
        Op::Create(CreateRequest::new("/a/x", b"new".to_vec()).mode(CreateMode::Ephemeral)),
        Op::Create(CreateRequest::new("/a/s-", vec![]).mode(CreateMode::PersistentSequential)),
        create_op("/n"),
        create_op("/n/deep"),
        Op::Check { path: "/a".into(), version: 5 },
        create_op("/never"),
        Op::Delete { path: "/nothing".into(), version: -1 },
    ];
    let failed = tree.multi(txn(7), anyone(), ops).unwrap_err();
    assert_eq!((failed.index, failed.error), (8, KeeperError::BadVersion));
    let codes: Vec<i32> = failed.results.iter().map(|r| r.error_code().unwrap()).collect();
    assert_eq!(codes, vec![0, 0, 0, 0, 0, 0, 0, 0, -103, -2, -2]);
    assert_eq!(tree.snapshot(), before, "rolled back to the same bytes");
    tree.check_invariants().unwrap();
    assert_eq!(tree.get_ephemerals(S1, "/"), vec!["/a/eph"]);
    assert!(tree.expired_nodes(i64::MAX).is_empty(), "the container keeps its child");
    // The sequence counter was given back too.
    assert_eq!(create_mode(&mut tree, 8, anyone(), "/a/s-", CreateMode::PersistentSequential), "/a/s-0000000002");
}

#[test]
fn failed_multi_reports_first_error() {
    let mut tree = ZnodeTree::default();
    create(&mut tree, 1, "/a");
    let cases: Vec<(Vec<Op>, usize, KeeperError)> = vec![
        (vec![create_op("/a"), create_op("/b")], 0, KeeperError::NodeExists),
        (vec![create_op("/b"), create_op("/b")], 1, KeeperError::NodeExists),
        (vec![create_op("/b"), Op::Delete { path: "/a".into(), version: 3 }], 1, KeeperError::BadVersion),
        (vec![create_op("/a/b"), Op::Delete { path: "/a".into(), version: -1 }], 1, KeeperError::NotEmpty),
        (vec![Op::SetData { path: "/zz".into(), data: vec![], version: -1 }], 0, KeeperError::NoNode),
        (vec![Op::Check { path: "/a".into(), version: 1 }, create_op("/c")], 0, KeeperError::BadVersion),
        (vec![Op::Delete { path: "/zookeeper".into(), version: -1 }], 0, KeeperError::BadArguments),
        (vec![create_op("/c"), Op::Create(CreateRequest::new("/d", vec![]).acl(vec![]))], 1, KeeperError::InvalidAcl),
        (
            vec![Op::Create(CreateRequest::new("/e", vec![]).mode(CreateMode::Ephemeral)), create_op("/e/kid")],
            1,
            KeeperError::NoChildrenForEphemerals,
        ),
    ];
    for (ops, index, error) in cases {
        let before = tree.snapshot();
        let count = ops.len();
        let failed = tree.multi(txn(2), anyone(), ops).unwrap_err();
        assert_eq!((failed.index, failed.error), (index, error));
        assert_eq!(failed.results.len(), count);
        assert!(failed.results[..index].iter().all(|r| *r == OpResult::RolledBack));
        assert_eq!(failed.results[index], OpResult::Error(error));
        assert!(failed.results[index + 1..].iter().all(|r| *r == OpResult::Error(KeeperError::RuntimeInconsistency)));
        assert_eq!(tree.snapshot(), before, "{error:?}");
        tree.check_invariants().unwrap();
    }
}

#[test]
fn multi_ops_see_earlier_ops() {
    let mut tree = ZnodeTree::default();
    let ops = vec![
        create_op("/a"),
        Op::Delete { path: "/a".into(), version: 0 },
        create_op("/a"),
        Op::SetData { path: "/a".into(), data: vec![1], version: 0 },
        Op::Check { path: "/a".into(), version: 1 },
    ];
    tree.multi(txn(3), anyone(), ops).unwrap();
    let a = tree.stat("/a").unwrap();
    assert_eq!((a.version, a.czxid), (1, 3));
    let root = tree.stat("/").unwrap();
    assert_eq!(root.cversion, -1 + 3, "two creates and a delete");
    tree.check_invariants().unwrap();
}

#[test]
fn multi_acl_failure_rolls_back() {
    let mut tree = ZnodeTree::default();
    tree.create(txn(1), anyone(), CreateRequest::new("/ro", vec![]).acl(Acl::read_unsafe())).unwrap();
    let before = tree.snapshot();
    let failed = tree.multi(txn(2), anyone(), vec![create_op("/ok"), create_op("/ro/x")]).unwrap_err();
    assert_eq!(failed.error, KeeperError::NoAuth);
    assert_eq!(tree.snapshot(), before);
}

// ---- randomized ---------------------------------------------------------------------------------

/// xorshift64*: a fixed seed reproduces a run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

fn random_path(rng: &mut Rng) -> String {
    let depth = 1 + rng.below(3);
    (0..depth).map(|_| format!("/{}", rng.pick(&["a", "b", "c", "d"]))).collect()
}

fn random_op(rng: &mut Rng) -> Op {
    let path = random_path(rng);
    let version = if rng.below(3) == 0 { rng.below(3) as i32 } else { -1 };
    match rng.below(4) {
        0 | 1 => {
            let mode = *rng.pick(&[
                CreateMode::Persistent,
                CreateMode::Persistent,
                CreateMode::Ephemeral,
                CreateMode::PersistentSequential,
                CreateMode::EphemeralSequential,
                CreateMode::Container,
                CreateMode::PersistentWithTtl,
            ]);
            let mut req = CreateRequest::new(path, vec![rng.below(256) as u8; rng.below(40)]).mode(mode);
            if mode.is_ttl() {
                req.ttl = Some(1 + rng.below(50) as i64);
            }
            Op::Create(req)
        }
        2 => Op::Delete { path, version },
        _ => match rng.below(2) {
            0 => Op::SetData { path, data: vec![1; rng.below(10)], version },
            _ => Op::Check { path, version },
        },
    }
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    czxid: Zxid,
    pzxid: Zxid,
    cversion: i32,
    version: i32,
}

fn all_paths(tree: &ZnodeTree) -> Vec<String> {
    tree.canonical_order().into_iter().map(|id| tree.path_of(id)).collect()
}

fn check_monotonic(tree: &ZnodeTree, seen: &mut HashMap<String, Seen>) {
    let paths = all_paths(tree);
    for path in &paths {
        let stat = tree.stat(path).unwrap();
        let now = Seen { czxid: stat.czxid, pzxid: stat.pzxid, cversion: stat.cversion, version: stat.version };
        if let Some(prev) = seen.get(path).filter(|p| p.czxid == stat.czxid) {
            assert!(now.pzxid >= prev.pzxid, "{path}: pzxid went back {prev:?} → {now:?}");
            assert!(now.cversion >= prev.cversion, "{path}: cversion went back {prev:?} → {now:?}");
            assert!(now.version >= prev.version, "{path}: version went back {prev:?} → {now:?}");
        }
        seen.insert(path.clone(), now);
    }
    seen.retain(|p, _| paths.contains(p));
}

#[test]
fn random_operations_keep_invariants() {
    for seed in [0x5eed_0001u64, 0xdead_beef, 42] {
        let mut rng = Rng(seed);
        let mut tree = ZnodeTree::default();
        let sessions = [S1, S2, 0x0100_0000_0000_0003];
        let mut seen = HashMap::new();
        let mut zxid = 0;
        let mut outcomes = [0usize; 2];
        for step in 0..3_000 {
            zxid += 1;
            let t = Txn::new(zxid, zxid * 10);
            let session = *rng.pick(&sessions);
            let caller = Caller::new(session, &[]);
            match rng.below(20) {
                0 => {
                    let closed = tree.close_session(t, session);
                    assert_eq!(closed.events.len(), closed.value.len() * 2);
                }
                1 => {
                    for path in tree.expired_nodes(t.time) {
                        tree.delete_expired(t, &path).unwrap();
                    }
                }
                2..=4 => {
                    let ops: Vec<Op> = (0..1 + rng.below(4)).map(|_| random_op(&mut rng)).collect();
                    let before = tree.snapshot();
                    match tree.multi(t, caller, ops) {
                        Ok(_) => outcomes[0] += 1,
                        Err(_) => {
                            outcomes[1] += 1;
                            assert_eq!(tree.snapshot(), before, "seed {seed:#x} step {step}: rollback");
                        }
                    }
                }
                _ => {
                    let result = match random_op(&mut rng) {
                        Op::Create(req) => tree.create(t, caller, req).map(drop),
                        Op::Delete { path, version } => tree.delete(t, caller, &path, version).map(drop),
                        Op::SetData { path, data, version } => tree.set_data(t, caller, &path, data, version).map(drop),
                        Op::Check { path, version } => tree.check(caller, &path, version),
                    };
                    outcomes[usize::from(result.is_err())] += 1;
                }
            }
            tree.check_invariants().unwrap_or_else(|e| panic!("seed {seed:#x} step {step}: {e}"));
            check_monotonic(&tree, &mut seen);
            if step == 1_500 {
                let bytes = tree.snapshot();
                let restored = ZnodeTree::restore(&bytes, TreeConfig::default()).unwrap();
                assert_eq!(restored.digest(), tree.digest());
                restored.check_invariants().unwrap();
                for s in sessions {
                    assert_eq!(restored.get_ephemerals(s, "/"), tree.get_ephemerals(s, "/"));
                }
                assert_eq!(restored.expired_nodes(t.time), tree.expired_nodes(t.time));
                tree = restored;
            }
        }
        assert!(outcomes[0] > 300 && outcomes[1] > 300, "seed {seed:#x}: both outcomes exercised {outcomes:?}");
        assert!(tree.node_count() > 4, "seed {seed:#x}: the tree grew");
    }
}

#[test]
fn same_log_same_tree() {
    // Determinism: two trees fed the same commands end byte-identical.
    let run = || {
        let mut rng = Rng(7);
        let mut tree = ZnodeTree::default();
        for zxid in 1..2_000 {
            let t = Txn::new(zxid, zxid);
            let caller = Caller::new(*rng.pick(&[S1, S2]), &[]);
            if rng.below(15) == 0 {
                tree.close_session(t, caller.session);
            }
            let _ = tree.multi(t, caller, vec![random_op(&mut rng)]);
        }
        tree
    };
    assert_eq!(run().snapshot(), run().snapshot());
}

#[test]
fn changes_that_report_no_events_change_the_tree_alike() {
    let run = |report: bool| {
        let mut tree = ZnodeTree::default();
        tree.report_events(report);
        let mut events = Vec::new();
        events.extend(tree.create(txn(2), anyone(), CreateRequest::new("/a", b"1".to_vec())).unwrap().events);
        events.extend(tree.set_data(txn(3), anyone(), "/a", b"2", -1).unwrap().events);
        let multi =
            vec![Op::Create(CreateRequest::new("/a/b", vec![])), Op::Delete { path: "/a/b".into(), version: -1 }];
        events.extend(tree.multi(txn(4), anyone(), multi).unwrap().events);
        events.extend(tree.delete(txn(5), anyone(), "/a", -1).unwrap().events);
        (tree.snapshot(), events)
    };
    let (reported, events) = run(true);
    assert_eq!(events.len(), 9, "create 2, set 1, multi 2 + 2, delete 2: {events:?}");
    let (silent, none) = run(false);
    assert!(none.is_empty(), "{none:?}");
    assert_eq!(silent, reported, "reporting events must not change what a change does");
}

#[test]
fn a_copy_keeps_the_tree_as_it_was_while_the_original_changes() {
    // Enough nodes for several arena chunks, so that changes land in shared and unshared ones.
    let build = || {
        let mut tree = ZnodeTree::default();
        create(&mut tree, 2, "/a");
        for i in 0..3_000 {
            tree.create(txn(3 + i), anyone(), CreateRequest::new(format!("/a/n{i}"), vec![b'x'; 10])).unwrap();
        }
        tree
    };
    let change = |tree: &mut ZnodeTree| {
        for i in (0..3_000).step_by(7) {
            tree.set_data(txn(10_000 + i), anyone(), &format!("/a/n{i}"), b"changed", -1).unwrap();
        }
        for i in (0..3_000).step_by(11) {
            tree.delete(txn(20_000 + i), anyone(), &format!("/a/n{i}"), -1).unwrap();
        }
        for i in 0..500 {
            create(tree, 30_000 + i, &format!("/b{i}"));
        }
        let failing =
            vec![Op::Delete { path: "/a/n1".into(), version: -1 }, Op::Check { path: "/none".into(), version: 0 }];
        assert!(tree.multi(txn(40_000), anyone(), failing).is_err());
    };

    let mut tree = build();
    let copy = tree.clone();
    let before = copy.snapshot();
    change(&mut tree);
    assert_eq!(copy.snapshot(), before, "the copy must not see changes made after it was taken");
    assert_eq!(copy.get_data(anyone(), "/a/n0").unwrap().0, vec![b'x'; 10]);
    assert_eq!(tree.get_data(anyone(), "/a/n7").unwrap().0, b"changed");
    copy.check_invariants().unwrap();
    tree.check_invariants().unwrap();

    let mut alone = build();
    change(&mut alone);
    assert_eq!(tree.snapshot(), alone.snapshot(), "a copy must not change what the original does");
}
