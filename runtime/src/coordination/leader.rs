//! Leader election among a component's tasks.
//!
//! Each task that joins creates an ephemeral-sequential candidate `c-<seq>` (holding its task
//! id) under `/squall/leaders/<topology>/<component>`; the lowest candidate leads. A background
//! campaign on the run's runtime watches the candidate just ahead (or, for the leader, its own
//! candidate), looks again every second in any case, and flips [`LeaderElection::is_leader`]
//! and calls the change callbacks on every transition. When a worker dies its session expires,
//! its candidates vanish, and the next task in line leads. A task whose own session expired, or
//! whose connection is down, stops counting itself leader at once and enters again with a new
//! candidate when it can.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, oneshot};
use zookeeper_client as zk;

use super::{CALL_TIMEOUT, Coordination, CoordinationError, create_with_parents, election_dir};

/// How often the campaign looks again even without a watch firing.
const RECHECK: Duration = Duration::from_secs(1);
/// Pause before entering again after the store refused or was away.
const RETRY: Duration = Duration::from_millis(300);

type ChangeCallback = Box<dyn Fn(bool) + Send + Sync>;

/// A task's place in its component's leader election. Cheap to clone; the task leaves the
/// election when the last clone is dropped (or its session ends).
///
/// ```no_run
/// # fn f(ctx: &squall_runtime::TaskContext) -> Result<(), Box<dyn std::error::Error>> {
/// let election = ctx.leader_election()?;
/// election.on_change(|leading| eprintln!("leading now: {leading}"));
/// if election.is_leader() {
///     // only one task of the component does this
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct LeaderElection {
    membership: Arc<Membership>,
}

/// Ends the campaign when the last handle goes.
struct Membership {
    state: Arc<ElectionState>,
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Relaxed);
        self.state.wake.notify_one();
    }
}

struct ElectionState {
    leader: AtomicBool,
    /// The creation zxid of the leading candidate when this task leads, else 0.
    term: AtomicI64,
    callbacks: Mutex<Vec<ChangeCallback>>,
    stop: AtomicBool,
    wake: Notify,
}

impl ElectionState {
    fn set(&self, leading: bool, term: i64) {
        self.term.store(if leading { term } else { 0 }, Ordering::Relaxed);
        if self.leader.swap(leading, Ordering::AcqRel) != leading {
            for callback in self.callbacks.lock().expect("callbacks never panic while held").iter() {
                callback(leading);
            }
        }
    }
}

impl std::fmt::Debug for LeaderElection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaderElection").field("leader", &self.is_leader()).finish()
    }
}

impl LeaderElection {
    /// Enters `task` in `component`'s election and waits until it knows whether it leads.
    pub(super) fn join(coordination: &Coordination, component: &str, task: u32) -> Result<Self, CoordinationError> {
        let state = Arc::new(ElectionState {
            leader: AtomicBool::new(false),
            term: AtomicI64::new(0),
            callbacks: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            wake: Notify::new(),
        });
        let (known_tx, known) = oneshot::channel();
        let dir = election_dir(coordination.topology(), component);
        coordination.spawn(campaign(coordination.clone(), dir, task, state.clone(), known_tx));
        coordination.wait(async {
            match tokio::time::timeout(CALL_TIMEOUT, known).await {
                Ok(Ok(())) => Ok(()),
                _ => {
                    Err(CoordinationError::Unavailable(format!("could not enter the election within {CALL_TIMEOUT:?}")))
                }
            }
        })?;
        Ok(LeaderElection { membership: Arc::new(Membership { state }) })
    }

    /// Whether this task leads its component now.
    pub fn is_leader(&self) -> bool {
        self.membership.state.leader.load(Ordering::Acquire)
    }

    /// While this task leads: a number larger than every earlier leader's (the creation zxid of
    /// its candidate), to fence what it writes as leader. `None` while it does not lead.
    pub fn term(&self) -> Option<i64> {
        let term = self.membership.state.term.load(Ordering::Relaxed);
        (self.is_leader() && term != 0).then_some(term)
    }

    /// Calls `callback` with the new state every time this task gains or loses leadership. It
    /// runs on the coordination runtime's thread: keep it short (set a flag, send a message).
    pub fn on_change(&self, callback: impl Fn(bool) + Send + Sync + 'static) {
        self.membership.state.callbacks.lock().expect("callbacks never panic while held").push(Box::new(callback));
    }
}

/// Stands for leader until told to stop: one candidate per session, a new one after a session
/// is lost. Sends on `known` once the first outcome is known.
async fn campaign(
    coordination: Coordination,
    dir: String,
    task: u32,
    state: Arc<ElectionState>,
    known: oneshot::Sender<()>,
) {
    let mut known = Some(known);
    while !state.stop.load(Ordering::Relaxed) {
        let entered = async {
            let client = coordination.session().await.ok()?;
            let candidate = format!("{dir}/c-");
            let mode = zk::CreateMode::EphemeralSequential;
            let (path, czxid) =
                create_with_parents(&client, &candidate, task.to_string().as_bytes(), mode).await.ok()?;
            Some((client, path, czxid))
        };
        let Some((client, path, czxid)) = entered.await else {
            state.set(false, 0);
            tokio::time::sleep(RETRY).await;
            continue;
        };
        stand(&client, &dir, &path, czxid, &state, &mut known).await;
        state.set(false, 0);
        if state.stop.load(Ordering::Relaxed) {
            let _ = client.delete(&path, None).await;
        }
    }
}

/// Follows candidate `path` until the campaign stops or the candidate is gone.
async fn stand(
    client: &zk::Client,
    dir: &str,
    path: &str,
    czxid: i64,
    state: &ElectionState,
    known: &mut Option<oneshot::Sender<()>>,
) {
    let name = path.rsplit('/').next().expect("a created znode has a name");
    while !state.stop.load(Ordering::Relaxed) {
        if matches!(client.state(), zk::SessionState::Expired | zk::SessionState::Closed) {
            return;
        }
        let mut candidates = match client.list_children(dir).await {
            Ok(candidates) => candidates,
            Err(zk::Error::SessionExpired) => return,
            Err(_) => {
                // Connection trouble: without the store we cannot know we still lead.
                state.set(false, 0);
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        candidates.sort();
        let Some(place) = candidates.iter().position(|c| c == name) else { return };
        let connected = client.state() == zk::SessionState::SyncConnected;
        state.set(place == 0 && connected, czxid);
        if let Some(known) = known.take() {
            let _ = known.send(());
        }
        let watched = if place == 0 { path.to_string() } else { format!("{dir}/{}", candidates[place - 1]) };
        let Ok((stat, watcher)) = client.check_and_watch_stat(&watched).await else { continue };
        if stat.is_none() {
            continue;
        }
        tokio::select! {
            _ = watcher.changed() => {}
            _ = state.wake.notified() => {}
            _ = tokio::time::sleep(RECHECK) => {}
        }
    }
}
