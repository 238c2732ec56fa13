//! The records of `zookeeper.jute` that the server reads or writes, field for field in wire
//! order (`ZK@master:zookeeper-jute/src/main/resources/zookeeper.jute`), plus the jute encoding
//! of the crate's shared [`Stat`], [`Acl`] and [`Id`].
//!
//! Field names are jute's in snake case; where jute calls a field `type`, it is `op`,
//! `event_type`, `auth_type` or `watcher_type` here.

use crate::acl::{Acl, Id};
use crate::jute::{JuteError, JuteWrite, Reader, Record};
use crate::stat::{CreateMode, Stat};
use crate::watch::WatchEvent;

/// Defines a record: a struct with public fields and a [`Record`] impl that reads and writes
/// the fields in declaration order. A decode error names the record and the field.
macro_rules! record {
    ($(#[$meta:meta])* $name:ident { $($(#[$field_meta:meta])* $field:ident : $ty:ty),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Default)]
        pub struct $name {
            $($(#[$field_meta])* pub $field: $ty,)*
        }

        impl Record for $name {
            const MIN_LEN: usize = 0 $(+ <$ty as Record>::MIN_LEN)*;

            fn read(reader: &mut Reader<'_>) -> Result<Self, JuteError> {
                Ok($name {
                    $($field: reader
                        .read::<$ty>()
                        .map_err(|e| e.within(concat!(stringify!($name), ".", stringify!($field))))?,)*
                })
            }

            fn write<W: JuteWrite + ?Sized>(&self, out: &mut W) {
                $(self.$field.write(out);)*
            }
        }
    };
}

/// `org.apache.zookeeper.data.Stat`: 11 fields, 68 bytes.
impl Record for Stat {
    const MIN_LEN: usize = 68;

    fn read(reader: &mut Reader<'_>) -> Result<Self, JuteError> {
        let within = |e: JuteError| e.within("Stat");
        Ok(Stat {
            czxid: reader.read_long().map_err(within)?,
            mzxid: reader.read_long().map_err(within)?,
            ctime: reader.read_long().map_err(within)?,
            mtime: reader.read_long().map_err(within)?,
            version: reader.read_int().map_err(within)?,
            cversion: reader.read_int().map_err(within)?,
            aversion: reader.read_int().map_err(within)?,
            ephemeral_owner: reader.read_long().map_err(within)?,
            data_length: reader.read_int().map_err(within)?,
            num_children: reader.read_int().map_err(within)?,
            pzxid: reader.read_long().map_err(within)?,
        })
    }

    fn write<W: JuteWrite + ?Sized>(&self, out: &mut W) {
        out.write_long(self.czxid);
        out.write_long(self.mzxid);
        out.write_long(self.ctime);
        out.write_long(self.mtime);
        out.write_int(self.version);
        out.write_int(self.cversion);
        out.write_int(self.aversion);
        out.write_long(self.ephemeral_owner);
        out.write_int(self.data_length);
        out.write_int(self.num_children);
        out.write_long(self.pzxid);
    }
}

/// `org.apache.zookeeper.data.Id`: `ustring scheme; ustring id`.
impl Record for Id {
    const MIN_LEN: usize = 8;

    fn read(reader: &mut Reader<'_>) -> Result<Self, JuteError> {
        let scheme = reader.read::<smol_str::SmolStr>().map_err(|e| e.within("Id.scheme"))?;
        let id = reader.read::<smol_str::SmolStr>().map_err(|e| e.within("Id.id"))?;
        Ok(Id { scheme, id })
    }

    fn write<W: JuteWrite + ?Sized>(&self, out: &mut W) {
        out.write_ustring(&self.scheme);
        out.write_ustring(&self.id);
    }
}

/// `org.apache.zookeeper.data.ACL`: `int perms; Id id`.
impl Record for Acl {
    const MIN_LEN: usize = 4 + Id::MIN_LEN;

    fn read(reader: &mut Reader<'_>) -> Result<Self, JuteError> {
        let perms = reader.read_int().map_err(|e| e.within("ACL.perms"))?;
        let id = reader.read::<Id>().map_err(|e| e.within("ACL.id"))?;
        Ok(Acl { perms, id })
    }

    fn write<W: JuteWrite + ?Sized>(&self, out: &mut W) {
        out.write_int(self.perms);
        self.id.write(out);
    }
}

/// The first frame a client sends (no request header). `read_only` is `None` when the client
/// did not send the trailing byte: clients of ZooKeeper ≤ 3.3 omit it, and ZooKeeper then
/// leaves it out of its [`ConnectResponse`] too (`compat/ProtocolManager.java`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnectRequest {
    /// Always 0.
    pub protocol_version: i32,
    /// The last zxid the client saw; a server behind it must refuse the client.
    pub last_zxid_seen: i64,
    /// Requested session timeout, ms.
    pub timeout: i32,
    /// 0 for a new session, else the session to resume.
    pub session_id: i64,
    /// The session password (16 bytes; zeros for a new session).
    pub passwd: Vec<u8>,
    /// Whether the client accepts a read-only server; `None` when the byte was absent.
    pub read_only: Option<bool>,
}

impl ConnectRequest {
    /// Decodes the payload of the first frame. Bytes after `readOnly` are ignored, as ZooKeeper
    /// ignores them.
    pub fn decode(payload: &[u8]) -> Result<ConnectRequest, JuteError> {
        let mut r = Reader::new(payload);
        let within = |field| move |e: JuteError| e.within(field);
        Ok(ConnectRequest {
            protocol_version: r.read_int().map_err(within("ConnectRequest.protocolVersion"))?,
            last_zxid_seen: r.read_long().map_err(within("ConnectRequest.lastZxidSeen"))?,
            timeout: r.read_int().map_err(within("ConnectRequest.timeOut"))?,
            session_id: r.read_long().map_err(within("ConnectRequest.sessionId"))?,
            passwd: r.read::<Vec<u8>>().map_err(within("ConnectRequest.passwd"))?,
            // Absent in requests from ZooKeeper ≤ 3.3 clients: ZooKeeper probes for it the same way.
            read_only: r.read_bool().ok(),
        })
    }

    /// Appends the request as a frame (length prefix included), as a client sends it.
    pub fn encode<W: JuteWrite + ?Sized>(&self, out: &mut W) {
        let mark = out.begin_frame();
        out.write_int(self.protocol_version);
        out.write_long(self.last_zxid_seen);
        out.write_int(self.timeout);
        out.write_long(self.session_id);
        out.write_buffer(&self.passwd);
        if let Some(read_only) = self.read_only {
            out.write_bool(read_only);
        }
        out.end_frame(mark);
    }
}

/// The server's answer to a [`ConnectRequest`]. `read_only` is written only when it is `Some`:
/// build it with [`ConnectResponse::accept`] or [`ConnectResponse::refuse`] to follow the client.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnectResponse {
    /// Always 0.
    pub protocol_version: i32,
    /// The negotiated session timeout, ms; 0 tells the client its session is expired.
    pub timeout: i32,
    /// The session id; 0 when refused.
    pub session_id: i64,
    /// The session password; 16 zero bytes when refused.
    pub passwd: Vec<u8>,
    /// Whether this server is read-only; `None` to omit the byte.
    pub read_only: Option<bool>,
}

impl ConnectResponse {
    /// A session opened or resumed; `read_only` (false: Squall has no read-only mode) is sent
    /// only if the client sent its own.
    pub fn accept(request: &ConnectRequest, timeout: i32, session_id: i64, passwd: Vec<u8>) -> ConnectResponse {
        ConnectResponse {
            protocol_version: 0,
            timeout,
            session_id,
            passwd,
            read_only: request.read_only.map(|_| false),
        }
    }

    /// ZooKeeper's answer to an unknown, expired or wrongly authenticated session: timeout 0,
    /// session 0 and 16 zero bytes (`ZooKeeperServer.finishSessionInit`); the client reports
    /// Expired. The server closes the connection after sending it.
    pub fn refuse(request: &ConnectRequest) -> ConnectResponse {
        ConnectResponse::accept(request, 0, 0, vec![0; 16])
    }

    /// Appends the response as a frame (length prefix included).
    pub fn encode<W: JuteWrite + ?Sized>(&self, out: &mut W) {
        let mark = out.begin_frame();
        out.write_int(self.protocol_version);
        out.write_int(self.timeout);
        out.write_long(self.session_id);
        out.write_buffer(&self.passwd);
        if let Some(read_only) = self.read_only {
            out.write_bool(read_only);
        }
        out.end_frame(mark);
    }

    /// Decodes the payload of a connect response, as a client reads it.
    pub fn decode(payload: &[u8]) -> Result<ConnectResponse, JuteError> {
        let mut r = Reader::new(payload);
        let within = |field| move |e: JuteError| e.within(field);
        Ok(ConnectResponse {
            protocol_version: r.read_int().map_err(within("ConnectResponse.protocolVersion"))?,
            timeout: r.read_int().map_err(within("ConnectResponse.timeOut"))?,
            session_id: r.read_long().map_err(within("ConnectResponse.sessionId"))?,
            passwd: r.read::<Vec<u8>>().map_err(within("ConnectResponse.passwd"))?,
            read_only: r.read_bool().ok(),
        })
    }
}

record! {
    /// Precedes every request after the handshake.
    #[derive(Copy, Hash)]
    RequestHeader {
        /// The client's request id; replies echo it, in request order. Special: -2 ping,
        /// -4 auth, -8 setWatches (see [`super::xid`]).
        xid: i32,
        /// The op code (`type` in jute); see [`super::OpCode`].
        op: i32,
    }
}

record! {
    /// Precedes every reply and notification.
    #[derive(Copy, Hash)]
    ReplyHeader {
        /// The xid of the request answered, or -1 (notification), -2 (ping), -4 (auth), -8 (setWatches).
        xid: i32,
        /// The server's last zxid (for a notification: the zxid that triggered it, -1 before 3.9).
        zxid: i64,
        /// 0, or a [`crate::error::KeeperError`] code; a body follows only when 0.
        err: i32,
    }
}

record! {
    /// Frames each op of a multi request and each result of its reply.
    #[derive(Copy, Hash)]
    MultiHeader {
        /// The op code of what follows (-1 for an error result or the end marker).
        op: i32,
        /// True only on the end marker.
        done: bool,
        /// -1 in requests; in replies 0 or the result's error code.
        err: i32,
    }
}

record! {
    /// Op 100 (xid -4): adds an identity to the session.
    AuthPacket {
        /// Always 0 (`type` in jute).
        auth_type: i32,
        /// The scheme, e.g. `digest`.
        scheme: String,
        /// The credentials, e.g. `user:password`.
        auth: Vec<u8>,
    }
}

record! {
    /// The body of a notification (xid -1).
    WatcherEvent {
        /// See [`event_type`] (`type` in jute).
        event_type: i32,
        /// See [`keeper_state`]; always SyncConnected for server-sent events.
        state: i32,
        /// The znode, as the client named it (before any chroot is stripped).
        path: String,
    }
}

impl WatcherEvent {
    /// The event a server sends for a znode change (`state` = SyncConnected); `event_type` is
    /// one of [`event_type`], e.g. `crate::watch::EventType::code`.
    pub fn new(event_type: i32, path: impl Into<String>) -> WatcherEvent {
        WatcherEvent { event_type, state: keeper_state::SYNC_CONNECTED, path: path.into() }
    }
}

/// The notification body for an event of the tree; send it with the event's zxid
/// ([`super::encode_notification`]).
impl From<&WatchEvent> for WatcherEvent {
    fn from(event: &WatchEvent) -> WatcherEvent {
        WatcherEvent::new(event.kind.code(), event.path.clone())
    }
}

/// `Watcher.Event.EventType` numbers.
pub mod event_type {
    /// A connection state change (never sent by a server).
    pub const NONE: i32 = -1;
    /// The node was created.
    pub const NODE_CREATED: i32 = 1;
    /// The node was deleted.
    pub const NODE_DELETED: i32 = 2;
    /// The node's data changed.
    pub const NODE_DATA_CHANGED: i32 = 3;
    /// A child was created or deleted.
    pub const NODE_CHILDREN_CHANGED: i32 = 4;
    /// A data watch was removed (client-side event).
    pub const DATA_WATCH_REMOVED: i32 = 5;
    /// A child watch was removed (client-side event).
    pub const CHILD_WATCH_REMOVED: i32 = 6;
    /// A persistent watch was removed (client-side event).
    pub const PERSISTENT_WATCH_REMOVED: i32 = 7;
}

/// `Watcher.Event.KeeperState` numbers.
pub mod keeper_state {
    /// The client is disconnected.
    pub const DISCONNECTED: i32 = 0;
    /// The client is connected: the state of every server-sent event.
    pub const SYNC_CONNECTED: i32 = 3;
    /// Authentication failed.
    pub const AUTH_FAILED: i32 = 4;
    /// Connected to a read-only server.
    pub const CONNECTED_READ_ONLY: i32 = 5;
    /// SASL authentication succeeded.
    pub const SASL_AUTHENTICATED: i32 = 6;
    /// The session expired.
    pub const EXPIRED: i32 = -112;
    /// The client closed the session (client-side only).
    pub const CLOSED: i32 = 7;
}

/// `Watcher.WatcherType` numbers, the `type` of checkWatches and removeWatches
/// (`crate::watch::WatcherType::from_code` decodes them).
pub mod watcher_type {
    /// One-shot child watches.
    pub const CHILDREN: i32 = 1;
    /// One-shot data and exist watches.
    pub const DATA: i32 = 2;
    /// Every watch.
    pub const ANY: i32 = 3;
    /// Persistent watches.
    pub const PERSISTENT: i32 = 4;
    /// Persistent-recursive watches.
    pub const PERSISTENT_RECURSIVE: i32 = 5;
}

/// `ZooDefs.AddWatchModes`: the `mode` of addWatch.
pub mod add_watch_mode {
    /// A persistent watch on the node.
    pub const PERSISTENT: i32 = 0;
    /// A persistent watch on the node and every descendant.
    pub const PERSISTENT_RECURSIVE: i32 = 1;
}

record! {
    /// Ops 1, 15 and 19: create, create2, createContainer.
    CreateRequest {
        /// The node to create (the prefix, for sequential modes).
        path: String,
        /// Its data (a null buffer reads as empty).
        data: Vec<u8>,
        /// Its ACL.
        acl: Vec<Acl>,
        /// The [`CreateMode`] flag, kept raw: ZooKeeper answers an unknown flag with
        /// BadArguments, not a closed connection (see [`CreateRequest::mode`]).
        flags: i32,
    }
}

impl CreateRequest {
    /// The create mode, `None` for an unknown flag (answer BadArguments).
    pub fn mode(&self) -> Option<CreateMode> {
        CreateMode::from_flag(self.flags)
    }
}

record! {
    /// Op 21: createTTL.
    CreateTtlRequest {
        /// The node to create.
        path: String,
        /// Its data.
        data: Vec<u8>,
        /// Its ACL.
        acl: Vec<Acl>,
        /// The [`CreateMode`] flag (5 or 6 for TTL modes).
        flags: i32,
        /// Time to live, ms.
        ttl: i64,
    }
}

impl CreateTtlRequest {
    /// The create mode, `None` for an unknown flag (answer BadArguments).
    pub fn mode(&self) -> Option<CreateMode> {
        CreateMode::from_flag(self.flags)
    }
}

record! {
    /// Op 2: delete.
    DeleteRequest {
        /// The node.
        path: String,
        /// The expected data version; -1 for any.
        version: i32,
    }
}

record! {
    /// Op 3: exists.
    ExistsRequest {
        /// The node.
        path: String,
        /// Whether to set a data (exist) watch, also when the node is missing.
        watch: bool,
    }
}

record! {
    /// Op 4: getData (also inside multiRead, where `watch` is ignored).
    GetDataRequest {
        /// The node.
        path: String,
        /// Whether to set a data watch.
        watch: bool,
    }
}

record! {
    /// Op 5: setData.
    SetDataRequest {
        /// The node.
        path: String,
        /// The new data.
        data: Vec<u8>,
        /// The expected data version; -1 for any.
        version: i32,
    }
}

record! {
    /// Op 6: getACL.
    GetAclRequest {
        /// The node.
        path: String,
    }
}

record! {
    /// Op 7: setACL.
    SetAclRequest {
        /// The node.
        path: String,
        /// The new ACL.
        acl: Vec<Acl>,
        /// The expected ACL version (aversion); -1 for any.
        version: i32,
    }
}

record! {
    /// Ops 8 and 12: getChildren and getChildren2 (jute's `GetChildren2Request` has the same
    /// fields); also inside multiRead, where `watch` is ignored.
    GetChildrenRequest {
        /// The node.
        path: String,
        /// Whether to set a child watch.
        watch: bool,
    }
}

record! {
    /// Op 9: sync.
    SyncRequest {
        /// The node (answered back as is).
        path: String,
    }
}

record! {
    /// Op 13: check, valid only inside a multi.
    CheckVersionRequest {
        /// The node.
        path: String,
        /// The expected data version; -1 for any (existence only).
        version: i32,
    }
}

record! {
    /// Ops 17 and 18: checkWatches and removeWatches (jute's `CheckWatchesRequest` and
    /// `RemoveWatchesRequest` have the same fields).
    WatchesRequest {
        /// The node.
        path: String,
        /// See [`watcher_type`] (`type` in jute).
        watcher_type: i32,
    }
}

record! {
    /// Op 101 (xid -8): the one-shot watches a reconnecting client had.
    SetWatches {
        /// The last zxid the client saw; changes after it fire at once.
        relative_zxid: i64,
        /// Data watches (getData).
        data_watches: Vec<String>,
        /// Exist watches (exists on a missing node).
        exist_watches: Vec<String>,
        /// Child watches (getChildren).
        child_watches: Vec<String>,
    }
}

record! {
    /// Op 105 (xid -8): [`SetWatches`] plus persistent watches; the Java client sends it only
    /// when it has persistent watches.
    SetWatches2 {
        /// The last zxid the client saw.
        relative_zxid: i64,
        /// Data watches.
        data_watches: Vec<String>,
        /// Exist watches.
        exist_watches: Vec<String>,
        /// Child watches.
        child_watches: Vec<String>,
        /// Persistent watches (addWatch mode 0).
        persistent_watches: Vec<String>,
        /// Persistent-recursive watches (addWatch mode 1).
        persistent_recursive_watches: Vec<String>,
    }
}

impl From<SetWatches> for SetWatches2 {
    fn from(w: SetWatches) -> SetWatches2 {
        SetWatches2 {
            relative_zxid: w.relative_zxid,
            data_watches: w.data_watches,
            exist_watches: w.exist_watches,
            child_watches: w.child_watches,
            persistent_watches: Vec::new(),
            persistent_recursive_watches: Vec::new(),
        }
    }
}

record! {
    /// Op 103: getEphemerals.
    GetEphemeralsRequest {
        /// Only ephemerals whose path starts with this; null, empty or `/` for all of them
        /// (see [`GetEphemeralsRequest::prefix`]).
        prefix_path: Option<String>,
    }
}

impl GetEphemeralsRequest {
    /// The prefix to filter by, `None` for every ephemeral of the session (a null, blank or `/`
    /// prefix, as `FinalRequestProcessor` reads it).
    pub fn prefix(&self) -> Option<&str> {
        match self.prefix_path.as_deref().map(str::trim) {
            None | Some("") | Some("/") => None,
            Some(_) => self.prefix_path.as_deref(),
        }
    }
}

record! {
    /// Op 104: getAllChildrenNumber.
    GetAllChildrenNumberRequest {
        /// The node whose descendants to count.
        path: String,
    }
}

record! {
    /// Op 106: addWatch.
    AddWatchRequest {
        /// The node.
        path: String,
        /// See [`add_watch_mode`].
        mode: i32,
    }
}

record! {
    /// Op 16: reconfig. Its strings may be null (the Java client sends null for "no change").
    ReconfigRequest {
        /// Servers to add, comma separated.
        joining_servers: Option<String>,
        /// Server ids to remove, comma separated.
        leaving_servers: Option<String>,
        /// A whole new membership (non-incremental reconfig).
        new_members: Option<String>,
        /// The expected current config version; -1 for any.
        cur_config_id: i64,
    }
}

record! {
    /// Op 102: one SASL round (jute's `GetSASLRequest`).
    SaslRequest {
        /// The client's token.
        token: Vec<u8>,
    }
}

record! {
    /// One identity in a whoAmI reply.
    ClientInfo {
        /// The scheme, e.g. `digest` or `ip`.
        auth_scheme: String,
        /// The user, e.g. `alice` or `127.0.0.1`.
        user: String,
    }
}
