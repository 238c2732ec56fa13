//! Coordination for user components against a real coordinator (a one-replica Squall store on
//! loopback): the fenced lock's mutual exclusion and tokens, leader election among a
//! component's tasks, and versioned znodes. Each contender has a session of its own, as tasks
//! on different workers do.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use squall_coordinator::replica::{Replica, ReplicaConfig};
use squall_runtime::{
    Coordination, CoordinationError, RunOptions, Spout, SpoutOutput, TaskContext, TopologyBuilder, run_local, spout_fn,
};

const DEADLINE: Duration = Duration::from_secs(10);

/// A one-replica store and the runtime it (and the sessions on it) run on.
struct Store {
    replica: Option<Replica>,
    runtime: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

impl Store {
    fn start() -> Store {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let replica = runtime.block_on(async {
            let replica = Replica::start(ReplicaConfig::standalone(dir.path(), "127.0.0.1:0".parse().unwrap())).await;
            let replica = replica.unwrap();
            assert!(replica.wait_ready(DEADLINE).await);
            replica
        });
        Store { replica: Some(replica), runtime, _dir: dir }
    }

    /// A new session for topology `topology`'s tasks.
    fn session(&self, topology: &str) -> Coordination {
        let addr = self.replica.as_ref().unwrap().client_addr().to_string();
        self.runtime.block_on(Coordination::connect(&addr, topology)).unwrap()
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Some(replica) = self.replica.take() {
            self.runtime.block_on(replica.shutdown());
        }
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn two_holders_of_a_lock_never_overlap_and_each_holds_a_larger_token() {
    let store = Store::start();
    let inside = Arc::new(AtomicBool::new(false));
    // (token, order of entry) for every acquisition.
    let held = Arc::new(Mutex::new(Vec::new()));
    let contenders: Vec<_> = (0..4)
        .map(|_| {
            let (session, inside, held) = (store.session("locking"), inside.clone(), held.clone());
            std::thread::spawn(move || {
                for _ in 0..15 {
                    let lock = session.lock("ledger").unwrap();
                    assert!(!inside.swap(true, Ordering::SeqCst), "two holders inside the lock at once");
                    held.lock().unwrap().push(lock.fencing_token());
                    std::thread::sleep(Duration::from_millis(2));
                    inside.store(false, Ordering::SeqCst);
                    lock.unlock().unwrap();
                }
            })
        })
        .collect();
    for contender in contenders {
        contender.join().unwrap();
    }
    let tokens = held.lock().unwrap().clone();
    assert_eq!(tokens.len(), 60);
    assert!(tokens.windows(2).all(|w| w[0] < w[1]), "tokens must grow with each holder: {tokens:?}");
}

#[test]
fn a_waiting_contender_gets_the_lock_when_it_is_let_go_and_try_lock_gives_up() {
    let store = Store::start();
    let (first, second) = (store.session("locking"), store.session("locking"));
    let lock = first.lock("compaction").unwrap();
    assert!(lock.is_held());
    let started = Instant::now();
    assert!(second.try_lock("compaction", Duration::from_millis(300)).unwrap().is_none());
    assert!(started.elapsed() >= Duration::from_millis(300));
    let first_token = lock.fencing_token();
    let waiter = std::thread::spawn(move || second.lock("compaction").unwrap().fencing_token());
    // Dropping the guard lets go too.
    drop(lock);
    let second_token = waiter.join().unwrap();
    assert!(second_token > first_token);
    // Other lock names are independent.
    let other = first.try_lock("other", Duration::from_millis(100)).unwrap();
    assert!(other.is_some());
    assert!(matches!(first.lock("a/b"), Err(CoordinationError::Store { .. })));
}

#[test]
fn exactly_one_task_leads_and_another_takes_over_when_it_leaves() {
    let store = Store::start();
    let sessions: Vec<_> = (0..3).map(|_| store.session("elections")).collect();
    let changes = Arc::new(AtomicUsize::new(0));
    let mut elections: Vec<_> = sessions
        .iter()
        .enumerate()
        .map(|(task, session)| {
            let election = session.elect("counter", task as u32).unwrap();
            let changes = changes.clone();
            election.on_change(move |_| {
                changes.fetch_add(1, Ordering::SeqCst);
            });
            Some(election)
        })
        .collect();
    let leaders = |elections: &[Option<squall_runtime::LeaderElection>]| {
        elections.iter().flatten().filter(|e| e.is_leader()).count()
    };
    assert_eq!(leaders(&elections), 1, "the first to enter leads at once");
    let first = elections.iter().position(|e| e.as_ref().is_some_and(|e| e.is_leader())).unwrap();
    let first_term = elections[first].as_ref().unwrap().term().unwrap();
    // Other component, other election.
    let other = sessions[1].elect("writer", 1).unwrap();
    assert!(other.is_leader());

    elections[first] = None;
    wait_until("another task leads", || leaders(&elections) == 1);
    let next = elections.iter().flatten().find(|e| e.is_leader()).unwrap();
    assert!(next.term().unwrap() > first_term);
    wait_until("the new leader's callback ran", || changes.load(Ordering::SeqCst) >= 1);
    // Nobody else changed: one task leads, the other still waits.
    assert_eq!(elections.iter().flatten().filter(|e| !e.is_leader()).count(), 1);
}

#[test]
fn versioned_writes_refuse_a_writer_who_read_an_older_version() {
    let store = Store::start();
    let (a, b) = (store.session("offsets"), store.session("offsets"));
    let path = "/squall/offsets/offsets/spout/topic/0";
    assert_eq!(a.read(path).unwrap(), None);
    assert_eq!(a.write(path, br#"{"offset":10}"#, None).unwrap(), 0);
    assert!(matches!(b.write(path, b"x", None), Err(CoordinationError::Conflict { .. })));
    assert_eq!(b.write(path, br#"{"offset":20}"#, Some(0)).unwrap(), 1);
    assert!(matches!(a.write(path, br#"{"offset":11}"#, Some(0)), Err(CoordinationError::Conflict { .. })));
    assert_eq!(a.read(path).unwrap(), Some((br#"{"offset":20}"#.to_vec(), 1)));
}

/// Records, per call, the task if it found itself leader; done once every task of its component
/// made `rounds` calls (a task that finished first and left would hand the lead on, rightly).
struct LeaderProbe {
    ctx: TaskContext,
    rounds: u32,
    led: Arc<Mutex<Vec<u32>>>,
    finished: Arc<AtomicU32>,
}

impl Spout for LeaderProbe {
    fn next_tuple(&mut self, _: &mut SpoutOutput<'_>) {
        if self.rounds > 0 {
            self.rounds -= 1;
            if self.ctx.is_leader() {
                self.led.lock().unwrap().push(self.ctx.task_index);
            }
            if self.rounds == 0 {
                self.finished.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    fn is_done(&self) -> bool {
        self.finished.load(Ordering::SeqCst) == self.ctx.parallelism
    }
}

#[test]
fn tasks_of_a_topology_elect_one_leader_through_their_context() {
    let store = Store::start();
    let led = Arc::new(Mutex::new(Vec::new()));
    let mut builder = TopologyBuilder::new("probe");
    let (probes, finished) = (led.clone(), Arc::new(AtomicU32::new(0)));
    builder.spout(
        "probe",
        3,
        spout_fn(["x"], move |ctx| LeaderProbe {
            ctx: ctx.clone(),
            rounds: 50,
            led: probes.clone(),
            finished: finished.clone(),
        }),
    );
    let options = RunOptions { duration: Some(DEADLINE), coordination: Some(store.session("probe")) };
    run_local(&builder.build().unwrap(), options).unwrap();
    let led = led.lock().unwrap();
    assert!(!led.is_empty(), "some task led");
    assert!(led.iter().all(|&t| t == led[0]), "only one task led: {led:?}");
    assert!(!TaskContext::standalone("t", "c", 0, 1).is_leader(), "without a store nobody leads");
}
