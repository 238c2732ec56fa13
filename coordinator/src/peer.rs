//! What replicas ask of each other besides Raft: a follower forwards its clients' writes, their
//! session activity and their `sync`s to the leader.
//!
//! The messages travel on the Raft RPC connections ([`crate::raft::AppHandler`]). A forwarded
//! write is proposed by the leader with the leader's clock; its result comes back to the
//! follower, which waits until it has applied the write itself before answering the client, so
//! the client's next read there sees it (and any watch event it caused comes first).

use std::sync::Arc;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::replica::{ProposeError, ReplicaInner};
use crate::stat::{SessionId, Zxid};
use crate::state::{CommandKind, CommandResult};

/// A request from a replica to the leader.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum PeerRequest {
    /// Propose this command and return its result.
    Propose(CommandKind),
    /// These sessions were active on the sender: move their deadlines.
    Touch(Vec<SessionId>),
    /// The leader's commit index, confirmed by a quorum (ReadIndex): what `sync` waits for.
    ReadIndex,
}

/// The leader's answer.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum PeerResponse {
    /// The command's zxid and result.
    Proposed(Result<(Zxid, CommandResult), ProposeError>),
    /// Deadlines moved; `in_touch`: the leader heard from a quorum lately.
    Touched { in_touch: bool },
    /// The zxid a replica must have applied to be as recent as the leader was.
    ReadIndex(Result<Zxid, ProposeError>),
}

/// Answers peers' requests with this replica.
pub(crate) struct PeerHandler(pub(crate) Arc<ReplicaInner>);

impl crate::raft::AppHandler for PeerHandler {
    fn call(&self, request: Vec<u8>) -> BoxFuture<'static, Result<Vec<u8>, String>> {
        let inner = self.0.clone();
        Box::pin(async move {
            let request: PeerRequest = postcard::from_bytes(&request).map_err(|e| format!("bad peer request: {e}"))?;
            let response = match request {
                PeerRequest::Propose(kind) => PeerResponse::Proposed(inner.propose_here(kind).await),
                PeerRequest::Touch(sessions) => {
                    inner.hub.touch_tracked(&sessions);
                    PeerResponse::Touched { in_touch: inner.is_leader() && inner.in_touch() }
                }
                PeerRequest::ReadIndex => PeerResponse::ReadIndex(inner.read_index_here().await),
            };
            postcard::to_stdvec(&response).map_err(|e| e.to_string())
        })
    }
}
