//! The ZooKeeper client protocol as pure encode/decode: no sockets, no session state.
//!
//! A connection carries 4-byte big-endian length-prefixed frames ([`crate::jute::split_frame`]).
//! The first 4 bytes may instead spell a four-letter word ([`connection_start`]). Then:
//!
//! 1. the client sends a [`ConnectRequest`] ([`ConnectRequest::decode`]) and the server
//!    answers a [`ConnectResponse`] ([`ConnectResponse::encode`]);
//! 2. each later client frame is a [`RequestHeader`] and a body: [`decode_request`] gives the
//!    header and a [`Request`], one variant per op;
//! 3. the server answers each request, in request order, with a [`ReplyHeader`] and, when the
//!    err is 0, a body: [`encode_reply`] writes both from a [`Response`] or a [`KeeperError`];
//!    it sends watch notifications ([`encode_notification`], xid -1) and ping replies
//!    ([`encode_ping_reply`], xid -2) between replies.
//!
//! ```
//! use squall_coordinator::jute::split_frame;
//! use squall_coordinator::proto::{self, records::GetDataRequest, Request, Response};
//! use squall_coordinator::stat::Stat;
//!
//! // A client's getData("/a", watch) frame, as it would arrive.
//! let mut wire = Vec::new();
//! proto::encode_request(&mut wire, 7, &Request::GetData(GetDataRequest { path: "/a".into(), watch: true }));
//!
//! let (frame, used) = split_frame(&wire, squall_coordinator::jute::JUTE_MAX_BUFFER).unwrap().unwrap();
//! assert_eq!(used, wire.len());
//! let (header, request) = proto::decode_request(frame).unwrap();
//! assert_eq!(header.xid, 7);
//! assert!(matches!(&request, Request::GetData(r) if r.path == "/a" && r.watch));
//!
//! let mut reply = Vec::new();
//! let response = Response::GetData { data: b"hi".to_vec(), stat: Stat::default() };
//! proto::encode_reply(&mut reply, header.xid, 42, Ok(&response));
//! assert_eq!(reply.len(), 4 + 16 + 6 + 68);
//! ```
//!
//! Decoding matches ZooKeeper where it matters to clients: trailing bytes after a body are
//! ignored, as ZooKeeper ignores them; a null data buffer reads as empty; unknown ops decode as
//! [`Request::Unsupported`] (ZooKeeper answers them Unimplemented); an unknown create flag
//! stays raw in a plain create (answered BadArguments) but is a decode error inside a multi
//! (answered MarshallingError), as in ZooKeeper. Where ZooKeeper answers a malformed body with
//! MarshallingError, [`DecodeError::header`] gives the xid to answer.

mod four_letter;
mod multi;
pub mod records;

#[cfg(test)]
mod tests;

pub use four_letter::{ConnectionStart, FourLetterWord, connection_start};
pub use multi::{MultiOp, MultiReadOp, MultiReadResult, MultiResult, rollback};
pub use records::{ConnectRequest, ConnectResponse, ReplyHeader, RequestHeader, WatcherEvent};

use records::{
    AddWatchRequest, AuthPacket, ClientInfo, CreateRequest, CreateTtlRequest, DeleteRequest, ExistsRequest,
    GetAclRequest, GetAllChildrenNumberRequest, GetChildrenRequest, GetDataRequest, GetEphemeralsRequest,
    ReconfigRequest, SaslRequest, SetAclRequest, SetDataRequest, SetWatches, SetWatches2, SyncRequest, WatchesRequest,
};

use crate::acl::Acl;
use crate::error::KeeperError;
use crate::jute::{JuteError, JuteWrite, Reader, Record};
use crate::stat::Stat;

/// The special xids of `ClientCnxn.java`.
pub mod xid {
    /// A watch notification (server to client).
    pub const NOTIFICATION: i32 = -1;
    /// A ping and its reply.
    pub const PING: i32 = -2;
    /// An auth packet and its reply.
    pub const AUTH: i32 = -4;
    /// A setWatches/setWatches2 and its reply.
    pub const SET_WATCHES: i32 = -8;
}

/// ZooKeeper's op codes (`ZooDefs.OpCode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum OpCode {
    /// 0: never sent by a client.
    Notification = 0,
    /// 1.
    Create = 1,
    /// 2.
    Delete = 2,
    /// 3.
    Exists = 3,
    /// 4.
    GetData = 4,
    /// 5.
    SetData = 5,
    /// 6.
    GetAcl = 6,
    /// 7.
    SetAcl = 7,
    /// 8.
    GetChildren = 8,
    /// 9.
    Sync = 9,
    /// 11 (xid -2).
    Ping = 11,
    /// 12.
    GetChildren2 = 12,
    /// 13: only inside a multi.
    Check = 13,
    /// 14.
    Multi = 14,
    /// 15.
    Create2 = 15,
    /// 16.
    Reconfig = 16,
    /// 17.
    CheckWatches = 17,
    /// 18.
    RemoveWatches = 18,
    /// 19.
    CreateContainer = 19,
    /// 20: internal to ZooKeeper (the container reaper).
    DeleteContainer = 20,
    /// 21.
    CreateTtl = 21,
    /// 22.
    MultiRead = 22,
    /// 100 (xid -4).
    Auth = 100,
    /// 101 (xid -8).
    SetWatches = 101,
    /// 102.
    Sasl = 102,
    /// 103.
    GetEphemerals = 103,
    /// 104.
    GetAllChildrenNumber = 104,
    /// 105 (xid -8).
    SetWatches2 = 105,
    /// 106.
    AddWatch = 106,
    /// 107.
    WhoAmI = 107,
    /// -10: internal to ZooKeeper (the handshake is a `ConnectRequest`).
    CreateSession = -10,
    /// -11.
    CloseSession = -11,
    /// -1: an error result inside a multi reply.
    Error = -1,
}

const OP_CODES: [OpCode; 33] = [
    OpCode::Notification,
    OpCode::Create,
    OpCode::Delete,
    OpCode::Exists,
    OpCode::GetData,
    OpCode::SetData,
    OpCode::GetAcl,
    OpCode::SetAcl,
    OpCode::GetChildren,
    OpCode::Sync,
    OpCode::Ping,
    OpCode::GetChildren2,
    OpCode::Check,
    OpCode::Multi,
    OpCode::Create2,
    OpCode::Reconfig,
    OpCode::CheckWatches,
    OpCode::RemoveWatches,
    OpCode::CreateContainer,
    OpCode::DeleteContainer,
    OpCode::CreateTtl,
    OpCode::MultiRead,
    OpCode::Auth,
    OpCode::SetWatches,
    OpCode::Sasl,
    OpCode::GetEphemerals,
    OpCode::GetAllChildrenNumber,
    OpCode::SetWatches2,
    OpCode::AddWatch,
    OpCode::WhoAmI,
    OpCode::CreateSession,
    OpCode::CloseSession,
    OpCode::Error,
];

impl OpCode {
    /// The wire number.
    pub fn code(self) -> i32 {
        self as i32
    }

    /// The op for a wire number, `None` for numbers ZooKeeper does not define.
    pub fn from_code(code: i32) -> Option<OpCode> {
        OP_CODES.iter().copied().find(|op| op.code() == code)
    }
}

/// A decoded client request: one variant per op, carrying its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// 1 → [`Response::Create`].
    Create(CreateRequest),
    /// 15 → [`Response::Create2`].
    Create2(CreateRequest),
    /// 19 → [`Response::Create2`].
    CreateContainer(CreateRequest),
    /// 21 → [`Response::Create2`].
    CreateTtl(CreateTtlRequest),
    /// 2 → [`Response::Empty`].
    Delete(DeleteRequest),
    /// 3 → [`Response::Stat`].
    Exists(ExistsRequest),
    /// 4 → [`Response::GetData`].
    GetData(GetDataRequest),
    /// 5 → [`Response::Stat`].
    SetData(SetDataRequest),
    /// 6 → [`Response::GetAcl`].
    GetAcl(GetAclRequest),
    /// 7 → [`Response::Stat`].
    SetAcl(SetAclRequest),
    /// 8 → [`Response::GetChildren`].
    GetChildren(GetChildrenRequest),
    /// 12 → [`Response::GetChildren2`].
    GetChildren2(GetChildrenRequest),
    /// 9 → [`Response::Sync`].
    Sync(SyncRequest),
    /// 11, no body → [`encode_ping_reply`].
    Ping,
    /// 14 → [`Response::Multi`].
    Multi(Vec<MultiOp>),
    /// 22 → [`Response::MultiRead`].
    MultiRead(Vec<MultiReadOp>),
    /// 16 → [`Response::GetData`] (the new config).
    Reconfig(ReconfigRequest),
    /// 17 → [`Response::Empty`] or NoWatcher.
    CheckWatches(WatchesRequest),
    /// 18 → [`Response::Empty`] or NoWatcher.
    RemoveWatches(WatchesRequest),
    /// 100 → [`Response::Empty`] (xid -4), or AuthFailed and a closed connection.
    Auth(AuthPacket),
    /// 101 → [`Response::Empty`] (xid -8).
    SetWatches(SetWatches),
    /// 105 → [`Response::Empty`] (xid -8).
    SetWatches2(SetWatches2),
    /// 102 → [`Response::Sasl`].
    Sasl(SaslRequest),
    /// 103 → [`Response::GetEphemerals`].
    GetEphemerals(GetEphemeralsRequest),
    /// 104 → [`Response::GetAllChildrenNumber`].
    GetAllChildrenNumber(GetAllChildrenNumberRequest),
    /// 106 → [`Response::AddWatch`].
    AddWatch(AddWatchRequest),
    /// 107, no body → [`Response::WhoAmI`].
    WhoAmI,
    /// -11, no body → [`Response::Empty`], then the server closes the connection.
    CloseSession,
    /// An op a client may not send (0, 13 outside a multi, 20, -10, -1) or that ZooKeeper
    /// does not define; its body is not read. ZooKeeper answers Unimplemented
    /// (`UnimplementedRequestProcessor`).
    Unsupported(i32),
}

impl Request {
    /// The op code this request is sent with.
    pub fn op(&self) -> i32 {
        let op = match self {
            Request::Create(_) => OpCode::Create,
            Request::Create2(_) => OpCode::Create2,
            Request::CreateContainer(_) => OpCode::CreateContainer,
            Request::CreateTtl(_) => OpCode::CreateTtl,
            Request::Delete(_) => OpCode::Delete,
            Request::Exists(_) => OpCode::Exists,
            Request::GetData(_) => OpCode::GetData,
            Request::SetData(_) => OpCode::SetData,
            Request::GetAcl(_) => OpCode::GetAcl,
            Request::SetAcl(_) => OpCode::SetAcl,
            Request::GetChildren(_) => OpCode::GetChildren,
            Request::GetChildren2(_) => OpCode::GetChildren2,
            Request::Sync(_) => OpCode::Sync,
            Request::Ping => OpCode::Ping,
            Request::Multi(_) => OpCode::Multi,
            Request::MultiRead(_) => OpCode::MultiRead,
            Request::Reconfig(_) => OpCode::Reconfig,
            Request::CheckWatches(_) => OpCode::CheckWatches,
            Request::RemoveWatches(_) => OpCode::RemoveWatches,
            Request::Auth(_) => OpCode::Auth,
            Request::SetWatches(_) => OpCode::SetWatches,
            Request::SetWatches2(_) => OpCode::SetWatches2,
            Request::Sasl(_) => OpCode::Sasl,
            Request::GetEphemerals(_) => OpCode::GetEphemerals,
            Request::GetAllChildrenNumber(_) => OpCode::GetAllChildrenNumber,
            Request::AddWatch(_) => OpCode::AddWatch,
            Request::WhoAmI => OpCode::WhoAmI,
            Request::CloseSession => OpCode::CloseSession,
            Request::Unsupported(op) => return *op,
        };
        op.code()
    }

    fn read_body(op: i32, r: &mut Reader<'_>) -> Result<Request, JuteError> {
        let Some(code) = OpCode::from_code(op) else { return Ok(Request::Unsupported(op)) };
        Ok(match code {
            OpCode::Create => Request::Create(r.read()?),
            OpCode::Create2 => Request::Create2(r.read()?),
            OpCode::CreateContainer => Request::CreateContainer(r.read()?),
            OpCode::CreateTtl => Request::CreateTtl(r.read()?),
            OpCode::Delete => Request::Delete(r.read()?),
            OpCode::Exists => Request::Exists(r.read()?),
            OpCode::GetData => Request::GetData(r.read()?),
            OpCode::SetData => Request::SetData(r.read()?),
            OpCode::GetAcl => Request::GetAcl(r.read()?),
            OpCode::SetAcl => Request::SetAcl(r.read()?),
            OpCode::GetChildren => Request::GetChildren(r.read()?),
            OpCode::GetChildren2 => Request::GetChildren2(r.read()?),
            OpCode::Sync => Request::Sync(r.read()?),
            OpCode::Ping => Request::Ping,
            OpCode::Multi => Request::Multi(multi::read_ops(r)?),
            OpCode::MultiRead => Request::MultiRead(multi::read_read_ops(r)?),
            OpCode::Reconfig => Request::Reconfig(r.read()?),
            OpCode::CheckWatches => Request::CheckWatches(r.read()?),
            OpCode::RemoveWatches => Request::RemoveWatches(r.read()?),
            OpCode::Auth => Request::Auth(r.read()?),
            OpCode::SetWatches => Request::SetWatches(r.read()?),
            OpCode::SetWatches2 => Request::SetWatches2(r.read()?),
            OpCode::Sasl => Request::Sasl(r.read()?),
            OpCode::GetEphemerals => Request::GetEphemerals(r.read()?),
            OpCode::GetAllChildrenNumber => Request::GetAllChildrenNumber(r.read()?),
            OpCode::AddWatch => Request::AddWatch(r.read()?),
            OpCode::WhoAmI => Request::WhoAmI,
            OpCode::CloseSession => Request::CloseSession,
            OpCode::Notification | OpCode::Check | OpCode::DeleteContainer | OpCode::CreateSession | OpCode::Error => {
                Request::Unsupported(op)
            }
        })
    }

    fn write_body<W: JuteWrite + ?Sized>(&self, out: &mut W) {
        match self {
            Request::Create(b) | Request::Create2(b) | Request::CreateContainer(b) => b.write(out),
            Request::CreateTtl(b) => b.write(out),
            Request::Delete(b) => b.write(out),
            Request::Exists(b) => b.write(out),
            Request::GetData(b) => b.write(out),
            Request::SetData(b) => b.write(out),
            Request::GetAcl(b) => b.write(out),
            Request::SetAcl(b) => b.write(out),
            Request::GetChildren(b) | Request::GetChildren2(b) => b.write(out),
            Request::Sync(b) => b.write(out),
            Request::Multi(ops) => multi::write_ops(ops, out),
            Request::MultiRead(ops) => multi::write_read_ops(ops, out),
            Request::Reconfig(b) => b.write(out),
            Request::CheckWatches(b) | Request::RemoveWatches(b) => b.write(out),
            Request::Auth(b) => b.write(out),
            Request::SetWatches(b) => b.write(out),
            Request::SetWatches2(b) => b.write(out),
            Request::Sasl(b) => b.write(out),
            Request::GetEphemerals(b) => b.write(out),
            Request::GetAllChildrenNumber(b) => b.write(out),
            Request::AddWatch(b) => b.write(out),
            Request::Ping | Request::WhoAmI | Request::CloseSession | Request::Unsupported(_) => {}
        }
    }
}

/// Why a request frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", describe(.header, .error))]
pub struct DecodeError {
    /// The request header, when it could be read: ZooKeeper answers a malformed body with a
    /// MarshallingError reply to this xid; without a header, only closing the connection is left.
    pub header: Option<RequestHeader>,
    /// What was wrong.
    pub error: JuteError,
}

fn describe(header: &Option<RequestHeader>, error: &JuteError) -> String {
    match header {
        None => format!("malformed request header: {error}"),
        Some(h) => format!("malformed request body (xid {}, op {}): {error}", h.xid, h.op),
    }
}

/// Decodes a request frame's payload (after the length prefix) into its header and body.
pub fn decode_request(frame: &[u8]) -> Result<(RequestHeader, Request), DecodeError> {
    let mut r = Reader::new(frame);
    let header: RequestHeader = r.read().map_err(|error| DecodeError { header: None, error })?;
    let request = Request::read_body(header.op, &mut r).map_err(|error| DecodeError { header: Some(header), error })?;
    Ok((header, request))
}

/// Appends a request frame (length prefix, header, body), as a client sends it.
pub fn encode_request<W: JuteWrite + ?Sized>(out: &mut W, xid: i32, request: &Request) {
    let mark = out.begin_frame();
    RequestHeader { xid, op: request.op() }.write(out);
    request.write_body(out);
    out.end_frame(mark);
}

/// The body of a successful reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// No body: delete, setWatches(2), checkWatches, removeWatches, auth, closeSession.
    Empty,
    /// create: `CreateResponse`.
    Create {
        /// The created path (with its sequence suffix).
        path: String,
    },
    /// create2, createContainer, createTTL: `Create2Response`.
    Create2 {
        /// The created path.
        path: String,
        /// Its stat.
        stat: Stat,
    },
    /// exists, setData, setACL: `ExistsResponse`, `SetDataResponse`, `SetACLResponse`.
    Stat(Stat),
    /// getData, reconfig: `GetDataResponse`.
    GetData {
        /// The data.
        data: Vec<u8>,
        /// The stat.
        stat: Stat,
    },
    /// getACL: `GetACLResponse`.
    GetAcl {
        /// The ACL.
        acl: Vec<Acl>,
        /// The stat.
        stat: Stat,
    },
    /// getChildren: `GetChildrenResponse`.
    GetChildren {
        /// The children's names.
        children: Vec<String>,
    },
    /// getChildren2: `GetChildren2Response`.
    GetChildren2 {
        /// The children's names.
        children: Vec<String>,
        /// The parent's stat.
        stat: Stat,
    },
    /// sync: `SyncResponse`.
    Sync {
        /// The path, as requested.
        path: String,
    },
    /// multi: one result per op (see [`rollback`] for a failed multi).
    Multi(Vec<MultiResult>),
    /// multiRead: one result per op.
    MultiRead(Vec<MultiReadResult>),
    /// sasl: `SetSASLResponse`.
    Sasl {
        /// The server's token.
        token: Vec<u8>,
    },
    /// getEphemerals: `GetEphemeralsResponse`.
    GetEphemerals {
        /// The session's ephemeral paths.
        ephemerals: Vec<String>,
    },
    /// getAllChildrenNumber: `GetAllChildrenNumberResponse`.
    GetAllChildrenNumber {
        /// The number of descendants.
        total_number: i32,
    },
    /// addWatch: ZooKeeper sends `ErrorResponse{err: 0}`, and the Java client reads it.
    AddWatch,
    /// whoAmI: `WhoAmIResponse`.
    WhoAmI {
        /// The session's identities.
        client_info: Vec<ClientInfo>,
    },
}

impl Response {
    /// Whether this is the response ZooKeeper sends for `op` (for a `debug_assert!` in the
    /// server: a wrong body breaks the client's parsing of the stream).
    pub fn answers(&self, op: i32) -> bool {
        match OpCode::from_code(op) {
            Some(code) => std::mem::discriminant(self) == std::mem::discriminant(&Response::template(code)),
            None => matches!(self, Response::Empty),
        }
    }

    /// An instance of the variant that answers `op` (fields are placeholders).
    fn template(op: OpCode) -> Response {
        let stat = Stat::default();
        match op {
            OpCode::Create => Response::Create { path: String::new() },
            OpCode::Create2 | OpCode::CreateContainer | OpCode::CreateTtl => {
                Response::Create2 { path: String::new(), stat }
            }
            OpCode::Exists | OpCode::SetData | OpCode::SetAcl => Response::Stat(stat),
            OpCode::GetData | OpCode::Reconfig => Response::GetData { data: Vec::new(), stat },
            OpCode::GetAcl => Response::GetAcl { acl: Vec::new(), stat },
            OpCode::GetChildren => Response::GetChildren { children: Vec::new() },
            OpCode::GetChildren2 => Response::GetChildren2 { children: Vec::new(), stat },
            OpCode::Sync => Response::Sync { path: String::new() },
            OpCode::Multi => Response::Multi(Vec::new()),
            OpCode::MultiRead => Response::MultiRead(Vec::new()),
            OpCode::Sasl => Response::Sasl { token: Vec::new() },
            OpCode::GetEphemerals => Response::GetEphemerals { ephemerals: Vec::new() },
            OpCode::GetAllChildrenNumber => Response::GetAllChildrenNumber { total_number: 0 },
            OpCode::AddWatch => Response::AddWatch,
            OpCode::WhoAmI => Response::WhoAmI { client_info: Vec::new() },
            OpCode::Notification
            | OpCode::Delete
            | OpCode::Ping
            | OpCode::Check
            | OpCode::CheckWatches
            | OpCode::RemoveWatches
            | OpCode::DeleteContainer
            | OpCode::Auth
            | OpCode::SetWatches
            | OpCode::SetWatches2
            | OpCode::CreateSession
            | OpCode::CloseSession
            | OpCode::Error => Response::Empty,
        }
    }

    fn write_body<W: JuteWrite + ?Sized>(&self, out: &mut W) {
        match self {
            Response::Empty => {}
            Response::Create { path } | Response::Sync { path } => out.write_ustring(path),
            Response::Create2 { path, stat } => {
                out.write_ustring(path);
                stat.write(out);
            }
            Response::Stat(stat) => stat.write(out),
            Response::GetData { data, stat } => {
                out.write_buffer(data);
                stat.write(out);
            }
            Response::GetAcl { acl, stat } => {
                out.write_vector(acl);
                stat.write(out);
            }
            Response::GetChildren { children } => out.write_vector(children),
            Response::GetChildren2 { children, stat } => {
                out.write_vector(children);
                stat.write(out);
            }
            Response::Multi(results) => multi::write_results(results, out),
            Response::MultiRead(results) => multi::write_read_results(results, out),
            Response::Sasl { token } => out.write_buffer(token),
            Response::GetEphemerals { ephemerals } => out.write_vector(ephemerals),
            Response::GetAllChildrenNumber { total_number } => out.write_int(*total_number),
            Response::AddWatch => out.write_int(0),
            Response::WhoAmI { client_info } => out.write_vector(client_info),
        }
    }

    fn read_body(op: i32, r: &mut Reader<'_>) -> Result<Response, JuteError> {
        let Some(code) = OpCode::from_code(op) else { return Ok(Response::Empty) };
        Ok(match Response::template(code) {
            Response::Empty => Response::Empty,
            Response::Create { .. } => Response::Create { path: r.read()? },
            Response::Create2 { .. } => Response::Create2 { path: r.read()?, stat: r.read()? },
            Response::Stat(_) => Response::Stat(r.read()?),
            Response::GetData { .. } => Response::GetData { data: r.read()?, stat: r.read()? },
            Response::GetAcl { .. } => Response::GetAcl { acl: r.read()?, stat: r.read()? },
            Response::GetChildren { .. } => Response::GetChildren { children: r.read()? },
            Response::GetChildren2 { .. } => Response::GetChildren2 { children: r.read()?, stat: r.read()? },
            Response::Sync { .. } => Response::Sync { path: r.read()? },
            Response::Multi(_) => Response::Multi(multi::read_results(r)?),
            Response::MultiRead(_) => Response::MultiRead(multi::read_read_results(r)?),
            Response::Sasl { .. } => Response::Sasl { token: r.read()? },
            Response::GetEphemerals { .. } => Response::GetEphemerals { ephemerals: r.read()? },
            Response::GetAllChildrenNumber { .. } => Response::GetAllChildrenNumber { total_number: r.read_int()? },
            Response::AddWatch => {
                r.read_int()?;
                Response::AddWatch
            }
            Response::WhoAmI { .. } => Response::WhoAmI { client_info: r.read()? },
        })
    }
}

/// Appends a reply frame: `ReplyHeader{xid, zxid, err}` and, on success, the body. A
/// [`KeeperError`] goes in the header alone, as ZooKeeper sends it (a failed multi is a success
/// with error results: see [`rollback`]).
pub fn encode_reply<W: JuteWrite + ?Sized>(out: &mut W, xid: i32, zxid: i64, result: Result<&Response, KeeperError>) {
    let mark = out.begin_frame();
    match result {
        Ok(response) => {
            ReplyHeader { xid, zxid, err: 0 }.write(out);
            response.write_body(out);
        }
        Err(err) => ReplyHeader { xid, zxid, err: err.code() }.write(out),
    }
    out.end_frame(mark);
}

/// Appends a watch notification frame: `ReplyHeader{-1, zxid, 0}` and the [`WatcherEvent`].
/// ZooKeeper 3.9 sends the zxid of the change that fired the watch (earlier versions -1).
pub fn encode_notification<W: JuteWrite + ?Sized>(out: &mut W, zxid: i64, event: &WatcherEvent) {
    let mark = out.begin_frame();
    ReplyHeader { xid: xid::NOTIFICATION, zxid, err: 0 }.write(out);
    event.write(out);
    out.end_frame(mark);
}

/// Appends a ping reply frame: `ReplyHeader{-2, zxid, 0}` with the server's last zxid.
pub fn encode_ping_reply<W: JuteWrite + ?Sized>(out: &mut W, zxid: i64) {
    encode_reply(out, xid::PING, zxid, Ok(&Response::Empty));
}

/// Decodes a reply frame's payload as a client does, knowing the op it answers: the header and,
/// when its err is 0, the body. Notifications (xid -1) go to [`decode_notification`].
pub fn decode_reply(frame: &[u8], op: i32) -> Result<(ReplyHeader, Option<Response>), JuteError> {
    let mut r = Reader::new(frame);
    let header: ReplyHeader = r.read()?;
    if header.err != 0 {
        return Ok((header, None));
    }
    let response = Response::read_body(op, &mut r).map_err(|e| e.within("reply body"))?;
    Ok((header, Some(response)))
}

/// Decodes a notification frame's payload: the header (xid -1) and the event.
pub fn decode_notification(frame: &[u8]) -> Result<(ReplyHeader, WatcherEvent), JuteError> {
    let mut r = Reader::new(frame);
    let header: ReplyHeader = r.read()?;
    if header.xid != xid::NOTIFICATION {
        return Err(JuteError::invalid(format!("xid {} is not a notification", header.xid)));
    }
    Ok((header, r.read()?))
}
