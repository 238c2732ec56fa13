//! Frames: how bytes on a worker-to-worker connection are cut into units.
//!
//! ```text
//! frame = length:u32 big-endian (bytes that follow, 1..=max_frame) kind:u8 body
//!   kind 1 HELLO    magic "SQWT" version:u8 topology:str fingerprint:u64le from:str to:str
//!   kind 2 WELCOME  worker:str
//!   kind 3 REFUSE   reason:str
//!   kind 4 BATCH    count:u32le message*          (messages as in the wire module)
//!   kind 5 ACK      received:varint
//! str = varint length, UTF-8 bytes
//! ```
//!
//! The connecting worker sends HELLO; the accepting one answers WELCOME or REFUSE (and closes).
//! Then BATCH frames flow from the connecting worker, and ACK frames flow back: `received` is
//! how many messages the acceptor has taken from this connection so far, which is how the
//! sender knows, when a connection dies, how many of the messages it wrote may be lost.

use std::io::{self, Read};

use super::wire::{DecodeError, Reader, put_bytes, put_varint};

pub(super) const HELLO: u8 = 1;
pub(super) const WELCOME: u8 = 2;
pub(super) const REFUSE: u8 = 3;
pub(super) const BATCH: u8 = 4;
pub(super) const ACK: u8 = 5;

const MAGIC: &[u8; 4] = b"SQWT";
const VERSION: u8 = 1;

/// The largest HELLO, WELCOME, REFUSE or ACK frame a worker reads.
pub(super) const MAX_CONTROL_FRAME: usize = 64 * 1024;

/// Bytes before the first message of a BATCH frame: length, kind, count.
pub(super) const BATCH_HEADER: usize = 9;

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub(super) enum FrameError {
    /// The peer closed the connection between frames.
    #[error("the connection was closed")]
    Closed,
    /// The connection failed or timed out.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// A length prefix over the limit.
    #[error("a frame of {len} bytes is over the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    /// A zero length prefix: a frame has at least its kind byte.
    #[error("a frame of length 0")]
    Empty,
    /// The connection closed inside a frame.
    #[error("the connection was closed inside a frame ({got} of {len} bytes)")]
    Truncated { got: usize, len: usize },
    /// The frame's kind or body is not what the protocol allows here.
    #[error("{0}")]
    Protocol(String),
    /// The frame's body does not decode.
    #[error("{0}")]
    Decode(#[from] DecodeError),
}

/// Reads one frame into `body` (its bytes after the kind) and returns its kind.
pub(super) fn read_frame(r: &mut impl Read, max: usize, body: &mut Vec<u8>) -> Result<u8, FrameError> {
    let mut prefix = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut prefix[got..]) {
            Ok(0) if got == 0 => return Err(FrameError::Closed),
            Ok(0) => return Err(FrameError::Truncated { got, len: 4 }),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let len = u32::from_be_bytes(prefix) as usize;
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    let mut kind = [0u8; 1];
    r.read_exact(&mut kind).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => FrameError::Truncated { got: 0, len },
        _ => e.into(),
    })?;
    body.clear();
    // Grows with what actually arrives, so a forged length costs no memory up front.
    let got = r.take(len as u64 - 1).read_to_end(body)?;
    if got < len - 1 {
        return Err(FrameError::Truncated { got: got + 1, len });
    }
    Ok(kind[0])
}

/// Starts a frame of `kind` in `buf`; [`finish`] fills in its length.
fn start(buf: &mut Vec<u8>, kind: u8) {
    buf.clear();
    buf.extend_from_slice(&[0, 0, 0, 0, kind]);
}

fn finish(buf: &mut [u8]) {
    let len = (buf.len() - 4) as u32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
}

/// Starts an empty BATCH frame in `buf`.
pub(super) fn start_batch(buf: &mut Vec<u8>) {
    start(buf, BATCH);
    buf.extend_from_slice(&[0, 0, 0, 0]);
}

/// Fills in the length and message count of a BATCH frame started with [`start_batch`].
pub(super) fn finish_batch(buf: &mut [u8], count: u32) {
    finish(buf);
    buf[5..9].copy_from_slice(&count.to_le_bytes());
}

/// The message count and messages of a BATCH frame's body.
pub(super) fn batch_body(body: &[u8]) -> Result<(u64, &[u8]), FrameError> {
    if body.len() < 4 {
        return Err(DecodeError::Truncated("message count").into());
    }
    let count = u32::from_le_bytes(body[..4].try_into().expect("4 bytes"));
    Ok((u64::from(count), &body[4..]))
}

/// What a connecting worker says first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Hello {
    pub topology: String,
    pub fingerprint: u64,
    pub from: String,
    pub to: String,
}

impl Hello {
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        start(&mut buf, HELLO);
        buf.extend_from_slice(MAGIC);
        buf.push(VERSION);
        put_bytes(&mut buf, self.topology.as_bytes());
        buf.extend_from_slice(&self.fingerprint.to_le_bytes());
        put_bytes(&mut buf, self.from.as_bytes());
        put_bytes(&mut buf, self.to.as_bytes());
        finish(&mut buf);
        buf
    }

    /// Parses a HELLO frame's kind and body.
    pub(super) fn decode(kind: u8, body: &[u8]) -> Result<Hello, FrameError> {
        if kind != HELLO || body.len() < 5 || &body[..4] != MAGIC {
            return Err(FrameError::Protocol("the peer does not speak Squall's worker transport".into()));
        }
        if body[4] != VERSION {
            return Err(FrameError::Protocol(format!(
                "the peer speaks transport version {}, this worker version {VERSION}",
                body[4]
            )));
        }
        let mut r = Reader { bytes: body, pos: 5 };
        let hello = Hello {
            topology: r.str("topology name")?.to_string(),
            fingerprint: r.u64le("stream fingerprint")?,
            from: r.str("sender's worker id")?.to_string(),
            to: r.str("target worker id")?.to_string(),
        };
        match r.left() {
            0 => Ok(hello),
            n => Err(DecodeError::TrailingBytes(n).into()),
        }
    }
}

/// A WELCOME frame naming the accepting worker.
pub(super) fn welcome(worker: &str) -> Vec<u8> {
    let mut buf = Vec::new();
    start(&mut buf, WELCOME);
    put_bytes(&mut buf, worker.as_bytes());
    finish(&mut buf);
    buf
}

/// A REFUSE frame with the reason.
pub(super) fn refuse(reason: &str) -> Vec<u8> {
    let mut buf = Vec::new();
    start(&mut buf, REFUSE);
    put_bytes(&mut buf, reason.as_bytes());
    finish(&mut buf);
    buf
}

/// The string of a WELCOME or REFUSE body.
pub(super) fn reply_text(body: &[u8]) -> Result<String, FrameError> {
    let mut r = Reader { bytes: body, pos: 0 };
    let text = r.str("reply")?.to_string();
    match r.left() {
        0 => Ok(text),
        n => Err(DecodeError::TrailingBytes(n).into()),
    }
}

/// An ACK frame in `buf`.
pub(super) fn ack(buf: &mut Vec<u8>, received: u64) {
    start(buf, ACK);
    put_varint(buf, received);
    finish(buf);
}

/// The count in an ACK frame's body.
pub(super) fn ack_count(body: &[u8]) -> Result<u64, FrameError> {
    let mut r = Reader { bytes: body, pos: 0 };
    let received = r.varint("acknowledged count")?;
    match r.left() {
        0 => Ok(received),
        n => Err(DecodeError::TrailingBytes(n).into()),
    }
}
