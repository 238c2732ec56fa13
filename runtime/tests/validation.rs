//! A topology is checked before anything runs: `TopologyBuilder::build` rejects what cannot
//! work, naming the component at fault and what is wrong; a factory that cannot make a task
//! stops `LocalRun::start` with nothing left running.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use common::*;
use squall_runtime::prelude::*;
use squall_runtime::{LocalRun, StreamDecl, TopologyError, spout_fn_streams};

/// Never done: a spout that a started run would keep running.
struct Idle {
    dropped: Arc<AtomicU64>,
}

impl Spout for Idle {
    fn next_tuple(&mut self, _: &mut SpoutOutput<'_>) {}
}

impl Drop for Idle {
    fn drop(&mut self) {
        self.dropped.fetch_add(1, Ordering::SeqCst);
    }
}

fn idle_spout() -> Arc<dyn SpoutFactory> {
    spout_fn(["word", "n"], |_| Idle { dropped: Arc::default() })
}

fn sink() -> Arc<dyn BoltFactory> {
    bolt_fn(NO_FIELDS, |_| execute_fn(|_, _| Ok(())))
}

fn relay() -> Arc<dyn BoltFactory> {
    bolt_fn(["word"], |_| execute_fn(|_, _| Ok(())))
}

/// A builder with spout `src` emitting `[word, n]`.
fn with_source() -> TopologyBuilder {
    let mut builder = TopologyBuilder::new("checked");
    builder.spout("src", 1, idle_spout());
    builder
}

/// Builds, expecting a rejection about `component` whose message contains each of `words`.
fn rejected(builder: TopologyBuilder, component: Option<&str>, words: &[&str]) -> TopologyError {
    let err = match builder.build() {
        Ok(topology) => panic!("built a topology that should be rejected: {topology:?}"),
        Err(err) => err,
    };
    assert_eq!(err.component.as_deref(), component, "{err}");
    for word in words {
        assert!(err.message.contains(word), "the message does not say `{word}`: {err}");
    }
    let shown = err.to_string();
    assert!(shown.contains(&err.message) && shown.contains("checked"), "{shown}");
    if let Some(component) = component {
        assert!(shown.contains(&format!("'{component}'")), "{shown}");
    }
    err
}

#[test]
fn a_valid_topology_builds() {
    let mut builder = with_source();
    builder.bolt("count", 2, sink()).fields("src", &["word"]);
    let topology = builder.build().unwrap();
    assert_eq!(topology.components.len(), 2);
}

#[test]
fn a_cycle_is_rejected() {
    let mut builder = with_source();
    builder.bolt("a", 1, relay()).shuffle("src").shuffle("c");
    builder.bolt("b", 1, relay()).shuffle("a");
    builder.bolt("c", 1, relay()).shuffle("b");
    let err = rejected(builder, Some("a"), &["cycle"]);
    for member in ["a", "b", "c"] {
        assert!(err.message.contains(&format!("{member} ->")), "cycle member {member} not named: {err}");
    }
    assert!(!err.message.contains("src"), "src is not in the cycle: {err}");
}

#[test]
fn a_bolt_reading_itself_is_a_cycle() {
    let mut builder = with_source();
    builder.bolt("loop", 1, relay()).shuffle("src").shuffle("loop");
    rejected(builder, Some("loop"), &["cycle", "loop -> loop"]);
}

#[test]
fn an_input_from_a_missing_component_is_rejected() {
    let mut builder = with_source();
    builder.bolt("count", 1, sink()).shuffle("sourec");
    rejected(builder, Some("count"), &["'sourec'", "not a component"]);
}

#[test]
fn a_fields_grouping_on_an_undeclared_field_is_rejected() {
    let mut builder = with_source();
    builder.bolt("count", 1, sink()).fields("src", &["word", "wrod"]);
    rejected(builder, Some("count"), &["`wrod`", "[word, n]"]);
}

#[test]
fn parallelism_zero_is_rejected() {
    let mut builder = with_source();
    builder.bolt("count", 0, sink()).shuffle("src");
    rejected(builder, Some("count"), &["parallelism"]);
    let mut builder = TopologyBuilder::new("checked");
    builder.spout("src", 0, idle_spout());
    rejected(builder, Some("src"), &["parallelism"]);
}

#[test]
fn duplicate_ids_are_rejected() {
    let mut builder = with_source();
    builder.bolt("src", 1, sink()).shuffle("src");
    rejected(builder, Some("src"), &["two components"]);
}

#[test]
fn a_bolt_without_inputs_is_rejected() {
    let mut builder = with_source();
    builder.bolt("orphan", 1, sink());
    rejected(builder, Some("orphan"), &["input"]);
}

#[test]
fn a_topology_without_a_spout_is_rejected() {
    let mut builder = TopologyBuilder::new("checked");
    builder.bolt("a", 1, relay()).shuffle("b");
    builder.bolt("b", 1, relay()).shuffle("a");
    rejected(builder, None, &["spout"]);
}

#[test]
fn an_input_on_an_undeclared_stream_is_rejected() {
    let mut builder = with_source();
    builder.bolt("count", 1, sink()).input("src", "words", Grouping::Shuffle);
    rejected(builder, Some("count"), &["'words'", "default"]);
}

#[test]
fn direct_grouping_on_a_stream_that_is_not_direct_is_rejected() {
    let mut builder = with_source();
    builder.bolt("count", 1, sink()).grouping("src", Grouping::Direct);
    rejected(builder, Some("count"), &["direct", "not a direct stream"]);
}

#[test]
fn a_direct_stream_subscribed_without_direct_grouping_is_rejected() {
    let mut builder = TopologyBuilder::new("checked");
    let streams = vec![StreamDecl::named("d", ["n"]).direct()];
    builder.spout("src", 1, spout_fn_streams(streams, |_| Idle { dropped: Arc::default() }));
    builder.bolt("count", 1, sink()).input("src", "d", Grouping::Shuffle);
    rejected(builder, Some("count"), &["'d'", "direct"]);
}

#[test]
fn max_spout_pending_zero_is_rejected() {
    let mut builder = with_source();
    builder.config(TopologyConfig { max_spout_pending: 0, ..TopologyConfig::default() });
    builder.bolt("count", 1, sink()).shuffle("src");
    rejected(builder, None, &["max_spout_pending"]);
}

#[test]
fn a_queue_smaller_than_a_batch_is_rejected() {
    let mut builder = with_source();
    builder.config(TopologyConfig { batch_size: 64, queue_capacity: 63, ..TopologyConfig::default() });
    builder.bolt("count", 1, sink()).shuffle("src");
    rejected(builder, None, &["queue_capacity", "batch_size", "63", "64"]);
}

#[test]
fn an_empty_fields_grouping_is_rejected() {
    let mut builder = with_source();
    builder.bolt("count", 1, sink()).fields("src", &[]);
    rejected(builder, Some("count"), &["names no field"]);
}

#[test]
fn a_component_named_like_a_system_component_is_rejected() {
    let mut builder = with_source();
    builder.bolt("__acker", 1, sink()).shuffle("src");
    rejected(builder, Some("__acker"), &["reserved"]);
}

#[test]
fn a_stream_declared_twice_is_rejected() {
    let mut builder = TopologyBuilder::new("checked");
    let streams = vec![StreamDecl::named("s", ["n"]), StreamDecl::named("s", ["m"])];
    builder.spout("src", 1, spout_fn_streams(streams, |_| Idle { dropped: Arc::default() }));
    rejected(builder, Some("src"), &["'s'", "twice"]);
}

/// Needs a `word` field in each input, and says so when it declares its outputs.
struct NeedsWord;

impl BoltFactory for NeedsWord {
    fn declare(&self, inputs: &[InputStream]) -> Result<Vec<StreamDecl>, BoxError> {
        for input in inputs {
            input.require("word", "the counted field")?;
        }
        Ok(vec![StreamDecl::default_stream(["word", "count"])])
    }

    fn create(&self, _: &TaskContext) -> Result<Box<dyn Bolt>, BoxError> {
        Ok(Box::new(execute_fn(|_, _| Ok(()))))
    }
}

#[test]
fn a_factory_rejects_inputs_it_cannot_use_and_its_outputs_feed_later_checks() {
    let mut builder = with_source();
    builder.bolt("count", 1, Arc::new(NeedsWord)).shuffle("src");
    builder.bolt("top", 1, sink()).fields("count", &["count"]);
    builder.build().unwrap();

    let mut builder = with_source();
    builder.bolt("lengths", 1, bolt_fn(["length"], |_| execute_fn(|_, _| Ok(())))).shuffle("src");
    builder.bolt("count", 1, Arc::new(NeedsWord)).shuffle("lengths");
    rejected(builder, Some("count"), &["`word`", "lengths:default", "[length]"]);
}

/// A bolt factory whose second task cannot be made.
struct FailingFactory;

impl BoltFactory for FailingFactory {
    fn declare(&self, _: &[InputStream]) -> Result<Vec<StreamDecl>, BoxError> {
        Ok(vec![])
    }

    fn create(&self, ctx: &TaskContext) -> Result<Box<dyn Bolt>, BoxError> {
        if ctx.task_index == 1 {
            return Err("cannot open /nonexistent/model.bin".into());
        }
        Ok(Box::new(execute_fn(|_, _| Ok(()))))
    }
}

#[test]
fn a_factory_error_stops_the_start_naming_the_component_with_nothing_left_running() {
    let made = Arc::new(AtomicU64::new(0));
    let dropped = Arc::new(AtomicU64::new(0));
    let mut builder = TopologyBuilder::new("broken");
    let (m, d) = (made.clone(), dropped.clone());
    builder.spout(
        "src",
        2,
        spout_fn(["n"], move |_| {
            m.fetch_add(1, Ordering::SeqCst);
            Idle { dropped: d.clone() }
        }),
    );
    builder.bolt("model", 2, Arc::new(FailingFactory)).shuffle("src");
    let err = match LocalRun::start(&builder.build().unwrap(), RunOptions::default()) {
        Ok(_) => panic!("started although a task of 'model' could not be made"),
        Err(err) => err,
    };
    assert_eq!((err.topology.as_str(), err.component.as_str()), ("broken", "model"));
    // Tasks are numbered in declaration order: src has 0 and 1, model 2 and 3.
    assert_eq!(err.task, 3);
    assert!(err.message.contains("cannot open /nonexistent/model.bin"), "{err}");
    let shown = err.to_string();
    assert!(shown.contains("'model'") && shown.contains("cannot open"), "{shown}");
    // The spout tasks were made first; none was left running with its spout.
    assert_eq!(made.load(Ordering::SeqCst), 2);
    assert_eq!(dropped.load(Ordering::SeqCst), 2, "a spout outlived the failed start");
}
