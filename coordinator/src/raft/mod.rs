//! The Raft plumbing of a coordinator replica: openraft's three adapters but the state machine,
//! generic over the application's `RaftTypeConfig`, so the znode tree plugs in as the state
//! machine and nothing here knows about it.
//!
//! - [`log_store`]: [`LogStore`], the durable log, vote and committed log id (openraft's
//!   `RaftLogStorage`), on raft-log in a data directory that `data_dir` guards: a directory of
//!   another node, a foreign one or a damaged one is refused with a [`StoreOpenError`].
//! - [`network`]: [`TcpNetwork`], openraft's network factory over persistent, multiplexed TCP
//!   connections with pipelined AppendEntries, and [`serve`] / [`RaftRpcServer`], which answers
//!   peers' RPCs with the local `Raft`.
//!
//! Requirements on the type config: openraft's `serde` feature is on, so entries, votes and
//! messages are serde types (encoded with postcard); `Node` implements [`PeerAddress`]
//! (`BasicNode` does); the state machine's `SnapshotData` is `Vec<u8>`.
//!
//! Wiring one replica:
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use squall_coordinator::raft::{LogStore, NetworkConfig, RaftRpcServer, TcpNetwork};
//! # openraft::declare_raft_types!(pub Tc);
//! # async fn run(sm: impl openraft::storage::RaftStateMachine<Tc, SnapshotData = Vec<u8>>) -> Result<(), Box<dyn std::error::Error>> {
//! let id = 1;
//! let store = LogStore::<Tc>::open("/var/lib/squall/raft", &id)?;
//! let network = TcpNetwork::<Tc>::new(id, NetworkConfig::default());
//! let config = Arc::new(openraft::Config::default().validate()?);
//! let raft = openraft::Raft::new(id, config, network, store, sm).await?;
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:2888").await?;
//! let server = RaftRpcServer::start(listener, raft.clone(), NetworkConfig::default())?;
//! // ... and to stop: stop serving peers first, then Raft.
//! server.shutdown().await;
//! raft.shutdown().await?;
//! # Ok(()) }
//! ```

mod chunk_reaper;
mod data_dir;
pub mod log_store;
pub mod network;
mod torn_tail;

#[cfg(test)]
mod tests;

pub use data_dir::StoreOpenError;
pub use log_store::LogStore;
pub use log_store::LogStoreConfig;
pub use log_store::LogStoreStats;
pub use network::AppHandler;
pub use network::NetworkConfig;
pub use network::PeerAddress;
pub use network::PeerClient;
pub use network::RaftRpcServer;
pub use network::TcpNetwork;
pub use network::serve;

/// The bytes of a state machine snapshot, as the network carries them.
pub type SnapshotData = Vec<u8>;
