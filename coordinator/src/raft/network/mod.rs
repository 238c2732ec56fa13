//! Raft RPCs between replicas over plain TCP.
//!
//! - [`TcpNetwork`] (client side) is openraft's `RaftNetworkFactory`. Its [`PeerClient`]s keep one
//!   persistent connection per peer (plus one for snapshots), send many RPCs on it at once, and
//!   pipeline AppendEntries: `stream_append` sends each request as openraft produces it, without
//!   waiting for earlier responses. A broken connection is re-established on the next RPC, with
//!   exponential backoff while the peer stays down.
//! - [`serve`] / [`RaftRpcServer`] (server side) accept peers' connections and hand each request
//!   to the local `Raft`.
//! - `wire` holds the frames: 4-byte length, postcard body, request ids so that replies can come
//!   back in any order.
//!
//! Snapshots travel as bytes: the state machine's `SnapshotData` must be `Vec<u8>`.

mod client;
mod leader_loss;
mod server;
pub(crate) mod wire;

use std::time::Duration;

pub use client::PeerClient;
pub use client::TcpNetwork;
pub use server::RaftRpcServer;
pub use server::serve;

/// Answers the application's own requests between replicas (a follower forwarding a client's
/// write to the leader, say), carried on the Raft RPC connections as opaque bytes.
pub trait AppHandler: Send + Sync + 'static {
    /// The answer to `request`, or why there is none. Called in the order the requests arrive
    /// on a connection, so what `call` does before it returns the future happens in that
    /// order; the futures then run concurrently.
    fn call(&self, request: Vec<u8>) -> futures::future::BoxFuture<'static, Result<Vec<u8>, String>>;
}

/// The address other replicas reach a node's Raft RPC port at, taken from openraft's `Node` type.
pub trait PeerAddress {
    /// `host:port` of the node's Raft RPC listener.
    fn raft_addr(&self) -> &str;
}

impl PeerAddress for openraft::BasicNode {
    fn raft_addr(&self) -> &str {
        &self.addr
    }
}

impl PeerAddress for openraft::NodeInfo {
    fn raft_addr(&self) -> &str {
        &self.raft_addr
    }
}

/// Timeouts and limits of the Raft transport. The defaults suit replicas on one LAN.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// Longest a TCP connect plus handshake may take.
    pub connect_timeout: Duration,
    /// First wait before reconnecting to a peer that refused a connection; doubles per failure.
    pub reconnect_min: Duration,
    /// Longest wait between reconnection attempts.
    pub reconnect_max: Duration,
    /// Least time an append stream waits for a response while requests are outstanding (openraft
    /// asks for one heartbeat interval, which an fsync under load can exceed).
    pub min_stream_timeout: Duration,
    /// How long the receiver may take to install a snapshot once it has all of it.
    pub snapshot_install_timeout: Duration,
    /// Chunk size for snapshots when openraft does not name one.
    pub snapshot_chunk_size: usize,
    /// Largest frame either side accepts; a larger one closes the connection. Must exceed the
    /// largest AppendEntries batch (`max_payload_entries` × largest entry) and the chunk size.
    pub max_frame_len: usize,
    /// When set, a follower that finds its leader's Raft port refusing connections or dropping a
    /// `Hello` (the leader's process died) stands for election at once instead of waiting out
    /// its election timer, and voters grant such a candidate their vote despite the leader lease;
    /// the surviving voters stand in id order, this far apart. `None` leaves elections to openraft's timers alone.
    /// See `leader_loss.rs`.
    pub quick_election: Option<Duration>,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(1),
            reconnect_min: Duration::from_millis(20),
            reconnect_max: Duration::from_secs(1),
            min_stream_timeout: Duration::from_secs(1),
            snapshot_install_timeout: Duration::from_secs(60),
            snapshot_chunk_size: 4 << 20,
            max_frame_len: 256 << 20,
            quick_election: Some(Duration::from_millis(100)),
        }
    }
}
