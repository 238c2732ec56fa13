//! Each grouping sends a stream's tuples to the subscriber's tasks as it promises, and named and
//! direct streams reach exactly their subscribers.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use common::*;
use squall_runtime::prelude::*;
use squall_runtime::{StreamDecl, TaskId, bolt_fn_streams, spout_fn_streams};

/// Tuples emitted in each grouping test, over all spout tasks.
const N: u64 = 3000;
/// Tasks of the receiving bolt.
const SINK_TASKS: u32 = 3;

/// Runs `spouts` tasks emitting ids `0..N` as `[id, key, a, b]` into a recording sink of
/// [`SINK_TASKS`] tasks subscribed with `grouping`; returns what the sink received.
fn deliver(spouts: u32, grouping: Grouping) -> Received {
    let log = Arc::new(Mutex::new(SpoutLog::default()));
    let received = Arc::new(Mutex::new(Received::default()));
    let make: MakeValues = Arc::new(|id, _| {
        let key = format!("k{}", id % 60);
        values![id, key, id % 7, (id / 7) % 11]
    });
    let mut builder = TopologyBuilder::new("groupings");
    builder.spout("src", spouts, replaying_spout_with(N, ["id", "key", "a", "b"], make, &log));
    builder.bolt("sink", SINK_TASKS, recording_sink(&received)).grouping("src", grouping);
    let report = run_to_completion(&builder.build().unwrap());
    assert_eq!(stats(&report, "src").acked, N);
    lock(&log).assert_every_id_acked_once(N);
    let received = std::mem::take(&mut *lock(&received));
    assert_eq!(received.tasks.len(), SINK_TASKS as usize);
    received
}

/// Checks that the ids `0..N` were received once each, over all tasks.
fn assert_each_id_once(received: &Received) {
    let counts = received.int_counts("id");
    assert_eq!(counts.len() as u64, N, "some ids never arrived");
    let repeated: Vec<_> = counts.iter().filter(|&(_, &n)| n != 1).take(10).collect();
    assert!(repeated.is_empty(), "ids received more than once (id, times): {repeated:?}");
}

/// Which tasks received the tuples with each value of `key`.
fn tasks_per_key<K: Ord>(received: &Received, key: impl Fn(&Tuple) -> K) -> BTreeMap<K, BTreeSet<TaskId>> {
    let mut tasks: BTreeMap<K, BTreeSet<TaskId>> = BTreeMap::new();
    for (task, t) in &received.tuples {
        tasks.entry(key(t)).or_default().insert(*task);
    }
    tasks
}

#[test]
fn shuffle_delivers_each_tuple_once_and_spreads_evenly_over_every_task() {
    let received = deliver(2, Grouping::Shuffle);
    assert_each_id_once(&received);
    // A uniformly random choice gives each task N/3 = 1000 tuples with a standard deviation
    // of sqrt(N · 1/3 · 2/3) ≈ 26; ±15% (150) is almost 6 of those, so a fair shuffle,
    // random or round-robin, passes all but never, while favouring one task by a sixth fails.
    let expected = (N / u64::from(SINK_TASKS)) as usize;
    let tolerance = expected * 15 / 100;
    for (task, ids) in received.ints_by_task("id") {
        assert!(
            ids.len().abs_diff(expected) <= tolerance,
            "task {task} received {} of {N}, expected {expected}",
            ids.len()
        );
    }
}

#[test]
fn fields_grouping_sends_each_key_to_one_task_and_uses_every_task() {
    let received = deliver(2, Grouping::Fields(vec!["key".into()]));
    assert_each_id_once(&received);
    let tasks = tasks_per_key(&received, |t| t.get_str("key").unwrap().to_string());
    assert_eq!(tasks.len(), 60);
    for (key, tasks) in &tasks {
        assert_eq!(tasks.len(), 1, "key {key} reached tasks {tasks:?}");
    }
    let used: BTreeSet<TaskId> = tasks.values().flatten().copied().collect();
    assert_eq!(used, received.tasks, "some task received no key");
}

#[test]
fn fields_grouping_on_two_fields_routes_by_both_values() {
    let received = deliver(1, Grouping::Fields(vec!["a".into(), "b".into()]));
    assert_each_id_once(&received);
    let by_pair = tasks_per_key(&received, |t| (int(t, "a").unwrap(), int(t, "b").unwrap()));
    assert_eq!(by_pair.len(), 7 * 11);
    for (pair, tasks) in &by_pair {
        assert_eq!(tasks.len(), 1, "pair (a, b) = {pair:?} reached tasks {tasks:?}");
    }
    let used: BTreeSet<TaskId> = by_pair.values().flatten().copied().collect();
    assert_eq!(used, received.tasks, "some task received no pair");
    // Both fields take part: tuples sharing one field but not the other go to several tasks.
    let by_a = tasks_per_key(&received, |t| int(t, "a").unwrap());
    let by_b = tasks_per_key(&received, |t| int(t, "b").unwrap());
    assert!(by_a.values().any(|tasks| tasks.len() > 1), "routed by field a alone: {by_a:?}");
    assert!(by_b.values().any(|tasks| tasks.len() > 1), "routed by field b alone: {by_b:?}");
}

#[test]
fn all_grouping_delivers_every_tuple_to_every_task() {
    let received = deliver(2, Grouping::All);
    let every_id: Vec<i64> = (0..N as i64).collect();
    for (task, mut ids) in received.ints_by_task("id") {
        ids.sort_unstable();
        assert!(ids == every_id, "task {task} received {} tuples, not each of the {N} once", ids.len());
    }
}

#[test]
fn global_grouping_delivers_everything_to_the_lowest_task_only() {
    let received = deliver(2, Grouping::Global);
    assert_each_id_once(&received);
    let lowest = *received.tasks.first().unwrap();
    for (task, ids) in received.ints_by_task("id") {
        let expected = if task == lowest { N as usize } else { 0 };
        assert_eq!(ids.len(), expected, "task {task} (lowest is {lowest})");
    }
}

#[test]
fn local_or_shuffle_delivers_each_tuple_exactly_once() {
    let received = deliver(2, Grouping::LocalOrShuffle);
    assert_each_id_once(&received);
}

#[test]
fn none_grouping_delivers_each_tuple_exactly_once() {
    let received = deliver(2, Grouping::None);
    assert_each_id_once(&received);
}

/// Spout → `router` (direct stream `s`) → `sink` (direct stream `t`): each hop picks the task
/// of the next component with `emit_direct` and writes its choice into the tuple.
#[test]
fn emit_direct_reaches_exactly_the_chosen_task() {
    const COUNT: u64 = 1200;
    let received = Arc::new(Mutex::new(Received::default()));
    let misrouted = Arc::new(Mutex::new(Vec::new()));
    let mut builder = TopologyBuilder::new("direct");
    let spout = spout_fn_streams(vec![StreamDecl::named("s", ["id", "to"]).direct()], |ctx| {
        let routers = ctx.tasks_of("router").to_vec();
        assert_eq!(routers.len(), 3);
        // Runs of five to one task, then the next: nothing a shuffle would do.
        counting_spout(COUNT, move |i, out| {
            let to = routers[(i / 5) as usize % routers.len()];
            out.emit_direct(to, "s", Some(i), values![i, to]);
        })
    });
    builder.spout("src", 1, spout);
    let router = {
        let misrouted = misrouted.clone();
        bolt_fn_streams(vec![StreamDecl::named("t", ["id", "to"]).direct()], move |ctx| {
            let (me, sinks) = (ctx.task, ctx.tasks_of("sink").to_vec());
            let misrouted = misrouted.clone();
            execute_fn(move |t, out| {
                let (id, to) = (int(t, "id")?, int(t, "to")?);
                if to != i64::from(me) {
                    lock(&misrouted).push((id, to, me));
                }
                let next = sinks[(id / 3 + 1) as usize % sinks.len()];
                out.emit_direct(next, "t", values![id, next]);
                Ok(())
            })
        })
    };
    builder.bolt("router", 3, router).input("src", "s", Grouping::Direct);
    builder.bolt("sink", 3, recording_sink(&received)).input("router", "t", Grouping::Direct);
    let report = run_to_completion(&builder.build().unwrap());

    assert_eq!(stats(&report, "src").acked, COUNT, "direct tuples are tracked like any other");
    assert_eq!(*lock(&misrouted), vec![], "(id, chosen task, receiving task) at the router");
    let received = lock(&received);
    assert_eq!(received.tuples.len() as u64, COUNT);
    for (task, t) in &received.tuples {
        assert_eq!(int(t, "to").unwrap(), i64::from(*task), "sink tuple {t:?} went to the wrong task");
    }
    assert!(received.ints_by_task("id").values().all(|ids| !ids.is_empty()), "a sink task was never chosen");
}

/// A spout emits on streams `a` (fields `x`) and `b` (fields `y`, `z`); one bolt subscribes
/// to each, one to both.
#[test]
fn a_bolt_receives_only_the_streams_it_subscribes_to() {
    const COUNT: u64 = 1000;
    let streams = vec![StreamDecl::named("a", ["x"]), StreamDecl::named("b", ["y", "z"])];
    let spout = spout_fn_streams(streams, |_| {
        counting_spout(COUNT, |i, out| {
            if i % 2 == 0 {
                out.emit_to("a", Some(i), values![i]);
            } else {
                out.emit_to("b", Some(i), values![i, "odd"]);
            }
        })
    });
    let (only_a, only_b, both) = Default::default();
    let mut builder = TopologyBuilder::new("streams");
    builder.spout("src", 1, spout);
    builder.bolt("only_a", 3, recording_sink(&only_a)).input("src", "a", Grouping::Shuffle);
    builder.bolt("only_b", 3, recording_sink(&only_b)).input("src", "b", Grouping::Fields(vec!["y".into()]));
    builder.bolt("both", 2, recording_sink(&both)).input("src", "a", Grouping::Shuffle).input(
        "src",
        "b",
        Grouping::Shuffle,
    );
    let report = run_to_completion(&builder.build().unwrap());
    assert_eq!(stats(&report, "src").acked, COUNT);

    let streams_seen = |r: &Arc<Mutex<Received>>| -> BTreeMap<String, usize> {
        let mut seen = BTreeMap::new();
        for (_, t) in &lock(r).tuples {
            *seen.entry(format!("{}:{}", t.stream(), t.fields())).or_default() += 1;
        }
        seen
    };
    let half = (COUNT / 2) as usize;
    assert_eq!(streams_seen(&only_a), BTreeMap::from([("a:[x]".to_string(), half)]));
    assert_eq!(streams_seen(&only_b), BTreeMap::from([("b:[y, z]".to_string(), half)]));
    assert_eq!(streams_seen(&both), BTreeMap::from([("a:[x]".to_string(), half), ("b:[y, z]".to_string(), half)]));
    let evens: BTreeMap<i64, usize> = (0..COUNT as i64).step_by(2).map(|i| (i, 1)).collect();
    assert_eq!(lock(&only_a).int_counts("x"), evens);
}
