//! A quick election when the leader's process is seen to die.
//!
//! openraft's followers notice a silent leader only when their election timer runs out, and each
//! refuses other candidates' votes until its leader lease (the election timeout's maximum) has
//! run out too, so the first candidate is usually turned away and an election takes one to two
//! timeouts. A leader whose *process* died is seen much sooner on one machine or a LAN: the
//! kernel resets the connections it had, and its Raft port refuses new ones. This module acts on
//! that evidence, and only on it:
//!
//! - When a peer's connection to this replica ends while it follows a leader, it says `Hello` to
//!   that leader's Raft port. A refused connection, or one closed before the `Welcome`, is proof
//!   that the leader's process is gone. Anything else (a `Welcome`, or silence, as from a dead
//!   machine, a partition or a busy server) leaves the election to openraft's timers, as before.
//! - Once the leader is proven gone, the surviving voters campaign in id order, a stagger apart,
//!   so that two of them do not split the vote by standing at once; each stands only if no new
//!   leader has shown up in the meantime.
//! - A voter asked for its vote while its lease on the old leader still runs grants it as it
//!   would for a leadership transfer (Raft thesis §4.2.3) if it, too, finds the old leader gone. A node that merely lost touch with a live leader cannot use this to
//!   depose it: each voter checks for itself.
//! - The first to stand may have a shorter log than another survivor (entries in flight when the
//!   leader died), which then refuses it; that survivor stands itself at once, in a later term.
//!
//! Raft's safety does not rest on the lease — one vote per term and the log comparison still
//! decide every election — and the coordinator reads through ReadIndex, not leases, so granting
//! a vote early costs nothing there.

use std::io;
use std::time::Duration;

use futures::SinkExt;
use openraft::Raft;
use openraft::RaftMetrics;
use openraft::RaftTypeConfig;
use openraft::ServerState;
use openraft::async_runtime::WatchReceiver;
use openraft::error::RaftError;
use openraft::raft::VoteRequest;
use openraft::raft::VoteResponse;
use openraft::storage::RaftStateMachine;
use openraft::vote::RaftLeaderId;
use openraft::vote::RaftVote;
use tokio::net::TcpStream;
use tokio_util::codec::FramedRead;
use tokio_util::codec::FramedWrite;

use super::PeerAddress;
use super::wire;
use super::wire::ClientFrame;

/// How long a probe of the leader's Raft port may take; one that has not failed by then proves
/// nothing.
const PROBE_TIMEOUT: Duration = Duration::from_millis(100);
/// The largest frame a probe reads: the `Welcome`.
const PROBE_FRAME_LEN: usize = 64 << 10;

/// Watches for proof that the leader this replica follows is gone; see the module docs.
pub(super) struct LeaderLoss<C: RaftTypeConfig, SM: RaftStateMachine<C>> {
    raft: Raft<C, SM>,
    /// How far apart the surviving voters stand, in id order.
    stagger: Duration,
}

impl<C, SM> LeaderLoss<C, SM>
where
    C: RaftTypeConfig,
    C::Node: PeerAddress,
    SM: RaftStateMachine<C>,
{
    pub(super) fn new(raft: Raft<C, SM>, stagger: Duration) -> Self {
        Self { raft, stagger }
    }

    /// A peer's connection ended: if the leader this replica follows is gone, stand (in turn).
    pub(super) async fn connection_ended(&self) {
        let Some(leader) = self.followed_leader() else { return };
        if !self.is_gone(&leader).await {
            return;
        }
        let Some(turn) = self.turn(&leader) else { return };
        tokio::time::sleep(self.stagger * turn).await;
        // Someone may have won meanwhile, or openraft's own timer may have started an election.
        let metrics = self.metrics();
        let still_leaderless = matches!(metrics.state, ServerState::Follower)
            && metrics.current_leader.as_ref().is_none_or(|current| *current == leader);
        if still_leaderless {
            tracing::info!("raft: leader {leader} is gone; standing for election (turn {turn})");
            if let Err(e) = self.raft.trigger().elect(false).await {
                tracing::warn!("raft: cannot start an election: {e}");
            }
        }
    }

    /// Answers a candidate's vote request. The vote is granted as for a leadership transfer —
    /// which openraft does despite the lease — when the leader this replica follows is not the
    /// candidate and is gone. If the candidate then loses only because its log is
    /// behind this replica's, this replica stands itself, in a term past the candidate's: the
    /// candidate has voted for itself in its own term, so standing in that term would split the
    /// vote until a timer ran out.
    pub(super) async fn vote(&self, mut request: VoteRequest<C>) -> Result<VoteResponse<C>, RaftError<C>> {
        let leader_gone = self.vouch(&mut request).await;
        let (candidate_term, candidate_log) = (request.vote.leader_id().term(), request.last_log_id.clone());
        let response = self.raft.vote(request).await?;
        if leader_gone.is_some() && !response.vote_granted && response.last_log_id > candidate_log {
            let (raft, leader) = (self.raft.clone(), leader_gone);
            tokio::spawn(async move { stand_past(raft, candidate_term, leader).await });
        }
        Ok(response)
    }

    /// Marks `request` as a leadership transfer when the leader this replica follows is not its
    /// candidate and is gone; returns that leader.
    async fn vouch(&self, request: &mut VoteRequest<C>) -> Option<C::NodeId> {
        let leader = self.followed_leader()?;
        if *request.vote.leader_id().node_id() == leader || !self.is_gone(&leader).await {
            return None;
        }
        if !request.leadership_transfer {
            tracing::info!("raft: leader {leader} is gone; a candidate may have this replica's vote");
            request.leadership_transfer = true;
        }
        Some(leader)
    }

    fn metrics(&self) -> RaftMetrics<C> {
        self.raft.metrics().borrow_watched().clone()
    }

    /// The leader this replica follows, if it follows one other than itself.
    fn followed_leader(&self) -> Option<C::NodeId> {
        let metrics = self.metrics();
        let leader = metrics.current_leader.clone()?;
        (matches!(metrics.state, ServerState::Follower) && leader != metrics.id).then_some(leader)
    }

    /// This replica's place among the voters that would replace `leader`, if it is one.
    fn turn(&self, leader: &C::NodeId) -> Option<u32> {
        let metrics = self.metrics();
        let mut survivors: Vec<C::NodeId> = metrics.membership_config.voter_ids().filter(|id| id != leader).collect();
        survivors.sort();
        survivors.iter().position(|id| *id == metrics.id).map(|turn| turn as u32)
    }

    /// Whether `node`'s Raft server is proven gone (see [`gone`]).
    async fn is_gone(&self, node: &C::NodeId) -> bool {
        let addr = match self.metrics().membership_config.get_node(node) {
            Some(n) => n.raft_addr().to_string(),
            None => return false,
        };
        gone::<C>(&addr, node).await
    }
}

/// Stands for election until this replica's term is past `term` (each `elect` moves it one term
/// on), unless a leader other than the dead `leader` shows up first.
async fn stand_past<C, SM>(raft: Raft<C, SM>, term: C::Term, leader: Option<C::NodeId>)
where
    C: RaftTypeConfig,
    SM: RaftStateMachine<C>,
{
    let mut metrics = raft.metrics();
    for _ in 0..3 {
        {
            let now = metrics.borrow_watched();
            let led_by_another = now.current_leader.is_some() && now.current_leader != leader;
            if led_by_another || now.vote.leader_id().term() > term {
                return;
            }
        }
        tracing::info!("raft: the candidate's log is behind this replica's; standing past term {term}");
        if let Err(e) = raft.trigger().elect(false).await {
            tracing::warn!("raft: cannot start an election: {e}");
            return;
        }
        let _ = tokio::time::timeout(PROBE_TIMEOUT, metrics.changed()).await;
    }
}

/// Whether the Raft server of `node` at `addr` is proven gone: the connection is refused, or
/// closed before the server answers a `Hello`. A connect alone proves nothing: a process being
/// killed closes its connections and its listening socket one after the other, and a connect
/// that lands in between is accepted by the kernel and then reset. Silence within
/// [`PROBE_TIMEOUT`] (a dead machine, a partition, a busy server) proves nothing either.
async fn gone<C: RaftTypeConfig>(addr: &str, node: &C::NodeId) -> bool {
    let hello = async {
        let socket = TcpStream::connect(addr).await?;
        let (read, write) = socket.into_split();
        let mut sink = FramedWrite::new(write, wire::codec(PROBE_FRAME_LEN));
        let mut frames = FramedRead::new(read, wire::codec(PROBE_FRAME_LEN));
        let hello =
            ClientFrame::<C>::Hello { magic: wire::MAGIC, version: wire::PROTOCOL_VERSION, target: node.clone() };
        sink.send(wire::encode(&hello)?).await?;
        wire::read_frame(&mut frames).await.map(drop)
    };
    match tokio::time::timeout(PROBE_TIMEOUT, hello).await {
        Ok(Err(e)) => matches!(
            e.kind(),
            io::ErrorKind::ConnectionRefused
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::UnexpectedEof
        ),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    openraft::declare_raft_types!(Tc);

    #[tokio::test]
    async fn only_a_server_that_refuses_or_drops_a_hello_is_gone() {
        // Answers nothing: proves nothing.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = silent.local_addr().expect("addr").to_string();
        assert!(!gone::<Tc>(&addr, &1).await, "a server that is slow to answer is not gone");
        // Accepts and closes at once: a process on its way out.
        let closing = tokio::spawn(async move {
            loop {
                let (socket, _) = silent.accept().await.expect("accept");
                drop(socket);
            }
        });
        assert!(gone::<Tc>(&addr, &1).await, "a connection closed before the Welcome");
        closing.abort();
        let _ = closing.await;
        // Nothing listens.
        assert!(gone::<Tc>(&addr, &1).await, "a closed port refuses");
        assert!(!gone::<Tc>("not an address", &1).await, "an unresolvable address proves nothing");
    }
}
