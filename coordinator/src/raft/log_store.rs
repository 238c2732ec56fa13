//! [`LogStore`]: openraft's log storage (`RaftLogStorage` + `RaftLogReader`) on top of raft-log,
//! a chunked, checksummed write-ahead log whose flush worker batches many writes into one fsync.
//!
//! What is stored where:
//! - each entry: postcard bytes of the whole `C::Entry`, keyed by its log id;
//! - the vote and the committed log id: raft-log records of their own, in the same WAL;
//! - the last entries appended, also as the entries themselves ([`RecentEntries`]): the leader
//!   reads each entry back once per follower to replicate it and once more to apply it, and a
//!   follower once to apply it, all soon after the append; served from there, none of those
//!   reads copies or decodes bytes (an entry whose clone is cheap, such as one holding its
//!   command behind an `Arc`, then costs nothing to read).
//!
//! Durability: `append` hands entries to raft-log (readable at once) and queues one flush whose
//! callback fires [`IOFlushed`] after fsync; the flush worker coalesces the flushes of concurrent
//! appends into one fsync. `save_vote` waits for its own fsync. `save_committed` only queues its
//! record: the next append writes it and its fsync makes it durable, which a restarted node
//! needs only to replay its state machine up to where it was.

use std::fmt;
use std::fmt::Debug;
use std::io;
use std::marker::PhantomData;
use std::ops::Bound;
use std::ops::RangeBounds;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::MutexGuard;

use futures::Stream;
use futures::StreamExt;
use openraft::LogState;
use openraft::OptionalSend;
use openraft::RaftLogReader;
use openraft::RaftTypeConfig;
use openraft::alias::LogIdOf;
use openraft::alias::VoteOf;
use openraft::entry::RaftEntry;
use openraft::storage::IOFlushed;
use openraft::storage::RaftLogStorage;
use openraft::vote::RaftVote;
use raft_log::RaftLog;
use raft_log::api::raft_log_writer::RaftLogWriter;
use raft_log::codeq::Decode;
use raft_log::codeq::Encode;

use super::chunk_reaper::ChunkReaper;
use super::data_dir;
use super::data_dir::StoreOpenError;
use super::torn_tail;

/// Tuning of the write-ahead log under a [`LogStore`]. The defaults suit a coordinator.
#[derive(Debug, Clone)]
pub struct LogStoreConfig {
    /// Longest a flush waits for more writes to join its fsync (raft-log's `flush_batch_wait`).
    /// None by default: a flush takes what is queued when it starts. The writes of a loaded
    /// replica arrive batched already (the leader's proposer keeps one batch in Raft at a time,
    /// see `crate::proposer`), and a wait only lengthens each round: 200 µs cost 9% of the
    /// write throughput under 64 sessions of 8 writes, and saved only 6% of the fsyncs.
    pub flush_batch_wait: std::time::Duration,
    /// Size at which a WAL chunk file is closed; purged entries leave the disk a chunk at a time.
    ///
    /// 2 MiB by default, not raft-log's 64: raft-log's payload cache keeps every entry of the
    /// open chunk and drops them together in the append after the chunk closes (see
    /// [`encode_entries`]), a stall as long as the chunk is large, on every replica at once.
    /// With 64 MiB chunks that was 40–50 ms every 300,000 writes of 200 bytes (the p99.9 of
    /// the runs holding one: 46–55 ms against 23–34); with 2 MiB it is a millisecond or two
    /// every 10,000, which no percentile shows (alternating runs of `coordinator-costs.sh --mix
    /// multi`, six rounds twice each: the same p99 on average, 21.4 ms, the worst round's 25.0
    /// against 29.6 ms, the same throughput, 3% more fsyncs).
    pub chunk_max_size: usize,
}

impl Default for LogStoreConfig {
    fn default() -> Self {
        Self { flush_batch_wait: std::time::Duration::ZERO, chunk_max_size: 2 << 20 }
    }
}

/// Counters of a [`LogStore`]'s write-ahead log since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogStoreStats {
    /// fsyncs done; each covers every write queued before it (group commit).
    pub fsyncs: u64,
    /// Writes handed to the flush worker (an `append`, a vote, a commit point, ...).
    pub writes: u64,
    /// Bytes written to the log files.
    pub bytes_written: u64,
    /// Time spent in fsync.
    pub fsync_time: std::time::Duration,
}

/// A replica's Raft log, vote and committed log id, durable in a data directory.
///
/// Generic over the application's [`RaftTypeConfig`]; entries are stored as postcard bytes.
/// Clones share one log (the clone returned by `get_log_reader` is one).
///
/// ```no_run
/// # use squall_coordinator::raft::LogStore;
/// # openraft::declare_raft_types!(pub Tc);
/// let store = LogStore::<Tc>::open("/var/lib/squall/raft", &1u64)?;
/// # Ok::<(), squall_coordinator::raft::StoreOpenError>(())
/// ```
pub struct LogStore<C: RaftTypeConfig> {
    // Declared before `closed`: the last handle closes the log (and releases the directory
    // lock) before it drops the sender that `close` waits on.
    log: Arc<Mutex<Wal<C>>>,
    closed: Arc<tokio::sync::watch::Sender<()>>,
    dir: Arc<PathBuf>,
    reaper: Arc<ChunkReaper>,
}

impl<C: RaftTypeConfig> Clone for LogStore<C> {
    fn clone(&self) -> Self {
        Self { log: self.log.clone(), closed: self.closed.clone(), dir: self.dir.clone(), reaper: self.reaper.clone() }
    }
}

impl<C: RaftTypeConfig> Debug for LogStore<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogStore").field("dir", &self.dir).finish()
    }
}

impl<C: RaftTypeConfig> LogStore<C> {
    /// Opens the store of node `node_id` in `dir`, creating it if `dir` is missing or empty.
    ///
    /// Refuses, without changing anything, a directory initialized by another node id, one
    /// holding files that are not a Squall store, and one whose identity file or log is damaged.
    pub fn open(dir: impl AsRef<Path>, node_id: &C::NodeId) -> Result<Self, StoreOpenError> {
        Self::open_with(dir, node_id, &LogStoreConfig::default())
    }

    /// [`LogStore::open`] with explicit tuning.
    pub fn open_with(
        dir: impl AsRef<Path>,
        node_id: &C::NodeId,
        config: &LogStoreConfig,
    ) -> Result<Self, StoreOpenError> {
        let dir = dir.as_ref();
        let log_dir = data_dir::prepare(dir, node_id)?;
        let wal_config = |truncate_torn_tail: bool| {
            let mut wal_config = raft_log::Config::new(log_dir.display());
            wal_config.wal.flush_batch_wait = Some(config.flush_batch_wait);
            wal_config.wal.chunk_max_size = Some(config.chunk_max_size);
            // Replay reads one chunk through this buffer; raft-log's default is 64 MiB.
            wal_config.wal.read_buffer_size = Some(4 << 20);
            // Off unless `torn_tail::judge` found a torn last write and nothing else.
            wal_config.wal.truncate_incomplete_record = Some(truncate_torn_tail);
            Arc::new(wal_config)
        };
        let refused = |error| StoreOpenError::Log { dir: log_dir.clone(), error };
        let strict = wal_config(false);
        let log = match RaftLog::open(strict.clone()) {
            Ok(log) => log,
            Err(error) => match torn_tail::judge::<WalTypes<C>>(&strict) {
                Ok(Some(torn)) => {
                    tracing::warn!(
                        "{}: the last write before the node stopped is incomplete ({} bytes at offset {}); it was \
                         never acknowledged, so the log is recovered up to it and those bytes are dropped",
                        torn.chunk,
                        torn.len,
                        torn.offset
                    );
                    RaftLog::open(wal_config(true)).map_err(refused)?
                }
                Ok(None) => return Err(refused(error)),
                Err(judging) => {
                    return Err(refused(io::Error::new(
                        error.kind(),
                        format!("{error} (and it cannot be read to tell a torn last write: {judging})"),
                    )));
                }
            },
        };
        let reaper = ChunkReaper::start(dir, &log_dir).map_err(|error| StoreOpenError::Io {
            dir: dir.to_path_buf(),
            action: "start freeing purged chunks",
            error,
        })?;
        Ok(Self {
            log: Arc::new(Mutex::new(Wal { log, recent: RecentEntries::default() })),
            closed: Arc::new(tokio::sync::watch::Sender::new(())),
            dir: Arc::new(dir.to_path_buf()),
            reaper: Arc::new(reaper),
        })
    }

    /// The data directory this store lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Drops this handle and waits until every other handle (openraft keeps some until its tasks
    /// end, after `Raft::shutdown`) is gone too: then everything written is on disk and the
    /// directory can be opened again.
    pub async fn close(self) {
        let mut closed = self.closed.subscribe();
        drop(self);
        // Never sent to: this returns when the last handle drops the sender.
        let _ = closed.changed().await;
    }

    /// What the write-ahead log's flush worker has done since the store was opened.
    pub fn stats(&self) -> LogStoreStats {
        let metrics = self.lock().log.stat().flush_metrics;
        LogStoreStats {
            fsyncs: metrics.sync_batch_count,
            writes: metrics.write_request_count,
            bytes_written: metrics.write_bytes,
            fsync_time: std::time::Duration::from_micros(metrics.sync_us),
        }
    }

    /// The entries the log holds in `[start, end)`: consecutive, possibly fewer at either end.
    /// Those among the recent entries are cloned from there; older ones are decoded from the
    /// log's bytes (outside the lock).
    fn read_entries(&self, start: u64, end: u64) -> io::Result<Vec<C::Entry>>
    where
        C::Entry: Clone,
    {
        if start >= end {
            return Ok(Vec::new());
        }
        let (payloads, recent) = {
            let wal = self.lock();
            // The recent entries are a suffix of the log, so only what precedes them is read
            // from raft-log.
            let older_end = end.min(wal.recent.first().unwrap_or(u64::MAX));
            let payloads = match start < older_end {
                true => wal
                    .log
                    .read(start, older_end)
                    .map(|res| res.map(|(_, payload)| payload))
                    .collect::<io::Result<Vec<_>>>()?,
                false => Vec::new(),
            };
            (payloads, wal.recent.range(start, end))
        };
        let mut entries = Vec::with_capacity(payloads.len() + recent.len());
        for bytes in &payloads {
            entries.push(decode_entry::<C>(&bytes.0)?);
        }
        entries.extend(recent);
        Ok(entries)
    }

    fn lock(&self) -> MutexGuard<'_, Wal<C>> {
        // A panic while holding the lock leaves raft-log's in-memory state as valid as any
        // half-finished call does: each record is checked before it is applied.
        self.log.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues a flush and waits until it is on disk.
    async fn flush_and_wait(&self) -> io::Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.lock().log.flush(true, Some(Flushed::Waiter(tx)))?;
        rx.await.map_err(|_| io::Error::other("raft-log's flush worker stopped before the flush completed"))?
    }
}

impl<C: RaftTypeConfig> RaftLogReader<C> for LogStore<C>
where
    C::Entry: Clone,
{
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> io::Result<Vec<C::Entry>> {
        let (start, end) = index_range(&range);
        self.read_entries(start, end)
    }

    /// Reads the range a batch at a time, so replaying a long log after a restart never holds
    /// all of it in memory.
    async fn entries_stream<RB>(&mut self, range: RB) -> impl Stream<Item = io::Result<C::Entry>> + OptionalSend
    where
        RB: RangeBounds<u64> + Clone + Debug + OptionalSend,
    {
        let (start, end) = index_range(&range);
        let store = self.clone();
        let batches = futures::stream::unfold(start, move |next| {
            let batch_end = end.min(next.saturating_add(STREAM_BATCH));
            let batch = (next < end).then(|| store.read_entries(next, batch_end));
            // After an error the stream ends: `end` is past every batch.
            std::future::ready(batch.map(|batch| {
                let after = if batch.is_ok() { batch_end } else { end };
                (batch, after)
            }))
        });
        batches.flat_map(|batch| {
            let items: Vec<io::Result<C::Entry>> = match batch {
                Ok(entries) => entries.into_iter().map(Ok).collect(),
                Err(e) => vec![Err(e)],
            };
            futures::stream::iter(items)
        })
    }

    async fn read_vote(&mut self) -> io::Result<Option<VoteOf<C>>> {
        Ok(self.lock().log.log_state().vote().map(|v| v.0.clone()))
    }
}

/// Entries read at a time by `entries_stream`.
const STREAM_BATCH: u64 = 256;

/// The half-open index range `[start, end)` of `range`.
fn index_range(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(&i) => i,
        Bound::Excluded(&i) => i.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&i) => i.saturating_add(1),
        Bound::Excluded(&i) => i,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

impl<C: RaftTypeConfig> RaftLogStorage<C> for LogStore<C>
where
    C::Entry: Clone,
{
    type LogReader = Self;

    async fn get_log_state(&mut self) -> io::Result<LogState<C>> {
        let wal = self.lock();
        let state = wal.log.log_state();
        Ok(LogState {
            last_purged_log_id: state.purged().map(|id| id.0.clone()),
            last_log_id: state.last().map(|id| id.0.clone()),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &VoteOf<C>) -> io::Result<()> {
        self.lock().log.save_vote(StoredVote(vote.clone()))?;
        self.flush_and_wait().await
    }

    async fn save_committed(&mut self, committed: Option<LogIdOf<C>>) -> io::Result<()> {
        let Some(committed) = committed.map(StoredLogId::<C>) else {
            return Ok(());
        };
        let log = &mut self.lock().log;
        let state = log.log_state();
        // raft-log keeps `committed <= last` and never lets it go back. openraft may report a
        // commit point past the local log (a snapshot's last log id, before the purge that moves
        // `last` to it); saving less than the truth only means replaying less after a restart.
        if Some(&committed) <= state.committed() || Some(&committed) > state.last() {
            return Ok(());
        }
        // Queued in raft-log, written and made durable with the next append's flush: a
        // restarted node that lost it only replays less of its log into the state machine. A
        // flush of its own here cost a wake-up of the flush worker per commit point, and (as a
        // sync flush) an fsync whenever it did not share one with an append.
        log.commit(committed)?;
        Ok(())
    }

    async fn read_committed(&mut self) -> io::Result<Option<LogIdOf<C>>> {
        Ok(self.lock().log.log_state().committed().map(|id| id.0.clone()))
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<C>) -> io::Result<()>
    where
        I: IntoIterator<Item = C::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<C::Entry> = entries.into_iter().collect();
        let records: Vec<(StoredLogId<C>, Payload)> = encode_entries::<C>(&entries)?
            .into_iter()
            .zip(&entries)
            .map(|(bytes, entry)| (StoredLogId(entry.log_id()), Payload(bytes)))
            .collect();
        let sizes: Vec<usize> = records.iter().map(|(_, bytes)| bytes.0.len()).collect();
        let mut wal = self.lock();
        wal.log.append(records)?;
        for (entry, size) in entries.into_iter().zip(sizes) {
            wal.recent.push(entry, size);
        }
        wal.log.flush(true, Some(Flushed::Log(callback)))
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogIdOf<C>>) -> io::Result<()> {
        let mut wal = self.lock();
        let keep_up_to = last_log_id.map(|id| id.index);
        let next = keep_up_to.map_or(0, |i| i + 1);
        let last = wal.log.log_state().last().map(|id| id.0.index);
        if last.is_none_or(|last| last < next) {
            return Ok(());
        }
        wal.log.truncate(next)?;
        wal.recent.truncate_from(next);
        // The next append's fsync makes the truncation durable with it: the WAL is ordered.
        wal.log.flush(false, None)
    }

    async fn purge(&mut self, log_id: LogIdOf<C>) -> io::Result<()> {
        // Before raft-log may delete a chunk: then it only removes a name (see `chunk_reaper`).
        self.reaper.adopt();
        let mut wal = self.lock();
        let upto = log_id.index;
        wal.log.purge(StoredLogId(log_id))?;
        wal.recent.purge_upto(upto);
        // Only a sync flush lets raft-log delete the chunk files the purge emptied.
        wal.log.flush(true, None)?;
        self.reaper.wake();
        Ok(())
    }
}

/// raft-log and the recent entries, under one lock so that a reader sees them agree.
struct Wal<C: RaftTypeConfig> {
    log: RaftLog<WalTypes<C>>,
    recent: RecentEntries<C::Entry>,
}

/// Most entries, and most bytes (by their encoded size), kept as entries after their append:
/// enough for what is applied and replicated soon after, small next to the tree.
const RECENT_ENTRIES: usize = 8192;
const RECENT_BYTES: usize = 16 << 20;

/// The last entries appended to the log, in order: always a suffix of the log (appends land
/// at its end, a truncation cuts both, a purge or eviction takes from the front).
struct RecentEntries<E> {
    /// The index of `entries[0]`.
    first: u64,
    /// Each entry with its encoded size.
    entries: std::collections::VecDeque<(E, usize)>,
    bytes: usize,
}

impl<E> Default for RecentEntries<E> {
    fn default() -> Self {
        Self { first: 0, entries: std::collections::VecDeque::new(), bytes: 0 }
    }
}

impl<E: RaftEntry> RecentEntries<E> {
    /// The index of the oldest entry kept, if any.
    fn first(&self) -> Option<u64> {
        (!self.entries.is_empty()).then_some(self.first)
    }

    /// Keeps `entry`, just appended to the log, and forgets the oldest beyond the bounds.
    fn push(&mut self, entry: E, size: usize) {
        let index = entry.index();
        let next = self.first + self.entries.len() as u64;
        if self.entries.is_empty() || index < self.first || index > next {
            // Not adjacent to what is kept (the first append, or one after a purge of
            // everything): start over from it.
            self.entries.clear();
            self.bytes = 0;
            self.first = index;
        } else if index < next {
            // openraft truncates before it overwrites; this keeps the suffix true regardless.
            self.truncate_from(index);
        }
        self.entries.push_back((entry, size));
        self.bytes += size;
        while self.entries.len() > RECENT_ENTRIES || (self.bytes > RECENT_BYTES && self.entries.len() > 1) {
            self.pop_front();
        }
    }

    /// Forgets the entries from `index` on.
    fn truncate_from(&mut self, index: u64) {
        let keep = index.saturating_sub(self.first).min(self.entries.len() as u64) as usize;
        for (_, size) in self.entries.drain(keep..) {
            self.bytes -= size;
        }
    }

    /// Forgets the entries up to and including `index`.
    fn purge_upto(&mut self, index: u64) {
        while !self.entries.is_empty() && self.first <= index {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        if let Some((_, size)) = self.entries.pop_front() {
            self.bytes -= size;
            self.first += 1;
        }
    }
}

impl<E: Clone> RecentEntries<E> {
    /// Clones of the entries kept in `[start, end)`.
    fn range(&self, start: u64, end: u64) -> Vec<E> {
        let from = start.saturating_sub(self.first).min(self.entries.len() as u64) as usize;
        let to = end.saturating_sub(self.first).min(self.entries.len() as u64) as usize;
        self.entries.range(from..to.max(from)).map(|(entry, _)| entry.clone()).collect()
    }
}

/// The bytes of each of `entries`, all in one buffer that they share.
///
/// raft-log keeps a copy of every payload of the open chunk in its cache and may drop them only
/// when the chunk closes, all at once, inside the next append: with a buffer of their own per
/// entry, that was some 300,000 frees at every 64 MiB of log, on every replica at the same log
/// index, a 50–90 ms stall of the ensemble's writes (profile: the payload cache's eviction and
/// the allocator's frees; the writes' p99.9 jumped to 70–180 ms in the runs that held one).
/// Shared, a copy is a reference count and the buffers are freed a batch at a time; and an
/// append allocates once instead of once per entry and again for the cache's copy.
fn encode_entries<C: RaftTypeConfig>(entries: &[C::Entry]) -> io::Result<Vec<bytes::Bytes>> {
    let mut buf = Vec::new();
    let mut ends = Vec::with_capacity(entries.len());
    for entry in entries {
        buf = postcard::to_extend(entry, buf)
            .map_err(|e| io::Error::other(format!("cannot encode log entry {entry}: {e}")))?;
        ends.push(buf.len());
    }
    if buf.capacity() > buf.len() + buf.len() / 4 {
        // The cache holds the buffer for as long as it holds any of its entries.
        buf.shrink_to_fit();
    }
    let buf = bytes::Bytes::from(buf);
    let mut start = 0;
    Ok(ends
        .into_iter()
        .map(|end| {
            let bytes = buf.slice(start..end);
            start = end;
            bytes
        })
        .collect())
}

fn decode_entry<C: RaftTypeConfig>(bytes: &[u8]) -> io::Result<C::Entry> {
    postcard::from_bytes(bytes)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("cannot decode a stored log entry: {e}")))
}

/// raft-log's type parameters for a Raft type config `C`.
struct WalTypes<C>(PhantomData<C>);

impl<C> Debug for WalTypes<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WalTypes")
    }
}

impl<C> Default for WalTypes<C> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<C> Clone for WalTypes<C> {
    fn clone(&self) -> Self {
        Self(PhantomData)
    }
}

impl<C> PartialEq for WalTypes<C> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl<C> Eq for WalTypes<C> {}

impl<C: RaftTypeConfig> raft_log::Types for WalTypes<C> {
    type LogId = StoredLogId<C>;
    type LogPayload = Payload;
    type Vote = StoredVote<C>;
    type Callback = Flushed<C>;
    type UserData = ();

    fn log_index(log_id: &Self::LogId) -> u64 {
        log_id.0.index
    }

    fn payload_size(payload: &Self::LogPayload) -> u64 {
        payload.0.len() as u64
    }
}

/// An entry's bytes as raft-log stores them: written as a `Vec<u8>` is (a 4-byte length, then
/// the bytes), but shared, so that raft-log's copy in its cache costs a reference count (see
/// [`encode_entries`]).
#[derive(Clone)]
struct Payload(bytes::Bytes);

impl Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes", self.0.len())
    }
}

impl Encode for Payload {
    fn encode<W: io::Write>(&self, mut w: W) -> io::Result<usize> {
        let len = u32::try_from(self.0.len()).map_err(|_| io::Error::other("a log entry of 4 GiB or more"))?;
        w.write_all(&len.to_be_bytes())?;
        w.write_all(&self.0)?;
        Ok(self.0.len() + 4)
    }
}

impl Decode for Payload {
    fn decode<R: io::Read>(r: R) -> io::Result<Self> {
        Vec::<u8>::decode(r).map(|bytes| Payload(bytes.into()))
    }
}

/// Encodes a serde value as a length-prefixed postcard blob (raft-log records are checksummed).
fn encode_blob<T: serde::Serialize, W: io::Write>(value: &T, w: W) -> io::Result<usize> {
    let bytes = postcard::to_stdvec(value).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    bytes.encode(w)
}

fn decode_blob<T: serde::de::DeserializeOwned, R: io::Read>(r: R) -> io::Result<T> {
    let bytes = Vec::<u8>::decode(r)?;
    postcard::from_bytes(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// A log id as raft-log stores it: ordered as openraft orders it.
struct StoredLogId<C: RaftTypeConfig>(LogIdOf<C>);

impl<C: RaftTypeConfig> Debug for StoredLogId<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl<C: RaftTypeConfig> Clone for StoredLogId<C> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<C: RaftTypeConfig> PartialEq for StoredLogId<C> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl<C: RaftTypeConfig> Eq for StoredLogId<C> {}

impl<C: RaftTypeConfig> PartialOrd for StoredLogId<C> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl<C: RaftTypeConfig> Ord for StoredLogId<C> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.cmp(&other.0)
    }
}

impl<C: RaftTypeConfig> Encode for StoredLogId<C> {
    fn encode<W: io::Write>(&self, w: W) -> io::Result<usize> {
        encode_blob(&self.0, w)
    }
}

impl<C: RaftTypeConfig> Decode for StoredLogId<C> {
    fn decode<R: io::Read>(r: R) -> io::Result<Self> {
        decode_blob(r).map(Self)
    }
}

/// A vote as raft-log stores it, ordered by openraft's partial order on votes (raft-log refuses
/// to store a vote that is not greater than or equal to the last one).
struct StoredVote<C: RaftTypeConfig>(VoteOf<C>);

impl<C: RaftTypeConfig> Debug for StoredVote<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl<C: RaftTypeConfig> Clone for StoredVote<C> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<C: RaftTypeConfig> PartialEq for StoredVote<C> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl<C: RaftTypeConfig> Eq for StoredVote<C> {}

impl<C: RaftTypeConfig> PartialOrd for StoredVote<C> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        RaftVote::partial_cmp(&self.0, &other.0)
    }
}

impl<C: RaftTypeConfig> Encode for StoredVote<C> {
    fn encode<W: io::Write>(&self, w: W) -> io::Result<usize> {
        encode_blob(&self.0, w)
    }
}

impl<C: RaftTypeConfig> Decode for StoredVote<C> {
    fn decode<R: io::Read>(r: R) -> io::Result<Self> {
        decode_blob(r).map(Self)
    }
}

/// What raft-log's flush worker calls once a flush is on disk (or failed).
enum Flushed<C: RaftTypeConfig> {
    /// An `append`: tell openraft the entries are durable.
    Log(IOFlushed<C>),
    /// A caller waiting for durability (`save_vote`).
    Waiter(tokio::sync::oneshot::Sender<io::Result<()>>),
}

impl<C: RaftTypeConfig> raft_log::Callback for Flushed<C> {
    fn send(self, res: io::Result<()>) {
        match self {
            Flushed::Log(callback) => callback.io_completed(res),
            Flushed::Waiter(tx) => {
                // The waiter may have been dropped (its future cancelled); nothing is owed then.
                let _ = tx.send(res);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Logs written when payloads were byte vectors read the same, and the other way round.
    #[test]
    fn a_payload_is_stored_as_a_byte_vector_is() {
        for bytes in [vec![], vec![1, 2, 3], vec![7; 70_000]] {
            let (mut as_vec, mut as_payload) = (Vec::new(), Vec::new());
            assert_eq!(bytes.encode(&mut as_vec).unwrap(), bytes.len() + 4);
            assert_eq!(Payload(bytes.clone().into()).encode(&mut as_payload).unwrap(), bytes.len() + 4);
            assert_eq!(as_payload, as_vec);
            assert_eq!(Payload::decode(&as_vec[..]).unwrap().0, bytes);
        }
        assert!(Payload::decode(&[0, 0, 0, 9, 1][..]).is_err(), "a payload cut short is an error");
    }
}
