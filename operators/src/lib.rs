//! Squall's built-in spouts and bolts, by kind name.
//!
//! Each kind is one module: a config struct that reads the component's `args:` from a topology
//! file (with `deny_unknown_fields`, so a misspelt argument is an error) and is the kind's
//! factory, the spout or bolt it makes for each task, and its tests.
//!
//! | kind | role | module | config |
//! |---|---|---|---|
//! | `file` | spout | [`file`](mod@file) | [`FileSpoutConfig`]: one tuple per line, replayed on failure |
//! | `generator` | spout | [`generator`] | [`GeneratorConfig`]: synthetic sentences, for benchmarks |
//! | `kafka` | spout | [`kafka::spout`] | [`KafkaSpoutConfig`]: Kafka messages, offsets kept in the znode store |
//! | `split` | bolt | [`split`] | [`SplitBoltConfig`]: a string field into one tuple per word |
//! | `count` | bolt | [`count`] | [`CountBoltConfig`]: running count per key |
//! | `filter` | bolt | [`filter`] | [`FilterBoltConfig`]: passes tuples whose field matches a predicate |
//! | `map` | bolt | [`map`] | [`MapBoltConfig`]: selects, renames, sets and case-converts fields |
//! | `file_sink` | bolt | [`file_sink`] | [`FileSinkConfig`]: appends tuples as JSON lines, acks after writing |
//! | `kafka_sink` | bolt | [`kafka::sink`] | [`KafkaSinkConfig`]: produces to a topic, acks once the broker has it |
//! | `log` | bolt | [`log`](mod@log) | [`LogBoltConfig`]: prints tuples to stdout |
//!
//! [`registry`] returns a [`Registry`] that knows all of them; a crate with kinds of its own adds
//! them to it (or calls [`register_builtins`] on its own registry) and hands it to
//! `squall::main`. `docs/topology.md` documents every argument for users of topology files.
//!
//! ```
//! let registry = squall_operators::registry();
//! let topology = registry.load_str(
//!     r#"
//! name: shout
//! spouts:
//!   - { id: lines, kind: generator, args: { limit: 10, words: 3 } }
//! bolts:
//!   - { id: upper, kind: map, args: { uppercase: [line] }, inputs: [ { from: lines } ] }
//! "#,
//!     "shout.yaml",
//! )?;
//! let report = squall_runtime::run_local(&topology, Default::default())?;
//! assert_eq!(report.component("upper").unwrap().stats.executed, 10);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod count;
pub mod file;
pub mod file_sink;
pub mod filter;
pub mod generator;
pub mod kafka;
pub mod log;
pub mod map;
pub mod split;

mod args;
mod json;
#[cfg(test)]
mod testing;

pub use count::CountBoltConfig;
pub use file::FileSpoutConfig;
pub use file_sink::FileSinkConfig;
pub use filter::FilterBoltConfig;
pub use generator::{GeneratorConfig, SentenceGenerator};
pub use kafka::{KafkaSinkConfig, KafkaSpoutConfig};
pub use log::LogBoltConfig;
pub use map::MapBoltConfig;
pub use split::SplitBoltConfig;

use squall_runtime::Registry;

/// A registry with every built-in kind.
pub fn registry() -> Registry {
    let mut registry = Registry::new();
    register_builtins(&mut registry);
    registry
}

/// Adds every built-in kind to `registry`.
pub fn register_builtins(registry: &mut Registry) {
    registry
        .spout::<FileSpoutConfig>("file")
        .spout::<GeneratorConfig>("generator")
        .spout::<KafkaSpoutConfig>("kafka")
        .bolt::<SplitBoltConfig>("split")
        .bolt::<CountBoltConfig>("count")
        .bolt::<FilterBoltConfig>("filter")
        .bolt::<MapBoltConfig>("map")
        .bolt::<FileSinkConfig>("file_sink")
        .bolt::<KafkaSinkConfig>("kafka_sink")
        .bolt::<LogBoltConfig>("log");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_knows_every_builtin_kind() {
        let registry = registry();
        assert_eq!(registry.spout_kinds().collect::<Vec<_>>(), ["file", "generator", "kafka"]);
        assert_eq!(
            registry.bolt_kinds().collect::<Vec<_>>(),
            ["count", "file_sink", "filter", "kafka_sink", "log", "map", "split"]
        );
    }
}
