//! Transport tests: the codec against random and damaged bytes, and real TCP connections on
//! loopback (ephemeral ports) for delivery, order, reconnects, backpressure and refusals.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, unbounded};

use super::frame::{self, FrameError, Hello, read_frame};
use super::wire::DecodeError;
use super::*;
use crate::acker::{AckEvent, AckerMsg};
use crate::collector::{BoltOutput, SpoutOutput};
use crate::component::{Bolt, BoxError, Spout, StreamDecl, bolt_fn_streams, spout_fn};
use crate::topology::{Topology, TopologyBuilder};
use crate::tuple::{Anchor, Anchors, StreamSource, Tuple};
use crate::value::{Value, Values};
use crate::values;

/// How long any wait in these tests may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(20);

struct Idle;
impl Spout for Idle {
    fn next_tuple(&mut self, _: &mut SpoutOutput<'_>) {}
}
impl Bolt for Idle {
    fn execute(&mut self, _: &Tuple, _: &mut BoltOutput<'_>) -> Result<(), BoxError> {
        Ok(())
    }
}

/// A topology with three streams: `numbers` emits `n, word, flag`; `split` emits `word` on the
/// default stream and `word, len` on `lengths`. `extra` adds a stream to `split`, which changes
/// the fingerprint but not the name.
fn topology_named(name: &str, extra: bool) -> Topology {
    let mut builder = TopologyBuilder::new(name);
    builder.spout("numbers", 2, spout_fn(["n", "word", "flag"], |_| Idle));
    let mut streams = vec![StreamDecl::default_stream(["word"]), StreamDecl::named("lengths", ["word", "len"])];
    if extra {
        streams.push(StreamDecl::named("extra", ["x"]));
    }
    builder.bolt("split", 2, bolt_fn_streams(streams, |_| Idle)).shuffle("numbers");
    builder.build().expect("a valid topology")
}

fn streams() -> Arc<StreamTable> {
    Arc::new(StreamTable::new(&topology_named("transport-test", false)))
}

fn numbers() -> &'static StreamSource {
    // Interning costs more than sending: looked up once, for the loops that send millions.
    static NUMBERS: OnceLock<&'static StreamSource> = OnceLock::new();
    NUMBERS.get_or_init(|| StreamSource::intern("numbers", "default", &["n", "word", "flag"].into()))
}

fn lengths() -> &'static StreamSource {
    StreamSource::intern("split", "lengths", &["word", "len"].into())
}

/// A small tuple numbered `seq`, as a spout would emit it.
fn numbered(seq: u64) -> Message {
    let anchors: Anchors = [Anchor { root: seq ^ 0x5555, edge: seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) }].into();
    Message::Tuple(Tuple { values: values![seq, "word", true], source: numbers(), source_task: 1, anchors })
}

fn seq_of(message: &Message) -> u64 {
    match message {
        Message::Tuple(t) => t.values[0].as_int().expect("an int") as u64,
        other => panic!("not a numbered tuple: {other:?}"),
    }
}

/// A message of every kind.
fn every_kind() -> Vec<Envelope> {
    let tuple = Tuple {
        values: values![
            Value::Null,
            -7_i64,
            i64::MIN,
            f64::MAX,
            "a string longer than twenty-three bytes, so not inline",
            Value::Bytes(vec![0, 255, 7]),
            false
        ],
        source: lengths(),
        source_task: 3,
        anchors: [Anchor { root: 1, edge: u64::MAX }, Anchor { root: u64::MAX, edge: 2 }].into_iter().collect(),
    };
    let kinds = [
        Message::Tuple(tuple),
        Message::Tuple(Tuple { values: Values::new(), source: numbers(), source_task: 0, anchors: Anchors::new() }),
        Message::Acker(AckerMsg::Init { root: 11, xor: 0xdead_beef_dead_beef, spout: 1 }),
        Message::Acker(AckerMsg::Ack { root: 12, xor: 1 }),
        Message::Acker(AckerMsg::Fail { root: 13 }),
        Message::AckEvent(AckEvent { root: 14, ok: true }),
        Message::AckEvent(AckEvent { root: 15, ok: false }),
    ];
    kinds.into_iter().enumerate().map(|(i, message)| Envelope { to: i as u32 * 1000, message }).collect()
}

/// SplitMix64: a small generator whose sequence is fixed by its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn value(&mut self) -> Value {
        match self.below(7) {
            0 => Value::Null,
            1 => Value::Bool(self.below(2) == 1),
            2 => Value::Int(self.next() as i64 >> self.below(64)),
            3 => {
                // NaN is not equal to itself; every other float must survive bit for bit.
                let f = f64::from_bits(self.next());
                Value::Float(if f.is_nan() { 0.5 } else { f })
            }
            4 => {
                let len = self.below(40) as usize;
                Value::Str((0..len).map(|_| char::from_u32(self.below(0x800) as u32).unwrap_or('?')).collect())
            }
            5 => Value::Bytes((0..self.below(40)).map(|_| self.next() as u8).collect()),
            _ => Value::Str("word".into()),
        }
    }

    fn envelope(&mut self) -> Envelope {
        let root = self.next();
        let message = match self.below(5) {
            0 | 1 => Message::Tuple(Tuple {
                values: (0..self.below(5)).map(|_| self.value()).collect(),
                source: if self.below(2) == 0 { numbers() } else { lengths() },
                source_task: self.below(1 << 20) as u32,
                anchors: (0..self.below(3)).map(|_| Anchor { root: self.next(), edge: self.next() }).collect(),
            }),
            2 => Message::Acker(match self.below(3) {
                0 => AckerMsg::Init { root, xor: self.next(), spout: self.next() as u32 },
                1 => AckerMsg::Ack { root, xor: self.next() },
                _ => AckerMsg::Fail { root },
            }),
            _ => Message::AckEvent(AckEvent { root, ok: self.below(2) == 0 }),
        };
        Envelope { to: self.next() as u32 >> self.below(32), message }
    }
}

fn encode_all(table: &StreamTable, envelopes: &[Envelope]) -> Vec<u8> {
    let mut buf = Vec::new();
    for e in envelopes {
        table.encode(e.to, &e.message, &mut buf).expect("encodable");
    }
    buf
}

#[test]
fn every_message_kind_round_trips_through_the_codec() {
    let table = streams();
    let sent = every_kind();
    let bytes = encode_all(&table, &sent);
    assert_eq!(table.decode_batch(&bytes, sent.len() as u64).expect("decodes"), sent);
    match &table.decode_batch(&bytes, sent.len() as u64).expect("decodes")[0].message {
        Message::Tuple(t) => assert!(std::ptr::eq(t.source, lengths()), "decoded to the interned source"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn random_messages_round_trip_and_damaged_bytes_are_errors_not_panics() {
    let table = streams();
    let mut rng = Rng(0x5eed);
    for round in 0..2000 {
        let sent: Vec<Envelope> = (0..1 + rng.below(8)).map(|_| rng.envelope()).collect();
        let bytes = encode_all(&table, &sent);
        let count = sent.len() as u64;
        assert_eq!(table.decode_batch(&bytes, count).expect("decodes"), sent, "round {round}");

        // Every strict prefix is missing something the count promises.
        let cut = rng.below(bytes.len() as u64) as usize;
        assert!(table.decode_batch(&bytes[..cut], count).is_err(), "round {round}: prefix of {cut} decoded");
        // Extra bytes are never silently ignored.
        let mut longer = bytes.clone();
        longer.push(rng.next() as u8);
        assert!(table.decode_batch(&longer, count).is_err(), "round {round}: trailing byte accepted");
        // Flipped, inserted and removed bytes, and wrong counts: any result but a panic.
        for _ in 0..10 {
            let mut damaged = bytes.clone();
            let at = rng.below(damaged.len() as u64) as usize;
            match rng.below(3) {
                0 => damaged[at] ^= 1 << rng.below(8),
                1 => damaged.insert(at, rng.next() as u8),
                _ => {
                    damaged.remove(at);
                }
            }
            let _ = table.decode_batch(&damaged, count);
            let _ = table.decode_batch(&bytes, rng.next() >> rng.below(64));
        }
        // Pure garbage.
        let garbage: Vec<u8> = (0..rng.below(64)).map(|_| rng.next() as u8).collect();
        let _ = table.decode_batch(&garbage, rng.below(10));
        let _ = read_frame(&mut garbage.as_slice(), 1024, &mut Vec::new());
        let _ = Hello::decode(frame::HELLO, &garbage);
        let _ = frame::ack_count(&garbage);
    }
}

#[test]
fn decoding_names_what_is_wrong() {
    let table = streams();
    let mut bytes = Vec::new();
    wire::put_varint(&mut bytes, 5); // to
    bytes.push(0); // tuple
    wire::put_varint(&mut bytes, 99); // stream id
    let err = table.decode_batch(&bytes, 1).unwrap_err();
    assert!(matches!(err, DecodeError::UnknownStream { id: 99, known: 3, .. }), "{err}");
    assert!(err.to_string().contains("transport-test"), "{err}");

    assert_eq!(table.decode_batch(&[5, 9], 1).unwrap_err(), DecodeError::UnknownKind(9));
    assert!(matches!(table.decode_batch(&[5], 1), Err(DecodeError::CountTooLarge { .. })));
    assert_eq!(table.decode_batch(&[5, 2, 1], 1).unwrap_err(), DecodeError::Truncated("root id"));
    let eleven_byte_varint = [0xff; 11];
    assert!(matches!(table.decode_batch(&eleven_byte_varint, 1), Err(DecodeError::BadVarint(_))));
    // A forged huge count fails before anything is allocated for it.
    assert!(matches!(table.decode_batch(&[0; 16], u64::MAX), Err(DecodeError::CountTooLarge { .. })));
}

#[test]
fn a_tuple_of_an_undeclared_stream_is_refused_at_encoding() {
    let table = streams();
    let stranger = StreamSource::intern("nobody", "default", &["x"].into());
    let message = Message::Tuple(Tuple::new(stranger, 0, values![1]));
    let err = table.encode(0, &message, &mut Vec::new()).unwrap_err();
    assert_eq!(err.to_string(), "stream 'default' of component 'nobody' is not declared by topology 'transport-test'");
}

#[test]
fn the_stream_fingerprint_tells_topologies_apart() {
    let a = StreamTable::new(&topology_named("transport-test", false));
    assert_eq!(a.fingerprint(), streams().fingerprint(), "the same topology hashes the same");
    assert_ne!(a.fingerprint(), StreamTable::new(&topology_named("transport-test", true)).fingerprint());
    assert_ne!(a.fingerprint(), StreamTable::new(&topology_named("other", false)).fingerprint());
}

// ---------------------------------------------------------------------------------------
// Over TCP.

/// A started transport and what it received.
struct Node {
    transport: Transport,
    inbox: Receiver<(WorkerId, Vec<Envelope>)>,
    /// Received but not yet taken by `receive`.
    pending: RefCell<VecDeque<(WorkerId, Envelope)>>,
    threads: Box<dyn Fn() -> usize + Send>,
}

impl Node {
    fn start(worker: &str) -> Node {
        Node::start_with(worker, streams(), "127.0.0.1:0", TransportSettings::default())
    }

    fn start_with(worker: &str, table: Arc<StreamTable>, listen: &str, settings: TransportSettings) -> Node {
        let (tx, inbox) = unbounded();
        let delivery: Delivery = Arc::new(move |from: &WorkerId, batch| {
            let _ = tx.send((from.clone(), batch));
        });
        Node::start_delivering(worker, table, listen, settings, delivery, inbox)
    }

    fn start_delivering(
        worker: &str,
        table: Arc<StreamTable>,
        listen: &str,
        settings: TransportSettings,
        delivery: Delivery,
        inbox: Receiver<(WorkerId, Vec<Envelope>)>,
    ) -> Node {
        let transport = Transport::start(worker.into(), table, listen, settings, delivery).expect("listening");
        let threads = Box::new(transport.thread_count());
        Node { transport, inbox, pending: RefCell::default(), threads }
    }

    fn addr(&self) -> String {
        self.transport.local_addr().to_string()
    }

    /// The next `n` envelopes, in arrival order.
    fn receive(&self, n: usize) -> Vec<(WorkerId, Envelope)> {
        let deadline = Instant::now() + PATIENCE;
        let mut pending = self.pending.borrow_mut();
        while pending.len() < n {
            match self.inbox.recv_deadline(deadline) {
                Ok((from, batch)) => pending.extend(batch.into_iter().map(|e| (from.clone(), e))),
                Err(_) => panic!("{} of {n} messages arrived in {PATIENCE:?}", pending.len()),
            }
        }
        pending.drain(..n).collect()
    }

    /// Everything received and not yet taken.
    fn received_now(&self) -> Vec<Envelope> {
        let mut pending = self.pending.borrow_mut();
        pending
            .extend(self.inbox.try_iter().flat_map(|(from, batch)| batch.into_iter().map(move |e| (from.clone(), e))));
        pending.drain(..).map(|(_, e)| e).collect()
    }

    /// Closes the transport, checks that none of its threads is left, and returns what it
    /// received and had not been taken, and what was still queued for its peers.
    fn close(self) -> (Vec<Envelope>, Vec<Envelope>) {
        let Node { transport, inbox, pending, threads } = self;
        let unsent = transport.close();
        assert_eq!(threads(), 0, "threads left running after close");
        let mut received: Vec<Envelope> = pending.into_inner().into_iter().map(|(_, e)| e).collect();
        received.extend(inbox.try_iter().flat_map(|(_, batch)| batch));
        (received, unsent)
    }
}

fn peers(list: &[(&str, &Node)]) -> Vec<(WorkerId, String)> {
    list.iter().map(|(id, node)| (WorkerId::new(id), node.addr())).collect()
}

/// Waits until `done` holds.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "not within {PATIENCE:?}: {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// An address nothing listens on.
fn dead_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port")
}

#[test]
fn every_message_kind_crosses_a_connection_both_ways() {
    let a = Node::start("node-1-0");
    let b = Node::start("node-2-0");
    assert!(a.transport.set_peers(peers(&[("node-2-0", &b)])).is_empty());
    assert!(b.transport.set_peers(peers(&[("node-1-0", &a)])).is_empty());
    for e in every_kind() {
        a.transport.send("node-2-0", e.to, &e.message).expect("queued");
        b.transport.send("node-1-0", e.to, &e.message).expect("queued");
    }
    let expected: Vec<(WorkerId, Envelope)> = every_kind().into_iter().map(|e| ("node-1-0".into(), e)).collect();
    assert_eq!(b.receive(expected.len()), expected);
    let expected: Vec<(WorkerId, Envelope)> = every_kind().into_iter().map(|e| ("node-2-0".into(), e)).collect();
    assert_eq!(a.receive(expected.len()), expected);
    eventually("the peer acknowledges all seven", || a.transport.stats().link("node-2-0").unwrap().acked == 7);
    let stats = a.transport.stats();
    let link = stats.link("node-2-0").expect("a link");
    assert!(link.connected && link.connects == 1 && link.written == 7 && link.lost == 0, "{link:?}");
    assert_eq!(stats.received, 7);
    a.close();
    b.close();
}

#[test]
fn order_is_kept_per_sender_and_destination() {
    let a = Node::start("node-1-0");
    let b = Node::start("node-2-0");
    let c = Node::start("node-3-0");
    a.transport.set_peers(peers(&[("node-2-0", &b), ("node-3-0", &c)]));
    b.transport.set_peers(peers(&[("node-3-0", &c)]));
    const PER_THREAD: u64 = 20_000;
    std::thread::scope(|s| {
        // Four threads on `a` and one on `b` send to tasks 0..4 of both `b` and `c`.
        for thread in 0..4u64 {
            let a = &a.transport;
            s.spawn(move || {
                for i in 0..PER_THREAD {
                    let seq = thread << 32 | i;
                    for peer in ["node-2-0", "node-3-0"] {
                        a.send(peer, (i % 4) as u32, &numbered(seq)).expect("queued");
                    }
                }
            });
        }
        let b = &b.transport;
        s.spawn(move || {
            for i in 0..PER_THREAD {
                b.send("node-3-0", (i % 4) as u32, &numbered(9 << 32 | i)).expect("queued");
            }
        });
    });
    for (node, expected) in [(&b, 4 * PER_THREAD), (&c, 5 * PER_THREAD)] {
        let mut last: FxHashMap<(WorkerId, u64, u32), u64> = FxHashMap::default();
        for (from, e) in node.receive(expected as usize) {
            let seq = seq_of(&e.message);
            let (thread, i) = (seq >> 32, seq & 0xffff_ffff);
            assert_eq!(e.to, (i % 4) as u32);
            if let Some(prev) = last.insert((from.clone(), thread, e.to), i) {
                assert!(i > prev, "from {from} thread {thread} to task {}: {i} after {prev}", e.to);
            }
        }
    }
    a.close();
    b.close();
    c.close();
}

#[test]
fn a_million_small_tuples_arrive_complete_and_in_order() {
    let a = Node::start("node-1-0");
    let b = Node::start("node-2-0");
    a.transport.set_peers(peers(&[("node-2-0", &b)]));
    const N: u64 = 1_000_000;
    let started = Instant::now();
    let receiver = std::thread::spawn(move || {
        let deadline = Instant::now() + PATIENCE;
        let mut next = 0u64;
        while next < N {
            let (_, batch) = b.inbox.recv_deadline(deadline).expect("tuples keep arriving");
            for e in batch {
                assert_eq!(seq_of(&e.message), next, "out of order or missing");
                next += 1;
            }
        }
        b
    });
    for seq in 0..N {
        a.transport.send("node-2-0", 7, &numbered(seq)).expect("queued");
    }
    let b = receiver.join().expect("every tuple arrived in order");
    let elapsed = started.elapsed();
    eprintln!("{N} tuples in {elapsed:?}: {:.0} tuples/s", N as f64 / elapsed.as_secs_f64());
    let stats = a.transport.stats();
    assert_eq!(stats.lost, 0);
    assert!(b.received_now().is_empty());
    a.close();
    b.close();
}

/// A peer on `listener` that passes the handshake as `worker` and reads batches without ever
/// acknowledging them. It hands over its connection, so the test can cut it off ("crash" it),
/// and returns how many messages it read.
fn mute_peer(listener: TcpListener, worker: &'static str) -> (Receiver<TcpStream>, std::thread::JoinHandle<u64>) {
    let (tx, rx) = unbounded();
    let thread = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("the sender connects");
        let mut body = Vec::new();
        assert_eq!(read_frame(&mut stream, 1 << 16, &mut body).expect("a hello"), frame::HELLO);
        stream.write_all(&frame::welcome(worker)).unwrap();
        tx.send(stream.try_clone().unwrap()).unwrap();
        let mut read = 0;
        while let Ok(frame::BATCH) = read_frame(&mut stream, 1 << 24, &mut body) {
            read += frame::batch_body(&body).unwrap().0;
        }
        read
    });
    (rx, thread)
}

#[test]
fn a_receiver_restarted_on_the_same_port_gets_later_messages_and_losses_are_counted() {
    let a = Node::start("node-1-0");
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    let port = listener.local_addr().unwrap().to_string();
    a.transport.set_peers([("node-2-0".into(), port.clone())]);
    let link = || a.transport.stats().link("node-2-0").cloned().unwrap();
    let mut sent = 0u64;
    let mut send = |n: u64| {
        for _ in 0..n {
            a.transport.send("node-2-0", 0, &numbered(sent)).expect("queued");
            sent += 1;
        }
        sent
    };
    let gone = |what: &str| eventually(what, || !link().connected);

    // First on the port, a peer that takes messages without acknowledging them, then crashes.
    let (mute_connection, mute) = mute_peer(listener, "node-2-0");
    let total = send(100);
    eventually("the first 100 are written", || link().written == total);
    let _ = mute_connection.recv_timeout(PATIENCE).expect("connected").shutdown(std::net::Shutdown::Both);
    let read_by_mute = mute.join().expect("the mute peer ran");
    gone("the sender notices the mute peer is gone");
    assert_eq!(link().lost, 100, "nothing the mute peer read (it read {read_by_mute}) was acknowledged");

    // While nothing listens, messages wait in the queue; then a real worker takes the port.
    send(100);
    eventually("the sender fails to reconnect", || link().last_error.is_some_and(|e| e.contains("refused")));
    let b = Node::start_with("node-2-0", streams(), &port, TransportSettings::default());
    let total = send(100);
    let mut received: Vec<u64> = b.receive(200).iter().map(|(_, e)| seq_of(&e.message)).collect();
    eventually("everything is acknowledged", || link().acked == total - 100);

    // Killed: its listener and connections are gone; it comes back on the same port.
    let (rest, _) = b.close();
    received.extend(rest.iter().map(|e| seq_of(&e.message)));
    gone("the sender notices the worker is gone");
    send(100);
    let b = Node::start_with("node-2-0", streams(), &port, TransportSettings::default());
    send(100);
    received.extend(b.receive(200).iter().map(|(_, e)| seq_of(&e.message)));

    assert_eq!(received, (100..500).collect::<Vec<_>>(), "everything after the mute peer arrived, in order");
    let stats = a.transport.stats();
    assert_eq!(stats.lost, 100, "the loss counter says exactly how many never arrived");
    assert_eq!(stats.link("node-2-0").unwrap().connects, 3);
    a.close();
    b.close();
}

#[test]
fn a_receiver_killed_mid_stream_loses_only_what_the_counter_says() {
    let settings = TransportSettings { queue_bytes: 64 << 10, ..TransportSettings::default() };
    let a = Node::start_with("node-1-0", streams(), "127.0.0.1:0", settings);
    let b = Node::start("node-2-0");
    let port = b.addr();
    a.transport.set_peers([("node-2-0".into(), port.clone())]);
    let stop = AtomicBool::new(false);
    let sent = AtomicU64::new(0);
    let (received, b) = std::thread::scope(|s| {
        s.spawn(|| {
            let mut seq = 0;
            while !stop.load(Ordering::Relaxed) {
                a.transport.send("node-2-0", 0, &numbered(seq)).expect("queued");
                seq += 1;
            }
            sent.store(seq, Ordering::SeqCst);
        });
        let mut received: Vec<u64> = b.receive(20_000).iter().map(|(_, e)| seq_of(&e.message)).collect();
        let (rest, _) = b.close();
        received.extend(rest.iter().map(|e| seq_of(&e.message)));
        let b = Node::start_with("node-2-0", streams(), &port, TransportSettings::default());
        received.extend(b.receive(20_000).iter().map(|(_, e)| seq_of(&e.message)));
        stop.store(true, Ordering::Relaxed);
        (received, b)
    });
    let sent = sent.load(Ordering::SeqCst);
    a.transport.send("node-2-0", 0, &numbered(sent)).expect("queued");
    let mut received = received;
    while received.last() != Some(&sent) {
        received.extend(b.receive(1).iter().map(|(_, e)| seq_of(&e.message)));
    }
    let missing = sent + 1 - received.len() as u64;
    assert!(received.windows(2).all(|w| w[0] < w[1]), "no duplicates, in order");
    let lost = a.transport.stats().lost;
    assert!(missing <= lost, "{missing} messages never arrived, but only {lost} were counted lost");
    // What is lost is the unacknowledged tail of the dead connection: one run of messages.
    let gaps = received.windows(2).filter(|w| w[1] != w[0] + 1).count() + usize::from(received[0] != 0);
    assert!(gaps <= 1, "{gaps} separate runs of messages are missing");
    eprintln!("sent {}, lost {lost}, missing {missing}", sent + 1);
    a.close();
    b.close();
}

#[test]
fn a_receiver_that_does_not_read_makes_senders_wait_and_give_up() {
    // The receiver's delivery blocks until the gate is dropped.
    let (gate_tx, gate) = unbounded::<()>();
    let (tx, inbox) = unbounded();
    let delivery: Delivery = Arc::new(move |from: &WorkerId, batch| {
        let _ = gate.recv();
        let _ = tx.send((from.clone(), batch));
    });
    let b = Node::start_delivering("node-2-0", streams(), "127.0.0.1:0", TransportSettings::default(), delivery, inbox);
    let settings = TransportSettings { queue_bytes: 64 << 10, ..TransportSettings::default() };
    let a = Node::start_with("node-1-0", streams(), "127.0.0.1:0", settings);
    a.transport.set_peers(peers(&[("node-2-0", &b)]));

    let big = |seq: u64| {
        Message::Tuple(Tuple {
            values: values![seq, "word", Value::Bytes(vec![7; 1024])],
            source: numbers(),
            source_task: 0,
            anchors: Anchors::new(),
        })
    };
    let mut accepted = 0u64;
    let timed_out_at = loop {
        let started = Instant::now();
        match a.transport.send_timeout("node-2-0", 0, &big(accepted), Duration::from_millis(100)) {
            Ok(()) => accepted += 1,
            Err(SendError::Timeout) => break started.elapsed(),
            Err(e) => panic!("{e}"),
        }
        // Loopback socket buffers hold a few MiB; far more than that means nothing pushes back.
        assert!(accepted < 100_000, "100 MiB accepted by a receiver that reads nothing");
    };
    assert!(timed_out_at >= Duration::from_millis(100), "gave up after {timed_out_at:?}");
    assert_eq!(a.transport.try_send("node-2-0", 0, &big(accepted)), Err(SendError::Full));
    let queued = a.transport.stats().link("node-2-0").unwrap().queued_bytes;
    assert!(queued <= (64 << 10) + 1100, "{queued} bytes queued past the bound");

    drop(gate_tx);
    let got: Vec<u64> = b.receive(accepted as usize).iter().map(|(_, e)| seq_of(&e.message)).collect();
    assert_eq!(got, (0..accepted).collect::<Vec<_>>());
    eprintln!("{accepted} messages of 1 KiB accepted before the sender had to wait");
    a.close();
    b.close();
}

#[test]
fn handshakes_for_another_topology_worker_or_version_are_refused() {
    let b = Node::start("node-2-0");
    let other_topology = Arc::new(StreamTable::new(&topology_named("other", false)));
    let other_version = Arc::new(StreamTable::new(&topology_named("transport-test", true)));
    let cases = [
        (other_topology, "node-2-0", "this worker runs topology 'transport-test', not 'other'"),
        (streams(), "node-9-0", "this is worker node-2-0, not node-9-0"),
        (other_version, "node-2-0", "declares different streams here"),
    ];
    for (i, (table, target, reason)) in cases.into_iter().enumerate() {
        let a = Node::start_with("node-1-0", table, "127.0.0.1:0", TransportSettings::default());
        a.transport.set_peers([(target.into(), b.addr())]);
        a.transport.send(target, 0, &Message::Acker(AckerMsg::Fail { root: 1 })).expect("queued");
        eventually("the refusal is reported", || {
            let link = a.transport.stats().link(target).cloned().unwrap();
            link.last_error.is_some_and(|e| e.contains(reason))
        });
        let error = a.transport.stats().link(target).unwrap().last_error.clone().unwrap();
        assert!(error.contains("refused the connection"), "{error}");
        eventually("the receiver counts it", || b.transport.stats().refused > i as u64);
        // What was queued for it is still there, and comes back when the peer is dropped.
        assert_eq!(a.transport.set_peers([]).len(), 1);
        a.close();
    }
    let (received, _) = b.close();
    assert!(received.is_empty());
}

/// A raw connection that has passed the handshake as worker `from`.
fn raw_connection(to: &Node, from: &str) -> TcpStream {
    let mut stream = TcpStream::connect(to.addr()).expect("connects");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let table = streams();
    let hello = Hello {
        topology: table.topology().into(),
        fingerprint: table.fingerprint(),
        from: from.into(),
        to: to.transport.worker().to_string(),
    };
    stream.write_all(&hello.encode()).unwrap();
    let mut body = Vec::new();
    assert_eq!(read_frame(&mut stream, 1024, &mut body).expect("an answer"), frame::WELCOME);
    stream
}

/// Whether the other end closed `stream` (reading finds its end or a reset, not a timeout).
fn closed_by_peer(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 64];
    loop {
        match stream.read(&mut byte) {
            Ok(0) => return true,
            Ok(_) => continue, // an ACK or a REFUSE before the close
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return false;
            }
            Err(_) => return true,
        }
    }
}

#[test]
fn oversized_and_malformed_frames_close_only_their_connection() {
    let settings = TransportSettings { max_frame: 1 << 20, ..TransportSettings::default() };
    let b = Node::start_with("node-2-0", streams(), "127.0.0.1:0", settings);
    let a = Node::start("node-1-0");
    a.transport.set_peers(peers(&[("node-2-0", &b)]));
    a.transport.send("node-2-0", 1, &numbered(0)).expect("queued");
    assert_eq!(b.receive(1).len(), 1);

    let mut attacks: Vec<(&str, TcpStream)> = Vec::new();
    let mut oversized = raw_connection(&b, "raw-1");
    oversized.write_all(&((1u32 << 20) + 1).to_be_bytes()).unwrap();
    attacks.push(("a length over the limit", oversized));

    let mut garbage = raw_connection(&b, "raw-2");
    let mut frame = vec![0, 0, 0, 0, frame::BATCH, 3, 0, 0, 0];
    frame.extend_from_slice(b"definitely not three messages");
    let len = (frame.len() - 4) as u32;
    frame[..4].copy_from_slice(&len.to_be_bytes());
    garbage.write_all(&frame).unwrap();
    attacks.push(("garbage in a batch", garbage));

    let mut unknown_stream = raw_connection(&b, "raw-3");
    unknown_stream.write_all(&[0, 0, 0, 9, frame::BATCH, 1, 0, 0, 0, 0, 0, 42, 0]).unwrap();
    attacks.push(("an unknown stream id", unknown_stream));

    let mut not_a_worker = TcpStream::connect(b.addr()).unwrap();
    not_a_worker.set_read_timeout(Some(PATIENCE)).unwrap();
    not_a_worker.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    attacks.push(("an HTTP request", not_a_worker));

    let mut empty = raw_connection(&b, "raw-4");
    empty.write_all(&[0, 0, 0, 0]).unwrap();
    attacks.push(("a frame of length 0", empty));

    for (what, mut stream) in attacks {
        assert!(closed_by_peer(&mut stream), "{what}: the connection stayed open");
    }
    // The real peer's connection is untouched.
    a.transport.send("node-2-0", 1, &numbered(1)).expect("queued");
    assert_eq!(seq_of(&b.receive(1)[0].1.message), 1);
    let stats = b.transport.stats();
    assert_eq!((stats.broken, stats.refused), (4, 1));
    assert_eq!(a.transport.stats().link("node-2-0").unwrap().connects, 1);
    a.close();
    b.close();
}

#[test]
fn a_new_assignment_hands_back_queued_messages_or_follows_the_peer() {
    let a = Node::start("node-1-0");
    a.transport.set_peers([("node-2-0".into(), dead_addr().to_string()), ("node-3-0".into(), dead_addr().to_string())]);
    for seq in 0..5 {
        a.transport.send("node-2-0", seq as u32, &numbered(seq)).expect("queued");
        a.transport.send("node-3-0", seq as u32, &numbered(100 + seq)).expect("queued");
    }
    eventually("both links are failing to connect", || {
        a.transport.stats().links.iter().all(|l| l.last_error.as_deref().is_some_and(|e| e.contains("refused")))
    });

    // node-3-0 moved to a worker now listening elsewhere; node-2-0 left the assignment.
    let c = Node::start("node-3-0");
    let handed_back = a.transport.set_peers(peers(&[("node-3-0", &c)]));
    let seqs: Vec<(u32, u64)> = handed_back.iter().map(|e| (e.to, seq_of(&e.message))).collect();
    assert_eq!(seqs, (0..5).map(|s| (s as u32, s)).collect::<Vec<_>>(), "returned in order");
    let arrived: Vec<u64> = c.receive(5).iter().map(|(_, e)| seq_of(&e.message)).collect();
    assert_eq!(arrived, (100..105).collect::<Vec<_>>());

    assert_eq!(a.transport.send("node-2-0", 0, &numbered(9)), Err(SendError::UnknownPeer("node-2-0".into())));
    a.close();
    c.close();
}

#[test]
fn senders_to_a_dead_peer_give_up_and_closing_releases_blocked_ones() {
    let settings = TransportSettings { queue_bytes: 1024, ..TransportSettings::default() };
    let a = Node::start_with("node-1-0", streams(), "127.0.0.1:0", settings);
    a.transport.set_peers([("node-2-0".into(), dead_addr().to_string())]);
    // The writer takes the first frame and holds it while it fails to connect; after that
    // nothing leaves the queue.
    a.transport.send("node-2-0", 0, &numbered(0)).expect("queued");
    eventually("the writer fails to connect", || a.transport.stats().links[0].last_error.is_some());
    let mut queued = 1;
    while a.transport.try_send("node-2-0", 0, &numbered(queued)).is_ok() {
        queued += 1;
    }
    let started = Instant::now();
    let result = a.transport.send_timeout("node-2-0", 0, &numbered(queued), Duration::from_millis(50));
    assert_eq!(result, Err(SendError::Timeout));
    assert!(started.elapsed() >= Duration::from_millis(50));

    // A sender blocked without a deadline is released when the peer leaves the assignment.
    let (unsent, blocked) = std::thread::scope(|s| {
        let (tx, rx): (Sender<()>, Receiver<()>) = unbounded();
        let transport = &a.transport;
        let blocked = s.spawn(move || {
            let _ = tx.send(());
            transport.send("node-2-0", 0, &numbered(queued))
        });
        rx.recv().unwrap();
        // The sender is about to block or blocked; either way removing the peer releases it.
        let unsent = a.transport.set_peers([]);
        (unsent, blocked.join().unwrap())
    });
    assert!(matches!(blocked, Err(SendError::Closed) | Err(SendError::UnknownPeer(_))), "{blocked:?}");
    assert_eq!(unsent.len() as u64, queued);
    a.close();
}

#[test]
fn a_message_larger_than_a_frame_is_refused_and_others_still_go() {
    let settings = TransportSettings { max_frame: 4096, frame_bytes: 4000, ..TransportSettings::default() };
    let a = Node::start_with("node-1-0", streams(), "127.0.0.1:0", settings.clone());
    let b = Node::start_with("node-2-0", streams(), "127.0.0.1:0", settings);
    a.transport.set_peers(peers(&[("node-2-0", &b)]));
    let huge = Message::Tuple(Tuple::new(numbers(), 0, values![Value::Bytes(vec![0; 5000])]));
    assert!(matches!(a.transport.send("node-2-0", 0, &huge), Err(SendError::TooLarge { max: 4091, .. })));
    // Messages that fit one by one but not together are split over frames.
    let fits = Message::Tuple(Tuple::new(numbers(), 0, values![Value::Bytes(vec![0; 3000])]));
    for _ in 0..3 {
        a.transport.send("node-2-0", 0, &fits).expect("queued");
    }
    a.transport.send("node-2-0", 0, &numbered(1)).expect("queued");
    assert_eq!(b.receive(4).len(), 4);
    a.close();
    b.close();
}

/// `cargo test --release -p squall-runtime transport::tests::throughput -- --ignored --nocapture`
#[test]
#[ignore = "a measurement: run it by name, in release mode"]
fn throughput() {
    let a = Node::start("node-1-0");
    let b = Node::start("node-2-0");
    a.transport.set_peers(peers(&[("node-2-0", &b)]));
    let tuple = |seq: u64| {
        Message::Tuple(Tuple {
            values: values![seq, "word", true],
            source: numbers(),
            source_task: 1,
            anchors: [Anchor { root: seq, edge: !seq }].into(),
        })
    };
    for senders in [1u64, 2] {
        let per_sender = 2_000_000 / senders;
        let started = Instant::now();
        std::thread::scope(|s| {
            for t in 0..senders {
                let a = &a.transport;
                s.spawn(move || {
                    for seq in 0..per_sender {
                        a.send("node-2-0", t as u32, &tuple(seq)).expect("queued");
                    }
                });
            }
            let mut got = 0;
            while got < per_sender * senders {
                got += b.inbox.recv_timeout(PATIENCE).expect("arriving").1.len() as u64;
            }
        });
        let elapsed = started.elapsed();
        let n = per_sender * senders;
        eprintln!(
            "{senders} sender thread(s): {n} tuples in {elapsed:.2?}: {:.2} M tuples/s",
            n as f64 / elapsed.as_secs_f64() / 1e6
        );
    }
    let link = a.transport.stats().link("node-2-0").cloned().unwrap();
    eprintln!("link: {link:?}");
    a.close();
    b.close();
}

#[test]
fn frame_errors_say_what_happened() {
    let mut body = Vec::new();
    let too_large = read_frame(&mut [0u8, 1, 0, 0].as_slice(), 100, &mut body).unwrap_err();
    assert_eq!(too_large.to_string(), "a frame of 65536 bytes is over the limit of 100 bytes");
    let cut = read_frame(&mut [0u8, 0, 0, 5, frame::ACK, 1].as_slice(), 100, &mut body).unwrap_err();
    assert!(matches!(cut, FrameError::Truncated { got: 2, len: 5 }), "{cut}");
    assert!(matches!(read_frame(&mut [].as_slice(), 100, &mut body), Err(FrameError::Closed)));
}
