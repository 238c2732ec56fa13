//! The znode tree: ZooKeeper's data model as a plain, deterministic, in-memory data structure.
//!
//! [`ZnodeTree`] is the state machine the Raft log drives. Every change is a method call that
//! takes the transaction's zxid and the leader's clock ([`Txn`]) and the caller's session and
//! authenticated ids ([`Caller`]); it either fails with ZooKeeper's error and changes nothing, or
//! applies and returns the [`WatchEvent`]s it caused. Nothing here reads a clock, does I/O or
//! panics on any input.
//!
//! ```
//! use squall_coordinator::{Caller, CreateMode, CreateRequest, Txn, ZnodeTree};
//! let mut tree = ZnodeTree::default();
//! let me = Caller::new(0x100, &[]);
//! let made = tree.create(Txn::new(2, 1_000), me, CreateRequest::new("/app", b"hi".to_vec())).unwrap();
//! assert_eq!(made.value.path, "/app");
//! let seq = CreateRequest::new("/app/job-", vec![]).mode(CreateMode::EphemeralSequential);
//! assert_eq!(tree.create(Txn::new(3, 1_001), me, seq).unwrap().value.path, "/app/job-0000000000");
//! assert_eq!(tree.get_data(me, "/app").unwrap().0, b"hi");
//! ```
//!
//! Layout (for memory: a million znodes is the target): znodes live in a chunked arena indexed
//! by a `u32`; each stores its own name (inline when ≤ 23 bytes), its data, its Stat fields, a
//! handle into the shared ACL table, and intrusive links to its parent, first child and siblings.
//! Paths are never stored: one hash table of node ids keyed by (parent id, name) finds a child,
//! and a path is resolved segment by segment.

use std::collections::{BTreeSet, HashMap};
use std::hash::BuildHasher;
use std::sync::Arc;

use hashbrown::HashTable;
use smol_str::SmolStr;

use crate::KeeperError;
use crate::acl::{self, Acl, AclRef, AclTable, Id, perms};
use crate::path::{self, split_parent, validate_path};
use crate::stat::{CreateMode, MAX_TTL_MS, NodeType, SessionId, Stat, Zxid};
use crate::watch::{EventType, WatchEvent};

/// The largest data a znode may hold: ZooKeeper's default `jute.maxbuffer`, 0xfffff bytes.
pub const MAX_DATA_LEN: usize = 1_048_575;

/// Settings every replica must share, since they decide what apply does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TreeConfig {
    /// The super user's digest id (`user:base64(sha1(user:password))`, see
    /// [`acl::generate_digest`]); a caller holding this digest id passes every ACL check.
    pub super_digest: Option<String>,
}

/// The transaction a change belongs to: its zxid and the leader's clock when it was proposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Txn {
    /// The zxid (Raft log index) recorded in czxid, mzxid and pzxid.
    pub zxid: Zxid,
    /// The leader's wall clock, ms since the epoch, recorded in ctime and mtime.
    pub time: i64,
}

impl Txn {
    /// A transaction from its zxid and time.
    pub fn new(zxid: Zxid, time: i64) -> Txn {
        Txn { zxid, time }
    }
}

/// Who is asking: the session (owner of the ephemerals it creates) and the ids it has
/// authenticated as, which ACLs are checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller<'a> {
    /// The session id.
    pub session: SessionId,
    /// The session's authenticated ids (`digest`, `ip`, `super`).
    pub ids: &'a [Id],
}

impl<'a> Caller<'a> {
    /// A caller from its session and ids.
    pub fn new(session: SessionId, ids: &'a [Id]) -> Caller<'a> {
        Caller { session, ids }
    }
}

/// A create: path (the prefix, for sequential modes), data, ACL, mode and, for TTL modes, the TTL.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct CreateRequest {
    /// The path to create, or the prefix the sequence number is appended to.
    pub path: String,
    /// The initial data, at most [`MAX_DATA_LEN`] bytes.
    #[serde(with = "crate::byte_string")]
    pub data: Vec<u8>,
    /// The ACL; `auth` entries are expanded to the caller's ids.
    pub acl: Vec<Acl>,
    /// How to create it.
    pub mode: CreateMode,
    /// TTL in ms for the TTL modes (1 ..= 2^40 − 1); must be `None` (or negative) otherwise.
    pub ttl: Option<i64>,
}

impl AsRef<CreateRequest> for CreateRequest {
    fn as_ref(&self) -> &CreateRequest {
        self
    }
}

impl CreateRequest {
    /// A persistent create with an open ACL.
    pub fn new(path: impl Into<String>, data: Vec<u8>) -> CreateRequest {
        CreateRequest { path: path.into(), data, acl: Acl::open_unsafe(), mode: CreateMode::Persistent, ttl: None }
    }

    /// With this mode.
    pub fn mode(mut self, mode: CreateMode) -> CreateRequest {
        self.mode = mode;
        self
    }

    /// With this ACL.
    pub fn acl(mut self, acl: Vec<Acl>) -> CreateRequest {
        self.acl = acl;
        self
    }

    /// With this TTL in ms.
    pub fn ttl(mut self, ttl: i64) -> CreateRequest {
        self.ttl = Some(ttl);
        self
    }
}

/// What a successful create returns (`Create2Response`).
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Created {
    /// The path created, with its sequence suffix.
    pub path: String,
    /// The new node's Stat.
    pub stat: Stat,
}

/// A successful change: its result and the watch events it caused, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied<T> {
    /// What the operation returns.
    pub value: T,
    /// What it changed, for the watch registry.
    pub events: Vec<WatchEvent>,
}

/// One operation of a multi (`MultiOperationRecord`).
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// create / create2 / createContainer / createTTL.
    Create(CreateRequest),
    /// delete; version −1 matches any.
    Delete {
        /// The node.
        path: String,
        /// Expected data version, or −1.
        version: i32,
    },
    /// setData; version −1 matches any.
    SetData {
        /// The node.
        path: String,
        /// New data.
        #[serde(with = "crate::byte_string")]
        data: Vec<u8>,
        /// Expected data version, or −1.
        version: i32,
    },
    /// check: the node's data version is `version` (−1 matches any).
    Check {
        /// The node.
        path: String,
        /// Expected data version, or −1.
        version: i32,
    },
}

/// The result of one op of a multi (`OpResult`).
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum OpResult {
    /// The create succeeded.
    Create(Created),
    /// The delete succeeded.
    Delete,
    /// The setData succeeded; the node's new Stat.
    SetData(Stat),
    /// The check succeeded.
    Check,
    /// The op would have succeeded but the multi failed and was rolled back: ZooKeeper's
    /// `ErrorResult(0)`.
    RolledBack,
    /// The op failed (its own error), or came after the failing op (`RuntimeInconsistency`).
    Error(KeeperError),
}

impl OpResult {
    /// The code of an `ErrorResult`: 0 for rolled back, the error's code for an error, `None`
    /// for a success.
    pub fn error_code(&self) -> Option<i32> {
        match self {
            OpResult::RolledBack => Some(0),
            OpResult::Error(e) => Some(e.code()),
            _ => None,
        }
    }
}

/// A multi that failed and changed nothing.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("multi op {index} failed: {error}")]
pub struct MultiFailed {
    /// Index of the failing op.
    pub index: usize,
    /// Its error.
    pub error: KeeperError,
    /// One result per op, as ZooKeeper reports them: `RolledBack` before the failing op, its
    /// error, then `RuntimeInconsistency`.
    pub results: Vec<OpResult>,
}

pub(crate) type NodeId = u32;
pub(crate) const NIL: NodeId = u32::MAX;
pub(crate) const ROOT_ID: NodeId = 0;

/// One znode. Its path is implicit: its name and its parent's path.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub(crate) name: SmolStr,
    pub(crate) data: Box<[u8]>,
    pub(crate) czxid: Zxid,
    pub(crate) mzxid: Zxid,
    pub(crate) pzxid: Zxid,
    pub(crate) ctime: i64,
    pub(crate) mtime: i64,
    /// ZooKeeper's stored ephemeralOwner, with the container and TTL encodings.
    pub(crate) owner: i64,
    pub(crate) version: i32,
    /// ZooKeeper's stored cversion: the number of children ever created here. The sequence
    /// suffix is this; the Stat reports `2 × cversion − numChildren`.
    pub(crate) cversion: i32,
    pub(crate) aversion: i32,
    pub(crate) acl: AclRef,
    pub(crate) parent: NodeId,
    first_child: NodeId,
    prev: NodeId,
    next: NodeId,
    pub(crate) num_children: u32,
}

impl Node {
    pub(crate) fn new(name: &str, parent: NodeId, acl: AclRef) -> Node {
        Node {
            name: SmolStr::new(name),
            data: Box::default(),
            czxid: 0,
            mzxid: 0,
            pzxid: 0,
            ctime: 0,
            mtime: 0,
            owner: 0,
            version: 0,
            cversion: 0,
            aversion: 0,
            acl,
            parent,
            first_child: NIL,
            prev: NIL,
            next: NIL,
            num_children: 0,
        }
    }

    pub(crate) fn node_type(&self) -> NodeType {
        NodeType::from_owner(self.owner)
    }

    fn stat(&self) -> Stat {
        let num_children = self.num_children as i32;
        Stat {
            czxid: self.czxid,
            mzxid: self.mzxid,
            ctime: self.ctime,
            mtime: self.mtime,
            version: self.version,
            cversion: self.cversion.wrapping_mul(2).wrapping_sub(num_children),
            aversion: self.aversion,
            ephemeral_owner: match self.node_type() {
                NodeType::Ephemeral(session) => session,
                _ => 0,
            },
            data_length: self.data.len() as i32,
            num_children,
            pzxid: self.pzxid,
        }
    }
}

const CHUNK_BITS: u32 = 10;
const CHUNK: usize = 1 << CHUNK_BITS;

/// Node slots in fixed-size chunks (no doubling waste, no moves), with a LIFO free list so a
/// rolled-back multi puts nodes back where they were.
///
/// The chunks are shared, copy on write: cloning the arena (a snapshot's copy of the tree) costs
/// one reference count per 1,024 nodes, and a change afterwards copies only the chunk it lands
/// in, and only while the copy lives. So a snapshot is serialized beside the writes instead of
/// holding them up for as long as it takes to write the whole tree.
#[derive(Debug, Default, Clone)]
struct Arena {
    chunks: Vec<Arc<Chunk>>,
    free: Vec<NodeId>,
    live: usize,
}

/// Up to [`CHUNK`] node slots, allocated whole so that they never move; a copy is allocated
/// whole too.
#[derive(Debug)]
struct Chunk(Vec<Option<Node>>);

impl Clone for Chunk {
    fn clone(&self) -> Chunk {
        let mut slots = Vec::with_capacity(CHUNK);
        slots.extend(self.0.iter().cloned());
        Chunk(slots)
    }
}

impl Arena {
    fn slot(&self, id: NodeId) -> Option<&Option<Node>> {
        self.chunks.get((id >> CHUNK_BITS) as usize)?.0.get(id as usize & (CHUNK - 1))
    }

    fn slot_mut(&mut self, id: NodeId) -> Option<&mut Option<Node>> {
        Arc::make_mut(self.chunks.get_mut((id >> CHUNK_BITS) as usize)?).0.get_mut(id as usize & (CHUNK - 1))
    }

    fn get(&self, id: NodeId) -> Option<&Node> {
        self.slot(id)?.as_ref()
    }

    fn get_mut(&mut self, id: NodeId) -> Option<&mut Node> {
        self.slot_mut(id)?.as_mut()
    }

    fn alloc(&mut self, node: Node) -> NodeId {
        self.live += 1;
        if let Some(id) = self.free.pop() {
            if let Some(slot) = self.slot_mut(id) {
                *slot = Some(node);
            }
            return id;
        }
        if self.chunks.last().is_none_or(|c| c.0.len() == CHUNK) {
            self.chunks.push(Arc::new(Chunk(Vec::with_capacity(CHUNK))));
        }
        let id = ((self.chunks.len() - 1) * CHUNK) as NodeId + self.chunks.last().map_or(0, |c| c.0.len() as NodeId);
        if let Some(chunk) = self.chunks.last_mut() {
            Arc::make_mut(chunk).0.push(Some(node));
        }
        id
    }

    /// Puts a node back into the free slot `id` (rollback of a delete).
    fn alloc_at(&mut self, id: NodeId, node: Node) {
        if let Some(pos) = self.free.iter().rposition(|&f| f == id) {
            self.free.remove(pos);
            self.live += 1;
            if let Some(slot) = self.slot_mut(id) {
                *slot = Some(node);
            }
        }
    }

    fn remove(&mut self, id: NodeId) -> Option<Node> {
        let node = self.slot_mut(id)?.take()?;
        self.live -= 1;
        self.free.push(id);
        Some(node)
    }
}

/// What a rolled-back multi must undo, newest last.
#[derive(Debug, Clone)]
enum Undo {
    Created(NodeId),
    Deleted { id: NodeId, node: Box<Node>, acl: Vec<Acl> },
    ParentCounters { id: NodeId, cversion: i32, pzxid: Zxid },
    Data { id: NodeId, data: Box<[u8]>, version: i32, mzxid: Zxid, mtime: i64 },
}

/// The znode tree; see the module documentation.
#[derive(Debug, Clone)]
pub struct ZnodeTree {
    arena: Arena,
    /// Node ids, found by (parent id, name).
    index: HashTable<NodeId>,
    hasher: std::hash::RandomState,
    pub(crate) acls: AclTable,
    ephemerals: HashMap<SessionId, BTreeSet<NodeId>>,
    containers: BTreeSet<NodeId>,
    ttls: BTreeSet<NodeId>,
    config: TreeConfig,
    /// Set while a multi runs.
    undo: Option<Vec<Undo>>,
    /// Whether changes report their [`WatchEvent`]s (see [`ZnodeTree::report_events`]).
    events: bool,
}

impl Default for ZnodeTree {
    fn default() -> Self {
        ZnodeTree::new(TreeConfig::default())
    }
}

impl ZnodeTree {
    /// A fresh tree: `/`, `/zookeeper`, `/zookeeper/quota` and `/zookeeper/config` (readable by
    /// anyone, writable by the super user only), all with zero Stats, as a new ZooKeeper has.
    pub fn new(config: TreeConfig) -> ZnodeTree {
        let mut tree = ZnodeTree::empty(config);
        let open = tree.acls.intern(&Acl::open_unsafe());
        tree.attach_root(Node::new("", NIL, open));
        let open = tree.acls.intern(&Acl::open_unsafe());
        let zk = tree.attach(Node::new("zookeeper", ROOT_ID, open));
        let open = tree.acls.intern(&Acl::open_unsafe());
        tree.attach(Node::new("quota", zk, open));
        let read = tree.acls.intern(&Acl::read_unsafe());
        tree.attach(Node::new("config", zk, read));
        tree
    }

    pub(crate) fn empty(config: TreeConfig) -> ZnodeTree {
        ZnodeTree {
            arena: Arena::default(),
            index: HashTable::new(),
            hasher: std::hash::RandomState::new(),
            acls: AclTable::default(),
            ephemerals: HashMap::new(),
            containers: BTreeSet::new(),
            ttls: BTreeSet::new(),
            config,
            undo: None,
            events: true,
        }
    }

    /// Whether the changes from now on report the [`WatchEvent`]s they cause (they do unless
    /// told otherwise). A replica on which nobody watches anything turns them off: each event
    /// copies its path, and no change of state depends on them.
    pub fn report_events(&mut self, report: bool) {
        self.events = report;
    }

    /// Adds an event to `events` if changes report them.
    fn event(&self, events: &mut Vec<WatchEvent>, kind: EventType, path: &str, zxid: Zxid) {
        if self.events {
            events.push(WatchEvent::new(kind, path, zxid));
        }
    }

    /// The settings this tree was made with.
    pub fn config(&self) -> &TreeConfig {
        &self.config
    }

    // ---- reads ----------------------------------------------------------------------------

    /// `getData`: the data and Stat. Needs READ. Errors: NoNode, NoAuth.
    pub fn get_data(&self, caller: Caller<'_>, path: &str) -> Result<(&[u8], Stat), KeeperError> {
        let id = self.lookup(path).ok_or(KeeperError::NoNode)?;
        self.check_acl(id, perms::READ, caller)?;
        let node = self.node(id);
        Ok((&node.data, node.stat()))
    }

    /// `exists`: the Stat, or `None` for a missing node. Needs READ on an existing node, as
    /// ZooKeeper does since 3.7.3/3.8.4/3.9.2. Errors: BadArguments (NUL in path), NoAuth.
    pub fn exists(&self, caller: Caller<'_>, path: &str) -> Result<Option<Stat>, KeeperError> {
        if path.contains('\0') {
            return Err(KeeperError::BadArguments);
        }
        let Some(id) = self.lookup(path) else { return Ok(None) };
        self.check_acl(id, perms::READ, caller)?;
        Ok(Some(self.node(id).stat()))
    }

    /// `getChildren2`: the children's names (sorted; ZooKeeper promises no order) and the Stat.
    /// Needs READ. Errors: NoNode, NoAuth.
    pub fn get_children(&self, caller: Caller<'_>, path: &str) -> Result<(Vec<String>, Stat), KeeperError> {
        let id = self.lookup(path).ok_or(KeeperError::NoNode)?;
        self.check_acl(id, perms::READ, caller)?;
        let mut names: Vec<String> = self.children(id).map(|c| self.node(c).name.to_string()).collect();
        names.sort_unstable();
        Ok((names, self.node(id).stat()))
    }

    /// `getACL`: the ACL and Stat. Needs READ or ADMIN; without ADMIN, digest hashes come back
    /// masked (`user:x`). Errors: NoNode, NoAuth.
    pub fn get_acl(&self, caller: Caller<'_>, path: &str) -> Result<(Vec<Acl>, Stat), KeeperError> {
        let id = self.lookup(path).ok_or(KeeperError::NoNode)?;
        self.check_acl(id, perms::READ | perms::ADMIN, caller)?;
        let acl = self.acls.get(self.node(id).acl);
        let acl = match self.check_acl(id, perms::ADMIN, caller) {
            Ok(()) => acl.to_vec(),
            Err(_) => acl::mask_digests(acl),
        };
        Ok((acl, self.node(id).stat()))
    }

    /// `getAllChildrenNumber`: the number of descendants. Needs READ. Errors: NoNode, NoAuth.
    pub fn get_all_children_number(&self, caller: Caller<'_>, path: &str) -> Result<i32, KeeperError> {
        let id = self.lookup(path).ok_or(KeeperError::NoNode)?;
        self.check_acl(id, perms::READ, caller)?;
        let mut count = 0i32;
        let mut stack = vec![id];
        while let Some(n) = stack.pop() {
            for child in self.children(n) {
                count = count.wrapping_add(1);
                stack.push(child);
            }
        }
        Ok(count)
    }

    /// `getEphemerals`: the session's ephemeral paths, sorted, that start with `prefix` (a string
    /// prefix, as in ZooKeeper; empty or `/` means all).
    pub fn get_ephemerals(&self, session: SessionId, prefix: &str) -> Vec<String> {
        let all = matches!(prefix.trim(), "" | "/");
        let mut paths: Vec<String> = self
            .ephemerals
            .get(&session)
            .into_iter()
            .flatten()
            .map(|&id| self.path_of(id))
            .filter(|p| all || p.starts_with(prefix))
            .collect();
        paths.sort_unstable();
        paths
    }

    /// The Stat of a node without any ACL check, for the server's own use (watch replay,
    /// four-letter words).
    pub fn stat(&self, path: &str) -> Option<Stat> {
        self.lookup(path).map(|id| self.node(id).stat())
    }

    /// What kind of node is at `path` (the Stat shows 0 as owner for containers and TTL nodes).
    pub fn node_type(&self, path: &str) -> Option<NodeType> {
        self.lookup(path).map(|id| self.node(id).node_type())
    }

    /// The number of znodes, the four reserved ones included.
    pub fn node_count(&self) -> usize {
        self.arena.live
    }

    /// One more than the largest node id in use (ids are dense, from 0).
    pub(crate) fn id_bound(&self) -> usize {
        self.arena.chunks.len().saturating_sub(1) * CHUNK + self.arena.chunks.last().map_or(0, |c| c.0.len())
    }

    /// The number of ephemeral znodes.
    pub fn ephemeral_count(&self) -> usize {
        self.ephemerals.values().map(BTreeSet::len).sum()
    }

    /// The sessions that own at least one ephemeral, ascending.
    pub fn sessions_with_ephemerals(&self) -> Vec<SessionId> {
        let mut sessions: Vec<SessionId> = self.ephemerals.keys().copied().collect();
        sessions.sort_unstable();
        sessions
    }

    /// The containers and TTL nodes due for deletion at `now` (ms), sorted: empty containers that
    /// once had a child, and childless TTL nodes not modified for longer than their TTL. The
    /// leader proposes [`ZnodeTree::delete_expired`] for each.
    pub fn expired_nodes(&self, now: i64) -> Vec<String> {
        let mut paths: Vec<String> = self
            .containers
            .iter()
            .chain(self.ttls.iter())
            .filter(|&&id| self.is_expired(id, now))
            .map(|&id| self.path_of(id))
            .collect();
        paths.sort_unstable();
        paths
    }

    fn is_expired(&self, id: NodeId, now: i64) -> bool {
        let node = self.node(id);
        node.num_children == 0
            && match node.node_type() {
                NodeType::Container => node.cversion > 0,
                NodeType::Ttl(ttl) => now.saturating_sub(node.mtime) > ttl,
                _ => false,
            }
    }

    // ---- changes ---------------------------------------------------------------------------

    /// `create`: makes a znode. Checks, in ZooKeeper's order: data size and TTL (BadArguments),
    /// the path's shape (BadArguments), the ACL (InvalidAcl), the parent (NoNode), CREATE on the
    /// parent (NoAuth), the final path (BadArguments), NodeExists, NoChildrenForEphemerals.
    /// The sequence suffix is `%010d` of the parent's create counter. Events: NodeCreated on the
    /// path, NodeChildrenChanged on the parent.
    pub fn create(
        &mut self,
        txn: Txn,
        caller: Caller<'_>,
        req: impl AsRef<CreateRequest>,
    ) -> Result<Applied<Created>, KeeperError> {
        let mut events = Vec::new();
        let value = self.create_op(txn, caller, req.as_ref(), &mut events)?;
        Ok(Applied { value, events })
    }

    /// `delete`: removes a childless znode if its data version is `version` (−1: any). Checks:
    /// reserved paths `/`, `/zookeeper`, `/zookeeper/quota`, `/zookeeper/config` (BadArguments),
    /// parent (NoNode), DELETE on the parent (NoAuth), node (NoNode), BadVersion, NotEmpty.
    /// Events: NodeDeleted on the path, NodeChildrenChanged on the parent.
    pub fn delete(
        &mut self,
        txn: Txn,
        caller: Caller<'_>,
        path: &str,
        version: i32,
    ) -> Result<Applied<()>, KeeperError> {
        let mut events = Vec::new();
        self.delete_op(txn, caller, path, version, &mut events)?;
        Ok(Applied { value: (), events })
    }

    /// `setData`: replaces the data if the version is `version` (−1: any) and returns the new
    /// Stat. Checks: data size and path (BadArguments), NoNode, WRITE (NoAuth), BadVersion.
    /// Event: NodeDataChanged.
    pub fn set_data(
        &mut self,
        txn: Txn,
        caller: Caller<'_>,
        path: &str,
        data: impl AsRef<[u8]>,
        version: i32,
    ) -> Result<Applied<Stat>, KeeperError> {
        let mut events = Vec::new();
        let value = self.set_data_op(txn, caller, path, data.as_ref(), version, &mut events)?;
        Ok(Applied { value, events })
    }

    /// `setACL`: replaces the ACL if the ACL version is `version` (−1: any) and returns the new
    /// Stat. Checks: path (BadArguments), InvalidAcl, NoNode, ADMIN (NoAuth), BadVersion. No
    /// event, and no zxid is recorded (ZooKeeper changes only aversion).
    pub fn set_acl(&mut self, caller: Caller<'_>, path: &str, acl: &[Acl], version: i32) -> Result<Stat, KeeperError> {
        validate_path(path).map_err(|_| KeeperError::BadArguments)?;
        let acl = acl::fixup(acl, caller.ids)?;
        let id = self.lookup(path).ok_or(KeeperError::NoNode)?;
        self.check_acl(id, perms::ADMIN, caller)?;
        let aversion = next_version(self.node(id).aversion, version)?;
        let new_ref = self.acls.intern(&acl);
        let node = self.node_mut(id);
        let old_ref = std::mem::replace(&mut node.acl, new_ref);
        node.aversion = aversion;
        self.acls.release(old_ref);
        Ok(self.node(id).stat())
    }

    /// `check`: succeeds if the node's data version is `version` (−1: any). Checks: path
    /// (BadArguments), NoNode, READ (NoAuth), BadVersion. Meaningful inside [`ZnodeTree::multi`].
    pub fn check(&self, caller: Caller<'_>, path: &str, version: i32) -> Result<(), KeeperError> {
        validate_path(path).map_err(|_| KeeperError::BadArguments)?;
        let id = self.lookup(path).ok_or(KeeperError::NoNode)?;
        self.check_acl(id, perms::READ, caller)?;
        next_version(self.node(id).version, version).map(drop)
    }

    /// `multi`: applies all ops in order, each seeing the ones before it, or none. On success,
    /// one result per op and the events of all ops in order. On failure the tree is as it was,
    /// and the results follow ZooKeeper: `RolledBack` (code 0) for the ops before the failing
    /// one, its error, `RuntimeInconsistency` (−2) after it.
    pub fn multi(
        &mut self,
        txn: Txn,
        caller: Caller<'_>,
        ops: impl AsRef<[Op]>,
    ) -> Result<Applied<Vec<OpResult>>, MultiFailed> {
        let ops = ops.as_ref();
        let count = ops.len();
        let mut events = Vec::new();
        let mut results = Vec::with_capacity(count);
        self.undo = Some(Vec::new());
        let mut failure = None;
        for (index, op) in ops.iter().enumerate() {
            match self.apply_op(txn, caller, op, &mut events) {
                Ok(result) => results.push(result),
                Err(error) => {
                    failure = Some((index, error));
                    break;
                }
            }
        }
        let undo = self.undo.take().unwrap_or_default();
        let Some((index, error)) = failure else { return Ok(Applied { value: results, events }) };
        for entry in undo.into_iter().rev() {
            self.undo_one(entry);
        }
        let mut results = vec![OpResult::RolledBack; index];
        results.push(OpResult::Error(error));
        results.resize(count, OpResult::Error(KeeperError::RuntimeInconsistency));
        Err(MultiFailed { index, error, results })
    }

    /// Ends a session as far as the tree goes: deletes all its ephemerals (no ACL check) and
    /// returns their paths, sorted, with a NodeDeleted and a NodeChildrenChanged per node.
    pub fn close_session(&mut self, txn: Txn, session: SessionId) -> Applied<Vec<String>> {
        let ids = self.ephemerals.get(&session).cloned().unwrap_or_default();
        let mut doomed: Vec<(String, NodeId)> = ids.into_iter().map(|id| (self.path_of(id), id)).collect();
        doomed.sort_unstable();
        let mut events = Vec::with_capacity(doomed.len() * 2);
        for (path, id) in &doomed {
            self.remove_node(txn, *id, path, &mut events);
        }
        Applied { value: doomed.into_iter().map(|(path, _)| path).collect(), events }
    }

    /// `deleteContainer`: removes a container or TTL node that is still due for deletion at
    /// `txn.time` (see [`ZnodeTree::expired_nodes`]), with no ACL check. Errors: NoNode,
    /// NotEmpty, and BadVersion when it is not (or no longer) an expired container or TTL node,
    /// since the node may have changed between the leader's scan and this command.
    pub fn delete_expired(&mut self, txn: Txn, path: &str) -> Result<Applied<()>, KeeperError> {
        let id = self.lookup(path).ok_or(KeeperError::NoNode)?;
        if self.node(id).num_children > 0 {
            return Err(KeeperError::NotEmpty);
        }
        if !self.is_expired(id, txn.time) {
            return Err(KeeperError::BadVersion);
        }
        let mut events = Vec::new();
        self.remove_node(txn, id, path, &mut events);
        Ok(Applied { value: (), events })
    }

    /// Publishes the ensemble configuration in `/zookeeper/config` (a server-side write; clients
    /// cannot write there). Event: NodeDataChanged.
    pub fn set_config(&mut self, txn: Txn, data: Vec<u8>) -> Result<Applied<Stat>, KeeperError> {
        if data.len() > MAX_DATA_LEN {
            return Err(KeeperError::BadArguments);
        }
        let id = self.lookup(path::CONFIG).ok_or(KeeperError::NoNode)?;
        let version = next_version(self.node(id).version, -1)?;
        let mut events = Vec::new();
        let stat = self.write_data(txn, id, path::CONFIG, &data, version, &mut events);
        Ok(Applied { value: stat, events })
    }

    // ---- the operations proper ---------------------------------------------------------------

    fn apply_op(
        &mut self,
        txn: Txn,
        caller: Caller<'_>,
        op: &Op,
        events: &mut Vec<WatchEvent>,
    ) -> Result<OpResult, KeeperError> {
        match op {
            Op::Create(req) => self.create_op(txn, caller, req, events).map(OpResult::Create),
            Op::Delete { path, version } => {
                self.delete_op(txn, caller, path, *version, events).map(|()| OpResult::Delete)
            }
            Op::SetData { path, data, version } => {
                self.set_data_op(txn, caller, path, data, *version, events).map(OpResult::SetData)
            }
            Op::Check { path, version } => self.check(caller, path, *version).map(|()| OpResult::Check),
        }
    }

    fn create_op(
        &mut self,
        txn: Txn,
        caller: Caller<'_>,
        req: &CreateRequest,
        events: &mut Vec<WatchEvent>,
    ) -> Result<Created, KeeperError> {
        if req.data.len() > MAX_DATA_LEN {
            return Err(KeeperError::BadArguments);
        }
        let owner = owner_for(req.mode, req.ttl, caller.session)?;
        if req.path.contains('\0') {
            return Err(KeeperError::BadArguments);
        }
        let (parent_path, base) = split_parent(&req.path).ok_or(KeeperError::BadArguments)?;
        let acl = acl::fixup(&req.acl, caller.ids)?;
        let parent = self.lookup(parent_path).ok_or(KeeperError::NoNode)?;
        self.check_acl(parent, perms::CREATE, caller)?;
        let name = match req.mode.is_sequential() {
            true => format!("{base}{:010}", self.node(parent).cversion),
            false => base.to_string(),
        };
        let path = join(parent_path, &name);
        validate_path(&path).map_err(|_| KeeperError::BadArguments)?;
        if name.is_empty() || self.child(parent, &name).is_some() {
            return Err(KeeperError::NodeExists);
        }
        if matches!(self.node(parent).node_type(), NodeType::Ephemeral(_)) {
            return Err(KeeperError::NoChildrenForEphemerals);
        }
        if self.arena.live >= NIL as usize - 1 {
            return Err(KeeperError::SystemError);
        }

        self.touch_parent(parent, txn.zxid, true);
        let mut node = Node::new(&name, parent, self.acls.intern(&acl));
        node.data = req.data.as_slice().into();
        (node.czxid, node.mzxid, node.pzxid) = (txn.zxid, txn.zxid, txn.zxid);
        (node.ctime, node.mtime) = (txn.time, txn.time);
        node.owner = owner;
        let id = self.attach(node);
        self.record(Undo::Created(id));
        let stat = self.node(id).stat();
        self.event(events, EventType::NodeCreated, &path, txn.zxid);
        self.event(events, EventType::NodeChildrenChanged, parent_path, txn.zxid);
        Ok(Created { path, stat })
    }

    fn delete_op(
        &mut self,
        txn: Txn,
        caller: Caller<'_>,
        path: &str,
        version: i32,
        events: &mut Vec<WatchEvent>,
    ) -> Result<(), KeeperError> {
        if path.contains('\0') || path::is_special(path) {
            return Err(KeeperError::BadArguments);
        }
        let (parent_path, name) = split_parent(path).ok_or(KeeperError::BadArguments)?;
        let parent = self.lookup(parent_path).ok_or(KeeperError::NoNode)?;
        self.check_acl(parent, perms::DELETE, caller)?;
        let id = self.child(parent, name).ok_or(KeeperError::NoNode)?;
        next_version(self.node(id).version, version)?;
        if self.node(id).num_children > 0 {
            return Err(KeeperError::NotEmpty);
        }
        self.remove_node(txn, id, path, events);
        Ok(())
    }

    fn set_data_op(
        &mut self,
        txn: Txn,
        caller: Caller<'_>,
        path: &str,
        data: &[u8],
        version: i32,
        events: &mut Vec<WatchEvent>,
    ) -> Result<Stat, KeeperError> {
        if data.len() > MAX_DATA_LEN {
            return Err(KeeperError::BadArguments);
        }
        validate_path(path).map_err(|_| KeeperError::BadArguments)?;
        let id = self.lookup(path).ok_or(KeeperError::NoNode)?;
        self.check_acl(id, perms::WRITE, caller)?;
        let new_version = next_version(self.node(id).version, version)?;
        Ok(self.write_data(txn, id, path, data, new_version, events))
    }

    fn write_data(
        &mut self,
        txn: Txn,
        id: NodeId,
        path: &str,
        data: &[u8],
        version: i32,
        events: &mut Vec<WatchEvent>,
    ) -> Stat {
        let node = self.node_mut(id);
        let old_data = std::mem::replace(&mut node.data, data.into());
        let undo = Undo::Data { id, data: old_data, version: node.version, mzxid: node.mzxid, mtime: node.mtime };
        (node.version, node.mzxid, node.mtime) = (version, txn.zxid, txn.time);
        let stat = node.stat();
        self.record(undo);
        self.event(events, EventType::NodeDataChanged, path, txn.zxid);
        stat
    }

    /// Deletes a checked, childless node and reports it.
    fn remove_node(&mut self, txn: Txn, id: NodeId, path: &str, events: &mut Vec<WatchEvent>) {
        let parent = self.node(id).parent;
        self.touch_parent(parent, txn.zxid, false);
        let node = self.detach(id);
        let acl = match self.undo.is_some() {
            true => self.acls.get(node.acl).to_vec(),
            false => Vec::new(),
        };
        self.acls.release(node.acl);
        if self.undo.is_some() {
            self.record(Undo::Deleted { id, node: Box::new(node), acl });
        }
        let parent_path = split_parent(path).map_or(path::ROOT, |(p, _)| p);
        self.event(events, EventType::NodeDeleted, path, txn.zxid);
        self.event(events, EventType::NodeChildrenChanged, parent_path, txn.zxid);
    }

    /// A child is created (cversion + 1, pzxid) or deleted (pzxid only, never backwards, as in
    /// `DataTree.deleteNode`).
    fn touch_parent(&mut self, parent: NodeId, zxid: Zxid, created: bool) {
        let node = self.node_mut(parent);
        let undo = Undo::ParentCounters { id: parent, cversion: node.cversion, pzxid: node.pzxid };
        if created {
            node.cversion = node.cversion.wrapping_add(1);
            node.pzxid = zxid;
        } else if zxid > node.pzxid {
            node.pzxid = zxid;
        }
        self.record(undo);
    }

    fn record(&mut self, undo: Undo) {
        if let Some(log) = &mut self.undo {
            log.push(undo);
        }
    }

    fn undo_one(&mut self, undo: Undo) {
        match undo {
            Undo::Created(id) => {
                let node = self.detach(id);
                self.acls.release(node.acl);
            }
            Undo::Deleted { id, mut node, acl } => {
                node.acl = self.acls.intern(&acl);
                self.attach_at(id, *node);
            }
            Undo::ParentCounters { id, cversion, pzxid } => {
                let node = self.node_mut(id);
                (node.cversion, node.pzxid) = (cversion, pzxid);
            }
            Undo::Data { id, data, version, mzxid, mtime } => {
                let node = self.node_mut(id);
                (node.data, node.version, node.mzxid, node.mtime) = (data, version, mzxid, mtime);
            }
        }
    }

    // ---- structure ---------------------------------------------------------------------------

    /// The node behind an id taken from the tree's own links or index. Those always point at
    /// live nodes (attach and detach keep links, index and arena in step), so a miss is a bug in
    /// this file, not something input can cause.
    pub(crate) fn node(&self, id: NodeId) -> &Node {
        self.arena.get(id).expect("tree links point at live nodes")
    }

    fn node_mut(&mut self, id: NodeId) -> &mut Node {
        self.arena.get_mut(id).expect("tree links point at live nodes")
    }

    fn key_hash(&self, parent: NodeId, name: &str) -> u64 {
        self.hasher.hash_one((parent, name))
    }

    /// The child of `parent` called `name`.
    pub(crate) fn child(&self, parent: NodeId, name: &str) -> Option<NodeId> {
        let hash = self.key_hash(parent, name);
        self.index.find(hash, |&id| self.arena.get(id).is_some_and(|n| n.parent == parent && n.name == name)).copied()
    }

    /// Resolves a path segment by segment; `None` for a missing node or a malformed path.
    pub(crate) fn lookup(&self, path: &str) -> Option<NodeId> {
        let rest = path.strip_prefix('/')?;
        if rest.is_empty() {
            return Some(ROOT_ID);
        }
        rest.split('/').try_fold(ROOT_ID, |id, name| if name.is_empty() { None } else { self.child(id, name) })
    }

    /// The children of a node, in no particular order.
    pub(crate) fn children(&self, id: NodeId) -> impl Iterator<Item = NodeId> + '_ {
        std::iter::successors(Some(self.node(id).first_child).filter(|&c| c != NIL), move |&c| {
            Some(self.node(c).next).filter(|&n| n != NIL)
        })
    }

    /// A node's full path, rebuilt from the names up to the root.
    pub(crate) fn path_of(&self, mut id: NodeId) -> String {
        let mut names = Vec::new();
        while id != ROOT_ID && id != NIL {
            let node = self.node(id);
            names.push(node.name.as_str());
            id = node.parent;
        }
        if names.is_empty() {
            return path::ROOT.to_string();
        }
        let mut path = String::with_capacity(names.iter().map(|n| n.len() + 1).sum());
        for name in names.iter().rev() {
            path.push('/');
            path.push_str(name);
        }
        path
    }

    pub(crate) fn attach_root(&mut self, root: Node) {
        let id = self.arena.alloc(root);
        debug_assert_eq!(id, ROOT_ID);
    }

    /// Adds a node under its parent: arena, sibling links, index, and the session, container and
    /// TTL sets.
    pub(crate) fn attach(&mut self, node: Node) -> NodeId {
        let id = self.arena.alloc(node);
        self.link(id);
        id
    }

    fn attach_at(&mut self, id: NodeId, node: Node) {
        self.arena.alloc_at(id, node);
        self.link(id);
    }

    fn link(&mut self, id: NodeId) {
        let (parent, owner, hash) = {
            let node = self.node(id);
            (node.parent, node.owner, self.key_hash(node.parent, &node.name))
        };
        let parent_node = self.node_mut(parent);
        let old_first = std::mem::replace(&mut parent_node.first_child, id);
        parent_node.num_children += 1;
        if old_first != NIL {
            self.node_mut(old_first).prev = id;
        }
        let node = self.node_mut(id);
        (node.prev, node.next) = (NIL, old_first);
        let ZnodeTree { index, arena, hasher, .. } = self;
        index.insert_unique(hash, id, |&other| {
            arena.get(other).map_or(0, |n| hasher.hash_one((n.parent, n.name.as_str())))
        });
        match NodeType::from_owner(owner) {
            NodeType::Persistent => {}
            NodeType::Ephemeral(session) => {
                self.ephemerals.entry(session).or_default().insert(id);
            }
            NodeType::Container => {
                self.containers.insert(id);
            }
            NodeType::Ttl(_) => {
                self.ttls.insert(id);
            }
        }
    }

    /// Takes a childless node out of the tree, undoing everything [`ZnodeTree::attach`] did.
    fn detach(&mut self, id: NodeId) -> Node {
        let (parent, prev, next, owner, hash) = {
            let node = self.node(id);
            (node.parent, node.prev, node.next, node.owner, self.key_hash(node.parent, &node.name))
        };
        if let Ok(entry) = self.index.find_entry(hash, |&other| other == id) {
            entry.remove();
        }
        if prev == NIL {
            self.node_mut(parent).first_child = next;
        } else {
            self.node_mut(prev).next = next;
        }
        if next != NIL {
            self.node_mut(next).prev = prev;
        }
        self.node_mut(parent).num_children -= 1;
        match NodeType::from_owner(owner) {
            NodeType::Persistent => {}
            NodeType::Ephemeral(session) => {
                if let Some(set) = self.ephemerals.get_mut(&session) {
                    set.remove(&id);
                    if set.is_empty() {
                        self.ephemerals.remove(&session);
                    }
                }
            }
            NodeType::Container => {
                self.containers.remove(&id);
            }
            NodeType::Ttl(_) => {
                self.ttls.remove(&id);
            }
        }
        self.arena.remove(id).expect("detached node is live")
    }

    fn check_acl(&self, id: NodeId, perm: i32, caller: Caller<'_>) -> Result<(), KeeperError> {
        let acl = self.acls.get(self.node(id).acl);
        acl::check(acl, perm, caller.ids, self.config.super_digest.as_deref())
    }

    /// Every (id, node) in depth-first order, children sorted by name: the canonical order that
    /// snapshots and digests use.
    pub(crate) fn canonical_order(&self) -> Vec<NodeId> {
        let mut order = Vec::with_capacity(self.arena.live);
        let mut stack = vec![ROOT_ID];
        // The names beside the ids: sorting then reads no node (a quarter less time for a snapshot).
        let mut kids: Vec<(&str, NodeId)> = Vec::new();
        while let Some(id) = stack.pop() {
            order.push(id);
            kids.extend(self.children(id).map(|c| (self.node(c).name.as_str(), c)));
            kids.sort_unstable_by(|a, b| b.0.cmp(a.0));
            stack.extend(kids.drain(..).map(|(_, c)| c));
        }
        order
    }

    /// Checks the structure's invariants; the error names the first one broken.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut seen = 0usize;
        let mut ephemerals: HashMap<SessionId, BTreeSet<NodeId>> = HashMap::new();
        let mut acl_refs: HashMap<AclRef, u32> = HashMap::new();
        for id in self.canonical_order() {
            seen += 1;
            let node = self.node(id);
            *acl_refs.entry(node.acl).or_default() += 1;
            let kids = self.children(id).count();
            if kids != node.num_children as usize {
                return Err(format!("{}: numChildren {} but {kids} children", self.path_of(id), node.num_children));
            }
            if id != ROOT_ID && self.child(node.parent, &node.name) != Some(id) {
                return Err(format!("{}: not found through the index", self.path_of(id)));
            }
            if node.pzxid < node.czxid || node.mzxid < node.czxid {
                return Err(format!("{}: pzxid or mzxid before czxid", self.path_of(id)));
            }
            match node.node_type() {
                NodeType::Ephemeral(session) => {
                    if kids > 0 {
                        return Err(format!("{}: ephemeral with children", self.path_of(id)));
                    }
                    ephemerals.entry(session).or_default().insert(id);
                }
                NodeType::Container if !self.containers.contains(&id) => {
                    return Err(format!("{}: container not indexed", self.path_of(id)));
                }
                NodeType::Ttl(_) if !self.ttls.contains(&id) => {
                    return Err(format!("{}: TTL node not indexed", self.path_of(id)));
                }
                _ => {}
            }
        }
        if seen != self.arena.live || seen != self.index.len() + 1 {
            return Err(format!("{seen} reachable nodes, {} live, {} indexed", self.arena.live, self.index.len()));
        }
        if ephemerals != self.ephemerals {
            return Err("session index differs from the ephemeral nodes".to_string());
        }
        let containers = self.containers.iter().filter(|&&id| self.node(id).node_type() == NodeType::Container);
        if containers.count() != self.containers.len()
            || self.ttls.iter().any(|&id| !matches!(self.node(id).node_type(), NodeType::Ttl(_)))
        {
            return Err("container or TTL index holds another kind of node".to_string());
        }
        if acl_refs.len() != self.acls.len() || acl_refs.iter().any(|(&r, &n)| self.acls.refs(r) != n) {
            return Err(format!("ACL reference counts differ from the {} lists in use", acl_refs.len()));
        }
        Ok(())
    }
}

/// The stored ephemeralOwner for a create, after ZooKeeper's TTL rules (`validateCreateRequest`).
fn owner_for(mode: CreateMode, ttl: Option<i64>, session: SessionId) -> Result<i64, KeeperError> {
    let ttl = ttl.filter(|&t| t >= 0);
    if mode.is_ttl() {
        return match ttl {
            Some(t) if t > 0 && t <= MAX_TTL_MS => Ok(NodeType::Ttl(t).owner()),
            _ => Err(KeeperError::BadArguments),
        };
    }
    if ttl.is_some() {
        return Err(KeeperError::BadArguments);
    }
    Ok(match mode {
        CreateMode::Container => NodeType::Container.owner(),
        m if m.is_ephemeral() => {
            if !NodeType::is_valid_session(session) {
                return Err(KeeperError::BadArguments);
            }
            session
        }
        _ => 0,
    })
}

/// `checkAndIncVersion`: −1 matches any version; the next version skips −1 when it wraps
/// (ZOOKEEPER-4743).
fn next_version(current: i32, expected: i32) -> Result<i32, KeeperError> {
    if expected != -1 && expected != current {
        return Err(KeeperError::BadVersion);
    }
    Ok(match current.wrapping_add(1) {
        -1 => 0,
        next => next,
    })
}

fn join(parent: &str, name: &str) -> String {
    if parent == path::ROOT { format!("/{name}") } else { format!("{parent}/{name}") }
}

#[cfg(test)]
mod tests;
