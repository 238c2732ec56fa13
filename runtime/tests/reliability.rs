//! At-least-once processing: a spout tuple whose tree fails, times out or panics is failed back
//! to its spout and replayed until it is acked; every emit gets exactly one verdict; the spout
//! never has more than `max_spout_pending` trees in flight; with acking off, `ack` comes at once.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use squall_runtime::local::ACKER_COMPONENT;
use squall_runtime::metrics::ComponentRole;
use squall_runtime::prelude::*;
use squall_runtime::spout_fn_streams;

fn new_log() -> Arc<Mutex<SpoutLog>> {
    Arc::new(Mutex::new(SpoutLog::default()))
}

#[test]
fn tuples_a_bolt_fails_are_replayed_until_every_id_is_acked() {
    const COUNT: u64 = 600;
    const EVERY: u64 = 7;
    let log = new_log();
    let errors = Arc::new(AtomicU64::new(0));
    let mut builder = TopologyBuilder::new("failing");
    builder.spout("src", 2, replaying_spout(COUNT, &log));
    let flaky = {
        let errors = errors.clone();
        bolt_fn(NO_FIELDS, move |_| {
            let errors = errors.clone();
            let mut received = 0u64;
            execute_fn(move |t, _| {
                received += 1;
                if received % EVERY == 0 {
                    errors.fetch_add(1, Ordering::Relaxed);
                    return Err(format!("deliberate failure of id {}", int(t, "id")?).into());
                }
                Ok(())
            })
        })
    };
    builder.bolt("flaky", 3, flaky).shuffle("src");
    let report = run_to_completion(&builder.build().unwrap());

    let log = lock(&log);
    log.assert_every_id_acked_once(COUNT);
    log.assert_one_verdict_per_emit();
    assert!(!log.failed().is_empty(), "no tree failed");
    assert_eq!(log.replayed(), log.failed(), "exactly the failed ids were emitted again");
    let errors = errors.load(Ordering::Relaxed);
    let spout = stats(&report, "src");
    assert_eq!((spout.acked, spout.failed, spout.timed_out), (COUNT, errors, 0));
    assert_eq!(log.total_fails(), errors, "each failed tuple fails its tree once");
    let bolt = stats(&report, "flaky");
    assert_eq!((bolt.failed, bolt.errors), (errors, errors));
    assert!(bolt.last_errors.iter().all(|e| e.contains("deliberate failure of id")), "{:?}", bolt.last_errors);
}

#[test]
fn a_bolt_panic_fails_the_tuple_which_is_replayed_and_the_run_goes_on() {
    const COUNT: u64 = 300;
    let log = new_log();
    let panics = Arc::new(AtomicU64::new(0));
    let instances = Arc::new(AtomicU64::new(0));
    let mut builder = TopologyBuilder::new("panicking");
    builder.spout("src", 1, replaying_spout(COUNT, &log));
    let panicky = {
        let (panics, instances) = (panics.clone(), instances.clone());
        bolt_fn(NO_FIELDS, move |_| {
            instances.fetch_add(1, Ordering::Relaxed);
            let panics = panics.clone();
            execute_fn(move |t, _| {
                let id = int(t, "id")?;
                if id % 9 == 0 && int(t, "attempt")? == 0 {
                    panics.fetch_add(1, Ordering::Relaxed);
                    panic!("deliberate panic on id {id}");
                }
                Ok(())
            })
        })
    };
    builder.bolt("panicky", 2, panicky).shuffle("src");
    let report = run_to_completion(&builder.build().unwrap());

    let log = lock(&log);
    log.assert_every_id_acked_once(COUNT);
    log.assert_one_verdict_per_emit();
    let panicked: Vec<u64> = (0..COUNT).step_by(9).collect();
    assert_eq!(log.failed().into_iter().collect::<Vec<_>>(), panicked);
    assert_eq!(log.replayed().into_iter().collect::<Vec<_>>(), panicked);
    let panics = panics.load(Ordering::Relaxed);
    assert_eq!(panics, panicked.len() as u64);
    assert_eq!(instances.load(Ordering::Relaxed), 2, "a task's bolt was replaced after a panic");
    let bolt = stats(&report, "panicky");
    assert_eq!((bolt.errors, bolt.failed), (panics, panics));
    assert_eq!(report.errors(), panics);
    assert!(
        bolt.last_errors.iter().any(|e| e.contains("deliberate panic on id")),
        "the panic's message is not in the report: {:?}",
        bolt.last_errors
    );
}

#[test]
fn trees_a_bolt_drops_time_out_and_are_replayed() {
    const COUNT: u64 = 200;
    let log = new_log();
    let mut builder = TopologyBuilder::new("dropping");
    builder.config(TopologyConfig { message_timeout: Duration::from_millis(300), ..TopologyConfig::default() });
    builder.spout("src", 1, replaying_spout(COUNT, &log));
    // The first attempt of every tenth id is taken in charge and never acked nor failed.
    let dropping = bolt_fn(NO_FIELDS, |_| {
        execute_fn(|t, out| {
            if int(t, "id")? % 10 == 0 && int(t, "attempt")? == 0 {
                let _forgotten = out.defer();
            }
            Ok(())
        })
    });
    builder.bolt("drop", 3, dropping).shuffle("src");
    let report = run_to_completion(&builder.build().unwrap());

    let log = lock(&log);
    log.assert_every_id_acked_once(COUNT);
    log.assert_one_verdict_per_emit();
    let dropped: Vec<u64> = (0..COUNT).step_by(10).collect();
    for id in &dropped {
        assert!(log.fails.contains_key(id), "dropped id {id} was never failed");
    }
    let spout = stats(&report, "src");
    // Only timeouts fail trees here; a tree slower than 300 ms under load may time out too.
    assert!(spout.timed_out >= dropped.len() as u64, "{} timed out", spout.timed_out);
    assert_eq!(spout.failed, spout.timed_out, "every failure was a timeout");
    assert_eq!(spout.failed, log.total_fails());
    assert_eq!(spout.acked, COUNT);
    assert_eq!(report.errors(), 0);
}

/// Sentences of two to five words are split, checked and collected (three ackers); `check` fails the second
/// word of the first attempt of every fifth sentence, so the tree of that sentence fails while
/// its other words go through.
#[test]
fn a_failure_deep_in_a_tree_replays_the_whole_spout_tuple() {
    const COUNT: u64 = 400;
    let words = |id: u64| 2 + id % 4;
    let log = new_log();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut builder = TopologyBuilder::new("tree");
    // Several ackers: each tree is tracked by one of them, whoever reports on it.
    builder.config(TopologyConfig { ackers: 3, ..TopologyConfig::default() });
    builder.spout("src", 2, replaying_spout(COUNT, &log));
    let split = bolt_fn(["id", "attempt", "pos"], move |_| {
        execute_fn(move |t, out| {
            let (id, attempt) = (int(t, "id")?, int(t, "attempt")?);
            for pos in 0..words(id as u64) {
                out.emit(values![id, attempt, pos]);
            }
            Ok(())
        })
    });
    builder.bolt("split", 2, split).shuffle("src");
    let check = bolt_fn(["id", "attempt", "pos"], |_| {
        execute_fn(|t, out| {
            let (id, attempt, pos) = (int(t, "id")?, int(t, "attempt")?, int(t, "pos")?);
            if id % 5 == 0 && attempt == 0 && pos == 1 {
                return Err(format!("deliberate failure of word {pos} of sentence {id}").into());
            }
            out.emit(values![id, attempt, pos]);
            Ok(())
        })
    });
    builder.bolt("check", 3, check).shuffle("split");
    let collect = {
        let seen = seen.clone();
        bolt_fn(NO_FIELDS, move |_| {
            let seen = seen.clone();
            execute_fn(move |t, _| {
                lock(&seen).push((int(t, "id")? as u64, int(t, "attempt")?, int(t, "pos")? as u64));
                Ok(())
            })
        })
    };
    builder.bolt("collect", 2, collect).fields("check", &["id"]);
    let report = run_to_completion(&builder.build().unwrap());

    let log = lock(&log);
    log.assert_every_id_acked_once(COUNT);
    log.assert_one_verdict_per_emit();
    let failing: Vec<u64> = (0..COUNT).step_by(5).collect();
    assert_eq!(log.failed().into_iter().collect::<Vec<_>>(), failing);
    assert_eq!(stats(&report, "src").failed, failing.len() as u64);
    assert_eq!(stats(&report, "check").failed, failing.len() as u64);

    // At least once: every word of every sentence reached the end, and a failed sentence was
    // replayed whole: its words that had gone through on the first attempt came again.
    let mut attempts: BTreeMap<(u64, u64), Vec<i64>> = BTreeMap::new();
    for &(id, attempt, pos) in lock(&seen).iter() {
        attempts.entry((id, pos)).or_default().push(attempt);
    }
    for id in 0..COUNT {
        for pos in 0..words(id) {
            let got = attempts.get(&(id, pos)).cloned().unwrap_or_default();
            assert!(!got.is_empty(), "word {pos} of sentence {id} never arrived");
            if id % 5 == 0 {
                assert!(got.iter().any(|&a| a > 0), "word {pos} of failed sentence {id} was not replayed: {got:?}");
            }
            if id % 5 == 0 && pos != 1 {
                assert!(got.contains(&0), "word {pos} of sentence {id} was lost on its first attempt: {got:?}");
            }
        }
    }
}

/// Holds its inputs and emits one tuple anchored to every ten of them (the rest when its task
/// flushes), then acks the inputs: the pattern of an aggregation or a batching sink.
struct Batcher {
    held: Vec<(Deferred, String)>,
}

impl Batcher {
    fn emit_held(&mut self, out: &mut BoltOutput<'_>) {
        if self.held.is_empty() {
            return;
        }
        let held = std::mem::take(&mut self.held);
        let members: Vec<&str> = held.iter().map(|(_, m)| m.as_str()).collect();
        let anchors: Vec<&Deferred> = held.iter().map(|(d, _)| d).collect();
        out.emit_anchored(&anchors, DEFAULT_STREAM, values![members.join(" ")]);
        for (deferred, _) in held {
            out.ack(deferred);
        }
    }
}

impl Bolt for Batcher {
    fn execute(&mut self, input: &Tuple, out: &mut BoltOutput<'_>) -> Result<(), BoxError> {
        let member = format!("{}:{}", int(input, "id")?, int(input, "attempt")?);
        self.held.push((out.defer(), member));
        if self.held.len() == 10 {
            self.emit_held(out);
        }
        Ok(())
    }

    fn flush(&mut self, out: &mut BoltOutput<'_>) -> Result<(), BoxError> {
        self.emit_held(out);
        Ok(())
    }
}

/// `judge` fails every batch holding the first attempt of an id divisible by 25: the trees of
/// all the batch's members fail, and only theirs.
#[test]
fn a_tuple_anchored_to_many_inputs_fails_the_trees_of_all_of_them() {
    const COUNT: u64 = 500;
    let log = new_log();
    let failed_batches = Arc::new(Mutex::new(Vec::<Vec<(u64, i64)>>::new()));
    let judged = Arc::new(Mutex::new(BTreeSet::new()));
    let mut builder = TopologyBuilder::new("batches");
    builder.spout("src", 1, replaying_spout(COUNT, &log));
    builder.bolt("batch", 2, bolt_fn(["members"], |_| Batcher { held: Vec::new() })).shuffle("src");
    let judge = {
        let (failed_batches, judged) = (failed_batches.clone(), judged.clone());
        bolt_fn(NO_FIELDS, move |_| {
            let (failed_batches, judged) = (failed_batches.clone(), judged.clone());
            execute_fn(move |t, _| {
                let members = t.get_str("members").ok_or("no members")?;
                let members: Vec<(u64, i64)> = members
                    .split(' ')
                    .map(|m| m.split_once(':').map(|(id, a)| (id.parse().unwrap(), a.parse().unwrap())).unwrap())
                    .collect();
                if members.iter().any(|&(id, attempt)| id % 25 == 0 && attempt == 0) {
                    lock(&failed_batches).push(members);
                    return Err("deliberate failure of a batch".into());
                }
                lock(&judged).extend(members.iter().map(|&(id, _)| id));
                Ok(())
            })
        })
    };
    builder.bolt("judge", 2, judge).shuffle("batch");
    let report = run_to_completion(&builder.build().unwrap());

    let log = lock(&log);
    log.assert_every_id_acked_once(COUNT);
    log.assert_one_verdict_per_emit();
    let members_of_failed: BTreeSet<u64> = lock(&failed_batches).iter().flatten().map(|&(id, _)| id).collect();
    let poisoned: BTreeSet<u64> = (0..COUNT).step_by(25).collect();
    assert!(members_of_failed.is_superset(&poisoned), "a poisoned id was never in a failed batch");
    assert_eq!(log.failed(), members_of_failed, "the failed trees are exactly those of the failed batches' members");
    assert_eq!(*lock(&judged), (0..COUNT).collect::<BTreeSet<_>>(), "an id never got through");
    assert_eq!(stats(&report, "src").failed, log.total_fails());
    let batch = stats(&report, "batch");
    assert_eq!(batch.acked, batch.executed, "every deferred input was acked");
}

#[test]
fn a_spout_task_never_has_more_than_max_spout_pending_trees_in_flight() {
    const COUNT: u64 = 240;
    const MAX_PENDING: u32 = 8;
    let log = new_log();
    let mut builder = TopologyBuilder::new("pending");
    builder.config(TopologyConfig { max_spout_pending: MAX_PENDING, ..TopologyConfig::default() });
    builder.spout("src", 2, replaying_spout(COUNT, &log));
    let slow = bolt_fn(NO_FIELDS, |_| {
        execute_fn(|_, _| {
            std::thread::sleep(Duration::from_millis(1));
            Ok(())
        })
    });
    builder.bolt("slow", 2, slow).shuffle("src");
    run_to_completion(&builder.build().unwrap());

    let log = lock(&log);
    log.assert_every_id_acked_once(COUNT);
    assert_eq!(log.max_in_flight.len(), 2);
    for (task, &max) in &log.max_in_flight {
        assert!(max <= MAX_PENDING as usize, "spout task {task} had {max} trees in flight");
        // The bolt is slow enough that the limit is reached: the check above is not vacuous.
        assert_eq!(max, MAX_PENDING as usize, "spout task {task} never reached the limit");
    }
}

/// Guarantee: raising `max_spout_pending` on a running topology lets its spouts have more
/// trees in flight from then on (as `squall config` does on a cluster).
#[test]
fn max_spout_pending_changed_while_running_takes_effect() {
    const COUNT: u64 = 100_000;
    let log = new_log();
    let mut builder = TopologyBuilder::new("pending-live");
    builder.config(TopologyConfig { max_spout_pending: 4, ..TopologyConfig::default() });
    builder.spout("src", 1, replaying_spout(COUNT, &log));
    let slow = bolt_fn(NO_FIELDS, |_| {
        execute_fn(|_, _| {
            std::thread::sleep(Duration::from_millis(1));
            Ok(())
        })
    });
    builder.bolt("slow", 1, slow).shuffle("src");
    let run = squall_runtime::LocalRun::start(&builder.build().unwrap(), RunOptions::default()).unwrap();
    let reached = |limit: usize| {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let max = lock(&log).max_in_flight.values().copied().max().unwrap_or(0);
            if max >= limit || std::time::Instant::now() > deadline {
                return max;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    assert_eq!(reached(4), 4);
    run.set_max_spout_pending(32);
    assert_eq!(reached(32), 32, "the new limit was never used");
    run.stopper().stop();
    run.wait();
    assert!(lock(&log).max_in_flight.values().all(|&m| m <= 32));
}

#[test]
fn with_acking_off_each_emitted_id_is_acked_at_once_and_no_acker_runs() {
    const COUNT: u64 = 500;
    let log = new_log();
    let received = Arc::new(Mutex::new(Received::default()));
    let mut builder = TopologyBuilder::new("no-acking");
    builder.config(TopologyConfig { acking: false, max_spout_pending: 4, ..TopologyConfig::default() });
    builder.spout("src", 2, replaying_spout(COUNT, &log));
    builder.bolt("sink", 2, recording_sink(&received)).shuffle("src");
    let report = run_to_completion(&builder.build().unwrap());

    let log = lock(&log);
    log.assert_every_id_acked_once(COUNT);
    assert_eq!(log.total_fails(), 0);
    for (task, &unsettled) in &log.max_unsettled_at_next_tuple {
        assert_eq!(unsettled, 0, "spout task {task} began a next_tuple before its last id was acked");
    }
    assert!(report.component(ACKER_COMPONENT).is_none());
    assert!(report.components.iter().all(|c| c.role != ComponentRole::Acker));
    assert_eq!(lock(&received).tuples.len() as u64, COUNT);
    assert_eq!(stats(&report, "src").emitted, COUNT);
}

/// Emits `count` tracked tuples on stream `unread`, and counts the acks it gets.
struct UnreadSpout {
    next: u64,
    count: u64,
    acks: Arc<AtomicU64>,
}

impl Spout for UnreadSpout {
    fn next_tuple(&mut self, out: &mut SpoutOutput<'_>) {
        if self.next < self.count {
            out.emit_to("unread", Some(self.next), values![self.next]);
            self.next += 1;
        }
    }

    fn ack(&mut self, _: MessageId) {
        self.acks.fetch_add(1, Ordering::Relaxed);
    }

    fn is_done(&self) -> bool {
        self.next == self.count
    }
}

/// The spout's `acked` count in the report is the number of `ack` calls, also for the ids acked
/// as soon as they are emitted: with acking off, and with acking on when no task subscribes.
#[test]
fn the_report_counts_acks_that_come_at_once() {
    const COUNT: u64 = 100;
    for acking in [false, true] {
        let acks = Arc::new(AtomicU64::new(0));
        let mut builder = TopologyBuilder::new("acked-at-once");
        builder.config(TopologyConfig { acking, ..TopologyConfig::default() });
        let streams = vec![StreamDecl::default_stream(["n"]), StreamDecl::named("unread", ["n"])];
        let spout_acks = acks.clone();
        let spout = spout_fn_streams(streams, move |_| UnreadSpout { next: 0, count: COUNT, acks: spout_acks.clone() });
        builder.spout("src", 1, spout);
        builder.bolt("sink", 1, recording_sink(&Default::default())).shuffle("src");
        let report = run_to_completion(&builder.build().unwrap());
        assert_eq!(acks.load(Ordering::Relaxed), COUNT, "acking {acking}: ack calls");
        assert_eq!(stats(&report, "src").acked, COUNT, "acking {acking}: the report's acked count");
    }
}

/// Emits `[n]` for n in 0..10 and panics, once, when asked for the fourth.
struct PanickySpout {
    next: i64,
    panicked: bool,
}

impl Spout for PanickySpout {
    fn next_tuple(&mut self, out: &mut SpoutOutput<'_>) {
        if self.next == 3 && !self.panicked {
            self.panicked = true;
            panic!("deliberate spout panic at {}", self.next);
        }
        if self.next < 10 {
            out.emit_with_id(self.next as u64, values![self.next]);
            self.next += 1;
        }
    }

    fn is_done(&self) -> bool {
        self.next == 10
    }
}

#[test]
fn a_spout_panic_is_reported_with_its_message_and_the_spout_goes_on() {
    let mut builder = TopologyBuilder::new("panicky-spout");
    builder.spout("src", 1, spout_fn(["n"], |_| PanickySpout { next: 0, panicked: false }));
    builder.bolt("sink", 1, recording_sink(&Default::default())).shuffle("src");
    let report = run_to_completion(&builder.build().unwrap());
    let spout = stats(&report, "src");
    assert_eq!((spout.acked, spout.errors), (10, 1));
    assert!(
        spout.last_errors.iter().any(|e| e.contains("deliberate spout panic at 3")),
        "the panic's message is not in the report: {:?}",
        spout.last_errors
    );
}

/// A spout that emits a tuple now and then and records the live arg changes it is given.
struct Reconfigurable {
    seen: Arc<Mutex<Vec<(String, String)>>>,
    next: u64,
}

impl Spout for Reconfigurable {
    fn next_tuple(&mut self, out: &mut SpoutOutput<'_>) {
        self.next += 1;
        out.emit_with_id(self.next, values![self.next as i64]);
        std::thread::sleep(Duration::from_millis(1));
    }

    fn reconfigure(&mut self, arg: &str, value: &str) -> Result<(), BoxError> {
        self.seen.lock().unwrap().push((arg.to_string(), value.to_string()));
        if arg == "bad" { Err("no such arg".into()) } else { Ok(()) }
    }
}

/// Guarantee: a component arg changed while the topology runs (as `squall config NAME
/// <component>.<arg>=<value>` does on a cluster) reaches every task of that component through
/// `reconfigure`, once per change, and no other component's; a refused change is reported.
#[test]
fn live_args_reach_each_task_of_their_component_once() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut builder = TopologyBuilder::new("live-args");
    let spout_seen = seen.clone();
    builder.spout("src", 2, spout_fn(["n"], move |_| Reconfigurable { seen: spout_seen.clone(), next: 0 }));
    builder.bolt("sink", 1, bolt_fn(NO_FIELDS, |_| execute_fn(|_, _| Ok(())))).shuffle("src");
    let run = squall_runtime::LocalRun::start(&builder.build().unwrap(), RunOptions::default()).unwrap();
    let settled = |count: usize| {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while seen.lock().unwrap().len() < count {
            assert!(std::time::Instant::now() < deadline, "changes not applied: {:?}", seen.lock().unwrap());
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    let live = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    run.set_live_args(live(&[("src.rate", "5"), ("srcx.rate", "1"), ("sink.rate", "2")]));
    settled(2);
    // Unchanged values are not given again; a new one is.
    run.set_live_args(live(&[("src.rate", "5"), ("src.bad", "1")]));
    settled(4);
    run.stopper().stop();
    let report = run.wait();
    let seen = seen.lock().unwrap().clone();
    let rate = ("rate".to_string(), "5".to_string());
    let bad = ("bad".to_string(), "1".to_string());
    assert_eq!(seen.iter().filter(|s| **s == rate).count(), 2, "{seen:?}");
    assert_eq!(seen.iter().filter(|s| **s == bad).count(), 2, "{seen:?}");
    assert_eq!(seen.len(), 4, "{seen:?}");
    let errors = &report.component("src").unwrap().stats;
    assert_eq!(errors.errors, 2);
    assert!(errors.last_errors.iter().all(|e| e.contains("cannot set src.bad to 1: no such arg")), "{errors:?}");
}
