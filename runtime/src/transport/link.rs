//! Outbound: the link to one peer worker — its queue, its connection and the thread that
//! writes to it.
//!
//! The writer connects when the first frame is queued, and after a failure reconnects with
//! exponential backoff, leaving queued frames where they are. A frame whose write failed never
//! reached the peer whole, so it is written again on the next connection; frames that were
//! written but not yet acknowledged when a connection dies may or may not have arrived, and
//! are counted as lost (acking replays their trees). A second thread per connection reads the
//! peer's ACK frames and notices when the peer closes; the writer then ends the connection at
//! once, even when idle, so its next frame goes to a new connection rather than a dead one.

use std::io::{BufReader, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use super::frame::{self, FrameError, Hello, MAX_CONTROL_FRAME, read_frame};
use super::queue::{FrameQueue, Popped, Wait};
use super::wire::{Envelope, Message};
use super::{Context, LinkStats, SendError, WorkerId};
use crate::tuple::TaskId;

/// The link to one peer. Dropping it closes it (dropping what was queued).
pub(super) struct Link {
    shared: Arc<LinkShared>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

struct LinkShared {
    peer: WorkerId,
    addr: Mutex<String>,
    ctx: Arc<Context>,
    queue: FrameQueue,
    /// A handle on the current connection, so that closing the link or moving the peer can
    /// break a write blocked on a peer that stopped reading.
    live: Mutex<Option<TcpStream>>,
    written: AtomicU64,
    frames: AtomicU64,
    acked: AtomicU64,
    lost: AtomicU64,
    connects: AtomicU64,
    connected: AtomicBool,
    last_error: Mutex<Option<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every value behind these mutexes is valid between statements.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Link {
    /// A link to `peer` at `addr` ("host:port"); nothing connects until a message is sent.
    pub(super) fn start(ctx: &Arc<Context>, peer: WorkerId, addr: String) -> Link {
        let shared = Arc::new(LinkShared {
            queue: FrameQueue::new(&ctx.settings),
            peer,
            addr: Mutex::new(addr),
            ctx: ctx.clone(),
            live: Mutex::new(None),
            written: AtomicU64::new(0),
            frames: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            connects: AtomicU64::new(0),
            connected: AtomicBool::new(false),
            last_error: Mutex::new(None),
        });
        let writer = {
            let shared = shared.clone();
            ctx.spawn(format!("squall:out:{}", shared.peer), move || run_writer(&shared))
        };
        Link { shared, writer: Mutex::new(Some(writer)) }
    }

    /// Queues `message` for task `to` on the peer.
    pub(super) fn send(&self, to: TaskId, message: &Message, wait: Wait) -> Result<(), SendError> {
        self.shared.queue.push(&self.shared.ctx.streams, to, message, wait)
    }

    /// Points the link at a new address; the current connection, if any, is dropped.
    pub(super) fn set_addr(&self, addr: &str) {
        let mut current = lock(&self.shared.addr);
        if *current != addr {
            *current = addr.to_string();
            drop(current);
            self.shared.interrupt();
        }
    }

    /// Stops the link: senders waiting for room get [`SendError::Closed`], the writer stops
    /// (a write blocked on a stalled peer is broken off), and whatever was still queued is
    /// returned.
    pub(super) fn close(&self) -> Vec<Envelope> {
        self.shared.queue.close();
        self.shared.interrupt();
        if let Some(writer) = lock(&self.writer).take() {
            // A panic in the writer is a bug in this module; it has been printed, and what is
            // queued is still handed back.
            let _ = writer.join();
        }
        self.shared.queue.drain(&self.shared.ctx.streams)
    }

    pub(super) fn stats(&self) -> LinkStats {
        let s = &self.shared;
        LinkStats {
            peer: s.peer.clone(),
            addr: lock(&s.addr).clone(),
            connected: s.connected.load(Ordering::Relaxed),
            queued_bytes: s.queue.queued_bytes(),
            written: s.written.load(Ordering::Relaxed),
            frames: s.frames.load(Ordering::Relaxed),
            acked: s.acked.load(Ordering::Relaxed),
            lost: s.lost.load(Ordering::Relaxed),
            connects: s.connects.load(Ordering::Relaxed),
            last_error: lock(&s.last_error).clone(),
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.close();
    }
}

/// One open connection, owned by the writer.
struct Connection {
    stream: TcpStream,
    acks: Arc<AckState>,
    ack_reader: JoinHandle<()>,
    /// Messages written on this connection.
    written: u64,
}

/// What the ACK reader of a connection has learned.
#[derive(Default)]
struct AckState {
    /// Messages the peer has taken from this connection.
    received: AtomicU64,
    /// The peer closed the connection, or it failed.
    ended: AtomicBool,
}

fn run_writer(link: &Arc<LinkShared>) {
    let settings = &link.ctx.settings;
    let mut conn: Option<Connection> = None;
    let mut backoff = settings.backoff_min;
    let mut failures = 0u32;
    loop {
        let popped = link.queue.pop();
        if conn.as_ref().is_some_and(|c| c.acks.ended.load(Ordering::Acquire)) {
            link.end(conn.take().expect("checked"), "the peer closed the connection");
        }
        let mut frame = match popped {
            Popped::Frame(frame) => frame,
            Popped::Woken => continue,
            Popped::Closed => break,
        };
        loop {
            if conn.is_none() {
                match link.connect() {
                    Ok(c) => {
                        if failures > 0 {
                            tracing::info!("connected to worker {} after {failures} failed attempts", link.peer);
                        }
                        failures = 0;
                        conn = Some(c);
                    }
                    Err(e) => {
                        link.failed(e, failures);
                        failures += 1;
                        if link.queue.pause(backoff) {
                            link.queue.requeue(frame);
                            break;
                        }
                        backoff = (backoff * 2).min(settings.backoff_max);
                        continue;
                    }
                }
            }
            let c = conn.as_mut().expect("connected above");
            let messages = u64::from(frame.messages);
            match c.stream.write_all(frame.finished()) {
                Ok(()) => {
                    // Only a connection that carries frames ends the backoff: one that takes the
                    // handshake and then fails every write must not be reopened in a busy loop.
                    backoff = settings.backoff_min;
                    c.written += messages;
                    link.written.fetch_add(messages, Ordering::Relaxed);
                    link.frames.fetch_add(1, Ordering::Relaxed);
                    link.queue.recycle(frame.buf);
                    break;
                }
                Err(e) => {
                    // Not all of the frame went out, so the peer cannot have taken it: it is
                    // written again on the next connection, or handed back if the link closed.
                    let carried_nothing = c.written == 0;
                    link.end(conn.take().expect("connected above"), &format!("write failed: {e}"));
                    if link.queue.is_closed() || (carried_nothing && link.queue.pause(backoff)) {
                        link.queue.requeue(frame);
                        break;
                    }
                    if carried_nothing {
                        backoff = (backoff * 2).min(settings.backoff_max);
                    }
                }
            }
        }
    }
    if let Some(c) = conn {
        link.end(c, "the link was closed");
    }
}

impl LinkShared {
    /// Breaks off the current connection, if any.
    fn interrupt(&self) {
        if let Some(stream) = lock(&self.live).as_ref() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// Opens a connection and performs the handshake.
    fn connect(self: &Arc<Self>) -> Result<Connection, String> {
        let addr = lock(&self.addr).clone();
        let settings = &self.ctx.settings;
        let at = |e: &dyn std::fmt::Display| format!("worker {} at {addr}: {e}", self.peer);
        let stream = open(&addr, settings.connect_timeout).map_err(|e| at(&e))?;
        let hello = Hello {
            topology: self.ctx.streams.topology().to_string(),
            fingerprint: self.ctx.streams.fingerprint(),
            from: self.ctx.worker.to_string(),
            to: self.peer.to_string(),
        };
        let handshake = || -> Result<(), FrameError> {
            stream.set_nodelay(true)?;
            stream.set_read_timeout(Some(settings.handshake_timeout))?;
            stream.set_write_timeout(Some(settings.handshake_timeout))?;
            (&stream).write_all(&hello.encode())?;
            let mut body = Vec::new();
            match read_frame(&mut &stream, MAX_CONTROL_FRAME, &mut body)? {
                frame::WELCOME => {
                    let worker = frame::reply_text(&body)?;
                    if worker != self.peer {
                        return Err(FrameError::Protocol(format!("answered as worker {worker}")));
                    }
                }
                frame::REFUSE => {
                    let reason = frame::reply_text(&body)?;
                    return Err(FrameError::Protocol(format!("refused the connection: {reason}")));
                }
                kind => return Err(FrameError::Protocol(format!("answered the handshake with frame kind {kind}"))),
            }
            stream.set_read_timeout(None)?;
            stream.set_write_timeout(None)?;
            Ok(())
        };
        handshake().map_err(|e| at(&e))?;

        let reader = stream.try_clone().map_err(|e| at(&e))?;
        *lock(&self.live) = Some(stream.try_clone().map_err(|e| at(&e))?);
        // `close` and `set_addr` change their state before they interrupt: checking after
        // registering the connection means one of the two always sees the other.
        if self.queue.is_closed() || *lock(&self.addr) != addr {
            let _ = stream.shutdown(Shutdown::Both);
        }
        let acks = Arc::new(AckState::default());
        let ack_reader = {
            let (link, acks) = (self.clone(), acks.clone());
            self.ctx.spawn(format!("squall:acks:{}", self.peer), move || read_acks(reader, &acks, &link))
        };
        self.connects.fetch_add(1, Ordering::Relaxed);
        self.connected.store(true, Ordering::Relaxed);
        *lock(&self.last_error) = None;
        Ok(Connection { stream, acks, ack_reader, written: 0 })
    }

    /// Records a failed attempt; the first of a series is logged loudly, the rest quietly.
    fn failed(&self, error: String, earlier_failures: u32) {
        if earlier_failures == 0 {
            tracing::warn!("cannot reach {error}; retrying with backoff");
        } else {
            tracing::debug!("cannot reach {error} (attempt {})", earlier_failures + 1);
        }
        *lock(&self.last_error) = Some(error);
    }

    /// Closes a connection and counts what it may have lost.
    fn end(&self, conn: Connection, why: &str) {
        let _ = conn.stream.shutdown(Shutdown::Both);
        *lock(&self.live) = None;
        let _ = conn.ack_reader.join();
        self.connected.store(false, Ordering::Relaxed);
        let lost = conn.written.saturating_sub(conn.acks.received.load(Ordering::Acquire));
        if lost > 0 {
            self.lost.fetch_add(lost, Ordering::Relaxed);
            self.ctx.lost.fetch_add(lost, Ordering::Relaxed);
            tracing::warn!(
                "connection to worker {} ended ({why}); {lost} messages written to it were not acknowledged \
                 and are counted as lost",
                self.peer
            );
        } else {
            tracing::debug!("connection to worker {} ended ({why})", self.peer);
        }
        if !self.queue.is_closed() {
            *lock(&self.last_error) = Some(format!("connection to worker {} ended: {why}", self.peer));
        }
    }
}

/// Connects to the first address `addr` resolves to that accepts.
fn open(addr: &str, timeout: Duration) -> std::io::Result<TcpStream> {
    let mut last = None;
    for a in addr.to_socket_addrs()? {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("the address resolves to nothing")))
}

/// Reads a connection's ACK frames until it ends.
fn read_acks(stream: TcpStream, acks: &AckState, link: &LinkShared) {
    let mut r = BufReader::with_capacity(1024, stream);
    let mut body = Vec::new();
    let mut received = 0;
    let error = loop {
        let count = match read_frame(&mut r, MAX_CONTROL_FRAME, &mut body) {
            Ok(frame::ACK) => frame::ack_count(&body),
            Ok(kind) => Err(FrameError::Protocol(format!("unexpected frame kind {kind} from the receiver"))),
            Err(e) => Err(e),
        };
        match count {
            Ok(n) if n >= received => {
                link.acked.fetch_add(n - received, Ordering::Relaxed);
                acks.received.store(n, Ordering::Release);
                received = n;
            }
            Ok(n) => break Some(format!("acknowledged count went back from {received} to {n}")),
            Err(FrameError::Closed) => break None,
            Err(e) => break Some(e.to_string()),
        }
    };
    if let (Some(e), false) = (error, link.queue.is_closed()) {
        tracing::debug!("connection to worker {} failed: {e}", link.peer);
    }
    acks.ended.store(true, Ordering::Release);
    // The writer may be idle: it ends the connection now, which counts what it lost and
    // shows the link as disconnected.
    link.queue.wake();
}
