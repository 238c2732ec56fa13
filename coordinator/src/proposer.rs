//! The one road every write of a replica takes into the Raft log, in the order it was submitted.
//!
//! ZooKeeper answers a session's requests in order and applies its writes in the order it sent
//! them, even with many in flight. A connection submits its writes here as it reads them
//! ([`Proposer::submit`] queues at once, so submission order is read order); one task takes
//! them out in batches and:
//!
//! - on the leader, appends each batch with one `client_write_many` (queued to Raft before the
//!   next batch, so log order is submission order), one batch at a time: group commit, the
//!   next batch is everything that arrived while the one before went through Raft;
//! - on a follower, forwards each batch to the leader in one message and lets several batches
//!   be on their way to that leader. They are numbered on a stream the leader checks, so that a
//!   batch lost with its connection is not overtaken by the next one on a new connection (see
//!   `PeerRequest::ProposeBatch`); the leader submits each batch to its own proposer as it reads
//!   the message, so the batch keeps its order there (and joins the leader's next batch).
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
/// Most batches the leader has in Raft at once. One: a batch is everything that arrived while
/// the one before was appended, replicated, committed and applied, so the ensemble's per-batch
/// costs (an fsync on each replica, AppendEntries and their answers, wake-ups of every task on
/// the way) are shared by as many writes as are waiting. With 8 batches allowed, 64 sessions of
/// 8 writes in flight made many small batches: one at a time took 9% less CPU per write (0.034
/// fdatasync per write instead of 0.046), with a lower p99 and no lower throughput
/// (`benches/coordinator-costs.sh`, alternating runs; docs/benchmarks.md).
const LEADER_BATCHES_IN_FLIGHT: usize = 1;
/// Most batches a follower has forwarded to the leader and not had answered. One at a time, a
/// follower's clients waited for the whole round trip of the batch before theirs (commit,
/// apply, answer) before theirs was even sent: with 64 sessions of 8 writes in flight spread
/// over three replicas, the writes of the two followers' sessions went in lockstep rounds.
/// Batching is the leader's job (see [`LEADER_BATCHES_IN_FLIGHT`]): a follower passes its
/// writes on as they come, so that they join the leader's next batch.
const FOLLOWER_BATCHES_IN_FLIGHT: usize = 8;

/// Where the batches in flight went.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Route {
    /// Into this replica's Raft, as leader in this term.
    Led(u64),
    /// To this leader, on the proposer's forwarding stream.
    Forwarded(u64),
    /// Nowhere: the batch failed before it left (no leader, say).
    Nowhere,
}

/// A follower's numbered stream of batches to one leader (see `PeerRequest::ProposeBatch`).
#[derive(Clone, Copy, Debug)]
struct ForwardStream {
    leader: u64,
    id: u64,
    /// The number of the next batch.
    next: u64,
}

impl ForwardStream {
    fn new(leader: u64) -> ForwardStream {
        let mut id = [0u8; 8];
        // A stream id only has to differ from this leader's other streams: a clock will do when
        // the system has no randomness to give.
        if getrandom::fill(&mut id).is_err() {
            id = (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos()
                as u64)
                .to_le_bytes();
        }
        ForwardStream { leader, id: u64::from_le_bytes(id), next: 0 }
    }
}

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
    // Where the batches in flight went, all of them.
    let mut route = Route::Nowhere;
    let mut stream: Option<ForwardStream> = None;
    loop {
        // The leader may keep several batches in Raft (it keeps one, see
        // `LEADER_BATCHES_IN_FLIGHT`), all of one term: a batch that fails there fails with every
        // later one (a log's entries of a term commit as a prefix), so none overtakes it. A
        // follower keeps several on their way to one leader, on one stream.
        // Anything else waits until the batches in flight have settled.
        let limit = match (in_flight.is_empty(), route) {
            (true, _) => 1,
            (false, Route::Led(term)) if inner.leads_in() == Some(term) => LEADER_BATCHES_IN_FLIGHT,
            (false, Route::Forwarded(leader)) if inner.known_leader() == Some(leader) => FOLLOWER_BATCHES_IN_FLIGHT,
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
                // there too joins them, still in submission order. The stream starts afresh.
                stream = None;
                while let Some((batch, results)) = in_flight.next().await {
                    failed.extend(settle(batch, results));
                }
                retry(&inner, failed).await;
            }
            first = queue.recv(), if in_flight.len() < limit => {
                let Some(first) = first else { break };
                let batch = take_batch(first, &mut queue);
                let only = (!in_flight.is_empty()).then_some(route);
                let (started, went) = start(&inner, batch, only, &mut stream).await;
                route = went;
                in_flight.push_back(started);
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

/// Starts writing `batch`: on the leader it is in Raft's queue, in order, when this returns; on
/// a follower, queued to the leader on `stream`. `only`: the route the batches in flight took,
/// if any; this one must take the same (the same term's Raft, or the same leader's stream) or
/// fail, to be retried after them, rather than overtake them.
async fn start(
    inner: &Arc<ReplicaInner>,
    batch: Vec<Pending>,
    only: Option<Route>,
    stream: &mut Option<ForwardStream>,
) -> (InFlight, Route) {
    let kinds: Vec<Arc<CommandKind>> = batch.iter().map(|p| p.kind.clone()).collect();
    let (results, route) = inner.write_batch(kinds, only, stream).await;
    (Box::pin(async move { (batch, results.await) }), route)
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
        // Each attempt on a stream of its own: whatever it follows has settled.
        let results = inner.write_batch(kinds, None, &mut None).await.0.await;
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
    /// The term in which this replica leads, if it does.
    fn leads_in(&self) -> Option<u64> {
        self.is_leader().then(|| self.raft.metrics().borrow_watched().current_term)
    }

    /// The leader this replica knows of now, without waiting for one.
    fn known_leader(&self) -> Option<u64> {
        self.raft.metrics().borrow_watched().current_leader
    }

    /// Starts one attempt at `kinds`, in order: appended to Raft here when this replica leads
    /// (queued before this returns), else forwarded to the leader on `stream` (queued on the
    /// connection before this returns; a new stream if `stream` goes to another leader). With
    /// `only`, the attempt fails unless it takes that route. The future yields one result per
    /// write; the route is the one it took.
    async fn write_batch(
        self: &Arc<Self>,
        kinds: Vec<Arc<CommandKind>>,
        only: Option<Route>,
        stream: &mut Option<ForwardStream>,
    ) -> (BoxFuture<'static, Vec<Proposed>>, Route) {
        let count = kinds.len();
        let all = move |error: ProposeError| vec![Err(error); count];
        let failed = |error: ProposeError| -> (BoxFuture<'static, Vec<Proposed>>, Route) {
            (Box::pin(std::future::ready(all(error))), Route::Nowhere)
        };
        let leader = self.leader().await;
        let term = self.leads_in();
        match (leader, only) {
            (None, _) => failed(ProposeError::NotLeader { leader: None }),
            (Some(leader), Some(Route::Led(_))) if leader != self.config.id => {
                failed(ProposeError::NotLeader { leader: Some(leader) })
            }
            (Some(leader), Some(Route::Led(led))) if term != Some(led) => {
                failed(ProposeError::NotLeader { leader: Some(leader) })
            }
            (Some(leader), Some(Route::Forwarded(to))) if leader != to => {
                failed(ProposeError::NotLeader { leader: Some(leader) })
            }
            (Some(_), Some(Route::Nowhere)) => failed(ProposeError::NotLeader { leader: None }),
            (Some(leader), _) if leader == self.config.id => {
                let time = crate::replica::now_ms();
                let commands = kinds.into_iter().map(|kind| Command { time, kind });
                match self.raft.client_write_many(commands).await {
                    Ok(results) => {
                        let results = Box::pin(async move {
                            let mut results: Vec<Proposed> = results.map(from_raft).collect().await;
                            // A stream cut short (Raft stopping) leaves the rest unanswered.
                            results.resize(count, Err(ProposeError::Raft("raft stopped".into())));
                            results
                        });
                        (results, term.map_or(Route::Nowhere, Route::Led))
                    }
                    Err(fatal) => failed(ProposeError::Raft(fatal.to_string())),
                }
            }
            (Some(leader), _) => {
                let to = match *stream {
                    Some(to) if to.leader == leader => to,
                    _ => ForwardStream::new(leader),
                };
                *stream = Some(ForwardStream { next: to.next + 1, ..to });
                match self.forward_batch(leader, to.id, to.next, kinds).await {
                    Ok(answer) => {
                        let results = Box::pin(async move {
                            match answer.await {
                                Ok(results) if results.len() == count => results,
                                Ok(results) => all(ProposeError::Unreachable(format!(
                                    "the leader answered {} of {count} writes",
                                    results.len()
                                ))),
                                Err(e) => all(e),
                            }
                        });
                        (results, Route::Forwarded(leader))
                    }
                    Err(e) => {
                        // The stream has a gap now: later batches go on a new one, once this
                        // one's failure has settled (nothing is sent before, see `run`).
                        *stream = None;
                        failed(e)
                    }
                }
            }
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
