//! Local mode: a whole topology in one process, one thread per task.
//!
//! [`LocalRun::start`] wires the tasks (bounded queues between them, unbounded only from ackers
//! back to spouts, so the acking cycle cannot deadlock), and [`LocalRun::wait`] returns when
//! every spout is done and every tuple tree is complete, when the duration is up, or when a
//! [`Stopper`] says so. Stopping is orderly: spouts stop emitting, then each bolt drains its
//! queue, flushes and cleans up once everything upstream of it has stopped.
//!
//! The same wiring runs a cluster worker's share of a topology ([`crate::worker`]): the tasks
//! it does not run are reached through their worker's forwarder instead of a queue, and their
//! queues are left open for the messages other workers send.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded, unbounded};
use smol_str::SmolStr;

use crate::acker::AckEvent;
use crate::collector::{AckOutbox, Emitter, Outbox, StreamRoute};
use crate::component::TaskContext;
use crate::executor::{self, AckerTask, BoltTask, Control, SpoutTask};
use crate::grouping::Target;
use crate::metrics::{ComponentMetrics, ComponentRole, ComponentSummary, TopologyMetrics};
use crate::topology::{Role, Topology};
use crate::tuple::{StreamSource, TaskId, Tuple};
use crate::worker::route::{LocalQueue, RemoteTask, TaskSender};

/// The component id of the acker tasks.
pub const ACKER_COMPONENT: &str = "__acker";

/// How a local run is bounded.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Stop after this long even if spouts have more to emit.
    pub duration: Option<Duration>,
    /// The znode store the tasks reach through their context (locks, leader election, Kafka
    /// offsets); none by default.
    pub coordination: Option<crate::Coordination>,
}

/// Why a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// Every spout was done and every tuple tree complete.
    Completed,
    /// The duration was up.
    Duration,
    /// A [`Stopper`] stopped it (Ctrl-C in `squall local`).
    Stopped,
}

/// A run that could not start: a component's factory refused to make a task.
#[derive(Debug, thiserror::Error)]
#[error("topology '{topology}': component '{component}' task {task}: {message}")]
pub struct StartError {
    /// The topology's name.
    pub topology: String,
    /// The component whose task could not be made.
    pub component: String,
    /// The task.
    pub task: TaskId,
    /// The factory's error.
    pub message: String,
}

/// The outcome of a run.
#[derive(Clone, Debug)]
pub struct RunReport {
    /// The topology's name.
    pub topology: String,
    /// Wall time from start to the last task's end.
    pub elapsed: Duration,
    /// Why it ended.
    pub reason: StopReason,
    /// Final counts per component, acker last.
    pub components: Vec<ComponentSummary>,
}

impl RunReport {
    /// The summary of the component called `id`.
    pub fn component(&self, id: &str) -> Option<&ComponentSummary> {
        self.components.iter().find(|c| c.id == id)
    }

    /// Errors and panics reported by the topology's code, over all components.
    pub fn errors(&self) -> u64 {
        self.components.iter().map(|c| c.stats.errors).sum()
    }
}

enum RunEvent {
    TaskEnded,
    StopRequested,
}

/// Stops a local run from another thread.
#[derive(Clone)]
pub struct Stopper {
    control: Arc<Control>,
    events: Sender<RunEvent>,
}

impl Stopper {
    /// Asks the run to stop: spouts stop emitting, bolts drain and flush.
    pub fn stop(&self) {
        self.control.stop.store(true, Ordering::Relaxed);
        let _ = self.events.send(RunEvent::StopRequested);
    }
}

/// Sends `TaskEnded` when a task's thread ends, however it ends.
struct EndNotice(Sender<RunEvent>);

impl Drop for EndNotice {
    fn drop(&mut self) {
        let _ = self.0.send(RunEvent::TaskEnded);
    }
}

/// A topology running in this process.
pub struct LocalRun {
    topology: String,
    metrics: TopologyMetrics,
    control: Arc<Control>,
    events_tx: Sender<RunEvent>,
    events: Receiver<RunEvent>,
    threads: Vec<JoinHandle<()>>,
    started: Instant,
    deadline: Option<Instant>,
}

/// Runs `topology` in this process until it completes or `options` stop it.
pub fn run_local(topology: &Topology, options: RunOptions) -> Result<RunReport, StartError> {
    Ok(LocalRun::start(topology, options)?.wait())
}

/// Where each component's tasks are.
struct Layout {
    /// `(component id, its task ids)`, components in topology order, the acker last.
    tasks: Vec<(SmolStr, Vec<TaskId>)>,
    total: usize,
}

impl Layout {
    fn new(topology: &Topology, ackers: u32) -> Self {
        let mut next: TaskId = 0;
        let mut tasks = Vec::new();
        let mut add = |id: SmolStr, n: u32| {
            tasks.push((id, (next..next + n).collect::<Vec<_>>()));
            next += n;
        };
        for c in &topology.components {
            add(c.id.clone(), c.parallelism);
        }
        if ackers > 0 {
            add(ACKER_COMPONENT.into(), ackers);
        }
        Layout { tasks, total: next as usize }
    }
}

/// How a run reaches a task it does not run itself: `Some` for a task on another worker.
pub(crate) type RemoteOf<'a> = &'a dyn Fn(TaskId) -> Option<Arc<RemoteTask>>;

impl LocalRun {
    /// Starts every task of `topology`. Fails, with nothing left running, if a factory
    /// cannot make one of its tasks.
    pub fn start(topology: &Topology, options: RunOptions) -> Result<LocalRun, StartError> {
        let (run, queues) = LocalRun::start_part(topology, options, &|_| None)?;
        // Nothing outside the run sends to its tasks: each queue closes as soon as everything
        // upstream of it has stopped.
        drop(queues);
        Ok(run)
    }

    /// Starts the tasks of `topology` that `remote` does not place elsewhere, sending to the
    /// others through their [`RemoteTask`]. Returns the run and the queues of its tasks, by task
    /// id, for messages from other workers; they stay open as long as the caller holds them.
    pub(crate) fn start_part(
        topology: &Topology,
        options: RunOptions,
        remote: RemoteOf<'_>,
    ) -> Result<(LocalRun, Vec<Option<LocalQueue>>), StartError> {
        let started = Instant::now();
        let config = Arc::new(topology.config.clone());
        let ackers = if config.acking { config.ackers } else { 0 };
        let layout = Layout::new(topology, ackers);
        let component_tasks = Arc::new(layout.tasks.clone());
        let topology_name: Arc<str> = topology.name.as_str().into();
        let batch = config.batch_size as usize;
        let remote: Vec<Option<Arc<RemoteTask>>> = (0..layout.total as TaskId).map(remote).collect();
        let is_local = |t: TaskId| remote[t as usize].is_none();

        // Queues of the local tasks: bounded into bolts and ackers, unbounded from ackers to
        // spouts. `*_to[task]` is how any task reaches `task`, local or not.
        let mut bolt_rx: Vec<Option<Receiver<Vec<Tuple>>>> = vec![None; layout.total];
        let mut bolt_to: Vec<Option<TaskSender<Tuple>>> = vec![None; layout.total];
        let mut spout_rx: Vec<Option<Receiver<Vec<AckEvent>>>> = vec![None; layout.total];
        let mut spout_to: Vec<Option<TaskSender<AckEvent>>> = vec![None; layout.total];
        let mut queues: Vec<Option<LocalQueue>> = (0..layout.total).map(|_| None).collect();
        for (c, (_, tasks)) in topology.components.iter().zip(&layout.tasks) {
            for &t in tasks {
                let i = t as usize;
                match (&remote[i], c.is_spout()) {
                    (Some(r), true) => spout_to[i] = Some(TaskSender::Remote(r.clone())),
                    (Some(r), false) => bolt_to[i] = Some(TaskSender::Remote(r.clone())),
                    (None, true) => {
                        let (tx, rx) = unbounded();
                        (spout_to[i], spout_rx[i]) = (Some(TaskSender::Local(tx.clone())), Some(rx));
                        queues[i] = Some(LocalQueue::Spout(tx));
                    }
                    (None, false) => {
                        let (tx, rx) = bounded(config.queue_batches());
                        (bolt_to[i], bolt_rx[i]) = (Some(TaskSender::Local(tx.clone())), Some(rx));
                        queues[i] = Some(LocalQueue::Bolt(tx));
                    }
                }
            }
        }
        let acker_tasks: &[TaskId] = if ackers > 0 { &layout.tasks.last().expect("acker component").1 } else { &[] };
        let mut acker_to = Vec::new();
        let mut acker_rx = Vec::new();
        for &t in acker_tasks {
            match &remote[t as usize] {
                Some(r) => acker_to.push(TaskSender::Remote(r.clone())),
                None => {
                    let (tx, rx) = bounded(config.queue_batches());
                    acker_to.push(TaskSender::Local(tx.clone()));
                    acker_rx.push((t, rx));
                    queues[t as usize] = Some(LocalQueue::Acker(tx));
                }
            }
        }

        let control = Control::new(config.max_spout_pending as usize);
        let (events_tx, events) = unbounded();
        let mut metrics = TopologyMetrics::default();

        // Make every task's instance first, so a factory error leaves nothing running.
        enum Instance {
            Spout(Box<dyn crate::Spout>),
            Bolt(Box<dyn crate::Bolt>),
        }
        let mut instances = Vec::new();
        for (c, (_, tasks)) in topology.components.iter().zip(&layout.tasks) {
            let local_tasks = tasks.iter().filter(|&&t| is_local(t)).count() as u32;
            if local_tasks == 0 {
                continue;
            }
            let role = if c.is_spout() { ComponentRole::Spout } else { ComponentRole::Bolt };
            metrics.components.push(ComponentMetrics::new(c.id.clone(), role, local_tasks));
            for (index, &task) in tasks.iter().enumerate().filter(|&(_, &t)| is_local(t)) {
                let ctx = TaskContext {
                    topology: topology_name.clone(),
                    component: c.id.clone(),
                    task,
                    task_index: index as u32,
                    parallelism: c.parallelism,
                    config: config.clone(),
                    component_tasks: component_tasks.clone(),
                    coordination: options.coordination.clone(),
                    election: Arc::default(),
                };
                let made = match &c.role {
                    Role::Spout(f) => f.create(&ctx).map(Instance::Spout),
                    Role::Bolt(f) => f.create(&ctx).map(Instance::Bolt),
                };
                let instance = made.map_err(|e| StartError {
                    topology: topology.name.clone(),
                    component: c.id.to_string(),
                    task,
                    message: e.to_string(),
                })?;
                instances.push((c, index as u32, task, instance, ctx));
            }
        }
        if !acker_rx.is_empty() {
            let role = ComponentRole::Acker;
            metrics.components.push(ComponentMetrics::new(ACKER_COMPONENT.into(), role, acker_rx.len() as u32));
        }

        let mut threads = Vec::new();
        let spawn = |name: String, events_tx: &Sender<RunEvent>, body: Box<dyn FnOnce() + Send>| {
            let notice = EndNotice(events_tx.clone());
            std::thread::Builder::new()
                .name(name)
                .spawn(move || {
                    let _notice = notice;
                    body();
                })
                .expect("the OS refused to start a task thread")
        };
        for (c, index, task, instance, ctx) in instances {
            let shared = metrics.component(&c.id).expect("registered above").clone();
            // Only the queues of this component's subscribers, so each queue closes as soon
            // as everything upstream of it has stopped.
            let mut senders: Vec<Option<TaskSender<Tuple>>> = vec![None; layout.total];
            let mut routes = Vec::new();
            for decl in &c.outputs {
                let source = StreamSource::intern(&c.id, &decl.name, &decl.fields);
                let mut targets = Vec::new();
                for (sub, (_, sub_tasks)) in topology.components.iter().zip(&layout.tasks) {
                    for input in sub.inputs.iter().filter(|i| i.from == c.id && i.stream == decl.name) {
                        for &t in sub_tasks {
                            senders[t as usize] = bolt_to[t as usize].clone();
                        }
                        let field_index = |f: &str| decl.fields.index_of(f).expect("checked when built");
                        targets.push(Target::new(&input.grouping, sub_tasks.clone(), field_index, is_local, index));
                    }
                }
                routes.push(StreamRoute { source, targets, direct: decl.direct });
            }
            let acks = (ackers > 0).then(|| AckOutbox::new(acker_to.clone(), batch));
            let emitter = Emitter::new(task, c.id.clone(), routes, Outbox::new(senders, batch), acks);
            let name = executor::thread_name(&c.id, task);
            let handle = match instance {
                Instance::Spout(spout) => {
                    let task = SpoutTask {
                        emitter,
                        events: spout_rx[task as usize].take().expect("one receiver per spout task"),
                        metrics: shared,
                        control: control.clone(),
                        timeout: config.message_timeout,
                        batch,
                    };
                    // The spout keeps its own sender so that waiting on its queue always waits,
                    // with or without ackers.
                    let keep_open = spout_to[task.emitter.task as usize].clone();
                    spawn(
                        name,
                        &events_tx,
                        Box::new(move || {
                            let _keep_open = keep_open;
                            executor::run_spout(spout, task);
                            drop(ctx);
                        }),
                    )
                }
                Instance::Bolt(bolt) => {
                    let task = BoltTask {
                        emitter,
                        inputs: bolt_rx[task as usize].take().expect("one receiver per bolt task"),
                        metrics: shared,
                        control: control.clone(),
                    };
                    spawn(
                        name,
                        &events_tx,
                        Box::new(move || {
                            executor::run_bolt(bolt, task);
                            drop(ctx);
                        }),
                    )
                }
            };
            threads.push(handle);
        }
        drop(bolt_to);
        drop(acker_to);
        if let Some(shared) = metrics.component(ACKER_COMPONENT) {
            for (task, inputs) in acker_rx {
                let acker = AckerTask {
                    inputs,
                    spouts: spout_to.clone(),
                    metrics: shared.clone(),
                    timeout: config.message_timeout,
                };
                let name = executor::thread_name(ACKER_COMPONENT, task);
                threads.push(spawn(name, &events_tx, Box::new(move || executor::run_acker(acker))));
            }
        }
        drop(spout_to);

        let run = LocalRun {
            topology: topology.name.clone(),
            metrics,
            control,
            events_tx,
            events,
            threads,
            started,
            deadline: options.duration.map(|d| started + d),
        };
        Ok((run, queues))
    }

    /// The live metrics of the run's components.
    pub fn metrics(&self) -> &TopologyMetrics {
        &self.metrics
    }

    /// A handle that stops the run from anywhere.
    /// Pauses (`false`) or resumes (`true`) the spouts: each calls its `deactivate` or
    /// `activate` and stops or starts emitting; bolts go on draining what is in flight.
    pub fn set_active(&self, active: bool) {
        self.control.active.store(active, Ordering::Relaxed);
    }

    /// Changes how many tuple trees each spout task may have in flight (with acking on); the
    /// spouts follow at their next emit.
    pub fn set_max_spout_pending(&self, max: u32) {
        self.control.max_spout_pending.store(max as usize, Ordering::Relaxed);
    }

    /// Sets the live values of component args (`<component>.<arg>` → value, as `squall config`
    /// writes them): each task whose args changed gets them through its `reconfigure` before
    /// its next tuple.
    pub fn set_live_args(&self, values: std::collections::BTreeMap<String, String>) {
        self.control.set_live(values);
    }

    pub fn stopper(&self) -> Stopper {
        Stopper { control: self.control.clone(), events: self.events_tx.clone() }
    }

    /// Waits until the run ends and returns its report.
    pub fn wait(self) -> RunReport {
        self.wait_with(|| {})
    }

    /// Like [`wait`](Self::wait), calling `on_stop` as soon as the run is asked to stop (by a
    /// [`Stopper`] or the duration), before waiting for its tasks to end.
    pub(crate) fn wait_with(self, on_stop: impl FnOnce()) -> RunReport {
        let mut running = self.threads.len();
        let mut reason = StopReason::Completed;
        let mut on_stop = Some(on_stop);
        let mut stop = |reason: &mut StopReason, why: StopReason| {
            if *reason == StopReason::Completed {
                *reason = why;
                self.control.stop.store(true, Ordering::Relaxed);
                if let Some(on_stop) = on_stop.take() {
                    on_stop();
                }
            }
        };
        while running > 0 {
            let event = match self.deadline {
                Some(deadline) if reason == StopReason::Completed => match self.events.recv_deadline(deadline) {
                    Ok(event) => event,
                    Err(_) => {
                        stop(&mut reason, StopReason::Duration);
                        continue;
                    }
                },
                _ => self.events.recv().expect("the run holds a sender"),
            };
            match event {
                RunEvent::TaskEnded => running -= 1,
                RunEvent::StopRequested => stop(&mut reason, StopReason::Stopped),
            }
        }
        for thread in self.threads {
            // Task code runs under catch_unwind; a panic here is in the runtime itself, and
            // its message has already been printed.
            let _ = thread.join();
        }
        RunReport {
            topology: self.topology,
            elapsed: self.started.elapsed(),
            reason,
            components: self.metrics.summary(),
        }
    }
}
