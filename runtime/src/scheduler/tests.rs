//! The scheduler's guarantees, one test each, then the same checked over random clusters.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use super::*;
use crate::component::{BoltFactory, BoxError, InputStream, SpoutFactory, StreamDecl, TaskContext};
use crate::{Bolt, BoltOutput, Registry, RunOptions, Spout, SpoutOutput, TopologyBuilder, Tuple, run_local};

fn layout(components: &[(&str, &str, u32)]) -> TaskLayout {
    let mut layout = TaskLayout::new();
    for &(id, kind, parallelism) in components {
        layout.push(id, kind, parallelism).unwrap();
    }
    layout
}

/// One component of kind `k` with `n` tasks.
fn tasks(n: u32) -> TaskLayout {
    layout(&[("c", "k", n)])
}

fn node(id: &str, slots: u32) -> LiveNode {
    LiveNode::new(id, slots, ["k", "file", "split", "count"])
}

fn tasks_on(a: &Assignment, node: &str) -> Vec<TaskId> {
    let mut tasks: Vec<TaskId> = a.workers_on(node).flat_map(|w| w.tasks.iter()).collect();
    tasks.sort_unstable();
    tasks
}

fn sizes(a: &Assignment) -> Vec<u64> {
    a.workers().iter().map(|w| w.tasks.len()).collect()
}

fn spread(counts: impl IntoIterator<Item = u64>) -> u64 {
    let counts: Vec<u64> = counts.into_iter().collect();
    counts.iter().max().unwrap_or(&0) - counts.iter().min().unwrap_or(&0)
}

// ---- task layout -----------------------------------------------------------------------------

#[test]
fn layout_numbers_components_in_order_from_zero() {
    let l = layout(&[("lines", "file", 1), ("split", "split", 3), ("count", "count", 2)]);
    let ranges: Vec<Range<TaskId>> = l.components().iter().map(ComponentTasks::tasks).collect();
    assert_eq!(ranges, [0..1, 1..4, 4..6]);
    assert_eq!(l.task_count(), 6);
    assert_eq!(l.component_of(3).unwrap().id, "split");
    assert_eq!(l.component_of(5).unwrap().id, "count");
    assert!(l.component_of(6).is_none());
}

#[test]
fn layout_rejects_a_duplicate_component_and_overflowing_ids() {
    let mut l = layout(&[("a", "k", 1)]);
    let err = l.push("a", "k", 1).unwrap_err();
    assert_eq!(err.to_string(), "component 'a': two components have this id");
    let err = l.push("b", "k", u32::MAX).unwrap_err();
    assert_eq!(err.to_string(), "component 'b': the topology would have 2^32 tasks or more");
}

#[test]
fn layout_of_a_spec_has_spouts_then_bolts_then_ackers() {
    let yaml = "name: t\nbolts:\n  - { id: b, kind: split, parallelism: 2, inputs: [ { from: s } ] }\n\
                spouts:\n  - { id: s, kind: file, parallelism: 3 }\nconfig: { ackers: 2 }\n";
    let spec = TopologySpec::parse(yaml, "t.yaml").unwrap();
    let l = TaskLayout::of_spec(&spec).unwrap();
    let got: Vec<(&str, &str, Range<TaskId>)> =
        l.components().iter().map(|c| (c.id.as_str(), c.kind.as_str(), c.tasks())).collect();
    assert_eq!(got, [("s", "file", 0..3), ("b", "split", 3..5), ("__acker", "__acker", 5..7)]);

    let spec = TopologySpec::parse(&format!("{yaml}\n").replace("ackers: 2", "acking: false"), "t.yaml").unwrap();
    assert_eq!(TaskLayout::of_spec(&spec).unwrap().task_count(), 5);
}

/// A kind for the registry test: a spout that is done at once and a bolt that drops tuples.
#[derive(serde::Deserialize)]
struct Idle {}

struct Done;
impl Spout for Done {
    fn next_tuple(&mut self, _: &mut SpoutOutput<'_>) {}
    fn is_done(&self) -> bool {
        true
    }
}

struct Sink;
impl Bolt for Sink {
    fn execute(&mut self, _: &Tuple, _: &mut BoltOutput<'_>) -> Result<(), BoxError> {
        Ok(())
    }
}

impl SpoutFactory for Idle {
    fn declare(&self) -> Vec<StreamDecl> {
        vec![StreamDecl::default_stream(["x"])]
    }
    fn create(&self, _: &TaskContext) -> Result<Box<dyn Spout>, BoxError> {
        Ok(Box::new(Done))
    }
}

impl BoltFactory for Idle {
    fn declare(&self, _: &[InputStream]) -> Result<Vec<StreamDecl>, BoxError> {
        Ok(vec![StreamDecl::default_stream(["x"])])
    }
    fn create(&self, _: &TaskContext) -> Result<Box<dyn Bolt>, BoxError> {
        Ok(Box::new(Sink))
    }
}

#[test]
fn layout_of_a_spec_is_the_layout_of_the_topology_it_builds() {
    let mut registry = Registry::new();
    registry.spout::<Idle>("idle").bolt::<Idle>("sink");
    let yaml = "name: t\nspouts:\n  - { id: s1, kind: idle, parallelism: 2 }\n  - { id: s2, kind: idle }\n\
                bolts:\n  - { id: b, kind: sink, parallelism: 4, inputs: [ { from: s1 }, { from: s2 } ] }\n\
                config: { ackers: 3 }\n";
    let spec = TopologySpec::parse(yaml, "t.yaml").unwrap();
    let topology = registry.build(&spec, "t.yaml").unwrap();
    assert_eq!(TaskLayout::of_spec(&spec).unwrap(), TaskLayout::of_topology(&topology).unwrap());
}

/// A task id means the same in local mode and in a cluster: the ids local mode gives each
/// component's tasks (as tasks see them) are the layout's.
#[test]
fn layout_matches_the_task_ids_of_local_mode() {
    let seen: Arc<Mutex<BTreeMap<String, Vec<TaskId>>>> = Arc::default();
    let record = {
        let seen = seen.clone();
        move |ctx: &TaskContext| {
            let mut seen = seen.lock().unwrap();
            for c in ["s", "b", "c", ACKER_COMPONENT] {
                seen.insert(c.to_string(), ctx.tasks_of(c).to_vec());
            }
        }
    };
    let mut builder = TopologyBuilder::new("numbering");
    let (r1, r2, r3) = (record.clone(), record.clone(), record);
    builder.spout(
        "s",
        2,
        crate::spout_fn(["x"], move |ctx| {
            r1(ctx);
            Done
        }),
    );
    builder
        .bolt(
            "b",
            3,
            crate::bolt_fn(["x"], move |ctx| {
                r2(ctx);
                Sink
            }),
        )
        .shuffle("s");
    builder
        .bolt(
            "c",
            1,
            crate::bolt_fn(["x"], move |ctx| {
                r3(ctx);
                Sink
            }),
        )
        .shuffle("b");
    builder.config(TopologyConfig { ackers: 2, ..TopologyConfig::default() });
    let topology = builder.build().unwrap();
    run_local(&topology, RunOptions::default()).unwrap();

    let l = TaskLayout::of_topology(&topology).unwrap();
    let expected: BTreeMap<String, Vec<TaskId>> =
        l.components().iter().map(|c| (c.id.clone(), c.tasks().collect())).collect();
    assert_eq!(expected.len(), 4, "{expected:?}");
    assert_eq!(*seen.lock().unwrap(), expected);
}

// ---- fresh schedules -------------------------------------------------------------------------

#[test]
fn tasks_spread_evenly_over_workers_and_workers_over_nodes() {
    let a = schedule(&tasks(6), &[node("n1", 4), node("n2", 4)], None, 2, 1).unwrap();
    assert_eq!(sizes(&a), [3, 3]);
    assert_eq!(a.workers_on("n1").count(), 1);
    assert_eq!(a.workers_on("n2").count(), 1);
    assert_eq!((a.epoch(), a.version(), a.short_by()), (1, 1, 0));
}

#[test]
fn task_counts_differ_by_at_most_one() {
    let a = schedule(&tasks(11), &[node("n1", 4), node("n2", 4)], None, 4, 1).unwrap();
    assert_eq!(sizes(&a), [3, 3, 3, 2]);
}

#[test]
fn each_component_is_spread_over_the_workers() {
    let l = layout(&[("a", "k", 3), ("b", "k", 3), ("c", "k", 1), ("d", "k", 1), ("e", "k", 1)]);
    let a = schedule(&l, &[node("n1", 1), node("n2", 1), node("n3", 1)], None, 3, 1).unwrap();
    for c in l.components() {
        let counts = a.workers().iter().map(|w| c.tasks().filter(|&t| w.tasks.contains(t)).count() as u64);
        assert!(spread(counts) <= 1, "component {} in\n{a}", c.id);
    }
    assert_eq!(sizes(&a), [3, 3, 3]);
}

#[test]
fn workers_spread_over_nodes_as_their_free_slots_allow() {
    let nodes = [node("n1", 4), node("n2", 4).with_taken([0, 1, 2]), node("n3", 4)];
    let a = schedule(&tasks(12), &nodes, None, 6, 1).unwrap();
    let per_node: Vec<usize> = ["n1", "n2", "n3"].iter().map(|n| a.workers_on(n).count()).collect();
    assert_eq!(per_node, [3, 1, 2]);
    assert_eq!(a.tasks_of("n2", 3).map(TaskRanges::len), Some(2), "the one free slot of n2 is used:\n{a}");
}

#[test]
fn workers_are_capped_at_the_task_count() {
    let a = schedule(&tasks(2), &[node("n1", 8)], None, 5, 1).unwrap();
    assert_eq!(sizes(&a), [1, 1]);
    assert_eq!(a.short_by(), 0);
}

#[test]
fn too_few_free_slots_uses_what_there_is_and_says_so() {
    let nodes = [node("n1", 2).with_taken([1]), node("n2", 1)];
    let a = schedule(&tasks(8), &nodes, None, 4, 1).unwrap();
    assert_eq!(sizes(&a), [4, 4]);
    assert_eq!(a.short_by(), 2);
}

#[test]
fn the_same_input_gives_the_same_assignment_whatever_the_node_order() {
    let l = layout(&[("s", "file", 3), ("b", "split", 7), ("__acker", "__acker", 2)]);
    let nodes = vec![
        LiveNode::new("c", 2, ["split"]),
        LiveNode::new("a", 3, ["file", "split"]).with_taken([1]),
        LiveNode::new("b", 1, ["file"]),
    ];
    let first = schedule(&l, &nodes, None, 4, 9).unwrap();
    let mut reversed = nodes.clone();
    reversed.reverse();
    assert_eq!(schedule(&l, &reversed, None, 4, 9).unwrap(), first);
    assert_eq!(schedule(&l, &nodes, None, 4, 9).unwrap().to_json(), first.to_json());
}

// ---- component kinds -------------------------------------------------------------------------

#[test]
fn a_task_runs_only_where_its_kind_is_known() {
    let l = layout(&[("lines", "file", 2), ("split", "split", 6)]);
    let nodes = [LiveNode::new("a", 2, ["file", "split"]), LiveNode::new("b", 2, ["split"])];
    let a = schedule(&l, &nodes, None, 4, 1).unwrap();
    for t in 0..2 {
        assert_eq!(a.worker_of(t).unwrap().node, "a", "file task {t} in\n{a}");
    }
    assert_eq!(a.workers().len(), 4);
    assert_eq!(spread(sizes(&a)), 0, "{a}");
}

#[test]
fn the_acker_kind_is_known_everywhere() {
    let l = layout(&[("s", "file", 1), ("__acker", "__acker", 2)]);
    let a = schedule(&l, &[LiveNode::new("a", 2, ["file"])], None, 2, 1).unwrap();
    assert_eq!(sizes(&a), [2, 1]);
}

#[test]
fn a_node_that_knows_none_of_the_topology_gets_no_worker() {
    let l = layout(&[("s", "file", 2), ("__acker", "__acker", 2)]);
    let nodes = [LiveNode::new("a", 1, ["file"]), LiveNode::new("z", 4, ["other"])];
    let a = schedule(&l, &nodes, None, 3, 1).unwrap();
    assert_eq!(a.workers_on("z").count(), 0);
    assert_eq!((a.workers().len(), a.short_by()), (1, 2));
}

#[test]
fn workers_are_added_when_no_node_knows_every_kind() {
    let l = layout(&[("in", "kafka", 1), ("out", "sink", 1)]);
    let nodes = [LiveNode::new("a", 1, ["kafka"]), LiveNode::new("b", 1, ["sink"])];
    let a = schedule(&l, &nodes, None, 1, 1).unwrap();
    assert_eq!(tasks_on(&a, "a"), [0]);
    assert_eq!(tasks_on(&a, "b"), [1]);
}

#[test]
fn a_worker_with_nothing_it_can_run_is_left_out() {
    let l = layout(&[("x", "x", 1), ("y", "y", 1)]);
    let nodes = [LiveNode::new("a", 2, ["x"]), LiveNode::new("b", 1, ["x", "y"])];
    let a = schedule(&l, &nodes, None, 3, 1).unwrap();
    assert_eq!(sizes(&a), [1, 1], "{a}");
    assert_eq!(tasks_on(&a, "b"), [1]);
}

// ---- errors ----------------------------------------------------------------------------------

#[test]
fn an_unknown_kind_is_named_with_its_component() {
    let l = layout(&[("lines", "file", 1), ("ingest", "kafka", 2)]);
    let err = schedule(&l, &[node("n1", 2)], None, 1, 1).unwrap_err();
    assert_eq!(err, ScheduleError::UnknownKind { kind: "kafka".into(), component: "ingest".into() });
    assert_eq!(
        err.to_string(),
        "no live node knows component kind 'kafka' (component 'ingest'); start a node whose binary registers it"
    );
}

#[test]
fn no_free_slot_anywhere_is_an_error() {
    let nodes = [node("n1", 2).with_taken([0, 1]), node("n2", 0)];
    let err = schedule(&tasks(3), &nodes, None, 2, 1).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no free worker slot on any live node (2 slots on 2 nodes, all taken); kill a topology or start a node"
    );
    assert_eq!(schedule(&tasks(3), &[], None, 2, 1).unwrap_err(), ScheduleError::NoLiveNode);
}

#[test]
fn no_free_slot_where_a_kind_is_known_is_an_error() {
    let l = layout(&[("lines", "file", 1), ("ingest", "kafka", 2)]);
    let nodes = [LiveNode::new("a", 2, ["file"]), LiveNode::new("k", 1, ["kafka"]).with_taken([0])];
    let err = schedule(&l, &nodes, None, 2, 1).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no free worker slot on a live node that knows component kind 'kafka' (component 'ingest'); \
         free a slot on such a node or start another"
    );
}

#[test]
fn bad_requests_are_errors() {
    assert_eq!(schedule(&tasks(3), &[node("n", 1)], None, 0, 1), Err(ScheduleError::NoWorkersWanted));
    assert_eq!(schedule(&TaskLayout::new(), &[node("n", 1)], None, 1, 1), Err(ScheduleError::NoTasks));
    let err = schedule(&tasks(3), &[node("n", 1), node("n", 2)], None, 1, 1).unwrap_err();
    assert_eq!(err.to_string(), "two live nodes have the id 'n'");
}

// ---- recovery and rebalance ------------------------------------------------------------------

#[test]
fn losing_one_node_of_three_moves_only_its_tasks() {
    let l = layout(&[("s", "file", 3), ("split", "split", 6), ("count", "count", 6)]);
    let nodes = [node("n1", 2), node("n2", 2), node("n3", 2)];
    let before = schedule(&l, &nodes, None, 3, 1).unwrap();
    assert_eq!(sizes(&before), [5, 5, 5]);
    let lost = tasks_on(&before, "n2");

    let after = schedule(&l, &[nodes[0].clone(), nodes[2].clone()], Some(&before), 3, 1).unwrap();
    assert_eq!(after.moved_since(&before), lost);
    assert_eq!(sizes(&after), [5, 5, 5], "a free slot replaces the lost worker:\n{after}");
    assert_eq!(after.version(), 2);
    assert_eq!(after.short_by(), 0);
}

#[test]
fn losing_a_node_with_no_slot_to_spare_moves_only_its_tasks() {
    let l = layout(&[("s", "file", 3), ("split", "split", 6), ("count", "count", 6)]);
    let nodes = [node("n1", 1), node("n2", 1), node("n3", 1)];
    let before = schedule(&l, &nodes, None, 3, 1).unwrap();
    let lost = tasks_on(&before, "n3");

    let after = schedule(&l, &nodes[..2], Some(&before), 3, 1).unwrap();
    assert_eq!(after.moved_since(&before), lost);
    assert_eq!(sizes(&after), [8, 7]);
    assert_eq!(after.short_by(), 1);

    // The node comes back: the spread is restored, moving as few tasks as that takes.
    let back = schedule(&l, &nodes, Some(&after), 3, 1).unwrap();
    assert_eq!(sizes(&back), [5, 5, 5]);
    assert_eq!(back.moved_since(&after).len(), 5);
    assert_eq!(back.short_by(), 0);
}

#[test]
fn going_from_two_to_three_workers_moves_two_of_six_tasks() {
    let nodes = [node("n1", 2), node("n2", 2), node("n3", 2)];
    let two = schedule(&tasks(6), &nodes, None, 2, 1).unwrap();
    let three = schedule(&tasks(6), &nodes, Some(&two), 3, 1).unwrap();
    assert_eq!(sizes(&three), [2, 2, 2]);
    assert_eq!(three.moved_since(&two).len(), 2);

    let l = layout(&[("a", "k", 2), ("b", "k", 4)]);
    let two = schedule(&l, &nodes, None, 2, 1).unwrap();
    let three = schedule(&l, &nodes, Some(&two), 3, 1).unwrap();
    assert_eq!(sizes(&three), [2, 2, 2]);
    assert_eq!(three.moved_since(&two).len(), 2, "{two}\n{three}");
}

#[test]
fn going_from_three_to_two_workers_moves_only_the_tasks_of_the_dropped_one() {
    let nodes = [node("n1", 2), node("n2", 2), node("n3", 2)];
    let three = schedule(&tasks(7), &nodes, None, 3, 1).unwrap();
    assert_eq!(sizes(&three), [3, 2, 2]);
    let two = schedule(&tasks(7), &nodes, Some(&three), 2, 1).unwrap();
    assert_eq!(sizes(&two), [4, 3]);
    let gone: Vec<&WorkerAssignment> =
        three.workers().iter().filter(|w| two.tasks_of(&w.node, w.slot).is_none()).collect();
    assert_eq!(gone.len(), 1);
    assert_eq!(two.moved_since(&three), gone[0].tasks.iter().collect::<Vec<_>>());
    assert_eq!(gone[0].tasks.len(), 2, "the worker with the fewest tasks goes");
}

#[test]
fn scheduling_again_with_nothing_changed_moves_nothing() {
    let l = layout(&[("s", "file", 3), ("b", "split", 10)]);
    let nodes = [LiveNode::new("a", 2, ["file", "split"]), LiveNode::new("b", 3, ["split"])];
    let first = schedule(&l, &nodes, None, 4, 1).unwrap();
    let again = schedule(&l, &nodes, Some(&first), 4, 2).unwrap();
    assert_eq!(again.workers(), first.workers());
    assert_eq!((again.epoch(), again.version()), (2, 2));
}

#[test]
fn a_slot_taken_by_another_topology_counts_as_lost() {
    let nodes = [node("n1", 2), node("n2", 2)];
    let before = schedule(&tasks(4), &nodes, None, 2, 1).unwrap();
    let slot = before.workers_on("n2").next().unwrap().slot;
    let after =
        schedule(&tasks(4), &[nodes[0].clone(), node("n2", 2).with_taken([slot])], Some(&before), 2, 1).unwrap();
    assert_eq!(after.moved_since(&before), tasks_on(&before, "n2"));
    assert_eq!(after.workers_on("n2").map(|w| w.slot).collect::<Vec<_>>(), [1 - slot]);
}

#[test]
fn tasks_a_restarted_node_no_longer_knows_move_and_the_rest_stay() {
    let l = layout(&[("s", "file", 2), ("b", "split", 4)]);
    let nodes = [LiveNode::new("a", 2, ["file", "split"]), LiveNode::new("b", 2, ["file", "split"])];
    let before = schedule(&l, &nodes, None, 2, 1).unwrap();
    let on_b = tasks_on(&before, "b");
    let files_on_b: Vec<TaskId> = on_b.iter().copied().filter(|&t| t < 2).collect();
    assert!(!files_on_b.is_empty(), "{before}");

    let restarted = [nodes[0].clone(), LiveNode::new("b", 2, ["split"])];
    let after = schedule(&l, &restarted, Some(&before), 2, 1).unwrap();
    assert_eq!(after.moved_since(&before), files_on_b);
    for t in 0..2 {
        assert_eq!(after.worker_of(t).unwrap().node, "a");
    }
}

#[test]
fn a_changed_parallelism_keeps_the_other_components_in_place() {
    let nodes = [node("n1", 2), node("n2", 2)];
    let before = schedule(&layout(&[("a", "k", 2), ("b", "k", 4), ("c", "k", 2)]), &nodes, None, 2, 1).unwrap();
    let grown = layout(&[("a", "k", 4), ("b", "k", 4), ("c", "k", 2)]);
    let after = schedule(&grown, &nodes, Some(&before), 2, 1).unwrap();
    // b and c are renumbered (ids 2..8 became 4..10) but stay on their workers.
    assert!(after.moved_since(&before).iter().all(|&t| t < 4), "{before}\n{after}");
    for (old, new) in (2..8).zip(4..10) {
        let (w0, w1) = (before.worker_of(old).unwrap(), after.worker_of(new).unwrap());
        assert_eq!((&w0.node, w0.slot), (&w1.node, w1.slot), "task {old} (now {new})");
    }
    assert_eq!(sizes(&after), [5, 5]);
}

// ---- the assignment as data ------------------------------------------------------------------

#[test]
fn lookups_find_workers_and_tasks() {
    let a = schedule(&tasks(5), &[node("n1", 2), node("n2", 1)], None, 3, 1).unwrap();
    let w = a.worker_of(4).unwrap();
    assert!(a.tasks_of(&w.node, w.slot).unwrap().contains(4));
    assert!(a.worker_of(5).is_none());
    assert!(a.tasks_of("n2", 7).is_none());
    assert_eq!(a.workers_on("n1").map(|w| w.slot).collect::<Vec<_>>(), [0, 1]);
    assert_eq!(a.workers_on("zz").count(), 0);
    let all: BTreeSet<TaskId> = a.workers().iter().flat_map(|w| w.tasks.iter()).collect();
    assert_eq!(all, (0..5).collect());
}

#[test]
fn task_ranges_are_compact_and_sorted() {
    let r: TaskRanges = [7, 1, 2, 3, 9, 8, 20].into_iter().collect();
    assert_eq!(r.ranges(), [(1, 3), (7, 9), (20, 20)]);
    assert_eq!(r.len(), 7);
    assert!(r.contains(8) && r.contains(20) && !r.contains(4) && !r.contains(0) && !r.contains(21));
    assert_eq!(serde_json::to_string(&r).unwrap(), "[[1,3],[7,9],[20,20]]");
    assert_eq!(serde_json::from_str::<TaskRanges>("[[1,2],[3,3]]").unwrap().ranges(), [(1, 3)]);
    assert!(serde_json::from_str::<TaskRanges>("[[3,2]]").is_err());
    assert!(serde_json::from_str::<TaskRanges>("[[1,4],[3,6]]").is_err());
    assert!(TaskRanges::default().is_empty());
}

#[test]
fn an_assignment_reads_back_what_it_wrote() {
    let l = layout(&[("lines", "file", 1), ("split", "split", 4)]);
    let nodes = [LiveNode::new("n1", 2, ["file", "split"]), LiveNode::new("n2", 2, ["split"]).with_taken([0])];
    let a = schedule(&l, &nodes, None, 2, 7).unwrap();
    let json = a.to_json();
    assert_eq!(
        json,
        r#"{"epoch":7,"version":1,"workers_wanted":2,"short_by":0,"layout":[{"id":"lines","kind":"file","parallelism":1},{"id":"split","kind":"split","parallelism":4}],"workers":[{"node":"n1","slot":0,"tasks":[[0,2]]},{"node":"n2","slot":1,"tasks":[[3,4]]}]}"#
    );
    assert_eq!(Assignment::from_json(json.as_bytes()).unwrap(), a);
    assert_eq!(a.to_string(), "n1/0: 0-2\nn2/1: 3-4\n");
}

#[test]
fn reading_an_assignment_checks_every_task_runs_exactly_once() {
    let json = |workers: &str| {
        format!(
            r#"{{"epoch":1,"version":1,"workers_wanted":1,"layout":[{{"id":"a","kind":"k","parallelism":4}}],"workers":[{workers}]}}"#
        )
    };
    let read = |workers: &str| Assignment::from_json(json(workers).as_bytes()).map_err(|e| e.to_string());
    let ok = read(r#"{"node":"b","slot":0,"tasks":[[2,3]]},{"node":"a","slot":0,"tasks":[[0,1]]}"#).unwrap();
    assert_eq!(ok.workers()[0].node, "a", "workers come out sorted");
    assert_eq!(ok.short_by(), 0, "short_by defaults to 0");

    let twice = read(r#"{"node":"a","slot":0,"tasks":[[0,2]]},{"node":"b","slot":0,"tasks":[[2,3]]}"#);
    assert!(twice.unwrap_err().contains("task 2 is assigned twice"));
    let missing = read(r#"{"node":"a","slot":0,"tasks":[[0,1],[3,3]]}"#);
    assert!(missing.unwrap_err().contains("task 2 is not assigned"));
    let missing_last = read(r#"{"node":"a","slot":0,"tasks":[[0,2]]}"#);
    assert!(missing_last.unwrap_err().contains("task 3 is not assigned"));
    let extra = read(r#"{"node":"a","slot":0,"tasks":[[0,4]]}"#);
    assert!(extra.unwrap_err().contains("task 4 is assigned but the layout has 4 tasks"));
    let same_slot = read(r#"{"node":"a","slot":0,"tasks":[[0,1]]},{"node":"a","slot":0,"tasks":[[2,3]]}"#);
    assert!(same_slot.unwrap_err().contains("two workers on slot 0 of node 'a'"));
    let bad_range = read(r#"{"node":"a","slot":0,"tasks":[[3,0]]}"#);
    assert!(bad_range.unwrap_err().starts_with("invalid assignment: task range [3,0] ends before it starts"));
    let dup = r#"{"epoch":1,"version":1,"workers_wanted":1,"layout":[{"id":"a","kind":"k","parallelism":1},{"id":"a","kind":"k","parallelism":1}],"workers":[]}"#;
    assert!(Assignment::from_json(dup.as_bytes()).unwrap_err().to_string().contains("two components have this id"));
}

/// A 1,000-task topology's assignment stays far under the znode limit of 1 MiB, even when
/// every worker's tasks are scattered.
#[test]
fn a_thousand_task_assignment_is_small() {
    let mut l = TaskLayout::new();
    for i in 0..10 {
        l.push(&format!("component-{i}"), &format!("kind-{i}"), 99).unwrap();
    }
    l.push(ACKER_COMPONENT, ACKER_COMPONENT, 10).unwrap();
    assert_eq!(l.task_count(), 1000);
    let kinds: Vec<String> = (0..10).map(|i| format!("kind-{i}")).collect();
    let nodes: Vec<LiveNode> =
        (0..25).map(|i| LiveNode::new(&format!("node-{i:02}.rack-1.example.internal"), 4, kinds.clone())).collect();
    let a = schedule(&l, &nodes, None, 50, 3).unwrap();
    assert_eq!(a.workers().len(), 50);
    let size = a.to_json().len();
    assert!(size < 64 * 1024, "fresh: {size} bytes");

    // Scattered: worker w runs tasks w, w + 50, w + 100, … (20 single-task ranges each).
    let workers: Vec<String> = (0..50)
        .map(|w| {
            let ranges: Vec<String> = (0..20).map(|i| format!("[{0},{0}]", w + 50 * i)).collect();
            format!(
                r#"{{"node":"node-{:02}.rack-1.example.internal","slot":{},"tasks":[{}]}}"#,
                w / 2,
                w % 2,
                ranges.join(",")
            )
        })
        .collect();
    let layout_json = serde_json::to_string(&l).unwrap();
    let json = format!(
        r#"{{"epoch":3,"version":9,"workers_wanted":50,"layout":{layout_json},"workers":[{}]}}"#,
        workers.join(",")
    );
    let scattered = Assignment::from_json(json.as_bytes()).unwrap();
    let size = scattered.to_json().len();
    assert!(size < 64 * 1024, "scattered: {size} bytes");
    println!("1,000 tasks on 50 workers: {} bytes fresh, {size} bytes scattered", a.to_json().len());
}

// ---- random clusters -------------------------------------------------------------------------

/// SplitMix64: a fixed seed reproduces a failing case.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `lo ..= hi`.
    fn range(&mut self, lo: u32, hi: u32) -> u32 {
        lo + (self.next() % u64::from(hi - lo + 1)) as u32
    }

    fn chance(&mut self, percent: u32) -> bool {
        self.range(1, 100) <= percent
    }
}

const KINDS: [&str; 4] = ["k0", "k1", "k2", "k3"];

/// A random case: a layout, nodes (every node knows every kind unless `constrained`), and a
/// number of workers.
struct Case {
    layout: TaskLayout,
    nodes: Vec<LiveNode>,
    workers: u32,
    constrained: bool,
}

fn random_case(rng: &mut Rng, constrained: bool) -> Case {
    let mut layout = TaskLayout::new();
    for c in 0..rng.range(1, 6) {
        let kind = KINDS[rng.range(0, 3) as usize];
        layout.push(&format!("c{c}"), kind, rng.range(1, 12)).unwrap();
    }
    if rng.chance(50) {
        layout.push(ACKER_COMPONENT, ACKER_COMPONENT, rng.range(1, 3)).unwrap();
    }
    let nodes = (0..rng.range(1, 6))
        .map(|n| {
            let slots = rng.range(0, 4);
            let kinds: Vec<&str> =
                if constrained { KINDS.iter().copied().filter(|_| rng.chance(60)).collect() } else { KINDS.to_vec() };
            let taken: Vec<u32> = (0..slots).filter(|_| rng.chance(25)).collect();
            LiveNode::new(&format!("n{n}"), slots, kinds).with_taken(taken)
        })
        .collect();
    Case { layout, nodes, workers: rng.range(1, 10), constrained }
}

/// Counts of each component's tasks on each worker: `[worker][component]`.
fn component_counts(a: &Assignment) -> Vec<Vec<u64>> {
    a.workers()
        .iter()
        .map(|w| {
            a.layout().components().iter().map(|c| c.tasks().filter(|&t| w.tasks.contains(t)).count() as u64).collect()
        })
        .collect()
}

fn node_of<'a>(nodes: &'a [LiveNode], w: &WorkerAssignment) -> &'a LiveNode {
    nodes.iter().find(|n| n.id == w.node).expect("a worker on a live node")
}

/// What holds of every assignment: each task once, on a free slot of a node that knows its
/// kind, no idle worker, and it reads back as written.
fn check_valid(case: &Case, a: &Assignment) {
    assert_eq!(Assignment::from_json(a.to_json().as_bytes()).unwrap(), *a);
    let total: u64 = a.workers().iter().map(|w| w.tasks.len()).sum();
    assert_eq!(total, u64::from(case.layout.task_count()));
    for w in a.workers() {
        let n = node_of(&case.nodes, w);
        assert!(n.is_free(w.slot), "{}/{} is not a free slot", w.node, w.slot);
        assert!(!w.tasks.is_empty(), "idle worker {}/{}", w.node, w.slot);
        for t in w.tasks.iter() {
            assert!(n.knows(&case.layout.component_of(t).unwrap().kind), "task {t} on {}", w.node);
        }
    }
}

/// The even spread: each component within one over the workers that can run it; totals within
/// one when every node knows every kind, and otherwise with no single move that evens them.
fn check_spread(case: &Case, a: &Assignment) {
    let counts = component_counts(a);
    let capable = |w: usize, c: usize| node_of(&case.nodes, &a.workers()[w]).knows(&case.layout.components()[c].kind);
    for c in 0..case.layout.components().len() {
        let on_capable = (0..counts.len()).filter(|&w| capable(w, c)).map(|w| counts[w][c]);
        assert!(spread(on_capable) <= 1, "component {c} in\n{a}");
    }
    let totals = sizes(a);
    if !case.constrained {
        assert!(spread(totals.iter().copied()) <= 1, "totals in\n{a}");
    }
    for hi in 0..totals.len() {
        for lo in 0..totals.len() {
            if totals[hi] >= totals[lo] + 2 {
                let movable = (0..counts[hi].len()).find(|&c| capable(lo, c) && counts[hi][c] > counts[lo][c]);
                assert!(movable.is_none(), "component {movable:?} could move from {hi} to {lo} in\n{a}");
            }
        }
    }
}

/// Free slots on nodes that know at least one of the topology's kinds.
fn usable_slots(case: &Case) -> u32 {
    let kinds: Vec<&str> =
        case.layout.components().iter().map(|c| c.kind.as_str()).filter(|k| !is_system_kind(k)).collect();
    case.nodes
        .iter()
        .filter(|n| kinds.is_empty() || kinds.iter().any(|k| n.knows(k)))
        .map(|n| n.free_slots().count() as u32)
        .sum()
}

/// Why `schedule` failed must be true of the case.
fn check_error(case: &Case, err: &ScheduleError) {
    match err {
        ScheduleError::NoLiveNode => assert!(case.nodes.is_empty()),
        ScheduleError::UnknownKind { kind, .. } => assert!(!case.nodes.iter().any(|n| n.knows(kind))),
        ScheduleError::NoFreeSlot { .. } => assert!(case.nodes.iter().all(|n| n.free_slots().next().is_none())),
        ScheduleError::NoSlotForKind { kind, .. } => {
            assert!(!case.nodes.iter().any(|n| n.knows(kind) && n.free_slots().next().is_some()))
        }
        other => panic!("unexpected error {other}"),
    }
}

#[test]
fn random_schedules_keep_every_invariant() {
    let mut rng = Rng(0x5C4E_D01E);
    let mut scheduled = 0;
    for case_no in 0..600 {
        let case = random_case(&mut rng, case_no % 2 == 1);
        let a = match schedule(&case.layout, &case.nodes, None, case.workers, 1) {
            Ok(a) => a,
            Err(e) => {
                check_error(&case, &e);
                continue;
            }
        };
        scheduled += 1;
        check_valid(&case, &a);
        check_spread(&case, &a);

        let wanted = case.workers.min(case.layout.task_count());
        let usable = usable_slots(&case);
        assert_eq!(a.short_by(), wanted - wanted.min(usable), "case {case_no}");
        if !case.constrained {
            assert_eq!(a.workers().len() as u32, wanted.min(usable), "case {case_no}");
            // Workers over nodes: a node has two more than another only if that one is full.
            let on = |n: &LiveNode| a.workers_on(&n.id).count();
            for x in &case.nodes {
                for y in &case.nodes {
                    assert!(on(x) <= on(y) + 1 || on(y) == y.free_slots().count(), "case {case_no}:\n{a}");
                }
            }
        }

        let mut reversed = case.nodes.clone();
        reversed.reverse();
        assert_eq!(schedule(&case.layout, &reversed, None, case.workers, 1).unwrap(), a, "case {case_no}");
        let again = schedule(&case.layout, &case.nodes, Some(&a), case.workers, 1).unwrap();
        assert_eq!(again.workers(), a.workers(), "case {case_no}: scheduling again changed the assignment");
    }
    assert!(scheduled > 300, "only {scheduled} cases scheduled");
}

#[test]
fn random_node_losses_move_only_the_lost_tasks() {
    let mut rng = Rng(0x1055);
    let mut checked = 0;
    for case_no in 0..600 {
        let mut case = random_case(&mut rng, case_no % 2 == 1);
        let Ok(before) = schedule(&case.layout, &case.nodes, None, case.workers, 1) else { continue };
        let hosting: Vec<&str> =
            case.nodes.iter().map(|n| n.id.as_str()).filter(|n| before.workers_on(n).count() > 0).collect();
        let victim = hosting[rng.range(0, hosting.len() as u32 - 1) as usize].to_string();
        let lost = tasks_on(&before, &victim);
        case.nodes.retain(|n| n.id != victim);
        let after = match schedule(&case.layout, &case.nodes, Some(&before), case.workers, 1) {
            Ok(a) => a,
            Err(e) => {
                check_error(&case, &e);
                continue;
            }
        };
        checked += 1;
        check_valid(&case, &after);
        assert_eq!(after.moved_since(&before), lost, "case {case_no}: lost {victim}\n{before}\n{after}");
        // With a free slot for every lost worker, the spread is whole again. (With fewer
        // workers it may not be: keeping every surviving task comes first.)
        if !case.constrained && after.workers().len() == before.workers().len() {
            check_spread(&case, &after);
        }
    }
    assert!(checked > 200, "only {checked} cases checked");
}

/// Changing the worker count moves no more tasks than the even spread needs: exactly as many
/// as the fewest any assignment over the same workers could (found by [`fewest_moves`]).
#[test]
fn random_rebalances_move_as_few_tasks_as_the_spread_needs() {
    let mut rng = Rng(0x4EBA_1A4C);
    let mut checked = 0;
    for case_no in 0..600 {
        let mut case = random_case(&mut rng, false);
        for n in &mut case.nodes {
            n.slots = 4;
        }
        let Ok(before) = schedule(&case.layout, &case.nodes, None, case.workers, 1) else { continue };
        let wanted = rng.range(1, 10);
        let after = schedule(&case.layout, &case.nodes, Some(&before), wanted, 1).unwrap();
        checked += 1;
        check_valid(&case, &after);
        check_spread(&case, &after);
        let (moved, fewest) = (after.moved_since(&before).len() as i64, fewest_moves(&before, &after));
        let workers = (before.workers().len(), after.workers().len());
        assert_eq!(moved, fewest, "case {case_no}: {workers:?} workers\n{before}\n{after}");
    }
    assert!(checked > 300, "only {checked} cases checked");
}

/// The fewest tasks that must move from `before` so that `after`'s workers (every node knowing
/// every kind) hold each component and all tasks evenly: a min-cost flow from components to
/// workers, where a worker's first `floor` tasks of each component and first `tasks / workers`
/// tasks in all are forced (a huge negative cost), and each task it held before and keeps
/// saves one.
fn fewest_moves(before: &Assignment, after: &Assignment) -> i64 {
    const FORCED: i64 = -1_000_000;
    let components = before.layout().components();
    let workers = after.workers();
    let (nc, nw) = (components.len(), workers.len() as u32);
    let held = component_counts(before);
    let held_by = |w: &WorkerAssignment, c: usize| {
        let old = before.workers().iter().position(|o| o.node == w.node && o.slot == w.slot);
        old.map_or(0, |o| held[o][c] as i64)
    };
    let tasks = i64::from(before.layout().task_count());
    let (sink, mut flow) = (1 + nc + workers.len(), MinCostFlow::new(2 + nc + workers.len()));
    let mut keeping = Vec::new();
    for (c, component) in components.iter().enumerate() {
        let p = component.parallelism;
        let (floor, ceil) = (i64::from(p / nw), i64::from(p.div_ceil(nw)));
        flow.add(0, 1 + c, i64::from(p), 0);
        for (w, worker) in workers.iter().enumerate() {
            let (from, to, had) = (1 + c, 1 + nc + w, held_by(worker, c));
            keeping.push(flow.add(from, to, floor.min(had), FORCED - 1));
            flow.add(from, to, floor - floor.min(had), FORCED);
            keeping.push(flow.add(from, to, (ceil.min(had) - floor).max(0), -1));
            flow.add(from, to, ceil - floor.max(ceil.min(had)), 0);
        }
    }
    let share = tasks / i64::from(nw);
    for w in 0..workers.len() {
        flow.add(1 + nc + w, sink, share, FORCED);
        flow.add(1 + nc + w, sink, 1, 0);
    }
    assert_eq!(flow.run(0, sink), tasks);
    tasks - keeping.iter().map(|&e| flow.used(e)).sum::<i64>()
}

/// Min-cost max-flow by successive shortest paths (Bellman-Ford): small graphs only.
struct MinCostFlow {
    /// `(to, capacity left, cost)`; edge `e ^ 1` is the reverse of `e`.
    edges: Vec<(usize, i64, i64)>,
    out: Vec<Vec<usize>>,
    capacity: Vec<i64>,
}

impl MinCostFlow {
    fn new(nodes: usize) -> Self {
        MinCostFlow { edges: Vec::new(), out: vec![Vec::new(); nodes], capacity: Vec::new() }
    }

    fn add(&mut self, from: usize, to: usize, capacity: i64, cost: i64) -> usize {
        let e = self.edges.len();
        self.edges.push((to, capacity, cost));
        self.edges.push((from, 0, -cost));
        self.capacity.extend([capacity, 0]);
        self.out[from].push(e);
        self.out[to].push(e + 1);
        e
    }

    fn used(&self, e: usize) -> i64 {
        self.capacity[e] - self.edges[e].1
    }

    /// Sends as much as it can from `source` to `sink` at the least cost; returns how much.
    fn run(&mut self, source: usize, sink: usize) -> i64 {
        let mut sent = 0;
        loop {
            let mut dist = vec![i64::MAX; self.out.len()];
            let mut via = vec![usize::MAX; self.out.len()];
            dist[source] = 0;
            let mut changed = true;
            while changed {
                changed = false;
                for node in 0..self.out.len() {
                    if dist[node] == i64::MAX {
                        continue;
                    }
                    for &e in &self.out[node] {
                        let (to, left, cost) = self.edges[e];
                        if left > 0 && dist[node] + cost < dist[to] {
                            (dist[to], via[to], changed) = (dist[node] + cost, e, true);
                        }
                    }
                }
            }
            if dist[sink] == i64::MAX {
                return sent;
            }
            let mut path = Vec::new();
            let mut node = sink;
            while node != source {
                path.push(via[node]);
                node = self.edges[via[node] ^ 1].0;
            }
            let push = path.iter().map(|&e| self.edges[e].1).min().expect("a path has edges");
            for e in path {
                self.edges[e].1 -= push;
                self.edges[e ^ 1].1 += push;
            }
            sent += push;
        }
    }
}
