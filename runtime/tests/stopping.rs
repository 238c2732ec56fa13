//! How runs end: a duration or a `Stopper` ends a topology whose spouts never finish, with the
//! matching `StopReason`; every task's lifecycle calls come once and in order, also when a run
//! is stopped.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use squall_runtime::prelude::*;
use squall_runtime::{LocalRun, RunReport, StopReason, TaskId};

/// A lifecycle call, as a task saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Call {
    Activate,
    NextTuple,
    Deactivate,
    Close,
    Execute,
    Flush,
    Cleanup,
}

/// Each task's calls in order; a run of `next_tuple`, `execute` or `flush` calls is kept as one.
type Calls = Arc<Mutex<BTreeMap<TaskId, Vec<Call>>>>;

fn record(calls: &Calls, task: TaskId, call: Call) {
    let mut calls = lock(calls);
    let task_calls = calls.entry(task).or_default();
    let repeats = matches!(call, Call::NextTuple | Call::Execute | Call::Flush);
    if !(repeats && task_calls.last() == Some(&call)) {
        task_calls.push(call);
    }
}

/// Emits tracked tuples forever, or `limit` of them.
struct Numbers {
    task: TaskId,
    next: u64,
    limit: Option<u64>,
    calls: Calls,
}

impl Spout for Numbers {
    fn next_tuple(&mut self, out: &mut SpoutOutput<'_>) {
        record(&self.calls, self.task, Call::NextTuple);
        if self.limit.is_none_or(|limit| self.next < limit) {
            out.emit_with_id(self.next, values![self.next]);
            self.next += 1;
        }
    }

    fn activate(&mut self) {
        record(&self.calls, self.task, Call::Activate);
    }

    fn deactivate(&mut self) {
        record(&self.calls, self.task, Call::Deactivate);
    }

    fn close(&mut self) {
        record(&self.calls, self.task, Call::Close);
    }

    fn is_done(&self) -> bool {
        self.limit == Some(self.next)
    }
}

struct Worker {
    task: TaskId,
    calls: Calls,
}

impl Bolt for Worker {
    fn execute(&mut self, _: &Tuple, _: &mut BoltOutput<'_>) -> Result<(), BoxError> {
        record(&self.calls, self.task, Call::Execute);
        Ok(())
    }

    fn flush(&mut self, _: &mut BoltOutput<'_>) -> Result<(), BoxError> {
        record(&self.calls, self.task, Call::Flush);
        Ok(())
    }

    fn cleanup(&mut self) {
        record(&self.calls, self.task, Call::Cleanup);
    }
}

/// Two `numbers` spout tasks emitting `limit` tuples each (forever when `None`) into three
/// `work` bolt tasks; returns the topology and where the tasks record their calls.
fn numbers_topology(limit: Option<u64>) -> (Topology, Calls, Calls) {
    let (spout_calls, bolt_calls): (Calls, Calls) = Default::default();
    let mut builder = TopologyBuilder::new("lifecycle");
    let calls = spout_calls.clone();
    builder.spout(
        "numbers",
        2,
        spout_fn(["n"], move |ctx| Numbers { task: ctx.task, next: 0, limit, calls: calls.clone() }),
    );
    let calls = bolt_calls.clone();
    builder
        .bolt("work", 3, bolt_fn(NO_FIELDS, move |ctx| Worker { task: ctx.task, calls: calls.clone() }))
        .shuffle("numbers");
    (builder.build().unwrap(), spout_calls, bolt_calls)
}

/// Each spout task was activated before its first `next_tuple`, then deactivated and closed
/// once, last.
fn assert_spout_lifecycle(calls: &Calls) {
    let calls = lock(calls);
    assert_eq!(calls.len(), 2, "spout tasks that made calls: {:?}", calls.keys());
    for (task, calls) in calls.iter() {
        use Call::*;
        assert_eq!(calls, &[Activate, NextTuple, Deactivate, Close], "spout task {task}");
    }
}

/// Each bolt task executed, then had its last `flush` and `cleanup` once, after its last
/// `execute`.
fn assert_bolt_lifecycle(calls: &Calls) {
    let calls = lock(calls);
    assert_eq!(calls.len(), 3, "bolt tasks that made calls: {:?}", calls.keys());
    for (task, calls) in calls.iter() {
        assert!(calls.contains(&Call::Execute), "bolt task {task} never executed: {calls:?}");
        assert_eq!(calls.iter().filter(|&&c| c == Call::Cleanup).count(), 1, "bolt task {task}: {calls:?}");
        assert!(
            calls.ends_with(&[Call::Flush, Call::Cleanup]),
            "bolt task {task} ended with {:?}",
            &calls[calls.len().saturating_sub(3)..]
        );
    }
}

/// The run's tuples all reached the bolt: whatever the spouts emitted before they stopped.
fn assert_emitted_tuples_executed(report: &RunReport) {
    let emitted = stats(report, "numbers").emitted;
    assert!(emitted > 0);
    assert_eq!(stats(report, "work").executed, emitted);
    assert_eq!(report.errors(), 0);
}

#[test]
fn a_run_whose_spouts_finish_completes_and_calls_cleanup_once_per_task() {
    let (topology, spout_calls, bolt_calls) = numbers_topology(Some(500));
    let report = run_to_completion(&topology);
    assert_eq!(stats(&report, "numbers").acked, 1000);
    assert_emitted_tuples_executed(&report);
    assert_spout_lifecycle(&spout_calls);
    assert_bolt_lifecycle(&bolt_calls);
}

#[test]
fn a_duration_ends_a_never_ending_run_with_reason_duration() {
    let duration = Duration::from_millis(300);
    let (topology, spout_calls, bolt_calls) = numbers_topology(None);
    let report = run_local(&topology, RunOptions { duration: Some(duration), ..RunOptions::default() }).unwrap();
    assert_eq!(report.reason, StopReason::Duration);
    assert!(report.elapsed >= duration, "ended after {:?}", report.elapsed);
    assert!(report.elapsed < duration + Duration::from_secs(5), "took {:?} to stop", report.elapsed);
    assert_emitted_tuples_executed(&report);
    assert_spout_lifecycle(&spout_calls);
    assert_bolt_lifecycle(&bolt_calls);
}

#[test]
fn a_stopper_ends_a_never_ending_run_with_reason_stopped() {
    let (topology, spout_calls, bolt_calls) = numbers_topology(None);
    let run = LocalRun::start(&topology, RunOptions::default()).unwrap();
    let executed = || run.metrics().component("work").unwrap().snapshot().executed;
    wait_until("the bolt executed 200 tuples", RUN_LIMIT, || executed() >= 200);
    // From another thread, as a Ctrl-C handler would.
    let stopper = run.stopper();
    let stopped_at = Instant::now();
    std::thread::spawn(move || stopper.stop()).join().unwrap();
    let report = run.wait();
    assert_eq!(report.reason, StopReason::Stopped);
    assert!(stopped_at.elapsed() < Duration::from_secs(5), "took {:?} to stop", stopped_at.elapsed());
    assert_emitted_tuples_executed(&report);
    assert_spout_lifecycle(&spout_calls);
    assert_bolt_lifecycle(&bolt_calls);
}
