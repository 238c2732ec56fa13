//! The cluster roles' coordination through the znode store (DESIGN §1, §4): where the state
//! lives ([`paths`]), master election with an epoch that fences every master write
//! ([`election`]), node membership ([`membership`]), deployed topologies ([`topologies`]) and
//! the master's scheduling rounds ([`master`]), which use [`crate::scheduler`].
//!
//! Everything here speaks the ZooKeeper protocol through `zookeeper-client`, so a cluster runs
//! on Squall's own coordinator or on an Apache ZooKeeper ensemble alike.

pub mod election;
pub mod master;
pub mod membership;
pub mod paths;
pub mod topologies;

pub use election::{Candidate, Fence, Leadership, ensure_skeleton};
pub use membership::NodeInfo;
pub use topologies::{DeployError, Status, TopologyRecord};
