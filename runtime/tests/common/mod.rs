//! What the integration tests share: spouts that log every emit and verdict, a bolt made from a
//! closure, a sink that records what each task received, and a run that must complete.
//!
//! Each test file compiles this module into its own binary and uses only part of it.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use squall_runtime::prelude::*;
use squall_runtime::{RunReport, StopReason, SummaryTable, TaskId};

/// Far longer than any run of this suite takes: a run still going after this is reported as a
/// failure instead of leaving the test hanging.
pub const RUN_LIMIT: Duration = Duration::from_secs(60);

/// The fields of a bolt that emits nothing.
pub const NO_FIELDS: [&str; 0] = [];

/// Locks `m`, also after a panicking bolt poisoned it (those tests panic on purpose).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `topology` and checks that it ended by completing (every spout done, no tree in flight).
pub fn run_to_completion(topology: &Topology) -> RunReport {
    let report = run_local(topology, RunOptions { duration: Some(RUN_LIMIT), ..RunOptions::default() })
        .expect("every factory succeeds");
    assert_eq!(report.reason, StopReason::Completed, "the run did not complete:\n{}", SummaryTable(&report.components));
    report
}

/// The stats of component `id` in `report`.
pub fn stats<'a>(report: &'a RunReport, id: &str) -> &'a squall_runtime::ComponentStats {
    &report.component(id).unwrap_or_else(|| panic!("no component '{id}' in the report")).stats
}

/// Polls `condition` until it holds, failing the test if it does not within `limit`.
pub fn wait_until(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(Instant::now() < deadline, "gave up after {limit:?} waiting until {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The integer field `name` of `t`, or an error that names it.
pub fn int(t: &Tuple, name: &str) -> Result<i64, BoxError> {
    t.get(name).and_then(Value::as_int).ok_or_else(|| format!("field `{name}` is not an integer in {t:?}").into())
}

/// A bolt whose `execute` is a closure, for topologies written inline in tests.
pub struct ExecuteFn<F>(F);

/// A bolt that runs `f` on each input.
pub fn execute_fn<F>(f: F) -> ExecuteFn<F>
where
    F: FnMut(&Tuple, &mut BoltOutput<'_>) -> Result<(), BoxError> + Send + 'static,
{
    ExecuteFn(f)
}

impl<F> Bolt for ExecuteFn<F>
where
    F: FnMut(&Tuple, &mut BoltOutput<'_>) -> Result<(), BoxError> + Send + 'static,
{
    fn execute(&mut self, input: &Tuple, out: &mut BoltOutput<'_>) -> Result<(), BoxError> {
        (self.0)(input, out)
    }
}

/// A spout that calls `emit(i, out)` once for each `i` in `0..count`, then is done.
pub struct CountingSpout<F> {
    next: u64,
    count: u64,
    emit: F,
}

/// A spout that emits through `emit` for `0..count`.
pub fn counting_spout<F>(count: u64, emit: F) -> CountingSpout<F>
where
    F: FnMut(u64, &mut SpoutOutput<'_>) + Send + 'static,
{
    CountingSpout { next: 0, count, emit }
}

impl<F> Spout for CountingSpout<F>
where
    F: FnMut(u64, &mut SpoutOutput<'_>) + Send + 'static,
{
    fn next_tuple(&mut self, out: &mut SpoutOutput<'_>) {
        if self.next < self.count {
            (self.emit)(self.next, out);
            self.next += 1;
        }
    }

    fn is_done(&self) -> bool {
        self.next == self.count
    }
}

/// What every task of a [`ReplayingSpout`] saw, per message id.
#[derive(Debug, Default)]
pub struct SpoutLog {
    /// How many times each id was emitted.
    pub emits: BTreeMap<MessageId, u32>,
    /// How many times each id was acked.
    pub acks: BTreeMap<MessageId, u32>,
    /// How many times each id was failed.
    pub fails: BTreeMap<MessageId, u32>,
    /// Per task: the most trees in flight just after a `next_tuple` emitted.
    pub max_in_flight: BTreeMap<TaskId, usize>,
    /// Per task: the most trees still without a verdict when a `next_tuple` began.
    pub max_unsettled_at_next_tuple: BTreeMap<TaskId, usize>,
}

impl SpoutLog {
    /// Checks that each of the ids `0..count` was acked exactly once and no other id was.
    pub fn assert_every_id_acked_once(&self, count: u64) {
        let wrong: Vec<_> = (0..count).filter(|id| self.acks.get(id) != Some(&1)).take(10).collect();
        assert!(wrong.is_empty(), "ids not acked exactly once (first 10): {wrong:?}");
        assert_eq!(self.acks.len() as u64, count, "acks for ids the spout never emitted");
    }

    /// Checks that every emit got exactly one verdict, an ack or a fail.
    pub fn assert_one_verdict_per_emit(&self) {
        for (id, &emits) in &self.emits {
            let verdicts = self.acks.get(id).copied().unwrap_or(0) + self.fails.get(id).copied().unwrap_or(0);
            assert_eq!(verdicts, emits, "id {id}: {emits} emits but {verdicts} acks and fails");
        }
    }

    /// The ids emitted more than once.
    pub fn replayed(&self) -> BTreeSet<MessageId> {
        self.emits.iter().filter(|&(_, &n)| n > 1).map(|(&id, _)| id).collect()
    }

    /// The ids failed at least once.
    pub fn failed(&self) -> BTreeSet<MessageId> {
        self.fails.keys().copied().collect()
    }

    /// How many fails there were in all.
    pub fn total_fails(&self) -> u64 {
        self.fails.values().map(|&n| u64::from(n)).sum()
    }
}

/// Makes the values of a [`ReplayingSpout`] tuple from its id and attempt (0 for the first emit).
pub type MakeValues = Arc<dyn Fn(MessageId, u32) -> Values + Send + Sync>;

/// Emits the ids `0..count` (task `i` of `n` those equal to `i` modulo `n`), each tracked, and
/// emits again every id whose tree fails, before any new one. Logs everything in a [`SpoutLog`].
pub struct ReplayingSpout {
    next: u64,
    step: u64,
    count: u64,
    replays: VecDeque<MessageId>,
    attempts: HashMap<MessageId, u32>,
    in_flight: usize,
    task: TaskId,
    make: MakeValues,
    log: Arc<Mutex<SpoutLog>>,
}

impl Spout for ReplayingSpout {
    fn next_tuple(&mut self, out: &mut SpoutOutput<'_>) {
        let mut log = lock(&self.log);
        let unsettled = log.max_unsettled_at_next_tuple.entry(self.task).or_default();
        *unsettled = (*unsettled).max(self.in_flight);
        let id = match self.replays.pop_front() {
            Some(id) => id,
            None if self.next < self.count => {
                self.next += self.step;
                self.next - self.step
            }
            None => return,
        };
        let attempt = self.attempts.entry(id).or_default();
        *log.emits.entry(id).or_default() += 1;
        // Counted before the emit: with acking off, `ack` is called as soon as this returns.
        self.in_flight += 1;
        let max = log.max_in_flight.entry(self.task).or_default();
        *max = (*max).max(self.in_flight);
        drop(log);
        out.emit_with_id(id, (self.make)(id, *attempt));
        *attempt += 1;
    }

    fn ack(&mut self, id: MessageId) {
        self.in_flight -= 1;
        *lock(&self.log).acks.entry(id).or_default() += 1;
    }

    fn fail(&mut self, id: MessageId) {
        self.in_flight -= 1;
        *lock(&self.log).fails.entry(id).or_default() += 1;
        self.replays.push_back(id);
    }

    fn is_done(&self) -> bool {
        self.next >= self.count && self.replays.is_empty()
    }
}

/// A [`ReplayingSpout`] of `count` ids emitting `[id, attempt]`.
pub fn replaying_spout(count: u64, log: &Arc<Mutex<SpoutLog>>) -> Arc<dyn SpoutFactory> {
    replaying_spout_with(count, ["id", "attempt"], Arc::new(|id, attempt| values![id, attempt]), log)
}

/// A [`ReplayingSpout`] of `count` ids emitting `make(id, attempt)` on a stream with `fields`.
pub fn replaying_spout_with(
    count: u64,
    fields: impl Into<Fields>,
    make: MakeValues,
    log: &Arc<Mutex<SpoutLog>>,
) -> Arc<dyn SpoutFactory> {
    let log = log.clone();
    spout_fn(fields, move |ctx| ReplayingSpout {
        next: u64::from(ctx.task_index),
        step: u64::from(ctx.parallelism),
        count,
        replays: VecDeque::new(),
        attempts: HashMap::new(),
        in_flight: 0,
        task: ctx.task,
        make: make.clone(),
        log: log.clone(),
    })
}

/// What the tasks of a [`recording_sink`] received.
#[derive(Debug, Default)]
pub struct Received {
    /// The tasks the factory made, received something or not.
    pub tasks: BTreeSet<TaskId>,
    /// Each input, with the task that executed it, in the order each task executed them.
    pub tuples: Vec<(TaskId, Tuple)>,
}

impl Received {
    /// The integer field `name` of the tuples each task received, every task listed.
    pub fn ints_by_task(&self, name: &str) -> BTreeMap<TaskId, Vec<i64>> {
        let mut by_task: BTreeMap<TaskId, Vec<i64>> = self.tasks.iter().map(|&t| (t, Vec::new())).collect();
        for (task, t) in &self.tuples {
            by_task.entry(*task).or_default().push(int(t, name).expect("an integer field"));
        }
        by_task
    }

    /// How many times each value of the integer field `name` was received, over all tasks.
    pub fn int_counts(&self, name: &str) -> BTreeMap<i64, usize> {
        let mut counts = BTreeMap::new();
        for (_, t) in &self.tuples {
            *counts.entry(int(t, name).expect("an integer field")).or_default() += 1;
        }
        counts
    }
}

/// A bolt that records every input with the task that received it, and emits nothing.
pub fn recording_sink(received: &Arc<Mutex<Received>>) -> Arc<dyn BoltFactory> {
    let received = received.clone();
    bolt_fn(NO_FIELDS, move |ctx| {
        let task = ctx.task;
        lock(&received).tasks.insert(task);
        let received = received.clone();
        execute_fn(move |t, _| {
            lock(&received).tuples.push((task, t.clone()));
            Ok(())
        })
    })
}
