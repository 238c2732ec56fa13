//! The component API: spouts, bolts, and the factories that make one instance per task.
//!
//! A component is declared once in a topology and runs as `parallelism` tasks. Each task gets
//! its own instance, made by the component's factory with the task's [`TaskContext`]. The
//! factory also declares the component's output streams, so a topology can be checked before
//! anything runs.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use smol_str::SmolStr;

use crate::collector::{BoltOutput, SpoutOutput};
use crate::config::TopologyConfig;
use crate::coordination::{Coordination, CoordinationError, DistributedLock, LeaderElection};
use crate::tuple::{DEFAULT_STREAM, TaskId, Tuple};
use crate::value::Fields;

/// The error type components return: anything that can be shown to a user.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Identifies a spout tuple to its spout in `ack` and `fail`.
pub type MessageId = u64;

/// A source of tuples.
///
/// The executor calls [`next_tuple`](Spout::next_tuple) in a loop while the spout is active and
/// has room under `max_spout_pending`. A tuple emitted with a message id is tracked: when its
/// whole tree is processed the spout's [`ack`](Spout::ack) is called with the id, and when any
/// part of it fails or it times out, [`fail`](Spout::fail) is, and the spout should emit it
/// again (that is what makes processing at-least-once).
pub trait Spout: Send {
    /// Emits zero or more tuples. Should not block for long: return without emitting when
    /// nothing is ready.
    fn next_tuple(&mut self, out: &mut SpoutOutput<'_>);

    /// The tree of the tuple emitted with `id` was fully processed.
    fn ack(&mut self, id: MessageId) {
        let _ = id;
    }

    /// The tree of the tuple emitted with `id` failed or timed out; emit it again.
    fn fail(&mut self, id: MessageId) {
        let _ = id;
    }

    /// Called before the first `next_tuple`, and when a deactivated topology is activated.
    fn activate(&mut self) {}

    /// Called when the topology stops emitting, before `close`.
    fn deactivate(&mut self) {}

    /// Whether the spout has nothing more to emit unless a tuple fails. A topology run in
    /// local mode stops when every spout is done and no tuple tree is in flight.
    fn is_done(&self) -> bool {
        false
    }

    /// Called once when the task stops.
    fn close(&mut self) {}

    /// Changes arg `arg` of the running task to `value` (from `squall config NAME
    /// <component>.<arg>=<value>`): called, on the task's own thread, for each arg its factory
    /// lists in [`SpoutFactory::reloadable`] whenever its live value changes. An error is
    /// reported in the component's errors and the task runs on as before.
    fn reconfigure(&mut self, arg: &str, value: &str) -> Result<(), BoxError> {
        let _ = value;
        Err(format!("`{arg}` cannot be changed while running").into())
    }
}

/// A processing step: receives tuples, emits tuples.
///
/// The input is acked when [`execute`](Bolt::execute) returns `Ok`, and failed (so the spout
/// replays it) when it returns `Err` or panics, unless the bolt took charge of it with
/// [`BoltOutput::defer`].
pub trait Bolt: Send {
    /// Processes one input tuple. Tuples emitted with [`BoltOutput::emit`] are anchored to it.
    fn execute(&mut self, input: &Tuple, out: &mut BoltOutput<'_>) -> Result<(), BoxError>;

    /// Called whenever the executor sends its buffered output on: when its input queue is
    /// empty, at least every millisecond under load, and before `cleanup`. A sink writes what
    /// it has buffered here and acks the inputs it deferred.
    fn flush(&mut self, out: &mut BoltOutput<'_>) -> Result<(), BoxError> {
        let _ = out;
        Ok(())
    }

    /// Called once when the task stops, after the last `flush`.
    fn cleanup(&mut self) {}

    /// Changes arg `arg` of the running task to `value`; see [`Spout::reconfigure`].
    fn reconfigure(&mut self, arg: &str, value: &str) -> Result<(), BoxError> {
        let _ = value;
        Err(format!("`{arg}` cannot be changed while running").into())
    }
}

/// A stream a component emits: its name and fields.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamDecl {
    /// The stream's name ([`DEFAULT_STREAM`] unless a component emits several).
    pub name: SmolStr,
    /// The stream's fields.
    pub fields: Fields,
    /// Whether tuples are sent on it with `emit_direct` only.
    pub direct: bool,
}

impl StreamDecl {
    /// The default stream with these fields.
    pub fn default_stream(fields: impl Into<Fields>) -> Self {
        StreamDecl::named(DEFAULT_STREAM, fields)
    }

    /// A named stream with these fields.
    pub fn named(name: &str, fields: impl Into<Fields>) -> Self {
        StreamDecl { name: name.into(), fields: fields.into(), direct: false }
    }

    /// Marks the stream as a direct stream.
    pub fn direct(mut self) -> Self {
        self.direct = true;
        self
    }
}

/// A stream a bolt subscribes to, as its factory sees it when declaring its outputs.
#[derive(Clone, Debug)]
pub struct InputStream {
    /// The upstream component.
    pub component: SmolStr,
    /// The stream's name.
    pub stream: SmolStr,
    /// The stream's fields.
    pub fields: Fields,
}

impl InputStream {
    /// An error unless the stream has a field called `name`; `what` says what needs it.
    pub fn require(&self, name: &str, what: &str) -> Result<(), BoxError> {
        if self.fields.contains(name) {
            Ok(())
        } else {
            Err(format!(
                "{what} `{name}` is not a field of input stream {}:{} (fields {})",
                self.component, self.stream, self.fields
            )
            .into())
        }
    }
}

/// Makes the spout instance of each task and declares the spout's streams.
pub trait SpoutFactory: Send + Sync + 'static {
    /// The streams the spout emits.
    fn declare(&self) -> Vec<StreamDecl>;

    /// The instance for one task.
    fn create(&self, ctx: &TaskContext) -> Result<Box<dyn Spout>, BoxError>;

    /// The args `squall config` may change while the topology runs; each task gets the new
    /// value through [`Spout::reconfigure`]. None by default.
    fn reloadable(&self) -> &[&str] {
        &[]
    }
}

/// Makes the bolt instance of each task and declares the bolt's streams.
pub trait BoltFactory: Send + Sync + 'static {
    /// The streams the bolt emits, given the streams it subscribes to. An error here (a field
    /// the bolt needs is missing, say) rejects the topology before it runs.
    fn declare(&self, inputs: &[InputStream]) -> Result<Vec<StreamDecl>, BoxError>;

    /// The instance for one task.
    fn create(&self, ctx: &TaskContext) -> Result<Box<dyn Bolt>, BoxError>;

    /// The args `squall config` may change while the topology runs; each task gets the new
    /// value through [`Bolt::reconfigure`]. None by default.
    fn reloadable(&self) -> &[&str] {
        &[]
    }
}

/// What a task knows about its place in the topology.
#[derive(Clone, Debug)]
pub struct TaskContext {
    /// The topology's name.
    pub topology: Arc<str>,
    /// The component's id.
    pub component: SmolStr,
    /// This task's id.
    pub task: TaskId,
    /// This task's position among the component's tasks (0-based).
    pub task_index: u32,
    /// How many tasks the component has.
    pub parallelism: u32,
    /// The topology's configuration.
    pub config: Arc<TopologyConfig>,
    pub(crate) component_tasks: Arc<Vec<(SmolStr, Vec<TaskId>)>>,
    pub(crate) coordination: Option<Coordination>,
    /// The task's place in its component's leader election, once it asked for one: shared by
    /// the task's clones of the context and kept by the run until the task ends.
    pub(crate) election: Arc<Mutex<Option<LeaderElection>>>,
}

impl TaskContext {
    /// The context of task `task_index` of `parallelism` tasks of a component, numbered as a
    /// topology of that component alone would number them: for testing components outside a
    /// running topology.
    pub fn standalone(topology: &str, component: &str, task_index: u32, parallelism: u32) -> Self {
        TaskContext {
            topology: topology.into(),
            component: component.into(),
            task: task_index,
            task_index,
            parallelism,
            config: Arc::new(TopologyConfig::default()),
            component_tasks: Arc::new(vec![(component.into(), (0..parallelism).collect())]),
            coordination: None,
            election: Arc::default(),
        }
    }

    /// The same context with the znode store reached through `coordination`: for testing
    /// components that lock, elect or keep state in the store.
    pub fn with_coordination(mut self, coordination: Coordination) -> Self {
        self.coordination = Some(coordination);
        self
    }

    /// The run's handle on the znode store ([`CoordinationError::NoStore`] when the run has
    /// none, as in a test's [`standalone`](Self::standalone) context).
    pub fn coordination(&self) -> Result<&Coordination, CoordinationError> {
        self.coordination.as_ref().ok_or(CoordinationError::NoStore)
    }

    /// Takes the topology's distributed lock `name`, waiting while another task holds it. The
    /// lock carries a fencing token; see [`DistributedLock`].
    pub fn lock(&self, name: &str) -> Result<DistributedLock, CoordinationError> {
        self.coordination()?.lock(name)
    }

    /// This task's place in the leader election among its component's tasks, entered on the
    /// first call and kept until the task ends.
    pub fn leader_election(&self) -> Result<LeaderElection, CoordinationError> {
        let mut election = self.election.lock().expect("joining never panics while held");
        if let Some(election) = election.as_ref() {
            return Ok(election.clone());
        }
        let joined = self.coordination()?.elect(&self.component, self.task)?;
        *election = Some(joined.clone());
        Ok(joined)
    }

    /// Whether this task leads its component (exactly one live task does; false without a
    /// store). Enters the election on the first call; see [`leader_election`](Self::leader_election)
    /// for the change callback.
    pub fn is_leader(&self) -> bool {
        self.leader_election().is_ok_and(|election| election.is_leader())
    }

    /// The task ids of a component, for `emit_direct`.
    pub fn tasks_of(&self, component: &str) -> &[TaskId] {
        self.component_tasks.iter().find(|(c, _)| c == component).map(|(_, t)| t.as_slice()).unwrap_or(&[])
    }

    /// The tuple-tree timeout.
    pub fn message_timeout(&self) -> Duration {
        self.config.message_timeout
    }
}

struct SpoutFn<F> {
    outputs: Vec<StreamDecl>,
    make: F,
}

impl<S, F> SpoutFactory for SpoutFn<F>
where
    S: Spout + 'static,
    F: Fn(&TaskContext) -> S + Send + Sync + 'static,
{
    fn declare(&self) -> Vec<StreamDecl> {
        self.outputs.clone()
    }

    fn create(&self, ctx: &TaskContext) -> Result<Box<dyn Spout>, BoxError> {
        Ok(Box::new((self.make)(ctx)))
    }
}

struct BoltFn<F> {
    outputs: Vec<StreamDecl>,
    make: F,
}

impl<B, F> BoltFactory for BoltFn<F>
where
    B: Bolt + 'static,
    F: Fn(&TaskContext) -> B + Send + Sync + 'static,
{
    fn declare(&self, _inputs: &[InputStream]) -> Result<Vec<StreamDecl>, BoxError> {
        Ok(self.outputs.clone())
    }

    fn create(&self, ctx: &TaskContext) -> Result<Box<dyn Bolt>, BoxError> {
        Ok(Box::new((self.make)(ctx)))
    }
}

/// A spout factory from a closure and the fields of the default stream it emits.
///
/// ```
/// use squall_runtime::{spout_fn, Spout, SpoutOutput, values};
/// struct Numbers(i64);
/// impl Spout for Numbers {
///     fn next_tuple(&mut self, out: &mut SpoutOutput<'_>) {
///         self.0 += 1;
///         out.emit_with_id(self.0 as u64, values![self.0]);
///     }
/// }
/// let factory = spout_fn(["n"], |_ctx| Numbers(0));
/// ```
pub fn spout_fn<S, F>(fields: impl Into<Fields>, make: F) -> Arc<dyn SpoutFactory>
where
    S: Spout + 'static,
    F: Fn(&TaskContext) -> S + Send + Sync + 'static,
{
    spout_fn_streams(vec![StreamDecl::default_stream(fields)], make)
}

/// A spout factory from a closure and the streams it emits.
pub fn spout_fn_streams<S, F>(outputs: Vec<StreamDecl>, make: F) -> Arc<dyn SpoutFactory>
where
    S: Spout + 'static,
    F: Fn(&TaskContext) -> S + Send + Sync + 'static,
{
    Arc::new(SpoutFn { outputs, make })
}

/// A bolt factory from a closure and the fields of the default stream it emits (empty for a
/// bolt that emits nothing).
pub fn bolt_fn<B, F>(fields: impl Into<Fields>, make: F) -> Arc<dyn BoltFactory>
where
    B: Bolt + 'static,
    F: Fn(&TaskContext) -> B + Send + Sync + 'static,
{
    bolt_fn_streams(vec![StreamDecl::default_stream(fields)], make)
}

/// A bolt factory from a closure and the streams it emits.
pub fn bolt_fn_streams<B, F>(outputs: Vec<StreamDecl>, make: F) -> Arc<dyn BoltFactory>
where
    B: Bolt + 'static,
    F: Fn(&TaskContext) -> B + Send + Sync + 'static,
{
    Arc::new(BoltFn { outputs, make })
}
