//! Coordination for user components: the znode store, reached from a task.
//!
//! A running topology — in a cluster worker or in `squall local` — hands every task a
//! [`Coordination`] through its [`TaskContext`](crate::TaskContext). Through it a spout or bolt
//! gets what Storm users took from ZooKeeper beside their topology:
//!
//! - **a fenced distributed lock** ([`Coordination::lock`], `ctx.lock(name)`): an
//!   ephemeral-sequential recipe under `/squall/locks/<topology>/<name>`; the holder gets a
//!   fencing token that grows with every new holder, so a resource that remembers the highest
//!   token it saw can refuse a holder whose lock was taken from it;
//! - **leader election among a component's tasks** ([`Coordination::elect`],
//!   `ctx.is_leader()`): exactly one live task of a component leads at a time, and another takes
//!   over when its worker dies (its session expires);
//! - **versioned znodes** ([`Coordination::read`], [`Coordination::write`]): what the Kafka spout
//!   keeps its offsets in, with compare-and-set so a task that lost a partition cannot overwrite
//!   its new owner's progress.
//!
//! Tasks run on plain threads, so the calls here block; they are bounded by a timeout and
//! answer [`CoordinationError::Unavailable`] when the store cannot be reached in time. The
//! lock's and the elections' znodes live as long as the run's session: a worker killed with
//! SIGKILL gives up its locks and its leadership when the store expires its session.

mod leader;
mod lock;

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use zookeeper_client as zk;

use crate::cluster::paths;

pub use leader::LeaderElection;
pub use lock::DistributedLock;

/// How long one blocking call waits for the store before it gives up.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// The session timeout of a run's coordination session: how long after a worker dies its locks
/// and leaderships pass on.
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a coordination call failed.
#[derive(Debug, thiserror::Error)]
pub enum CoordinationError {
    /// The task runs without a store (a test's [`TaskContext::standalone`](crate::TaskContext::standalone)).
    #[error("no znode store is attached to this run")]
    NoStore,
    /// The store did not answer in time, or the session is gone.
    #[error("the znode store is unavailable: {0}")]
    Unavailable(String),
    /// A versioned write lost: the znode changed (or appeared) since it was read.
    #[error("{path} was changed by someone else")]
    Conflict {
        /// The znode.
        path: String,
    },
    /// Any other refusal by the store (a bad path, data too large, ...).
    #[error("{path}: {source}")]
    Store {
        /// The znode.
        path: String,
        /// The store's error.
        source: zk::Error,
    },
}

impl CoordinationError {
    fn from_zk(path: &str, error: zk::Error) -> Self {
        match error {
            zk::Error::BadVersion | zk::Error::NodeExists => CoordinationError::Conflict { path: path.to_string() },
            zk::Error::SessionExpired | zk::Error::ConnectionLoss | zk::Error::ClientClosed | zk::Error::Timeout => {
                CoordinationError::Unavailable(error.to_string())
            }
            source => CoordinationError::Store { path: path.to_string(), source },
        }
    }
}

/// A run's handle on the znode store (see the [module docs](self)). Cheap to clone; every task
/// of a run shares one session.
#[derive(Clone)]
pub struct Coordination {
    inner: Arc<Inner>,
}

struct Inner {
    topology: String,
    /// The ensemble, to open a new session when the current one expired.
    target: String,
    session_timeout: Duration,
    client: Mutex<zk::Client>,
    runtime: tokio::runtime::Handle,
}

impl fmt::Debug for Coordination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Coordination")
            .field("topology", &self.inner.topology)
            .field("target", &self.inner.target)
            .finish()
    }
}

impl Coordination {
    /// Opens a session on the ensemble `target` (HOST:PORT[,HOST:PORT...]) for topology
    /// `topology`'s tasks. The current tokio runtime runs the session and the elections'
    /// watchers: it must outlive the run, and the blocking calls must be made from threads of
    /// its own (task threads), never from the runtime's.
    pub async fn connect(target: &str, topology: &str) -> Result<Coordination, CoordinationError> {
        Coordination::connect_with_timeout(target, topology, SESSION_TIMEOUT).await
    }

    /// Like [`connect`](Self::connect), with a session that expires `session_timeout` after
    /// the store last heard from this process (so locks and leaderships pass on that long after
    /// it dies).
    pub async fn connect_with_timeout(
        target: &str,
        topology: &str,
        session_timeout: Duration,
    ) -> Result<Coordination, CoordinationError> {
        let client = open_session(target, session_timeout).await?;
        Ok(Coordination {
            inner: Arc::new(Inner {
                topology: topology.to_string(),
                target: target.to_string(),
                session_timeout,
                client: Mutex::new(client),
                runtime: tokio::runtime::Handle::current(),
            }),
        })
    }

    /// The topology this handle serves.
    pub fn topology(&self) -> &str {
        &self.inner.topology
    }

    /// The current session, a new one if the last one expired.
    pub(crate) async fn session(&self) -> Result<zk::Client, CoordinationError> {
        let current = self.inner.client.lock().expect("the session lock is never poisoned").clone();
        if !matches!(current.state(), zk::SessionState::Expired | zk::SessionState::Closed) {
            return Ok(current);
        }
        let fresh = open_session(&self.inner.target, self.inner.session_timeout).await?;
        *self.inner.client.lock().expect("the session lock is never poisoned") = fresh.clone();
        Ok(fresh)
    }

    /// Runs `call` on the run's runtime and waits for it, at most [`CALL_TIMEOUT`].
    pub(crate) fn block_on<T>(
        &self,
        call: impl Future<Output = Result<T, CoordinationError>> + Send,
    ) -> Result<T, CoordinationError> {
        self.wait(async {
            match tokio::time::timeout(CALL_TIMEOUT, call).await {
                Ok(result) => result,
                Err(_) => Err(CoordinationError::Unavailable(format!("no answer within {CALL_TIMEOUT:?}"))),
            }
        })
    }

    /// Runs `work` on the run's runtime and waits for it, with no bound. Called from a thread
    /// of a multi-threaded runtime (a factory run by a worker's async code, say), it moves that
    /// thread's other work away first instead of blocking it.
    pub(crate) fn wait<T>(&self, work: impl Future<Output = T>) -> T {
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::task::block_in_place(|| self.inner.runtime.block_on(work))
        } else {
            self.inner.runtime.block_on(work)
        }
    }

    pub(crate) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.inner.runtime.spawn(task);
    }

    /// The data and version of the znode at `path`, or `None` when there is none.
    pub fn read(&self, path: &str) -> Result<Option<(Vec<u8>, i32)>, CoordinationError> {
        self.block_on(async {
            match self.session().await?.get_data(path).await {
                Ok((data, stat)) => Ok(Some((data, stat.version))),
                Err(zk::Error::NoNode) => Ok(None),
                Err(e) => Err(CoordinationError::from_zk(path, e)),
            }
        })
    }

    /// Writes `data` to the znode at `path` if it is still at version `expected` (`None`: if it
    /// does not exist yet, in which case it and its missing parents are created). Returns the
    /// znode's new version; [`CoordinationError::Conflict`] when someone else wrote first.
    pub fn write(&self, path: &str, data: &[u8], expected: Option<i32>) -> Result<i32, CoordinationError> {
        self.block_on(self.write_now(path, data, expected))
    }

    /// Starts [`write`](Self::write) and returns at once: a task keeps emitting while the store
    /// is slow or away (a new Raft leader being elected, say), and looks at the outcome later.
    pub fn write_in_background(&self, path: &str, data: Vec<u8>, expected: Option<i32>) -> PendingWrite {
        // A std channel rather than tokio's oneshot, so that `PendingWrite::wait` can block on
        // it from any thread, a runtime's included; one send always finds room.
        let (done, result) = std::sync::mpsc::sync_channel(1);
        let (this, path) = (self.clone(), path.to_string());
        self.spawn(async move {
            let written = match tokio::time::timeout(CALL_TIMEOUT, this.write_now(&path, &data, expected)).await {
                Ok(written) => written,
                Err(_) => Err(CoordinationError::Unavailable(format!("no answer within {CALL_TIMEOUT:?}"))),
            };
            let _ = done.send(written);
        });
        PendingWrite { result }
    }

    async fn write_now(&self, path: &str, data: &[u8], expected: Option<i32>) -> Result<i32, CoordinationError> {
        let client = self.session().await?;
        let written = match expected {
            Some(version) => client.set_data(path, data, Some(version)).await.map(|stat| stat.version),
            None => create_with_parents(&client, path, data, zk::CreateMode::Persistent).await.map(|_| 0),
        };
        written.map_err(|e| CoordinationError::from_zk(path, e))
    }

    /// Takes the lock `name` of this topology, waiting as long as another holder has it (see
    /// [`DistributedLock`]).
    pub fn lock(&self, name: &str) -> Result<DistributedLock, CoordinationError> {
        let lock = DistributedLock::acquire(self, name, None)?;
        Ok(lock.expect("without a deadline the wait ends only when the lock is held"))
    }

    /// Like [`lock`](Self::lock), but gives up after `wait` with `Ok(None)`.
    pub fn try_lock(&self, name: &str, wait: Duration) -> Result<Option<DistributedLock>, CoordinationError> {
        DistributedLock::acquire(self, name, Some(wait))
    }

    /// Enters task `task`'s candidate in the leader election of `component`'s tasks (see
    /// [`LeaderElection`]).
    pub fn elect(&self, component: &str, task: u32) -> Result<LeaderElection, CoordinationError> {
        LeaderElection::join(self, component, task)
    }
}

/// A write under way (see [`Coordination::write_in_background`]).
#[derive(Debug)]
pub struct PendingWrite {
    result: std::sync::mpsc::Receiver<Result<i32, CoordinationError>>,
}

impl PendingWrite {
    /// The write's outcome — the znode's new version, or why not — once the store answered or
    /// the call timed out; `None` while it is under way.
    pub fn outcome(&mut self) -> Option<Result<i32, CoordinationError>> {
        match self.result.try_recv() {
            Ok(outcome) => Some(outcome),
            Err(std::sync::mpsc::TryRecvError::Empty) => None,
            Err(std::sync::mpsc::TryRecvError::Disconnected) => Some(Err(abandoned())),
        }
    }

    /// Waits for the write's outcome: at most the call timeout of a blocking
    /// [`write`](Coordination::write), which bounds the write.
    pub fn wait(self) -> Result<i32, CoordinationError> {
        self.result.recv().unwrap_or_else(|_| Err(abandoned()))
    }
}

/// The outcome of a background write whose task ended without one (its runtime shut down).
fn abandoned() -> CoordinationError {
    CoordinationError::Unavailable("the write was abandoned".into())
}

async fn open_session(target: &str, session_timeout: Duration) -> Result<zk::Client, CoordinationError> {
    let connecting = zk::Client::connector().with_session_timeout(session_timeout).connect(target);
    match tokio::time::timeout(CALL_TIMEOUT, connecting).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(CoordinationError::Unavailable(format!("cannot reach {target}: {e}"))),
        Err(_) => Err(CoordinationError::Unavailable(format!("cannot reach {target} within {CALL_TIMEOUT:?}"))),
    }
}

/// Creates `path` with `mode`, and its missing parents as persistent znodes. Returns the
/// created znode's path (with its sequence number, for a sequential mode) and creation zxid.
pub(crate) async fn create_with_parents(
    client: &zk::Client,
    path: &str,
    data: &[u8],
    mode: zk::CreateMode,
) -> Result<(String, i64), zk::Error> {
    let options = mode.with_acls(zk::Acls::anyone_all());
    let created = match client.create(path, data, &options).await {
        Err(zk::Error::NoNode) => {
            let parent = &path[..path.rfind('/').filter(|&i| i > 0).ok_or(zk::Error::NoNode)?];
            client.mkdir(parent, &zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all())).await?;
            client.create(path, data, &options).await
        }
        other => other,
    }?;
    let (stat, sequence) = created;
    let sequential = matches!(mode, zk::CreateMode::EphemeralSequential | zk::CreateMode::PersistentSequential);
    let path = if sequential { format!("{path}{sequence}") } else { path.to_string() };
    Ok((path, stat.czxid))
}

/// `/squall/locks/<topology>/<name>`.
fn lock_dir(topology: &str, name: &str) -> String {
    format!("{}/{topology}/{name}", paths::LOCKS)
}

/// `/squall/leaders/<topology>/<component>`.
fn election_dir(topology: &str, component: &str) -> String {
    format!("{}/{topology}/{component}", paths::LEADERS)
}
