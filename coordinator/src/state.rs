//! The replicated state: the znode tree, the session table and the write de-duplication table,
//! changed only by [`Command`]s applied in log order.
//!
//! Everything here is deterministic: a command carries the leader's clock, the session
//! password the leader drew, and the caller's auth ids, so every replica that applies the same
//! log reaches the same bytes. Apply never reads a clock and never panics.
//!
//! Each write carries its session and a request id the receiving replica drew for it. A write
//! forwarded or retried after a leader change may reach the log twice; the second copy returns
//! the first one's result without applying again. (Not the client's xid: a client that resumes
//! a session with a new connection numbers its xids from 1 again.) A session may have up to
//! [`DEDUP_WINDOW`] writes in flight, all retried together after a leader change, so the last
//! that many writes of each session are remembered.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize};

use crate::acl::{Acl, Id};
use crate::error::KeeperError;
use crate::snapshot::SnapshotError;
use crate::stat::{SessionId, Stat, Zxid};
use crate::tree::{Caller, CreateRequest, Created, Op, OpResult, TreeConfig, Txn, ZnodeTree};
use crate::watch::WatchEvent;

/// A change, as it is written to the Raft log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    /// The leader's wall clock when it proposed the command, in ms since the epoch.
    pub time: i64,
    /// What to do: shared, since the same command is kept in the log's recent entries, read
    /// back to replicate and apply it, and held by its proposer until it is answered.
    #[serde(deserialize_with = "arc_new")]
    pub kind: Arc<CommandKind>,
}

/// Deserializes an `Arc<T>` with one allocation: serde's own impl boxes the value, then copies
/// it into a new `Arc`.
fn arc_new<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Arc<T>, D::Error> {
    T::deserialize(d).map(Arc::new)
}

/// Deserializes a sequence into `Arc`s, one allocation each (see [`arc_new`]).
pub(crate) fn arc_each<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<Arc<T>>, D::Error> {
    Vec::<T>::deserialize(d).map(|items| items.into_iter().map(Arc::new).collect())
}

/// How many distinct caller id lists [`shared_ids`] keeps per thread.
const RECENT_IDS: usize = 8;

/// Caller id lists decoded lately, and where the next new one goes.
type RecentIds = ([Option<Arc<[Id]>>; RECENT_IDS], usize);

thread_local! {
    static DECODED_IDS: std::cell::RefCell<RecentIds> = const { std::cell::RefCell::new(([const { None }; RECENT_IDS], 0)) };
}

/// Deserializes a write's caller ids, shared with an equal list decoded lately on this thread:
/// every write of a session carries the same ids (and every session from one host too), so a
/// follower decoding a batch of entries allocates them once rather than once per write.
fn shared_ids<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<[Id]>, D::Error> {
    let ids = Vec::<Id>::deserialize(d)?;
    Ok(DECODED_IDS.with_borrow_mut(|(recent, next)| {
        if let Some(known) = recent.iter().flatten().find(|known| known[..] == ids[..]) {
            return known.clone();
        }
        let shared: Arc<[Id]> = ids.into();
        recent[*next] = Some(shared.clone());
        *next = (*next + 1) % RECENT_IDS;
        shared
    }))
}

/// The kinds of change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CommandKind {
    /// Opens a session with the timeout the server granted and the password the leader drew.
    CreateSession {
        /// Negotiated timeout, in ms.
        timeout_ms: u32,
        /// The session's password.
        #[serde(with = "crate::byte_string")]
        password: Vec<u8>,
    },
    /// A client closed its session, or the leader expired it: its ephemerals go.
    CloseSession {
        /// The session.
        session: SessionId,
    },
    /// A client's write.
    Write {
        /// The session that sent it.
        session: SessionId,
        /// A random id the receiving replica drew for this request, for de-duplication.
        request: u64,
        /// The session's auth ids, for ACL checks (shared by the session's writes).
        #[serde(deserialize_with = "shared_ids")]
        ids: Arc<[Id]>,
        /// The operation.
        op: WriteOp,
    },
    /// Deletes containers and TTL nodes the leader found due.
    DeleteExpired {
        /// Their paths.
        paths: Vec<String>,
    },
}

/// A client write operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WriteOp {
    /// create / create2 / createContainer / createTTL.
    Create(CreateRequest),
    /// delete.
    Delete {
        /// The node.
        path: String,
        /// Expected version or −1.
        version: i32,
    },
    /// setData.
    SetData {
        /// The node.
        path: String,
        /// New data.
        #[serde(with = "crate::byte_string")]
        data: Vec<u8>,
        /// Expected version or −1.
        version: i32,
    },
    /// setACL.
    SetAcl {
        /// The node.
        path: String,
        /// The new ACL.
        acl: Vec<Acl>,
        /// Expected ACL version or −1.
        version: i32,
    },
    /// multi.
    Multi(Vec<Op>),
}

/// What a command returned; travels back to the replica the client is connected to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CommandResult {
    /// The new session's id and password.
    SessionCreated {
        /// Its id.
        session: SessionId,
        /// Its password.
        #[serde(with = "crate::byte_string")]
        password: Vec<u8>,
    },
    /// The session is closed (or was already).
    SessionClosed,
    /// A write's outcome.
    Write(Result<WriteResult, WriteError>),
    /// How many expired nodes were deleted.
    Expired(usize),
}

/// A successful write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WriteResult {
    /// The node created.
    Created(Created),
    /// Deleted.
    Deleted,
    /// The node's Stat after setData or setACL.
    Stat(Stat),
    /// Every op's result.
    Multi(Vec<OpResult>),
}

/// A failed write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WriteError {
    /// The error ZooKeeper would return.
    Keeper(KeeperError),
    /// A multi that failed: one result per op.
    Multi(Vec<OpResult>),
}

/// What the state keeps of a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// The negotiated timeout, in ms.
    pub timeout_ms: u32,
    /// The password a reconnecting client must present.
    #[serde(with = "crate::byte_string")]
    pub password: Vec<u8>,
}

/// The replicated state.
///
/// A clone is cheap (the tree's nodes and each session's last writes are shared, copy on
/// write): it is how a snapshot takes the state without holding up the writes that follow.
#[derive(Debug, Clone)]
pub struct ZnodeState {
    tree: ZnodeTree,
    sessions: BTreeMap<SessionId, SessionInfo>,
    /// The last [`DEDUP_WINDOW`] writes of each session.
    last_writes: BTreeMap<SessionId, Arc<LastWrites>>,
    next_session: SessionId,
}

/// A session's last [`DEDUP_WINDOW`] writes, oldest first: request id and result. The ids are
/// kept apart from the results because every write searches them: 2 KiB of ids rather than
/// the whole window of results. Serialized as the sequence of `(id, result)` pairs.
#[derive(Debug, Clone, Default, PartialEq)]
struct LastWrites {
    ids: VecDeque<u64>,
    results: VecDeque<CommandResult>,
}

impl LastWrites {
    /// The result of the write `request`, if it is remembered.
    fn find(&self, request: u64) -> Option<&CommandResult> {
        // Nearly every write is new, and a miss compares every id: without an early exit the
        // compiler turns the comparison into a few vector instructions (a search that stops at
        // the first match stays one id at a time: 1% of a loaded ensemble's CPU).
        let (older, newer) = self.ids.as_slices();
        let holds = |ids: &[u64]| ids.iter().fold(false, |found, id| found | (*id == request));
        if !holds(older) && !holds(newer) {
            return None;
        }
        self.ids.iter().rposition(|id| *id == request).and_then(|i| self.results.get(i))
    }

    /// Remembers the result of `request`, forgetting the oldest write beyond the window.
    fn remember(&mut self, request: u64, result: CommandResult) {
        if self.ids.len() == DEDUP_WINDOW {
            self.ids.pop_front();
            self.results.pop_front();
        }
        self.ids.push_back(request);
        self.results.push_back(result);
    }
}

impl Serialize for LastWrites {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.ids.iter().zip(&self.results))
    }
}

impl<'de> Deserialize<'de> for LastWrites {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let pairs = Vec::<(u64, CommandResult)>::deserialize(deserializer)?;
        let (ids, results) = pairs.into_iter().unzip();
        Ok(LastWrites { ids, results })
    }
}

/// How many of a session's latest writes are remembered to de-duplicate retries: at least as
/// many as a connection may have in flight.
pub const DEDUP_WINDOW: usize = 256;

/// The serialized form of [`ZnodeState`] besides the tree.
#[derive(Deserialize)]
struct StateSnapshot {
    #[serde(with = "crate::byte_string")]
    tree: Vec<u8>,
    sessions: BTreeMap<SessionId, SessionInfo>,
    last_writes: BTreeMap<SessionId, Arc<LastWrites>>,
    next_session: SessionId,
}

/// [`StateSnapshot`] by reference, field for field: what is written, without copying the
/// sessions and their last writes first.
#[derive(Serialize)]
struct StateSnapshotRef<'a> {
    #[serde(with = "crate::byte_string")]
    tree: Vec<u8>,
    sessions: &'a BTreeMap<SessionId, SessionInfo>,
    last_writes: &'a BTreeMap<SessionId, Arc<LastWrites>>,
    next_session: SessionId,
}

/// The high byte of every session id this store hands out, as ZooKeeper puts its server id
/// there; it keeps ids positive and clear of the container and TTL owner encodings.
const SESSION_ID_HIGH: i64 = 1 << 56;

impl ZnodeState {
    /// An empty store: the root and `/zookeeper`.
    pub fn new(config: TreeConfig) -> Self {
        ZnodeState {
            tree: ZnodeTree::new(config),
            sessions: BTreeMap::new(),
            last_writes: BTreeMap::new(),
            next_session: 0,
        }
    }

    /// Whether the commands applied from now on report their watch events (see
    /// [`ZnodeTree::report_events`]).
    pub fn report_events(&mut self, report: bool) {
        self.tree.report_events(report);
    }

    /// The tree, for reads.
    pub fn tree(&self) -> &ZnodeTree {
        &self.tree
    }

    /// The session called `id`, if it is open.
    pub fn session(&self, id: SessionId) -> Option<&SessionInfo> {
        self.sessions.get(&id)
    }

    /// Every open session.
    pub fn sessions(&self) -> impl Iterator<Item = (SessionId, &SessionInfo)> {
        self.sessions.iter().map(|(id, s)| (*id, s))
    }

    /// Applies `command` as transaction `zxid`: returns its result and the watch events it
    /// caused.
    pub fn apply(&mut self, zxid: Zxid, command: &Command) -> (CommandResult, Vec<WatchEvent>) {
        let txn = Txn::new(zxid, command.time);
        match command.kind.as_ref() {
            CommandKind::CreateSession { timeout_ms, password } => {
                if self.next_session == 0 {
                    // ZooKeeper seeds its ids from the clock: ((now << 24) >>> 8) | serverId << 56.
                    self.next_session = (((command.time as u64) << 24) >> 8) as i64 | SESSION_ID_HIGH;
                }
                let session = self.next_session;
                self.next_session += 1;
                self.sessions.insert(session, SessionInfo { timeout_ms: *timeout_ms, password: password.clone() });
                (CommandResult::SessionCreated { session, password: password.clone() }, Vec::new())
            }
            CommandKind::CloseSession { session } => {
                self.sessions.remove(session);
                self.last_writes.remove(session);
                let closed = self.tree.close_session(txn, *session);
                (CommandResult::SessionClosed, closed.events)
            }
            CommandKind::DeleteExpired { paths } => {
                let mut events = Vec::new();
                let mut deleted = 0;
                for path in paths {
                    if let Ok(applied) = self.tree.delete_expired(txn, path) {
                        deleted += 1;
                        events.extend(applied.events);
                    }
                }
                (CommandResult::Expired(deleted), events)
            }
            CommandKind::Write { session, request, ids, op } => {
                if let Some(result) = self.last_writes.get(session).and_then(|w| w.find(*request)) {
                    return (result.clone(), Vec::new());
                }
                if !self.sessions.contains_key(session) {
                    return (CommandResult::Write(Err(WriteError::Keeper(KeeperError::SessionExpired))), Vec::new());
                }
                let caller = Caller::new(*session, ids);
                let (result, events) = self.write(txn, caller, op);
                let result = CommandResult::Write(result);
                Arc::make_mut(self.last_writes.entry(*session).or_default()).remember(*request, result.clone());
                (result, events)
            }
        }
    }

    fn write(
        &mut self,
        txn: Txn,
        caller: Caller<'_>,
        op: &WriteOp,
    ) -> (Result<WriteResult, WriteError>, Vec<WatchEvent>) {
        let keeper = |e: KeeperError| (Err(WriteError::Keeper(e)), Vec::new());
        match op {
            WriteOp::Create(req) => match self.tree.create(txn, caller, req) {
                Ok(a) => (Ok(WriteResult::Created(a.value)), a.events),
                Err(e) => keeper(e),
            },
            WriteOp::Delete { path, version } => match self.tree.delete(txn, caller, path, *version) {
                Ok(a) => (Ok(WriteResult::Deleted), a.events),
                Err(e) => keeper(e),
            },
            WriteOp::SetData { path, data, version } => match self.tree.set_data(txn, caller, path, data, *version) {
                Ok(a) => (Ok(WriteResult::Stat(a.value)), a.events),
                Err(e) => keeper(e),
            },
            WriteOp::SetAcl { path, acl, version } => match self.tree.set_acl(caller, path, acl, *version) {
                Ok(stat) => (Ok(WriteResult::Stat(stat)), Vec::new()),
                Err(e) => keeper(e),
            },
            WriteOp::Multi(ops) => match self.tree.multi(txn, caller, ops) {
                Ok(a) => (Ok(WriteResult::Multi(a.value)), a.events),
                Err(failed) => (Err(WriteError::Multi(failed.results)), Vec::new()),
            },
        }
    }

    /// The whole state as bytes (canonical: equal states give equal bytes).
    pub fn snapshot(&self) -> Vec<u8> {
        let snapshot = StateSnapshotRef {
            tree: self.tree.snapshot(),
            sessions: &self.sessions,
            last_writes: &self.last_writes,
            next_session: self.next_session,
        };
        postcard::to_allocvec(&snapshot).expect("serializing plain data to memory cannot fail")
    }

    /// A state from [`ZnodeState::snapshot`] bytes; an error, never a panic, on bad input.
    pub fn restore(bytes: &[u8], config: TreeConfig) -> Result<Self, SnapshotError> {
        let snapshot: StateSnapshot =
            postcard::from_bytes(bytes).map_err(|e| SnapshotError::Decode(format!("state snapshot: {e}")))?;
        Ok(ZnodeState {
            tree: ZnodeTree::restore(&snapshot.tree, config)?,
            sessions: snapshot.sessions,
            last_writes: snapshot.last_writes,
            next_session: snapshot.next_session,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stat::CreateMode;

    fn cmd(time: i64, kind: CommandKind) -> Command {
        Command { time, kind: Arc::new(kind) }
    }

    fn open_session(state: &mut ZnodeState, zxid: Zxid) -> SessionId {
        let created = cmd(1_700_000_000_000, CommandKind::CreateSession { timeout_ms: 4000, password: vec![7; 16] });
        match state.apply(zxid, &created).0 {
            CommandResult::SessionCreated { session, .. } => session,
            other => panic!("{other:?}"),
        }
    }

    fn write(session: SessionId, request: u64, op: WriteOp) -> Command {
        cmd(1_700_000_000_100, CommandKind::Write { session, request, ids: Arc::new([]), op })
    }

    /// A snapshot serializes a copy taken at one zxid while later writes go on: the copy keeps
    /// the tree, the sessions and every session's window of last writes as they were.
    #[test]
    fn a_copy_keeps_the_state_as_it_was_while_writes_go_on() {
        let mut state = ZnodeState::new(TreeConfig::default());
        let s = open_session(&mut state, 1);
        state.apply(2, &write(s, 1, WriteOp::Create(CreateRequest::new("/a", b"1".to_vec()))));
        let copy = state.clone();
        let before = copy.snapshot();
        let set = WriteOp::SetData { path: "/a".into(), data: b"2".to_vec(), version: -1 };
        state.apply(3, &write(s, 2, set));
        state.apply(4, &write(s, 3, WriteOp::Create(CreateRequest::new("/b", vec![]))));
        open_session(&mut state, 5);
        assert_eq!(copy.snapshot(), before, "the copy must not see writes applied after it was taken");
        let restored = ZnodeState::restore(&before, TreeConfig::default()).unwrap();
        assert_eq!(restored.tree().get_data(Caller::new(s, &[]), "/a").unwrap().0, b"1");
        assert_eq!(restored.sessions().count(), 1);
        assert_eq!(state.sessions().count(), 2);
        assert_eq!(state.tree().get_data(Caller::new(s, &[]), "/a").unwrap().0, b"2");
    }

    #[test]
    fn a_retried_write_returns_the_first_result_and_changes_nothing() {
        let mut state = ZnodeState::new(TreeConfig::default());
        let s = open_session(&mut state, 1);
        let create =
            write(s, 1, WriteOp::Create(CreateRequest::new("/seq-", vec![]).mode(CreateMode::PersistentSequential)));
        let (first, events) = state.apply(2, &create);
        assert_eq!(events.len(), 2);
        let before = state.snapshot();
        let (again, events) = state.apply(3, &create);
        assert_eq!(first, again);
        assert!(events.is_empty());
        assert_eq!(state.snapshot(), before, "the duplicate must not create a second sequential node");
        let (next, _) = state.apply(
            4,
            &write(s, 2, WriteOp::Create(CreateRequest::new("/seq-", vec![]).mode(CreateMode::PersistentSequential))),
        );
        assert_ne!(next, first);
    }

    /// A session's pipelined writes retried together after a leader change reach the log again
    /// after later writes of the session: each copy still returns its own first result.
    #[test]
    fn retries_of_a_sessions_earlier_writes_are_recognized_behind_later_ones() {
        let mut state = ZnodeState::new(TreeConfig::default());
        let s = open_session(&mut state, 1);
        let sequential = || WriteOp::Create(CreateRequest::new("/seq-", vec![]).mode(CreateMode::PersistentSequential));
        let writes: Vec<Command> = (0..DEDUP_WINDOW as u64).map(|i| write(s, 100 + i, sequential())).collect();
        let firsts: Vec<CommandResult> = writes.iter().zip(2..).map(|(w, zxid)| state.apply(zxid, w).0).collect();
        let before = state.snapshot();
        let mut zxid = 1000;
        for (w, first) in writes.iter().zip(&firsts) {
            zxid += 1;
            let (again, events) = state.apply(zxid, w);
            assert_eq!(&again, first);
            assert!(events.is_empty());
        }
        assert_eq!(state.snapshot(), before, "a duplicate was applied again");
        // One more write: the oldest drops out of the window and would apply again.
        state.apply(zxid + 1, &write(s, 99_999, sequential()));
        let (still, _) = state.apply(zxid + 2, &writes[1]);
        assert_eq!(still, firsts[1]);
        let (again, _) = state.apply(zxid + 3, &writes[0]);
        assert_ne!(again, firsts[0]);
    }

    #[test]
    fn closing_a_session_deletes_its_ephemerals_and_refuses_its_later_writes() {
        let mut state = ZnodeState::new(TreeConfig::default());
        let s = open_session(&mut state, 1);
        let eph = WriteOp::Create(CreateRequest::new("/e", vec![]).mode(CreateMode::Ephemeral));
        assert!(matches!(state.apply(2, &write(s, 1, eph)).0, CommandResult::Write(Ok(_))));
        let (_, events) = state.apply(3, &cmd(5, CommandKind::CloseSession { session: s }));
        assert_eq!(events.len(), 2, "NodeDeleted and NodeChildrenChanged");
        assert!(state.tree().stat("/e").is_none());
        assert!(state.session(s).is_none());
        let late = write(s, 2, WriteOp::SetData { path: "/".into(), data: vec![], version: -1 });
        assert_eq!(state.apply(4, &late).0, CommandResult::Write(Err(WriteError::Keeper(KeeperError::SessionExpired))));
    }

    #[test]
    fn session_ids_are_distinct_positive_and_the_same_on_every_replica() {
        let mut a = ZnodeState::new(TreeConfig::default());
        let mut b = ZnodeState::new(TreeConfig::default());
        let ids: Vec<_> = (1..5).map(|z| open_session(&mut a, z)).collect();
        let ids_b: Vec<_> = (1..5).map(|z| open_session(&mut b, z)).collect();
        assert_eq!(ids, ids_b);
        assert!(ids.iter().all(|&id| id > 0));
        assert_eq!(ids.iter().collect::<std::collections::BTreeSet<_>>().len(), 4);
    }

    #[test]
    fn snapshot_round_trip_keeps_sessions_and_dedup() {
        let mut state = ZnodeState::new(TreeConfig::default());
        let s = open_session(&mut state, 1);
        let create = write(s, 1, WriteOp::Create(CreateRequest::new("/a", b"x".to_vec())));
        let (first, _) = state.apply(2, &create);
        let mut restored = ZnodeState::restore(&state.snapshot(), TreeConfig::default()).unwrap();
        assert_eq!(restored.snapshot(), state.snapshot());
        assert_eq!(restored.apply(3, &create).0, first);
        assert!(ZnodeState::restore(b"garbage", TreeConfig::default()).is_err());
    }

    /// Snapshots written before the ids were kept apart from the results still load.
    #[test]
    fn last_writes_are_serialized_as_id_and_result_pairs() {
        let pairs: VecDeque<(u64, CommandResult)> =
            VecDeque::from([(7, CommandResult::SessionClosed), (9, CommandResult::Expired(2))]);
        let mut writes = LastWrites::default();
        for (id, result) in pairs.clone() {
            writes.remember(id, result);
        }
        let bytes = postcard::to_allocvec(&writes).unwrap();
        assert_eq!(bytes, postcard::to_allocvec(&pairs).unwrap());
        let back: LastWrites = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, writes);
        assert_eq!(back.find(9), Some(&CommandResult::Expired(2)));
        assert_eq!(back.find(8), None);
    }

    #[test]
    fn a_failed_multi_reports_per_op_results() {
        let mut state = ZnodeState::new(TreeConfig::default());
        let s = open_session(&mut state, 1);
        let ops =
            vec![Op::Create(CreateRequest::new("/m", vec![])), Op::Delete { path: "/missing".into(), version: -1 }];
        let (result, events) = state.apply(2, &write(s, 1, WriteOp::Multi(ops)));
        assert!(events.is_empty());
        match result {
            CommandResult::Write(Err(WriteError::Multi(results))) => {
                assert_eq!(results, vec![OpResult::RolledBack, OpResult::Error(KeeperError::NoNode)]);
            }
            other => panic!("{other:?}"),
        }
        assert!(state.tree().stat("/m").is_none());
    }
}
