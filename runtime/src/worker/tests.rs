//! Workers in one process, talking over real TCP on loopback (ephemeral ports): a word count
//! split over two and three workers gives exact counts with every spout tuple acked, and a
//! worker stopped mid-run loses trees that the spout replays until every sentence is counted
//! (at-least-once across workers).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::*;
use crate::collector::{BoltOutput, SpoutOutput};
use crate::component::{Bolt, BoxError, MessageId, Spout, bolt_fn, spout_fn};
use crate::config::TopologyConfig;
use crate::local::{ACKER_COMPONENT, StopReason};
use crate::scheduler::{LiveNode, schedule};
use crate::topology::TopologyBuilder;
use crate::tuple::Tuple;
use crate::value::Value;
use crate::values;

/// How long any wait in these tests may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(20);

const VOCABULARY: [&str; 12] =
    ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "and", "runs", "far", "away"];

/// Sentence `id`: one to seven words, from a rule, so the reference counts are known.
fn sentence(id: u64) -> Vec<&'static str> {
    let words = (id % 7 + 1) as usize;
    (0..words).map(|j| VOCABULARY[(id as usize * 31 + j * 17 + j * j) % VOCABULARY.len()]).collect()
}

fn reference_counts(sentences: u64) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for id in 0..sentences {
        for word in sentence(id) {
            *counts.entry(word.to_string()).or_default() += 1;
        }
    }
    counts
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Polls `done` until it holds, failing the test after [`PATIENCE`].
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "gave up waiting until {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// What the test sees of the run, shared by every worker's tasks.
#[derive(Default)]
struct Observed {
    /// The spout emits ids below this (the test raises it).
    gate: AtomicU64,
    emits: AtomicU64,
    fails: AtomicU64,
    acked: Mutex<BTreeSet<MessageId>>,
    /// Every (sentence, word position) that reached the collecting bolt.
    collected: Mutex<BTreeSet<(i64, i64)>>,
    /// The highest running count the collecting bolt saw per word.
    counts: Mutex<BTreeMap<String, u64>>,
}

impl Observed {
    fn acked(&self) -> usize {
        lock(&self.acked).len()
    }
}

/// Emits `id, line` for ids below the gate, tracked by id, and replays what fails.
struct Sentences {
    observed: Arc<Observed>,
    total: u64,
    next: u64,
    replay: VecDeque<MessageId>,
}

impl Spout for Sentences {
    fn next_tuple(&mut self, out: &mut SpoutOutput<'_>) {
        let id = match self.replay.pop_front() {
            Some(id) => id,
            None if self.next < self.observed.gate.load(Ordering::SeqCst).min(self.total) => {
                self.next += 1;
                self.next - 1
            }
            None => return,
        };
        self.observed.emits.fetch_add(1, Ordering::Relaxed);
        out.emit_with_id(id, values![id, sentence(id).join(" ")]);
    }

    fn ack(&mut self, id: MessageId) {
        lock(&self.observed.acked).insert(id);
    }

    fn fail(&mut self, id: MessageId) {
        self.observed.fails.fetch_add(1, Ordering::Relaxed);
        self.replay.push_back(id);
    }

    fn is_done(&self) -> bool {
        self.next == self.total && self.replay.is_empty()
    }
}

struct Split;

impl Bolt for Split {
    fn execute(&mut self, input: &Tuple, out: &mut BoltOutput<'_>) -> Result<(), BoxError> {
        let id = input.get("id").and_then(Value::as_int).ok_or("no id")?;
        let line = input.get_str("line").ok_or("no line")?;
        for (pos, word) in line.split_whitespace().enumerate() {
            out.emit(values![id, pos as i64, word]);
        }
        Ok(())
    }
}

struct Count(HashMap<String, u64>);

impl Bolt for Count {
    fn execute(&mut self, input: &Tuple, out: &mut BoltOutput<'_>) -> Result<(), BoxError> {
        let word = input.get_str("word").ok_or("no word")?;
        let n = self.0.entry(word.to_string()).or_default();
        *n += 1;
        let (id, pos) = (input.get("id").cloned().unwrap_or(Value::Null), input.get("pos").cloned());
        out.emit(values![id, pos.unwrap_or(Value::Null), word, *n]);
        Ok(())
    }
}

struct Collect(Arc<Observed>);

impl Bolt for Collect {
    fn execute(&mut self, input: &Tuple, _: &mut BoltOutput<'_>) -> Result<(), BoxError> {
        let int = |f: &str| input.get(f).and_then(Value::as_int).ok_or_else(|| format!("no {f}"));
        let (id, pos, n) = (int("id")?, int("pos")?, int("n")? as u64);
        let word = input.get_str("word").ok_or("no word")?;
        lock(&self.0.collected).insert((id, pos));
        let mut counts = lock(&self.0.counts);
        let best = counts.entry(word.to_string()).or_default();
        *best = (*best).max(n);
        Ok(())
    }
}

/// sentences (1) → split (2, shuffle) → count (3, fields `word`) → collect (1, global), with
/// two ackers.
fn word_count(sentences: u64, config: TopologyConfig, observed: &Arc<Observed>) -> Topology {
    let mut builder = TopologyBuilder::new("cluster-wordcount");
    builder.config(TopologyConfig { ackers: 2, ..config });
    let spout = {
        let observed = observed.clone();
        spout_fn(["id", "line"], move |_| Sentences {
            observed: observed.clone(),
            total: sentences,
            next: 0,
            replay: VecDeque::new(),
        })
    };
    builder.spout("sentences", 1, spout);
    builder.bolt("split", 2, bolt_fn(["id", "pos", "word"], |_| Split)).shuffle("sentences");
    builder.bolt("count", 3, bolt_fn(["id", "pos", "word", "n"], |_| Count(HashMap::new()))).fields("split", &["word"]);
    let collect = {
        let observed = observed.clone();
        bolt_fn(["unused"; 0], move |_| Collect(observed.clone()))
    };
    builder.bolt("collect", 1, collect).global("count");
    builder.build().expect("a valid topology")
}

/// Free loopback addresses, one per worker: bound, then released for the worker to bind.
fn free_addrs(n: usize) -> Vec<SocketAddr> {
    let listeners: Vec<TcpListener> = (0..n).map(|_| TcpListener::bind("127.0.0.1:0").expect("a free port")).collect();
    listeners.iter().map(|l| l.local_addr().expect("bound")).collect()
}

/// `n` workers, one per node `n0`, `n1`, ..., each on its slot 0.
struct Cluster {
    topology: Topology,
    assignment: Assignment,
    peers: BTreeMap<String, String>,
    workers: Vec<Option<WorkerRun>>,
    options: WorkerOptions,
}

impl Cluster {
    fn start(topology: Topology, n: usize, options: WorkerOptions) -> Cluster {
        let layout = TaskLayout::of_topology(&topology).expect("a layout");
        let nodes: Vec<LiveNode> = (0..n).map(|i| LiveNode::new(&format!("n{i}"), 1, ["rust"])).collect();
        let assignment = schedule(&layout, &nodes, None, n as u32, 1).expect("an assignment");
        assert_eq!(assignment.workers().len(), n, "one worker per node:\n{assignment}");
        let addrs = free_addrs(n);
        let peers: BTreeMap<String, String> =
            (0..n).map(|i| (worker_id(&format!("n{i}"), 0), addrs[i].to_string())).collect();
        let workers = (0..n)
            .map(|i| {
                let me = (format!("n{i}"), 0);
                let worker = WorkerRun::start(&topology, &assignment, (&me.0, 0), addrs[i], &peers, options.clone())
                    .expect("the worker starts");
                Some(worker)
            })
            .collect();
        Cluster { topology, assignment, peers, workers, options }
    }

    /// The index of the worker that runs `task`.
    fn worker_of(&self, task: TaskId) -> usize {
        let w = self.assignment.worker_of(task).expect("every task is assigned");
        w.node[1..].parse().expect("nodes are n0, n1, ...")
    }

    fn stop_worker(&mut self, i: usize) -> WorkerReport {
        self.workers[i].take().expect("running").stop()
    }

    /// Starts worker `i` again on a new port and tells the others where it is now.
    fn restart_worker(&mut self, i: usize) {
        let node = format!("n{i}");
        let listen = free_addrs(1)[0];
        self.peers.insert(worker_id(&node, 0), listen.to_string());
        let worker =
            WorkerRun::start(&self.topology, &self.assignment, (&node, 0), listen, &self.peers, self.options.clone())
                .expect("the worker starts again");
        self.workers[i] = Some(worker);
        for worker in self.workers.iter_mut().flatten() {
            worker.update(&self.assignment, &self.peers).expect("the same tasks, a new address");
        }
    }

    /// Stops workers `moved`, starts them again on new ports with `assignment`, and applies it
    /// to the others.
    fn reassign(&mut self, assignment: Assignment, moved: &[usize]) {
        for &i in moved {
            self.stop_worker(i);
        }
        self.assignment = assignment;
        for &i in moved {
            self.peers.insert(worker_id(&format!("n{i}"), 0), free_addrs(1)[0].to_string());
        }
        for &i in moved {
            let node = format!("n{i}");
            let listen = self.peers[&worker_id(&node, 0)].parse().expect("an address");
            let worker = WorkerRun::start(
                &self.topology,
                &self.assignment,
                (&node, 0),
                listen,
                &self.peers,
                self.options.clone(),
            )
            .expect("the worker starts with its new tasks");
            self.workers[i] = Some(worker);
        }
        for (i, worker) in self.workers.iter_mut().enumerate() {
            if !moved.contains(&i) {
                let worker = worker.as_mut().expect("running");
                worker.update(&self.assignment, &self.peers).expect("the same tasks, peers moved");
            }
        }
    }

    fn stop(self) -> Vec<WorkerReport> {
        self.workers.into_iter().flatten().map(WorkerRun::stop).collect()
    }
}

fn split_word_count_is_exact_and_every_tuple_acked(workers: usize) {
    const SENTENCES: u64 = 2000;
    let observed = Arc::new(Observed::default());
    observed.gate.store(u64::MAX, Ordering::SeqCst);
    let topology = word_count(SENTENCES, TopologyConfig::default(), &observed);
    let cluster = Cluster::start(topology, workers, WorkerOptions::default());
    // Each component's tasks are spread over the workers, so tuples, acks and verdicts all cross.
    for component in ["split", "count", ACKER_COMPONENT] {
        let task = cluster.assignment.layout().component(component).expect("declared").tasks();
        let on: BTreeSet<usize> = task.map(|t| cluster.worker_of(t)).collect();
        assert!(on.len() > 1, "{component} runs on one worker only:\n{}", cluster.assignment);
    }
    eventually("every sentence is acked", || observed.acked() as u64 == SENTENCES);

    let reports = cluster.stop();
    assert_eq!(observed.fails.load(Ordering::Relaxed), 0, "no tree failed");
    assert_eq!(observed.emits.load(Ordering::Relaxed), SENTENCES, "nothing was replayed");
    assert_eq!(*lock(&observed.counts), reference_counts(SENTENCES), "the counts are exact");
    let spout_worker = &reports.iter().find(|r| r.run.component("sentences").is_some()).expect("a spout").run;
    assert_eq!(spout_worker.component("sentences").unwrap().stats.acked, SENTENCES);
    for report in &reports {
        assert_eq!(report.run.reason, StopReason::Stopped);
        assert_eq!(report.run.errors(), 0, "{:?}", report.run.components);
        let WorkerStats { dropped, lost, misrouted, .. } = report.stats;
        assert_eq!((dropped, lost, misrouted), (0, 0, 0), "{:?}", report.stats);
    }
    assert!(reports.iter().all(|r| r.stats.received > 0), "a worker received nothing from its peers");
}

#[test]
fn a_word_count_over_two_workers_is_exact_with_every_tuple_acked() {
    split_word_count_is_exact_and_every_tuple_acked(2);
}

#[test]
fn a_word_count_over_three_workers_is_exact_with_every_tuple_acked() {
    split_word_count_is_exact_and_every_tuple_acked(3);
}

#[test]
fn a_worker_stopped_mid_run_loses_trees_that_are_replayed_until_every_sentence_is_counted() {
    const SENTENCES: u64 = 600;
    const FIRST: u64 = 200;
    let observed = Arc::new(Observed::default());
    observed.gate.store(FIRST, Ordering::SeqCst);
    let config = TopologyConfig {
        message_timeout: Duration::from_millis(500),
        max_spout_pending: 100,
        ..TopologyConfig::default()
    };
    let topology = word_count(SENTENCES, config, &observed);
    let options = WorkerOptions { send_timeout: Duration::from_millis(200), ..WorkerOptions::default() };
    let mut cluster = Cluster::start(topology, 3, options);
    // Any worker but the spout's: the collecting bolt's record is kept outside the workers.
    let victim = (cluster.worker_of(0) + 1) % 3;
    eventually("the first sentences are acked", || observed.acked() as u64 == FIRST);

    let stopped = cluster.stop_worker(victim);
    assert_eq!(stopped.run.reason, StopReason::Stopped);
    observed.gate.store(SENTENCES, Ordering::SeqCst);
    // Count tasks on the stopped worker get some words of nearly every sentence: their trees
    // time out and are replayed, again and again while the worker is away.
    eventually("trees through the stopped worker fail", || observed.fails.load(Ordering::Relaxed) >= 20);
    assert!(observed.acked() < SENTENCES as usize, "every sentence was acked with a worker away");

    cluster.restart_worker(victim);
    eventually("every sentence is acked", || observed.acked() as u64 == SENTENCES);
    let reports = cluster.stop();

    let collected = lock(&observed.collected);
    let missing: Vec<(u64, usize)> = (0..SENTENCES)
        .flat_map(|id| (0..sentence(id).len()).map(move |pos| (id, pos)))
        .filter(|&(id, pos)| !collected.contains(&(id as i64, pos as i64)))
        .take(10)
        .collect();
    assert!(missing.is_empty(), "words never counted (first 10, as sentence and position): {missing:?}");
    let emits = observed.emits.load(Ordering::Relaxed);
    assert!(emits > SENTENCES, "nothing was replayed ({emits} emits)");
    let spout_report = &reports.iter().find(|r| r.run.component("sentences").is_some()).expect("a spout").run;
    let stats = &spout_report.component("sentences").unwrap().stats;
    assert_eq!(stats.acked, SENTENCES, "each sentence acked exactly once");
    assert!(stats.timed_out > 0, "trees through the stopped worker timed out");
}

/// `assignment` with the tasks of workers `a` and `b` swapped.
fn swapped(assignment: &Assignment, a: &str, b: &str) -> Assignment {
    let mut json: serde_json::Value = serde_json::from_str(&assignment.to_json()).expect("JSON");
    let workers = json["workers"].as_array_mut().expect("workers");
    let index = |node: &str| workers.iter().position(|w| w["node"] == node).expect("a worker on the node");
    let (i, j) = (index(a), index(b));
    let tasks = workers[i]["tasks"].take();
    workers[i]["tasks"] = workers[j]["tasks"].take();
    workers[j]["tasks"] = tasks;
    Assignment::from_json(json.to_string().as_bytes()).expect("a valid assignment")
}

#[test]
fn tasks_that_move_between_other_workers_are_followed_without_losing_a_tree() {
    const SENTENCES: u64 = 1000;
    const FIRST: u64 = 300;
    let observed = Arc::new(Observed::default());
    observed.gate.store(FIRST, Ordering::SeqCst);
    let topology = word_count(SENTENCES, TopologyConfig::default(), &observed);
    let mut cluster = Cluster::start(topology, 3, WorkerOptions::default());
    let stays = cluster.worker_of(0);
    let moved: Vec<usize> = (0..3).filter(|&i| i != stays).collect();
    eventually("the first sentences are acked", || observed.acked() as u64 == FIRST);

    // No tree is in flight: every message after this follows the new assignment.
    let before = cluster.assignment.clone();
    let after = swapped(&before, &format!("n{}", moved[0]), &format!("n{}", moved[1]));
    assert_ne!(before.tasks_of(&format!("n{}", moved[0]), 0), after.tasks_of(&format!("n{}", moved[0]), 0));
    cluster.reassign(after, &moved);
    // A worker whose own tasks change is restarted, not updated.
    let moved_worker = cluster.workers[moved[0]].as_mut().expect("running");
    let refused = moved_worker.update(&before, &cluster.peers);
    assert!(matches!(refused, Err(WorkerError::TasksChanged(_))), "{refused:?}");

    observed.gate.store(SENTENCES, Ordering::SeqCst);
    eventually("every sentence is acked", || observed.acked() as u64 == SENTENCES);
    let reports = cluster.stop();
    assert_eq!(observed.fails.load(Ordering::Relaxed), 0, "no tree failed");
    assert_eq!(observed.emits.load(Ordering::Relaxed), SENTENCES, "nothing was replayed");
    let collected = lock(&observed.collected);
    let words: usize = (0..SENTENCES).map(|id| sentence(id).len()).sum();
    assert_eq!(collected.len(), words, "every word of every sentence was counted");
    let stayed = &reports.iter().find(|r| r.run.component("sentences").is_some()).expect("the spout's worker");
    assert_eq!((stayed.stats.dropped, stayed.stats.misrouted), (0, 0), "{:?}", stayed.stats);
}

#[test]
fn a_worker_that_cannot_start_says_why() {
    let observed = Arc::new(Observed::default());
    let topology = word_count(10, TopologyConfig::default(), &observed);
    let layout = TaskLayout::of_topology(&topology).expect("a layout");
    let nodes = [LiveNode::new("n0", 1, ["rust"]), LiveNode::new("n1", 1, ["rust"])];
    let assignment = schedule(&layout, &nodes, None, 2, 1).expect("an assignment");
    let taken = TcpListener::bind("127.0.0.1:0").expect("a free port");
    let listen = free_addrs(1)[0];
    let peers: BTreeMap<String, String> =
        [("n0-0", listen.to_string()), ("n1-0", taken.local_addr().unwrap().to_string())]
            .map(|(w, a)| (w.to_string(), a))
            .into();
    let start = |topology: &Topology, me: (&str, u32), listen, peers: &BTreeMap<String, String>| {
        WorkerRun::start(topology, &assignment, me, listen, peers, WorkerOptions::default()).map(|_| ())
    };

    let err = start(&topology, ("n2", 0), listen, &peers).unwrap_err();
    assert!(matches!(err, WorkerError::NotAssigned { .. }), "{err}");
    let err = start(&topology, ("n0", 0), listen, &BTreeMap::new()).unwrap_err();
    assert!(matches!(&err, WorkerError::NoAddress(w) if w == "n1-0"), "{err}");
    let other = word_count(10, TopologyConfig { ackers: 1, acking: false, ..TopologyConfig::default() }, &observed);
    let err = start(&other, ("n0", 0), listen, &peers).unwrap_err();
    assert!(matches!(err, WorkerError::LayoutMismatch(_)), "{err}");
    let err = start(&topology, ("n1", 0), taken.local_addr().unwrap(), &peers).unwrap_err();
    assert!(matches!(err, WorkerError::Listen { .. }), "{err}");
    assert!(err.to_string().contains(&taken.local_addr().unwrap().to_string()), "{err}");
}

/// Tuples per second from a spout on one worker through bolts on the other (acking off):
/// `cargo test --release -p squall-runtime --lib worker::tests::throughput -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a check"]
fn throughput_across_two_workers() {
    struct Endless(u64);
    impl Spout for Endless {
        fn next_tuple(&mut self, out: &mut SpoutOutput<'_>) {
            self.0 += 1;
            out.emit(values![self.0, VOCABULARY[(self.0 % 12) as usize]]);
        }
    }
    struct Sink;
    impl Bolt for Sink {
        fn execute(&mut self, _: &Tuple, _: &mut BoltOutput<'_>) -> Result<(), BoxError> {
            Ok(())
        }
    }
    let mut builder = TopologyBuilder::new("cluster-throughput");
    builder.config(TopologyConfig { acking: false, batch_size: 1024, ..TopologyConfig::default() });
    builder.spout("numbers", 1, spout_fn(["n", "word"], |_| Endless(0)));
    builder.bolt("sink", 1, bolt_fn(["unused"; 0], |_| Sink)).fields("numbers", &["word"]);
    let topology = builder.build().expect("a valid topology");
    let layout = TaskLayout::of_topology(&topology).expect("a layout");
    let nodes = [LiveNode::new("n0", 1, ["rust"]), LiveNode::new("n1", 1, ["rust"])];
    let assignment = schedule(&layout, &nodes, None, 2, 1).expect("an assignment");
    assert_ne!(assignment.worker_of(0), assignment.worker_of(1), "spout and sink on different workers");
    let addrs = free_addrs(2);
    let peers: BTreeMap<String, String> =
        [("n0-0", addrs[0]), ("n1-0", addrs[1])].map(|(w, a)| (w.to_string(), a.to_string())).into();
    let options = WorkerOptions { duration: Some(Duration::from_secs(3)), ..WorkerOptions::default() };
    let workers: Vec<WorkerRun> = (0..2)
        .map(|i| {
            let node = format!("n{i}");
            WorkerRun::start(&topology, &assignment, (&node, 0), addrs[i], &peers, options.clone()).expect("starts")
        })
        .collect();
    let reports: Vec<WorkerReport> = workers.into_iter().map(WorkerRun::wait).collect();
    let sink = reports.iter().find_map(|r| r.run.component("sink")).expect("a sink");
    let seconds = reports[0].run.elapsed.as_secs_f64();
    println!(
        "{:.0} tuples/s across two workers ({} tuples in {seconds:.1} s)",
        sink.stats.executed as f64 / seconds,
        sink.stats.executed
    );
}
