//! The one road every write of a replica takes into the Raft log, in the order it was submitted.
//!
//! ZooKeeper answers a session's requests in order and applies its writes in the order it sent
//! them, even with many in flight. A connection submits its writes here as it reads them
//! ([`Proposer::submit`] queues at once, so submission order is read order); one task takes
//! them out in batches and:
//!
//! - on the leader, appends each batch with one `client_write_many` (queued to Raft before the
//!   next batch, so log order is submission order) and lets several batches be in flight;
//! - on a follower, forwards each batch to the leader in one message, one batch at a time (a
//!   batch lost with its connection must not be overtaken by the next one); the leader submits
//!   the batch to its own proposer as it reads the message, so the batch keeps its order there.
//!
//! A write that fails because leadership moved (or the leader could not be reached) is retried,
//! but only once every batch in flight has settled, and then in submission order with nothing
//! new submitted meanwhile: a retried write is never applied after a later write of its
//! session. A write whose first attempt did reach the log is applied once anyway: the state
//! de-duplicates by request id.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use openraft::async_runtime::WatchReceiver;
use openraft::errors::ClientWriteError;
use tokio::sync::{mpsc, oneshot};

use crate::replica::{ProposeError, ReplicaInner};
use crate::stat::Zxid;
use crate::state::{Command, CommandKind, CommandResult};
use crate::store::TypeConfig;

/// The result of one write: its zxid and what applying it returned.
pub(crate) type Proposed = Result<(Zxid, CommandResult), ProposeError>;

/// How long a write keeps being retried across leader changes before it fails.
const RETRY_DEADLINE: Duration = Duration::from_secs(10);
/// Pause between retries while no leader takes the writes.
const RETRY_PAUSE: Duration = Duration::from_millis(20);
/// Most writes in one batch, and most bytes (by the size of the client requests).
const BATCH_WRITES: usize = 512;
const BATCH_BYTES: usize = 4 << 20;
/// Most batches the leader has in Raft at once.
const LEADER_BATCHES_IN_FLIGHT: usize = 8;

/// A write waiting for its turn.
struct Pending {
    kind: Arc<CommandKind>,
    /// Bytes of the request it came from, to bound batches.
    size: usize,
    done: oneshot::Sender<Proposed>,
}

/// The queue into a replica's proposer task.
pub(crate) struct Proposer {
    queue: mpsc::UnboundedSender<Pending>,
}

impl Proposer {
    /// A proposer and the receiving end its task ([`run`]) drains.
    pub(crate) fn new() -> (Proposer, ProposerQueue) {
        let (queue, rx) = mpsc::unbounded_channel();
        (Proposer { queue }, ProposerQueue(rx))
    }

    /// Queues `kind` behind every write submitted before it; the future yields its result
    /// once the leader applied it (not necessarily this replica: see
    /// [`ReplicaInner::propose`]).
    pub(crate) fn submit(
        &self,
        kind: Arc<CommandKind>,
        size: usize,
    ) -> impl Future<Output = Proposed> + Send + 'static {
        let (done, result) = oneshot::channel();
        let queued = self.queue.send(Pending { kind, size, done }).is_ok();
        async move {
            if !queued {
                return Err(ProposeError::Raft("the replica is shutting down".into()));
            }
            result.await.unwrap_or_else(|_| Err(ProposeError::Raft("the replica is shutting down".into())))
        }
    }
}

/// What [`run`] drains.
pub(crate) struct ProposerQueue(mpsc::UnboundedReceiver<Pending>);

/// A batch on its way, and its writes' results in the same order.
type InFlight = BoxFuture<'static, (Vec<Pending>, Vec<Proposed>)>;

/// The proposer task of `inner`: runs until the replica drops its [`Proposer`].
pub(crate) async fn run(inner: Arc<ReplicaInner>, queue: ProposerQueue) {
    let mut queue = queue.0;
    let mut in_flight: FuturesOrdered<InFlight> = FuturesOrdered::new();
    // The term in which this replica led when it started the batches in flight, if it did.
    let mut led_in: Option<u64> = None;
    loop {
        // A follower forwards one batch at a time. The leader keeps several in Raft, all of
        // one term: a batch that fails there fails with every later one (a log's entries of a
        // term commit as a prefix), so none overtakes it.
        let leading_in = inner.is_leader().then(|| inner.raft.metrics().borrow_watched().current_term);
        let limit = match (in_flight.is_empty(), leading_in) {
            (true, _) => 1,
            (false, Some(term)) if led_in == Some(term) => LEADER_BATCHES_IN_FLIGHT,
            (false, _) => 0,
        };
        tokio::select! {
            biased;
            Some((batch, results)) = in_flight.next(), if !in_flight.is_empty() => {
                let mut failed = settle(batch, results);
                if failed.is_empty() {
                    continue;
                }
                // Everything submitted after the failed writes settles first; what failed
                // there too joins them, still in submission order.
                while let Some((batch, results)) = in_flight.next().await {
                    failed.extend(settle(batch, results));
                }
                retry(&inner, failed).await;
            }
            first = queue.recv(), if in_flight.len() < limit => {
                let Some(first) = first else { break };
                let batch = take_batch(first, &mut queue);
                led_in = leading_in;
                let only_here = !in_flight.is_empty();
                in_flight.push_back(start(&inner, batch, only_here).await);
            }
        }
    }
    while let Some((batch, results)) = in_flight.next().await {
        settle(batch, results);
    }
}

/// `first` and whatever else is queued, up to a batch's bounds.
fn take_batch(first: Pending, queue: &mut mpsc::UnboundedReceiver<Pending>) -> Vec<Pending> {
    let mut bytes = first.size;
    let mut batch = vec![first];
    while batch.len() < BATCH_WRITES && bytes < BATCH_BYTES {
        match queue.try_recv() {
            Ok(next) => {
                bytes += next.size;
                batch.push(next);
            }
            Err(_) => break,
        }
    }
    batch
}

/// Starts writing `batch`: on the leader it is in Raft's queue, in order, when this returns.
/// `only_here`: other batches are in this leader's Raft; if it no longer leads, this one fails
/// (to be retried after them) rather than go to another leader ahead of them.
async fn start(inner: &Arc<ReplicaInner>, batch: Vec<Pending>, only_here: bool) -> InFlight {
    let kinds: Vec<Arc<CommandKind>> = batch.iter().map(|p| p.kind.clone()).collect();
    let results = inner.write_batch(kinds, only_here).await;
    Box::pin(async move { (batch, results.await) })
}

/// Answers the writes that succeeded or failed for good; returns those to retry, in order.
fn settle(batch: Vec<Pending>, results: Vec<Proposed>) -> Vec<Pending> {
    let mut retry = Vec::new();
    for (pending, result) in batch.into_iter().zip(results) {
        match result {
            Err(ProposeError::NotLeader { .. } | ProposeError::Unreachable(_)) => retry.push(pending),
            result => {
                let _ = pending.done.send(result);
            }
        }
    }
    retry
}

/// Retries `writes` in order, one batch at a time, until each succeeds or fails for good or
/// [`RETRY_DEADLINE`] passes.
async fn retry(inner: &Arc<ReplicaInner>, mut writes: Vec<Pending>) {
    let deadline = Instant::now() + RETRY_DEADLINE;
    loop {
        let kinds: Vec<Arc<CommandKind>> = writes.iter().map(|p| p.kind.clone()).collect();
        let results = inner.write_batch(kinds, false).await.await;
        if Instant::now() >= deadline {
            for (pending, result) in writes.into_iter().zip(results) {
                let _ = pending.done.send(result);
            }
            return;
        }
        writes = settle(writes, results);
        if writes.is_empty() {
            return;
        }
        tracing::debug!("retrying {} writes after a leader change", writes.len());
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

impl ReplicaInner {
    /// Starts one attempt at `kinds`, in order: appended to Raft here when this replica leads
    /// (queued before this returns), else, unless `only_here`, forwarded to the leader. The
    /// future yields one result per write.
    async fn write_batch(
        self: &Arc<Self>,
        kinds: Vec<Arc<CommandKind>>,
        only_here: bool,
    ) -> BoxFuture<'static, Vec<Proposed>> {
        let count = kinds.len();
        let all = move |error: ProposeError| vec![Err(error); count];
        match self.leader().await {
            Some(leader) if only_here && leader != self.config.id => {
                Box::pin(std::future::ready(all(ProposeError::NotLeader { leader: Some(leader) })))
            }
            Some(leader) if leader == self.config.id => {
                let time = crate::replica::now_ms();
                let commands = kinds.into_iter().map(|kind| Command { time, kind });
                match self.raft.client_write_many(commands).await {
                    Ok(results) => Box::pin(async move {
                        let mut results: Vec<Proposed> = results.map(from_raft).collect().await;
                        // A stream cut short (Raft stopping) leaves the rest unanswered.
                        results.resize(count, Err(ProposeError::Raft("raft stopped".into())));
                        results
                    }),
                    Err(fatal) => Box::pin(std::future::ready(all(ProposeError::Raft(fatal.to_string())))),
                }
            }
            Some(leader) => {
                let inner = self.clone();
                Box::pin(async move {
                    match inner.forward_batch(leader, kinds).await {
                        Ok(results) if results.len() == count => results,
                        Ok(results) => all(ProposeError::Unreachable(format!(
                            "the leader answered {} of {count} writes",
                            results.len()
                        ))),
                        Err(e) => all(e),
                    }
                })
            }
            None => Box::pin(std::future::ready(all(ProposeError::NotLeader { leader: None }))),
        }
    }
}

/// One result of `client_write_many` as a [`Proposed`].
fn from_raft(result: Result<openraft::raft::WriteResult<TypeConfig>, openraft::errors::Fatal<TypeConfig>>) -> Proposed {
    match result {
        Ok(Ok(written)) => Ok((written.log_id.index as Zxid, written.response)),
        Ok(Err(ClientWriteError::ForwardToLeader(to) | ClientWriteError::LogEntryDiscarded(to))) => {
            Err(ProposeError::NotLeader { leader: to.leader_id })
        }
        Ok(Err(e)) => Err(ProposeError::Raft(e.to_string())),
        Err(fatal) => Err(ProposeError::Raft(fatal.to_string())),
    }
}
