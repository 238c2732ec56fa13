//! The cluster scheduler: which worker slot runs which task.
//!
//! The master turns a topology into an [`Assignment`] with [`schedule`]: a list of workers (a
//! node and one of its slots) and the tasks each one runs. The scheduler is a pure function of
//! the topology's [`TaskLayout`], the [`LiveNode`]s, the previous assignment and the number of
//! workers wanted: the same inputs always give the same assignment, and it does no I/O.
//!
//! What [`schedule`] guarantees:
//! - every task runs on exactly one worker, on a node whose binary knows the task's component
//!   kind (the runtime's own kinds, such as the acker's, are known everywhere);
//! - each component's tasks are spread over the workers that can run them, counts differing by
//!   at most one; then all tasks over all workers, counts differing by at most one when every
//!   node knows every kind (and as nearly as the kinds allow otherwise);
//! - workers are spread over nodes as evenly as their free slots allow;
//! - **recovery**: when a node or a slot is lost, no task of a surviving worker moves: only the
//!   tasks of the workers that are gone are placed again, on free slots that replace them or,
//!   when there are none, on the other workers;
//! - **rebalance**: when the topology asks for another number of workers, a component's
//!   parallelism changes, or slots come back after a shortage, tasks move as little as
//!   restoring the even spread allows: going from 2 to 3 workers with 6 tasks moves 2 of them;
//! - too few free slots is not an error: the topology runs on what there is and the
//!   assignment says how many workers it is [short by](Assignment::short_by).
//!
//! To spread a topology afresh over the cluster as it is now, schedule it without a previous
//! assignment.
//!
//! How: the survivors of the previous assignment stay; free slots on the least used nodes are
//! added (first for kinds no chosen node knows) up to the workers wanted. How many tasks of
//! each component each worker then runs is a min-cost flow whose costs put each component's
//! spread first, even totals second and tasks staying put third, so its optimum is an even
//! spread that moves the fewest tasks.
//!
//! Task ids mean the same as in local mode ([`TaskLayout`]), and an assignment carries its
//! layout, so a task keeps its place across a change of another component's parallelism.
//!
//! ```
//! use squall_runtime::scheduler::{LiveNode, TaskLayout, schedule};
//!
//! let mut layout = TaskLayout::new();
//! layout.push("lines", "file", 1)?;
//! layout.push("split", "split", 4)?;
//! let nodes = [
//!     LiveNode::new("n1", 2, ["file", "split"]),
//!     LiveNode::new("n2", 2, ["split"]).with_taken([0]),
//! ];
//! let assignment = schedule(&layout, &nodes, None, 2, 7)?;
//! assert_eq!(assignment.workers().len(), 2);
//! assert_eq!(assignment.worker_of(0).unwrap().node, "n1"); // only n1 knows `file`
//! assert_eq!(assignment.workers_on("n2").count(), 1);
//!
//! // n2 is lost: its tasks move to a free slot, everything else stays.
//! let after = schedule(&layout, &nodes[..1], Some(&assignment), 2, 7)?;
//! let lost: Vec<u32> = assignment.workers_on("n2").flat_map(|w| w.tasks.iter()).collect();
//! assert_eq!(after.moved_since(&assignment), lost);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::config::TopologyConfig;
use crate::local::ACKER_COMPONENT;
use crate::spec::TopologySpec;
use crate::topology::Topology;
use crate::tuple::TaskId;

/// Why a topology could not be scheduled: what is missing, in terms a user can act on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// Some component's kind is not registered in any live node's binary.
    #[error(
        "no live node knows component kind '{kind}' (component '{component}'); \
         start a node whose binary registers it"
    )]
    UnknownKind {
        /// The kind nobody knows.
        kind: String,
        /// The first component of that kind.
        component: String,
    },
    /// The nodes that know some component's kind have no free slot.
    #[error(
        "no free worker slot on a live node that knows component kind '{kind}' (component '{component}'); \
         free a slot on such a node or start another"
    )]
    NoSlotForKind {
        /// The kind that cannot be placed.
        kind: String,
        /// The first component of that kind.
        component: String,
    },
    /// Every slot of every live node is taken by other topologies.
    #[error(
        "no free worker slot on any live node ({slots} slots on {nodes} nodes, all taken); \
         kill a topology or start a node"
    )]
    NoFreeSlot {
        /// How many live nodes there are.
        nodes: usize,
        /// How many slots they have together.
        slots: u64,
    },
    /// There is no live node at all.
    #[error("no live node: start one with `squall node`")]
    NoLiveNode,
    /// Two live nodes have the same id.
    #[error("two live nodes have the id '{0}'")]
    DuplicateNode(String),
    /// Zero workers were asked for.
    #[error("workers must be at least 1")]
    NoWorkersWanted,
    /// The topology has no task to run.
    #[error("the topology has no task to run")]
    NoTasks,
    /// A component cannot be added to a [`TaskLayout`].
    #[error("component '{component}': {reason}")]
    InvalidLayout {
        /// The component at fault.
        component: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// The runtime's own component kinds (the acker's): every binary runs them.
fn is_system_kind(kind: &str) -> bool {
    kind.starts_with("__")
}

/// One component's tasks in a [`TaskLayout`]: ids `first .. first + parallelism`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentTasks {
    /// The component's id.
    pub id: String,
    /// Its registered kind: only nodes whose binary knows it run its tasks.
    pub kind: String,
    /// How many tasks it has.
    pub parallelism: u32,
    /// Its first task id (not stored: it follows from the components before it).
    #[serde(skip)]
    pub first: TaskId,
}

impl ComponentTasks {
    /// Its task ids.
    pub fn tasks(&self) -> Range<TaskId> {
        self.first..self.first + self.parallelism
    }
}

/// Which task ids each component has, numbered as local mode numbers them: components in
/// topology order (spouts before bolts in a topology file), each taking the next
/// `parallelism` ids from 0, and the acker tasks (component `__acker`) last.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "Vec<ComponentTasks>", try_from = "Vec<ComponentTasks>")]
pub struct TaskLayout {
    components: Vec<ComponentTasks>,
}

impl TaskLayout {
    /// A layout with no component.
    pub fn new() -> Self {
        TaskLayout::default()
    }

    /// The layout of a checked topology, acker tasks included.
    pub fn of_topology(topology: &Topology) -> Result<Self, ScheduleError> {
        let mut layout = TaskLayout::new();
        for c in &topology.components {
            layout.push(&c.id, &c.kind, c.parallelism)?;
        }
        layout.push_ackers(&topology.config)?;
        Ok(layout)
    }

    /// The layout of a topology file, for a master whose binary may not know its kinds. It is
    /// the layout of the topology the file builds.
    pub fn of_spec(spec: &TopologySpec) -> Result<Self, ScheduleError> {
        let mut layout = TaskLayout::new();
        for s in &spec.spouts {
            layout.push(&s.id, &s.kind, s.parallelism)?;
        }
        for b in &spec.bolts {
            layout.push(&b.id, &b.kind, b.parallelism)?;
        }
        layout.push_ackers(&spec.config)?;
        Ok(layout)
    }

    fn push_ackers(&mut self, config: &TopologyConfig) -> Result<(), ScheduleError> {
        if config.acking && config.ackers > 0 {
            self.push(ACKER_COMPONENT, ACKER_COMPONENT, config.ackers)?;
        }
        Ok(())
    }

    /// Adds a component with the next `parallelism` task ids, and returns them.
    pub fn push(&mut self, id: &str, kind: &str, parallelism: u32) -> Result<Range<TaskId>, ScheduleError> {
        let invalid = |reason: &str| ScheduleError::InvalidLayout { component: id.into(), reason: reason.into() };
        if self.component(id).is_some() {
            return Err(invalid("two components have this id"));
        }
        let first = self.task_count();
        let end =
            first.checked_add(parallelism).ok_or_else(|| invalid("the topology would have 2^32 tasks or more"))?;
        self.components.push(ComponentTasks { id: id.into(), kind: kind.into(), parallelism, first });
        Ok(first..end)
    }

    /// The components, in task id order.
    pub fn components(&self) -> &[ComponentTasks] {
        &self.components
    }

    /// How many tasks there are: the ids are `0 .. task_count()`.
    pub fn task_count(&self) -> u32 {
        self.components.last().map_or(0, |c| c.first + c.parallelism)
    }

    /// The component called `id`.
    pub fn component(&self, id: &str) -> Option<&ComponentTasks> {
        self.components.iter().find(|c| c.id == id)
    }

    /// The component that `task` belongs to.
    pub fn component_of(&self, task: TaskId) -> Option<&ComponentTasks> {
        self.components.get(self.index_of(task)?)
    }

    fn index_of(&self, task: TaskId) -> Option<usize> {
        let i = self.components.partition_point(|c| c.first + c.parallelism <= task);
        (i < self.components.len()).then_some(i)
    }

    /// The id in `to` of task `task` of this layout: the same component (by id) and the same
    /// index among its tasks, if `to` still has it.
    fn carry(&self, task: TaskId, to: &TaskLayout) -> Option<TaskId> {
        let from = self.component_of(task)?;
        let target = to.component(&from.id)?;
        let index = task - from.first;
        (index < target.parallelism).then_some(target.first + index)
    }
}

impl From<TaskLayout> for Vec<ComponentTasks> {
    fn from(layout: TaskLayout) -> Self {
        layout.components
    }
}

impl TryFrom<Vec<ComponentTasks>> for TaskLayout {
    type Error = ScheduleError;

    fn try_from(components: Vec<ComponentTasks>) -> Result<Self, Self::Error> {
        let mut layout = TaskLayout::new();
        for c in components {
            layout.push(&c.id, &c.kind, c.parallelism)?;
        }
        Ok(layout)
    }
}

/// A live node as the scheduler sees it: its slots and the component kinds its binary knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveNode {
    /// The node id.
    pub id: String,
    /// How many worker slots it has: slot indexes `0 .. slots`.
    pub slots: u32,
    /// The component kinds its binary knows.
    pub kinds: BTreeSet<String>,
    /// Its slots already running workers of *other* topologies. A slot of the topology being
    /// scheduled must not be listed: the scheduler would take it for lost.
    pub taken: BTreeSet<u32>,
}

impl LiveNode {
    /// A node with `slots` free slots whose binary knows `kinds`.
    pub fn new(id: &str, slots: u32, kinds: impl IntoIterator<Item = impl Into<String>>) -> Self {
        LiveNode { id: id.into(), slots, kinds: kinds.into_iter().map(Into::into).collect(), taken: BTreeSet::new() }
    }

    /// The same node with `taken` slots running other topologies' workers.
    pub fn with_taken(mut self, taken: impl IntoIterator<Item = u32>) -> Self {
        self.taken.extend(taken);
        self
    }

    /// Whether its binary runs components of `kind`.
    pub fn knows(&self, kind: &str) -> bool {
        is_system_kind(kind) || self.kinds.contains(kind)
    }

    /// Whether `slot` exists and is not taken by another topology.
    pub fn is_free(&self, slot: u32) -> bool {
        slot < self.slots && !self.taken.contains(&slot)
    }

    fn free_slots(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.slots).filter(|s| !self.taken.contains(s))
    }
}

/// A set of task ids, stored as sorted inclusive ranges: `[[0,3],[7,7]]` is tasks 0, 1, 2, 3
/// and 7. Compact in JSON whatever the number of tasks.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "Vec<(TaskId, TaskId)>", try_from = "Vec<(TaskId, TaskId)>")]
pub struct TaskRanges(Vec<(TaskId, TaskId)>);

impl TaskRanges {
    /// The tasks, ascending.
    pub fn iter(&self) -> impl Iterator<Item = TaskId> + '_ {
        self.0.iter().flat_map(|&(a, b)| a..=b)
    }

    /// Whether `task` is in the set.
    pub fn contains(&self, task: TaskId) -> bool {
        let i = self.0.partition_point(|&(_, b)| b < task);
        self.0.get(i).is_some_and(|&(a, _)| a <= task)
    }

    /// How many tasks there are.
    pub fn len(&self) -> u64 {
        self.0.iter().map(|&(a, b)| u64::from(b - a) + 1).sum()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The inclusive ranges, ascending and apart.
    pub fn ranges(&self) -> &[(TaskId, TaskId)] {
        &self.0
    }
}

impl FromIterator<TaskId> for TaskRanges {
    fn from_iter<I: IntoIterator<Item = TaskId>>(tasks: I) -> Self {
        let mut tasks: Vec<TaskId> = tasks.into_iter().collect();
        tasks.sort_unstable();
        let mut ranges: Vec<(TaskId, TaskId)> = Vec::new();
        for t in tasks {
            match ranges.last_mut() {
                Some((_, b)) if t <= b.saturating_add(1) => *b = (*b).max(t),
                _ => ranges.push((t, t)),
            }
        }
        TaskRanges(ranges)
    }
}

impl From<TaskRanges> for Vec<(TaskId, TaskId)> {
    fn from(ranges: TaskRanges) -> Self {
        ranges.0
    }
}

impl TryFrom<Vec<(TaskId, TaskId)>> for TaskRanges {
    type Error = String;

    fn try_from(ranges: Vec<(TaskId, TaskId)>) -> Result<Self, Self::Error> {
        let mut merged: Vec<(TaskId, TaskId)> = Vec::with_capacity(ranges.len());
        for (a, b) in ranges {
            if a > b {
                return Err(format!("task range [{a},{b}] ends before it starts"));
            }
            match merged.last_mut() {
                Some((_, pb)) if a <= *pb => {
                    return Err(format!("task range [{a},{b}] overlaps or precedes the one before it"));
                }
                Some((_, pb)) if a == *pb + 1 => *pb = b,
                _ => merged.push((a, b)),
            }
        }
        Ok(TaskRanges(merged))
    }
}

/// One worker of an assignment: a slot of a node, and the tasks it runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerAssignment {
    /// The node id.
    pub node: String,
    /// The slot index on the node.
    pub slot: u32,
    /// The tasks it runs.
    pub tasks: TaskRanges,
}

/// Where every task of a topology runs: the payload of `/squall/assignments/<name>`.
///
/// Always valid: every task of its layout runs on exactly one worker, and no two workers share
/// a slot ([`Assignment::from_json`] checks what it reads). Workers are ordered by node id,
/// then slot.
///
/// ```json
/// {"epoch":7,"version":1,"workers_wanted":2,"short_by":0,
///  "layout":[{"id":"lines","kind":"file","parallelism":1},{"id":"split","kind":"split","parallelism":4}],
///  "workers":[{"node":"n1","slot":0,"tasks":[[0,2]]},{"node":"n2","slot":1,"tasks":[[3,4]]}]}
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "AssignmentData")]
pub struct Assignment {
    epoch: u64,
    version: u64,
    workers_wanted: u32,
    short_by: u32,
    layout: TaskLayout,
    workers: Vec<WorkerAssignment>,
}

/// An assignment as read, before its checks.
#[derive(Deserialize)]
struct AssignmentData {
    epoch: u64,
    version: u64,
    workers_wanted: u32,
    #[serde(default)]
    short_by: u32,
    layout: TaskLayout,
    workers: Vec<WorkerAssignment>,
}

impl TryFrom<AssignmentData> for Assignment {
    type Error = String;

    fn try_from(data: AssignmentData) -> Result<Self, Self::Error> {
        let mut slots = BTreeSet::new();
        for w in &data.workers {
            if !slots.insert((w.node.as_str(), w.slot)) {
                return Err(format!("two workers on slot {} of node '{}'", w.slot, w.node));
            }
        }
        // Every task exactly once: the ranges of all workers, sorted, tile 0..task_count.
        let mut ranges: Vec<(TaskId, TaskId)> = data.workers.iter().flat_map(|w| w.tasks.0.iter().copied()).collect();
        ranges.sort_unstable();
        let mut next: u64 = 0;
        for (a, b) in ranges {
            match u64::from(a).cmp(&next) {
                std::cmp::Ordering::Less => return Err(format!("task {a} is assigned twice")),
                std::cmp::Ordering::Greater => return Err(format!("task {next} is not assigned")),
                std::cmp::Ordering::Equal => next = u64::from(b) + 1,
            }
        }
        let count = u64::from(data.layout.task_count());
        if next < count {
            return Err(format!("task {next} is not assigned"));
        }
        if next > count {
            return Err(format!("task {} is assigned but the layout has {count} tasks", next - 1));
        }
        let AssignmentData { epoch, version, workers_wanted, short_by, layout, mut workers } = data;
        workers.sort_by(|a, b| (&a.node, a.slot).cmp(&(&b.node, b.slot)));
        Ok(Assignment { epoch, version, workers_wanted, short_by, layout, workers })
    }
}

/// An assignment znode that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("invalid assignment: {0}")]
pub struct AssignmentError(serde_json::Error);

impl Assignment {
    /// Reads an assignment from its JSON, checking that every task runs exactly once.
    pub fn from_json(json: &[u8]) -> Result<Assignment, AssignmentError> {
        serde_json::from_slice(json).map_err(AssignmentError)
    }

    /// The assignment as compact JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an assignment has only string keys and plain values")
    }

    /// The epoch of the master that wrote it (its fencing token).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Its generation: 1 for a topology's first assignment, one more at each rescheduling.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Which task ids each component has.
    pub fn layout(&self) -> &TaskLayout {
        &self.layout
    }

    /// The workers, ordered by node id, then slot.
    pub fn workers(&self) -> &[WorkerAssignment] {
        &self.workers
    }

    /// How many workers the topology asked for.
    pub fn workers_wanted(&self) -> u32 {
        self.workers_wanted
    }

    /// How many fewer workers run the topology than it asked for, for want of free slots
    /// (0 when it got them all). A master reschedules when slots free up.
    pub fn short_by(&self) -> u32 {
        self.short_by
    }

    /// The worker that runs `task`.
    pub fn worker_of(&self, task: TaskId) -> Option<&WorkerAssignment> {
        self.workers.iter().find(|w| w.tasks.contains(task))
    }

    /// The tasks run by the worker on `slot` of `node`.
    pub fn tasks_of(&self, node: &str, slot: u32) -> Option<&TaskRanges> {
        self.workers.iter().find(|w| w.node == node && w.slot == slot).map(|w| &w.tasks)
    }

    /// The workers on `node`, by slot.
    pub fn workers_on<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a WorkerAssignment> + 'a {
        self.workers.iter().filter(move |w| w.node == node)
    }

    /// The tasks, ascending, that run on another worker than in `previous`. A task is matched
    /// to its previous self by component id and index, so tasks of a component that grew are
    /// new, not moved.
    pub fn moved_since(&self, previous: &Assignment) -> Vec<TaskId> {
        let mut moved: Vec<TaskId> = Vec::new();
        for w in &self.workers {
            for task in w.tasks.iter() {
                let before = self.layout.carry(task, &previous.layout).and_then(|t| previous.worker_of(t));
                if before.is_some_and(|b| b.node != w.node || b.slot != w.slot) {
                    moved.push(task);
                }
            }
        }
        moved.sort_unstable();
        moved
    }
}

impl fmt::Display for Assignment {
    /// One line per worker: `n1/0: 0-2, 5`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for w in &self.workers {
            let ranges: Vec<String> = w
                .tasks
                .ranges()
                .iter()
                .map(|&(a, b)| if a == b { a.to_string() } else { format!("{a}-{b}") })
                .collect();
            writeln!(f, "{}/{}: {}", w.node, w.slot, ranges.join(", "))?;
        }
        Ok(())
    }
}

/// Schedules the tasks of `layout` on `workers_wanted` workers of `nodes`, moving as few tasks
/// of `previous` as it can; `epoch` is the master's fencing token, stored in the result.
///
/// The result has `min(workers_wanted, tasks, free slots)` workers, more only when no single
/// node knows every kind and more are needed to run them all, and fewer when a worker would
/// get no task it can run. See the [module documentation](self) for the guarantees.
pub fn schedule(
    layout: &TaskLayout,
    nodes: &[LiveNode],
    previous: Option<&Assignment>,
    workers_wanted: u32,
    epoch: u64,
) -> Result<Assignment, ScheduleError> {
    if workers_wanted == 0 {
        return Err(ScheduleError::NoWorkersWanted);
    }
    if layout.task_count() == 0 {
        return Err(ScheduleError::NoTasks);
    }
    let cluster = Cluster::new(layout, nodes)?;
    let survivors = previous.map(|p| cluster.survivors(p)).unwrap_or_default();
    let wanted = workers_wanted.min(layout.task_count());
    let target = wanted.min(cluster.free_slot_count());
    // Recovery (the same request, and no slots back after a shortage): survivors stay and keep
    // every task they can run. Otherwise (rebalance), they give up what the even spread needs.
    let keep_survivors = previous.is_some_and(|p| {
        let slots_back = p.short_by > 0 && target as usize > p.workers.len();
        p.workers_wanted == workers_wanted && p.layout == *layout && !slots_back
    });
    let chosen = cluster.choose_workers(&survivors, target, keep_survivors)?;

    let held = place_tasks(&cluster, &chosen, &survivors, keep_survivors);

    let workers = chosen
        .iter()
        .zip(&held)
        .filter(|(_, held)| held.iter().any(|tasks| !tasks.is_empty()))
        .map(|(&(node, slot), held)| WorkerAssignment {
            node: cluster.nodes[node].id.clone(),
            slot,
            tasks: held.iter().flatten().copied().collect(),
        })
        .collect();
    Ok(Assignment {
        epoch,
        version: previous.map_or(1, |p| p.version.saturating_add(1)),
        workers_wanted,
        short_by: wanted - target,
        layout: layout.clone(),
        workers,
    })
}

/// A worker of the previous assignment whose slot is still free on a live node that can run
/// some of the topology, with the tasks it runs that it still can (in the new layout's ids).
struct Survivor {
    node: usize,
    slot: u32,
    tasks: Vec<TaskId>,
}

/// The live nodes that can run part of the topology, sorted by id.
struct Cluster<'a> {
    layout: &'a TaskLayout,
    nodes: Vec<&'a LiveNode>,
    /// The kinds of the topology's components, without the system kinds, sorted.
    kinds: Vec<&'a str>,
}

impl<'a> Cluster<'a> {
    fn new(layout: &'a TaskLayout, nodes: &'a [LiveNode]) -> Result<Self, ScheduleError> {
        if nodes.is_empty() {
            return Err(ScheduleError::NoLiveNode);
        }
        let mut sorted: Vec<&LiveNode> = nodes.iter().collect();
        sorted.sort_by(|a, b| a.id.cmp(&b.id));
        if let Some(pair) = sorted.windows(2).find(|p| p[0].id == p[1].id) {
            return Err(ScheduleError::DuplicateNode(pair[0].id.clone()));
        }
        let user: Vec<&ComponentTasks> =
            layout.components.iter().filter(|c| c.parallelism > 0 && !is_system_kind(&c.kind)).collect();
        for c in &user {
            if !sorted.iter().any(|n| n.knows(&c.kind)) {
                return Err(ScheduleError::UnknownKind { kind: c.kind.clone(), component: c.id.clone() });
            }
        }
        // A node that knows none of the topology's own kinds would host a worker of ackers only.
        let useful = |n: &LiveNode| user.is_empty() || user.iter().any(|c| n.knows(&c.kind));
        let usable: Vec<&LiveNode> =
            sorted.iter().copied().filter(|n| useful(n) && n.free_slots().next().is_some()).collect();
        if usable.is_empty() && !sorted.iter().any(|n| n.free_slots().next().is_some()) {
            let slots = sorted.iter().map(|n| u64::from(n.slots)).sum();
            return Err(ScheduleError::NoFreeSlot { nodes: sorted.len(), slots });
        }
        for c in &user {
            if !usable.iter().any(|n| n.knows(&c.kind)) {
                return Err(ScheduleError::NoSlotForKind { kind: c.kind.clone(), component: c.id.clone() });
            }
        }
        let kinds: BTreeSet<&str> = user.iter().map(|c| c.kind.as_str()).collect();
        Ok(Cluster { layout, nodes: usable, kinds: kinds.into_iter().collect() })
    }

    fn node_index(&self, id: &str) -> Option<usize> {
        self.nodes.binary_search_by(|n| n.id.as_str().cmp(id)).ok()
    }

    fn free_slot_count(&self) -> u32 {
        self.nodes.iter().map(|n| n.free_slots().count() as u32).sum()
    }

    fn knows(&self, node: usize, task: TaskId) -> bool {
        self.layout.component_of(task).is_some_and(|c| self.nodes[node].knows(&c.kind))
    }

    fn survivors(&self, previous: &Assignment) -> Vec<Survivor> {
        let mut survivors = Vec::new();
        for w in &previous.workers {
            let Some(node) = self.node_index(&w.node).filter(|&n| self.nodes[n].is_free(w.slot)) else {
                continue;
            };
            let tasks = w
                .tasks
                .iter()
                .filter_map(|t| previous.layout.carry(t, self.layout))
                .filter(|&t| self.knows(node, t))
                .collect();
            survivors.push(Survivor { node, slot: w.slot, tasks });
        }
        survivors
    }

    /// The slots to run workers on: the survivors, plus slots for kinds no chosen node knows,
    /// plus slots on the least used nodes up to `target`; then, while there are more than
    /// `target` and the kinds stay covered, the workers with the fewest tasks are let go
    /// (survivors only unless `keep_survivors`).
    fn choose_workers(
        &self,
        survivors: &[Survivor],
        target: u32,
        keep_survivors: bool,
    ) -> Result<Vec<(usize, u32)>, ScheduleError> {
        let mut chosen: BTreeSet<(usize, u32)> = survivors.iter().map(|s| (s.node, s.slot)).collect();
        let kept: BTreeMap<(usize, u32), usize> = survivors.iter().map(|s| ((s.node, s.slot), s.tasks.len())).collect();
        while let Some(kind) = self.most_constrained_uncovered_kind(&chosen) {
            let Some(node) = self.least_used_node(&chosen, |n| n.knows(kind)) else {
                let component = self.layout.components.iter().find(|c| c.kind == kind).expect("a kind of the layout");
                return Err(ScheduleError::NoSlotForKind { kind: kind.into(), component: component.id.clone() });
            };
            chosen.insert((node, self.unchosen_slot(node, &chosen).expect("least_used_node has one")));
        }
        while chosen.len() < target as usize {
            let Some(node) = self.least_used_node(&chosen, |_| true) else { break };
            chosen.insert((node, self.unchosen_slot(node, &chosen).expect("least_used_node has one")));
        }
        while chosen.len() > target as usize {
            let on_node = |n: usize| chosen.iter().filter(|w| w.0 == n).count();
            let dropped = chosen
                .iter()
                .copied()
                .filter(|w| !(keep_survivors && kept.contains_key(w)))
                .filter(|&w| {
                    let mut without = chosen.clone();
                    without.remove(&w);
                    self.most_constrained_uncovered_kind(&without).is_none()
                })
                .min_by_key(|&(n, s)| (kept.get(&(n, s)).copied().unwrap_or(0), std::cmp::Reverse((on_node(n), n, s))));
            let Some(w) = dropped else { break };
            chosen.remove(&w);
        }
        Ok(chosen.into_iter().collect())
    }

    /// A kind no chosen worker's node knows, the one fewest nodes with a free slot know first.
    fn most_constrained_uncovered_kind(&self, chosen: &BTreeSet<(usize, u32)>) -> Option<&'a str> {
        self.kinds.iter().copied().filter(|k| !chosen.iter().any(|&(n, _)| self.nodes[n].knows(k))).min_by_key(|k| {
            let open = (0..self.nodes.len())
                .filter(|&n| self.nodes[n].knows(k) && self.unchosen_slot(n, chosen).is_some())
                .count();
            (open, *k)
        })
    }

    /// Among nodes with a slot not chosen yet that pass `filter`: the one with the fewest chosen
    /// workers, then the most of the topology's kinds, then the most slots left, then by id.
    fn least_used_node(&self, chosen: &BTreeSet<(usize, u32)>, filter: impl Fn(&LiveNode) -> bool) -> Option<usize> {
        (0..self.nodes.len()).filter(|&n| filter(self.nodes[n]) && self.unchosen_slot(n, chosen).is_some()).min_by_key(
            |&n| {
                let used = chosen.iter().filter(|w| w.0 == n).count();
                let kinds = self.kinds.iter().filter(|k| self.nodes[n].knows(k)).count();
                let left = self.nodes[n].free_slots().count() - used;
                (used, std::cmp::Reverse(kinds), std::cmp::Reverse(left), n)
            },
        )
    }

    fn unchosen_slot(&self, node: usize, chosen: &BTreeSet<(usize, u32)>) -> Option<u32> {
        self.nodes[node].free_slots().find(|&s| !chosen.contains(&(node, s)))
    }
}

/// Places every task on the chosen workers, keeping survivors' tasks where the even spread
/// allows (all of them with `keep_survivors`); returns `held[w][c]`, the tasks of component `c`
/// on worker `w`.
fn place_tasks(
    cluster: &Cluster<'_>,
    workers: &[(usize, u32)],
    survivors: &[Survivor],
    keep_survivors: bool,
) -> Vec<Vec<Vec<TaskId>>> {
    let layout = cluster.layout;
    let capable: Vec<Vec<bool>> = workers
        .iter()
        .map(|&(n, _)| layout.components.iter().map(|c| cluster.nodes[n].knows(&c.kind)).collect())
        .collect();
    let mut held = vec![vec![Vec::new(); layout.components.len()]; workers.len()];
    for s in survivors {
        let Ok(w) = workers.binary_search(&(s.node, s.slot)) else { continue };
        for &t in &s.tasks {
            held[w][layout.index_of(t).expect("survivor tasks are in the layout")].push(t);
        }
    }
    for tasks in held.iter_mut().flatten() {
        tasks.sort_unstable();
    }
    let counts = spread(layout, &capable, &held, keep_survivors);
    hand_out(layout, &capable, held, &counts)
}

/// How many tasks of each component each worker should hold, `counts[w][c]`: a min-cost flow
/// from components to workers whose costs rank, in order,
/// - every capable worker holds at least `floor` of each component's tasks and at most `ceil`
///   (the arcs' capacity; each unit below `floor` costs `forced`, more than all else can save);
/// - totals are even (a worker's `n`-th task costs `n` × `balance`: the sum of their squares
///   is least);
/// - each task that stays on the worker that `held` it saves 1.
///
/// The optimum moves the fewest tasks any evenly spread assignment to these workers could.
/// With `keep_survivors`, what they hold is fixed and only the other tasks flow.
fn spread(
    layout: &TaskLayout,
    capable: &[Vec<bool>],
    held: &[Vec<Vec<TaskId>>],
    keep_survivors: bool,
) -> Vec<Vec<u32>> {
    let (nw, nc) = (capable.len(), layout.components.len());
    let balance = i128::from(layout.task_count()) + 1;
    let forced = -2 * balance * balance;
    let (source, sink) = (0, 1 + nc + nw);
    let mut flow = MinCostFlow::new(sink + 1);
    // Per (worker, component): the arcs whose flow is how many tasks it gets.
    let mut arcs: Vec<Vec<usize>> = vec![Vec::new(); nw * nc];
    let (mut fixed, mut sure, mut most) = (vec![0u32; nw], vec![0u32; nw], vec![0u32; nw]);
    // Without survivors to keep, every `floor` unit is in every optimum: they are sent first.
    let mut floors = Vec::new();
    for (c, component) in layout.components.iter().enumerate() {
        let n = capable.iter().filter(|row| row[c]).count() as u32;
        let (floor, ceil) = (component.parallelism / n.max(1), component.parallelism.div_ceil(n.max(1)));
        let mut to_place = component.parallelism;
        for w in (0..nw).filter(|&w| capable[w][c]) {
            let had = held[w][c].len() as u32;
            let (from, to, arcs) = (1 + c, 1 + nc + w, &mut arcs[w * nc + c]);
            let mut add = |cap: u32, cost: i128| {
                let e = (cap > 0).then(|| flow.add(from, to, cap, cost));
                arcs.extend(e);
                e.map(|e| (e, cap))
            };
            if keep_survivors {
                to_place -= had;
                fixed[w] += had;
                let (need, room) = (floor.saturating_sub(had), ceil.saturating_sub(had.max(floor)));
                sure[w] += need;
                most[w] += need + room;
                add(need, forced);
                add(room, 0);
            } else {
                let (kept_below, kept_above) = (floor.min(had), had.min(ceil).saturating_sub(floor));
                sure[w] += floor;
                most[w] += ceil;
                floors.extend(add(kept_below, forced - 1));
                floors.extend(add(floor - kept_below, forced));
                add(kept_above, -1);
                add(ceil - floor - kept_above, 0);
            }
        }
        let e = flow.add(source, 1 + c, to_place, 0);
        if !keep_survivors {
            floors.push((e, floor * n));
        }
    }
    for w in 0..nw {
        // The first `sure` tasks come whatever the spread: only the ones after them cost.
        let e = flow.add(1 + nc + w, sink, sure[w], 0);
        if !keep_survivors {
            floors.push((e, sure[w]));
        }
        for n in fixed[w] + sure[w] + 1..=fixed[w] + most[w] {
            flow.add(1 + nc + w, sink, 1, i128::from(n) * balance);
        }
    }
    for (e, amount) in floors {
        flow.send(e, amount);
    }
    flow.run(source, sink);
    (0..nw)
        .map(|w| {
            (0..nc)
                .map(|c| {
                    fixed_count(held, w, c, keep_survivors)
                        + arcs[w * nc + c].iter().map(|&e| flow.used(e)).sum::<u32>()
                })
                .collect()
        })
        .collect()
}

/// What worker `w` keeps of component `c` whatever the flow says: all it holds when survivors
/// keep their tasks, else nothing.
fn fixed_count(held: &[Vec<Vec<TaskId>>], w: usize, c: usize, keep_survivors: bool) -> u32 {
    if keep_survivors { held[w][c].len() as u32 } else { 0 }
}

/// Gives each worker `counts[w][c]` tasks of each component: it keeps the lowest-numbered of
/// those it holds, and the others and the tasks nobody holds go, ascending, to the workers
/// short of their count.
fn hand_out(
    layout: &TaskLayout,
    capable: &[Vec<bool>],
    mut held: Vec<Vec<Vec<TaskId>>>,
    counts: &[Vec<u32>],
) -> Vec<Vec<Vec<TaskId>>> {
    let mut unheld = vec![true; layout.task_count() as usize];
    for &t in held.iter().flatten().flatten() {
        unheld[t as usize] = false;
    }
    for (c, component) in layout.components.iter().enumerate() {
        let mut pool: Vec<TaskId> = component.tasks().filter(|&t| unheld[t as usize]).collect();
        for (h, count) in held.iter_mut().zip(counts) {
            let keep = (count[c] as usize).min(h[c].len());
            pool.extend(h[c].drain(keep..));
        }
        pool.sort_unstable();
        let mut pool = pool.into_iter();
        for (h, count) in held.iter_mut().zip(counts) {
            let short = (count[c] as usize).saturating_sub(h[c].len());
            h[c].extend(pool.by_ref().take(short));
        }
        debug_assert!(pool.len() == 0, "the counts add up to every task");
        // Should they ever fall short, no task is left out: each goes where it can run.
        for task in pool {
            let w = (0..held.len()).filter(|&w| capable[w][c]).min_by_key(|&w| (held[w][c].len(), w));
            held[w.expect("every component has a capable worker")][c].push(task);
        }
    }
    held
}

/// Min-cost max-flow, primal-dual: Dijkstra finds the cheapest cost to every node (over costs
/// made non-negative by node potentials, which Bellman-Ford starts: the flow it starts from
/// has least cost, so the residual network has no negative cycle), then a blocking flow
/// (Dinic) fills every cheapest path at once.
struct MinCostFlow {
    /// Per arc: head, capacity left, cost. Arc `e ^ 1` is the reverse of arc `e`.
    head: Vec<usize>,
    left: Vec<u32>,
    cost: Vec<i128>,
    out: Vec<Vec<usize>>,
    potential: Vec<i128>,
}

impl MinCostFlow {
    fn new(nodes: usize) -> Self {
        MinCostFlow {
            head: Vec::new(),
            left: Vec::new(),
            cost: Vec::new(),
            out: vec![Vec::new(); nodes],
            potential: vec![0; nodes],
        }
    }

    fn add(&mut self, from: usize, to: usize, capacity: u32, cost: i128) -> usize {
        let e = self.head.len();
        self.head.extend([to, from]);
        self.left.extend([capacity, 0]);
        self.cost.extend([cost, -cost]);
        self.out[from].push(e);
        self.out[to].push(e + 1);
        e
    }

    /// How much flows through arc `e`.
    fn used(&self, e: usize) -> u32 {
        self.left[e ^ 1]
    }

    /// Sends `amount` through arc `e` alone: the caller keeps the flow balanced at each node and
    /// of least cost for its value.
    fn send(&mut self, e: usize, amount: u32) {
        self.left[e] -= amount;
        self.left[e ^ 1] += amount;
    }

    /// The cost of arc `e` less the potential difference it spans: never negative when the arc
    /// has room, and zero on every cheapest path.
    fn reduced(&self, e: usize) -> i128 {
        self.cost[e] + self.potential[self.head[e ^ 1]] - self.potential[self.head[e]]
    }

    fn run(&mut self, source: usize, sink: usize) {
        self.start_potentials(source);
        while self.cheapest_costs(source, sink) {
            while let Some(level) = self.levels(source, sink) {
                let mut next = vec![0; self.out.len()];
                while self.push(source, sink, u32::MAX, &level, &mut next) > 0 {}
            }
        }
    }

    /// Bellman-Ford from `source`; nodes it cannot reach now never become reachable.
    fn start_potentials(&mut self, source: usize) {
        let n = self.out.len();
        let mut reached = vec![false; n];
        reached[source] = true;
        for _ in 0..n {
            let mut changed = false;
            for e in 0..self.head.len() {
                let (from, to) = (self.head[e ^ 1], self.head[e]);
                if self.left[e] > 0 && reached[from] {
                    let d = self.potential[from] + self.cost[e];
                    if !reached[to] || d < self.potential[to] {
                        (self.potential[to], reached[to], changed) = (d, true, true);
                    }
                }
            }
            if !changed {
                break;
            }
        }
    }

    /// Dijkstra over reduced costs; moves the potentials by the distances found. Whether the
    /// sink is reachable.
    fn cheapest_costs(&mut self, source: usize, sink: usize) -> bool {
        let n = self.out.len();
        let mut dist: Vec<Option<i128>> = vec![None; n];
        let mut done = vec![false; n];
        dist[source] = Some(0);
        while let Some(u) = (0..n).filter(|&u| !done[u] && dist[u].is_some()).min_by_key(|&u| dist[u]) {
            done[u] = true;
            let du = dist[u].expect("chosen for its distance");
            for &e in &self.out[u] {
                let v = self.head[e];
                let d = du + self.reduced(e);
                if self.left[e] > 0 && !done[v] && dist[v].is_none_or(|old| d < old) {
                    dist[v] = Some(d);
                }
            }
        }
        for (p, d) in self.potential.iter_mut().zip(&dist) {
            *p += d.unwrap_or(0);
        }
        dist[sink].is_some()
    }

    /// Breadth-first levels over the arcs with room and zero reduced cost, if the sink is
    /// among them.
    fn levels(&self, source: usize, sink: usize) -> Option<Vec<u32>> {
        let mut level = vec![u32::MAX; self.out.len()];
        level[source] = 0;
        let mut queue = std::collections::VecDeque::from([source]);
        while let Some(u) = queue.pop_front() {
            for &e in &self.out[u] {
                let v = self.head[e];
                if self.left[e] > 0 && self.reduced(e) == 0 && level[v] == u32::MAX {
                    level[v] = level[u] + 1;
                    queue.push_back(v);
                }
            }
        }
        (level[sink] != u32::MAX).then_some(level)
    }

    /// Sends up to `limit` from `u` to the sink along the levels; how much it sent.
    fn push(&mut self, u: usize, sink: usize, limit: u32, level: &[u32], next: &mut [usize]) -> u32 {
        if u == sink {
            return limit;
        }
        while next[u] < self.out[u].len() {
            let e = self.out[u][next[u]];
            let v = self.head[e];
            if self.left[e] > 0 && self.reduced(e) == 0 && level[v] == level[u] + 1 {
                let sent = self.push(v, sink, limit.min(self.left[e]), level, next);
                if sent > 0 {
                    self.send(e, sent);
                    return sent;
                }
            }
            next[u] += 1;
        }
        0
    }
}

#[cfg(test)]
mod tests;
