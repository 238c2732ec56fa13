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

use crate::proposer::Proposed;
use crate::replica::{ProposeError, ReplicaInner};
use crate::stat::{SessionId, Zxid};
use crate::state::CommandKind;

/// A request from a replica to the leader.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum PeerRequest {
    /// Propose these commands, in this order, and return their results.
    ProposeBatch(#[serde(deserialize_with = "crate::state::arc_each")] Vec<Arc<CommandKind>>),
    /// These sessions were active on the sender: move their deadlines.
    Touch(Vec<SessionId>),
    /// The leader's commit index, confirmed by a quorum (ReadIndex): what `sync` waits for.
    ReadIndex,
}

/// The leader's answer.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum PeerResponse {
    /// Each command's zxid and result, in order.
    ProposedBatch(Vec<Proposed>),
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
        let request: PeerRequest = match postcard::from_bytes(&request) {
            Ok(request) => request,
            Err(e) => return Box::pin(std::future::ready(Err(format!("bad peer request: {e}")))),
        };
        match request {
            PeerRequest::ProposeBatch(kinds) => {
                // Submitted now, in the order batches arrive, so each keeps its place (see
                // `crate::proposer`).
                let batch = kinds.into_iter().map(|kind| inner.proposer.submit(kind, 0)).collect::<Vec<_>>();
                Box::pin(async move { encode(&PeerResponse::ProposedBatch(futures::future::join_all(batch).await)) })
            }
            PeerRequest::Touch(sessions) => {
                inner.hub.touch_tracked(&sessions);
                let in_touch = inner.is_leader() && inner.in_touch();
                Box::pin(std::future::ready(encode(&PeerResponse::Touched { in_touch })))
            }
            PeerRequest::ReadIndex => {
                Box::pin(async move { encode(&PeerResponse::ReadIndex(inner.read_index_here().await)) })
            }
        }
    }
}

fn encode(response: &PeerResponse) -> Result<Vec<u8>, String> {
    postcard::to_stdvec(response).map_err(|e| e.to_string())
}
