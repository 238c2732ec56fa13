//! What a znode is: its [`Stat`], the [`CreateMode`] it was made with and the [`NodeType`] that
//! ZooKeeper encodes in `ephemeralOwner`.

use serde::{Deserialize, Serialize};

/// A ZooKeeper transaction id; in Squall, the Raft log index of the command that made the change.
pub type Zxid = i64;
/// A session id as ZooKeeper clients see it.
pub type SessionId = i64;

/// A znode's metadata, exactly the 11 fields of ZooKeeper's `Stat`, in wire order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Stat {
    /// zxid of the create.
    pub czxid: Zxid,
    /// zxid of the last setData (the create at first).
    pub mzxid: Zxid,
    /// Leader time of the create, ms since the epoch.
    pub ctime: i64,
    /// Leader time of the last setData, ms since the epoch.
    pub mtime: i64,
    /// Number of setData calls.
    pub version: i32,
    /// Number of changes to the children: creates plus deletes (ZooKeeper reports the internal
    /// create count × 2 − numChildren, so the root starts at −1 with `/zookeeper` as its child).
    pub cversion: i32,
    /// Number of setACL calls.
    pub aversion: i32,
    /// The owning session of an ephemeral, else 0 (also 0 for containers and TTL nodes, as
    /// ZooKeeper shows them to clients).
    pub ephemeral_owner: SessionId,
    /// Length of the data in bytes.
    pub data_length: i32,
    /// Number of children.
    pub num_children: i32,
    /// zxid of the last create or delete of a child.
    pub pzxid: Zxid,
}

/// How a znode is created (`CreateMode`, with ZooKeeper's flag numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CreateMode {
    /// 0: stays until deleted.
    Persistent,
    /// 1: deleted when its session ends; may not have children.
    Ephemeral,
    /// 2: persistent, with `%010d` of the parent's create counter appended to the name.
    PersistentSequential,
    /// 3: ephemeral and sequential.
    EphemeralSequential,
    /// 4: deleted by the server once it had children and has none left.
    Container,
    /// 5: deleted by the server once it has no children and was not modified for its TTL.
    PersistentWithTtl,
    /// 6: TTL and sequential.
    PersistentSequentialWithTtl,
}

impl CreateMode {
    /// The mode for a wire flag, `None` for an unknown flag.
    pub fn from_flag(flag: i32) -> Option<CreateMode> {
        Some(match flag {
            0 => CreateMode::Persistent,
            1 => CreateMode::Ephemeral,
            2 => CreateMode::PersistentSequential,
            3 => CreateMode::EphemeralSequential,
            4 => CreateMode::Container,
            5 => CreateMode::PersistentWithTtl,
            6 => CreateMode::PersistentSequentialWithTtl,
            _ => return None,
        })
    }

    /// The wire flag.
    pub fn flag(self) -> i32 {
        match self {
            CreateMode::Persistent => 0,
            CreateMode::Ephemeral => 1,
            CreateMode::PersistentSequential => 2,
            CreateMode::EphemeralSequential => 3,
            CreateMode::Container => 4,
            CreateMode::PersistentWithTtl => 5,
            CreateMode::PersistentSequentialWithTtl => 6,
        }
    }

    /// Whether a sequence number is appended to the name.
    pub fn is_sequential(self) -> bool {
        matches!(
            self,
            CreateMode::PersistentSequential
                | CreateMode::EphemeralSequential
                | CreateMode::PersistentSequentialWithTtl
        )
    }

    /// Whether the node belongs to a session.
    pub fn is_ephemeral(self) -> bool {
        matches!(self, CreateMode::Ephemeral | CreateMode::EphemeralSequential)
    }

    /// Whether the node is a container.
    pub fn is_container(self) -> bool {
        self == CreateMode::Container
    }

    /// Whether the node has a TTL.
    pub fn is_ttl(self) -> bool {
        matches!(self, CreateMode::PersistentWithTtl | CreateMode::PersistentSequentialWithTtl)
    }
}

/// What kind of znode a node is, decoded from the `ephemeralOwner` that ZooKeeper stores
/// (`EphemeralType`): 0 for persistent, `0x8000000000000000` for containers,
/// `0xFF00_0000_0000_0000 | ttl` for TTL nodes, else the owning session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeType {
    /// An ordinary node.
    Persistent,
    /// Owned by this session.
    Ephemeral(SessionId),
    /// A container.
    Container,
    /// A TTL node with this TTL in milliseconds.
    Ttl(i64),
}

/// `EphemeralType.CONTAINER_EPHEMERAL_OWNER`.
pub(crate) const CONTAINER_OWNER: i64 = i64::MIN;
const EXTENDED_MASK: u64 = 0xff00_0000_0000_0000;
const RESERVED_BITS_MASK: u64 = 0x00ff_ff00_0000_0000;
/// The largest TTL ZooKeeper accepts: 2^40 − 1 ms (about 34 years).
pub const MAX_TTL_MS: i64 = !(EXTENDED_MASK | RESERVED_BITS_MASK) as i64;

impl NodeType {
    /// Decodes a stored `ephemeralOwner`.
    pub fn from_owner(owner: i64) -> NodeType {
        let bits = owner as u64;
        if bits & EXTENDED_MASK == EXTENDED_MASK && bits & RESERVED_BITS_MASK == 0 {
            NodeType::Ttl(owner & MAX_TTL_MS)
        } else if owner == CONTAINER_OWNER {
            NodeType::Container
        } else if owner == 0 {
            NodeType::Persistent
        } else {
            NodeType::Ephemeral(owner)
        }
    }

    /// Encodes as ZooKeeper stores it.
    pub fn owner(self) -> i64 {
        match self {
            NodeType::Persistent => 0,
            NodeType::Ephemeral(session) => session,
            NodeType::Container => CONTAINER_OWNER,
            NodeType::Ttl(ttl) => (EXTENDED_MASK as i64) | (ttl & MAX_TTL_MS),
        }
    }

    /// Whether a session id can own ephemerals without being mistaken for a container or TTL
    /// encoding (ZooKeeper's session ids never are: their top byte is the server id, ≤ 254).
    pub fn is_valid_session(session: SessionId) -> bool {
        session != 0 && matches!(NodeType::from_owner(session), NodeType::Ephemeral(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_mode_flags_round_trip() {
        for flag in 0..=6 {
            let mode = CreateMode::from_flag(flag).unwrap();
            assert_eq!(mode.flag(), flag);
        }
        assert_eq!(CreateMode::from_flag(7), None);
        assert_eq!(CreateMode::from_flag(-1), None);
        assert!(CreateMode::EphemeralSequential.is_ephemeral() && CreateMode::EphemeralSequential.is_sequential());
        assert!(CreateMode::PersistentSequentialWithTtl.is_ttl());
        assert!(CreateMode::PersistentSequentialWithTtl.is_sequential());
        assert!(!CreateMode::PersistentWithTtl.is_sequential());
        assert!(CreateMode::Container.is_container() && !CreateMode::Container.is_ephemeral());
    }

    #[test]
    fn ephemeral_owner_encodings_match_zookeeper() {
        assert_eq!(NodeType::Container.owner() as u64, 0x8000_0000_0000_0000);
        assert_eq!(NodeType::Ttl(1000).owner() as u64, 0xff00_0000_0000_03e8);
        assert_eq!(MAX_TTL_MS, (1 << 40) - 1);
        for t in [
            NodeType::Persistent,
            NodeType::Container,
            NodeType::Ttl(1),
            NodeType::Ttl(MAX_TTL_MS),
            NodeType::Ephemeral(0x0100_0000_0000_0001),
        ] {
            assert_eq!(NodeType::from_owner(t.owner()), t);
        }
        assert!(NodeType::is_valid_session(1));
        assert!(NodeType::is_valid_session(-0x0200_0000_0000_0000));
        assert!(!NodeType::is_valid_session(0));
        assert!(!NodeType::is_valid_session(i64::MIN));
        assert!(!NodeType::is_valid_session(NodeType::Ttl(5).owner()));
    }
}
