//! Master election with ZooKeeper's ephemeral-sequential recipe, and the epoch that fences a
//! master's writes.
//!
//! Each master candidate creates an ephemeral-sequential znode under
//! [`CANDIDATES`](super::paths::CANDIDATES); the candidate with the lowest sequence number leads,
//! and every other one watches only the candidate just ahead of it (no herd when the leader
//! goes). A candidate that becomes leader bumps the version of [`EPOCH`](super::paths::EPOCH):
//! that version is its epoch. Every write a master makes is a multi that first checks the
//! epoch's version ([`Fence`]), so a deposed master — one whose session expired while it was
//! paused, say — cannot write once a successor has bumped the epoch, even if it still believes
//! it leads.

use zookeeper_client as zk;

use super::paths;

/// Creates the cluster's persistent znodes that are missing (`/squall/...` and the epoch).
pub async fn ensure_skeleton(client: &zk::Client) -> Result<(), zk::Error> {
    let persistent = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    for path in paths::SKELETON.iter().copied().chain([paths::EPOCH]) {
        match client.create(path, b"", &persistent).await {
            Ok(_) | Err(zk::Error::NodeExists) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// One master candidate: its place in the queue.
pub struct Candidate {
    client: zk::Client,
    node: String,
    /// The candidate znode's name under `CANDIDATES`.
    name: String,
}

/// What a candidate gets when it leads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leadership {
    /// This master's epoch: the version of the epoch znode after its bump.
    pub epoch: i32,
}

impl Candidate {
    /// Enters the election for node `node` (the candidate lives as long as `client`'s
    /// session).
    pub async fn join(client: &zk::Client, node: &str) -> Result<Candidate, zk::Error> {
        ensure_skeleton(client).await?;
        let options = zk::CreateMode::EphemeralSequential.with_acls(zk::Acls::anyone_all());
        let (_, sequence) = client.create(&format!("{}/c-", paths::CANDIDATES), node.as_bytes(), &options).await?;
        Ok(Candidate { client: client.clone(), node: node.to_string(), name: format!("c-{sequence}") })
    }

    /// Waits until this candidate is the first in line, then takes a new epoch.
    pub async fn lead(&self) -> Result<Leadership, zk::Error> {
        loop {
            let mut candidates = self.client.list_children(paths::CANDIDATES).await?;
            candidates.sort();
            let Some(place) = candidates.iter().position(|c| *c == self.name) else {
                // Our candidate znode is gone: the session expired.
                return Err(zk::Error::SessionExpired);
            };
            if place == 0 {
                let stat = self.client.set_data(paths::EPOCH, self.node.as_bytes(), None).await?;
                return Ok(Leadership { epoch: stat.version });
            }
            let ahead = format!("{}/{}", paths::CANDIDATES, candidates[place - 1]);
            let (stat, watcher) = self.client.check_and_watch_stat(&ahead).await?;
            if stat.is_some() {
                watcher.changed().await;
            }
        }
    }

    /// The node this candidate stands for.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Whether another candidate is in line (one could take over if this one resigned).
    pub async fn others_waiting(&self) -> Result<bool, zk::Error> {
        Ok(self.client.list_children(paths::CANDIDATES).await?.iter().any(|c| *c != self.name))
    }

    /// Leaves the election: the next candidate in line leads.
    pub async fn resign(self) -> Result<(), zk::Error> {
        match self.client.delete(&format!("{}/{}", paths::CANDIDATES, self.name), None).await {
            Ok(()) | Err(zk::Error::NoNode) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// The fencing token of a master: writes made through [`Fence::writer`] apply only while the
/// epoch is still this master's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fence {
    /// The epoch the writes are checked against.
    pub epoch: i32,
}

impl Fence {
    /// A multi whose first operation checks the epoch; add the writes and commit it.
    pub fn writer<'a>(&self, client: &'a zk::Client) -> zk::MultiWriter<'a> {
        let mut writer = client.new_multi_writer();
        writer.add_check_version(paths::EPOCH, self.epoch).expect("the epoch path is valid");
        writer
    }

    /// Whether a fenced multi failed because another master has taken a newer epoch.
    pub fn is_fenced_out(error: &zk::MultiWriteError) -> bool {
        matches!(error, zk::MultiWriteError::OperationFailed { index: 0, source: zk::Error::BadVersion })
    }
}
