//! The sending side: [`TcpNetwork`], openraft's network factory, and [`PeerClient`], its
//! per-target client, over one persistent, multiplexed TCP connection per peer.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::MutexGuard;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::Stream;
use futures::StreamExt;
use openraft::OptionalSend;
use openraft::RaftNetworkFactory;
use openraft::RaftNetworkV2;
use openraft::RaftTypeConfig;
use openraft::alias::SnapshotOf;
use openraft::alias::VoteOf;
use openraft::base::BoxFuture;
use openraft::base::BoxStream;
use openraft::errors::NetworkError;
use openraft::errors::RPCError;
use openraft::errors::ReplicationClosed;
use openraft::errors::StreamingError;
use openraft::errors::Timeout;
use openraft::errors::Unreachable;
use openraft::network::Backoff;
use openraft::network::RPCOption;
use openraft::network::RPCTypes;
use openraft::raft::AppendEntriesRequest;
use openraft::raft::AppendEntriesResponse;
use openraft::raft::SnapshotResponse;
use openraft::raft::StreamAppendResult;
use openraft::raft::TransferLeaderRequest;
use openraft::raft::TransferLeaderResponse;
use openraft::raft::VoteRequest;
use openraft::raft::VoteResponse;
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::Notify;
use tokio::sync::mpsc;
use tokio::sync::oneshot;
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tokio_util::bytes::Bytes;
use tokio_util::codec::FramedRead;
use tokio_util::codec::FramedWrite;
use tokio_util::codec::LengthDelimitedCodec;

use super::NetworkConfig;
use super::PeerAddress;
use super::wire;
use super::wire::ClientFrame;
use super::wire::Reply;
use super::wire::Request;
use super::wire::ServerFrame;
use super::wire::SnapshotChunk;
use super::wire::SnapshotDone;

/// Frames queued for one connection's writer before senders wait.
const OUTBOX_FRAMES: usize = 1024;

/// openraft's network factory for Squall: hands out [`PeerClient`]s that share one persistent TCP
/// connection per peer for replication, votes and heartbeats, and one more per peer for
/// snapshots, so that a large snapshot never delays a heartbeat.
///
/// ```no_run
/// # use std::sync::Arc;
/// # use squall_coordinator::raft::{LogStore, NetworkConfig, TcpNetwork};
/// # openraft::declare_raft_types!(pub Tc);
/// # async fn start(sm: impl openraft::storage::RaftStateMachine<Tc, SnapshotData = Vec<u8>>) -> Result<(), Box<dyn std::error::Error>> {
/// let config = Arc::new(openraft::Config::default().validate()?);
/// let network = TcpNetwork::<Tc>::new(1, NetworkConfig::default());
/// let store = LogStore::<Tc>::open("/var/lib/squall/raft", &1)?;
/// let raft = openraft::Raft::new(1, config, network, store, sm).await?;
/// # Ok(()) }
/// ```
pub struct TcpNetwork<C: RaftTypeConfig> {
    local_id: C::NodeId,
    config: Arc<NetworkConfig>,
    links: Arc<Mutex<PeerLinks<C>>>,
}

/// The links of a factory, one per peer and lane, shared by all the clients it made.
type PeerLinks<C> = HashMap<(<C as RaftTypeConfig>::NodeId, Lane), Arc<PeerLink<C>>>;

impl<C: RaftTypeConfig> Clone for TcpNetwork<C> {
    fn clone(&self) -> Self {
        Self { local_id: self.local_id.clone(), config: self.config.clone(), links: self.links.clone() }
    }
}

/// Which connection to a peer a client uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Lane {
    Replication,
    Snapshot,
    /// The application's own requests, so they never queue behind replication.
    App,
}

impl<C: RaftTypeConfig> TcpNetwork<C> {
    /// A factory for the replica `local_id` (named in timeout errors).
    pub fn new(local_id: C::NodeId, config: NetworkConfig) -> Self {
        Self { local_id, config: Arc::new(config), links: Arc::default() }
    }

    /// Sends an application request to the peer `target` at `addr` (its Raft address), to be
    /// answered by the peer's [`AppHandler`](super::AppHandler): returns once the request is
    /// queued on the connection, in the order of the calls to this function (awaited one after
    /// the other), and the future it gives waits for the answer; both within `timeout`.
    /// Requests reach the peer in the order they were queued as long as they go on the same
    /// connection: a peer that relies on their order must check it (a connection may drop and
    /// be replaced between two of them).
    pub async fn app_send(
        &self,
        target: C::NodeId,
        addr: &str,
        request: Vec<u8>,
        timeout: Duration,
    ) -> Result<impl Future<Output = Result<Vec<u8>, String>> + Send + use<C>, String> {
        let client = self.client(target, addr, Lane::App);
        let conn = client.link.connection().await.map_err(|e| e.to_string())?;
        let reply =
            conn.send(Request::App(request), RPCTypes::AppendEntries, timeout).await.map_err(|e| e.to_string())?;
        Ok(async move {
            match reply.await {
                Ok(Reply::App(bytes)) => Ok(bytes),
                Ok(other) => Err(format!("peer answered an application request with {}", other.kind())),
                Err(e) => Err(e.to_string()),
            }
        })
    }

    fn client(&self, target: C::NodeId, addr: &str, lane: Lane) -> PeerClient<C> {
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        let key = (target.clone(), lane);
        let link = match links.get(&key) {
            Some(link) if link.addr == addr => link.clone(),
            _ => {
                let link =
                    Arc::new(PeerLink::new(self.local_id.clone(), target, addr.to_string(), self.config.clone()));
                links.insert(key, link.clone());
                link
            }
        };
        PeerClient { link }
    }
}

impl<C> RaftNetworkFactory<C> for TcpNetwork<C>
where
    C: RaftTypeConfig,
    C::Node: PeerAddress,
{
    type Network = PeerClient<C>;

    async fn new_client(&mut self, target: C::NodeId, node: &C::Node) -> Self::Network {
        self.client(target, node.raft_addr(), Lane::Replication)
    }

    async fn new_snapshot_client(&mut self, target: C::NodeId, node: &C::Node) -> Self::Network {
        self.client(target, node.raft_addr(), Lane::Snapshot)
    }
}

/// Sends one replica's RPCs to one peer; cheap to create, it connects when first used and
/// reconnects (with backoff) after the connection breaks.
pub struct PeerClient<C: RaftTypeConfig> {
    link: Arc<PeerLink<C>>,
}

impl<C: RaftTypeConfig> PeerClient<C> {
    async fn call(&self, request: Request<C>, action: RPCTypes, ttl: Duration) -> Result<Reply<C>, RPCError<C>> {
        let conn = self.link.connection().await?;
        conn.call(request, action, ttl).await
    }
}

fn unexpected<C: RaftTypeConfig>(reply: Reply<C>, wanted: &str) -> RPCError<C> {
    RPCError::Network(NetworkError::from_string(format!("peer answered {wanted} with {}", reply.kind())))
}

impl<C: RaftTypeConfig> RaftNetworkV2<C> for PeerClient<C> {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<C>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<C>, RPCError<C>> {
        match self.call(Request::AppendEntries(rpc), RPCTypes::AppendEntries, option.hard_ttl()).await? {
            Reply::AppendEntries(resp) => Ok(resp),
            other => Err(unexpected(other, "AppendEntries")),
        }
    }

    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<'s, Result<BoxStream<'s, Result<StreamAppendResult<C>, RPCError<C>>>, RPCError<C>>>
    where
        S: Stream<Item = AppendEntriesRequest<C>> + OptionalSend + Unpin + 'static,
    {
        Box::pin(async move {
            let conn = match self.link.connection().await {
                Ok(conn) => conn,
                Err(unreachable) => {
                    // openraft waits out its backoff when it makes a stream's next request, and
                    // opens a new stream as soon as this one fails: taking one request first
                    // makes a replication task to a dead peer wait between attempts instead of
                    // retrying in a busy loop.
                    let mut input = input;
                    let _ = tokio::time::timeout(self.link.config.reconnect_max, input.next()).await;
                    return Err(unreachable.into());
                }
            };
            let idle_timeout = option.hard_ttl().max(self.link.config.min_stream_timeout);
            let responses = AppendStream::open(conn, input, idle_timeout)?;
            let stream = futures::stream::unfold(Some(responses), |state| async move {
                let mut responses = state?;
                let item = responses.next().await?;
                let more = item.is_ok();
                Some((item, more.then_some(responses)))
            });
            Ok(Box::pin(stream) as BoxStream<'s, _>)
        })
    }

    async fn vote(&mut self, rpc: VoteRequest<C>, option: RPCOption) -> Result<VoteResponse<C>, RPCError<C>> {
        match self.call(Request::Vote(rpc), RPCTypes::Vote, option.hard_ttl()).await? {
            Reply::Vote(resp) => Ok(resp),
            other => Err(unexpected(other, "Vote")),
        }
    }

    async fn pre_vote(&mut self, rpc: VoteRequest<C>, option: RPCOption) -> Result<VoteResponse<C>, RPCError<C>> {
        match self.call(Request::PreVote(rpc), RPCTypes::Vote, option.hard_ttl()).await? {
            Reply::Vote(resp) => Ok(resp),
            other => Err(unexpected(other, "PreVote")),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<C>,
        snapshot: SnapshotOf<C, Vec<u8>>,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<C>, StreamingError<C>> {
        tokio::select! {
            res = self.send_snapshot(vote, snapshot, option) => res,
            closed = cancel => Err(StreamingError::Closed(closed)),
        }
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<C>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<C>, RPCError<C>> {
        match self.call(Request::TransferLeader(req), RPCTypes::TransferLeader, option.hard_ttl()).await? {
            Reply::TransferLeader(resp) => Ok(resp),
            other => Err(unexpected(other, "TransferLeader")),
        }
    }

    fn backoff(&self) -> Option<Backoff> {
        let config = &self.link.config;
        let (min, max) = (config.reconnect_min, config.reconnect_max);
        Some(Backoff::new(std::iter::successors(Some(min), move |d| Some((*d * 2).min(max)))))
    }
}

impl<C: RaftTypeConfig> PeerClient<C> {
    /// Sends the snapshot in chunks of openraft's `snapshot_max_chunk_size`, each acknowledged;
    /// the last one carries the vote and metadata, and its reply comes once the receiver's Raft
    /// has taken the snapshot.
    async fn send_snapshot(
        &self,
        vote: VoteOf<C>,
        snapshot: SnapshotOf<C, Vec<u8>>,
        option: RPCOption,
    ) -> Result<SnapshotResponse<C>, StreamingError<C>> {
        let conn = self.link.connection().await?;
        let config = &self.link.config;
        let transfer = conn.shared.next_id();
        let chunk_size = option.snapshot_chunk_size().unwrap_or(config.snapshot_chunk_size).max(1);
        let data = snapshot.snapshot;
        let mut done = Some(SnapshotDone { vote, meta: snapshot.meta });
        let mut offset = 0;
        loop {
            let end = data.len().min(offset + chunk_size);
            let last = end == data.len();
            let chunk = SnapshotChunk {
                transfer,
                offset: offset as u64,
                data: data[offset..end].to_vec(),
                done: if last { done.take() } else { None },
            };
            let ttl =
                if last { config.snapshot_install_timeout } else { option.hard_ttl().max(config.min_stream_timeout) };
            let reply = conn.call(Request::SnapshotChunk(chunk), RPCTypes::InstallSnapshot, ttl).await?;
            match (last, reply) {
                (true, Reply::Snapshot(resp)) => return Ok(resp),
                (false, Reply::ChunkReceived) => offset = end,
                (_, other) => return Err(unexpected(other, "a snapshot chunk").into()),
            }
        }
    }
}

/// Everything about one peer address: its live connection, if any, and when to try again after
/// a failed connect.
struct PeerLink<C: RaftTypeConfig> {
    local_id: C::NodeId,
    target: C::NodeId,
    addr: String,
    config: Arc<NetworkConfig>,
    state: tokio::sync::Mutex<LinkState<C>>,
}

struct LinkState<C: RaftTypeConfig> {
    conn: Option<Arc<Connection<C>>>,
    /// After a failed connect: no new attempt before this instant.
    retry_at: Option<Instant>,
    retry_delay: Duration,
    last_error: String,
}

impl<C: RaftTypeConfig> PeerLink<C> {
    fn new(local_id: C::NodeId, target: C::NodeId, addr: String, config: Arc<NetworkConfig>) -> Self {
        let state =
            LinkState { conn: None, retry_at: None, retry_delay: config.reconnect_min, last_error: String::new() };
        Self { local_id, target, addr, config, state: tokio::sync::Mutex::new(state) }
    }

    /// The live connection, or a new one; fails fast while a failed connect is backing off.
    async fn connection(&self) -> Result<Arc<Connection<C>>, Unreachable<C>> {
        let mut state = self.state.lock().await;
        if let Some(conn) = &state.conn {
            if conn.shared.is_open() {
                return Ok(conn.clone());
            }
            state.conn = None;
        }
        let now = Instant::now();
        if let Some(retry_at) = state.retry_at.filter(|at| *at > now) {
            return Err(Unreachable::from_string(format!(
                "node {} at {}: {}; next connection attempt in {} ms",
                self.target,
                self.addr,
                state.last_error,
                (retry_at - now).as_millis()
            )));
        }
        let attempt = tokio::time::timeout(self.config.connect_timeout, Connection::connect(self)).await;
        let error = match attempt {
            Ok(Ok(conn)) => {
                let conn = Arc::new(conn);
                state.conn = Some(conn.clone());
                state.retry_at = None;
                state.retry_delay = self.config.reconnect_min;
                return Ok(conn);
            }
            Ok(Err(e)) => format!("cannot connect: {e}"),
            Err(_) => format!("cannot connect within {:?}", self.config.connect_timeout),
        };
        state.retry_at = Some(now + state.retry_delay);
        state.retry_delay = (state.retry_delay * 2).min(self.config.reconnect_max);
        state.last_error = error;
        Err(Unreachable::from_string(format!("node {} at {}: {}", self.target, self.addr, state.last_error)))
    }
}

/// One TCP connection to a peer: a writer task drains the outbox, a reader task routes replies to
/// the calls and streams waiting for them.
struct Connection<C: RaftTypeConfig> {
    local_id: C::NodeId,
    target: C::NodeId,
    shared: Arc<Shared<C>>,
    outbox: mpsc::Sender<Bytes>,
    tasks: [AbortHandle; 2],
}

impl<C: RaftTypeConfig> Drop for Connection<C> {
    fn drop(&mut self) {
        self.shared.close("the connection was dropped".to_string());
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl<C: RaftTypeConfig> Connection<C> {
    async fn connect(link: &PeerLink<C>) -> io::Result<Self> {
        let socket = TcpStream::connect(&link.addr).await?;
        socket.set_nodelay(true)?;
        let (read, write) = socket.into_split();
        let mut frames = FramedRead::new(read, wire::codec(link.config.max_frame_len));
        let mut sink = FramedWrite::new(write, wire::codec(link.config.max_frame_len));

        let hello = ClientFrame::<C>::Hello {
            magic: wire::MAGIC,
            version: wire::PROTOCOL_VERSION,
            target: link.target.clone(),
        };
        futures::SinkExt::send(&mut sink, wire::encode(&hello)?).await?;
        match wire::decode::<ServerFrame<C>>(&wire::read_frame(&mut frames).await?)? {
            ServerFrame::Welcome(Ok(())) => {}
            ServerFrame::Welcome(Err(reason)) => return Err(io::Error::new(io::ErrorKind::ConnectionRefused, reason)),
            _ => return Err(io::Error::new(io::ErrorKind::InvalidData, "the peer did not answer Hello")),
        }

        let shared = Arc::new(Shared::default());
        let (outbox, rx) = mpsc::channel(OUTBOX_FRAMES);
        let writer = {
            let shared = shared.clone();
            tokio::spawn(async move {
                let res = wire::write_frames(sink, rx).await;
                shared.close(match res {
                    Ok(()) => "the connection was closed".to_string(),
                    Err(e) => format!("write failed: {e}"),
                });
            })
        };
        let reader = tokio::spawn(read_replies(frames, shared.clone()));
        Ok(Self {
            local_id: link.local_id.clone(),
            target: link.target.clone(),
            shared,
            outbox,
            tasks: [writer.abort_handle(), reader.abort_handle()],
        })
    }

    fn broken(&self) -> RPCError<C> {
        RPCError::Network(NetworkError::from_string(format!(
            "connection to node {}: {}",
            self.target,
            self.shared.reason()
        )))
    }

    /// Sends one request and waits up to `ttl` for its reply.
    async fn call(&self, request: Request<C>, action: RPCTypes, ttl: Duration) -> Result<Reply<C>, RPCError<C>> {
        self.send(request, action, ttl).await?.await
    }

    /// Queues one request; the future waits for its reply. Both together take at most `ttl`.
    async fn send(
        &self,
        request: Request<C>,
        action: RPCTypes,
        ttl: Duration,
    ) -> Result<impl Future<Output = Result<Reply<C>, RPCError<C>>> + Send + use<C>, RPCError<C>> {
        let id = self.shared.next_id();
        let frame =
            wire::encode(&ClientFrame::Call { id, request }).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let (tx, rx) = oneshot::channel();
        if !self.shared.register_call(id, tx) {
            return Err(self.broken());
        }
        let deadline = Instant::now() + ttl;
        match tokio::time::timeout_at(deadline, self.outbox.send(frame)).await {
            Ok(Ok(())) => {}
            queued => {
                self.shared.forget_call(id);
                return Err(if queued.is_err() { self.timeout(action, ttl) } else { self.broken() });
            }
        }
        let shared = self.shared.clone();
        let (broken, timeout) = (self.broken(), self.timeout(action, ttl));
        let target = self.target.clone();
        Ok(async move {
            match tokio::time::timeout_at(deadline, rx).await {
                Err(_) => {
                    shared.forget_call(id);
                    Err(timeout)
                }
                Ok(Err(_)) => Err(broken),
                Ok(Ok(Ok(reply))) => Ok(reply),
                Ok(Ok(Err(remote))) => Err(RPCError::Unreachable(Unreachable::from_string(format!(
                    "node {target} cannot serve {action}: {remote}"
                )))),
            }
        })
    }

    fn timeout(&self, action: RPCTypes, ttl: Duration) -> RPCError<C> {
        RPCError::Timeout(Timeout { action, id: self.local_id.clone(), target: self.target.clone(), timeout: ttl })
    }
}

/// Routes what the peer sends to the calls and streams waiting for it, until the connection ends.
async fn read_replies<C: RaftTypeConfig>(
    mut frames: FramedRead<OwnedReadHalf, LengthDelimitedCodec>,
    shared: Arc<Shared<C>>,
) {
    let reason = loop {
        let bytes = match frames.next().await {
            None => break "the peer closed the connection".to_string(),
            Some(Err(e)) => break format!("read failed: {e}"),
            Some(Ok(bytes)) => bytes,
        };
        match wire::decode::<ServerFrame<C>>(&bytes) {
            Ok(ServerFrame::Reply { id, reply }) => shared.complete_call(id, reply),
            Ok(ServerFrame::Appended { stream, result }) => shared.stream_event(stream, StreamEvent::Item(result)),
            Ok(ServerFrame::StreamClosed { stream }) => shared.end_stream(stream),
            Ok(ServerFrame::Welcome(_)) => break "the peer sent a second Welcome".to_string(),
            Err(e) => break format!("the peer sent a malformed frame: {e}"),
        }
    };
    shared.close(reason);
}

type CallReply<C> = Result<Reply<C>, String>;

enum StreamEvent<C: RaftTypeConfig> {
    /// The result of one AppendEntries, or the serving replica's error.
    Item(Result<StreamAppendResult<C>, String>),
    /// The connection broke.
    Broken(String),
}

/// State shared by a connection's reader, writer and users.
struct Shared<C: RaftTypeConfig> {
    next_id: AtomicU64,
    waiting: Mutex<Waiting<C>>,
}

struct Waiting<C: RaftTypeConfig> {
    /// Why the connection is closed, once it is; nothing is registered after that.
    closed: Option<String>,
    calls: HashMap<u64, oneshot::Sender<CallReply<C>>>,
    streams: HashMap<u64, mpsc::UnboundedSender<StreamEvent<C>>>,
}

impl<C: RaftTypeConfig> Default for Shared<C> {
    fn default() -> Self {
        let waiting = Waiting { closed: None, calls: HashMap::new(), streams: HashMap::new() };
        Self { next_id: AtomicU64::new(1), waiting: Mutex::new(waiting) }
    }
}

impl<C: RaftTypeConfig> Shared<C> {
    fn lock(&self) -> MutexGuard<'_, Waiting<C>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn is_open(&self) -> bool {
        self.lock().closed.is_none()
    }

    fn reason(&self) -> String {
        self.lock().closed.clone().unwrap_or_else(|| "closed".to_string())
    }

    fn register_call(&self, id: u64, tx: oneshot::Sender<CallReply<C>>) -> bool {
        let mut waiting = self.lock();
        if waiting.closed.is_some() {
            return false;
        }
        waiting.calls.insert(id, tx);
        true
    }

    fn forget_call(&self, id: u64) {
        self.lock().calls.remove(&id);
    }

    fn complete_call(&self, id: u64, reply: CallReply<C>) {
        if let Some(tx) = self.lock().calls.remove(&id) {
            // The caller may have timed out and gone.
            let _ = tx.send(reply);
        }
    }

    fn register_stream(&self, id: u64, tx: mpsc::UnboundedSender<StreamEvent<C>>) -> bool {
        let mut waiting = self.lock();
        if waiting.closed.is_some() {
            return false;
        }
        waiting.streams.insert(id, tx);
        true
    }

    fn stream_event(&self, id: u64, event: StreamEvent<C>) {
        if let Some(tx) = self.lock().streams.get(&id) {
            let _ = tx.send(event);
        }
    }

    fn end_stream(&self, id: u64) {
        self.lock().streams.remove(&id);
    }

    /// Marks the connection closed and fails everything waiting on it.
    fn close(&self, reason: String) {
        let mut waiting = self.lock();
        if waiting.closed.is_some() {
            return;
        }
        waiting.calls.clear();
        for (_, tx) in waiting.streams.drain() {
            let _ = tx.send(StreamEvent::Broken(reason.clone()));
        }
        waiting.closed = Some(reason);
    }
}

/// How many `Append`s of a stream the forwarder has queued; wakes the response side.
#[derive(Default)]
struct Sent {
    count: AtomicU64,
    notify: Notify,
}

/// The response side of one append stream. A spawned forwarder sends the requests as openraft
/// produces them, without waiting for responses: that is the pipelining.
struct AppendStream<C: RaftTypeConfig> {
    conn: Arc<Connection<C>>,
    id: u64,
    events: mpsc::UnboundedReceiver<StreamEvent<C>>,
    sent: Arc<Sent>,
    received: u64,
    idle_timeout: Duration,
    forwarder: AbortHandle,
}

impl<C: RaftTypeConfig> AppendStream<C> {
    fn open<S>(conn: Arc<Connection<C>>, input: S, idle_timeout: Duration) -> Result<Self, RPCError<C>>
    where
        S: Stream<Item = AppendEntriesRequest<C>> + OptionalSend + Unpin + 'static,
    {
        let id = conn.shared.next_id();
        let (tx, events) = mpsc::unbounded_channel();
        if !conn.shared.register_stream(id, tx) {
            return Err(conn.broken());
        }
        let sent = Arc::new(Sent::default());
        let forwarder = tokio::spawn(forward_appends(conn.clone(), id, input, sent.clone())).abort_handle();
        Ok(Self { conn, id, events, sent, received: 0, idle_timeout, forwarder })
    }

    /// The next response; `None` once the server has closed the stream. A response that does not
    /// come within the idle timeout while requests are outstanding is a timeout error.
    async fn next(&mut self) -> Option<Result<StreamAppendResult<C>, RPCError<C>>> {
        loop {
            let event = if self.sent.count.load(Ordering::Acquire) > self.received {
                match tokio::time::timeout(self.idle_timeout, self.events.recv()).await {
                    Ok(event) => event,
                    Err(_) => {
                        return Some(Err(RPCError::Timeout(Timeout {
                            action: RPCTypes::AppendEntries,
                            id: self.conn.local_id.clone(),
                            target: self.conn.target.clone(),
                            timeout: self.idle_timeout,
                        })));
                    }
                }
            } else {
                tokio::select! {
                    event = self.events.recv() => event,
                    _ = self.sent.notify.notified() => continue,
                }
            };
            return match event? {
                StreamEvent::Item(Ok(result)) => {
                    self.received += 1;
                    Some(Ok(result))
                }
                StreamEvent::Item(Err(remote)) => Some(Err(RPCError::Unreachable(Unreachable::from_string(format!(
                    "node {} cannot serve AppendEntries: {remote}",
                    self.conn.target
                ))))),
                StreamEvent::Broken(reason) => Some(Err(RPCError::Network(NetworkError::from_string(format!(
                    "connection to node {}: {reason}",
                    self.conn.target
                ))))),
            };
        }
    }
}

impl<C: RaftTypeConfig> Drop for AppendStream<C> {
    fn drop(&mut self) {
        self.forwarder.abort();
        self.conn.shared.end_stream(self.id);
        // Tell the server to drop its side; if the outbox is full or closed, the server learns
        // when the connection goes, and a stream it finished by itself ignores this.
        if let Ok(frame) = wire::encode(&ClientFrame::<C>::EndStream { stream: self.id }) {
            let _ = self.conn.outbox.try_send(frame);
        }
    }
}

async fn forward_appends<C, S>(conn: Arc<Connection<C>>, stream: u64, mut input: S, sent: Arc<Sent>)
where
    C: RaftTypeConfig,
    S: Stream<Item = AppendEntriesRequest<C>> + Unpin,
{
    let mut seq = 0;
    while let Some(request) = input.next().await {
        let frame = match wire::encode(&ClientFrame::Append { stream, seq, request }) {
            Ok(frame) => frame,
            Err(e) => {
                conn.shared.stream_event(stream, StreamEvent::Broken(format!("cannot encode AppendEntries: {e}")));
                return;
            }
        };
        if conn.outbox.send(frame).await.is_err() {
            return;
        }
        seq += 1;
        sent.count.fetch_add(1, Ordering::Release);
        sent.notify.notify_one();
    }
    if let Ok(frame) = wire::encode(&ClientFrame::<C>::EndStream { stream }) {
        let _ = conn.outbox.send(frame).await;
    }
}
