//! The bounded queue of frames waiting for one peer.
//!
//! Senders encode their message straight into the BATCH frame at the back of the queue, so a
//! message is queued as bytes (no allocation per message) and the queue is bounded in bytes;
//! a new frame starts when the back one reaches the batch target. The writer thread takes
//! whole frames from the front: whatever was queued while it wrote the previous frame goes out
//! as the next one, which is where batching comes from under load.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::frame::{BATCH_HEADER, finish_batch, start_batch};
use super::wire::{Envelope, Message, StreamTable};
use super::{SendError, TransportSettings};
use crate::tuple::TaskId;

/// A BATCH frame being filled or waiting to be written.
pub(super) struct PendingFrame {
    pub(super) buf: Vec<u8>,
    pub(super) messages: u32,
}

impl PendingFrame {
    fn payload(&self) -> usize {
        self.buf.len() - BATCH_HEADER
    }

    /// The frame's bytes, ready to write.
    pub(super) fn finished(&mut self) -> &[u8] {
        finish_batch(&mut self.buf, self.messages);
        &self.buf
    }
}

/// How long a sender waits for room.
#[derive(Clone, Copy, Debug)]
pub(super) enum Wait {
    No,
    /// At most this long from the first time the queue is found full.
    Within(Duration),
    Forever,
}

/// What the writer gets from [`FrameQueue::pop`].
pub(super) enum Popped {
    /// The oldest frame.
    Frame(PendingFrame),
    /// Something other than a frame needs the writer's attention (see [`FrameQueue::wake`]).
    Woken,
    /// The queue is closed.
    Closed,
}

struct State {
    frames: VecDeque<PendingFrame>,
    /// Payload bytes in `frames`.
    bytes: usize,
    closed: bool,
    woken: bool,
    writer_waiting: bool,
    senders_waiting: usize,
    spare: Vec<Vec<u8>>,
}

pub(super) struct FrameQueue {
    state: Mutex<State>,
    /// The writer waits here for frames (and for the end of a backoff).
    ready: Condvar,
    /// Senders wait here for room.
    room: Condvar,
    capacity: usize,
    frame_bytes: usize,
    frame_messages: u32,
    max_payload: usize,
}

/// Buffers kept for reuse; more would only hold memory after a burst.
const SPARE_BUFFERS: usize = 4;

impl FrameQueue {
    pub(super) fn new(settings: &TransportSettings) -> Self {
        FrameQueue {
            state: Mutex::new(State {
                frames: VecDeque::new(),
                bytes: 0,
                closed: false,
                woken: false,
                writer_waiting: false,
                senders_waiting: 0,
                spare: Vec::new(),
            }),
            ready: Condvar::new(),
            room: Condvar::new(),
            capacity: settings.queue_bytes,
            frame_bytes: settings.frame_bytes,
            frame_messages: settings.frame_messages,
            max_payload: settings.max_frame - (BATCH_HEADER - 4),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is consistent between statements; a panicking holder leaves it usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Encodes `message` for task `to` at the back of the queue, waiting for room as `wait`
    /// says. A message is let in whenever the queue is empty, so one larger than the capacity
    /// still goes.
    pub(super) fn push(
        &self,
        streams: &StreamTable,
        to: TaskId,
        message: &Message,
        wait: Wait,
    ) -> Result<(), SendError> {
        let mut s = self.lock();
        let mut deadline = None;
        loop {
            if s.closed {
                return Err(SendError::Closed);
            }
            if s.bytes < self.capacity || s.frames.is_empty() {
                break;
            }
            let wait_for = match wait {
                Wait::No => return Err(SendError::Full),
                Wait::Forever => None,
                Wait::Within(timeout) => {
                    let deadline = *deadline.get_or_insert_with(|| Instant::now() + timeout);
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(SendError::Timeout);
                    }
                    Some(deadline - now)
                }
            };
            s.senders_waiting += 1;
            s = match wait_for {
                None => self.room.wait(s).unwrap_or_else(|e| e.into_inner()),
                Some(d) => self.room.wait_timeout(s, d).unwrap_or_else(|e| e.into_inner()).0,
            };
            s.senders_waiting -= 1;
        }
        let open = s.frames.back().is_some_and(|f| f.payload() < self.frame_bytes && f.messages < self.frame_messages);
        if !open {
            self.open_frame(&mut s);
        }
        let added = match self.append(&mut s, streams, to, message) {
            Err(SendError::TooLarge { .. }) if open => {
                // It may fit in a frame of its own.
                self.open_frame(&mut s);
                self.append(&mut s, streams, to, message)
            }
            result => result,
        };
        match added {
            Ok(bytes) => {
                s.bytes += bytes;
                if s.writer_waiting {
                    self.ready.notify_one();
                }
                Ok(())
            }
            Err(e) => {
                if s.frames.back().is_some_and(|f| f.messages == 0) {
                    let empty = s.frames.pop_back().expect("checked");
                    self.recycle_locked(&mut s, empty.buf);
                }
                Err(e)
            }
        }
    }

    fn open_frame(&self, s: &mut State) {
        let mut buf = s.spare.pop().unwrap_or_else(|| Vec::with_capacity(self.frame_bytes + 256));
        start_batch(&mut buf);
        s.frames.push_back(PendingFrame { buf, messages: 0 });
    }

    /// Encodes into the back frame; returns the bytes added.
    fn append(&self, s: &mut State, streams: &StreamTable, to: TaskId, message: &Message) -> Result<usize, SendError> {
        let frame = s.frames.back_mut().expect("a frame is open");
        let mark = frame.buf.len();
        if let Err(e) = streams.encode(to, message, &mut frame.buf) {
            frame.buf.truncate(mark);
            return Err(SendError::Encode(e));
        }
        let added = frame.buf.len() - mark;
        if frame.payload() > self.max_payload {
            frame.buf.truncate(mark);
            return Err(SendError::TooLarge { bytes: added, max: self.max_payload });
        }
        frame.messages += 1;
        Ok(added)
    }

    /// The oldest frame, waiting for one.
    pub(super) fn pop(&self) -> Popped {
        let mut s = self.lock();
        loop {
            if s.closed {
                return Popped::Closed;
            }
            if std::mem::take(&mut s.woken) {
                return Popped::Woken;
            }
            if let Some(frame) = s.frames.pop_front() {
                s.bytes -= frame.payload();
                if s.senders_waiting > 0 {
                    self.room.notify_all();
                }
                return Popped::Frame(frame);
            }
            s.writer_waiting = true;
            s = self.ready.wait(s).unwrap_or_else(|e| e.into_inner());
            s.writer_waiting = false;
        }
    }

    /// Makes the writer's current or next `pop` return [`Popped::Woken`].
    pub(super) fn wake(&self) {
        self.lock().woken = true;
        self.ready.notify_all();
    }

    /// Puts a frame that was not written back at the front, where it came from.
    pub(super) fn requeue(&self, frame: PendingFrame) {
        let mut s = self.lock();
        s.bytes += frame.payload();
        s.frames.push_front(frame);
    }

    /// Keeps a written frame's buffer for a later frame.
    pub(super) fn recycle(&self, buf: Vec<u8>) {
        self.recycle_locked(&mut self.lock(), buf);
    }

    fn recycle_locked(&self, s: &mut State, buf: Vec<u8>) {
        // A buffer a large message grew is not kept.
        if s.spare.len() < SPARE_BUFFERS && buf.capacity() <= 2 * self.frame_bytes + 256 {
            s.spare.push(buf);
        }
    }

    /// Waits `pause` unless the queue is closed first; returns whether it is closed.
    pub(super) fn pause(&self, pause: Duration) -> bool {
        let s = self.lock();
        let (s, _) = self.ready.wait_timeout_while(s, pause, |s| !s.closed).unwrap_or_else(|e| e.into_inner());
        s.closed
    }

    pub(super) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Queued payload bytes.
    pub(super) fn queued_bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Stops the queue: waiting senders and the writer return at once, and nothing more is let
    /// in.
    pub(super) fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
        self.room.notify_all();
    }

    /// Decodes and removes everything still queued (after [`close`](Self::close) and once
    /// the writer has stopped).
    pub(super) fn drain(&self, streams: &StreamTable) -> Vec<Envelope> {
        let frames = std::mem::take(&mut self.lock().frames);
        let mut out = Vec::new();
        for frame in frames {
            match streams.decode_batch(&frame.buf[BATCH_HEADER..], u64::from(frame.messages)) {
                Ok(envelopes) => out.extend(envelopes),
                // Only `push` encodes these bytes, so this is a bug in this module.
                Err(e) => tracing::error!("{} queued messages do not decode, dropped: {e}", frame.messages),
            }
        }
        out
    }
}
