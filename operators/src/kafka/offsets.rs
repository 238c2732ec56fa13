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
//!
//! Commits are written in the background ([`OffsetZnode::start_commit`], then
//! [`OffsetZnode::poll`] or [`OffsetZnode::wait`]), so that the task keeps emitting while the
//! store is slow — a new Raft leader being elected takes about a second. A znode has at most
//! one write under way: each write expects the version the one before it made.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use squall_runtime::{Coordination, CoordinationError, PendingWrite, Value};

/// A message emitted and not yet acked, kept to emit again as it was when it fails.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct PendingMessage {
    pub(crate) key: Value,
    pub(crate) value: Value,
}

/// A received message in its partition's window.
#[derive(Debug)]
struct Received {
    offset: i64,
    /// `None` once acked.
    message: Option<PendingMessage>,
}

/// Acked messages are dropped from the middle of a window only once there are more of them
/// than pending ones and at least this many, so that dropping them costs O(1) per ack.
const COMPACT_AT: usize = 1024;

/// The messages of one partition in flight, and how far the task has read it.
///
/// The messages are kept in a window in offset order (they arrive in that order), not in a
/// map: a message is appended when it arrives, marked when it is acked, and dropped once every
/// message before it is acked too, so the first message of the window is the commit point.
/// Acks come mostly in order, so most of them drop the first message at once; a message acked
/// out of order is found at `offset − first offset` when the offsets have no gaps, by binary
/// search otherwise. Acked messages behind a pending one are dropped when they outnumber the
/// pending ones, so the window never holds more than about twice what is pending.
#[derive(Debug, Default)]
pub(crate) struct PartitionProgress {
    /// Received and not dropped, by increasing offset; the first one is never acked.
    window: VecDeque<Received>,
    /// How many messages of the window are acked.
    acked: usize,
    /// The offset after the last message received; `None` until the first one when the
    /// partition started at a logical offset (earliest or latest).
    position: Option<i64>,
}

impl PartitionProgress {
    /// A partition read from `start` (`None`: from an offset not known yet).
    pub(crate) fn new(start: Option<i64>) -> Self {
        PartitionProgress { window: VecDeque::new(), acked: 0, position: start }
    }

    /// Records a message received at `offset`. A message below the position was read
    /// before and is refused (`false`), so an offset is never pending twice.
    pub(crate) fn received(&mut self, offset: i64, message: PendingMessage) -> bool {
        if self.position.is_some_and(|position| offset < position) {
            return false;
        }
        self.position = Some(offset + 1);
        self.window.push_back(Received { offset, message: Some(message) });
        true
    }

    /// Records the ack of the message at `offset`; `false` if it was not pending.
    pub(crate) fn acked(&mut self, offset: i64) -> bool {
        let Some(index) = self.find(offset) else { return false };
        if self.window[index].message.take().is_none() {
            return false;
        }
        self.acked += 1;
        while self.window.front().is_some_and(|first| first.message.is_none()) {
            self.window.pop_front();
            self.acked -= 1;
        }
        if self.acked >= COMPACT_AT && self.acked > self.pending() {
            self.window.retain(|received| received.message.is_some());
            self.acked = 0;
        }
        true
    }

    /// The pending message at `offset`.
    pub(crate) fn get(&self, offset: i64) -> Option<&PendingMessage> {
        self.window[self.find(offset)?].message.as_ref()
    }

    /// Where the message at `offset` is in the window.
    fn find(&self, offset: i64) -> Option<usize> {
        let first = self.window.front()?.offset;
        let guess = usize::try_from(offset.checked_sub(first)?).ok()?;
        if self.window.get(guess).is_some_and(|received| received.offset == offset) {
            return Some(guess);
        }
        // Gaps in the offsets (or acked messages dropped) put it before the guess.
        self.window.binary_search_by_key(&offset, |received| received.offset).ok()
    }

    /// How many messages are pending.
    fn pending(&self) -> usize {
        self.window.len() - self.acked
    }

    /// Forgets every pending message (the partition went to another task); returns how many.
    pub(crate) fn clear(&mut self) -> usize {
        let n = self.pending();
        self.window.clear();
        self.acked = 0;
        n
    }

    /// The offset after the last message received.
    pub(crate) fn position(&self) -> Option<i64> {
        self.position
    }

    /// The offset to commit: every message received below it was acked.
    pub(crate) fn commit_point(&self) -> Option<i64> {
        self.window.front().map(|first| first.offset).or(self.position)
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
    /// The write under way, and the offset it writes.
    writing: Option<(i64, PendingWrite)>,
}

impl OffsetZnode {
    /// Reads the znode at `path`.
    pub(crate) fn load(coordination: &Coordination, path: String) -> Result<Self, String> {
        let (committed, version) = match coordination.read(&path).map_err(|e| e.to_string())? {
            None => (None, None),
            Some((data, version)) => (Some(parse(&path, &data)?), Some(version)),
        };
        Ok(OffsetZnode { path, version, committed, unsure: None, writing: None })
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
    /// moves past what any earlier owner read, and that owner's next commit fails. Waits for
    /// the write.
    pub(crate) fn claim(&mut self, coordination: &Coordination, offset: i64) -> Commit {
        self.write(coordination, offset, true)
    }

    /// Writes `offset` unless the znode holds it already, and waits for the write (and first
    /// for a write under way). The task commits in the background; the tests use this.
    #[cfg(test)]
    pub(crate) fn commit(&mut self, coordination: &Coordination, offset: i64) -> Commit {
        self.write(coordination, offset, false)
    }

    /// Starts writing `offset` in the background unless the znode holds it already: `None`
    /// once started (its outcome comes from [`poll`](Self::poll) or [`wait`](Self::wait)), or
    /// the outcome when it was decided at once. Call it only while no write is under way.
    ///
    /// After a write that got no answer, the znode is read first to settle what became of it;
    /// that read waits (a read is answered by the replica the session is on, without the Raft
    /// leader, so an election does not hold it up).
    pub(crate) fn start_commit(&mut self, coordination: &Coordination, offset: i64) -> Option<Commit> {
        self.start_write(coordination, offset, false)
    }

    /// Whether a write is under way.
    pub(crate) fn writing(&self) -> bool {
        self.writing.is_some()
    }

    /// The outcome of the write under way, once there is one; `None` while it is under way or
    /// when there is none.
    pub(crate) fn poll(&mut self) -> Option<Commit> {
        let (offset, write) = self.writing.as_mut()?;
        let (offset, outcome) = (*offset, write.outcome()?);
        self.writing = None;
        Some(self.written(offset, outcome))
    }

    /// Waits for the outcome of the write under way; `None` when there is none.
    pub(crate) fn wait(&mut self) -> Option<Commit> {
        let (offset, write) = self.writing.take()?;
        Some(self.written(offset, write.wait()))
    }

    fn write(&mut self, coordination: &Coordination, offset: i64, force: bool) -> Commit {
        if self.wait() == Some(Commit::Lost) {
            return Commit::Lost;
        }
        match self.start_write(coordination, offset, force) {
            Some(decided) => decided,
            None => self.wait().expect("a write was just started"),
        }
    }

    fn start_write(&mut self, coordination: &Coordination, offset: i64, force: bool) -> Option<Commit> {
        // A second write would expect the version the first one is about to replace, and fail
        // as if someone else had written.
        assert!(self.writing.is_none(), "{}: a write is under way already", self.path);
        if let Some(unsure) = self.unsure.take() {
            match self.settle_unsure(coordination, unsure) {
                Commit::Done => {}
                other => return Some(other),
            }
        }
        if self.committed == Some(offset) && !force {
            return Some(Commit::Done);
        }
        let data = serde_json::to_vec(&StoredOffset { offset }).expect("an integer serializes");
        self.writing = Some((offset, coordination.write_in_background(&self.path, data, self.version)));
        None
    }

    /// Takes in the outcome of the write of `offset`.
    fn written(&mut self, offset: i64, outcome: Result<i32, CoordinationError>) -> Commit {
        match outcome {
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
    fn acked_messages_behind_a_pending_one_are_dropped_and_the_rest_still_found() {
        let mut progress = PartitionProgress::new(Some(0));
        // Every other offset, as after compaction.
        let n = 10 * COMPACT_AT as i64;
        for offset in (0..n).map(|i| 2 * i) {
            assert!(progress.received(offset, message(offset)));
        }
        // Everything but the first and every tenth is acked: the first holds the point back.
        for offset in (1..n).filter(|i| i % 10 != 0).map(|i| 2 * i) {
            assert!(progress.acked(offset), "{offset}");
            assert!(progress.window.len() <= 2 * progress.pending() + COMPACT_AT);
        }
        assert_eq!(progress.commit_point(), Some(0));
        assert_eq!(progress.pending(), n as usize / 10);
        assert_eq!(progress.get(20), Some(&message(20)));
        assert_eq!(progress.get(22), None, "acked");
        assert!(!progress.acked(22), "acked before");
        assert!(!progress.acked(21), "never received");
        assert!(!progress.acked(2 * n), "not received yet");
        assert!(!progress.acked(-1));
        assert!(progress.acked(0));
        assert_eq!(progress.commit_point(), Some(20));
        for offset in (1..n / 10).map(|i| 20 * i) {
            assert!(progress.acked(offset), "{offset}");
        }
        assert_eq!((progress.pending(), progress.window.len()), (0, 0));
        assert_eq!(progress.commit_point(), Some(2 * n - 1), "the position");
    }

    /// The window against a map of the pending messages, on a seeded mix of arrivals (with
    /// gaps), acks in any order and acks of offsets that are not pending.
    #[test]
    fn the_window_agrees_with_a_map_of_the_pending_messages() {
        for seed in 1..=10u64 {
            let mut state = seed;
            let mut random = move |n: u64| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state % n
            };
            let mut progress = PartitionProgress::new(Some(100));
            let mut model = std::collections::BTreeMap::new();
            let mut next = 100;
            for _ in 0..20_000 {
                match random(10) {
                    0..=4 if model.len() < 3000 => {
                        next += random(3) as i64;
                        assert!(progress.received(next, message(next)));
                        model.insert(next, message(next));
                        next += 1;
                    }
                    0..=6 if !model.is_empty() => {
                        let offset = *model.keys().nth(random(model.len() as u64) as usize).unwrap();
                        assert!(progress.acked(offset));
                        model.remove(&offset);
                    }
                    _ => {
                        let offset = 100 + random((next - 99) as u64) as i64;
                        assert_eq!(progress.get(offset), model.get(&offset), "seed {seed}");
                        assert_eq!(progress.acked(offset), model.remove(&offset).is_some(), "seed {seed}");
                    }
                }
                let point = model.keys().next().copied().unwrap_or(next);
                assert_eq!(progress.commit_point(), Some(point), "seed {seed}");
                assert_eq!(progress.pending(), model.len(), "seed {seed}");
                assert!(progress.window.len() <= 2 * model.len() + COMPACT_AT, "seed {seed}");
            }
        }
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

    /// Guarantee: a commit written in the background lands like a waited one, and one that an
    /// old owner started before a new owner's claim is refused when it arrives.
    #[test]
    fn background_commits_land_or_are_refused_to_an_old_owner() {
        let store = Store::start();
        let (old_owner, new_owner) = (store.session("t"), store.session("t"));
        let path = "/squall/offsets/t/s/topic/0".to_string();
        let mut old = OffsetZnode::load(&old_owner, path.clone()).unwrap();
        assert_eq!(old.start_commit(&old_owner, 40), None, "started");
        assert!(old.writing());
        let deadline = std::time::Instant::now() + crate::kafka::testing::DEADLINE;
        let outcome = loop {
            if let Some(outcome) = old.poll() {
                break outcome;
            }
            assert!(std::time::Instant::now() < deadline, "no answer");
            std::thread::sleep(std::time::Duration::from_millis(1));
        };
        assert_eq!((outcome, old.writing(), old.committed()), (Commit::Done, false, Some(40)));
        assert_eq!(store.offset(&path), Some(40));
        assert_eq!(old.start_commit(&old_owner, 40), Some(Commit::Done), "held already: no write");
        assert_eq!(old.poll(), None, "nothing under way");

        // The old owner's next commit is under way when the new owner claims the partition.
        let mut new = OffsetZnode::load(&new_owner, path.clone()).unwrap();
        assert_eq!(new.claim(&new_owner, 40), Commit::Done);
        assert_eq!(old.start_commit(&old_owner, 55), None);
        assert_eq!(old.wait(), Some(Commit::Lost), "the old owner's late commit is refused");
        assert_eq!(store.offset(&path), Some(40));
        assert_eq!(new.start_commit(&new_owner, 60), None);
        assert_eq!(new.wait(), Some(Commit::Done));
        assert_eq!(store.offset(&path), Some(60));
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
