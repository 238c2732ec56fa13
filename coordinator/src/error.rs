//! ZooKeeper's error codes (`KeeperException.Code`) as a Rust error.

/// A ZooKeeper error: each variant is one `KeeperException.Code`, and [`KeeperError::code`] is the
/// number that goes into a reply header or a multi `ErrorResult`.
///
/// ```
/// use squall_coordinator::KeeperError;
/// assert_eq!(KeeperError::NoNode.code(), -101);
/// assert_eq!(KeeperError::from_code(-110), Some(KeeperError::NodeExists));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum KeeperError {
    /// -1: an unexpected server error.
    #[error("system error")]
    SystemError,
    /// -2: reported for the ops after the failing one in a rolled-back multi.
    #[error("runtime inconsistency (multi rolled back)")]
    RuntimeInconsistency,
    /// -3: a data inconsistency was found.
    #[error("data inconsistency")]
    DataInconsistency,
    /// -4: the connection to the server was lost.
    #[error("connection loss")]
    ConnectionLoss,
    /// -5: a request or response could not be (de)serialized.
    #[error("marshalling error")]
    MarshallingError,
    /// -6: the operation is not implemented.
    #[error("unimplemented")]
    Unimplemented,
    /// -7: the operation timed out.
    #[error("operation timeout")]
    OperationTimeout,
    /// -8: invalid arguments: a bad path, a reserved path, a bad TTL, data over 1 MiB.
    #[error("bad arguments")]
    BadArguments,
    /// -12: the session is unknown.
    #[error("unknown session")]
    UnknownSession,
    /// -13: no quorum of the new configuration is connected and synced.
    #[error("new config has no quorum")]
    NewConfigNoQuorum,
    /// -14: another reconfiguration is in progress.
    #[error("reconfig in progress")]
    ReconfigInProgress,
    /// -100: generic API error (never returned by itself).
    #[error("API error")]
    ApiError,
    /// -101: the node does not exist.
    #[error("no node")]
    NoNode,
    /// -102: the caller's ids are not allowed by the node's ACL.
    #[error("not authorized")]
    NoAuth,
    /// -103: the expected version does not match.
    #[error("bad version")]
    BadVersion,
    /// -108: ephemeral nodes may not have children.
    #[error("ephemeral nodes may not have children")]
    NoChildrenForEphemerals,
    /// -110: the node already exists.
    #[error("node exists")]
    NodeExists,
    /// -111: the node has children.
    #[error("node not empty")]
    NotEmpty,
    /// -112: the session has expired.
    #[error("session expired")]
    SessionExpired,
    /// -113: invalid callback.
    #[error("invalid callback")]
    InvalidCallback,
    /// -114: the ACL is empty, has an unknown scheme or a malformed id.
    #[error("invalid ACL")]
    InvalidAcl,
    /// -115: authentication failed.
    #[error("authentication failed")]
    AuthFailed,
    /// -118: the session moved to another server.
    #[error("session moved")]
    SessionMoved,
    /// -119: a write was sent to a read-only server.
    #[error("not read-only")]
    NotReadOnly,
    /// -120: an ephemeral was created on a local session.
    #[error("ephemeral on local session")]
    EphemeralOnLocalSession,
    /// -121: removeWatches/checkWatches found no such watch.
    #[error("no watcher")]
    NoWatcher,
    /// -122: the request timed out.
    #[error("request timeout")]
    RequestTimeout,
    /// -123: reconfiguration is disabled.
    #[error("reconfig disabled")]
    ReconfigDisabled,
    /// -124: the session was closed because it requires SASL authentication.
    #[error("session closed: SASL authentication required")]
    SessionClosedRequireSaslAuth,
    /// -125: a hard quota was exceeded.
    #[error("quota exceeded")]
    QuotaExceeded,
    /// -127: the operation was throttled.
    #[error("throttled")]
    Throttled,
}

const CODES: [(KeeperError, i32); 31] = [
    (KeeperError::SystemError, -1),
    (KeeperError::RuntimeInconsistency, -2),
    (KeeperError::DataInconsistency, -3),
    (KeeperError::ConnectionLoss, -4),
    (KeeperError::MarshallingError, -5),
    (KeeperError::Unimplemented, -6),
    (KeeperError::OperationTimeout, -7),
    (KeeperError::BadArguments, -8),
    (KeeperError::UnknownSession, -12),
    (KeeperError::NewConfigNoQuorum, -13),
    (KeeperError::ReconfigInProgress, -14),
    (KeeperError::ApiError, -100),
    (KeeperError::NoNode, -101),
    (KeeperError::NoAuth, -102),
    (KeeperError::BadVersion, -103),
    (KeeperError::NoChildrenForEphemerals, -108),
    (KeeperError::NodeExists, -110),
    (KeeperError::NotEmpty, -111),
    (KeeperError::SessionExpired, -112),
    (KeeperError::InvalidCallback, -113),
    (KeeperError::InvalidAcl, -114),
    (KeeperError::AuthFailed, -115),
    (KeeperError::SessionMoved, -118),
    (KeeperError::NotReadOnly, -119),
    (KeeperError::EphemeralOnLocalSession, -120),
    (KeeperError::NoWatcher, -121),
    (KeeperError::RequestTimeout, -122),
    (KeeperError::ReconfigDisabled, -123),
    (KeeperError::SessionClosedRequireSaslAuth, -124),
    (KeeperError::QuotaExceeded, -125),
    (KeeperError::Throttled, -127),
];

impl KeeperError {
    /// ZooKeeper's numeric code for this error.
    pub fn code(self) -> i32 {
        CODES.iter().find(|(e, _)| *e == self).map_or(-1, |&(_, c)| c)
    }

    /// The error with this code; `None` for 0 (Ok) and for codes ZooKeeper does not define.
    pub fn from_code(code: i32) -> Option<KeeperError> {
        CODES.iter().find(|&&(_, c)| c == code).map(|&(e, _)| e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_keeper_exception() {
        let expected = [
            (KeeperError::SystemError, -1),
            (KeeperError::RuntimeInconsistency, -2),
            (KeeperError::BadArguments, -8),
            (KeeperError::NoNode, -101),
            (KeeperError::NoAuth, -102),
            (KeeperError::BadVersion, -103),
            (KeeperError::NoChildrenForEphemerals, -108),
            (KeeperError::NodeExists, -110),
            (KeeperError::NotEmpty, -111),
            (KeeperError::SessionExpired, -112),
            (KeeperError::InvalidAcl, -114),
            (KeeperError::AuthFailed, -115),
            (KeeperError::NoWatcher, -121),
            (KeeperError::QuotaExceeded, -125),
            (KeeperError::Throttled, -127),
        ];
        for (err, code) in expected {
            assert_eq!(err.code(), code, "{err:?}");
        }
    }

    #[test]
    fn codes_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for (err, code) in CODES {
            assert!(seen.insert(code), "duplicate code {code}");
            assert_eq!(KeeperError::from_code(code), Some(err));
            assert_eq!(err.code(), code);
        }
        assert_eq!(KeeperError::from_code(0), None);
        assert_eq!(KeeperError::from_code(-9), None);
    }
}
