//! The worker-to-worker transport of cluster mode: messages for tasks on other workers, over
//! TCP.
//!
//! A worker's [`Transport`] has two halves. **Outbound**, one link per peer worker (named by
//! its worker id, e.g. `node-1-0`, and reached at an address from the assignment): a bounded
//! queue of encoded messages and one writer thread that sends whatever has been queued as one
//! frame, so throughput comes from batching. **Inbound**, a listener and one reader thread per
//! accepted connection, which decodes frames and hands their messages to the worker's
//! [`Delivery`] function. Each worker opens one connection to each peer it sends to — two
//! workers that send both ways have one connection per direction, as in Storm — lazily, on
//! the first message, after a handshake naming the topology (with a fingerprint of its
//! streams) and both workers.
//!
//! What the transport guarantees:
//! - **Order**: messages queued for one peer are delivered there in the order they were
//!   queued, so one sender's messages to one task arrive in order.
//! - **Backpressure, never drops**: a full queue blocks [`Transport::send`];
//!   [`send_timeout`](Transport::send_timeout) and [`try_send`](Transport::try_send) give up
//!   instead, so a task is never stuck forever on a dead peer. Memory per peer is bounded by
//!   [`TransportSettings::queue_bytes`] (plus the frame being written).
//! - **Reconnect**: a failed connection is reopened with exponential backoff; messages queued
//!   meanwhile wait and are delivered after the reconnect. Messages written to a connection
//!   that died before the peer acknowledged them may be lost: they are counted
//!   ([`TransportStats::lost`]), and acking replays their tuple trees — at-least-once holds
//!   across workers because the acker, not the transport, decides what is complete.
//! - **Re-routing**: [`Transport::set_peers`] applies a new assignment; the messages queued
//!   for a worker that left are handed back, for the caller to route by the new assignment or
//!   to fail their trees.
//! - **Isolation**: an oversized, malformed or foreign frame closes its connection, with a
//!   logged error, and nothing else.
//!
//! The wire format is documented in `wire` (messages) and `frame` (frames and handshake).

// The worker uses the bounded sends and the counts; the unbounded `send` and the per-link
// states are for the supervisor's status reports, which come later. The tests use all of it.
#![cfg_attr(not(test), allow(dead_code))]

mod frame;
mod inbound;
mod link;
mod queue;
mod wire;

#[cfg(test)]
mod tests;

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use rustc_hash::FxHashMap;
use smol_str::SmolStr;

use crate::tuple::TaskId;
use inbound::Inbound;
use link::Link;
use queue::Wait;

pub(crate) use wire::{EncodeError, Envelope, Message, StreamTable};

/// A worker's id: `<node-id>-<slot>`, as in `/squall/workers/<topology>/<id>`.
pub(crate) type WorkerId = SmolStr;

/// What the worker does with the messages of one frame from a peer: called on that
/// connection's reader thread, in arrival order. Blocking here stops the reader, which in turn
/// blocks the peer's senders once its queue fills.
pub(crate) type Delivery = Arc<dyn Fn(&WorkerId, Vec<Envelope>) + Send + Sync>;

/// Sizes and timings of a transport.
#[derive(Clone, Debug)]
pub(crate) struct TransportSettings {
    /// The most encoded bytes queued for one peer before senders wait.
    pub(crate) queue_bytes: usize,
    /// A frame is closed to new messages once its messages take this many bytes...
    pub(crate) frame_bytes: usize,
    /// ...or once it holds this many messages.
    pub(crate) frame_messages: u32,
    /// The largest frame a worker accepts (a length prefix over it closes the connection);
    /// a single message too large for it is refused by `send`.
    pub(crate) max_frame: usize,
    /// How long opening a connection may take.
    pub(crate) connect_timeout: Duration,
    /// How long each side waits for the other's handshake.
    pub(crate) handshake_timeout: Duration,
    /// The first pause after a failed connection; it doubles on each failure...
    pub(crate) backoff_min: Duration,
    /// ...up to this.
    pub(crate) backoff_max: Duration,
}

impl Default for TransportSettings {
    fn default() -> Self {
        TransportSettings {
            queue_bytes: 4 << 20,
            frame_bytes: 64 << 10,
            frame_messages: 4096,
            max_frame: 16 << 20,
            connect_timeout: Duration::from_secs(2),
            handshake_timeout: Duration::from_secs(5),
            backoff_min: Duration::from_millis(20),
            // A restarted worker is back within a few hundred milliseconds: retry often enough
            // not to add much to that.
            backoff_max: Duration::from_millis(100),
        }
    }
}

/// Why a message was not queued. The caller still has it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SendError {
    /// The peer is not in the current assignment.
    #[error("worker {0} is not a peer of this worker")]
    UnknownPeer(WorkerId),
    /// The peer's queue is full (from `try_send`).
    #[error("the queue to the peer is full")]
    Full,
    /// The peer's queue stayed full for the whole timeout (from `send_timeout`).
    #[error("the queue to the peer stayed full until the timeout")]
    Timeout,
    /// The link was closed while the message waited: the peer left the assignment or the
    /// transport is closing. Route it again.
    #[error("the link to the peer was closed")]
    Closed,
    /// The message alone is larger than a frame may be.
    #[error("the message takes {bytes} bytes; a frame holds at most {max}")]
    TooLarge { bytes: usize, max: usize },
    /// The message cannot be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

/// The state of one outbound link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LinkStats {
    /// The peer.
    pub(crate) peer: WorkerId,
    /// Where it is reached.
    pub(crate) addr: String,
    /// Whether a connection is open.
    pub(crate) connected: bool,
    /// Encoded bytes waiting in the queue.
    pub(crate) queued_bytes: usize,
    /// Messages written to connections.
    pub(crate) written: u64,
    /// Frames they were written in.
    pub(crate) frames: u64,
    /// Messages the peer acknowledged having received.
    pub(crate) acked: u64,
    /// Messages written to a connection that died before the peer acknowledged them.
    pub(crate) lost: u64,
    /// Connections opened.
    pub(crate) connects: u64,
    /// Why the last connection attempt failed or the last connection ended, while the link is
    /// not connected.
    pub(crate) last_error: Option<String>,
}

/// What a transport has done so far.
#[derive(Clone, Debug)]
pub(crate) struct TransportStats {
    /// The current peers' links.
    pub(crate) links: Vec<LinkStats>,
    /// Messages lost on dead connections, on every link this transport ever had.
    pub(crate) lost: u64,
    /// Messages received from peers.
    pub(crate) received: u64,
    /// Incoming connections refused at the handshake.
    pub(crate) refused: u64,
    /// Incoming connections closed for a protocol error (oversized or malformed frame).
    pub(crate) broken: u64,
}

impl TransportStats {
    /// The link to `peer`.
    pub(crate) fn link(&self, peer: &str) -> Option<&LinkStats> {
        self.links.iter().find(|l| l.peer == peer)
    }
}

/// What every thread of a transport shares.
struct Context {
    worker: WorkerId,
    streams: Arc<StreamTable>,
    settings: TransportSettings,
    lost: AtomicU64,
    threads: AtomicUsize,
}

impl Context {
    /// Starts a thread counted in `threads` until it ends.
    fn spawn(self: &Arc<Self>, name: String, body: impl FnOnce() + Send + 'static) -> JoinHandle<()> {
        struct Running(Arc<Context>);
        impl Drop for Running {
            fn drop(&mut self) {
                self.0.threads.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.threads.fetch_add(1, Ordering::SeqCst);
        let running = Running(self.clone());
        std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                let _running = running;
                body();
            })
            .expect("the OS refused to start a transport thread")
    }
}

/// One worker's end of the worker-to-worker transport.
pub(crate) struct Transport {
    ctx: Arc<Context>,
    links: RwLock<FxHashMap<WorkerId, Arc<Link>>>,
    inbound: Inbound,
    closed: bool,
}

impl Transport {
    /// Starts worker `worker`'s transport for the topology of `streams`, listening on
    /// `listen` (port 0 picks a free one: see [`local_addr`](Self::local_addr)). It has no
    /// peers until [`set_peers`](Self::set_peers).
    pub(crate) fn start(
        worker: WorkerId,
        streams: Arc<StreamTable>,
        listen: impl ToSocketAddrs,
        settings: TransportSettings,
        delivery: Delivery,
    ) -> std::io::Result<Transport> {
        let ctx =
            Arc::new(Context { worker, streams, settings, lost: AtomicU64::new(0), threads: AtomicUsize::new(0) });
        let inbound = Inbound::start(&ctx, listen, delivery)?;
        Ok(Transport { ctx, links: RwLock::new(FxHashMap::default()), inbound, closed: false })
    }

    /// The address the transport listens on.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.inbound.local_addr()
    }

    /// This worker's id.
    pub(crate) fn worker(&self) -> &WorkerId {
        &self.ctx.worker
    }

    /// Makes `peers` (worker id → "host:port") the workers this one sends to. A new peer gets
    /// a link (connected on its first message), a peer at a new address is reconnected there
    /// with its queue kept, and a peer that is not in `peers` any more is closed: the messages
    /// still queued for it are returned, in order, for the caller to route again.
    pub(crate) fn set_peers(&self, peers: impl IntoIterator<Item = (WorkerId, String)>) -> Vec<Envelope> {
        let wanted: FxHashMap<WorkerId, String> = peers.into_iter().collect();
        let removed: Vec<Arc<Link>> = {
            let mut links = self.links.write().unwrap_or_else(|e| e.into_inner());
            let gone: Vec<WorkerId> = links.keys().filter(|p| !wanted.contains_key(*p)).cloned().collect();
            let removed = gone.iter().filter_map(|p| links.remove(p)).collect();
            for (peer, addr) in wanted {
                match links.get(&peer) {
                    Some(link) => link.set_addr(&addr),
                    None => {
                        let link = Link::start(&self.ctx, peer.clone(), addr);
                        links.insert(peer, Arc::new(link));
                    }
                }
            }
            removed
        };
        removed.iter().flat_map(|link| link.close()).collect()
    }

    /// Queues `message` for task `to` on worker `peer`, waiting while the peer's queue is full.
    pub(crate) fn send(&self, peer: &str, to: TaskId, message: &Message) -> Result<(), SendError> {
        self.link(peer)?.send(to, message, Wait::Forever)
    }

    /// Like [`send`](Self::send), but gives up with [`SendError::Timeout`] when the queue
    /// stays full for `timeout`.
    pub(crate) fn send_timeout(
        &self,
        peer: &str,
        to: TaskId,
        message: &Message,
        timeout: Duration,
    ) -> Result<(), SendError> {
        self.link(peer)?.send(to, message, Wait::Within(timeout))
    }

    /// Like [`send`](Self::send), but fails with [`SendError::Full`] instead of waiting.
    pub(crate) fn try_send(&self, peer: &str, to: TaskId, message: &Message) -> Result<(), SendError> {
        self.link(peer)?.send(to, message, Wait::No)
    }

    fn link(&self, peer: &str) -> Result<Arc<Link>, SendError> {
        let links = self.links.read().unwrap_or_else(|e| e.into_inner());
        links.get(peer).cloned().ok_or_else(|| SendError::UnknownPeer(peer.into()))
    }

    /// Counts and link states, for the worker to report.
    pub(crate) fn stats(&self) -> TransportStats {
        let links = self.links.read().unwrap_or_else(|e| e.into_inner());
        let mut links: Vec<LinkStats> = links.values().map(|l| l.stats()).collect();
        links.sort_by(|a, b| a.peer.cmp(&b.peer));
        let inbound = self.inbound.counts();
        TransportStats {
            links,
            lost: self.ctx.lost.load(Ordering::Relaxed),
            received: inbound.received,
            refused: inbound.refused,
            broken: inbound.broken,
        }
    }

    /// Stops every thread of the transport and returns the messages still queued for peers.
    /// Returns once every reader has come back from its delivery call.
    pub(crate) fn close(mut self) -> Vec<Envelope> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Vec<Envelope> {
        if std::mem::replace(&mut self.closed, true) {
            return Vec::new();
        }
        let links = std::mem::take(&mut *self.links.write().unwrap_or_else(|e| e.into_inner()));
        let unsent = links.values().flat_map(|link| link.close()).collect();
        self.inbound.close();
        unsent
    }

    /// A handle that still counts the transport's running threads after it is closed.
    #[cfg(test)]
    fn thread_count(&self) -> impl Fn() -> usize + use<> {
        let ctx = self.ctx.clone();
        move || ctx.threads.load(Ordering::SeqCst)
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        let unsent = self.shutdown();
        if !unsent.is_empty() {
            tracing::warn!(
                "worker {}: {} messages for peers were dropped with the transport",
                self.ctx.worker,
                unsent.len()
            );
        }
    }
}
