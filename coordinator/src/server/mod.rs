//! The clients' port: ZooKeeper's wire protocol and its four-letter words.
//!
//! Each connection has a reader (this task) and a writer task fed by a channel. Requests of a
//! connection are handled one after the other and answered in order; watch notifications go
//! into the same channel when a command is applied, so a client sees an event before any reply
//! that reflects the change. A malformed or oversized frame closes its connection and nothing
//! else.

mod four_letter;
mod requests;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::acl::Id;
use crate::jute::JUTE_MAX_BUFFER;
use crate::proto::{self, ConnectRequest, ConnectResponse, ConnectionStart};
use crate::replica::{Outgoing, ReplicaInner};
use crate::session::negotiate_timeout;
use crate::stat::SessionId;
use crate::state::{CommandKind, CommandResult};

/// The largest frame a client may send: ZooKeeper's jute.maxbuffer plus room for headers.
pub(crate) const MAX_FRAME: usize = JUTE_MAX_BUFFER + 1024;

/// Accepts client connections until `stop` is cancelled; each connection runs on `tasks` and
/// ends when `stop` is cancelled.
pub(crate) async fn serve(
    listener: TcpListener,
    replica: Arc<ReplicaInner>,
    tasks: TaskTracker,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let replica = replica.clone();
                let stop = stop.clone();
                tasks.spawn(async move {
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        result = connection(replica, stream, peer) => {
                            if let Err(e) = result {
                                tracing::debug!("client {peer}: {e}");
                            }
                        }
                    }
                });
            }
            Err(e) => {
                tracing::warn!("accepting a client: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Reads one length-prefixed frame; `None` at a clean end of stream.
async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R, buf: &mut Vec<u8>) -> io::Result<Option<()>> {
    let mut len = [0u8; 4];
    match reader.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = i32::from_be_bytes(len);
    if len < 0 || len as usize > MAX_FRAME {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("frame length {len} out of bounds")));
    }
    buf.resize(len as usize, 0);
    reader.read_exact(buf).await?;
    Ok(Some(()))
}

/// Writes queued frames, several per flush, until told to close or the channel ends.
async fn write_frames(writer: OwnedWriteHalf, mut rx: mpsc::UnboundedReceiver<Outgoing>, replica: Arc<ReplicaInner>) {
    let mut writer = BufWriter::with_capacity(64 * 1024, writer);
    'outer: while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(out) = next {
            match out {
                Outgoing::Frame(frame) => {
                    if writer.write_all(&frame).await.is_err() {
                        break 'outer;
                    }
                    replica.counters.sent.fetch_add(1, Ordering::Relaxed);
                }
                Outgoing::Close => {
                    let _ = writer.flush().await;
                    break 'outer;
                }
            }
            next = rx.try_recv().ok();
        }
        if writer.flush().await.is_err() {
            break;
        }
    }
    let _ = writer.shutdown().await;
}

async fn connection(replica: Arc<ReplicaInner>, stream: TcpStream, peer: SocketAddr) -> io::Result<()> {
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    let mut prefix = [0u8; 4];
    reader.read_exact(&mut prefix).await?;
    let len = match proto::connection_start(prefix, MAX_FRAME) {
        Ok(ConnectionStart::Command(word)) => {
            let answer = four_letter::answer(&replica, word);
            writer.write_all(answer.as_bytes()).await?;
            return writer.shutdown().await;
        }
        Ok(ConnectionStart::Frame(len)) => len,
        Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
    };
    let mut buf = vec![0u8; len];
    reader.read_exact(&mut buf).await?;
    let request =
        ConnectRequest::decode(&buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;

    let mut request_ids =
        requests::RequestIds::new().map_err(|e| io::Error::other(format!("no random request ids: {e}")))?;
    let (tx, rx) = mpsc::unbounded_channel();
    let writer_task = tokio::spawn(write_frames(writer, rx, replica.clone()));
    let Some((session, timeout)) = connect(&replica, &request, &tx, peer).await else {
        drop(tx);
        let _ = writer_task.await;
        return Ok(());
    };
    let (connection_id, ended) = replica.hub.register(session, tx.clone());
    // A client keeps several requests in flight: read through a buffer, they arrive in one
    // read call rather than two (length, body) each.
    let mut reader = BufReader::with_capacity(READ_BUFFER, reader);
    // Shared with each write's command, which carries them for the ACL checks of apply.
    let mut ids: Arc<[Id]> = Arc::new([Id::new("ip", peer.ip().to_string())]);
    let result = tokio::select! {
        // The session moved to another connection, or closed or expired: no more requests.
        _ = ended.cancelled() => Ok(()),
        result = requests_loop(&replica, &mut reader, &tx, session, timeout, &mut ids, &mut request_ids) => result,
    };
    replica.hub.unregister(session, connection_id);
    let _ = tx.send(Outgoing::Close);
    drop(tx);
    let _ = writer_task.await;
    result
}

/// Creates or resumes the session of a connect request and queues the ConnectResponse; `None`
/// when the session is refused (the response then says so and the connection closes).
async fn connect(
    replica: &ReplicaInner,
    request: &ConnectRequest,
    tx: &mpsc::UnboundedSender<Outgoing>,
    peer: SocketAddr,
) -> Option<(SessionId, Duration)> {
    if !replica.serving() {
        // ZooKeeper closes the connection of a server not in a quorum: the client tries
        // another replica.
        tracing::info!("refusing client {peer}: this replica is not in touch with a quorum");
        return None;
    }
    let last_zxid = replica.state.last_zxid();
    if request.last_zxid_seen > last_zxid {
        // ZooKeeper closes the connection: the client has seen a newer state than ours and
        // tries another replica.
        tracing::info!(
            "refusing client {peer}: it has seen zxid {:#x}, this replica is at {last_zxid:#x}",
            request.last_zxid_seen
        );
        return None;
    }
    let refuse = || {
        let mut frame = Vec::new();
        ConnectResponse::refuse(request).encode(&mut frame);
        let _ = tx.send(Outgoing::Frame(frame));
        None
    };
    let (session, timeout, password) = if request.session_id == 0 {
        let timeout = negotiate_timeout(request.timeout, replica.hub.tick);
        let mut password = vec![0u8; 16];
        if getrandom::fill(&mut password).is_err() {
            return refuse();
        }
        let kind = CommandKind::CreateSession { timeout_ms: timeout.as_millis() as u32, password };
        match replica.propose(kind).await {
            Ok((_, CommandResult::SessionCreated { session, password })) => (session, timeout, password),
            Ok((_, other)) => {
                tracing::error!("creating a session returned {other:?}");
                return None;
            }
            Err(e) => {
                tracing::info!("cannot create a session for {peer}: {e}");
                return None;
            }
        }
    } else {
        match replica.state.read(|s| s.session(request.session_id).cloned()) {
            Some(info) if info.password == request.passwd => {
                (request.session_id, Duration::from_millis(u64::from(info.timeout_ms)), info.password)
            }
            _ => return refuse(),
        }
    };
    replica.hub.touch(session);
    let mut frame = Vec::new();
    ConnectResponse::accept(request, timeout.as_millis() as i32, session, password).encode(&mut frame);
    let _ = tx.send(Outgoing::Frame(frame));
    Some((session, timeout))
}

/// The read buffer of a client connection: several small requests, and small enough to keep
/// for every connection of a busy server.
const READ_BUFFER: usize = 4096;
/// Requests a connection may have read ahead of the one being answered.
const READ_AHEAD: usize = 64;
/// Replies a connection may owe at once (its writes in flight, mostly): no more than the state
/// remembers per session to de-duplicate their retries.
const IN_FLIGHT: usize = crate::state::DEDUP_WINDOW;

/// Reads requests and answers them in order. Pings are answered as soon as they are read: a
/// write waiting out a leader election must not make the client think its connection died.
async fn requests_loop(
    replica: &Arc<ReplicaInner>,
    reader: &mut (impl AsyncRead + Unpin),
    tx: &mpsc::UnboundedSender<Outgoing>,
    session: SessionId,
    timeout: Duration,
    ids: &mut Arc<[Id]>,
    request_ids: &mut requests::RequestIds,
) -> io::Result<()> {
    let (queue, mut queued) = mpsc::channel::<Vec<u8>>(READ_AHEAD);
    let read = async move {
        let mut buf = Vec::new();
        loop {
            // A client pings at least every third of its timeout; silence for a whole timeout
            // means it is gone, and ZooKeeper closes the connection then.
            let frame = match tokio::time::timeout(timeout, read_frame(reader, &mut buf)).await {
                Ok(frame) => frame?,
                Err(_) => return Ok::<(), io::Error>(()),
            };
            if frame.is_none() {
                return Ok(());
            }
            replica.counters.received.fetch_add(1, Ordering::Relaxed);
            replica.hub.touch(session);
            if is_ping(&buf) {
                let mut reply = Vec::new();
                proto::encode_ping_reply(&mut reply, replica.state.last_zxid());
                let _ = tx.send(Outgoing::Frame(reply));
                continue;
            }
            if queue.send(std::mem::take(&mut buf)).await.is_err() {
                return Ok(());
            }
        }
    };
    let answer = async {
        // Replies not yet sent, in request order: writes in flight and replies made at once.
        let mut pending: FuturesOrdered<BoxFuture<'static, requests::Reply>> = FuturesOrdered::new();
        loop {
            tokio::select! {
                biased;
                Some(reply) = pending.next(), if !pending.is_empty() => {
                    if !send(tx, reply)? {
                        return Ok(());
                    }
                }
                frame = queued.recv(), if pending.len() < IN_FLIGHT => {
                    let Some(frame) = frame else { break };
                    match requests::start(replica, session, ids, request_ids, &frame) {
                        requests::Step::Queued(reply) => pending.push_back(reply),
                        requests::Step::Now(request, xid) => {
                            // Answered after every earlier reply, and after the writes before
                            // it are applied here, so it sees them.
                            while let Some(reply) = pending.next().await {
                                if !send(tx, reply)? {
                                    return Ok(());
                                }
                            }
                            if !send(tx, requests::handle(replica, session, ids, request, xid).await)? {
                                return Ok(());
                            }
                        }
                    }
                }
            }
        }
        // The client stopped sending: answer what it sent before.
        while let Some(reply) = pending.next().await {
            if !send(tx, reply)? {
                return Ok(());
            }
        }
        Ok::<(), io::Error>(())
    };
    tokio::pin!(read, answer);
    tokio::select! {
        result = &mut answer => return result,
        result = &mut read => result?,
    }
    // The client stopped sending: answer what it sent before.
    answer.await
}

/// Queues `reply` on the connection; `Ok(false)` when the connection then closes.
fn send(tx: &mpsc::UnboundedSender<Outgoing>, reply: requests::Reply) -> io::Result<bool> {
    match reply {
        requests::Reply::Frame(frame) => {
            let _ = tx.send(Outgoing::Frame(frame));
            Ok(true)
        }
        requests::Reply::FrameThenClose(frame) => {
            let _ = tx.send(Outgoing::Frame(frame));
            Ok(false)
        }
        requests::Reply::Close(why) => Err(io::Error::new(io::ErrorKind::InvalidData, why)),
    }
}

/// Whether a request frame is a ping (op 11), by its header alone.
fn is_ping(frame: &[u8]) -> bool {
    frame.len() >= 8 && i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]) == 11
}
