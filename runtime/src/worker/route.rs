//! How a batch reaches its task: the task's queue in this process, or the forwarder of the
//! worker that runs it; and how batches from other workers reach the local queues.
//!
//! Every emitter holds one [`TaskSender`] per task it sends to. For a local task that is the
//! task's own queue, exactly as in local mode. For a remote task it is a [`RemoteTask`], which
//! names the [`PeerQueue`] of the worker the assignment puts the task on (swapped when the
//! assignment changes). Each peer has one forwarder thread that takes batches from its queue and
//! hands their messages one by one to the transport, which frames them again.
//!
//! Queues to a peer are bounded for tuples and acker messages (a slow peer slows its producers,
//! as a slow local task does) and unbounded for ack events, so an acker never waits, as in local
//! mode. A peer whose transport queue stays full for the whole send timeout is taken as down:
//! what is queued for it is dropped and counted until a message goes through again, and the
//! acker's message timeout fails and replays the trees that lost a message.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockWriteGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, bounded, select_biased, unbounded};
use rustc_hash::FxHashMap;

use crate::acker::{AckEvent, AckerMsg};
use crate::transport::{Envelope, Message, SendError, Transport, WorkerId};
use crate::tuple::{TaskId, Tuple};

/// A batch on its way to a task on another worker.
pub(crate) enum Batch {
    Tuples(Vec<Tuple>),
    Acker(Vec<AckerMsg>),
    Events(Vec<AckEvent>),
}

impl Batch {
    fn len(&self) -> usize {
        match self {
            Batch::Tuples(v) => v.len(),
            Batch::Acker(v) => v.len(),
            Batch::Events(v) => v.len(),
        }
    }
}

/// What a task queue carries: tuples, acker messages or ack events.
pub(crate) trait Forwardable: Sized {
    fn batch(items: Vec<Self>) -> Batch;
}

impl Forwardable for Tuple {
    fn batch(items: Vec<Self>) -> Batch {
        Batch::Tuples(items)
    }
}

impl Forwardable for AckerMsg {
    fn batch(items: Vec<Self>) -> Batch {
        Batch::Acker(items)
    }
}

impl Forwardable for AckEvent {
    fn batch(items: Vec<Self>) -> Batch {
        Batch::Events(items)
    }
}

/// Where batches for one task go.
pub(crate) enum TaskSender<T> {
    /// The task's queue in this process.
    Local(Sender<Vec<T>>),
    /// The forwarder of the worker that runs the task.
    Remote(Arc<RemoteTask>),
}

impl<T> Clone for TaskSender<T> {
    fn clone(&self) -> Self {
        match self {
            TaskSender::Local(s) => TaskSender::Local(s.clone()),
            TaskSender::Remote(r) => TaskSender::Remote(r.clone()),
        }
    }
}

impl<T: Forwardable> TaskSender<T> {
    /// Sends `batch`, waiting while the queue is full. Fails, with the number of items lost,
    /// when the receiving side has stopped.
    #[inline]
    pub(crate) fn send(&self, batch: Vec<T>) -> Result<(), usize> {
        match self {
            TaskSender::Local(sender) => sender.send(batch).map_err(|e| e.0.len()),
            TaskSender::Remote(remote) => remote.forward(T::batch(batch)),
        }
    }
}

/// A task another worker runs, and the queue of that worker's forwarder.
pub(crate) struct RemoteTask {
    task: TaskId,
    peer: RwLock<Arc<PeerQueue>>,
}

impl RemoteTask {
    pub(crate) fn new(task: TaskId, peer: Arc<PeerQueue>) -> Arc<Self> {
        Arc::new(RemoteTask { task, peer: RwLock::new(peer) })
    }

    /// Sends later batches to `peer`.
    pub(crate) fn route_to(&self, peer: Arc<PeerQueue>) {
        *self.peer.write().unwrap_or_else(|e| e.into_inner()) = peer;
    }

    /// The task.
    pub(crate) fn task(&self) -> TaskId {
        self.task
    }

    /// The worker the task's batches go to.
    pub(crate) fn peer(&self) -> WorkerId {
        self.peer.read().unwrap_or_else(|e| e.into_inner()).peer.clone()
    }

    /// Sends one message again, after the link it was queued on was closed.
    pub(crate) fn resend(&self, message: Message) -> Result<(), usize> {
        self.forward(match message {
            Message::Tuple(t) => Batch::Tuples(vec![t]),
            Message::Acker(m) => Batch::Acker(vec![m]),
            Message::AckEvent(e) => Batch::Events(vec![e]),
        })
    }

    fn forward(&self, batch: Batch) -> Result<(), usize> {
        // Cloned so that a sender waiting for room does not hold up a change of route.
        let peer = self.peer.read().unwrap_or_else(|e| e.into_inner()).clone();
        let queue = if matches!(batch, Batch::Events(_)) { &peer.events } else { &peer.data };
        queue.send(Forward { to: self.task, batch }).map_err(|e| e.0.batch.len())
    }
}

struct Forward {
    to: TaskId,
    batch: Batch,
}

/// The queues into one peer's forwarder. The forwarder ends once every holder has dropped it.
pub(crate) struct PeerQueue {
    peer: WorkerId,
    data: Sender<Forward>,
    events: Sender<Forward>,
}

/// Counts of messages that did not reach their task, shared by a worker's forwarders and inbox.
#[derive(Default)]
pub(crate) struct RouteCounts {
    /// Messages for peers dropped by forwarders: the peer was down, or left the assignment.
    pub(crate) dropped: AtomicU64,
    /// Messages from peers for a task this worker does not run, or of the wrong kind for it.
    pub(crate) misrouted: AtomicU64,
    /// Messages from peers that arrived after the worker stopped taking them.
    pub(crate) refused: AtomicU64,
}

/// Starts the forwarder to `peer`; `capacity` bounds its tuple and acker batches.
pub(crate) fn start_forwarder(
    peer: WorkerId,
    transport: Arc<Transport>,
    capacity: usize,
    timeout: Duration,
    counts: Arc<RouteCounts>,
) -> (Arc<PeerQueue>, JoinHandle<()>) {
    let (data, data_rx) = bounded(capacity);
    let (events, events_rx) = unbounded();
    let forwarder = Forwarder { peer: peer.clone(), transport, timeout, counts, down: false };
    let thread = std::thread::Builder::new()
        .name(format!("squall:fwd:{peer}"))
        .spawn(move || forwarder.run(&events_rx, &data_rx))
        .expect("the OS refused to start a forwarder thread");
    (Arc::new(PeerQueue { peer, data, events }), thread)
}

struct Forwarder {
    peer: WorkerId,
    transport: Arc<Transport>,
    timeout: Duration,
    counts: Arc<RouteCounts>,
    /// The last send timed out: until one goes through, give up at once on a full queue.
    down: bool,
}

impl Forwarder {
    fn run(mut self, events: &Receiver<Forward>, data: &Receiver<Forward>) {
        loop {
            // Ack events first: they are small and each one completes a tree.
            let next = select_biased! {
                recv(events) -> f => f,
                recv(data) -> f => f,
            };
            match next {
                Ok(forward) => self.forward(forward),
                // Both queues belong to one `PeerQueue`, so they close together.
                Err(_) => break,
            }
        }
        for forward in events.try_iter().chain(data.try_iter()) {
            self.forward(forward);
        }
    }

    fn forward(&mut self, Forward { to, batch }: Forward) {
        let total = batch.len();
        let mut sent = 0;
        let complete = match batch {
            Batch::Tuples(v) => v.into_iter().all(|t| self.send(to, Message::Tuple(t), &mut sent)),
            Batch::Acker(v) => v.into_iter().all(|m| self.send(to, Message::Acker(m), &mut sent)),
            Batch::Events(v) => v.into_iter().all(|e| self.send(to, Message::AckEvent(e), &mut sent)),
        };
        if !complete {
            self.counts.dropped.fetch_add((total - sent) as u64, Ordering::Relaxed);
        }
    }

    /// Sends one message; false when it could not be, and the rest of its batch should not be.
    fn send(&mut self, to: TaskId, message: Message, sent: &mut usize) -> bool {
        let result = if self.down {
            self.transport.try_send(&self.peer, to, &message)
        } else {
            self.transport.send_timeout(&self.peer, to, &message, self.timeout)
        };
        match result {
            Ok(()) => {
                self.down = false;
                *sent += 1;
                true
            }
            Err(SendError::Timeout) => {
                tracing::warn!(
                    "worker {}: the queue to worker {} stayed full for {:?}; dropping messages for it \
                     until it takes them again (their trees are replayed)",
                    self.transport.worker(),
                    self.peer,
                    self.timeout
                );
                self.down = true;
                false
            }
            Err(SendError::Full | SendError::UnknownPeer(_) | SendError::Closed) => false,
            Err(e @ (SendError::TooLarge { .. } | SendError::Encode(_))) => {
                // Only this message is at fault: the rest of its batch still goes.
                tracing::error!("worker {}: a message for task {to} was dropped: {e}", self.transport.worker());
                self.counts.dropped.fetch_add(1, Ordering::Relaxed);
                *sent += 1;
                true
            }
        }
    }
}

/// The queue of one local task, as the inbox sees it.
pub(crate) enum LocalQueue {
    Bolt(Sender<Vec<Tuple>>),
    Acker(Sender<Vec<AckerMsg>>),
    Spout(Sender<Vec<AckEvent>>),
}

/// Where messages from other workers go: the queues of this worker's tasks, by task id, until
/// [`close`](Inbox::close) drops them (and with them the last outside hold on those queues).
pub(crate) struct Inbox {
    queues: RwLock<Option<Vec<Option<LocalQueue>>>>,
    counts: Arc<RouteCounts>,
}

/// The inbox being opened: deliveries wait until [`InboxOpening::open`] (or its drop, after
/// which they are refused).
pub(crate) struct InboxOpening<'a>(RwLockWriteGuard<'a, Option<Vec<Option<LocalQueue>>>>);

impl InboxOpening<'_> {
    /// Starts delivering to `queues`.
    pub(crate) fn open(mut self, queues: Vec<Option<LocalQueue>>) {
        *self.0 = Some(queues);
    }
}

impl Inbox {
    /// An inbox with no queue yet: see [`opening`](Self::opening).
    pub(crate) fn new(counts: Arc<RouteCounts>) -> Self {
        Inbox { queues: RwLock::new(None), counts }
    }

    /// Holds deliveries back until the local tasks' queues are there, so that messages from
    /// peers that started first wait rather than being refused.
    pub(crate) fn opening(&self) -> InboxOpening<'_> {
        InboxOpening(self.queues.write().unwrap_or_else(|e| e.into_inner()))
    }

    /// Hands one frame's messages to their tasks, a batch per task, in arrival order. Waits
    /// while a bolt's or an acker's queue is full, which holds up the peer.
    pub(crate) fn deliver(&self, envelopes: Vec<Envelope>) {
        let guard = self.queues.read().unwrap_or_else(|e| e.into_inner());
        let Some(queues) = guard.as_ref() else {
            self.counts.refused.fetch_add(envelopes.len() as u64, Ordering::Relaxed);
            return;
        };
        let mut tuples: FxHashMap<TaskId, Vec<Tuple>> = FxHashMap::default();
        let mut acker: FxHashMap<TaskId, Vec<AckerMsg>> = FxHashMap::default();
        let mut events: FxHashMap<TaskId, Vec<AckEvent>> = FxHashMap::default();
        let mut misrouted = 0;
        for Envelope { to, message } in envelopes {
            match (queues.get(to as usize).and_then(Option::as_ref), message) {
                (Some(LocalQueue::Bolt(_)), Message::Tuple(t)) => tuples.entry(to).or_default().push(t),
                (Some(LocalQueue::Acker(_)), Message::Acker(m)) => acker.entry(to).or_default().push(m),
                (Some(LocalQueue::Spout(_)), Message::AckEvent(e)) => events.entry(to).or_default().push(e),
                _ => misrouted += 1,
            }
        }
        // A task that has stopped drops what it is sent; that only happens while stopping.
        for (to, batch) in tuples {
            if let Some(LocalQueue::Bolt(q)) = &queues[to as usize] {
                let _ = q.send(batch);
            }
        }
        for (to, batch) in acker {
            if let Some(LocalQueue::Acker(q)) = &queues[to as usize] {
                let _ = q.send(batch);
            }
        }
        for (to, batch) in events {
            if let Some(LocalQueue::Spout(q)) = &queues[to as usize] {
                let _ = q.send(batch);
            }
        }
        if misrouted > 0 {
            self.counts.misrouted.fetch_add(misrouted, Ordering::Relaxed);
        }
    }

    /// Stops taking messages from peers; later ones are counted as refused.
    pub(crate) fn close(&self) {
        let queues = self.queues.write().unwrap_or_else(|e| e.into_inner()).take();
        drop(queues);
    }
}
