//! The stand-in state machine: a key-value map in memory, snapshots as files.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;

use futures::Stream;
use futures::StreamExt;
use openraft::EntryPayload;
use openraft::OptionalSend;
use openraft::RaftSnapshotBuilder;
use openraft::alias::LogIdOf;
use openraft::alias::SnapshotMetaOf;
use openraft::alias::SnapshotOf;
use openraft::alias::StoredMembershipOf;
use openraft::storage::EntryResponder;
use openraft::storage::RaftStateMachine;
use serde::Deserialize;
use serde::Serialize;

openraft::declare_raft_types!(
    /// The test cluster's type config: puts of strings.
    pub(crate) Kv: D = KvRequest, R = KvResponse
);

/// Sets `key` to `value`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct KvRequest {
    pub key: String,
    pub value: String,
}

impl fmt::Display for KvRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.key, self.value)
    }
}

/// The value the key had before.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct KvResponse(pub Option<String>);

/// Everything the state machine holds; also the snapshot's contents.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct KvState {
    pub last_applied: Option<LogIdOf<Kv>>,
    pub membership: StoredMembershipOf<Kv>,
    pub map: BTreeMap<String, String>,
}

/// A snapshot: its metadata and the postcard bytes of a [`KvState`].
#[derive(Clone, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMetaOf<Kv>,
    data: Vec<u8>,
}

pub(crate) struct KvStateMachine {
    state: Arc<Mutex<KvState>>,
    snapshot: Arc<Mutex<Option<StoredSnapshot>>>,
    snapshot_path: PathBuf,
}

const SNAPSHOT_FILE: &str = "kv.snapshot";

impl KvStateMachine {
    /// Loads the last snapshot saved in `dir`, if any.
    pub(crate) fn open(dir: &Path) -> io::Result<Self> {
        let snapshot_path = dir.join(SNAPSHOT_FILE);
        let (state, snapshot) = match fs::read(&snapshot_path) {
            Ok(bytes) => {
                let snapshot: StoredSnapshot = postcard::from_bytes(&bytes).map_err(io::Error::other)?;
                (postcard::from_bytes(&snapshot.data).map_err(io::Error::other)?, Some(snapshot))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => (KvState::default(), None),
            Err(e) => return Err(e),
        };
        Ok(Self { state: Arc::new(Mutex::new(state)), snapshot: Arc::new(Mutex::new(snapshot)), snapshot_path })
    }

    /// A live view of the state, for the tests' assertions.
    pub(crate) fn state(&self) -> Arc<Mutex<KvState>> {
        self.state.clone()
    }
}

/// Writes a snapshot file atomically and makes it current.
fn save(path: &Path, current: &Mutex<Option<StoredSnapshot>>, snapshot: StoredSnapshot) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, postcard::to_stdvec(&snapshot).map_err(io::Error::other)?)?;
    fs::File::open(&tmp)?.sync_all()?;
    fs::rename(&tmp, path)?;
    *current.lock().unwrap() = Some(snapshot);
    Ok(())
}

impl RaftStateMachine<Kv> for KvStateMachine {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = KvSnapshotBuilder;

    async fn applied_state(&mut self) -> io::Result<(Option<LogIdOf<Kv>>, StoredMembershipOf<Kv>)> {
        let state = self.state.lock().unwrap();
        Ok((state.last_applied, state.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> io::Result<()>
    where
        Strm: Stream<Item = io::Result<EntryResponder<Kv>>> + Unpin + OptionalSend,
    {
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let response = {
                let mut state = self.state.lock().unwrap();
                state.last_applied = Some(entry.log_id);
                match entry.payload {
                    EntryPayload::Blank => KvResponse(None),
                    EntryPayload::Normal(put) => KvResponse(state.map.insert(put.key, put.value)),
                    EntryPayload::Membership(membership) => {
                        state.membership = StoredMembershipOf::<Kv>::new(Some(entry.log_id), membership);
                        KvResponse(None)
                    }
                }
            };
            if let Some(responder) = responder {
                responder.send(response);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        KvSnapshotBuilder {
            state: self.state.lock().unwrap().clone(),
            snapshot: self.snapshot.clone(),
            path: self.snapshot_path.clone(),
        }
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMetaOf<Kv>, data: Vec<u8>) -> io::Result<()> {
        let state: KvState = postcard::from_bytes(&data).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        save(&self.snapshot_path, &self.snapshot, StoredSnapshot { meta: meta.clone(), data })?;
        *self.state.lock().unwrap() = state;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> io::Result<Option<SnapshotOf<Kv, Vec<u8>>>> {
        let current = self.snapshot.lock().unwrap().clone();
        Ok(current.map(|s| SnapshotOf::<Kv, Vec<u8>> { meta: s.meta, snapshot: s.data }))
    }
}

/// Serializes the copy of the state taken when the builder was made.
pub(crate) struct KvSnapshotBuilder {
    state: KvState,
    snapshot: Arc<Mutex<Option<StoredSnapshot>>>,
    path: PathBuf,
}

impl RaftSnapshotBuilder<Kv> for KvSnapshotBuilder {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> io::Result<SnapshotOf<Kv, Vec<u8>>> {
        let data = postcard::to_stdvec(&self.state).map_err(io::Error::other)?;
        let meta = SnapshotMetaOf::<Kv> {
            last_log_id: self.state.last_applied,
            last_membership: self.state.membership.clone(),
        };
        save(&self.path, &self.snapshot, StoredSnapshot { meta: meta.clone(), data: data.clone() })?;
        Ok(SnapshotOf::<Kv, Vec<u8>> { meta, snapshot: data })
    }
}
