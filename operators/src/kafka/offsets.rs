//! What a `kafka` spout task knows of one partition's progress.
//!
//! [`PartitionProgress`] keeps the messages the task emitted and has not seen acked, and the
//! position after the last message it received. Its commit point — the offset the task may
//! write to the store — is the lowest offset still pending, or the position when nothing is:
//! every message below it was acked. Offsets need not be consecutive (compaction, transaction
//! markers), so the point is never "last acked + 1".
//!
//! [`OffsetZnode`] writes that point to `/squall/offsets/<topology>/<spout>/<topic>/<partition>`
//! as `{"offset": N}` with a versioned write: the task writes only over the version it last
//! read or wrote, so a task that lost the partition to another (failover, rebalance) cannot
//! overwrite its new owner's progress. A task that starts a partition claims it first (writes
//! the znode at once, moving its version), so that it is the earlier owner's late commit that
//! fails, never the new owner's.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use squall_runtime::{Coordination, CoordinationError, Value};

/// A message emitted and not yet acked, kept to emit again as it was when it fails.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct PendingMessage {
    pub(crate) key: Value,
    pub(crate) value: Value,
}

/// The messages of one partition in flight, and how far the task has read it.
#[derive(Debug, Default)]
pub(crate) struct PartitionProgress {
    /// Emitted and not acked, by offset.
    pending: BTreeMap<i64, PendingMessage>,
    /// The offset after the last message received; `None` until the first one when the
    /// partition started at a logical offset (earliest or latest).
    position: Option<i64>,
}

impl PartitionProgress {
    /// A partition read from `start` (`None`: from an offset not known yet).
    pub(crate) fn new(start: Option<i64>) -> Self {
        PartitionProgress { pending: BTreeMap::new(), position: start }
    }

    /// Records a message received at `offset`. A message below the position was read
    /// before and is refused (`false`), so an offset is never pending twice.
    pub(crate) fn received(&mut self, offset: i64, message: PendingMessage) -> bool {
        if self.position.is_some_and(|position| offset < position) {
            return false;
        }
        self.position = Some(offset + 1);
        self.pending.insert(offset, message);
        true
    }

    /// Records the ack of the message at `offset`; `false` if it was not pending.
    pub(crate) fn acked(&mut self, offset: i64) -> bool {
        self.pending.remove(&offset).is_some()
    }

    /// The pending message at `offset`.
    pub(crate) fn get(&self, offset: i64) -> Option<&PendingMessage> {
        self.pending.get(&offset)
    }

    /// Forgets every pending message (the partition went to another task); returns how many.
    pub(crate) fn clear(&mut self) -> usize {
        let n = self.pending.len();
        self.pending.clear();
        n
    }

    /// The offset after the last message received.
    pub(crate) fn position(&self) -> Option<i64> {
        self.position
    }

    /// The offset to commit: every message received below it was acked.
    pub(crate) fn commit_point(&self) -> Option<i64> {
        self.pending.keys().next().copied().or(self.position)
    }
}

/// What an offset znode holds.
#[derive(Debug, Deserialize, Serialize)]
struct StoredOffset {
    offset: i64,
}

/// What became of a commit.
#[derive(Debug, PartialEq)]
pub(crate) enum Commit {
    /// The znode holds the offset now (or held it already).
    Done,
    /// The store could not be reached or refused: try again later.
    Retry(String),
    /// Someone else wrote the znode since this task last read or wrote it: the partition is
    /// not this task's any more.
    Lost,
}

/// One partition's offset znode, as this task last read or wrote it.
#[derive(Debug)]
pub(crate) struct OffsetZnode {
    path: String,
    /// Its version; `None` while there is no znode.
    version: Option<i32>,
    /// The offset it holds.
    committed: Option<i64>,
    /// The offset of a write whose outcome is unknown (the store did not answer in time).
    unsure: Option<i64>,
}

impl OffsetZnode {
    /// Reads the znode at `path`.
    pub(crate) fn load(coordination: &Coordination, path: String) -> Result<Self, String> {
        let (committed, version) = match coordination.read(&path).map_err(|e| e.to_string())? {
            None => (None, None),
            Some((data, version)) => (Some(parse(&path, &data)?), Some(version)),
        };
        Ok(OffsetZnode { path, version, committed, unsure: None })
    }

    /// The znode's path.
    pub(crate) fn path(&self) -> &str {
        &self.path
    }

    /// The offset it holds, as far as this task knows.
    pub(crate) fn committed(&self) -> Option<i64> {
        self.committed
    }

    /// Takes the partition over: writes `offset` (the offset the znode holds, or where the
    /// task starts when there is none) even if the znode holds it already, so that its version
    /// moves past what any earlier owner read, and that owner's next commit fails.
    pub(crate) fn claim(&mut self, coordination: &Coordination, offset: i64) -> Commit {
        self.write(coordination, offset, true)
    }

    /// Writes `offset` unless the znode holds it already.
    pub(crate) fn commit(&mut self, coordination: &Coordination, offset: i64) -> Commit {
        self.write(coordination, offset, false)
    }

    fn write(&mut self, coordination: &Coordination, offset: i64, force: bool) -> Commit {
        if let Some(unsure) = self.unsure.take() {
            match self.settle_unsure(coordination, unsure) {
                Commit::Done => {}
                other => return other,
            }
        }
        if self.committed == Some(offset) && !force {
            return Commit::Done;
        }
        let data = serde_json::to_vec(&StoredOffset { offset }).expect("an integer serializes");
        match coordination.write(&self.path, &data, self.version) {
            Ok(version) => {
                self.version = Some(version);
                self.committed = Some(offset);
                Commit::Done
            }
            Err(CoordinationError::Conflict { .. }) => Commit::Lost,
            Err(CoordinationError::Unavailable(why)) => {
                self.unsure = Some(offset);
                Commit::Retry(why)
            }
            Err(other) => Commit::Retry(other.to_string()),
        }
    }

    /// Finds out whether a write that got no answer took place: the znode is one version
    /// past ours and holds what we wrote (ours), still at our version (it did not), or
    /// anything else (someone else's).
    fn settle_unsure(&mut self, coordination: &Coordination, unsure: i64) -> Commit {
        let now = match coordination.read(&self.path) {
            Ok(now) => now,
            Err(e) => {
                self.unsure = Some(unsure);
                return Commit::Retry(e.to_string());
            }
        };
        let ours_next = self.version.map_or(0, |v| v + 1);
        match now {
            None if self.version.is_none() => Commit::Done,
            Some((_, version)) if Some(version) == self.version => Commit::Done,
            Some((data, version)) if version == ours_next && parse(&self.path, &data) == Ok(unsure) => {
                self.version = Some(version);
                self.committed = Some(unsure);
                Commit::Done
            }
            _ => Commit::Lost,
        }
    }
}

fn parse(path: &str, data: &[u8]) -> Result<i64, String> {
    match serde_json::from_slice::<StoredOffset>(data) {
        Ok(stored) if stored.offset >= 0 => Ok(stored.offset),
        _ => Err(format!(
            "{path} holds {:?}, not {{\"offset\": N}} with N ≥ 0: correct it, or delete it to start the partition over",
            String::from_utf8_lossy(data)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::testing::Store;

    fn message(n: i64) -> PendingMessage {
        PendingMessage { key: Value::Null, value: Value::Int(n) }
    }

    #[test]
    fn the_commit_point_is_the_first_unacked_offset() {
        let mut progress = PartitionProgress::new(Some(10));
        assert_eq!(progress.commit_point(), Some(10), "nothing read: the start");
        for offset in 10..15 {
            assert!(progress.received(offset, message(offset)));
        }
        // Acks out of order: the point moves only over a contiguous acked prefix.
        assert!(progress.acked(12));
        assert!(progress.acked(14));
        assert_eq!(progress.commit_point(), Some(10));
        assert!(progress.acked(10));
        assert_eq!(progress.commit_point(), Some(11));
        assert!(progress.acked(11));
        assert_eq!(progress.commit_point(), Some(13), "12 was acked, 13 is not");
        assert!(!progress.acked(12), "already acked");
        assert!(progress.acked(13));
        assert_eq!(progress.commit_point(), Some(15), "everything acked: the position");
        assert_eq!(progress.clear(), 0, "nothing pending");
    }

    #[test]
    fn gaps_in_offsets_do_not_hold_the_point_back() {
        let mut progress = PartitionProgress::new(Some(0));
        assert!(progress.received(3, message(3)));
        assert!(progress.received(7, message(7)));
        assert_eq!(progress.commit_point(), Some(3));
        assert!(progress.acked(3));
        assert_eq!(progress.commit_point(), Some(7));
        assert!(progress.acked(7));
        assert_eq!(progress.commit_point(), Some(8));
    }

    #[test]
    fn a_logical_start_has_no_point_until_a_message_arrives() {
        let mut progress = PartitionProgress::new(None);
        assert_eq!(progress.commit_point(), None);
        assert!(progress.received(42, message(42)));
        assert_eq!(progress.commit_point(), Some(42));
        assert_eq!(progress.get(42), Some(&message(42)));
        assert!(!progress.received(41, message(41)), "below the position: read before");
        assert_eq!(progress.clear(), 1);
        assert_eq!(progress.commit_point(), Some(43));
    }

    #[test]
    fn a_foreign_write_loses_the_partition_and_is_not_overwritten() {
        let store = Store::start();
        let ours = store.session("t");
        let theirs = store.session("t");
        let path = "/squall/offsets/t/s/topic/0".to_string();
        let mut znode = OffsetZnode::load(&ours, path.clone()).unwrap();
        assert_eq!(znode.committed(), None);
        assert_eq!(znode.commit(&ours, 5), Commit::Done, "created");
        assert_eq!(znode.commit(&ours, 9), Commit::Done, "updated over our version");
        assert_eq!(store.offset(&path), Some(9));
        assert_eq!(znode.commit(&ours, 9), Commit::Done, "nothing new: no write");

        let (_, version) = theirs.read(&path).unwrap().unwrap();
        theirs.write(&path, br#"{"offset": 100}"#, Some(version)).unwrap();
        assert_eq!(znode.commit(&ours, 12), Commit::Lost);
        assert_eq!(store.offset(&path), Some(100));

        // A znode created by another task first is not ours either.
        let other = "/squall/offsets/t/s/topic/1".to_string();
        let mut late = OffsetZnode::load(&ours, other.clone()).unwrap();
        theirs.write(&other, br#"{"offset": 7}"#, None).unwrap();
        assert_eq!(late.commit(&ours, 3), Commit::Lost);
        assert_eq!(store.offset(&other), Some(7));
    }

    #[test]
    fn a_new_owner_claims_the_partition_and_the_old_one_loses_it() {
        let store = Store::start();
        let (old_owner, new_owner) = (store.session("t"), store.session("t"));
        let path = "/squall/offsets/t/s/topic/0".to_string();
        let mut old = OffsetZnode::load(&old_owner, path.clone()).unwrap();
        assert_eq!(old.commit(&old_owner, 40), Commit::Done);

        // The new owner reads 40 and claims it before the old one's last commit.
        let mut new = OffsetZnode::load(&new_owner, path.clone()).unwrap();
        assert_eq!(new.committed(), Some(40));
        assert_eq!(new.claim(&new_owner, 40), Commit::Done);
        assert_eq!(old.commit(&old_owner, 55), Commit::Lost, "the old owner's late commit is refused");
        assert_eq!(store.offset(&path), Some(40));
        assert_eq!(new.commit(&new_owner, 60), Commit::Done);
        assert_eq!(store.offset(&path), Some(60));

        // With no znode yet, the claim creates it at the start offset.
        let fresh = "/squall/offsets/t/s/topic/1".to_string();
        let mut first = OffsetZnode::load(&new_owner, fresh.clone()).unwrap();
        assert_eq!(first.claim(&new_owner, 0), Commit::Done);
        assert_eq!(store.offset(&fresh), Some(0));
    }

    #[test]
    fn an_unanswered_write_is_settled_by_reading_back() {
        let store = Store::start();
        let ours = store.session("t");
        let path = "/squall/offsets/t/s/topic/0".to_string();
        let mut znode = OffsetZnode::load(&ours, path.clone()).unwrap();
        assert_eq!(znode.commit(&ours, 5), Commit::Done);
        // As if the write of 8 reached the store but its answer did not.
        ours.write(&path, br#"{"offset":8}"#, Some(0)).unwrap();
        znode.unsure = Some(8);
        assert_eq!(znode.commit(&ours, 10), Commit::Done, "the write was ours: go on");
        assert_eq!(store.offset(&path), Some(10));
        // As if a write of 11 never reached the store.
        znode.unsure = Some(11);
        assert_eq!(znode.commit(&ours, 12), Commit::Done);
        assert_eq!(store.offset(&path), Some(12));
    }

    #[test]
    fn unreadable_znodes_say_how_to_fix_them() {
        let store = Store::start();
        let ours = store.session("t");
        let path = "/squall/offsets/t/s/topic/0".to_string();
        ours.write(&path, b"garbage", None).unwrap();
        let err = OffsetZnode::load(&ours, path.clone()).unwrap_err();
        assert!(err.contains(&path) && err.contains("\"garbage\"") && err.contains("delete it"), "{err}");
    }
}
