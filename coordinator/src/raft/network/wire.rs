//! The frames of Squall's Raft RPC protocol and the checks a server applies to what it decodes.
//!
//! Every frame is a 4-byte big-endian length followed by a postcard body. A connection starts
//! with the client's `Hello` and the server's `Welcome`; after that the client sends `Call`s
//! (one reply each, matched by id, in any order), and the frames of append streams: `Append`s
//! numbered 0, 1, 2, … within the stream and an `EndStream`. The server answers each `Append` with
//! an `Appended`, in order, and ends the stream with `StreamClosed`.

use std::io;

use futures::SinkExt;
use openraft::RaftTypeConfig;
use openraft::alias::LogIdOf;
use openraft::alias::SnapshotMetaOf;
use openraft::alias::VoteOf;
use openraft::entry::RaftEntry;
use openraft::raft::AppendEntriesRequest;
use openraft::raft::AppendEntriesResponse;
use openraft::raft::SnapshotResponse;
use openraft::raft::StreamAppendResult;
use openraft::raft::TransferLeaderRequest;
use openraft::raft::TransferLeaderResponse;
use openraft::raft::VoteRequest;
use openraft::raft::VoteResponse;
use openraft::vote::RaftLeaderId;
use openraft::vote::RaftVote;
use serde::Deserialize;
use serde::Serialize;
use tokio::io::AsyncRead;
use tokio::io::AsyncWrite;
use tokio::sync::mpsc;
use tokio_util::bytes::BufMut;
use tokio_util::bytes::Bytes;
use tokio_util::bytes::BytesMut;
use tokio_util::codec::FramedRead;
use tokio_util::codec::FramedWrite;
use tokio_util::codec::LengthDelimitedCodec;

/// Opens every `Hello`, so that a stray client of another protocol is told apart at once.
pub(crate) const MAGIC: [u8; 4] = *b"SQRF";
/// Bumped when a frame changes incompatibly.
pub(crate) const PROTOCOL_VERSION: u32 = 1;

/// A frame from the replica that sends RPCs to the one that serves them.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub(crate) enum ClientFrame<C: RaftTypeConfig> {
    /// The first frame of a connection: who the client believes it is talking to.
    Hello { magic: [u8; 4], version: u32, target: C::NodeId },
    /// A request that gets exactly one `Reply` with the same id.
    Call { id: u64, request: Request<C> },
    /// The `seq`-th AppendEntries of an append stream; `seq` 0 opens the stream.
    Append { stream: u64, seq: u64, request: AppendEntriesRequest<C> },
    /// No more `Append`s on this stream: the server finishes it and sends `StreamClosed`.
    EndStream { stream: u64 },
}

/// The requests that are answered with one reply.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub(crate) enum Request<C: RaftTypeConfig> {
    Vote(VoteRequest<C>),
    PreVote(VoteRequest<C>),
    AppendEntries(AppendEntriesRequest<C>),
    TransferLeader(TransferLeaderRequest<C>),
    SnapshotChunk(SnapshotChunk<C>),
    /// A request of the application's own, answered by its [`AppHandler`](super::AppHandler).
    App(Vec<u8>),
}

/// A piece of a snapshot; the last piece carries what installing it needs.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub(crate) struct SnapshotChunk<C: RaftTypeConfig> {
    /// Identifies the transfer on its connection.
    pub transfer: u64,
    /// Where `data` starts in the snapshot.
    pub offset: u64,
    pub data: Vec<u8>,
    /// Present on the last chunk only.
    pub done: Option<SnapshotDone<C>>,
}

/// The vote of the leader sending a snapshot and the snapshot's metadata.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub(crate) struct SnapshotDone<C: RaftTypeConfig> {
    pub vote: VoteOf<C>,
    pub meta: SnapshotMetaOf<C>,
}

/// A frame from the serving replica.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub(crate) enum ServerFrame<C: RaftTypeConfig> {
    /// The answer to `Hello`: `Err` says why the server refuses the connection.
    Welcome(Result<(), String>),
    /// The answer to a `Call`: `Err` is an error of the serving replica (stopped, say).
    Reply { id: u64, reply: Result<Reply<C>, String> },
    /// The result of one `Append`, in the order of the stream.
    Appended { stream: u64, result: Result<StreamAppendResult<C>, String> },
    /// The stream is finished; no more `Appended` for it.
    StreamClosed { stream: u64 },
}

/// The successful answers to [`Request`]s.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub(crate) enum Reply<C: RaftTypeConfig> {
    Vote(VoteResponse<C>),
    AppendEntries(AppendEntriesResponse<C>),
    TransferLeader(TransferLeaderResponse<C>),
    /// A snapshot chunk other than the last was stored.
    ChunkReceived,
    /// The last snapshot chunk was received and the snapshot handed to Raft.
    Snapshot(SnapshotResponse<C>),
    /// The application's answer to an `App` request.
    App(Vec<u8>),
}

impl<C: RaftTypeConfig> Reply<C> {
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Reply::Vote(_) => "Vote",
            Reply::AppendEntries(_) => "AppendEntries",
            Reply::TransferLeader(_) => "TransferLeader",
            Reply::ChunkReceived => "ChunkReceived",
            Reply::Snapshot(_) => "Snapshot",
            Reply::App(_) => "App",
        }
    }
}

/// The length-delimited codec both ends use.
pub(crate) fn codec(max_frame_len: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder().max_frame_length(max_frame_len).new_codec()
}

/// Frames are encoded into blocks of this many bytes (or one frame's size, if larger).
const ENCODE_BLOCK: usize = 64 * 1024;

thread_local! {
    /// The block this thread encodes frames into; see [`encode`].
    static ENCODE_BUFFER: std::cell::RefCell<BytesMut> = std::cell::RefCell::new(BytesMut::new());
}

/// Encodes `frame`. Frames are carved one after the other out of a per-thread block, which is
/// freed once every frame cut from it is gone (the writer copies them into its socket buffer
/// and drops them): encoding into a fresh vector grew it by doubling from empty, and those
/// reallocations and the page faults behind them were a third of the leader's encoding time.
pub(crate) fn encode<T: Serialize>(frame: &T) -> io::Result<Bytes> {
    ENCODE_BUFFER.with_borrow_mut(|buf| {
        if buf.capacity() < ENCODE_BLOCK / 16 {
            buf.reserve(ENCODE_BLOCK);
        }
        match postcard::serialize_with_flavor(frame, BlockFlavor(buf)) {
            Ok(()) => Ok(buf.split().freeze()),
            Err(e) => {
                buf.clear();
                Err(io::Error::new(io::ErrorKind::InvalidInput, e))
            }
        }
    })
}

/// postcard's output into a [`BytesMut`].
struct BlockFlavor<'a>(&'a mut BytesMut);

impl postcard::ser_flavors::Flavor for BlockFlavor<'_> {
    type Output = ();

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.put_u8(data);
        Ok(())
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

pub(crate) fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> io::Result<T> {
    postcard::from_bytes(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Reads one frame, for the handshake.
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(
    frames: &mut FramedRead<R, LengthDelimitedCodec>,
) -> io::Result<tokio_util::bytes::BytesMut> {
    use futures::StreamExt;
    frames.next().await.unwrap_or_else(|| Err(io::ErrorKind::UnexpectedEof.into()))
}

/// Writes the frames queued on `rx` until every sender is gone, flushing whenever the queue runs
/// dry, so that frames queued together leave in one write.
pub(crate) async fn write_frames<W: AsyncWrite + Unpin>(
    mut sink: FramedWrite<W, LengthDelimitedCodec>,
    mut rx: mpsc::Receiver<Bytes>,
) -> io::Result<()> {
    while let Some(frame) = rx.recv().await {
        sink.feed(frame).await?;
        while let Ok(frame) = rx.try_recv() {
            sink.feed(frame).await?;
        }
        SinkExt::<Bytes>::flush(&mut sink).await?;
    }
    Ok(())
}

/// Checks an AppendEntries before it reaches Raft, which asserts these shapes: entries at
/// consecutive indexes right after `prev_log_id`, none from a leader newer than the sender's vote.
pub(crate) fn check_append<C: RaftTypeConfig>(req: &AppendEntriesRequest<C>) -> Result<(), String> {
    let leader = req.vote.leader_id().to_committed();
    let first_index = req.prev_log_id.as_ref().map_or(0, |id| id.index() + 1);
    let mut prev: Option<LogIdOf<C>> = req.prev_log_id.clone();
    for (expected_index, entry) in (first_index..).zip(&req.entries) {
        let log_id = entry.log_id();
        if log_id.index() != expected_index {
            return Err(format!("entry {log_id} is not at index {expected_index}"));
        }
        if let Some(prev) = prev.as_ref().filter(|prev| *prev > &log_id) {
            return Err(format!("entry {log_id} goes back from {prev}"));
        }
        if log_id.committed_leader_id() > &leader {
            return Err(format!("entry {log_id} is newer than the sender's vote {}", req.vote));
        }
        prev = Some(log_id);
    }
    Ok(())
}

/// Checks a snapshot's metadata against the vote that sends it, which Raft asserts.
pub(crate) fn check_snapshot<C: RaftTypeConfig>(done: &SnapshotDone<C>) -> Result<(), String> {
    let leader = done.vote.leader_id().to_committed();
    match &done.meta.last_log_id {
        Some(last) if last.committed_leader_id() > &leader => {
            Err(format!("snapshot up to {last} is newer than the sender's vote {}", done.vote))
        }
        _ => Ok(()),
    }
}
