//! Inbound: the listener, and one reader thread per accepted connection.
//!
//! A reader checks the HELLO (same topology, same streams, addressed to this worker), then
//! decodes BATCH frames and hands each one's messages to the worker's delivery function. A
//! frame is decoded whole before any of it is delivered, so a bad frame delivers nothing; it
//! closes its connection (with a logged error) and nothing else. A delivery function that
//! blocks holds its reader, which stops reading: that is how a slow worker slows its peers.

use std::io::{BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use rustc_hash::FxHashMap;

use super::frame::{self, FrameError, Hello, MAX_CONTROL_FRAME, read_frame};
use super::{Context, Delivery, WorkerId};

/// A reader acknowledges at least every this many frames, and whenever it has read all that
/// has arrived.
const ACK_EVERY_FRAMES: u32 = 32;

/// How much a reader reads from its socket at once.
const READ_BUFFER: usize = 256 * 1024;

pub(super) struct Inbound {
    addr: SocketAddr,
    shared: Arc<InboundShared>,
    acceptor: Option<JoinHandle<()>>,
}

struct InboundShared {
    ctx: Arc<Context>,
    delivery: Delivery,
    stopping: AtomicBool,
    conns: Mutex<Conns>,
    received: AtomicU64,
    refused: AtomicU64,
    broken: AtomicU64,
}

#[derive(Default)]
struct Conns {
    next_id: u64,
    /// Open connections, with the worker at the other end once it has said who it is.
    open: FxHashMap<u64, (Option<WorkerId>, TcpStream)>,
    readers: Vec<JoinHandle<()>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every value behind these mutexes is valid between statements.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Counts of what the inbound side has seen.
pub(super) struct InboundCounts {
    pub(super) received: u64,
    pub(super) refused: u64,
    pub(super) broken: u64,
}

impl Inbound {
    pub(super) fn start(ctx: &Arc<Context>, listen: impl ToSocketAddrs, delivery: Delivery) -> std::io::Result<Self> {
        let listener = TcpListener::bind(listen)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(InboundShared {
            ctx: ctx.clone(),
            delivery,
            stopping: AtomicBool::new(false),
            conns: Mutex::new(Conns::default()),
            received: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            broken: AtomicU64::new(0),
        });
        let acceptor = {
            let shared = shared.clone();
            ctx.spawn("squall:accept".into(), move || accept_loop(&listener, &shared))
        };
        Ok(Inbound { addr, shared, acceptor: Some(acceptor) })
    }

    pub(super) fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub(super) fn counts(&self) -> InboundCounts {
        let s = &self.shared;
        InboundCounts {
            received: s.received.load(Ordering::Relaxed),
            refused: s.refused.load(Ordering::Relaxed),
            broken: s.broken.load(Ordering::Relaxed),
        }
    }

    /// Stops accepting, closes every connection and joins every thread. Returns once each
    /// reader has come back from the delivery call it was in.
    pub(super) fn close(&mut self) {
        let Some(acceptor) = self.acceptor.take() else { return };
        self.shared.stopping.store(true, Ordering::SeqCst);
        // `accept` has no timeout: a connection of our own wakes it to see the flag.
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(if wake.is_ipv4() { [127, 0, 0, 1].into() } else { std::net::Ipv6Addr::LOCALHOST.into() });
        }
        if let Err(e) = TcpStream::connect_timeout(&wake, Duration::from_secs(5)) {
            tracing::error!("cannot wake the listener on {wake} to stop it: {e}; leaving its thread behind");
            return;
        }
        let _ = acceptor.join();
        let readers = {
            let mut conns = lock(&self.shared.conns);
            for (_, stream) in conns.open.values() {
                let _ = stream.shutdown(Shutdown::Both);
            }
            std::mem::take(&mut conns.readers)
        };
        for reader in readers {
            let _ = reader.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<InboundShared>) {
    for stream in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            break;
        }
        match stream.and_then(|s| s.try_clone().map(|c| (s, c))) {
            Ok((stream, handle)) => {
                let mut conns = lock(&shared.conns);
                conns.readers.retain(|r| !r.is_finished());
                let id = conns.next_id;
                conns.next_id += 1;
                conns.open.insert(id, (None, handle));
                let shared2 = shared.clone();
                let reader = shared.ctx.spawn(format!("squall:in:{id}"), move || read_connection(&shared2, id, stream));
                conns.readers.push(reader);
            }
            Err(e) => {
                tracing::warn!("accepting a worker connection failed: {e}");
                // Out of file descriptors, say: give the process a moment rather than spin.
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn read_connection(shared: &InboundShared, id: u64, stream: TcpStream) {
    let from = stream.peer_addr().map(|a| a.to_string()).unwrap_or_else(|_| "an unknown address".into());
    let result = serve(shared, id, &stream);
    if let (Err(e), false) = (result, shared.stopping.load(Ordering::SeqCst)) {
        match e {
            Failure::Refused(reason) => {
                shared.refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("refused a worker connection from {from}: {reason}");
            }
            Failure::Broken(peer, error) => {
                shared.broken.fetch_add(1, Ordering::Relaxed);
                tracing::error!("closed the connection from worker {peer} at {from}: {error}");
            }
            Failure::Lost(peer, error) => tracing::info!("connection from worker {peer} at {from} failed: {error}"),
        }
    }
    lock(&shared.conns).open.remove(&id);
}

enum Failure {
    /// The handshake did not pass.
    Refused(String),
    /// The peer broke the protocol.
    Broken(WorkerId, FrameError),
    /// The connection failed.
    Lost(WorkerId, FrameError),
}

fn serve(shared: &InboundShared, id: u64, mut stream: &TcpStream) -> Result<(), Failure> {
    let settings = &shared.ctx.settings;
    let mut reader = BufReader::with_capacity(READ_BUFFER, stream);
    let mut body = Vec::new();
    let peer = handshake(shared, stream, &mut reader, &mut body)?;
    {
        // A new connection from a worker replaces its old one, which the worker has given up.
        let mut conns = lock(&shared.conns);
        for (other, (who, old)) in conns.open.iter() {
            if *other != id && who.as_ref() == Some(&peer) {
                let _ = old.shutdown(Shutdown::Both);
            }
        }
        if let Some(entry) = conns.open.get_mut(&id) {
            entry.0 = Some(peer.clone());
        }
    }
    let broken = |e: FrameError| match e {
        FrameError::Io(_) | FrameError::Truncated { .. } => Failure::Lost(peer.clone(), e),
        _ => Failure::Broken(peer.clone(), e),
    };
    let mut received = 0u64;
    let mut unacked_frames = 0;
    let mut ack = Vec::new();
    loop {
        let kind = match read_frame(&mut reader, settings.max_frame, &mut body) {
            Ok(kind) => kind,
            Err(FrameError::Closed) => return Ok(()),
            Err(e) => return Err(broken(e)),
        };
        if kind != frame::BATCH {
            return Err(broken(FrameError::Protocol(format!("unexpected frame kind {kind} after the handshake"))));
        }
        let (count, messages) = frame::batch_body(&body).map_err(broken)?;
        let envelopes = shared.ctx.streams.decode_batch(messages, count).map_err(|e| broken(e.into()))?;
        received += count;
        shared.received.fetch_add(count, Ordering::Relaxed);
        unacked_frames += 1;
        // Acknowledged once decoded: what the delivery function does with them is the local
        // worker's business, and it will not lose them to this connection failing.
        if reader.buffer().is_empty() || unacked_frames >= ACK_EVERY_FRAMES {
            frame::ack(&mut ack, received);
            stream.write_all(&ack).map_err(|e| broken(e.into()))?;
            unacked_frames = 0;
        }
        if !envelopes.is_empty() {
            (shared.delivery)(&peer, envelopes);
        }
    }
}

/// Reads the HELLO and answers it; returns the connecting worker.
fn handshake(
    shared: &InboundShared,
    mut stream: &TcpStream,
    reader: &mut BufReader<&TcpStream>,
    body: &mut Vec<u8>,
) -> Result<WorkerId, Failure> {
    let settings = &shared.ctx.settings;
    // Tells the peer why (best effort: it may not be a worker at all) and the log who.
    let refuse = |mut stream: &TcpStream, who: &str, reason: String| {
        let _ = stream.write_all(&frame::refuse(&reason));
        Failure::Refused(format!("{who}: {reason}"))
    };
    let setup = stream.set_nodelay(true).and_then(|()| stream.set_read_timeout(Some(settings.handshake_timeout)));
    if let Err(e) = setup {
        return Err(Failure::Refused(format!("cannot set up the connection: {e}")));
    }
    let hello = match read_frame(reader, MAX_CONTROL_FRAME, body).and_then(|kind| Hello::decode(kind, body)) {
        Ok(hello) => hello,
        Err(e) => return Err(refuse(stream, "not a worker", format!("bad handshake: {e}"))),
    };
    let streams = &shared.ctx.streams;
    let me = &shared.ctx.worker;
    let reason = if hello.topology != streams.topology() {
        Some(format!("this worker runs topology '{}', not '{}'", streams.topology(), hello.topology))
    } else if hello.to != *me {
        Some(format!("this is worker {me}, not {}", hello.to))
    } else if hello.fingerprint != streams.fingerprint() {
        Some(format!(
            "topology '{}' declares different streams here (fingerprint {:016x}, the sender's {:016x}): \
             the two workers run different versions of it",
            hello.topology,
            streams.fingerprint(),
            hello.fingerprint
        ))
    } else {
        None
    };
    if let Some(reason) = reason {
        return Err(refuse(stream, &format!("worker {}", hello.from), reason));
    }
    let answered = stream.write_all(&frame::welcome(me)).and_then(|()| stream.set_read_timeout(None));
    if let Err(e) = answered {
        return Err(Failure::Refused(format!("cannot answer worker {}: {e}", hello.from)));
    }
    Ok(WorkerId::new(&hello.from))
}
