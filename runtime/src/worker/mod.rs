//! Cluster mode's worker: one worker slot's share of a topology's tasks, exchanging tuples,
//! acker messages and ack events with the other workers through the transport.
//!
//! [`WorkerRun::start`] runs the tasks that the [`Assignment`] gives this worker exactly as
//! local mode runs them (same threads, queues and task loops), and reaches every other task
//! through the worker the assignment puts it on: a forwarder per peer worker takes the batches
//! for that peer's tasks and hands them to the transport, and the transport's readers hand
//! what peers send to the queues of the local tasks. Acker tasks are ordinary tasks of the
//! assignment: a bolt's acks for a tree go to the worker that runs the tree's acker, and the
//! acker's verdict goes back to the worker that runs the tree's spout task.
//!
//! What a worker guarantees: **at-least-once** across workers, as in local mode. A message
//! lost between workers (a peer stopped or crashed, a connection died, a peer stayed
//! unreachable for the send timeout, a message arrived for a task this worker does not run)
//! leaves its tree incomplete, so the spout's message timeout fails the tree and the spout
//! replays it. Losses are counted ([`WorkerStats`]), never silent.
//!
//! ```no_run
//! # use std::collections::BTreeMap;
//! # use squall_runtime::prelude::*;
//! # use squall_runtime::scheduler::{Assignment, TaskLayout, LiveNode, schedule};
//! # use squall_runtime::worker::{WorkerOptions, WorkerRun, worker_id};
//! # fn demo(topology: &Topology) -> Result<(), Box<dyn std::error::Error>> {
//! let layout = TaskLayout::of_topology(topology)?;
//! let nodes = [LiveNode::new("n1", 1, ["rust"]), LiveNode::new("n2", 1, ["rust"])];
//! let assignment = schedule(&layout, &nodes, None, 2, 1)?;
//! let peers = BTreeMap::from([
//!     (worker_id("n1", 0), "10.0.0.1:6700".to_string()),
//!     (worker_id("n2", 0), "10.0.0.2:6700".to_string()),
//! ]);
//! let listen = "0.0.0.0:6700".parse()?;
//! let worker = WorkerRun::start(topology, &assignment, ("n1", 0), listen, &peers, WorkerOptions::default())?;
//! // ... later, on a new assignment that keeps this worker's tasks:
//! // worker.update(&new_assignment, &new_peers)?;
//! let report = worker.stop();
//! println!("{} messages for peers were dropped", report.stats.dropped);
//! # Ok(())
//! # }
//! ```

pub(crate) mod route;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Duration;

use rustc_hash::FxHashMap;

use crate::local::{LocalRun, RunOptions, RunReport, StartError, Stopper};
use crate::metrics::TopologyMetrics;
use crate::scheduler::{Assignment, TaskLayout, TaskRanges};
use crate::topology::Topology;
use crate::transport::{Delivery, StreamTable, Transport, TransportSettings, WorkerId};
use crate::tuple::TaskId;
use route::{Inbox, PeerQueue, RemoteTask, RouteCounts, start_forwarder};

/// The id of the worker on `slot` of `node`, as the transport and `/squall/workers` name it.
pub fn worker_id(node: &str, slot: u32) -> String {
    format!("{node}-{slot}")
}

/// How a worker runs.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// Stop after this long (tests and benchmarks; a cluster worker runs until stopped).
    pub duration: Option<Duration>,
    /// How long a message for a peer may wait for room in the peer's queue before the peer is
    /// taken as down and its messages are dropped (their trees are replayed).
    pub send_timeout: Duration,
    /// The znode store the tasks reach through their context.
    pub coordination: Option<crate::Coordination>,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions { duration: None, send_timeout: Duration::from_secs(5), coordination: None }
    }
}

/// Why a worker could not start or apply a new assignment.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The assignment numbers the tasks differently than the topology this binary built.
    #[error(
        "the assignment's task layout does not match topology '{0}' as this binary builds it; \
         run the same topology file and binary version as the master scheduled"
    )]
    LayoutMismatch(String),
    /// The assignment has no worker on this node and slot.
    #[error("the assignment has no worker on slot {slot} of node '{node}'")]
    NotAssigned {
        /// The node.
        node: String,
        /// The slot.
        slot: u32,
    },
    /// A worker of the assignment has no address in the peer map.
    #[error("no address is known for worker '{0}', which the assignment runs tasks on")]
    NoAddress(String),
    /// The transport could not listen.
    #[error("cannot listen for other workers on {addr}: {source}")]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A component's factory refused to make a task.
    #[error(transparent)]
    Start(#[from] StartError),
    /// The new assignment moves tasks onto or off this worker, which [`WorkerRun::update`]
    /// does not do.
    #[error("the new assignment changes the tasks of worker '{0}': restart the worker to apply it")]
    TasksChanged(String),
}

/// What a worker's routing has done: messages that did not reach their task, and transport
/// counts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkerStats {
    /// Messages for peers dropped: the peer stayed unreachable for the send timeout, left the
    /// assignment, or the worker stopped with messages still queued for it.
    pub dropped: u64,
    /// Messages written to connections that died before the peer confirmed them.
    pub lost: u64,
    /// Messages from peers for a task this worker does not run.
    pub misrouted: u64,
    /// Messages from peers that arrived after this worker stopped taking them.
    pub refused: u64,
    /// Messages received from peers.
    pub received: u64,
}

/// How a worker run ended.
#[derive(Clone, Debug)]
pub struct WorkerReport {
    /// The local tasks' report, as local mode gives it (components with no local task are
    /// absent).
    pub run: RunReport,
    /// The routing counts at the end.
    pub stats: WorkerStats,
}

/// One worker's share of a running topology.
pub struct WorkerRun {
    id: WorkerId,
    node: String,
    slot: u32,
    topology: String,
    tasks: TaskRanges,
    layout: TaskLayout,
    run: LocalRun,
    inbox: Arc<Inbox>,
    /// `remote[task]`: the route of a task another worker runs.
    remote: Vec<Option<Arc<RemoteTask>>>,
    routing: Routing,
}

/// The transport and the forwarders to the peers.
struct Routing {
    transport: Arc<Transport>,
    peers: FxHashMap<WorkerId, Arc<PeerQueue>>,
    forwarders: Vec<JoinHandle<()>>,
    counts: Arc<RouteCounts>,
    queue_batches: usize,
    send_timeout: Duration,
}

impl Routing {
    /// The forwarder queue of `peer`, started on first use.
    fn peer_queue(&mut self, peer: &WorkerId) -> Arc<PeerQueue> {
        if let Some(queue) = self.peers.get(peer) {
            return queue.clone();
        }
        let (queue, thread) = start_forwarder(
            peer.clone(),
            self.transport.clone(),
            self.queue_batches,
            self.send_timeout,
            self.counts.clone(),
        );
        self.forwarders.push(thread);
        self.peers.insert(peer.clone(), queue.clone());
        queue
    }

    fn stats(&self) -> WorkerStats {
        let transport = self.transport.stats();
        WorkerStats {
            dropped: self.counts.dropped.load(Ordering::Relaxed),
            lost: transport.lost,
            misrouted: self.counts.misrouted.load(Ordering::Relaxed),
            refused: self.counts.refused.load(Ordering::Relaxed),
            received: transport.received,
        }
    }

    /// Lets every forwarder send what it holds, then closes the transport. The caller has
    /// dropped every other hold on the peer queues.
    fn close(mut self) -> WorkerStats {
        self.peers.clear();
        for forwarder in self.forwarders.drain(..) {
            // A panic in a forwarder has been printed; what it held is replayed.
            let _ = forwarder.join();
        }
        let stats = self.stats();
        // The forwarders held the only other references; if one is left, dropping it closes.
        let unsent = Arc::try_unwrap(self.transport).map(Transport::close).unwrap_or_default();
        WorkerStats { dropped: stats.dropped + unsent.len() as u64, ..stats }
    }
}

impl WorkerRun {
    /// Starts the tasks `assignment` gives to worker `me` (node id, slot), listening on
    /// `listen` for the other workers, which are reached at their address in `peers` (worker
    /// id, see [`worker_id`], → "host:port"). Fails, with nothing left running, when the
    /// assignment does not fit the topology, a peer has no address, the address is taken, or
    /// a factory cannot make a task.
    pub fn start(
        topology: &Topology,
        assignment: &Assignment,
        me: (&str, u32),
        listen: SocketAddr,
        peers: &BTreeMap<String, String>,
        options: WorkerOptions,
    ) -> Result<WorkerRun, WorkerError> {
        let (node, slot) = me;
        let mismatch = || WorkerError::LayoutMismatch(topology.name.clone());
        let layout = TaskLayout::of_topology(topology).map_err(|_| mismatch())?;
        if &layout != assignment.layout() {
            return Err(mismatch());
        }
        let tasks = assignment
            .tasks_of(node, slot)
            .ok_or_else(|| WorkerError::NotAssigned { node: node.into(), slot })?
            .clone();
        let id: WorkerId = worker_id(node, slot).into();
        let addresses = peer_addresses(assignment, &id, peers)?;

        let counts = Arc::new(RouteCounts::default());
        let inbox = Arc::new(Inbox::new(counts.clone()));
        // Peers that started first may already be sending: they wait until the tasks are up.
        let opening = inbox.opening();
        let delivery: Delivery = {
            let inbox = inbox.clone();
            Arc::new(move |_, envelopes| inbox.deliver(envelopes))
        };
        let streams = Arc::new(StreamTable::new(topology));
        let transport = Transport::start(id.clone(), streams, listen, TransportSettings::default(), delivery)
            .map_err(|source| WorkerError::Listen { addr: listen, source })?;
        transport.set_peers(addresses);
        let mut routing = Routing {
            transport: Arc::new(transport),
            peers: FxHashMap::default(),
            forwarders: Vec::new(),
            counts,
            queue_batches: topology.config.queue_batches(),
            send_timeout: options.send_timeout,
        };
        let remote: Vec<Option<Arc<RemoteTask>>> = (0..layout.task_count())
            .map(|t| (!tasks.contains(t)).then(|| RemoteTask::new(t, routing.peer_queue(&owner_of(assignment, t)))))
            .collect();
        let run_options = RunOptions { duration: options.duration, coordination: options.coordination.clone() };
        let (run, queues) =
            LocalRun::start_part(topology, run_options, &|t: TaskId| remote.get(t as usize).cloned().flatten())?;
        opening.open(queues);
        let topology = topology.name.clone();
        Ok(WorkerRun { id, node: node.into(), slot, topology, tasks, layout, run, inbox, remote, routing })
    }

    /// This worker's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The address other workers reach this one at (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.routing.transport.local_addr()
    }

    /// The tasks this worker runs.
    pub fn tasks(&self) -> &TaskRanges {
        &self.tasks
    }

    /// The live metrics of the local tasks' components.
    pub fn metrics(&self) -> &TopologyMetrics {
        self.run.metrics()
    }

    /// The routing counts so far.
    pub fn stats(&self) -> WorkerStats {
        self.routing.stats()
    }

    /// A handle that stops the worker from anywhere.
    pub fn stopper(&self) -> Stopper {
        self.run.stopper()
    }

    /// Pauses or resumes this worker's spouts (see [`LocalRun::set_active`]).
    pub fn set_active(&self, active: bool) {
        self.run.set_active(active);
    }

    /// Changes how many trees each of this worker's spout tasks may have in flight (see
    /// [`LocalRun::set_max_spout_pending`]).
    pub fn set_max_spout_pending(&self, max: u32) {
        self.run.set_max_spout_pending(max);
    }

    /// Sets the live values of this worker's component args (see
    /// [`LocalRun::set_live_args`]).
    pub fn set_live_args(&self, values: std::collections::BTreeMap<String, String>) {
        self.run.set_live_args(values);
    }

    /// Applies a new assignment that keeps this worker's tasks: peers that moved are reached
    /// at their new address, new peers get a forwarder, and each remote task's later messages
    /// go to the worker that now runs it. Messages still queued in the transport for a worker
    /// that left are sent on by the new assignment; those its forwarder still held are dropped
    /// and counted, and their trees replayed.
    ///
    /// Moving tasks onto or off this worker is not done here: that fails with
    /// [`WorkerError::TasksChanged`], and the worker must be restarted with the new assignment.
    pub fn update(&mut self, assignment: &Assignment, peers: &BTreeMap<String, String>) -> Result<(), WorkerError> {
        if assignment.layout() != &self.layout {
            return Err(WorkerError::LayoutMismatch(self.topology.clone()));
        }
        if assignment.tasks_of(&self.node, self.slot) != Some(&self.tasks) {
            return Err(WorkerError::TasksChanged(self.id.to_string()));
        }
        let addresses = peer_addresses(assignment, &self.id, peers)?;
        // The transport knows every new peer before a forwarder sends to it.
        let unsent = self.routing.transport.set_peers(addresses.iter().map(|(w, a)| (w.clone(), a.clone())));
        for route in self.remote.iter().flatten() {
            let owner = owner_of(assignment, route.task());
            if route.peer() != owner {
                route.route_to(self.routing.peer_queue(&owner));
            }
        }
        self.routing.peers.retain(|peer, _| addresses.contains_key(peer));
        // Forwarders of peers that left end on their own; forget those that have.
        self.routing.forwarders.retain(|f| !f.is_finished());
        for envelope in unsent {
            let sent = match self.remote.get(envelope.to as usize) {
                Some(Some(route)) => route.resend(envelope.message),
                _ => Err(1),
            };
            if let Err(n) = sent {
                self.routing.counts.dropped.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Stops the worker and waits for it: see [`wait`](Self::wait).
    pub fn stop(self) -> WorkerReport {
        self.stopper().stop();
        self.wait()
    }

    /// Waits until the worker is stopped (by a [`Stopper`] or the duration), or until all its
    /// tasks have ended, and returns its report. Stopping is orderly for the local tasks:
    /// spouts stop emitting, messages from peers are no longer taken, each bolt drains its
    /// queue and flushes, and what they emit for peers is sent within the send timeout.
    pub fn wait(self) -> WorkerReport {
        let WorkerRun { run, inbox, remote, routing, .. } = self;
        let report = run.wait_with(|| inbox.close());
        inbox.close();
        // The forwarders end once nothing can queue more for them.
        drop(remote);
        WorkerReport { run: report, stats: routing.close() }
    }
}

/// The worker that runs `task` in `assignment`, which runs every task of its layout.
fn owner_of(assignment: &Assignment, task: TaskId) -> WorkerId {
    let w = assignment.worker_of(task).expect("an assignment runs every task of its layout");
    worker_id(&w.node, w.slot).into()
}

/// The address of every worker of `assignment` but `me`.
fn peer_addresses(
    assignment: &Assignment,
    me: &WorkerId,
    peers: &BTreeMap<String, String>,
) -> Result<FxHashMap<WorkerId, String>, WorkerError> {
    let mut addresses = FxHashMap::default();
    for w in assignment.workers() {
        let id = worker_id(&w.node, w.slot);
        if *id == **me {
            continue;
        }
        let addr = peers.get(&id).ok_or_else(|| WorkerError::NoAddress(id.clone()))?;
        addresses.insert(WorkerId::from(id), addr.clone());
    }
    Ok(addresses)
}
