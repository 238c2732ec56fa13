//! The loops that run tasks: one thread per spout, bolt and acker task.

use std::any::Any;
use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};

use crate::acker::{AckEvent, Acker, AckerMsg};
use crate::collector::{BoltOutput, Disposition, Emitter, SpoutOutput, SpoutTracker, ack_anchors, fail_anchors};
use crate::component::{Bolt, Spout};
use crate::metrics::{ComponentMetrics, ComponentStats, PUBLISH_INTERVAL};
use crate::tuple::{TaskId, Tuple};
use crate::worker::route::TaskSender;

/// The longest a task holds output back under load before sending it on.
pub(crate) const FLUSH_INTERVAL: Duration = Duration::from_millis(1);

/// How often a blocked or idle spout looks at its control flags.
const SPOUT_IDLE_WAIT: Duration = Duration::from_millis(1);
const SPOUT_BLOCKED_WAIT: Duration = Duration::from_millis(50);

/// One bolt execution in this many is timed for the execute-latency histogram.
const EXECUTE_SAMPLE_MASK: u64 = 15;

/// Flags a topology's tasks share.
#[derive(Debug)]
pub(crate) struct Control {
    /// Spouts stop emitting and their tasks end; the rest drain and follow.
    pub(crate) stop: AtomicBool,
    /// Whether spouts emit.
    pub(crate) active: AtomicBool,
    /// Most tuple trees in flight per spout task (with acking on); changeable while running.
    pub(crate) max_spout_pending: AtomicUsize,
    /// The live configuration (`squall config`): `<component>.<arg>` → value.
    live: Mutex<Arc<BTreeMap<String, String>>>,
    /// Bumped with every change of `live`, so tasks look at it only when it changed.
    live_version: AtomicU64,
}

impl Control {
    pub(crate) fn new(max_spout_pending: usize) -> Arc<Self> {
        Arc::new(Control {
            stop: AtomicBool::new(false),
            active: AtomicBool::new(true),
            max_spout_pending: AtomicUsize::new(max_spout_pending),
            live: Mutex::default(),
            live_version: AtomicU64::new(0),
        })
    }

    /// Replaces the live configuration; tasks apply what changed before their next tuple.
    pub(crate) fn set_live(&self, values: BTreeMap<String, String>) {
        *self.live.lock().expect("never poisoned: nothing panics while it is held") = Arc::new(values);
        self.live_version.fetch_add(1, Ordering::Release);
    }
}

/// What one task applied of the live configuration.
struct LiveArgs {
    /// `<component>.`: the keys that are this task's args.
    prefix: String,
    seen: u64,
    applied: BTreeMap<String, String>,
}

impl LiveArgs {
    fn new(component: &str) -> Self {
        LiveArgs { prefix: format!("{component}."), seen: 0, applied: BTreeMap::new() }
    }

    /// Calls `reconfigure(arg, value)` for each of this component's args whose live value
    /// changed since the last call, recording its errors.
    fn apply(
        &mut self,
        control: &Control,
        stats: &mut ComponentStats,
        mut reconfigure: impl FnMut(&str, &str) -> Result<(), crate::BoxError>,
    ) {
        let version = control.live_version.load(Ordering::Acquire);
        if version == self.seen {
            return;
        }
        self.seen = version;
        let live = control.live.lock().expect("never poisoned: nothing panics while it is held").clone();
        for (key, value) in live.range(self.prefix.clone()..) {
            let Some(arg) = key.strip_prefix(&self.prefix) else { break };
            if self.applied.get(arg) == Some(value) {
                continue;
            }
            self.applied.insert(arg.to_string(), value.clone());
            match catch_unwind(AssertUnwindSafe(|| reconfigure(arg, value))) {
                Ok(Ok(())) => tracing::info!("{}{arg} is now {value}", self.prefix),
                Ok(Err(e)) => stats.record_error(format!("cannot set {}{arg} to {value}: {e}", self.prefix)),
                Err(panic) => stats.record_error(format!("reconfigure {}", panic_message(panic))),
            }
        }
    }
}

fn panic_message(panic: Box<dyn Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        format!("panicked: {s}")
    } else if let Some(s) = panic.downcast_ref::<String>() {
        format!("panicked: {s}")
    } else {
        "panicked".to_string()
    }
}

/// Runs user code, turning a panic into a recorded error.
fn guarded<R>(stats: &mut ComponentStats, f: impl FnOnce() -> R) -> Option<R> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => Some(r),
        Err(panic) => {
            stats.record_error(panic_message(panic));
            None
        }
    }
}

/// Publishes a task's counts at most every [`PUBLISH_INTERVAL`].
struct Publisher {
    shared: Arc<ComponentMetrics>,
    last: Instant,
}

impl Publisher {
    fn new(shared: Arc<ComponentMetrics>) -> Self {
        Publisher { shared, last: Instant::now() }
    }

    fn maybe(&mut self, stats: &mut ComponentStats, now: Instant) {
        if now.duration_since(self.last) >= PUBLISH_INTERVAL {
            self.now(stats, now);
        }
    }

    fn now(&mut self, stats: &mut ComponentStats, now: Instant) {
        stats.publish(&self.shared);
        self.last = now;
    }
}

/// What a spout task needs besides its spout.
pub(crate) struct SpoutTask {
    pub(crate) emitter: Emitter,
    pub(crate) events: Receiver<Vec<AckEvent>>,
    pub(crate) metrics: Arc<ComponentMetrics>,
    pub(crate) control: Arc<Control>,
    pub(crate) timeout: Duration,
    pub(crate) batch: usize,
}

pub(crate) fn run_spout(mut spout: Box<dyn Spout>, task: SpoutTask) {
    let SpoutTask { mut emitter, events, metrics, control, timeout, batch } = task;
    let acking = emitter.acking();
    let mut tracker = SpoutTracker::new(timeout);
    let mut publisher = Publisher::new(metrics);
    let mut active = false;
    let mut live = LiveArgs::new(&emitter.component);
    loop {
        live.apply(&control, &mut emitter.stats, |arg, value| spout.reconfigure(arg, value));
        while let Ok(batch) = events.try_recv() {
            settle(spout.as_mut(), &mut tracker, &mut emitter.stats, batch);
        }
        if control.stop.load(Ordering::Relaxed) {
            break;
        }
        let want_active = control.active.load(Ordering::Relaxed);
        if want_active != active {
            let stats = &mut emitter.stats;
            if want_active {
                guarded(stats, || spout.activate());
            } else {
                guarded(stats, || spout.deactivate());
            }
            active = want_active;
        }
        let now = Instant::now();
        expire(spout.as_mut(), &mut tracker, &mut emitter.stats, now);
        let max_pending = if acking { control.max_spout_pending.load(Ordering::Relaxed) } else { usize::MAX };

        let mut emitted = false;
        if active {
            tracker.now = now;
            for call in 0..batch {
                if tracker.pending.len() >= max_pending || spout.is_done() {
                    break;
                }
                let before = emitter.stats.emitted;
                if call > 0 {
                    tracker.now = Instant::now();
                }
                let mut out = SpoutOutput { emitter: &mut emitter, tracker: &mut tracker };
                if let Err(panic) = catch_unwind(AssertUnwindSafe(|| spout.next_tuple(&mut out))) {
                    emitter.stats.record_error(format!("next_tuple {}", panic_message(panic)));
                }
                for id in tracker.acked_at_once.drain(..) {
                    emitter.stats.acked += 1;
                    guarded(&mut emitter.stats, || spout.ack(id));
                }
                if emitter.stats.emitted == before {
                    break;
                }
                emitted = true;
            }
        }
        if spout.is_done() && tracker.pending.is_empty() {
            break;
        }
        if emitted {
            if emitter.flush_due(now, FLUSH_INTERVAL) {
                emitter.flush();
            }
        } else {
            emitter.flush();
            publisher.maybe(&mut emitter.stats, now);
            let idle = active && tracker.pending.len() < max_pending && !spout.is_done();
            let wait = if idle { SPOUT_IDLE_WAIT } else { SPOUT_BLOCKED_WAIT };
            let wait = match tracker.deadlines.front() {
                Some((deadline, _)) => wait.min(deadline.saturating_duration_since(now)),
                None => wait,
            };
            if let Ok(batch) = events.recv_timeout(wait) {
                settle(spout.as_mut(), &mut tracker, &mut emitter.stats, batch);
            }
            continue;
        }
        publisher.maybe(&mut emitter.stats, now);
    }
    emitter.flush();
    if active {
        guarded(&mut emitter.stats, || spout.deactivate());
    }
    guarded(&mut emitter.stats, || spout.close());
    publisher.now(&mut emitter.stats, Instant::now());
}

/// Applies acker verdicts to the spout's trees.
fn settle(spout: &mut dyn Spout, tracker: &mut SpoutTracker, stats: &mut ComponentStats, events: Vec<AckEvent>) {
    // The events of a batch left their acker together: one clock read times them all.
    let now = Instant::now();
    for event in events {
        // Unknown roots are trees this spout already timed out.
        let Some(tree) = tracker.pending.remove(&event.root) else { continue };
        if event.ok {
            stats.acked += 1;
            let micros = now.saturating_duration_since(tree.started).as_micros().max(1) as u64;
            let _ = stats.complete_latency_us.record(micros);
            guarded(stats, || spout.ack(tree.id));
        } else {
            stats.failed += 1;
            guarded(stats, || spout.fail(tree.id));
        }
    }
}

/// Fails the trees whose deadline has passed.
fn expire(spout: &mut dyn Spout, tracker: &mut SpoutTracker, stats: &mut ComponentStats, now: Instant) {
    while let Some(&(deadline, root)) = tracker.deadlines.front() {
        if deadline > now {
            break;
        }
        tracker.deadlines.pop_front();
        if let Some(tree) = tracker.pending.remove(&root) {
            stats.failed += 1;
            stats.timed_out += 1;
            guarded(stats, || spout.fail(tree.id));
        }
    }
    // Completed trees leave their deadlines behind; drop them before they pile up.
    if tracker.deadlines.len() > 2 * tracker.pending.len() + 4096 {
        let pending = &tracker.pending;
        tracker.deadlines.retain(|(_, root)| pending.contains_key(root));
    }
}

/// What a bolt task needs besides its bolt.
pub(crate) struct BoltTask {
    pub(crate) emitter: Emitter,
    pub(crate) inputs: Receiver<Vec<Tuple>>,
    pub(crate) metrics: Arc<ComponentMetrics>,
    pub(crate) control: Arc<Control>,
}

pub(crate) fn run_bolt(mut bolt: Box<dyn Bolt>, task: BoltTask) {
    let BoltTask { mut emitter, inputs, metrics, control } = task;
    let mut publisher = Publisher::new(metrics);
    let mut live = LiveArgs::new(&emitter.component);
    loop {
        // Before each batch: an idle bolt applies a change before the next tuple it gets.
        live.apply(&control, &mut emitter.stats, |arg, value| bolt.reconfigure(arg, value));
        let batch = match inputs.try_recv() {
            Ok(batch) => batch,
            Err(TryRecvError::Disconnected) => break,
            Err(TryRecvError::Empty) => {
                flush_bolt(bolt.as_mut(), &mut emitter);
                let now = Instant::now();
                publisher.maybe(&mut emitter.stats, now);
                match inputs.recv_timeout(PUBLISH_INTERVAL) {
                    Ok(batch) => batch,
                    Err(RecvTimeoutError::Timeout) => {
                        publisher.now(&mut emitter.stats, Instant::now());
                        match inputs.recv() {
                            Ok(batch) => batch,
                            Err(_) => break,
                        }
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
        };
        for tuple in batch {
            execute(bolt.as_mut(), &mut emitter, tuple);
        }
        let now = Instant::now();
        if emitter.flush_due(now, FLUSH_INTERVAL) {
            flush_bolt(bolt.as_mut(), &mut emitter);
        }
        publisher.maybe(&mut emitter.stats, now);
    }
    flush_bolt(bolt.as_mut(), &mut emitter);
    guarded(&mut emitter.stats, || bolt.cleanup());
    emitter.flush();
    let dropped = emitter.dropped();
    if dropped > 0 {
        emitter.stats.record_error(format!("{dropped} tuples were not delivered: their receiver had stopped"));
    }
    publisher.now(&mut emitter.stats, Instant::now());
}

#[inline]
fn execute(bolt: &mut dyn Bolt, emitter: &mut Emitter, tuple: Tuple) {
    let timed = (emitter.stats.executed & EXECUTE_SAMPLE_MASK) == 0;
    let started = timed.then(Instant::now);
    emitter.stats.executed += 1;
    let mut out = BoltOutput { emitter, input: &tuple.anchors, disposition: Disposition::Ack };
    let result = catch_unwind(AssertUnwindSafe(|| bolt.execute(&tuple, &mut out)));
    let disposition = out.disposition;
    if let Some(started) = started {
        let _ = emitter.stats.execute_latency_ns.record(started.elapsed().as_nanos().max(1) as u64);
    }
    let error = match result {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(panic) => Some(panic_message(panic)),
    };
    if disposition == Disposition::Deferred {
        if let Some(e) = error {
            emitter.stats.record_error(e);
        }
        return;
    }
    match error {
        None => {
            if emitter.acking() {
                emitter.stats.acked += 1;
                ack_anchors(emitter, &tuple.anchors);
            }
        }
        Some(e) => {
            emitter.stats.record_error(e);
            emitter.stats.failed += 1;
            fail_anchors(emitter, &tuple.anchors);
        }
    }
}

fn flush_bolt(bolt: &mut dyn Bolt, emitter: &mut Emitter) {
    let mut out = BoltOutput { emitter, input: &[], disposition: Disposition::Ack };
    match catch_unwind(AssertUnwindSafe(|| bolt.flush(&mut out))) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => emitter.stats.record_error(format!("flush: {e}")),
        Err(panic) => emitter.stats.record_error(format!("flush {}", panic_message(panic))),
    }
    emitter.flush();
}

/// What an acker task needs.
pub(crate) struct AckerTask {
    pub(crate) inputs: Receiver<Vec<AckerMsg>>,
    /// `spouts[task]`: where the spout task's events go (unbounded queues, so an acker never
    /// blocks).
    pub(crate) spouts: Vec<Option<TaskSender<AckEvent>>>,
    pub(crate) metrics: Arc<ComponentMetrics>,
    pub(crate) timeout: Duration,
}

pub(crate) fn run_acker(task: AckerTask) {
    let AckerTask { inputs, spouts, metrics, timeout } = task;
    let mut acker = Acker::default();
    let mut stats = ComponentStats::default();
    let mut publisher = Publisher::new(metrics);
    let mut outgoing: Vec<Vec<AckEvent>> = spouts.iter().map(|_| Vec::new()).collect();
    let mut last_rotation = Instant::now();
    let mut last_send = Instant::now();
    let send = |outgoing: &mut Vec<Vec<AckEvent>>| {
        for (events, spout) in outgoing.iter_mut().zip(&spouts) {
            if let (false, Some(spout)) = (events.is_empty(), spout) {
                // A spout that stopped no longer cares.
                let _ = spout.send(std::mem::take(events));
            }
        }
    };
    loop {
        let batch = match inputs.try_recv() {
            Ok(batch) => batch,
            Err(TryRecvError::Disconnected) => break,
            Err(TryRecvError::Empty) => {
                send(&mut outgoing);
                match inputs.recv_timeout(PUBLISH_INTERVAL) {
                    Ok(batch) => batch,
                    Err(RecvTimeoutError::Timeout) => Vec::new(),
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
        };
        stats.executed += batch.len() as u64;
        for msg in batch {
            if let Some((spout, event)) = acker.handle(msg) {
                if let Some(events) = outgoing.get_mut(spout as usize) {
                    events.push(event);
                }
            }
        }
        let now = Instant::now();
        if now.duration_since(last_send) >= FLUSH_INTERVAL {
            send(&mut outgoing);
            last_send = now;
        }
        if now.duration_since(last_rotation) >= timeout {
            acker.rotate();
            last_rotation = now;
        }
        publisher.maybe(&mut stats, now);
    }
    send(&mut outgoing);
    publisher.now(&mut stats, Instant::now());
}

/// The id of the task running on this thread, for thread names.
pub(crate) fn thread_name(component: &str, task: TaskId) -> String {
    format!("squall:{component}:{task}")
}
