//! The fenced distributed lock: ZooKeeper's lock recipe with a fencing token.
//!
//! Each contender creates an ephemeral-sequential znode `l-<seq>` under
//! `/squall/locks/<topology>/<name>`; the lowest sequence holds the lock, and every other
//! contender watches only the one just ahead of it (no herd when the holder lets go). The
//! fencing token is the creation zxid of the holder's znode: holders are ordered by their
//! znodes' creation, so each new holder's token is larger than every earlier holder's — even
//! when an earlier holder was paused, lost its session and still believes it holds the lock.

use std::time::{Duration, Instant};

use zookeeper_client as zk;

use super::{Coordination, CoordinationError, create_with_parents, lock_dir};

/// How often a waiting contender looks again even without a watch firing (a lost session
/// fires none).
const RECHECK: Duration = Duration::from_secs(1);

/// A held lock (see the [module docs](self)). Dropping it lets go, as [`unlock`](Self::unlock)
/// does, without waiting for the store's answer.
///
/// ```no_run
/// # fn f(ctx: &squall_runtime::TaskContext) -> Result<(), Box<dyn std::error::Error>> {
/// let lock = ctx.lock("compaction")?;
/// // Pass the token along with every write to the protected resource: the resource refuses
/// // tokens lower than the highest it has seen.
/// let token = lock.fencing_token();
/// # let _ = token;
/// lock.unlock()?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct DistributedLock {
    coordination: Coordination,
    client: zk::Client,
    /// The holder's znode.
    path: String,
    token: i64,
    released: bool,
}

impl DistributedLock {
    /// Waits for lock `name` (at most `wait`, if given: `Ok(None)` when that runs out).
    pub(super) fn acquire(
        coordination: &Coordination,
        name: &str,
        wait: Option<Duration>,
    ) -> Result<Option<DistributedLock>, CoordinationError> {
        if name.is_empty() || name.contains('/') {
            return Err(CoordinationError::Store {
                path: name.to_string(),
                source: zk::Error::BadArguments(&"a lock name is one non-empty path segment"),
            });
        }
        let dir = lock_dir(coordination.topology(), name);
        let deadline = wait.map(|w| Instant::now() + w);
        let (client, path, token) = coordination.block_on(async {
            let client = coordination.session().await?;
            let (path, token) =
                create_with_parents(&client, &format!("{dir}/l-"), b"", zk::CreateMode::EphemeralSequential)
                    .await
                    .map_err(|e| CoordinationError::from_zk(&dir, e))?;
            Ok((client, path, token))
        })?;
        let mut lock = DistributedLock { coordination: coordination.clone(), client, path, token, released: false };
        let held = coordination.wait(wait_turn(&lock.client, &dir, &lock.path, deadline));
        match held {
            Ok(true) => Ok(Some(lock)),
            Ok(false) => {
                lock.release_in_background();
                Ok(None)
            }
            Err(e) => {
                lock.release_in_background();
                Err(CoordinationError::from_zk(&dir, e))
            }
        }
    }

    /// The fencing token: larger for every later holder of the same lock.
    pub fn fencing_token(&self) -> i64 {
        self.token
    }

    /// The holder's znode (`/squall/locks/<topology>/<name>/l-<seq>`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Whether the session that holds the lock is still alive. A `false` means the lock may
    /// already be someone else's: stop using the protected resource.
    pub fn is_held(&self) -> bool {
        !matches!(self.client.state(), zk::SessionState::Expired | zk::SessionState::Closed)
    }

    /// Lets go of the lock and waits until the store has removed the holder's znode.
    pub fn unlock(mut self) -> Result<(), CoordinationError> {
        self.released = true;
        let (client, path) = (self.client.clone(), self.path.clone());
        self.coordination.block_on(async move {
            match client.delete(&path, None).await {
                Ok(()) | Err(zk::Error::NoNode) => Ok(()),
                Err(e) => Err(CoordinationError::from_zk(&path, e)),
            }
        })
    }

    fn release_in_background(&mut self) {
        self.released = true;
        let (client, path) = (self.client.clone(), std::mem::take(&mut self.path));
        self.coordination.spawn(async move {
            let _ = client.delete(&path, None).await;
        });
    }
}

impl Drop for DistributedLock {
    fn drop(&mut self) {
        if !self.released {
            self.release_in_background();
        }
    }
}

/// Waits until `mine` is the first contender in `dir`: `Ok(false)` if `deadline` passes first.
async fn wait_turn(client: &zk::Client, dir: &str, mine: &str, deadline: Option<Instant>) -> Result<bool, zk::Error> {
    let name = mine.rsplit('/').next().expect("a created znode has a name");
    loop {
        let mut contenders = client.list_children(dir).await?;
        contenders.sort();
        let place = contenders.iter().position(|c| c == name).ok_or(zk::Error::SessionExpired)?;
        if place == 0 {
            return Ok(true);
        }
        let ahead = format!("{dir}/{}", contenders[place - 1]);
        let (stat, watcher) = client.check_and_watch_stat(&ahead).await?;
        if stat.is_none() {
            continue;
        }
        let mut pause = RECHECK;
        if let Some(deadline) = deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            pause = pause.min(left);
        }
        let _ = tokio::time::timeout(pause, watcher.changed()).await;
    }
}
