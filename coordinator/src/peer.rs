//! What replicas ask of each other besides Raft: a follower forwards its clients' writes, their
//! session activity and their `sync`s to the leader.
//!
//! The messages travel on the Raft RPC connections ([`crate::raft::AppHandler`]). A forwarded
//! write is proposed by the leader with the leader's clock; its result comes back to the
//! follower, which waits until it has applied the write itself before answering the client, so
//! the client's next read there sees it (and any watch event it caused comes first).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::proposer::Proposed;
use crate::replica::{ProposeError, ReplicaInner};
use crate::stat::{SessionId, Zxid};
use crate::state::CommandKind;

/// A request from a replica to the leader.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum PeerRequest {
    /// Propose these commands, in this order, and return their results. `seq` numbers the
    /// batches of one follower's `stream` from 0: the leader takes a batch only if it is the
    /// first of a stream it has not seen or the one after the last it took of that stream, so
    /// that a batch never overtakes an earlier one of its follower (one lost with a dropped
    /// connection, say, while the next went on a new one). A refused batch fails as
    /// unreachable, and the follower sends its writes again, in order, on a new stream.
    ProposeBatch {
        stream: u64,
        seq: u64,
        #[serde(deserialize_with = "crate::state::arc_each")]
        kinds: Vec<Arc<CommandKind>>,
    },
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
pub(crate) struct PeerHandler {
    inner: Arc<ReplicaInner>,
    streams: Mutex<ForwardStreams>,
}

impl PeerHandler {
    pub(crate) fn new(inner: Arc<ReplicaInner>) -> PeerHandler {
        PeerHandler { inner, streams: Mutex::default() }
    }
}

/// The next batch expected on each stream of forwarded batches (see
/// [`PeerRequest::ProposeBatch`]), for the [`FORWARD_STREAMS`] streams heard from last.
#[derive(Default)]
struct ForwardStreams {
    next: HashMap<u64, u64>,
    /// Streams by when they were first seen, to forget the oldest.
    order: VecDeque<u64>,
}

/// How many streams of forwarded batches a leader keeps track of: a few per follower (each
/// failure starts a new one). A stream forgotten while still in use has its next batch refused,
/// and its follower starts another.
const FORWARD_STREAMS: usize = 64;

impl ForwardStreams {
    /// Whether batch `seq` of `stream` may be proposed now; if so, the next one expected is
    /// `seq + 1`.
    fn take(&mut self, stream: u64, seq: u64) -> bool {
        match self.next.get_mut(&stream) {
            Some(next) if *next == seq => {
                *next += 1;
                true
            }
            Some(_) => false,
            None if seq == 0 => {
                if self.order.len() == FORWARD_STREAMS
                    && let Some(oldest) = self.order.pop_front()
                {
                    self.next.remove(&oldest);
                }
                self.order.push_back(stream);
                self.next.insert(stream, 1);
                true
            }
            None => false,
        }
    }
}

impl crate::raft::AppHandler for PeerHandler {
    fn call(&self, request: Vec<u8>) -> BoxFuture<'static, Result<Vec<u8>, String>> {
        let inner = self.inner.clone();
        let request: PeerRequest = match postcard::from_bytes(&request) {
            Ok(request) => request,
            Err(e) => return Box::pin(std::future::ready(Err(format!("bad peer request: {e}")))),
        };
        match request {
            PeerRequest::ProposeBatch { stream, seq, kinds } => {
                if !self.streams.lock().unwrap_or_else(|p| p.into_inner()).take(stream, seq) {
                    let refused = ProposeError::Unreachable(format!(
                        "forwarded batch {seq} of stream {stream:#x} is out of order"
                    ));
                    let results = vec![Err(refused); kinds.len()];
                    return Box::pin(std::future::ready(encode(&PeerResponse::ProposedBatch(results))));
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_is_taken_from_its_first_batch_in_order_only() {
        let mut streams = ForwardStreams::default();
        assert!(!streams.take(7, 1), "a stream the leader never saw must start at batch 0");
        assert!(streams.take(7, 0));
        assert!(streams.take(7, 1));
        assert!(!streams.take(7, 3), "a batch after a gap must be refused");
        assert!(!streams.take(7, 1), "a batch taken once must not be taken again");
        assert!(streams.take(7, 2));
        assert!(!streams.take(7, 0), "a stream cannot start over");
        assert!(streams.take(8, 0), "another stream starts on its own");
    }

    #[test]
    fn a_forgotten_stream_has_its_next_batch_refused() {
        let mut streams = ForwardStreams::default();
        assert!(streams.take(0, 0));
        for stream in 1..=FORWARD_STREAMS as u64 {
            assert!(streams.take(stream, 0));
        }
        assert!(!streams.take(0, 1), "the oldest stream was forgotten: its follower must start a new one");
        assert!(streams.take(FORWARD_STREAMS as u64, 1));
    }
}
