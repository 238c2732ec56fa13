//! Squall: a Storm-like stream-processing runtime with its own ZooKeeper-compatible coordinator.
//!
//! This crate is the facade users depend on. It re-exports the workspace's crates:
//! - [`runtime`] (`squall-runtime`): the topology API — spouts, bolts, groupings, acking — and
//!   the engine that runs topologies;
//! - [`operators`] (`squall-operators`): the built-in spouts and bolts, by kind name;
//! - [`coordinator`] (`squall-coordinator`): the znode store.
//!
//! It also holds the `squall` command line ([`main`]) and the benchmarks behind
//! `squall bench` ([`bench`]). A crate with its own component kinds builds a [`Registry`], adds
//! its kinds, and calls [`main`] from its own `main`: its binary then is a complete `squall`
//! that knows those kinds.
//!
//! ```no_run
//! fn main() -> std::process::ExitCode {
//!     let registry = squall::operators::registry();
//!     // registry.bolt::<MyBoltConfig>("my-bolt");
//!     squall::main(registry)
//! }
//! ```

pub use squall_coordinator as coordinator;
pub use squall_operators as operators;
pub use squall_runtime as runtime;

pub use squall_runtime::{
    Bolt, BoltFactory, BoltOutput, BoxError, Fields, Grouping, Registry, RunOptions, RunReport, Spout, SpoutFactory,
    SpoutOutput, StreamDecl, TaskContext, Topology, TopologyBuilder, TopologyConfig, Tuple, Value, Values, run_local,
    values,
};

pub mod bench;
mod cli;

/// The names a topology author needs, in one import.
pub mod prelude {
    pub use squall_runtime::prelude::*;
}

/// Runs the `squall` command line with the component kinds of `registry`, and returns the
/// process's exit code.
pub fn main(mut registry: Registry) -> std::process::ExitCode {
    // Every node can run `squall bench failover`'s topology.
    bench::failover::register_kinds(&mut registry);
    cli::main(registry)
}
