//! Linearizability of compare-and-set on znodes while the leader is lost.
//!
//! Clients run random reads (`sync` + `getData`) and compare-and-sets (`setData` with an
//! expected version) on a few znodes of a three-replica ensemble, the leader is shut down half
//! way through, and the recorded history of each znode is checked against a versioned register
//! with a Wing–Gong–Lowe checker ([`is_linearizable`]). Znodes are independent objects, so each
//! is checked on its own.
//!
//! A write whose outcome the client never learned (connection lost, timed out) may have been
//! applied at any point after it was invoked, or never: the checker treats it as an operation
//! that never returns. A read that never returned changes nothing and is left out.
//!
//! Reads are preceded by `sync`: ZooKeeper serves a plain read from the replica's own state,
//! which may lag the leader, and promises linearizability for writes only.

mod common;

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Ensemble, client, client_with_timeout, persistent};
use zookeeper_client as zk;

/// The znodes `/reg/0..KEYS`, each a register.
const KEYS: usize = 3;
/// Concurrent clients, each with its own session.
const CLIENTS: usize = 6;
/// Operations each client attempts.
const STEPS: usize = 120;
/// How long a client waits for one operation before counting its outcome unknown.
const OP_TIMEOUT: Duration = Duration::from_secs(4);
/// The session timeout the clients ask for (the replicas, with 100 ms ticks, grant at most 2 s).
const SESSION_TIMEOUT: Duration = Duration::from_secs(4);

/// The sequential specification: a znode's data and version. A successful compare-and-set
/// bumps the version by one, as ZooKeeper's `setData` with an expected version does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
struct VersionedRegister {
    value: i64,
    version: i32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum RegisterOp {
    Read,
    Cas { expected: i32, value: i64 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum RegisterRet {
    Read {
        value: i64,
        version: i32,
    },
    /// The compare-and-set took effect; `version` is the znode's new version.
    CasOk {
        version: i32,
    },
    BadVersion,
}

impl VersionedRegister {
    /// Applies `op` and returns its result.
    fn apply(&mut self, op: &RegisterOp) -> RegisterRet {
        match *op {
            RegisterOp::Read => RegisterRet::Read { value: self.value, version: self.version },
            RegisterOp::Cas { expected, value } if expected == self.version => {
                self.value = value;
                self.version += 1;
                RegisterRet::CasOk { version: self.version }
            }
            RegisterOp::Cas { .. } => RegisterRet::BadVersion,
        }
    }
}

/// One operation on one znode as a client saw it. Times are since the run started.
#[derive(Clone, Debug)]
struct Call {
    /// `client * 1000 + n`, where n counts the client's earlier calls with an unknown outcome:
    /// such a call stays in flight for good, so the client goes on as another thread.
    thread: u64,
    key: usize,
    op: RegisterOp,
    invoked: Duration,
    /// `None` when the client never learned the outcome.
    returned: Option<(Duration, RegisterRet)>,
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let end = match self.returned {
            Some((at, _)) => format!("{:9.3}", ms(at)),
            None => format!("{:>9}", "never"),
        };
        let op = match self.op {
            RegisterOp::Read => "read".to_string(),
            RegisterOp::Cas { expected, value } => format!("cas(v{expected} -> {value})"),
        };
        let ret = match self.returned {
            Some((_, RegisterRet::Read { value, version })) => format!("{value} @v{version}"),
            Some((_, RegisterRet::CasOk { version })) => format!("ok, now v{version}"),
            Some((_, RegisterRet::BadVersion)) => "bad version".to_string(),
            None => "unknown".to_string(),
        };
        write!(f, "{:9.3} .. {end}  thread {:>5}  {op:<24} => {ret}", ms(self.invoked), self.thread)
    }
}

/// Whether `calls`, the history of one znode that starts as `0 @v0`, is linearizable: Wing and
/// Gong's search as Lowe improved it (the one Porcupine implements). It walks the invocations
/// and returns in time order, linearizing an operation at its invocation when the register can
/// give its result, and backs up when it meets the return of an operation not yet linearized;
/// a cache of (operations linearized, register) pairs already explored keeps the search from
/// repeating itself. An operation that never returned returns after everything else and may
/// take effect with any result.
fn is_linearizable(calls: &[Call]) -> bool {
    const HEAD: usize = 0;
    // Nodes 1.. of a doubly linked list, in time order; on a tie an invocation goes first,
    // which makes the two operations concurrent.
    let mut events: Vec<(Duration, bool, usize)> = Vec::new();
    for (i, call) in calls.iter().enumerate() {
        events.push((call.invoked, false, i));
        events.push((call.returned.map_or(Duration::MAX, |(at, _)| at), true, i));
    }
    events.sort();
    let len = events.len() + 1;
    let mut next: Vec<usize> = (1..=len).collect();
    let mut prev: Vec<usize> = (0..len).map(|i| i.wrapping_sub(1)).collect();
    let mut return_node = vec![0; calls.len()];
    for (i, &(_, is_return, call)) in events.iter().enumerate() {
        if is_return {
            return_node[call] = i + 1;
        }
    }
    let unlink = |node: usize, next: &mut [usize], prev: &mut [usize]| {
        next[prev[node]] = next[node];
        if next[node] < len {
            prev[next[node]] = prev[node];
        }
    };
    let relink = |node: usize, next: &mut [usize], prev: &mut [usize]| {
        next[prev[node]] = node;
        if next[node] < len {
            prev[next[node]] = node;
        }
    };

    let mut register = VersionedRegister::default();
    let mut linearized = vec![0u64; calls.len().div_ceil(64)];
    let mut seen: HashSet<(Vec<u64>, VersionedRegister)> = HashSet::new();
    // The invocations linearized so far, each with the register before it.
    let mut stack: Vec<(usize, VersionedRegister)> = Vec::new();
    let mut node = next[HEAD];
    while next[HEAD] < len {
        let (_, is_return, call) = events[node - 1];
        if is_return {
            // This operation returned before being linearized: undo the last choice.
            let Some((invocation, before)) = stack.pop() else { return false };
            let (_, _, undone) = events[invocation - 1];
            register = before;
            linearized[undone / 64] &= !(1 << (undone % 64));
            relink(return_node[undone], &mut next, &mut prev);
            relink(invocation, &mut next, &mut prev);
            node = next[invocation];
            continue;
        }
        let mut after = register;
        let result = after.apply(&calls[call].op);
        if calls[call].returned.is_none_or(|(_, ret)| ret == result) {
            linearized[call / 64] |= 1 << (call % 64);
            if seen.insert((linearized.clone(), after)) {
                stack.push((node, register));
                register = after;
                unlink(node, &mut next, &mut prev);
                unlink(return_node[call], &mut next, &mut prev);
                node = next[HEAD];
                continue;
            }
            linearized[call / 64] &= !(1 << (call % 64));
        }
        node = next[node];
    }
    true
}

/// Checks the history of each znode; the error shows those that are not linearizable.
fn check(calls: &[Call]) -> Result<(), String> {
    let mut failures = String::new();
    for key in 0..KEYS {
        let mut history: Vec<Call> = calls.iter().filter(|c| c.key == key).cloned().collect();
        if is_linearizable(&history) {
            continue;
        }
        history.sort_by_key(|c| c.invoked);
        let lines: Vec<String> = history.iter().map(Call::to_string).collect();
        failures += &format!("the history of /reg/{key} is not linearizable (times in ms):\n{}\n", lines.join("\n"));
    }
    if failures.is_empty() { Ok(()) } else { Err(failures) }
}

/// SplitMix64: enough randomness for choosing operations, without another dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % n
    }
}

/// What became of one operation.
enum Outcome {
    Returned(RegisterRet),
    /// The client does not know whether the operation took effect: the error, or `None` when
    /// no answer came in time.
    Unknown(Option<zk::Error>),
}

/// Whether an error leaves a write's outcome unknown: the connection or the session failed
/// (`Custom` is the client giving up on a connection that stopped answering). Any other error
/// is the server's answer, and none but `BadVersion` is expected here.
fn outcome_unknown(e: &zk::Error) -> bool {
    use zk::Error::*;
    matches!(e, ConnectionLoss | Timeout | SessionExpired | ClientClosed | NoHosts | Custom(_))
}

/// Runs `op` on `/reg/{key}`: a read is `sync` then `getData`, a compare-and-set is `setData`
/// with the expected version.
async fn perform(zk: &zk::Client, key: usize, op: RegisterOp) -> Outcome {
    let path = format!("/reg/{key}");
    let result = match op {
        RegisterOp::Read => match zk.sync(&path).await {
            Ok(()) => zk.get_data(&path).await.map(|(data, stat)| {
                let value = std::str::from_utf8(&data).ok().and_then(|s| s.parse().ok());
                let value = value.unwrap_or_else(|| panic!("{path} holds {data:?}, not an integer"));
                RegisterRet::Read { value, version: stat.version }
            }),
            Err(e) => Err(e),
        },
        RegisterOp::Cas { expected, value } => {
            match zk.set_data(&path, value.to_string().as_bytes(), Some(expected)).await {
                Ok(stat) => Ok(RegisterRet::CasOk { version: stat.version }),
                Err(zk::Error::BadVersion) => Ok(RegisterRet::BadVersion),
                Err(e) => Err(e),
            }
        }
    };
    match result {
        Ok(ret) => Outcome::Returned(ret),
        Err(e) if outcome_unknown(&e) => Outcome::Unknown(Some(e)),
        Err(e) => panic!("{op:?} on {path} failed: {e}"),
    }
}

/// One client: `STEPS` random operations, each recorded; `done` counts attempted operations.
async fn run_client(id: usize, seed: u64, addrs: String, start: Instant, done: Arc<AtomicUsize>) -> Vec<Call> {
    let mut rng = Rng(seed ^ (id as u64).wrapping_mul(0x2545_f491_4f6c_dd1d));
    let mut zk = client_with_timeout(&addrs, SESSION_TIMEOUT).await;
    let mut thread = id as u64 * 1000;
    // The version this client last saw on each znode: its next compare-and-set expects it.
    let mut known = [0i32; KEYS];
    let mut calls = Vec::new();
    for step in 0..STEPS {
        let key = rng.below(KEYS as u64) as usize;
        let op = match rng.below(2) {
            0 => RegisterOp::Read,
            // Values are unique, so a read tells which write it saw.
            _ => RegisterOp::Cas { expected: known[key], value: (id * 100_000 + step + 1) as i64 },
        };
        let invoked = start.elapsed();
        let outcome = tokio::time::timeout(OP_TIMEOUT, perform(&zk, key, op)).await.unwrap_or(Outcome::Unknown(None));
        let returned_at = start.elapsed();
        match outcome {
            Outcome::Returned(ret) => {
                match ret {
                    RegisterRet::Read { version, .. } | RegisterRet::CasOk { version } => known[key] = version,
                    RegisterRet::BadVersion => {}
                }
                calls.push(Call { thread, key, op, invoked, returned: Some((returned_at, ret)) });
            }
            Outcome::Unknown(error) => {
                if op != RegisterOp::Read {
                    calls.push(Call { thread, key, op, invoked, returned: None });
                    thread += 1;
                }
                // A session that is gone takes its client with it.
                if matches!(error, Some(zk::Error::SessionExpired | zk::Error::ClientClosed | zk::Error::NoHosts)) {
                    zk = client_with_timeout(&addrs, SESSION_TIMEOUT).await;
                }
            }
        }
        done.fetch_add(1, Ordering::Relaxed);
    }
    calls
}

/// Guarantee: reads after `sync` and compare-and-sets on a znode are linearizable, even when
/// the leader is lost while they run.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compare_and_set_stays_linearizable_across_the_leaders_loss() {
    let mut ensemble = Ensemble::start().await;
    let setup = client(&ensemble.all_addrs()).await;
    setup.create("/reg", b"", &persistent()).await.unwrap();
    for key in 0..KEYS {
        setup.create(&format!("/reg/{key}"), b"0", &persistent()).await.unwrap();
    }
    drop(setup);

    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    let start = Instant::now();
    let done = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> =
        (0..CLIENTS).map(|id| tokio::spawn(run_client(id, seed, ensemble.all_addrs(), start, done.clone()))).collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while done.load(Ordering::Relaxed) < CLIENTS * STEPS / 2 {
        assert!(Instant::now() < deadline, "the clients stalled at {} operations", done.load(Ordering::Relaxed));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let leader = ensemble.leader();
    let killed_at = start.elapsed();
    ensemble.stop(leader).await;
    let mut calls = Vec::new();
    for client in clients {
        calls.extend(client.await.unwrap());
    }
    let elapsed = start.elapsed();
    ensemble.shutdown().await;

    let unknown: Vec<&Call> = calls.iter().filter(|c| c.returned.is_none()).collect();
    let read_values: HashSet<i64> = calls
        .iter()
        .filter_map(|c| match c.returned {
            Some((_, RegisterRet::Read { value, .. })) => Some(value),
            _ => None,
        })
        .collect();
    let unknown_seen = unknown
        .iter()
        .filter(|c| matches!(c.op, RegisterOp::Cas { value, .. } if read_values.contains(&value)))
        .count();
    let ok_after_kill = calls
        .iter()
        .filter(|c| matches!(c.returned, Some((_, RegisterRet::CasOk { .. }))) && c.invoked > killed_at)
        .count();
    eprintln!(
        "seed {seed}: {} operations recorded in {elapsed:?}, {} with an unknown outcome ({unknown_seen} of them \
         seen by a read); leader {leader} stopped at {killed_at:?}; {ok_after_kill} compare-and-sets succeeded \
         after that",
        calls.len(),
        unknown.len()
    );
    assert!(ok_after_kill > 0, "no write succeeded after the leader was lost");
    let checked = Instant::now();
    if let Err(failures) = check(&calls) {
        panic!("seed {seed}:\n{failures}");
    }
    eprintln!("checked in {:?}", checked.elapsed());
}

mod checker {
    use super::*;

    /// stateright's `LinearizabilityTester`, an independent search without Lowe's cache (too
    /// slow for a whole run's history), as the oracle for small ones.
    mod oracle {
        use super::*;
        use stateright::semantics::{ConsistencyTester, LinearizabilityTester, SequentialSpec};

        impl SequentialSpec for VersionedRegister {
            type Op = RegisterOp;
            type Ret = RegisterRet;

            fn invoke(&mut self, op: &RegisterOp) -> RegisterRet {
                self.apply(op)
            }
        }

        /// Whether stateright finds `calls` linearizable. Its threads have one operation in
        /// flight at a time, and times must be distinct.
        pub fn is_linearizable(calls: &[Call]) -> bool {
            let mut events: Vec<(Duration, usize)> = Vec::new();
            for (i, call) in calls.iter().enumerate() {
                events.push((call.invoked, i));
                if let Some((at, _)) = call.returned {
                    events.push((at, i));
                }
            }
            events.sort();
            let mut tester = LinearizabilityTester::new(VersionedRegister::default());
            for (at, i) in events {
                let call = &calls[i];
                let recorded = match call.returned {
                    Some((returned, ret)) if returned == at => tester.on_return(call.thread, ret).map(|_| ()),
                    _ => tester.on_invoke(call.thread, call.op).map(|_| ()),
                };
                recorded.expect("a well-formed history");
            }
            tester.is_consistent()
        }
    }

    /// A small random history of up to three threads: each operation takes effect at a random
    /// point of its interval (one with an unknown outcome at any point after its invocation, or
    /// never), and one result in three histories is then falsified.
    fn random_history(rng: &mut Rng) -> Vec<Call> {
        let mut calls = Vec::new();
        // When each operation that takes effect does, in µs.
        let mut effects: Vec<(u64, usize)> = Vec::new();
        let mut written = 0;
        for t in 0..1 + rng.below(3) {
            // Times are (tick * 8 + t) ms: distinct across threads.
            let us = |tick: u64| (tick * 8 + t) * 1000;
            let mut thread = t * 100;
            let mut tick = rng.below(4);
            for _ in 0..1 + rng.below(4) {
                let op = match rng.below(2) {
                    0 => RegisterOp::Read,
                    _ => {
                        written += 1;
                        RegisterOp::Cas { expected: rng.below(3) as i32, value: written }
                    }
                };
                let (invoked, returned) = (tick + 1 + rng.below(4), tick + 2 + rng.below(10));
                let (invoked, returned) = (invoked.min(returned - 1), returned);
                let known = rng.below(5) != 0;
                if known {
                    effects.push((us(invoked) + 1 + rng.below(us(returned) - us(invoked) - 1), calls.len()));
                } else if rng.below(2) == 0 {
                    effects.push((us(invoked) + 1 + rng.below(100_000), calls.len()));
                }
                calls.push(Call {
                    thread,
                    key: 0,
                    op,
                    invoked: Duration::from_micros(us(invoked)),
                    returned: known.then_some((Duration::from_micros(us(returned)), RegisterRet::BadVersion)),
                });
                if !known {
                    thread += 1;
                }
                tick = returned;
            }
        }
        effects.sort();
        let mut register = VersionedRegister::default();
        for (_, i) in effects {
            let result = register.apply(&calls[i].op);
            if let Some((_, ret)) = &mut calls[i].returned {
                *ret = result;
            }
        }
        let returned: Vec<usize> = (0..calls.len()).filter(|i| calls[*i].returned.is_some()).collect();
        if !returned.is_empty() && rng.below(3) == 0 {
            let call = &mut calls[returned[rng.below(returned.len() as u64) as usize]];
            let (at, ret) = call.returned.unwrap();
            let falsified = match (call.op, ret) {
                (RegisterOp::Read, _) => {
                    RegisterRet::Read { value: rng.below(written as u64 + 1) as i64, version: rng.below(4) as i32 }
                }
                (RegisterOp::Cas { .. }, RegisterRet::CasOk { .. }) => RegisterRet::BadVersion,
                (RegisterOp::Cas { expected, .. }, _) => RegisterRet::CasOk { version: expected + 1 },
            };
            call.returned = Some((at, falsified));
        }
        calls
    }

    #[test]
    fn agrees_with_stateright_on_random_small_histories() {
        let mut rng = Rng(7);
        let mut verdicts = [0; 2];
        for _ in 0..3000 {
            let history = random_history(&mut rng);
            let expected = oracle::is_linearizable(&history);
            assert_eq!(is_linearizable(&history), expected, "{history:#?}");
            verdicts[usize::from(expected)] += 1;
        }
        assert!(verdicts.iter().all(|n| *n >= 300), "too one-sided to compare: {verdicts:?} (not, is) linearizable");
    }

    fn ms(t: u64) -> Duration {
        Duration::from_millis(t)
    }

    fn read(thread: u64, from: u64, to: u64, value: i64, version: i32) -> Call {
        Call {
            thread,
            key: 0,
            op: RegisterOp::Read,
            invoked: ms(from),
            returned: Some((ms(to), RegisterRet::Read { value, version })),
        }
    }

    fn cas(thread: u64, from: u64, to: Option<u64>, expected: i32, value: i64, ret: RegisterRet) -> Call {
        Call {
            thread,
            key: 0,
            op: RegisterOp::Cas { expected, value },
            invoked: ms(from),
            returned: to.map(|to| (ms(to), ret)),
        }
    }

    const OK1: RegisterRet = RegisterRet::CasOk { version: 1 };
    const OK2: RegisterRet = RegisterRet::CasOk { version: 2 };
    const BAD: RegisterRet = RegisterRet::BadVersion;

    #[test]
    fn accepts_a_sequential_history() {
        let history =
            [read(1, 0, 1, 0, 0), cas(1, 2, Some(3), 0, 7, OK1), cas(2, 4, Some(5), 0, 8, BAD), read(2, 6, 7, 7, 1)];
        assert!(is_linearizable(&history));
    }

    #[test]
    fn accepts_a_read_concurrent_with_a_write_seeing_either_value() {
        let write = cas(1, 0, Some(10), 0, 7, OK1);
        assert!(is_linearizable(&[write.clone(), read(2, 1, 2, 0, 0), read(3, 3, 4, 7, 1)]));
        // Once a read saw the new value, a later read must not see the old one.
        assert!(!is_linearizable(&[write, read(2, 1, 2, 7, 1), read(3, 3, 4, 0, 0)]));
    }

    #[test]
    fn rejects_a_stale_read_after_a_completed_write() {
        assert!(!is_linearizable(&[cas(1, 0, Some(1), 0, 7, OK1), read(2, 2, 3, 0, 0)]));
    }

    #[test]
    fn rejects_two_writes_that_both_won_the_same_version() {
        assert!(!is_linearizable(&[cas(1, 0, Some(5), 0, 7, OK1), cas(2, 1, Some(6), 0, 8, OK1)]));
        assert!(is_linearizable(&[cas(1, 0, Some(5), 0, 7, OK1), cas(2, 1, Some(6), 0, 8, BAD)]));
    }

    #[test]
    fn rejects_a_version_that_skips_or_a_value_never_written() {
        assert!(!is_linearizable(&[cas(1, 0, Some(1), 0, 7, OK2)]));
        assert!(!is_linearizable(&[read(1, 0, 1, 9, 0)]));
    }

    #[test]
    fn an_unknown_write_may_take_effect_late_or_never() {
        let lost = cas(1, 0, None, 0, 7, BAD);
        // Seen long after it was sent, by a read that follows one that did not see it.
        assert!(is_linearizable(&[lost.clone(), read(2, 50, 51, 0, 0), read(2, 90, 91, 7, 1)]));
        // Never seen.
        assert!(is_linearizable(&[lost.clone(), read(2, 50, 51, 0, 0), cas(2, 60, Some(61), 0, 8, OK1)]));
        // But once a write won its version, it cannot also take effect.
        assert!(!is_linearizable(&[lost.clone(), cas(2, 60, Some(61), 0, 8, OK1), read(2, 70, 71, 7, 1)]));
        // And it cannot take effect before it was sent.
        let late = cas(1, 10, None, 0, 7, BAD);
        assert!(!is_linearizable(&[read(2, 0, 5, 7, 1), late]));
    }

    #[test]
    fn check_shows_the_history_that_is_not_linearizable() {
        let history = [cas(1, 0, None, 0, 7, BAD), read(2, 10, 11, 7, 1), cas(2, 12, Some(13), 1, 8, OK2)];
        assert!(is_linearizable(&history));
        let mut calls = history.to_vec();
        calls.push(read(3, 20, 21, 8, 2));
        assert!(check(&calls).is_ok());
        calls.push(read(3, 30, 31, 7, 1));
        let failure = check(&calls).unwrap_err();
        assert!(failure.contains("/reg/0 is not linearizable"), "{failure}");
    }
}
