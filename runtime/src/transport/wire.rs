//! What crosses between workers: messages addressed to tasks, and their byte encoding.
//!
//! Both ends of a connection run the same topology, so a tuple's stream travels as a small
//! integer from the [`StreamTable`] both build from it, and is decoded back to the interned
//! [`StreamSource`] the local tasks already use. Decoding checks everything it reads: an unknown
//! stream id, a cut-short message or stray bytes are a [`DecodeError`], never a panic.
//!
//! Encoding of one message (`varint` is LEB128, `u64le` is 8 bytes little-endian, and random
//! 64-bit ids travel as `u64le` because a varint would make them longer):
//!
//! ```text
//! message = to:varint kind:u8 body
//!   kind 0 tuple        stream:varint source_task:varint anchors:varint (root:u64le edge:u64le)*
//!                       values:varint value*
//!   kind 1 acker init   root:u64le xor:u64le spout:varint
//!   kind 2 acker ack    root:u64le xor:u64le
//!   kind 3 acker fail   root:u64le
//!   kind 4 tree acked   root:u64le            (an AckEvent for a spout task)
//!   kind 5 tree failed  root:u64le
//! value = 0 null | 1 false | 2 true | 3 int:zigzag-varint | 4 float:u64le (IEEE bits)
//!       | 5 str:varint-length utf8 | 6 bytes:varint-length bytes
//! ```

use std::hash::Hasher;

use rustc_hash::FxHashMap;
use smol_str::SmolStr;

use crate::acker::{AckEvent, AckerMsg};
use crate::topology::Topology;
use crate::tuple::{Anchor, Anchors, StreamSource, TaskId, Tuple};
use crate::value::{Value, Values};

/// What one worker sends to a task of another.
#[derive(Clone, Debug)]
pub(crate) enum Message {
    /// A tuple for a bolt task.
    Tuple(Tuple),
    /// A message for an acker task.
    Acker(AckerMsg),
    /// An acker's verdict on a tree, for the spout task that emitted its root.
    AckEvent(AckEvent),
}

impl PartialEq for Message {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Message::Tuple(a), Message::Tuple(b)) => {
                std::ptr::eq(a.source, b.source)
                    && a.source_task == b.source_task
                    && a.anchors == b.anchors
                    && a.values == b.values
            }
            (Message::Acker(a), Message::Acker(b)) => a == b,
            (Message::AckEvent(a), Message::AckEvent(b)) => a == b,
            _ => false,
        }
    }
}

/// A message and the task it is for.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Envelope {
    /// The destination task.
    pub(crate) to: TaskId,
    /// What it receives.
    pub(crate) message: Message,
}

/// Why a message could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum EncodeError {
    /// The tuple's stream is not one the topology declares.
    #[error("stream '{stream}' of component '{component}' is not declared by topology '{topology}'")]
    UnknownStream { topology: String, component: SmolStr, stream: SmolStr },
}

/// Why bytes from a peer are not a valid message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DecodeError {
    /// The bytes end in the middle of something.
    #[error("the frame ends inside {0}")]
    Truncated(&'static str),
    /// A varint longer than 10 bytes or wider than its type.
    #[error("malformed or out-of-range varint for {0}")]
    BadVarint(&'static str),
    /// A stream id the stream table does not have.
    #[error("stream id {id} is not in the stream table of topology '{topology}' ({known} streams)")]
    UnknownStream { id: u64, topology: String, known: usize },
    /// An unknown message kind.
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    /// An unknown value tag.
    #[error("unknown value tag {0}")]
    UnknownValueTag(u8),
    /// A string that is not UTF-8.
    #[error("a string value is not valid UTF-8")]
    BadUtf8,
    /// A count larger than the bytes left could hold.
    #[error("{what} count {count} is larger than the {left} bytes left in the frame")]
    CountTooLarge { what: &'static str, count: u64, left: usize },
    /// Bytes after the last message of a frame.
    #[error("{0} bytes follow the last message of the frame")]
    TrailingBytes(usize),
}

/// Every stream of a topology, numbered the same way by every worker that runs it.
///
/// Ids follow declaration order: components as declared, each component's streams as declared.
/// The [`fingerprint`](StreamTable::fingerprint) covers names, streams and fields, so two
/// workers whose topologies differ (an old and a redeployed version, say) refuse to talk.
#[derive(Debug)]
pub(crate) struct StreamTable {
    topology: String,
    sources: Vec<&'static StreamSource>,
    ids: FxHashMap<usize, u32>,
    fingerprint: u64,
}

impl StreamTable {
    /// The table of `topology`'s declared streams.
    pub(crate) fn new(topology: &Topology) -> Self {
        let mut sources = Vec::new();
        let mut hash = Fnv1a::default();
        hash.write_str(&topology.name);
        for component in &topology.components {
            hash.write_str(&component.id);
            for decl in &component.outputs {
                sources.push(StreamSource::intern(&component.id, &decl.name, &decl.fields));
                hash.write_str(&decl.name);
                hash.write_u8(u8::from(decl.direct));
                hash.write_usize(decl.fields.len());
                for field in decl.fields.names() {
                    hash.write_str(field);
                }
            }
        }
        let ids = sources.iter().enumerate().map(|(i, s)| (*s as *const StreamSource as usize, i as u32)).collect();
        StreamTable { topology: topology.name.clone(), sources, ids, fingerprint: hash.finish() }
    }

    /// The topology's name.
    pub(crate) fn topology(&self) -> &str {
        &self.topology
    }

    /// A hash of the topology's name, components and streams, the same in every process.
    pub(crate) fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// Appends the encoding of `message` for task `to` to `buf`. On error `buf` may hold part
    /// of the message; the caller truncates it.
    pub(crate) fn encode(&self, to: TaskId, message: &Message, buf: &mut Vec<u8>) -> Result<(), EncodeError> {
        put_varint(buf, u64::from(to));
        match message {
            Message::Tuple(tuple) => {
                let Some(&stream) = self.ids.get(&(tuple.source as *const StreamSource as usize)) else {
                    return Err(EncodeError::UnknownStream {
                        topology: self.topology.clone(),
                        component: tuple.source.component.clone(),
                        stream: tuple.source.stream.clone(),
                    });
                };
                buf.push(KIND_TUPLE);
                put_varint(buf, u64::from(stream));
                put_varint(buf, u64::from(tuple.source_task));
                put_varint(buf, tuple.anchors.len() as u64);
                for anchor in &tuple.anchors {
                    buf.extend_from_slice(&anchor.root.to_le_bytes());
                    buf.extend_from_slice(&anchor.edge.to_le_bytes());
                }
                put_varint(buf, tuple.values.len() as u64);
                for value in &tuple.values {
                    put_value(buf, value);
                }
            }
            Message::Acker(AckerMsg::Init { root, xor, spout }) => {
                buf.push(KIND_ACKER_INIT);
                buf.extend_from_slice(&root.to_le_bytes());
                buf.extend_from_slice(&xor.to_le_bytes());
                put_varint(buf, u64::from(*spout));
            }
            Message::Acker(AckerMsg::Ack { root, xor }) => {
                buf.push(KIND_ACKER_ACK);
                buf.extend_from_slice(&root.to_le_bytes());
                buf.extend_from_slice(&xor.to_le_bytes());
            }
            Message::Acker(AckerMsg::Fail { root }) => {
                buf.push(KIND_ACKER_FAIL);
                buf.extend_from_slice(&root.to_le_bytes());
            }
            Message::AckEvent(AckEvent { root, ok }) => {
                buf.push(if *ok { KIND_TREE_ACKED } else { KIND_TREE_FAILED });
                buf.extend_from_slice(&root.to_le_bytes());
            }
        }
        Ok(())
    }

    /// Decodes exactly `count` messages that fill `bytes`.
    pub(crate) fn decode_batch(&self, bytes: &[u8], count: u64) -> Result<Vec<Envelope>, DecodeError> {
        let mut r = Reader { bytes, pos: 0 };
        // Every message takes at least two bytes.
        r.check_count("message", count, 2)?;
        let mut out = Vec::with_capacity(count as usize);
        for _ in 0..count {
            out.push(self.decode_one(&mut r)?);
        }
        match r.left() {
            0 => Ok(out),
            n => Err(DecodeError::TrailingBytes(n)),
        }
    }

    fn decode_one(&self, r: &mut Reader<'_>) -> Result<Envelope, DecodeError> {
        let to = r.varint_u32("task id")?;
        let message = match r.u8("message kind")? {
            KIND_TUPLE => Message::Tuple(self.decode_tuple(r)?),
            KIND_ACKER_INIT => {
                let (root, xor) = (r.u64le("root id")?, r.u64le("xor")?);
                Message::Acker(AckerMsg::Init { root, xor, spout: r.varint_u32("spout task")? })
            }
            KIND_ACKER_ACK => Message::Acker(AckerMsg::Ack { root: r.u64le("root id")?, xor: r.u64le("xor")? }),
            KIND_ACKER_FAIL => Message::Acker(AckerMsg::Fail { root: r.u64le("root id")? }),
            KIND_TREE_ACKED => Message::AckEvent(AckEvent { root: r.u64le("root id")?, ok: true }),
            KIND_TREE_FAILED => Message::AckEvent(AckEvent { root: r.u64le("root id")?, ok: false }),
            other => return Err(DecodeError::UnknownKind(other)),
        };
        Ok(Envelope { to, message })
    }

    fn decode_tuple(&self, r: &mut Reader<'_>) -> Result<Tuple, DecodeError> {
        let id = r.varint("stream id")?;
        let source = *self.sources.get(id as usize).ok_or_else(|| DecodeError::UnknownStream {
            id,
            topology: self.topology.clone(),
            known: self.sources.len(),
        })?;
        let source_task = r.varint_u32("source task")?;
        let n = r.varint("anchor count")?;
        r.check_count("anchor", n, 16)?;
        let mut anchors = Anchors::with_capacity(n as usize);
        for _ in 0..n {
            anchors.push(Anchor { root: r.u64le("anchor root")?, edge: r.u64le("anchor edge")? });
        }
        let n = r.varint("value count")?;
        r.check_count("value", n, 1)?;
        let mut values = Values::with_capacity(n as usize);
        for _ in 0..n {
            values.push(r.value()?);
        }
        Ok(Tuple { values, source, source_task, anchors })
    }
}

const KIND_TUPLE: u8 = 0;
const KIND_ACKER_INIT: u8 = 1;
const KIND_ACKER_ACK: u8 = 2;
const KIND_ACKER_FAIL: u8 = 3;
const KIND_TREE_ACKED: u8 = 4;
const KIND_TREE_FAILED: u8 = 5;

const VALUE_NULL: u8 = 0;
const VALUE_FALSE: u8 = 1;
const VALUE_TRUE: u8 = 2;
const VALUE_INT: u8 = 3;
const VALUE_FLOAT: u8 = 4;
const VALUE_STR: u8 = 5;
const VALUE_BYTES: u8 = 6;

#[inline]
pub(super) fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push(v as u8 | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// Appends a varint length and the bytes.
pub(super) fn put_bytes(buf: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(buf, bytes.len() as u64);
    buf.extend_from_slice(bytes);
}

#[inline]
fn put_value(buf: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => buf.push(VALUE_NULL),
        Value::Bool(false) => buf.push(VALUE_FALSE),
        Value::Bool(true) => buf.push(VALUE_TRUE),
        Value::Int(i) => {
            buf.push(VALUE_INT);
            put_varint(buf, ((i << 1) ^ (i >> 63)) as u64);
        }
        Value::Float(f) => {
            buf.push(VALUE_FLOAT);
            buf.extend_from_slice(&f.to_bits().to_le_bytes());
        }
        Value::Str(s) => {
            buf.push(VALUE_STR);
            put_bytes(buf, s.as_bytes());
        }
        Value::Bytes(b) => {
            buf.push(VALUE_BYTES);
            put_bytes(buf, b);
        }
    }
}

/// A cursor over untrusted bytes: every read is bounds-checked.
pub(super) struct Reader<'a> {
    pub(super) bytes: &'a [u8],
    pub(super) pos: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn left(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.left() < n {
            return Err(DecodeError::Truncated(what));
        }
        let slice = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(slice)
    }

    pub(super) fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }

    pub(super) fn u64le(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let bytes = self.take(8, what)?;
        Ok(u64::from_le_bytes(bytes.try_into().expect("took 8 bytes")))
    }

    pub(super) fn varint(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.u8(what)?;
            if shift == 63 && byte > 1 {
                return Err(DecodeError::BadVarint(what));
            }
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError::BadVarint(what))
    }

    fn varint_u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        u32::try_from(self.varint(what)?).map_err(|_| DecodeError::BadVarint(what))
    }

    /// Fails unless `count` items of at least `min_size` bytes each fit in what is left, so a
    /// forged count cannot make the decoder allocate more than the frame's size.
    fn check_count(&self, what: &'static str, count: u64, min_size: u64) -> Result<(), DecodeError> {
        if count.saturating_mul(min_size) > self.left() as u64 {
            return Err(DecodeError::CountTooLarge { what, count, left: self.left() });
        }
        Ok(())
    }

    pub(super) fn bytes(&mut self, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let len = self.varint(what)?;
        self.check_count(what, len, 1)?;
        self.take(len as usize, what)
    }

    pub(super) fn str(&mut self, what: &'static str) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.bytes(what)?).map_err(|_| DecodeError::BadUtf8)
    }

    fn value(&mut self) -> Result<Value, DecodeError> {
        Ok(match self.u8("value tag")? {
            VALUE_NULL => Value::Null,
            VALUE_FALSE => Value::Bool(false),
            VALUE_TRUE => Value::Bool(true),
            VALUE_INT => {
                let z = self.varint("int value")?;
                Value::Int((z >> 1) as i64 ^ -((z & 1) as i64))
            }
            VALUE_FLOAT => Value::Float(f64::from_bits(self.u64le("float value")?)),
            VALUE_STR => Value::Str(SmolStr::new(self.str("string value")?)),
            VALUE_BYTES => Value::Bytes(self.bytes("bytes value")?.to_vec()),
            other => return Err(DecodeError::UnknownValueTag(other)),
        })
    }
}

/// FNV-1a: a hash that is the same on every platform and in every process.
struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv1a {
    /// A string with its length, so that ("ab", "c") and ("a", "bc") differ.
    fn write_str(&mut self, s: &str) {
        self.write_usize(s.len());
        self.write(s.as_bytes());
    }
}

impl Hasher for Fnv1a {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.write(&(n as u64).to_le_bytes());
    }
}
