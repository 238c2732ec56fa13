//! A coordinator replica: the Raft log and state machine, the peers' RPC server, the clients'
//! ZooKeeper port, and the leader's session expiry — everything `squall node` runs.
//!
//! Writes go through Raft ([`Replica::propose`]); the leader stamps its clock into each command.
//! Reads are served from this replica's state. Session liveness stays in the leader's memory
//! ([`SessionTracker`]); only an expiry reaches the log.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use openraft::BasicNode;
use openraft::async_runtime::WatchReceiver;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::peer::{PeerHandler, PeerRequest, PeerResponse};
use crate::proposer::{Proposed, Proposer};
use crate::proto::{self, WatcherEvent};
use crate::raft::{LogStore, NetworkConfig, RaftRpcServer, StoreOpenError, TcpNetwork};
use crate::session::SessionTracker;
use crate::stat::{SessionId, Zxid};
use crate::state::{Command, CommandKind, CommandResult};
use crate::store::{ApplyListener, Raft, SharedState, SnapshotLoadError, TypeConfig, ZnodeStateMachine};
use crate::tree::TreeConfig;
use crate::watch::{WatchEvent, WatchRegistry};

/// How to run a replica.
#[derive(Clone, Debug)]
pub struct ReplicaConfig {
    /// This replica's id in the ensemble.
    pub id: u64,
    /// Where its log, vote and snapshots live.
    pub data_dir: PathBuf,
    /// The clients' ZooKeeper port.
    pub client_addr: SocketAddr,
    /// The peers' Raft port; `None` for a one-replica store with no peers.
    pub raft_addr: Option<SocketAddr>,
    /// Every replica of the ensemble, this one included: id → Raft address. Empty for a
    /// one-replica store.
    pub peers: BTreeMap<u64, String>,
    /// ZooKeeper's tick: session timeouts are clamped to [2, 20] ticks.
    pub tick: Duration,
    /// `user:password` of the super user, if any.
    pub super_user: Option<String>,
    /// Log entries applied between two snapshots (ZooKeeper's `snapCount`), or half as many as
    /// the tree has znodes if that is more: a snapshot costs time in proportion to the tree, so
    /// its cost per write stays bounded however large the tree grows.
    pub snapshot_every: u64,
}

/// The default of [`ReplicaConfig::snapshot_every`]: ZooKeeper's default `snapCount`. Writing a
/// snapshot serializes the whole state and fsyncs a file; every 5,000 writes it took 5–12% of
/// each replica's CPU under a steady write load, for a log replay at restart that is still well
/// under a second at this length.
pub const DEFAULT_SNAPSHOT_EVERY: u64 = 100_000;

impl ReplicaConfig {
    /// A one-replica store in `data_dir`, serving clients on `client_addr`.
    pub fn standalone(data_dir: impl Into<PathBuf>, client_addr: SocketAddr) -> Self {
        ReplicaConfig {
            id: 1,
            data_dir: data_dir.into(),
            client_addr,
            raft_addr: None,
            peers: BTreeMap::new(),
            tick: Duration::from_millis(100),
            super_user: None,
            snapshot_every: DEFAULT_SNAPSHOT_EVERY,
        }
    }
}

/// Why a replica could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory was refused.
    #[error(transparent)]
    Store(#[from] StoreOpenError),
    /// The last snapshot could not be read.
    #[error(transparent)]
    Snapshot(#[from] SnapshotLoadError),
    /// A port could not be bound, or another I/O failure.
    #[error("{what}: {error}")]
    Io {
        /// What was being done.
        what: String,
        /// The failure (part of the message, not a separate cause, so it is printed once).
        error: std::io::Error,
    },
    /// Raft refused to start.
    #[error("raft: {0}")]
    Raft(String),
    /// The configuration is inconsistent.
    #[error("{0}")]
    Config(String),
}

/// Why a write could not be made.
#[derive(Debug, Clone, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum ProposeError {
    /// This replica is not the leader (the client should retry on another replica).
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        /// The leader, if known.
        leader: Option<u64>,
    },
    /// Raft failed or is shutting down.
    #[error("raft: {0}")]
    Raft(String),
    /// The leader could not be reached in time.
    #[error("the leader is unreachable: {0}")]
    Unreachable(String),
}

/// A frame on its way to a client connection, or the order to close it.
#[derive(Debug)]
pub(crate) enum Outgoing {
    Frame(Vec<u8>),
    Close,
}

/// A client connection registered for a session.
struct Connection {
    id: u64,
    tx: mpsc::UnboundedSender<Outgoing>,
    /// Ends the connection's request loop (its session moved elsewhere, closed or expired).
    ended: CancellationToken,
}

impl Connection {
    fn end(&self) {
        self.ended.cancel();
        let _ = self.tx.send(Outgoing::Close);
    }
}

/// What the replica's connections share: watches, connections by session, and (on the
/// leader) session deadlines. It hears every applied command and turns its events into
/// notifications.
pub(crate) struct Hub {
    watches: Mutex<WatchRegistry>,
    connections: Mutex<HashMap<SessionId, Connection>>,
    tracker: Mutex<SessionTracker>,
    /// Sessions active here since they were last reported to the leader.
    active: Mutex<HashSet<SessionId>>,
    next_connection: AtomicU64,
    pub(crate) tick: Duration,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Hub {
    fn new(tick: Duration) -> Self {
        Hub {
            watches: Mutex::new(WatchRegistry::default()),
            connections: Mutex::new(HashMap::new()),
            tracker: Mutex::new(SessionTracker::default()),
            active: Mutex::new(HashSet::new()),
            next_connection: AtomicU64::new(1),
            tick,
        }
    }

    pub(crate) fn watches(&self) -> MutexGuard<'_, WatchRegistry> {
        lock(&self.watches)
    }

    /// Makes `tx` the connection of `session`, ending the one it had (as ZooKeeper closes a
    /// connection whose session moved); returns its id and the token that says when this one
    /// must end in turn.
    pub(crate) fn register(&self, session: SessionId, tx: mpsc::UnboundedSender<Outgoing>) -> (u64, CancellationToken) {
        let id = self.next_connection.fetch_add(1, Ordering::Relaxed);
        let ended = CancellationToken::new();
        if let Some(old) = lock(&self.connections).insert(session, Connection { id, tx, ended: ended.clone() }) {
            old.end();
        }
        (id, ended)
    }

    /// Forgets connection `id` of `session` if it is still the registered one.
    pub(crate) fn unregister(&self, session: SessionId, id: u64) {
        let mut connections = lock(&self.connections);
        if connections.get(&session).is_some_and(|c| c.id == id) {
            connections.remove(&session);
        }
    }

    /// Forgets the connection of `session` without closing it: the connection that asked to
    /// close its session answers that request before it closes.
    pub(crate) fn detach(&self, session: SessionId) {
        lock(&self.connections).remove(&session);
    }

    /// Closes every client connection (their sessions stay; clients reconnect elsewhere).
    fn end_all(&self) {
        for (_, connection) in lock(&self.connections).drain() {
            connection.end();
        }
    }

    /// How many client connections are open.
    pub(crate) fn connection_count(&self) -> usize {
        lock(&self.connections).len()
    }

    /// Sessions with a connection here.
    pub(crate) fn connected_sessions(&self) -> Vec<SessionId> {
        lock(&self.connections).keys().copied().collect()
    }

    /// Records activity of `session` (any request, ping included): on the leader it moves the
    /// deadline; a follower reports it to the leader at the next tick.
    pub(crate) fn touch(&self, session: SessionId) {
        lock(&self.tracker).touch(session, Instant::now());
        lock(&self.active).insert(session);
    }

    /// Moves the deadlines of sessions active on another replica.
    pub(crate) fn touch_tracked(&self, sessions: &[SessionId]) {
        let now = Instant::now();
        let mut tracker = lock(&self.tracker);
        for session in sessions {
            tracker.touch(*session, now);
        }
    }

    /// The sessions active here since the last call.
    fn take_active(&self) -> Vec<SessionId> {
        lock(&self.active).drain().collect()
    }

    /// Sends `events` to the sessions watching them.
    pub(crate) fn notify(&self, events: &[WatchEvent]) {
        if events.is_empty() {
            return;
        }
        let fired = self.watches().trigger_all(events);
        if fired.is_empty() {
            return;
        }
        let connections = lock(&self.connections);
        for (session, event) in fired {
            if let Some(conn) = connections.get(&session) {
                let mut frame = Vec::new();
                proto::encode_notification(&mut frame, event.zxid, &WatcherEvent::from(event));
                let _ = conn.tx.send(Outgoing::Frame(frame));
            }
        }
    }
}

impl ApplyListener for Hub {
    fn wants_events(&self) -> bool {
        !self.watches().is_empty()
    }

    fn applied(&self, _zxid: Zxid, command: &Command, result: &CommandResult, events: Vec<WatchEvent>) {
        match (command.kind.as_ref(), result) {
            (CommandKind::CreateSession { timeout_ms, .. }, CommandResult::SessionCreated { session, .. }) => {
                lock(&self.tracker).add(*session, Duration::from_millis(u64::from(*timeout_ms)), Instant::now());
            }
            (CommandKind::CloseSession { session }, _) => {
                lock(&self.tracker).remove(*session);
                self.watches().remove_session(*session);
                if let Some(conn) = lock(&self.connections).remove(session) {
                    conn.end();
                }
            }
            _ => {}
        }
        self.notify(&events);
    }
}

/// The parts of a replica its tasks share.
pub(crate) struct ReplicaInner {
    pub(crate) config: ReplicaConfig,
    pub(crate) raft: Raft,
    network: TcpNetwork<TypeConfig>,
    pub(crate) state: Arc<SharedState>,
    pub(crate) hub: Arc<Hub>,
    pub(crate) started: Instant,
    pub(crate) counters: Counters,
    quorum: Quorum,
    pub(crate) proposer: Proposer,
}

/// Whether a replica of an ensemble is in touch with a quorum, and so may serve clients.
///
/// ZooKeeper's servers stop serving when they lose their quorum (a follower that loses its
/// leader, a leader that loses its followers) and close their clients' connections, so that a
/// client on the minority side of a partition reconnects to the majority instead of reading an
/// ever older state there while its session expires on the other side. Squall does the same:
/// the leader counts as in touch while a quorum acknowledged its heartbeats within
/// [`QUORUM_LEASE`]; a follower while the leader, itself in touch, answered its session-activity
/// report within that time.
struct Quorum {
    /// On a follower: when the leader last said, in touch, that it heard this replica.
    last_contact: Mutex<Option<Instant>>,
    serving: tokio::sync::watch::Sender<bool>,
}

/// Request counters for the four-letter words.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) received: AtomicU64,
    pub(crate) sent: AtomicU64,
}

/// How long a write keeps trying to reach a leader (elections included).
const FORWARD_DEADLINE: Duration = Duration::from_secs(10);
/// How long one forwarded request may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);
/// How long to wait for a leader to be known.
const LEADER_WAIT: Duration = Duration::from_secs(3);
/// Raft's election timeout is drawn from [MIN, MAX] ms.
const ELECTION_TIMEOUT_MIN_MS: u64 = 300;
const ELECTION_TIMEOUT_MAX_MS: u64 = 600;
/// Entries kept in the log behind a snapshot, for followers a little behind.
const SNAPSHOT_KEEP_ENTRIES: u64 = 1000;
/// How long a replica of an ensemble serves clients without hearing from a quorum: two
/// election timeouts, so a leader's loss (an election, then the new leader's first answers)
/// does not close every follower's connections, while a replica cut off from the majority
/// stops serving about a second after it was.
const QUORUM_LEASE: Duration = Duration::from_millis(2 * ELECTION_TIMEOUT_MAX_MS);

/// The wall clock in ms since the epoch, as ZooKeeper stamps ctime and mtime.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

impl ReplicaInner {
    /// Makes a change, behind every write submitted here before it (see [`crate::proposer`]),
    /// and waits until this replica has applied it too; `size` is the request's size, which
    /// bounds batches. Returns once queued; the future is the result.
    pub(crate) fn submit(&self, kind: CommandKind, size: usize) -> impl Future<Output = Proposed> + Send + 'static {
        let result = self.proposer.submit(Arc::new(kind), size);
        let state = self.state.clone();
        async move {
            let (zxid, result) = result.await?;
            if tokio::time::timeout(FORWARD_DEADLINE, state.wait_applied(zxid)).await.is_err() {
                return Err(ProposeError::Unreachable(format!("zxid {zxid:#x} not applied here in time")));
            }
            Ok((zxid, result))
        }
    }

    /// [`ReplicaInner::submit`] and wait.
    pub(crate) async fn propose(&self, kind: CommandKind) -> Proposed {
        self.submit(kind, 0).await
    }

    /// Sends batch `seq` of the forwarding stream `stream` to `leader` (see
    /// [`PeerRequest::ProposeBatch`]); returns once it is queued on the connection, so batches
    /// sent one after the other leave in that order. The future yields the leader's results.
    pub(crate) async fn forward_batch(
        &self,
        leader: u64,
        stream: u64,
        seq: u64,
        kinds: Vec<Arc<CommandKind>>,
    ) -> Result<impl Future<Output = Result<Vec<Proposed>, ProposeError>> + Send + use<>, ProposeError> {
        let answer = self.send_to(leader, &PeerRequest::ProposeBatch { stream, seq, kinds }).await?;
        Ok(async move {
            match answer.await? {
                PeerResponse::ProposedBatch(results) => Ok(results),
                other => Err(ProposeError::Unreachable(format!("unexpected answer {other:?}"))),
            }
        })
    }

    /// The zxid this replica must reach to reflect every write acknowledged before now:
    /// ZooKeeper's `sync`.
    pub(crate) async fn sync_point(&self) -> Result<Zxid, ProposeError> {
        match self.leader().await {
            Some(leader) if leader == self.config.id => self.read_index_here().await,
            Some(leader) => match self.ask(leader, &PeerRequest::ReadIndex).await? {
                PeerResponse::ReadIndex(result) => result,
                other => Err(ProposeError::Unreachable(format!("unexpected answer {other:?}"))),
            },
            None => Err(ProposeError::NotLeader { leader: None }),
        }
    }

    /// The leader's read index, confirmed by a quorum, when this replica leads.
    pub(crate) async fn read_index_here(&self) -> Result<Zxid, ProposeError> {
        match self.raft.ensure_linearizable(openraft::raft::ReadPolicy::ReadIndex).await {
            Ok(read) => Ok(read.index() as Zxid),
            Err(e) => match e.forward_to_leader() {
                Some(forward) => Err(ProposeError::NotLeader { leader: forward.leader_id }),
                None => Err(ProposeError::Raft(e.to_string())),
            },
        }
    }

    /// Sends `request` to replica `peer` and decodes its answer.
    async fn ask(&self, peer: u64, request: &PeerRequest) -> Result<PeerResponse, ProposeError> {
        self.send_to(peer, request).await?.await
    }

    /// Queues `request` on the connection to replica `peer`; the future decodes its answer.
    async fn send_to(
        &self,
        peer: u64,
        request: &PeerRequest,
    ) -> Result<impl Future<Output = Result<PeerResponse, ProposeError>> + Send + use<>, ProposeError> {
        let addr = self.peer_addr(peer).ok_or(ProposeError::NotLeader { leader: Some(peer) })?;
        let bytes = postcard::to_stdvec(request).map_err(|e| ProposeError::Unreachable(e.to_string()))?;
        let answer =
            self.network.app_send(peer, &addr, bytes, FORWARD_TIMEOUT).await.map_err(ProposeError::Unreachable)?;
        Ok(async move {
            let answer = answer.await.map_err(ProposeError::Unreachable)?;
            postcard::from_bytes(&answer).map_err(|e| ProposeError::Unreachable(format!("bad answer: {e}")))
        })
    }

    /// The Raft address of replica `id`, from the membership.
    fn peer_addr(&self, id: u64) -> Option<String> {
        let metrics = self.raft.metrics().borrow_watched().clone();
        metrics.membership_config.membership().get_node(&id).map(|n| n.addr.clone())
    }

    /// The current leader, waiting up to an election's length for one.
    pub(crate) async fn leader(&self) -> Option<u64> {
        let mut metrics = self.raft.metrics();
        let wait = async {
            loop {
                if let Some(leader) = metrics.borrow_watched().current_leader {
                    return Some(leader);
                }
                if metrics.changed().await.is_err() {
                    return None;
                }
            }
        };
        tokio::time::timeout(LEADER_WAIT, wait).await.ok().flatten()
    }

    /// Whether this replica leads the ensemble.
    pub(crate) fn is_leader(&self) -> bool {
        self.raft.metrics().borrow_watched().current_leader == Some(self.config.id)
    }

    /// Whether this replica serves clients: a one-replica store always; a replica of an
    /// ensemble while it is in touch with a quorum (see [`Quorum`]).
    pub(crate) fn serving(&self) -> bool {
        *self.quorum.serving.borrow()
    }

    /// Whether this replica has heard from a quorum within [`QUORUM_LEASE`].
    pub(crate) fn in_touch(&self) -> bool {
        if self.config.peers.len() <= 1 {
            return true;
        }
        if self.is_leader() {
            use openraft::Instant as _;
            let acked = self.raft.metrics().borrow_watched().last_quorum_acked;
            acked.is_some_and(|at| at.elapsed() < QUORUM_LEASE)
        } else {
            lock(&self.quorum.last_contact).is_some_and(|at| at.elapsed() < QUORUM_LEASE)
        }
    }

    /// Whether this replica knows a leader.
    pub(crate) fn leader_known(&self) -> bool {
        self.raft.metrics().borrow_watched().current_leader.is_some()
    }

    /// `standalone`, `leader` or `follower`, as `srvr` reports it.
    pub(crate) fn mode(&self) -> &'static str {
        if self.config.peers.len() <= 1 {
            "standalone"
        } else if self.is_leader() {
            "leader"
        } else {
            "follower"
        }
    }
}

/// A running replica.
pub struct Replica {
    inner: Arc<ReplicaInner>,
    client_addr: SocketAddr,
    raft_server: Option<RaftRpcServer>,
    tasks: TaskTracker,
    stop: CancellationToken,
    log_handle: LogStore<crate::store::TypeConfig>,
}

impl Replica {
    /// Opens the data directory, starts Raft, binds the ports and serves. On a first start
    /// the ensemble is formed from `config.peers` (or as a one-replica store).
    pub async fn start(mut config: ReplicaConfig) -> Result<Replica, StartError> {
        if !config.peers.is_empty() && !config.peers.contains_key(&config.id) {
            return Err(StartError::Config(format!(
                "--peer must list every replica, this one (id {}) included",
                config.id
            )));
        }
        if config.peers.len() > 1 && config.raft_addr.is_none() {
            return Err(StartError::Config("a replica with peers needs --raft, the address peers reach it at".into()));
        }
        // Ports first: a node that cannot serve leaves its data directory as it was.
        let raft_listener = match config.raft_addr {
            Some(addr) => Some(TcpListener::bind(addr).await.map_err(|source| StartError::Io {
                what: format!("cannot listen for peers on {addr}"),
                error: source,
            })?),
            None => None,
        };
        let client_listener = TcpListener::bind(config.client_addr).await.map_err(|source| StartError::Io {
            what: format!("cannot listen for clients on {}", config.client_addr),
            error: source,
        })?;
        let client_addr = client_listener
            .local_addr()
            .map_err(|source| StartError::Io { what: "local address".into(), error: source })?;
        config.client_addr = client_addr;
        std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::Io {
            what: format!("cannot create data directory {}", config.data_dir.display()),
            error: source,
        })?;
        let log_store = LogStore::open(&config.data_dir, &config.id)?;
        let log_handle = log_store.clone();
        let tree_config = TreeConfig { super_digest: config.super_user.as_deref().map(crate::acl::generate_digest) };
        let hub = Arc::new(Hub::new(config.tick));
        let (machine, state) = ZnodeStateMachine::open(&config.data_dir, tree_config.clone(), hub.clone())?;
        let raft_config = openraft::Config {
            cluster_name: "squall".into(),
            heartbeat_interval: 50,
            election_timeout_min: ELECTION_TIMEOUT_MIN_MS,
            election_timeout_max: ELECTION_TIMEOUT_MAX_MS,
            // `snapshot_when_due` decides, by the size of the tree.
            snapshot_policy: openraft::SnapshotPolicy::Never,
            max_in_snapshot_log_to_keep: SNAPSHOT_KEEP_ENTRIES,
            ..Default::default()
        };
        let raft_config = Arc::new(raft_config.validate().map_err(|e| StartError::Raft(e.to_string()))?);
        let network = TcpNetwork::new(config.id, NetworkConfig::default());
        let raft = Raft::new(config.id, raft_config, network.clone(), log_store, machine)
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;

        let config_standalone = config.peers.len() <= 1;
        let (proposer, proposer_queue) = Proposer::new();
        let inner = Arc::new(ReplicaInner {
            config,
            raft,
            network,
            state,
            hub,
            started: Instant::now(),
            counters: Counters::default(),
            proposer,
            quorum: Quorum {
                last_contact: Mutex::new(None),
                serving: tokio::sync::watch::Sender::new(config_standalone),
            },
        });
        let raft_server = match raft_listener {
            Some(listener) => {
                let handler: Arc<dyn crate::raft::AppHandler> = Arc::new(PeerHandler::new(inner.clone()));
                let server = RaftRpcServer::start_with_app(
                    listener,
                    inner.raft.clone(),
                    NetworkConfig::default(),
                    Some(handler),
                )
                .map_err(|source| StartError::Io { what: "cannot serve peers".into(), error: source })?;
                Some(server)
            }
            None => None,
        };
        initialize(&inner.raft, &inner.config, raft_server.as_ref().map(|s| s.local_addr())).await?;

        let tasks = TaskTracker::new();
        let stop = CancellationToken::new();
        let until_stopped = |task: BoxFuture<'static, ()>| {
            let stop = stop.clone();
            tasks.spawn(async move {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = task => {}
                }
            });
        };
        until_stopped(Box::pin(crate::proposer::run(inner.clone(), proposer_queue)));
        tasks.spawn(crate::server::serve(client_listener, inner.clone(), tasks.clone(), stop.clone()));
        until_stopped(Box::pin(expire_sessions(inner.clone())));
        until_stopped(Box::pin(report_activity(inner.clone())));
        until_stopped(Box::pin(snapshot_when_due(inner.clone())));
        if !inner.serving() {
            until_stopped(Box::pin(guard_quorum(inner.clone())));
        }
        Ok(Replica { inner, client_addr, raft_server, tasks, stop, log_handle })
    }

    /// The address clients connect to.
    pub fn client_addr(&self) -> SocketAddr {
        self.client_addr
    }

    /// The address peers reach this replica's Raft at, if it has peers.
    pub fn raft_addr(&self) -> Option<SocketAddr> {
        self.raft_server.as_ref().map(|s| s.local_addr())
    }

    /// Whether this replica currently leads the ensemble.
    pub fn is_leader(&self) -> bool {
        self.inner.is_leader()
    }

    /// A probe of [`is_leader`](Self::is_leader) that outlives borrows of the replica (for a
    /// role of the same process that wants to know, such as a master that steps aside).
    pub fn leader_probe(&self) -> impl Fn() -> bool + Send + Sync + 'static {
        let inner = Arc::downgrade(&self.inner);
        move || inner.upgrade().is_some_and(|inner| inner.is_leader())
    }

    /// The zxid of the last command applied here.
    pub fn last_zxid(&self) -> Zxid {
        self.inner.state.last_zxid()
    }

    /// Waits until this replica leads or follows a leader, up to `timeout`.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let mut metrics = self.inner.raft.metrics();
        tokio::time::timeout(timeout, async {
            loop {
                if metrics.borrow_watched().current_leader.is_some() {
                    return;
                }
                if metrics.changed().await.is_err() {
                    return;
                }
            }
        })
        .await
        .is_ok()
            && tokio::time::timeout(timeout, self.inner.quorum.serving.subscribe().wait_for(|serving| *serving))
                .await
                .is_ok_and(|r| r.is_ok())
    }

    /// Stops serving clients (closing their connections) and peers, then stops Raft; returns
    /// once the data directory is released.
    pub async fn shutdown(self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        if let Some(server) = self.raft_server {
            server.shutdown().await;
        }
        let _ = self.inner.raft.shutdown().await;
        drop(self.inner);
        // openraft's tasks drop their log handles soon after shutdown; the directory is free
        // for a restart once every handle is gone.
        self.log_handle.close().await;
    }
}

/// Forms the ensemble on its first start: the replica with the lowest id initializes it with
/// every peer (or itself alone); later starts find the membership in the log.
async fn initialize(raft: &Raft, config: &ReplicaConfig, raft_addr: Option<SocketAddr>) -> Result<(), StartError> {
    if raft.is_initialized().await.map_err(|e| StartError::Raft(e.to_string()))? {
        return Ok(());
    }
    let members: BTreeMap<u64, BasicNode> = if config.peers.is_empty() {
        let addr = raft_addr.map(|a| a.to_string()).unwrap_or_default();
        BTreeMap::from([(config.id, BasicNode::new(addr))])
    } else {
        config.peers.iter().map(|(id, addr)| (*id, BasicNode::new(addr))).collect()
    };
    if members.keys().next() != Some(&config.id) {
        return Ok(());
    }
    match raft.initialize(members).await {
        Ok(()) => Ok(()),
        // Another start already initialized it.
        Err(e) if e.to_string().contains("NotAllowed") || e.to_string().contains("not allowed") => Ok(()),
        Err(e) => Err(StartError::Raft(e.to_string())),
    }
}

/// On a follower: every third of a tick, reports the sessions active here to the leader, so
/// that a session connected to a follower does not expire; the leader's answer says whether it
/// is in touch with a quorum, which keeps this replica serving (see [`Quorum`]).
async fn report_activity(inner: Arc<ReplicaInner>) {
    let mut ticker = tokio::time::interval(inner.hub.tick / 3);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if inner.config.peers.len() <= 1 || inner.is_leader() {
            inner.hub.take_active();
            continue;
        }
        let Some(leader) = inner.raft.metrics().borrow_watched().current_leader else {
            continue;
        };
        let asked = Instant::now();
        let active = inner.hub.take_active();
        match inner.ask(leader, &PeerRequest::Touch(active)).await {
            Ok(PeerResponse::Touched { in_touch: true }) => *lock(&inner.quorum.last_contact) = Some(asked),
            Ok(_) => {}
            Err(e) => tracing::debug!("cannot report session activity to the leader: {e}"),
        }
    }
}

/// Asks Raft for a snapshot when one is due (see [`ReplicaConfig::snapshot_every`]).
async fn snapshot_when_due(inner: Arc<ReplicaInner>) {
    let mut ticker = tokio::time::interval(Duration::from_millis(200));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut asked_at = 0;
    loop {
        ticker.tick().await;
        let (applied, snapshot) = {
            let metrics = inner.raft.metrics();
            let metrics = metrics.borrow_watched();
            (metrics.last_applied.map_or(0, |l| l.index), metrics.snapshot.map_or(0, |l| l.index))
        };
        let znodes = inner.state.read(|s| s.tree().node_count()) as u64;
        let due = inner.config.snapshot_every.max(1).max(znodes / 2);
        if applied.saturating_sub(snapshot.max(asked_at)) >= due {
            asked_at = applied;
            if let Err(e) = inner.raft.trigger().snapshot().await {
                tracing::warn!("cannot start a snapshot: {e}");
            }
        }
    }
}

/// On a replica of an ensemble: every third of a tick, starts or stops serving clients as it
/// gains or loses touch with a quorum; on losing it, closes every client connection.
async fn guard_quorum(inner: Arc<ReplicaInner>) {
    let mut ticker = tokio::time::interval(inner.hub.tick / 3);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let in_touch = inner.in_touch();
        if in_touch == inner.serving() {
            continue;
        }
        inner.quorum.serving.send_replace(in_touch);
        if in_touch {
            tracing::info!("replica {} is in touch with a quorum: serving clients", inner.config.id);
        } else {
            tracing::warn!(
                "replica {} has not heard from a quorum for {QUORUM_LEASE:?}: closing its {} client connections \
                 and refusing new ones until it does",
                inner.config.id,
                inner.hub.connection_count()
            );
            inner.hub.end_all();
        }
    }
}

/// On the leader: every tick, expires the sessions whose deadline passed (one `CloseSession`
/// each), and deletes due containers and TTL nodes. A replica that becomes leader first gives
/// every session a fresh timeout.
async fn expire_sessions(inner: Arc<ReplicaInner>) {
    let mut was_leader = false;
    let mut ticker = tokio::time::interval(inner.hub.tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let leader = inner.is_leader();
        if leader && !was_leader {
            let sessions: Vec<(SessionId, Duration)> = inner.state.read(|s| {
                s.sessions().map(|(id, info)| (id, Duration::from_millis(u64::from(info.timeout_ms)))).collect()
            });
            lock(&inner.hub.tracker).reset(sessions, Instant::now());
        }
        was_leader = leader;
        if !leader {
            continue;
        }
        let expired = lock(&inner.hub.tracker).expired(Instant::now());
        for session in expired {
            // Removed first so the next tick does not propose it again while this one commits.
            lock(&inner.hub.tracker).remove(session);
            if let Err(e) = inner.propose(CommandKind::CloseSession { session }).await {
                tracing::warn!("cannot expire session {session:#x}: {e}");
            }
        }
        let due = inner.state.read(|s| s.tree().expired_nodes(now_ms()));
        if !due.is_empty() {
            if let Err(e) = inner.propose(CommandKind::DeleteExpired { paths: due }).await {
                tracing::warn!("cannot delete expired nodes: {e}");
            }
        }
    }
}
