//! Squall's coordinator: the znode store that holds cluster membership, assignments, master
//! election and Kafka offsets — ZooKeeper's data model, to be replicated with openraft and served
//! over the ZooKeeper wire protocol.
//!
//! The map of the crate:
//! - [`tree`]: [`ZnodeTree`], the state machine. A plain, deterministic, in-memory structure: every
//!   change takes its zxid and the leader's time ([`Txn`]) and the caller's session and ids
//!   ([`Caller`]), fails with ZooKeeper's error or applies and returns the watch events it caused.
//!   Create modes, versions, multi with rollback, ephemerals per session, containers and TTL nodes.
//! - [`snapshot`]: canonical snapshot bytes of a tree, restore with validation, and a digest.
//! - [`watch`]: watch events and the [`WatchRegistry`] that maps them to the sessions to notify,
//!   with ZooKeeper's one-shot, persistent and persistent-recursive rules.
//! - [`acl`]: ids, ACL entries, permission bits, digest hashing and the checks.
//! - [`stat`]: [`Stat`], [`CreateMode`] and the [`NodeType`] encoded in `ephemeralOwner`.
//! - [`error`]: [`KeeperError`], one variant per ZooKeeper error code.
//! - [`path`]: path validation ([`validate_path`], shared with the runtime and the CLI) and the
//!   reserved paths.
//!
//! Raft, sessions, the wire protocol and storage wrap the tree; they never reach into it.

pub mod acl;
mod background;
mod byte_string;
pub mod error;
pub mod jute;
pub mod path;
mod peer;
mod proposer;
pub mod proto;
pub mod raft;
pub mod replica;
mod server;
pub mod session;
pub mod snapshot;
pub mod stat;
pub mod state;
pub mod store;
pub mod tree;
pub mod watch;

pub use acl::{Acl, Id};
pub use error::KeeperError;
pub use path::{PathError, validate_path};
pub use snapshot::SnapshotError;
pub use stat::{CreateMode, NodeType, SessionId, Stat, Zxid};
pub use tree::{
    Applied, Caller, CreateRequest, Created, MAX_DATA_LEN, MultiFailed, Op, OpResult, TreeConfig, Txn, ZnodeTree,
};
pub use watch::{EventType, WatchEvent, WatchKind, WatchRegistry, WatcherType};
