//! The znode store as openraft's state machine: [`ZnodeState`] behind a lock, applied in log
//! order, with snapshots written atomically beside the Raft log.
//!
//! After each command is applied, the [`ApplyListener`] hears of it, still in log order and
//! before the command's writer gets its result: that is where a replica sends watch
//! notifications, so a client sees the event before any reply that reflects the change.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use futures::{Stream, StreamExt};
use openraft::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::stat::Zxid;
use crate::state::{Command, CommandResult, ZnodeState};
use crate::tree::TreeConfig;
use crate::watch::WatchEvent;

openraft::declare_raft_types!(
    /// Squall's Raft types: commands in, their results out, replicas addressed by `BasicNode`.
    pub TypeConfig: D = Command, R = CommandResult
);

/// The Raft handle of a replica.
pub type Raft = openraft::Raft<TypeConfig, ZnodeStateMachine>;

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.kind)
    }
}

/// Hears of every applied command, in log order.
pub trait ApplyListener: Send + Sync + 'static {
    /// `command` was applied as `zxid` with `result`, causing `events`. Called while the state's
    /// write lock is held, so that no read sees the change before its events are queued; must
    /// not block and must not take the state's lock.
    fn applied(&self, zxid: Zxid, command: &Command, result: &CommandResult, events: Vec<WatchEvent>);

    /// Whether `applied` needs the events at all; asked under the state's write lock before
    /// each command is applied, so an answer of no must stay true until that command's
    /// `applied` (a watch is set under the state's read lock, so it cannot come in between).
    fn wants_events(&self) -> bool {
        true
    }
}

/// The replicated state as the rest of the replica sees it.
pub struct SharedState {
    state: RwLock<ZnodeState>,
    /// The zxid of the last command applied, set under the state's write lock: whoever read
    /// the state and then this sees at least the zxid of what it read.
    last: AtomicU64,
    /// The same, told to waiters once per batch of applied entries (not once per entry: a
    /// follower may have hundreds of forwarded writes waiting, and each would wake each time).
    applied: watch::Sender<Zxid>,
}

impl SharedState {
    /// Runs `f` with the state, for reads.
    pub fn read<R>(&self, f: impl FnOnce(&ZnodeState) -> R) -> R {
        f(&self.state.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// The zxid of the last applied command.
    pub fn last_zxid(&self) -> Zxid {
        self.last.load(Ordering::Acquire) as Zxid
    }

    /// Waits until the command `zxid` has been applied here.
    pub async fn wait_applied(&self, zxid: Zxid) {
        if self.last_zxid() >= zxid {
            return;
        }
        let mut rx = self.applied.subscribe();
        // The sender lives as long as `self`, so this cannot fail while we hold `&self`.
        let _ = rx.wait_for(|applied| *applied >= zxid).await;
    }
}

/// Everything a snapshot holds.
#[derive(Serialize, Deserialize)]
struct SnapshotBody {
    last_applied: Option<LogIdOf<TypeConfig>>,
    membership: StoredMembershipOf<TypeConfig>,
    #[serde(with = "crate::byte_string")]
    state: Vec<u8>,
}

/// A snapshot as stored on disk: metadata and the postcard bytes of a [`SnapshotBody`].
#[derive(Clone, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMetaOf<TypeConfig>,
    #[serde(with = "crate::byte_string")]
    data: Vec<u8>,
}

/// [`StoredSnapshot`] by reference: the same bytes, without copying the data to write them.
#[derive(Serialize)]
struct StoredSnapshotRef<'a> {
    meta: &'a SnapshotMetaOf<TypeConfig>,
    data: &'a [u8],
}

/// The file, inside the replica's data directory, that holds the last snapshot.
pub const SNAPSHOT_FILE: &str = "snapshot.bin";

/// openraft's state machine for the znode store.
pub struct ZnodeStateMachine {
    shared: Arc<SharedState>,
    config: TreeConfig,
    last_applied: Option<LogIdOf<TypeConfig>>,
    membership: StoredMembershipOf<TypeConfig>,
    /// The metadata of the snapshot in `snapshot_path`; its bytes stay on disk until a peer
    /// needs them.
    snapshot: Arc<Mutex<Option<SnapshotMetaOf<TypeConfig>>>>,
    snapshot_path: PathBuf,
    listener: Arc<dyn ApplyListener>,
}

/// Why a replica's snapshot could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("snapshot {path}: {reason}")]
pub struct SnapshotLoadError {
    /// The snapshot file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub reason: String,
}

impl ZnodeStateMachine {
    /// The state machine of the replica whose data directory is `dir`, starting from the last
    /// snapshot saved there (the log then replays the rest).
    pub fn open(
        dir: &Path,
        config: TreeConfig,
        listener: Arc<dyn ApplyListener>,
    ) -> Result<(Self, Arc<SharedState>), SnapshotLoadError> {
        let snapshot_path = dir.join(SNAPSHOT_FILE);
        let fail = |reason: String| SnapshotLoadError { path: snapshot_path.clone(), reason };
        let (state, last_applied, membership, snapshot) = match load(&snapshot_path) {
            Ok(Some(stored)) => {
                let body: SnapshotBody =
                    postcard::from_bytes(&stored.data).map_err(|e| fail(format!("corrupt: {e}")))?;
                let state = ZnodeState::restore(&body.state, config.clone()).map_err(|e| fail(e.to_string()))?;
                (state, body.last_applied, body.membership, Some(stored.meta))
            }
            Ok(None) => (ZnodeState::new(config.clone()), None, StoredMembershipOf::<TypeConfig>::default(), None),
            Err(e) => return Err(fail(e)),
        };
        let zxid = last_applied.as_ref().map(|l| l.index as Zxid).unwrap_or(0);
        let shared = Arc::new(SharedState {
            state: RwLock::new(state),
            last: AtomicU64::new(zxid as u64),
            applied: watch::Sender::new(zxid),
        });
        let machine = ZnodeStateMachine {
            shared: shared.clone(),
            config,
            last_applied,
            membership,
            snapshot: Arc::new(Mutex::new(snapshot)),
            snapshot_path,
            listener,
        };
        Ok((machine, shared))
    }
}

/// The first bytes of a snapshot file: its format.
const SNAPSHOT_MAGIC: &[u8; 8] = b"SQSNAP02";

/// The snapshot bytes inside a snapshot file, once its format and SHA-1 checksum are right.
fn checked_body(file: &[u8]) -> Result<&[u8], String> {
    use sha1::Digest;
    let header = SNAPSHOT_MAGIC.len() + 20;
    if file.len() >= header && file.starts_with(b"SQSNAP") && &file[..SNAPSHOT_MAGIC.len()] != SNAPSHOT_MAGIC {
        return Err(format!(
            "snapshot format {} is not the one this build reads ({}): run the squall that wrote it",
            String::from_utf8_lossy(&file[..SNAPSHOT_MAGIC.len()]),
            String::from_utf8_lossy(SNAPSHOT_MAGIC)
        ));
    }
    if file.len() < header || &file[..SNAPSHOT_MAGIC.len()] != SNAPSHOT_MAGIC {
        return Err("not a Squall snapshot file".into());
    }
    let (sum, body) = file[SNAPSHOT_MAGIC.len()..].split_at(20);
    if sha1::Sha1::digest(body).as_slice() != sum {
        return Err("checksum mismatch".into());
    }
    Ok(body)
}

/// The snapshot in the file at `path`, `None` if there is none; an error says what is wrong.
fn load(path: &Path) -> Result<Option<StoredSnapshot>, String> {
    let file = match fs::read(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read: {e}")),
    };
    let bytes = checked_body(&file).map_err(|e| format!("corrupt: {e}"))?;
    postcard::from_bytes(bytes).map(Some).map_err(|e| format!("corrupt: {e}"))
}

/// Writes a snapshot file atomically (temp file, fsync, rename, fsync of the directory) and
/// makes it current. The file is the format's magic, a SHA-1 of the body, and the body.
fn save(
    path: &Path,
    current: &Mutex<Option<SnapshotMetaOf<TypeConfig>>>,
    meta: &SnapshotMetaOf<TypeConfig>,
    data: &[u8],
) -> io::Result<()> {
    use sha1::Digest;
    let tmp = path.with_extension("tmp");
    let bytes = postcard::to_stdvec(&StoredSnapshotRef { meta, data }).map_err(io::Error::other)?;
    {
        let mut file = fs::File::create(&tmp)?;
        io::Write::write_all(&mut file, SNAPSHOT_MAGIC)?;
        io::Write::write_all(&mut file, sha1::Sha1::digest(&bytes).as_slice())?;
        io::Write::write_all(&mut file, &bytes)?;
        file.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)?.sync_all()?;
    }
    *current.lock().unwrap_or_else(|e| e.into_inner()) = Some(meta.clone());
    Ok(())
}

impl ZnodeStateMachine {
    /// Applies `entries` in order, answering each one's responder; `applied` is the zxid of
    /// the last one applied, set even when a later one fails.
    async fn apply_each<S>(&mut self, entries: &mut S, applied: &mut Option<Zxid>) -> io::Result<()>
    where
        S: Stream<Item = io::Result<EntryResponder<TypeConfig>>> + Unpin + OptionalSend,
    {
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let zxid = entry.log_id.index as Zxid;
            self.last_applied = Some(entry.log_id);
            *applied = Some(zxid);
            let result = match entry.payload {
                EntryPayload::Blank => None,
                EntryPayload::Membership(membership) => {
                    self.membership = StoredMembershipOf::<TypeConfig>::new(Some(entry.log_id), membership);
                    None
                }
                EntryPayload::Normal(command) => {
                    let mut state = self.shared.state.write().unwrap_or_else(|e| e.into_inner());
                    state.report_events(self.listener.wants_events());
                    let (result, events) = state.apply(zxid, &command);
                    // Under the write lock: no read can see the change before its watch events
                    // are queued on the watchers' connections, or before `last_zxid` covers it.
                    self.listener.applied(zxid, &command, &result, events);
                    self.shared.last.store(zxid as u64, Ordering::Release);
                    drop(state);
                    Some(result)
                }
            };
            if result.is_none() {
                self.shared.last.store(zxid as u64, Ordering::Release);
            }
            if let Some(responder) = responder {
                responder.send(result.unwrap_or(CommandResult::SessionClosed));
            }
        }
        Ok(())
    }
}

impl RaftStateMachine<TypeConfig> for ZnodeStateMachine {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = ZnodeSnapshotBuilder;

    async fn applied_state(&mut self) -> io::Result<(Option<LogIdOf<TypeConfig>>, StoredMembershipOf<TypeConfig>)> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<S>(&mut self, mut entries: S) -> io::Result<()>
    where
        S: Stream<Item = io::Result<EntryResponder<TypeConfig>>> + Unpin + OptionalSend,
    {
        let mut applied = None;
        let result = self.apply_each(&mut entries, &mut applied).await;
        if let Some(zxid) = applied {
            self.shared.applied.send_replace(zxid);
        }
        result
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        // A copy, not the bytes: the copy shares the nodes with the live state, so taking it
        // costs next to nothing and the writes go on while the builder serializes it.
        let state = self.shared.read(ZnodeState::clone);
        ZnodeSnapshotBuilder {
            state: Arc::new(state),
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            snapshot: self.snapshot.clone(),
            path: self.snapshot_path.clone(),
        }
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMetaOf<TypeConfig>, data: Vec<u8>) -> io::Result<()> {
        let invalid = |e: String| io::Error::new(io::ErrorKind::InvalidData, e);
        let body: SnapshotBody = postcard::from_bytes(&data).map_err(|e| invalid(e.to_string()))?;
        let state = ZnodeState::restore(&body.state, self.config.clone()).map_err(|e| invalid(e.to_string()))?;
        save(&self.snapshot_path, &self.snapshot, meta, &data)?;
        self.last_applied = body.last_applied;
        self.membership = body.membership;
        let zxid = self.last_applied.as_ref().map(|l| l.index as Zxid).unwrap_or(0);
        {
            let mut current = self.shared.state.write().unwrap_or_else(|e| e.into_inner());
            *current = state;
            self.shared.last.store(zxid as u64, Ordering::Release);
        }
        self.shared.applied.send_replace(zxid);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> io::Result<Option<SnapshotOf<TypeConfig, Vec<u8>>>> {
        if self.snapshot.lock().unwrap_or_else(|e| e.into_inner()).is_none() {
            return Ok(None);
        }
        let path = self.snapshot_path.clone();
        let stored = tokio::task::spawn_blocking(move || load(&path)).await.map_err(io::Error::other)?;
        let stored = stored.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("snapshot: {e}")))?;
        Ok(stored.map(|s| SnapshotOf::<TypeConfig, Vec<u8>> { meta: s.meta, snapshot: s.data }))
    }
}

/// Serializes the copy of the state taken when the builder was made, on a thread of its own
/// (see [`in_background`]).
pub struct ZnodeSnapshotBuilder {
    state: Arc<ZnodeState>,
    last_applied: Option<LogIdOf<TypeConfig>>,
    membership: StoredMembershipOf<TypeConfig>,
    snapshot: Arc<Mutex<Option<SnapshotMetaOf<TypeConfig>>>>,
    path: PathBuf,
}

/// Runs `work` on a new thread of low scheduling priority and yields its result. A snapshot of
/// a large tree takes long enough to hold up every task of a runtime worker, and it is
/// background work: the writes and reads the clients wait for go first.
async fn in_background<T: Send + 'static>(work: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<T> {
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new().name("snapshot".into()).spawn(move || {
        crate::background::lower_thread_priority();
        let _ = done.send(work());
    })?;
    result.await.map_err(|_| io::Error::other("the snapshot thread panicked"))?
}

impl RaftSnapshotBuilder<TypeConfig> for ZnodeSnapshotBuilder {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> io::Result<SnapshotOf<TypeConfig, Vec<u8>>> {
        let meta =
            SnapshotMetaOf::<TypeConfig> { last_log_id: self.last_applied, last_membership: self.membership.clone() };
        let (state, path, current, saved) =
            (self.state.clone(), self.path.clone(), self.snapshot.clone(), meta.clone());
        let data = in_background(move || {
            let body = SnapshotBody {
                last_applied: saved.last_log_id,
                membership: saved.last_membership.clone(),
                state: state.snapshot(),
            };
            let data = postcard::to_stdvec(&body).map_err(io::Error::other)?;
            save(&path, &current, &saved, &data).map(|()| data)
        })
        .await?;
        Ok(SnapshotOf::<TypeConfig, Vec<u8>> { meta, snapshot: data })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_file_with_any_flipped_bit_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SNAPSHOT_FILE);
        let meta = SnapshotMetaOf::<TypeConfig>::default();
        save(&path, &Mutex::new(None), &meta, &[1, 2, 3, 4]).unwrap();
        let file = fs::read(&path).unwrap();
        assert!(checked_body(&file).is_ok());
        for i in 0..file.len() {
            let mut damaged = file.clone();
            damaged[i] ^= 0x10;
            assert!(checked_body(&damaged).is_err(), "a flip at byte {i} went unnoticed");
        }
        assert!(checked_body(&file[..file.len() - 1]).is_err());
    }
}
