//! The serving side: accepts peers' connections and hands each frame to the local [`Raft`].
//!
//! Calls run concurrently, so replies may leave in any order (the client matches them by id);
//! the responses of one append stream leave in order. A frame that does not decode, a frame over
//! the size limit, or a broken protocol rule closes that connection and nothing else.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::SinkExt;
use futures::StreamExt;
use futures::channel::mpsc as stream_mpsc;
use openraft::Raft;
use openraft::RaftTypeConfig;
use openraft::Snapshot;
use openraft::raft::AppendEntriesRequest;
use openraft::storage::RaftStateMachine;
use tokio::net::TcpListener;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::bytes::Bytes;
use tokio_util::codec::FramedRead;
use tokio_util::codec::FramedWrite;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::AppHandler;
use super::NetworkConfig;
use super::PeerAddress;
use super::leader_loss::LeaderLoss;
use super::wire;
use super::wire::ClientFrame;
use super::wire::Reply;
use super::wire::Request;
use super::wire::ServerFrame;
use super::wire::SnapshotChunk;

/// Frames queued for one connection's writer before the reader stops taking requests.
const OUTBOX_FRAMES: usize = 1024;
/// AppendEntries of one stream queued for Raft before the reader waits.
const STREAM_QUEUE: usize = 64;
/// How long a new connection may take to say `Hello`.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves Raft RPCs from peers on `listener` until the returned future is dropped or accepting
/// fails; dropping it closes every connection it accepted.
pub async fn serve<C, SM>(listener: TcpListener, raft: Raft<C, SM>, config: NetworkConfig) -> io::Result<()>
where
    C: RaftTypeConfig,
    C::Node: PeerAddress,
    SM: RaftStateMachine<C, SnapshotData = Vec<u8>>,
{
    let token = CancellationToken::new();
    let _closes_connections_when_dropped = token.clone().drop_guard();
    accept(listener, raft, config, None, token, TaskTracker::new()).await
}

/// Accepts connections and runs each on a task of `tasks` that ends when `token` is cancelled.
async fn accept<C, SM>(
    listener: TcpListener,
    raft: Raft<C, SM>,
    config: NetworkConfig,
    app: Option<Arc<dyn AppHandler>>,
    token: CancellationToken,
    tasks: TaskTracker,
) -> io::Result<()>
where
    C: RaftTypeConfig,
    C::Node: PeerAddress,
    SM: RaftStateMachine<C, SnapshotData = Vec<u8>>,
{
    let leader_loss = config.quick_election.map(|stagger| Arc::new(LeaderLoss::new(raft.clone(), stagger)));
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            // Out of file descriptors and the like: the listener itself is fine, try again.
            Err(e) if is_transient(&e) => {
                tracing::warn!("raft rpc: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let connection = ServerConnection {
            raft: raft.clone(),
            config: config.clone(),
            app: app.clone(),
            leader_loss: leader_loss.clone(),
            token: token.child_token(),
            tasks: tasks.clone(),
        };
        let (leader_loss, shutdown) = (leader_loss.clone(), token.clone());
        tasks.spawn(async move {
            let token = connection.token.clone();
            let ended = tokio::select! {
                _ = token.cancelled() => false,
                res = connection.run(socket) => {
                    if let Err(e) = res {
                        tracing::info!("raft rpc: closed connection from {peer}: {e}");
                    }
                    true
                }
            };
            token.cancel();
            // A leader that died took its connections with it: the first sign of its loss.
            if let Some(leader_loss) = leader_loss.filter(|_| ended) {
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = leader_loss.connection_ended() => {}
                }
            }
        });
    }
}

fn is_transient(e: &io::Error) -> bool {
    !matches!(e.kind(), io::ErrorKind::InvalidInput | io::ErrorKind::NotConnected | io::ErrorKind::Unsupported)
}

/// A running [`serve`] task: the handle a replica keeps to stop serving its peers.
///
/// ```no_run
/// # use squall_coordinator::raft::{NetworkConfig, RaftRpcServer};
/// # openraft::declare_raft_types!(pub Tc);
/// # async fn run<SM: openraft::storage::RaftStateMachine<Tc, SnapshotData = Vec<u8>>>(raft: openraft::Raft<Tc, SM>) -> std::io::Result<()> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let server = RaftRpcServer::start(listener, raft.clone(), NetworkConfig::default())?;
/// println!("raft rpc on {}", server.local_addr());
/// // ... on shutdown: stop taking RPCs first, then stop Raft.
/// server.shutdown().await;
/// raft.shutdown().await.ok();
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct RaftRpcServer {
    local_addr: SocketAddr,
    token: CancellationToken,
    tasks: TaskTracker,
    accept: JoinHandle<io::Result<()>>,
}

impl RaftRpcServer {
    /// Spawns [`serve`] on `listener`.
    pub fn start<C, SM>(listener: TcpListener, raft: Raft<C, SM>, config: NetworkConfig) -> io::Result<Self>
    where
        C: RaftTypeConfig,
        C::Node: PeerAddress,
        SM: RaftStateMachine<C, SnapshotData = Vec<u8>>,
    {
        Self::start_with_app(listener, raft, config, None)
    }

    /// [`RaftRpcServer::start`], with `app` answering the application's own requests
    /// ([`TcpNetwork::app_send`](super::TcpNetwork::app_send)).
    pub fn start_with_app<C, SM>(
        listener: TcpListener,
        raft: Raft<C, SM>,
        config: NetworkConfig,
        app: Option<Arc<dyn AppHandler>>,
    ) -> io::Result<Self>
    where
        C: RaftTypeConfig,
        C::Node: PeerAddress,
        SM: RaftStateMachine<C, SnapshotData = Vec<u8>>,
    {
        let local_addr = listener.local_addr()?;
        let token = CancellationToken::new();
        let tasks = TaskTracker::new();
        let accept = tokio::spawn(accept(listener, raft, config, app, token.clone(), tasks.clone()));
        Ok(Self { local_addr, token, tasks, accept })
    }

    /// The address peers connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, closes every peer connection and waits until that is done.
    pub async fn shutdown(self) {
        self.token.cancel();
        self.accept.abort();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

impl Drop for RaftRpcServer {
    fn drop(&mut self) {
        self.token.cancel();
        self.accept.abort();
    }
}

struct ServerConnection<C: RaftTypeConfig, SM: RaftStateMachine<C>> {
    raft: Raft<C, SM>,
    config: NetworkConfig,
    app: Option<Arc<dyn AppHandler>>,
    /// Grants votes early when the leader is proven gone (`NetworkConfig::quick_election`).
    leader_loss: Option<Arc<LeaderLoss<C, SM>>>,
    /// Cancelled when the connection ends: stops the tasks it spawned.
    token: CancellationToken,
    /// The server's tasks, which [`RaftRpcServer::shutdown`] waits for.
    tasks: TaskTracker,
}

/// A snapshot being received on a connection.
struct IncomingSnapshot {
    transfer: u64,
    data: Vec<u8>,
}

impl<C, SM> ServerConnection<C, SM>
where
    C: RaftTypeConfig,
    C::Node: PeerAddress,
    SM: RaftStateMachine<C, SnapshotData = Vec<u8>>,
{
    async fn run(&self, socket: TcpStream) -> io::Result<()> {
        socket.set_nodelay(true)?;
        let (read, write) = socket.into_split();
        let mut frames = FramedRead::new(read, wire::codec(self.config.max_frame_len));
        let mut sink = FramedWrite::new(write, wire::codec(self.config.max_frame_len));

        let hello = tokio::time::timeout(HELLO_TIMEOUT, wire::read_frame(&mut frames))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no Hello"))??;
        let verdict = self.check_hello(wire::decode::<ClientFrame<C>>(&hello)?);
        sink.send(wire::encode(&ServerFrame::<C>::Welcome(verdict.clone()))?).await?;
        verdict.map_err(|reason| io::Error::new(io::ErrorKind::ConnectionRefused, reason))?;

        let (outbox, rx) = mpsc::channel(OUTBOX_FRAMES);
        self.spawn(async move {
            if let Err(e) = wire::write_frames(sink, rx).await {
                tracing::info!("raft rpc: write failed: {e}");
            }
        });

        let mut streams: HashMap<u64, stream_mpsc::Sender<AppendEntriesRequest<C>>> = HashMap::new();
        let mut snapshot: Option<IncomingSnapshot> = None;
        while let Some(bytes) = frames.next().await {
            match wire::decode::<ClientFrame<C>>(&bytes?)? {
                ClientFrame::Hello { .. } => return Err(protocol("a second Hello")),
                ClientFrame::Call { id, request: Request::SnapshotChunk(chunk) } => {
                    self.receive_chunk(id, chunk, &mut snapshot, &outbox).await?;
                }
                ClientFrame::Call { id, request } => self.spawn_call(id, request, outbox.clone()),
                ClientFrame::Append { stream, seq, request } => {
                    if seq == 0 {
                        if streams.contains_key(&stream) {
                            return Err(protocol("an append stream opened twice"));
                        }
                        streams.insert(stream, self.open_stream(stream, outbox.clone()));
                    }
                    // A stream Raft ended (after a conflict, say) drops the rest of its requests.
                    if let Some(tx) = streams.get_mut(&stream) {
                        wire::check_append(&request).map_err(|e| protocol(&format!("bad AppendEntries: {e}")))?;
                        if tx.send(request).await.is_err() {
                            streams.remove(&stream);
                        }
                    }
                }
                ClientFrame::EndStream { stream } => {
                    streams.remove(&stream);
                }
            }
        }
        Ok(())
    }

    fn check_hello(&self, hello: ClientFrame<C>) -> Result<(), String> {
        let ClientFrame::Hello { magic, version, target } = hello else {
            return Err("the first frame must be Hello".to_string());
        };
        if magic != wire::MAGIC {
            return Err("not a Squall Raft RPC client".to_string());
        }
        if version != wire::PROTOCOL_VERSION {
            return Err(format!(
                "protocol version {version} is not supported (this replica speaks {})",
                wire::PROTOCOL_VERSION
            ));
        }
        let me = self.raft.node_id();
        if &target != me {
            return Err(format!("this address serves node {me}, not node {target}"));
        }
        Ok(())
    }

    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let token = self.token.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                _ = token.cancelled() => {}
                _ = task => {}
            }
        });
    }

    /// Runs one call on its own task and queues its reply. An application call is started
    /// here, in arrival order (see [`AppHandler::call`]); only its answer is awaited on the task.
    fn spawn_call(&self, id: u64, request: Request<C>, outbox: mpsc::Sender<Bytes>) {
        let raft = self.raft.clone();
        let leader_loss = self.leader_loss.clone();
        if let Request::App(bytes) = request {
            // Started now, with the request's bytes (a forwarded batch: not copied).
            let call = self.app.as_ref().map(|app| app.call(bytes));
            self.spawn(async move {
                let reply = match call {
                    Some(call) => call.await.map(Reply::<C>::App),
                    None => Err("this replica takes no application requests".to_string()),
                };
                send_frame(&outbox, &ServerFrame::Reply { id, reply }).await;
            });
            return;
        }
        self.spawn(async move {
            let reply = match request {
                Request::App(_) => Err("an application request is started apart".to_string()),
                Request::Vote(req) => match &leader_loss {
                    Some(leader_loss) => leader_loss.vote(req).await,
                    None => raft.vote(req).await,
                }
                .map(Reply::Vote)
                .map_err(|e| e.to_string()),
                Request::PreVote(req) => raft.pre_vote(req).await.map(Reply::Vote).map_err(|e| e.to_string()),
                Request::AppendEntries(req) => match wire::check_append(&req) {
                    Ok(()) => raft.append_entries(req).await.map(Reply::AppendEntries).map_err(|e| e.to_string()),
                    Err(e) => Err(format!("bad AppendEntries: {e}")),
                },
                Request::TransferLeader(req) => {
                    raft.handle_transfer_leader(req).await.map(Reply::TransferLeader).map_err(|e| e.to_string())
                }
                Request::SnapshotChunk(_) => Err("snapshot chunks are handled in order".to_string()),
            };
            send_frame(&outbox, &ServerFrame::Reply { id, reply }).await;
        });
    }

    /// Starts Raft's pipelined append for one stream; its results go out in order.
    fn open_stream(&self, stream: u64, outbox: mpsc::Sender<Bytes>) -> stream_mpsc::Sender<AppendEntriesRequest<C>> {
        let (tx, rx) = stream_mpsc::channel(STREAM_QUEUE);
        let raft = self.raft.clone();
        self.spawn(async move {
            let mut results = std::pin::pin!(raft.stream_append(rx));
            while let Some(result) = results.next().await {
                let result = result.map_err(|fatal| fatal.to_string());
                send_frame(&outbox, &ServerFrame::<C>::Appended { stream, result }).await;
            }
            send_frame(&outbox, &ServerFrame::<C>::StreamClosed { stream }).await;
        });
        tx
    }

    /// Adds a chunk to the snapshot being received; the last one installs it (on its own task,
    /// so that other calls keep flowing while the state machine loads it).
    async fn receive_chunk(
        &self,
        id: u64,
        chunk: SnapshotChunk<C>,
        incoming: &mut Option<IncomingSnapshot>,
        outbox: &mpsc::Sender<Bytes>,
    ) -> io::Result<()> {
        if chunk.offset == 0 {
            *incoming = Some(IncomingSnapshot { transfer: chunk.transfer, data: Vec::new() });
        }
        let Some(snapshot) = incoming.as_mut().filter(|s| s.transfer == chunk.transfer) else {
            return Err(protocol("a snapshot chunk of a transfer that was not started"));
        };
        if chunk.offset != snapshot.data.len() as u64 {
            return Err(protocol("a snapshot chunk out of order"));
        }
        snapshot.data.extend_from_slice(&chunk.data);
        let Some(done) = chunk.done else {
            send_frame(outbox, &ServerFrame::<C>::Reply { id, reply: Ok(Reply::ChunkReceived) }).await;
            return Ok(());
        };
        wire::check_snapshot(&done).map_err(|e| protocol(&format!("bad snapshot: {e}")))?;
        let data = incoming.take().map(|s| s.data).unwrap_or_default();
        let raft = self.raft.clone();
        let outbox = outbox.clone();
        self.spawn(async move {
            let snapshot = Snapshot { meta: done.meta, snapshot: data };
            let reply = raft.install_full_snapshot(done.vote, snapshot).await;
            let reply = reply.map(Reply::Snapshot).map_err(|e| e.to_string());
            send_frame(&outbox, &ServerFrame::Reply { id, reply }).await;
        });
        Ok(())
    }
}

fn protocol(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("protocol violation: {what}"))
}

/// Queues a frame; if the connection is gone there is no one left to tell.
async fn send_frame<C: RaftTypeConfig>(outbox: &mpsc::Sender<Bytes>, frame: &ServerFrame<C>) {
    match wire::encode(frame) {
        Ok(bytes) => {
            let _ = outbox.send(bytes).await;
        }
        Err(e) => tracing::error!("raft rpc: cannot encode a reply: {e}"),
    }
}
