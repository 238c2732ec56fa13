//! Snapshots of the tree: canonical bytes (postcard), restore with validation, and a digest.
//!
//! The bytes depend only on what clients can observe (paths, data, ACLs, Stats), never on the
//! history that produced them: nodes are written depth-first with children sorted by name, and
//! ACL lists are numbered in order of first use. Two replicas that applied the same log write the
//! same bytes, so [`ZnodeTree::digest`] compares them. The session index (session → ephemerals)
//! and the container and TTL sets are derived from the nodes' owners and rebuilt on restore.

use std::io::{self, Write};

use serde::{Deserialize, Serialize, Serializer};
use sha1::{Digest, Sha1};

use crate::acl::{Acl, AclRef};
use crate::byte_string::{ByteBuf, Bytes};
use crate::path::{self, validate_path};
use crate::stat::NodeType;
use crate::tree::{MAX_DATA_LEN, NIL, Node, NodeId, ROOT_ID, TreeConfig, ZnodeTree};

/// Bumped whenever the layout below changes.
const FORMAT: u32 = 1;

/// Why a snapshot could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Writing failed.
    #[error("cannot write snapshot: {0}")]
    Write(String),
    /// The bytes are not a snapshot of this format.
    #[error("cannot decode snapshot: {0}")]
    Decode(String),
    /// The bytes decode but do not describe a valid tree.
    #[error("invalid snapshot: {0}")]
    Invalid(String),
}

#[derive(Serialize, Deserialize)]
struct Snapshot<A, N> {
    format: u32,
    acls: Vec<A>,
    nodes: N,
}

/// One znode: its parent's position in the node list (`u32::MAX` for the root), then its fields.
#[derive(Clone, Serialize, Deserialize)]
struct NodeRecord<S, B> {
    parent: u32,
    name: S,
    data: B,
    acl: u32,
    czxid: i64,
    mzxid: i64,
    pzxid: i64,
    ctime: i64,
    mtime: i64,
    owner: i64,
    version: i32,
    cversion: i32,
    aversion: i32,
}

/// The nodes in canonical order, serialized lazily so a snapshot never copies the data.
struct NodesOut<'a> {
    tree: &'a ZnodeTree,
    order: &'a [NodeId],
    /// Each node's position in `order`, by node id ([`NIL`] for no node).
    position: Vec<u32>,
    /// Each ACL list's number in the snapshot, by handle.
    acl_index: &'a [u32],
}

impl Serialize for NodesOut<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.order.iter().map(|&id| {
            let node = self.tree.node(id);
            NodeRecord {
                parent: if id == ROOT_ID {
                    NIL
                } else {
                    self.position.get(node.parent as usize).copied().unwrap_or(NIL)
                },
                name: node.name.as_str(),
                data: Bytes(&node.data),
                acl: self.acl_index.get(node.acl as usize).copied().unwrap_or(0),
                czxid: node.czxid,
                mzxid: node.mzxid,
                pzxid: node.pzxid,
                ctime: node.ctime,
                mtime: node.mtime,
                owner: node.owner,
                version: node.version,
                cversion: node.cversion,
                aversion: node.aversion,
            }
        }))
    }
}

struct Sha1Writer(Sha1);

impl Write for Sha1Writer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ZnodeTree {
    /// Writes the snapshot to `out` (the caller adds buffering, temp file, fsync and rename).
    pub fn write_snapshot<W: Write>(&self, out: W) -> Result<(), SnapshotError> {
        let order = self.canonical_order();
        // Node ids and ACL handles are dense, so plain vectors map them (a hash map was a fifth
        // of the time of a snapshot of 100,000 znodes).
        let mut position = vec![NIL; self.id_bound()];
        let mut acl_index: Vec<u32> = Vec::new();
        let mut acls: Vec<&[Acl]> = Vec::new();
        for (i, &id) in order.iter().enumerate() {
            position[id as usize] = i as u32;
            let r = self.node(id).acl as usize;
            if acl_index.len() <= r {
                acl_index.resize(r + 1, NIL);
            }
            if acl_index[r] == NIL {
                acl_index[r] = acls.len() as u32;
                acls.push(self.acls.get(r as AclRef));
            }
        }
        let nodes = NodesOut { tree: self, order: &order, position, acl_index: &acl_index };
        let snapshot = Snapshot { format: FORMAT, acls, nodes };
        postcard::to_io(&snapshot, out).map(drop).map_err(|e| SnapshotError::Write(e.to_string()))
    }

    /// The snapshot as bytes.
    pub fn snapshot(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Writing to a Vec cannot fail.
        let _ = self.write_snapshot(&mut out);
        out
    }

    /// SHA-1 of the snapshot bytes: equal for trees no client could tell apart.
    pub fn digest(&self) -> [u8; 20] {
        let mut hasher = Sha1Writer(Sha1::new());
        let _ = self.write_snapshot(&mut hasher);
        hasher.0.finalize().into()
    }

    /// Rebuilds a tree from [`ZnodeTree::snapshot`] bytes, checking that they describe a valid
    /// tree (names, parents, ACL references, data sizes, the reserved nodes, ephemerals without
    /// children) and never panicking on bad input.
    pub fn restore(bytes: &[u8], config: TreeConfig) -> Result<ZnodeTree, SnapshotError> {
        type Records = Vec<NodeRecord<String, ByteBuf>>;
        let (snapshot, rest): (Snapshot<Vec<Acl>, Records>, _) =
            postcard::take_from_bytes(bytes).map_err(|e| SnapshotError::Decode(e.to_string()))?;
        if snapshot.format != FORMAT {
            return Err(SnapshotError::Decode(format!("format {} (expected {FORMAT})", snapshot.format)));
        }
        if !rest.is_empty() {
            return Err(SnapshotError::Decode(format!("{} trailing bytes", rest.len())));
        }
        let invalid = |i: usize, why: &str| SnapshotError::Invalid(format!("node {i}: {why}"));
        let mut tree = ZnodeTree::empty(config);
        for (i, rec) in snapshot.nodes.into_iter().enumerate() {
            let acl = snapshot.acls.get(rec.acl as usize).ok_or_else(|| invalid(i, "ACL index out of range"))?;
            if rec.data.0.len() > MAX_DATA_LEN {
                return Err(invalid(i, "data over 1 MiB"));
            }
            let acl = tree.acls.intern(acl);
            let mut node = Node::new(&rec.name, rec.parent, acl);
            node.data = rec.data.0.into_boxed_slice();
            (node.czxid, node.mzxid, node.pzxid, node.ctime, node.mtime) =
                (rec.czxid, rec.mzxid, rec.pzxid, rec.ctime, rec.mtime);
            (node.owner, node.version, node.cversion, node.aversion) =
                (rec.owner, rec.version, rec.cversion, rec.aversion);
            if i == 0 {
                if rec.parent != NIL || !rec.name.is_empty() {
                    return Err(invalid(i, "the first node must be the root"));
                }
                tree.attach_root(node);
                continue;
            }
            if rec.parent as usize >= i {
                return Err(invalid(i, "parent does not precede it"));
            }
            if rec.name.is_empty() || rec.name.contains('/') || validate_path(&format!("/{}", rec.name)).is_err() {
                return Err(invalid(i, "bad name"));
            }
            if tree.child(rec.parent, &rec.name).is_some() {
                return Err(invalid(i, "duplicate name"));
            }
            if matches!(tree.node(rec.parent).node_type(), NodeType::Ephemeral(_)) {
                return Err(invalid(i, "child of an ephemeral"));
            }
            tree.attach(node);
        }
        if tree.node_count() == 0 {
            return Err(SnapshotError::Invalid("no root".to_string()));
        }
        for reserved in [path::ZOOKEEPER, path::QUOTA, path::CONFIG] {
            if tree.lookup(reserved).is_none() {
                return Err(SnapshotError::Invalid(format!("{reserved} is missing")));
            }
        }
        Ok(tree)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Caller, CreateMode, CreateRequest, Id, Txn, acl};

    fn sample() -> ZnodeTree {
        let mut tree = ZnodeTree::default();
        let me = Caller::new(0x55, &[]);
        let alice = [acl::digest_id("alice:pw")];
        let alice_caller = Caller::new(0x66, &alice);
        tree.create(Txn::new(1, 10), me, CreateRequest::new("/a", b"one".to_vec())).unwrap();
        tree.create(Txn::new(2, 11), me, CreateRequest::new("/a/b", vec![0; 300])).unwrap();
        tree.create(Txn::new(3, 12), me, CreateRequest::new("/a/e-", vec![]).mode(CreateMode::EphemeralSequential))
            .unwrap();
        tree.create(Txn::new(4, 13), me, CreateRequest::new("/c", vec![]).mode(CreateMode::Container)).unwrap();
        tree.create(Txn::new(5, 14), me, CreateRequest::new("/t", vec![]).mode(CreateMode::PersistentWithTtl).ttl(50))
            .unwrap();
        tree.create(
            Txn::new(6, 15),
            alice_caller,
            CreateRequest::new("/s", b"x".to_vec()).acl(crate::Acl::creator_all()),
        )
        .unwrap();
        tree.set_data(Txn::new(7, 16), me, "/a", b"two", 0).unwrap();
        tree
    }

    #[test]
    fn round_trip_preserves_everything() {
        let tree = sample();
        let bytes = tree.snapshot();
        let back = ZnodeTree::restore(&bytes, TreeConfig::default()).unwrap();
        assert_eq!(back.snapshot(), bytes);
        assert_eq!(back.digest(), tree.digest());
        back.check_invariants().unwrap();
        let me = Caller::new(1, &[]);
        for p in ["/", "/a", "/a/b", "/a/e-0000000001", "/c", "/t", "/zookeeper/config"] {
            assert_eq!(back.stat(p), tree.stat(p), "{p}");
        }
        assert_eq!(back.get_data(me, "/a").unwrap().0, b"two");
        assert_eq!(back.get_ephemerals(0x55, "/"), vec!["/a/e-0000000001".to_string()]);
        assert_eq!(back.node_type("/t"), Some(NodeType::Ttl(50)));
        assert_eq!(back.expired_nodes(1_000), vec!["/t".to_string()]);
        let alice = [acl::digest_id("alice:pw")];
        assert!(back.get_data(me, "/s").is_err());
        assert!(back.get_data(Caller::new(1, &alice), "/s").is_ok());
        assert_eq!(
            back.get_acl(Caller::new(1, &alice), "/s").unwrap().0,
            tree.get_acl(Caller::new(1, &alice), "/s").unwrap().0
        );
    }

    #[test]
    fn bytes_do_not_depend_on_history() {
        let mut a = ZnodeTree::default();
        let mut b = ZnodeTree::default();
        let me = Caller::new(1, &[]);
        let t = Txn::new(9, 9);
        for p in ["/x", "/y", "/z"] {
            a.create(t, me, CreateRequest::new(p, vec![])).unwrap();
        }
        for p in ["/z", "/tmp", "/y", "/x"] {
            b.create(t, me, CreateRequest::new(p, vec![])).unwrap();
        }
        b.delete(t, me, "/tmp", -1).unwrap();
        // Same nodes, but /'s create counter differs (4 creates vs 3): the digests must differ.
        assert_ne!(a.digest(), b.digest());
        let mut c = ZnodeTree::default();
        for p in ["/z", "/y", "/x"] {
            c.create(t, me, CreateRequest::new(p, vec![])).unwrap();
        }
        assert_eq!(a.snapshot(), c.snapshot());
        assert_eq!(a.digest(), c.digest());
    }

    #[test]
    fn digest_sees_every_field() {
        let tree = sample();
        let me = Caller::new(1, &[]);
        let mut changed = tree.clone();
        changed.set_data(Txn::new(8, 17), me, "/a/b", vec![0; 300], -1).unwrap();
        assert_ne!(changed.digest(), tree.digest(), "version/mzxid change");
        let mut changed = tree.clone();
        changed.set_acl(me, "/a", &[crate::Acl::new(1, Id::anyone())], -1).unwrap();
        assert_ne!(changed.digest(), tree.digest(), "ACL change");
    }

    #[test]
    fn corrupt_input_is_an_error_not_a_panic() {
        let bytes = sample().snapshot();
        assert!(matches!(ZnodeTree::restore(&[], TreeConfig::default()), Err(SnapshotError::Decode(_))));
        for cut in [1, bytes.len() / 3, bytes.len() - 1] {
            assert!(ZnodeTree::restore(&bytes[..cut], TreeConfig::default()).is_err(), "truncated at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(ZnodeTree::restore(&longer, TreeConfig::default()).is_err());
        // Flip every byte in turn: each result is an error or a tree that passes its invariants.
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0xa5;
            if let Ok(tree) = ZnodeTree::restore(&bad, TreeConfig::default()) {
                tree.check_invariants().unwrap_or_else(|e| panic!("byte {i}: {e}"));
            }
        }
    }

    #[test]
    fn invalid_trees_are_refused() {
        let acls = vec![crate::Acl::open_unsafe()];
        let rec = |parent: u32, name: &str, owner: i64| NodeRecord {
            parent,
            name: name.to_string(),
            data: Bytes(&[]),
            acl: 0,
            czxid: 0,
            mzxid: 0,
            pzxid: 0,
            ctime: 0,
            mtime: 0,
            owner,
            version: 0,
            cversion: 0,
            aversion: 0,
        };
        let encode = |nodes: Vec<NodeRecord<String, Bytes<'static>>>| {
            postcard::to_stdvec(&Snapshot { format: FORMAT, acls: acls.clone(), nodes }).unwrap()
        };
        let base = || vec![rec(NIL, "", 0), rec(0, "zookeeper", 0), rec(1, "quota", 0), rec(1, "config", 0)];
        assert!(ZnodeTree::restore(&encode(base()), TreeConfig::default()).is_ok());
        let cases: Vec<(&str, Vec<NodeRecord<String, Bytes<'static>>>)> = vec![
            ("missing config", base().into_iter().take(3).collect()),
            ("root not first", vec![rec(0, "x", 0)]),
            ("forward parent", [base(), vec![rec(9, "x", 0)]].concat()),
            ("duplicate", [base(), vec![rec(0, "x", 0), rec(0, "x", 0)]].concat()),
            ("bad name", [base(), vec![rec(0, "a/b", 0)]].concat()),
            ("empty name", [base(), vec![rec(0, "", 0)]].concat()),
            ("ephemeral parent", [base(), vec![rec(0, "e", 7), rec(4, "x", 0)]].concat()),
        ];
        for (what, nodes) in cases {
            assert!(
                matches!(ZnodeTree::restore(&encode(nodes), TreeConfig::default()), Err(SnapshotError::Invalid(_))),
                "{what}"
            );
        }
        let mut bad_acl = base();
        bad_acl[1].acl = 5;
        assert!(ZnodeTree::restore(&encode(bad_acl), TreeConfig::default()).is_err());
        let wrong_format = postcard::to_stdvec(&Snapshot { format: 99, acls: acls.clone(), nodes: base() }).unwrap();
        assert!(matches!(ZnodeTree::restore(&wrong_format, TreeConfig::default()), Err(SnapshotError::Decode(_))));
    }
}
