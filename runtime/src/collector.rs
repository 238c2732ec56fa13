//! Output collectors: how spouts and bolts emit, and how their tuples reach other tasks.
//!
//! Every task owns an [`Emitter`]: the routes of its streams, one outgoing buffer per
//! destination task, and a buffer of acker messages. A buffer is sent as one batch when it
//! reaches `batch_size`, and all buffers are sent whenever the executor flushes (its input is
//! empty, or a millisecond has passed). Sending to a full queue blocks, which is what slows a
//! producer down to the pace of a slow consumer.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use crate::acker::AckerMsg;
use crate::component::MessageId;
use crate::grouping::Target;
use crate::metrics::ComponentStats;
use crate::tuple::{Anchor, Anchors, StreamSource, TaskId, Tuple};
use crate::value::Values;
use crate::worker::route::TaskSender;

/// A small, fast generator of edge and root ids (SplitMix64).
pub(crate) struct IdGen(u64);

impl IdGen {
    pub(crate) fn new(task: TaskId) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        IdGen(nanos ^ (u64::from(task) << 48) ^ (&nanos as *const u64 as u64))
    }

    /// A random id that is never zero (a zero edge would vanish from the XOR).
    #[inline]
    pub(crate) fn next_id(&mut self) -> u64 {
        loop {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            if z != 0 {
                return z;
            }
        }
    }
}

/// The subscribers of one stream of the emitting component.
pub(crate) struct StreamRoute {
    pub(crate) source: &'static StreamSource,
    pub(crate) targets: Vec<Target>,
    /// Whether the stream is declared direct: reached by `emit_direct` only.
    pub(crate) direct: bool,
}

/// Buffers of tuples on their way to other tasks.
pub(crate) struct Outbox {
    senders: Vec<Option<TaskSender<Tuple>>>,
    buffers: Vec<Vec<Tuple>>,
    dirty: Vec<TaskId>,
    batch: usize,
    dropped: u64,
}

impl Outbox {
    /// `senders[task]` is where the input of `task` goes, for every bolt task it sends to.
    pub(crate) fn new(senders: Vec<Option<TaskSender<Tuple>>>, batch: usize) -> Self {
        let buffers = senders.iter().map(|_| Vec::new()).collect();
        Outbox { senders, buffers, dirty: Vec::new(), batch, dropped: 0 }
    }

    #[inline]
    fn push(&mut self, task: TaskId, tuple: Tuple) {
        let buffer = &mut self.buffers[task as usize];
        if buffer.is_empty() {
            buffer.reserve_exact(self.batch);
            self.dirty.push(task);
        }
        buffer.push(tuple);
        if buffer.len() >= self.batch {
            self.send(task);
            self.dirty.retain(|t| *t != task);
        }
    }

    fn send(&mut self, task: TaskId) {
        let batch = std::mem::take(&mut self.buffers[task as usize]);
        let n = batch.len();
        let sent = match &self.senders[task as usize] {
            Some(sender) => sender.send(batch),
            None => Err(n),
        };
        // The receiving task has stopped: only happens while the topology shuts down.
        if let Err(lost) = sent {
            self.dropped += lost as u64;
        }
    }

    fn flush(&mut self) {
        while let Some(task) = self.dirty.pop() {
            self.send(task);
        }
    }
}

/// Buffers of messages to the acker tasks. Acks of the same tree are XORed together before
/// they are sent, which is what the acker would do with them anyway.
pub(crate) struct AckOutbox {
    senders: Vec<TaskSender<AckerMsg>>,
    xors: FxHashMap<u64, u64>,
    messages: Vec<Vec<AckerMsg>>,
    queued: usize,
    batch: usize,
}

impl AckOutbox {
    pub(crate) fn new(senders: Vec<TaskSender<AckerMsg>>, batch: usize) -> Self {
        let messages = senders.iter().map(|_| Vec::new()).collect();
        AckOutbox { senders, xors: FxHashMap::default(), messages, queued: 0, batch }
    }

    fn acker_of(&self, root: u64) -> usize {
        (root % self.senders.len() as u64) as usize
    }

    #[inline]
    fn xor(&mut self, root: u64, value: u64) {
        *self.xors.entry(root).or_insert(0) ^= value;
        if self.xors.len() >= self.batch {
            self.flush();
        }
    }

    fn message(&mut self, msg: AckerMsg, root: u64) {
        let acker = self.acker_of(root);
        self.messages[acker].push(msg);
        self.queued += 1;
        if self.queued >= self.batch {
            self.flush();
        }
    }

    fn flush(&mut self) {
        let n = self.senders.len() as u64;
        for (root, xor) in self.xors.drain() {
            if xor != 0 {
                self.messages[(root % n) as usize].push(AckerMsg::Ack { root, xor });
            }
        }
        for (sender, messages) in self.senders.iter().zip(&mut self.messages) {
            if !messages.is_empty() {
                // An acker that stopped only means the topology is shutting down.
                let _ = sender.send(std::mem::take(messages));
            }
        }
        self.queued = 0;
    }
}

/// Everything a task needs to emit: routes, buffers, ids and its counts.
pub(crate) struct Emitter {
    pub(crate) task: TaskId,
    pub(crate) component: smol_str::SmolStr,
    routes: Vec<StreamRoute>,
    /// The index of the default stream in `routes`, looked up once rather than per emit.
    default_route: Option<usize>,
    outbox: Outbox,
    acks: Option<AckOutbox>,
    ids: IdGen,
    scratch: Vec<TaskId>,
    pub(crate) stats: ComponentStats,
    last_flush: Instant,
}

impl Emitter {
    pub(crate) fn new(
        task: TaskId,
        component: smol_str::SmolStr,
        routes: Vec<StreamRoute>,
        outbox: Outbox,
        acks: Option<AckOutbox>,
    ) -> Self {
        Emitter {
            task,
            component,
            default_route: routes.iter().position(|r| r.source.stream == crate::tuple::DEFAULT_STREAM),
            routes,
            outbox,
            acks,
            ids: IdGen::new(task),
            scratch: Vec::new(),
            stats: ComponentStats::default(),
            last_flush: Instant::now(),
        }
    }

    pub(crate) fn acking(&self) -> bool {
        self.acks.is_some()
    }

    fn default_stream(&self) -> usize {
        self.default_route.unwrap_or_else(|| self.stream_index(crate::tuple::DEFAULT_STREAM))
    }

    fn stream_index(&self, stream: &str) -> usize {
        self.routes.iter().position(|r| r.source.stream == stream).unwrap_or_else(|| {
            panic!("component '{}' emitted on stream '{stream}', which it does not declare", self.component)
        })
    }

    /// Routes `values` on `stream` (by grouping, or to `direct` only) and sends a copy to each
    /// receiving task, anchored to `roots` with a fresh edge per copy. Returns how many tasks
    /// receive it and the XOR of the new edges.
    fn emit(&mut self, stream: usize, direct: Option<TaskId>, mut values: Values, roots: &[u64]) -> (usize, u64) {
        let route = &mut self.routes[stream];
        if values.len() != route.source.fields.len() {
            panic!(
                "component '{}' emitted {} values on stream '{}', which declares {} fields {}",
                route.source.component,
                values.len(),
                route.source.stream,
                route.source.fields.len(),
                route.source.fields
            );
        }
        self.stats.emitted += 1;
        self.scratch.clear();
        match direct {
            None => {
                if route.direct {
                    panic!(
                        "component '{}' emitted on direct stream '{}' without naming a task: use emit_direct",
                        route.source.component, route.source.stream
                    );
                }
                for target in &mut route.targets {
                    target.select(&values, &mut self.scratch);
                }
            }
            Some(task) => {
                if !route.direct {
                    panic!(
                        "component '{}' used emit_direct on stream '{}', which is not declared direct",
                        route.source.component, route.source.stream
                    );
                }
                if !route.targets.iter().any(|t| t.accepts_direct(task)) {
                    panic!(
                        "component '{}' used emit_direct to task {task}, which does not subscribe to stream '{}'",
                        route.source.component, route.source.stream
                    );
                }
                self.scratch.push(task);
            }
        }
        let source = route.source;
        let n = self.scratch.len();
        let mut xor = 0;
        for i in 0..n {
            let task = self.scratch[i];
            let mut anchors = Anchors::new();
            if !roots.is_empty() {
                let edge = self.ids.next_id();
                xor ^= edge;
                anchors.extend(roots.iter().map(|&root| Anchor { root, edge }));
            }
            let values = if i + 1 == n { std::mem::take(&mut values) } else { values.clone() };
            self.outbox.push(task, Tuple { values, source, source_task: self.task, anchors });
        }
        (n, xor)
    }

    /// Sends every buffered tuple and acker message on.
    pub(crate) fn flush(&mut self) {
        self.outbox.flush();
        if let Some(acks) = &mut self.acks {
            acks.flush();
        }
        self.last_flush = Instant::now();
    }

    /// Whether the last flush is older than `interval`.
    pub(crate) fn flush_due(&self, now: Instant, interval: Duration) -> bool {
        now.duration_since(self.last_flush) >= interval
    }

    /// Tuples dropped because their receiver had stopped.
    pub(crate) fn dropped(&self) -> u64 {
        self.outbox.dropped
    }
}

/// A spout tuple whose tree is in flight.
pub(crate) struct PendingTree {
    pub(crate) id: MessageId,
    pub(crate) started: Instant,
}

/// The spout side of tuple tracking: trees in flight and their deadlines.
pub(crate) struct SpoutTracker {
    pub(crate) pending: FxHashMap<u64, PendingTree>,
    pub(crate) deadlines: VecDeque<(Instant, u64)>,
    /// Messages to ack as soon as `next_tuple` returns: emitted with acking off, or to no one.
    pub(crate) acked_at_once: Vec<MessageId>,
    pub(crate) timeout: Duration,
    /// The time of the current call of `next_tuple`: the start of each tree it emits. One
    /// clock read per call instead of one per tree; a call emits a few dozen tuples at most,
    /// in far less time than a complete latency.
    pub(crate) now: Instant,
}

impl SpoutTracker {
    pub(crate) fn new(timeout: Duration) -> Self {
        SpoutTracker {
            pending: FxHashMap::default(),
            deadlines: VecDeque::new(),
            acked_at_once: Vec::new(),
            timeout,
            now: Instant::now(),
        }
    }
}

/// What a spout emits with, inside [`Spout::next_tuple`](crate::Spout::next_tuple).
pub struct SpoutOutput<'a> {
    pub(crate) emitter: &'a mut Emitter,
    pub(crate) tracker: &'a mut SpoutTracker,
}

impl SpoutOutput<'_> {
    /// Emits an untracked tuple on the default stream: if it is lost, nobody replays it.
    pub fn emit(&mut self, values: Values) {
        let stream = self.emitter.default_stream();
        self.emit_on(stream, None, None, values);
    }

    /// Emits a tracked tuple on the default stream: the spout's `ack(id)` or `fail(id)` is
    /// called when its tree completes or fails.
    pub fn emit_with_id(&mut self, id: MessageId, values: Values) {
        let stream = self.emitter.default_stream();
        self.emit_on(stream, None, Some(id), values);
    }

    /// Emits on a named stream, tracked when `id` is given.
    pub fn emit_to(&mut self, stream: &str, id: Option<MessageId>, values: Values) {
        let stream = self.emitter.stream_index(stream);
        self.emit_on(stream, None, id, values);
    }

    /// Emits on a direct stream to one task of a subscriber with grouping `direct`.
    pub fn emit_direct(&mut self, task: TaskId, stream: &str, id: Option<MessageId>, values: Values) {
        let stream = self.emitter.stream_index(stream);
        self.emit_on(stream, Some(task), id, values);
    }

    fn emit_on(&mut self, stream: usize, direct: Option<TaskId>, id: Option<MessageId>, values: Values) {
        let Some(id) = id else {
            self.emitter.emit(stream, direct, values, &[]);
            return;
        };
        if !self.emitter.acking() {
            self.emitter.emit(stream, direct, values, &[]);
            self.tracker.acked_at_once.push(id);
            return;
        }
        let root = self.emitter.ids.next_id();
        let (receivers, xor) = self.emitter.emit(stream, direct, values, &[root]);
        if receivers == 0 {
            self.tracker.acked_at_once.push(id);
            return;
        }
        let now = self.tracker.now;
        let spout = self.emitter.task;
        if let Some(acks) = &mut self.emitter.acks {
            acks.message(AckerMsg::Init { root, xor, spout }, root);
        }
        self.tracker.pending.insert(root, PendingTree { id, started: now });
        self.tracker.deadlines.push_back((now + self.tracker.timeout, root));
    }

    /// How many of this task's tuple trees are in flight.
    pub fn pending(&self) -> usize {
        self.tracker.pending.len()
    }

    /// Reports a problem the spout cannot fix by itself (a source it cannot read, say): it is
    /// counted in the component's errors and shown, with the last few others, by `squall
    /// status` and a local run's summary.
    pub fn report_error(&mut self, message: impl Into<String>) {
        self.emitter.stats.record_error(message.into());
    }

    /// Sets a gauge of this task — a value that goes up and down, such as a source's lag —
    /// shown by `squall status`, a node's `/metrics` (as `squall_<metric>{...}`) and a local
    /// run's summary. `labels` tell this task's gauges apart from its siblings'.
    pub fn set_gauge(&mut self, metric: &str, labels: &[(&str, &str)], value: i64) {
        self.emitter.stats.set_gauge(metric, labels, value);
    }
}

/// An input tuple a bolt keeps to ack, fail or anchor to later ([`BoltOutput::defer`]).
#[derive(Clone, Debug)]
pub struct Deferred {
    anchors: Anchors,
}

/// What happens to the current input when `execute` returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Disposition {
    Ack,
    Deferred,
}

/// What a bolt emits with, inside [`Bolt::execute`](crate::Bolt::execute) and
/// [`Bolt::flush`](crate::Bolt::flush).
pub struct BoltOutput<'a> {
    pub(crate) emitter: &'a mut Emitter,
    pub(crate) input: &'a [Anchor],
    pub(crate) disposition: Disposition,
}

impl BoltOutput<'_> {
    /// Emits on the default stream, anchored to the current input: if the new tuple fails,
    /// the spout tuple the input came from is replayed.
    pub fn emit(&mut self, values: Values) {
        let stream = self.emitter.default_stream();
        self.emit_anchored_on(stream, None, values);
    }

    /// Emits on a named stream, anchored to the current input.
    pub fn emit_to(&mut self, stream: &str, values: Values) {
        let stream = self.emitter.stream_index(stream);
        self.emit_anchored_on(stream, None, values);
    }

    /// Emits on a direct stream to one task of a subscriber with grouping `direct`, anchored to
    /// the current input.
    pub fn emit_direct(&mut self, task: TaskId, stream: &str, values: Values) {
        let stream = self.emitter.stream_index(stream);
        self.emit_anchored_on(stream, Some(task), values);
    }

    /// Emits on the default stream without anchoring: its loss replays nothing.
    pub fn emit_unanchored(&mut self, values: Values) {
        let stream = self.emitter.default_stream();
        self.emitter.emit(stream, None, values, &[]);
    }

    /// Emits on `stream`, anchored to inputs kept with [`defer`](Self::defer).
    pub fn emit_anchored(&mut self, anchors: &[&Deferred], stream: &str, values: Values) {
        let stream = self.emitter.stream_index(stream);
        let mut merged: Anchors = Anchors::new();
        for d in anchors {
            merged.extend(d.anchors.iter().copied());
        }
        self.emit_to_anchors(stream, None, values, &merged);
    }

    fn emit_anchored_on(&mut self, stream: usize, direct: Option<TaskId>, values: Values) {
        let input = self.input;
        self.emit_to_anchors(stream, direct, values, input);
    }

    fn emit_to_anchors(&mut self, stream: usize, direct: Option<TaskId>, values: Values, anchors: &[Anchor]) {
        if anchors.is_empty() || !self.emitter.acking() {
            self.emitter.emit(stream, direct, values, &[]);
            return;
        }
        let mut roots: smallvec::SmallVec<[u64; 2]> = anchors.iter().map(|a| a.root).collect();
        roots.sort_unstable();
        roots.dedup();
        let (_, xor) = self.emitter.emit(stream, direct, values, &roots);
        if let Some(acks) = &mut self.emitter.acks {
            for root in roots {
                acks.xor(root, xor);
            }
        }
    }

    /// Takes charge of the current input: it is not acked when `execute` returns, and the bolt
    /// must later [`ack`](Self::ack) or [`fail`](Self::fail) what this returns (or let it time
    /// out). Call it at most once per input.
    pub fn defer(&mut self) -> Deferred {
        self.disposition = Disposition::Deferred;
        Deferred { anchors: self.input.iter().copied().collect() }
    }

    /// Acks an input kept with [`defer`](Self::defer).
    pub fn ack(&mut self, deferred: Deferred) {
        if self.emitter.acking() {
            self.emitter.stats.acked += 1;
        }
        ack_anchors(self.emitter, &deferred.anchors);
    }

    /// Fails an input kept with [`defer`](Self::defer): its spout tuple is replayed.
    pub fn fail(&mut self, deferred: Deferred) {
        self.emitter.stats.failed += 1;
        fail_anchors(self.emitter, &deferred.anchors);
    }
}

/// Reports an input as processed to the ackers of its trees.
pub(crate) fn ack_anchors(emitter: &mut Emitter, anchors: &[Anchor]) {
    if let Some(acks) = &mut emitter.acks {
        for a in anchors {
            acks.xor(a.root, a.edge);
        }
    }
}

/// Reports an input as failed to the ackers of its trees.
pub(crate) fn fail_anchors(emitter: &mut Emitter, anchors: &[Anchor]) {
    if let Some(acks) = &mut emitter.acks {
        for a in anchors {
            acks.message(AckerMsg::Fail { root: a.root }, a.root);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_nonzero_and_distinct() {
        let mut ids = IdGen::new(3);
        let drawn: std::collections::HashSet<u64> = (0..10_000).map(|_| ids.next_id()).collect();
        assert_eq!(drawn.len(), 10_000);
        assert!(!drawn.contains(&0));
    }
}
