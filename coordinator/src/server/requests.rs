//! One client request in, one reply frame out: reads from this replica's state, writes through
//! Raft, watches in the replica's registry.

use std::sync::Arc;

use futures::future::BoxFuture;

use crate::acl::{Id, digest_id};
use crate::error::KeeperError;
use crate::proto::records::{ClientInfo, CreateRequest as WireCreate, add_watch_mode};
use crate::proto::{self, MultiOp, MultiReadOp, MultiReadResult, MultiResult, Request, Response};
use crate::replica::{ProposeError, ReplicaInner};
use crate::stat::{CreateMode, SessionId, Zxid};
use crate::state::{CommandKind, CommandResult, WriteError, WriteOp, WriteResult};
use crate::tree::{Caller, CreateRequest, Op, OpResult};
use crate::watch::{WatchKind, WatchReplay, WatcherType};

/// What to send back for a request.
pub(super) enum Reply {
    /// A frame; the connection goes on.
    Frame(Vec<u8>),
    /// A frame, then the connection closes (closeSession, a failed auth).
    FrameThenClose(Vec<u8>),
    /// Close without answering (a frame whose header cannot be read, a lost leader).
    Close(String),
}

/// Room for most replies (a header and a Stat, a path), so that encoding one does not grow
/// its buffer step by step; larger ones (data, children) grow it.
const REPLY_CAPACITY: usize = 128;

fn reply(xid: i32, zxid: Zxid, result: Result<Response, KeeperError>) -> Reply {
    let mut frame = Vec::with_capacity(REPLY_CAPACITY);
    proto::encode_reply(&mut frame, xid, zxid, result.as_ref().map_err(|e| *e));
    Reply::Frame(frame)
}

/// What becomes of one request frame.
pub(super) enum Step {
    /// Its reply, to be sent after every earlier one: a write, already submitted behind the
    /// session's earlier writes, or a request answered from the frame alone.
    Queued(BoxFuture<'static, Reply>),
    /// Anything else: [`handle`] answers it once every earlier reply is out.
    Now(Request, i32),
}

/// The ids a connection gives its writes, which the state de-duplicates retries by: a random
/// start drawn when the connection opens, then one after the other. Ids must differ among
/// the writes of a session, and nothing else (a client resuming a session numbers its xids
/// from 1 again); the connections a session has over its life draw their starts
/// independently, so their runs of ids meet with negligible probability — as ids drawn one
/// by one would, without a system call per write.
pub(super) struct RequestIds {
    next: u64,
}

impl RequestIds {
    /// A connection's ids, from a random start.
    pub(super) fn new() -> Result<RequestIds, getrandom::Error> {
        let mut start = [0u8; 8];
        getrandom::fill(&mut start)?;
        Ok(RequestIds { next: u64::from_le_bytes(start) })
    }

    fn take(&mut self) -> u64 {
        let id = self.next;
        self.next = self.next.wrapping_add(1);
        id
    }
}

/// Decodes one request frame of `session`, whose auth ids are `ids`, and submits it if it is
/// a write, so that a session's writes are in flight together, in order.
pub(super) fn start(
    replica: &Arc<ReplicaInner>,
    session: SessionId,
    ids: &Arc<[Id]>,
    request_ids: &mut RequestIds,
    frame: &[u8],
) -> Step {
    let ready = |reply: Reply| Step::Queued(Box::pin(std::future::ready(reply)));
    let (header, request) = match proto::decode_request(frame) {
        Ok(decoded) => decoded,
        Err(e) => {
            return ready(match e.header {
                // ZooKeeper answers a body it cannot read with MarshallingError.
                Some(header) => reply(header.xid, replica.state.last_zxid(), Err(KeeperError::MarshallingError)),
                None => Reply::Close(e.to_string()),
            });
        }
    };
    let xid = header.xid;
    let (op, answer) = match into_write(request) {
        Classified::Write(op, answer) => (op, answer),
        Classified::Malformed(e) => return ready(reply(xid, replica.state.last_zxid(), Err(e))),
        Classified::Other(request) => return Step::Now(request, xid),
    };
    let kind = CommandKind::Write { session, request: request_ids.take(), ids: ids.clone(), op };
    let result = replica.submit(kind, frame.len());
    Step::Queued(Box::pin(async move {
        match result.await {
            Ok((zxid, CommandResult::Write(result))) => reply(xid, zxid, answer.response(result)),
            Ok((zxid, other)) => {
                tracing::error!("a write returned {other:?}");
                reply(xid, zxid, Err(KeeperError::SystemError))
            }
            Err(ProposeError::NotLeader { leader }) => {
                Reply::Close(format!("this replica cannot take writes: the leader is {leader:?}"))
            }
            Err(e) => Reply::Close(e.to_string()),
        }
    }))
}

/// Answers a request that is not a write ([`Step::Now`]) of `session`, whose auth ids are
/// `ids`.
pub(super) async fn handle(
    replica: &Arc<ReplicaInner>,
    session: SessionId,
    ids: &mut Arc<[Id]>,
    request: Request,
    xid: i32,
) -> Reply {
    match request {
        Request::Ping => {
            let mut frame = Vec::new();
            proto::encode_ping_reply(&mut frame, replica.state.last_zxid());
            Reply::Frame(frame)
        }
        Request::CloseSession => {
            replica.hub.detach(session);
            let zxid = match replica.propose(CommandKind::CloseSession { session }).await {
                Ok((zxid, _)) => zxid,
                Err(e) => return Reply::Close(e.to_string()),
            };
            let mut frame = Vec::new();
            proto::encode_reply(&mut frame, xid, zxid, Ok(&Response::Empty));
            Reply::FrameThenClose(frame)
        }
        Request::Sync(r) => {
            // Catch up with everything the leader had committed when the sync arrived.
            match replica.sync_point().await {
                Ok(zxid) => replica.state.wait_applied(zxid).await,
                Err(e) => return Reply::Close(format!("sync: {e}")),
            }
            reply(xid, replica.state.last_zxid(), Ok(Response::Sync { path: r.path }))
        }
        Request::Auth(auth) => {
            let mut frame = Vec::new();
            if auth.scheme == "digest" {
                match std::str::from_utf8(&auth.auth) {
                    Ok(user_password) if user_password.contains(':') => {
                        let id = digest_id(user_password);
                        if !ids.contains(&id) {
                            *ids = ids.iter().cloned().chain([id]).collect();
                        }
                        proto::encode_reply(&mut frame, xid, 0, Ok(&Response::Empty));
                        return Reply::Frame(frame);
                    }
                    _ => {}
                }
            }
            proto::encode_reply(&mut frame, xid, 0, Err(KeeperError::AuthFailed));
            Reply::FrameThenClose(frame)
        }
        Request::SetWatches(w) => set_watches(replica, session, xid, w.into()),
        Request::SetWatches2(w) => set_watches(replica, session, xid, w),
        request => {
            // The zxid after the read: at least that of the state the read saw.
            let result = read(replica, session, ids, request);
            reply(xid, replica.state.last_zxid(), result)
        }
    }
}

/// What a request is to [`start`].
enum Classified {
    /// A write and the shape of its reply.
    Write(WriteOp, Answer),
    /// A write that cannot be made as asked.
    Malformed(KeeperError),
    /// Not a write.
    Other(Request),
}

/// The write a request asks for and how to answer it, if it is one; the request's path and
/// data move into the write.
fn into_write(request: Request) -> Classified {
    let write = match request {
        Request::Create(r) => create(r, None, false).map(|c| (WriteOp::Create(c), Answer::Create)),
        Request::Create2(r) => create(r, None, false).map(|c| (WriteOp::Create(c), Answer::Create2)),
        Request::CreateContainer(r) => create(r, None, true).map(|c| (WriteOp::Create(c), Answer::Create2)),
        Request::CreateTtl(r) => {
            let plain = WireCreate { path: r.path, data: r.data, acl: r.acl, flags: r.flags };
            create(plain, Some(r.ttl), false).map(|c| (WriteOp::Create(c), Answer::Create2))
        }
        Request::Delete(r) => Ok((WriteOp::Delete { path: r.path, version: r.version }, Answer::Empty)),
        Request::SetData(r) => Ok((WriteOp::SetData { path: r.path, data: r.data, version: r.version }, Answer::Stat)),
        Request::SetAcl(r) => Ok((WriteOp::SetAcl { path: r.path, acl: r.acl, version: r.version }, Answer::Stat)),
        Request::Multi(ops) => {
            let plain_creates = ops.iter().map(|op| matches!(op, MultiOp::Create(_))).collect();
            ops.into_iter()
                .map(multi_op)
                .collect::<Result<Vec<_>, _>>()
                .map(|ops| (WriteOp::Multi(ops), Answer::Multi { plain_creates }))
        }
        request => return Classified::Other(request),
    };
    match write {
        Ok((op, answer)) => Classified::Write(op, answer),
        Err(e) => Classified::Malformed(e),
    }
}

/// A tree create from a wire create: the flags must name a mode, TTL modes need a TTL and the
/// others must not have one, and createContainer must ask for a container.
fn create(r: WireCreate, ttl: Option<i64>, container: bool) -> Result<CreateRequest, KeeperError> {
    let mode = CreateMode::from_flag(r.flags).ok_or(KeeperError::BadArguments)?;
    if container != mode.is_container() {
        return Err(KeeperError::BadArguments);
    }
    let mut request = CreateRequest::new(r.path, r.data).acl(r.acl).mode(mode);
    if let Some(ttl) = ttl {
        request = request.ttl(ttl);
    }
    Ok(request)
}

fn multi_op(op: MultiOp) -> Result<Op, KeeperError> {
    Ok(match op {
        MultiOp::Create(r) | MultiOp::Create2(r) => Op::Create(create(r, None, false)?),
        MultiOp::CreateContainer(r) => Op::Create(create(r, None, true)?),
        MultiOp::CreateTtl(r) => {
            let plain = WireCreate { path: r.path, data: r.data, acl: r.acl, flags: r.flags };
            Op::Create(create(plain, Some(r.ttl), false)?)
        }
        MultiOp::Delete(r) => Op::Delete { path: r.path, version: r.version },
        MultiOp::SetData(r) => Op::SetData { path: r.path, data: r.data, version: r.version },
        MultiOp::Check(r) => Op::Check { path: r.path, version: r.version },
    })
}

/// The shape of the reply a write request gets: which response its op code calls for.
#[derive(Debug)]
enum Answer {
    /// Op 1: the path.
    Create,
    /// Ops 15, 19, 21: the path and the stat.
    Create2,
    /// Op 2.
    Empty,
    /// Ops 5 and 7.
    Stat,
    /// Op 14: for each op, whether it is a plain create (answered with the path alone).
    Multi { plain_creates: Vec<bool> },
}

impl Answer {
    /// The reply body of a write of this shape.
    fn response(self, result: Result<WriteResult, WriteError>) -> Result<Response, KeeperError> {
        let result = match result {
            Ok(result) => result,
            Err(WriteError::Keeper(e)) => return Err(e),
            Err(WriteError::Multi(results)) => {
                let results = results.iter().map(|r| MultiResult::Error { err: r.error_code().unwrap_or(0) }).collect();
                return Ok(Response::Multi(results));
            }
        };
        Ok(match (self, result) {
            (Answer::Create, WriteResult::Created(c)) => Response::Create { path: c.path },
            (Answer::Create2, WriteResult::Created(c)) => Response::Create2 { path: c.path, stat: c.stat },
            (Answer::Empty, WriteResult::Deleted) => Response::Empty,
            (Answer::Stat, WriteResult::Stat(stat)) => Response::Stat(stat),
            (Answer::Multi { plain_creates }, WriteResult::Multi(results)) => Response::Multi(
                plain_creates.into_iter().zip(results).map(|(plain, result)| multi_result(plain, result)).collect(),
            ),
            (answer, other) => {
                tracing::error!("write result {other:?} does not answer a request answered by {answer:?}");
                return Err(KeeperError::SystemError);
            }
        })
    }
}

fn multi_result(plain_create: bool, result: OpResult) -> MultiResult {
    match (plain_create, result) {
        (true, OpResult::Create(c)) => MultiResult::Create { path: c.path },
        (false, OpResult::Create(c)) => MultiResult::Create2 { path: c.path, stat: c.stat },
        (_, OpResult::Delete) => MultiResult::Delete,
        (_, OpResult::SetData(stat)) => MultiResult::SetData { stat },
        (_, OpResult::Check) => MultiResult::Check,
        (_, other) => MultiResult::Error { err: other.error_code().unwrap_or(0) },
    }
}

/// Answers a read (or a watch-management request) from this replica's state.
fn read(replica: &ReplicaInner, session: SessionId, ids: &[Id], request: Request) -> Result<Response, KeeperError> {
    let caller = Caller::new(session, ids);
    let watch = |path: &str, kind: WatchKind| replica.hub.watches().add(session, path, kind);
    replica.state.read(|state| {
        let tree = state.tree();
        match request {
            Request::Exists(r) => match tree.exists(caller, &r.path)? {
                Some(stat) => {
                    if r.watch {
                        watch(&r.path, WatchKind::Data);
                    }
                    Ok(Response::Stat(stat))
                }
                None => {
                    if r.watch {
                        watch(&r.path, WatchKind::Exist);
                    }
                    Err(KeeperError::NoNode)
                }
            },
            Request::GetData(r) => {
                let (data, stat) = tree.get_data(caller, &r.path)?;
                if r.watch {
                    watch(&r.path, WatchKind::Data);
                }
                Ok(Response::GetData { data: data.to_vec(), stat })
            }
            Request::GetChildren(r) => {
                let (children, _) = tree.get_children(caller, &r.path)?;
                if r.watch {
                    watch(&r.path, WatchKind::Child);
                }
                Ok(Response::GetChildren { children })
            }
            Request::GetChildren2(r) => {
                let (children, stat) = tree.get_children(caller, &r.path)?;
                if r.watch {
                    watch(&r.path, WatchKind::Child);
                }
                Ok(Response::GetChildren2 { children, stat })
            }
            Request::GetAcl(r) => tree.get_acl(caller, &r.path).map(|(acl, stat)| Response::GetAcl { acl, stat }),
            Request::GetAllChildrenNumber(r) => tree
                .get_all_children_number(caller, &r.path)
                .map(|total_number| Response::GetAllChildrenNumber { total_number }),
            Request::GetEphemerals(r) => {
                let ephemerals = tree.get_ephemerals(session, r.prefix().unwrap_or(""));
                Ok(Response::GetEphemerals { ephemerals })
            }
            Request::MultiRead(ops) => Ok(Response::MultiRead(
                ops.iter()
                    .map(|op| {
                        let result = match op {
                            MultiReadOp::GetData(r) => tree
                                .get_data(caller, &r.path)
                                .map(|(data, stat)| MultiReadResult::GetData { data: data.to_vec(), stat }),
                            MultiReadOp::GetChildren(r) => tree
                                .get_children(caller, &r.path)
                                .map(|(children, _)| MultiReadResult::GetChildren { children }),
                        };
                        result.unwrap_or_else(|e| MultiReadResult::Error { err: e.code() })
                    })
                    .collect(),
            )),
            Request::AddWatch(r) => {
                let kind = match r.mode {
                    add_watch_mode::PERSISTENT => WatchKind::Persistent,
                    add_watch_mode::PERSISTENT_RECURSIVE => WatchKind::PersistentRecursive,
                    _ => return Err(KeeperError::BadArguments),
                };
                crate::validate_path(&r.path).map_err(|_| KeeperError::BadArguments)?;
                watch(&r.path, kind);
                Ok(Response::AddWatch)
            }
            Request::CheckWatches(r) => {
                let kind = WatcherType::from_code(r.watcher_type).ok_or(KeeperError::BadArguments)?;
                if replica.hub.watches().contains(session, &r.path, kind) {
                    Ok(Response::Empty)
                } else {
                    Err(KeeperError::NoWatcher)
                }
            }
            Request::RemoveWatches(r) => {
                let kind = WatcherType::from_code(r.watcher_type).ok_or(KeeperError::BadArguments)?;
                if replica.hub.watches().remove(session, &r.path, kind) {
                    Ok(Response::Empty)
                } else {
                    Err(KeeperError::NoWatcher)
                }
            }
            Request::WhoAmI => Ok(Response::WhoAmI {
                client_info: ids
                    .iter()
                    .map(|id| ClientInfo {
                        auth_scheme: id.scheme.to_string(),
                        user: id.id.split(':').next().unwrap_or_default().to_string(),
                    })
                    .collect(),
            }),
            Request::Reconfig(_) => Err(KeeperError::ReconfigDisabled),
            _ => Err(KeeperError::Unimplemented),
        }
    })
}

/// Re-registers a reconnecting session's watches and fires at once the events it missed.
fn set_watches(replica: &ReplicaInner, session: SessionId, xid: i32, w: crate::proto::records::SetWatches2) -> Reply {
    let replay = WatchReplay {
        data: w.data_watches,
        exist: w.exist_watches,
        child: w.child_watches,
        persistent: w.persistent_watches,
        persistent_recursive: w.persistent_recursive_watches,
    };
    // The registry lock is taken inside the state's read lock, as apply takes it after the
    // state's write lock is released: the replay sees a state no event has been sent past.
    let (missed, zxid) = replica.state.read(|state| {
        let missed = replica.hub.watches().replay(state.tree(), session, w.relative_zxid, &replay);
        (missed, replica.state.last_zxid())
    });
    let mut frame = Vec::new();
    for event in &missed {
        proto::encode_notification(&mut frame, event.zxid, &crate::proto::WatcherEvent::from(event));
    }
    proto::encode_reply(&mut frame, xid, zxid, Ok(&Response::Empty));
    Reply::Frame(frame)
}
