//! Squall's runtime: the topology API and the engine that runs it.
//!
//! A topology is a DAG of components. **Spouts** ([`Spout`]) produce tuples; **bolts**
//! ([`Bolt`]) consume and emit them. Each component runs as `parallelism` tasks, each task on
//! its own thread, and subscribes to upstream streams with a [`Grouping`].
//!
//! How the modules fit:
//! - [`value`] and [`tuple`]: what flows — [`Value`]s named by [`Fields`], in [`Tuple`]s that
//!   carry their tuple-tree anchors.
//! - [`component`]: the [`Spout`] and [`Bolt`] traits and the factories that make one instance
//!   per task; [`collector`]: how they emit ([`SpoutOutput`], [`BoltOutput`]).
//! - [`topology`]: [`TopologyBuilder`] and the checks every [`Topology`] passes; [`spec`] and
//!   [`registry`]: the same topology from a YAML file, with kinds resolved by name.
//! - [`grouping`], `executor`, `acker`: routing, the task loops, and Storm's XOR acker that makes
//!   processing at-least-once.
//! - [`local`]: the whole topology in one process ([`run_local`]); [`metrics`]: per-component
//!   counts and latency histograms.
//! - [`coordination`]: the znode store from a task — a fenced lock, leader election among a
//!   component's tasks, versioned znodes (the Kafka spout's offsets).
//! - [`scheduler`]: the cluster's placement of tasks on worker slots ([`scheduler::schedule`]).
//! - `transport`: tuples, acker messages and ack events between workers over TCP (batched
//!   frames, one connection from each worker to each peer, reconnect, re-routing on a new
//!   assignment).
//! - [`worker`]: cluster mode's worker ([`WorkerRun`]): the tasks an assignment gives one worker
//!   slot, run as local mode runs them, with every other task reached through the transport.
//!
//! ```
//! use squall_runtime::prelude::*;
//!
//! struct Count(u64);
//! impl Spout for Count {
//!     fn next_tuple(&mut self, out: &mut SpoutOutput<'_>) {
//!         if self.0 < 100 {
//!             self.0 += 1;
//!             out.emit_with_id(self.0, values![self.0]);
//!         }
//!     }
//!     fn is_done(&self) -> bool { self.0 == 100 }
//! }
//! struct Double;
//! impl Bolt for Double {
//!     fn execute(&mut self, input: &Tuple, out: &mut BoltOutput<'_>) -> Result<(), BoxError> {
//!         let n = input.get("n").and_then(Value::as_int).ok_or("n is not a number")?;
//!         out.emit(values![n * 2]);
//!         Ok(())
//!     }
//! }
//!
//! let mut builder = TopologyBuilder::new("doubling");
//! builder.spout("numbers", 1, spout_fn(["n"], |_| Count(0)));
//! builder.bolt("double", 2, bolt_fn(["n2"], |_| Double)).shuffle("numbers");
//! let report = run_local(&builder.build()?, RunOptions::default())?;
//! assert_eq!(report.component("numbers").unwrap().stats.acked, 100);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod cluster;
pub mod collector;
pub mod component;
pub mod config;
pub mod coordination;
pub mod grouping;
pub mod local;
pub mod metrics;
pub mod registry;
pub mod scheduler;
pub mod spec;
pub mod topology;
pub mod tuple;
pub mod value;
pub mod worker;

mod acker;
mod executor;
mod transport;

pub use collector::{BoltOutput, Deferred, SpoutOutput};
pub use component::{
    Bolt, BoltFactory, BoxError, InputStream, MessageId, Spout, SpoutFactory, StreamDecl, TaskContext, bolt_fn,
    bolt_fn_streams, spout_fn, spout_fn_streams,
};
pub use config::TopologyConfig;
pub use coordination::{Coordination, CoordinationError, DistributedLock, LeaderElection, PendingWrite};
pub use grouping::Grouping;
pub use local::{LocalRun, RunOptions, RunReport, StopReason, Stopper, run_local};
pub use metrics::{ComponentStats, ComponentSummary, SummaryTable, TopologyMetrics};
pub use registry::Registry;
pub use spec::TopologySpec;
pub use topology::{Topology, TopologyBuilder, TopologyError};
pub use tuple::{DEFAULT_STREAM, StreamSource, TaskId, Tuple};
pub use value::{Fields, Value, Values};
pub use worker::{WorkerOptions, WorkerRun};

/// The names a topology author needs, in one import.
pub mod prelude {
    pub use crate::{
        Bolt, BoltFactory, BoltOutput, BoxError, DEFAULT_STREAM, Deferred, Fields, Grouping, InputStream, MessageId,
        Registry, RunOptions, Spout, SpoutFactory, SpoutOutput, StreamDecl, TaskContext, Topology, TopologyBuilder,
        TopologyConfig, Tuple, Value, Values, bolt_fn, run_local, spout_fn, values,
    };
}
