//! The RPC server against clients that break the protocol: each bad connection is closed, the
//! server goes on serving everyone else.

use futures::SinkExt;
use futures::StreamExt;
use openraft::Entry;
use openraft::LogId;
use openraft::Vote;
use openraft::async_runtime::WatchReceiver;
use openraft::entry::RaftEntry;
use openraft::raft::AppendEntriesRequest;
use openraft::raft::VoteRequest;
use openraft::vote::RaftLeaderId;
use openraft::vote::RaftVote;
use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::bytes::Bytes;
use tokio_util::codec::Framed;
use tokio_util::codec::LengthDelimitedCodec;

use super::TestCluster;
use super::kv::Kv;
use crate::raft::network::wire;
use crate::raft::network::wire::ClientFrame;
use crate::raft::network::wire::Reply;
use crate::raft::network::wire::Request;
use crate::raft::network::wire::ServerFrame;

type Frames = Framed<TcpStream, LengthDelimitedCodec>;

async fn connect(addr: &str) -> Frames {
    Framed::new(TcpStream::connect(addr).await.unwrap(), LengthDelimitedCodec::new())
}

async fn send(frames: &mut Frames, frame: &ClientFrame<Kv>) {
    frames.send(wire::encode(frame).unwrap()).await.unwrap();
}

async fn receive(frames: &mut Frames) -> Option<ServerFrame<Kv>> {
    let bytes = tokio::time::timeout(super::DEADLINE, frames.next()).await.expect("the server answers or closes");
    Some(wire::decode(&bytes?.ok()?).unwrap())
}

fn hello(target: u64) -> ClientFrame<Kv> {
    ClientFrame::Hello { magic: wire::MAGIC, version: wire::PROTOCOL_VERSION, target }
}

async fn welcomed(addr: &str, target: u64) -> Frames {
    let mut frames = connect(addr).await;
    send(&mut frames, &hello(target)).await;
    assert!(matches!(receive(&mut frames).await, Some(ServerFrame::Welcome(Ok(())))));
    frames
}

/// A probe vote from a node that is not a member, at term 0: never granted, always answered.
fn probe_vote() -> VoteRequest<Kv> {
    VoteRequest::new(Vote::new(0, 99), None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn raft_rpc_server_closes_only_connections_that_break_the_protocol() {
    let cluster = TestCluster::start(3).await;
    cluster.write("before", 0..50, 8).await;
    let node = cluster.node(2);
    let addr = node.addr.as_str();

    // Bytes that are not a frame of this protocol.
    let mut frames = connect(addr).await;
    frames.send(Bytes::from_static(b"\x09GET / HTTP/1.1\r\n")).await.unwrap();
    assert!(receive(&mut frames).await.is_none(), "garbage must close the connection");

    // A length prefix over the limit.
    let mut socket = TcpStream::connect(addr).await.unwrap();
    socket.write_all(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3]).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(super::DEADLINE, socket.read(&mut buf)).await.unwrap();
    assert!(matches!(read, Ok(0) | Err(_)), "an oversized frame must close the connection");

    // A client that believes it talks to another node is told which node this is.
    let mut frames = connect(addr).await;
    send(&mut frames, &hello(9)).await;
    match receive(&mut frames).await {
        Some(ServerFrame::Welcome(Err(reason))) => assert!(reason.contains("serves node 2, not node 9"), "{reason}"),
        _ => panic!("expected a refusal"),
    }
    assert!(receive(&mut frames).await.is_none());

    // Calls are answered by id; a malformed AppendEntries closes the connection.
    let mut frames = welcomed(addr, 2).await;
    send(&mut frames, &ClientFrame::Call { id: 41, request: Request::Vote(probe_vote()) }).await;
    match receive(&mut frames).await {
        Some(ServerFrame::Reply { id: 41, reply: Ok(Reply::Vote(resp)) }) => {
            assert!(!resp.is_granted_to(&Vote::new(0, 99)))
        }
        _ => panic!("expected the vote reply"),
    }
    let leader = <Kv as openraft::RaftTypeConfig>::LeaderId::new(1, 1).to_committed();
    let holey = AppendEntriesRequest::<Kv> {
        vote: Vote::from_leader_id(<Kv as openraft::RaftTypeConfig>::LeaderId::new(1, 1), true),
        prev_log_id: None,
        entries: vec![Entry::new_blank(LogId::new(leader, 0)), Entry::new_blank(LogId::new(leader, 2))],
        leader_commit: None,
    };
    send(&mut frames, &ClientFrame::Append { stream: 7, seq: 0, request: holey }).await;
    assert!(receive(&mut frames).await.is_none(), "a log with a hole must close the connection");

    // Everyone else is still served: the cluster keeps replicating to node 2.
    cluster.write("after", 0..50, 8).await;
    cluster.wait_converged().await;
    assert_eq!(node.map().len(), 100);
    let mut frames = welcomed(addr, 2).await;
    send(&mut frames, &ClientFrame::Call { id: 1, request: Request::PreVote(probe_vote()) }).await;
    assert!(matches!(receive(&mut frames).await, Some(ServerFrame::Reply { id: 1, reply: Ok(Reply::Vote(_)) })));
}

/// A vote for `candidate` one term past `voter`'s, with `voter`'s own last log: only the lease
/// (or a vote already given in that term) can stand in its way.
fn vote_after(voter: &super::TestNode, candidate: u64) -> VoteRequest<Kv> {
    let metrics = voter.raft.metrics().borrow_watched().clone();
    let term = metrics.vote.leader_id().term() + 1;
    let leader_id = <Kv as openraft::RaftTypeConfig>::LeaderId::new(term, candidate);
    VoteRequest::new(Vote::from_leader_id(leader_id, false), metrics.last_applied)
}

/// Guarantee: a leader whose process is gone — its Raft port refuses connections — is replaced
/// at once, not after the followers' election timers (5–10 s here) and leader leases run out;
/// while it lives, no candidate gets a follower's vote past the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn raft_replaces_a_leader_whose_port_refuses_connections_without_waiting_for_timers() {
    let election_timeout_min = std::time::Duration::from_secs(5);
    let config = openraft::Config {
        cluster_name: "squall-test".to_string(),
        heartbeat_interval: 50,
        election_timeout_min: election_timeout_min.as_millis() as u64,
        election_timeout_max: 2 * election_timeout_min.as_millis() as u64,
        ..Default::default()
    };
    let mut cluster = super::TestCluster::start_with(3, std::sync::Arc::new(config.validate().unwrap())).await;
    cluster.write("before", 0..20, 4).await;
    cluster.wait_converged().await;
    let old = cluster.leader().await.id;
    let followers: Vec<u64> = (1..=3).filter(|id| *id != old).collect();
    let (voter, candidate) = (cluster.node(followers[0]), followers[1]);

    // The leader lives: a follower keeps its vote under the lease, whoever asks.
    let mut frames = welcomed(&voter.addr, voter.id).await;
    send(&mut frames, &ClientFrame::Call { id: 1, request: Request::Vote(vote_after(voter, candidate)) }).await;
    match receive(&mut frames).await {
        Some(ServerFrame::Reply { id: 1, reply: Ok(Reply::Vote(resp)) }) => {
            assert!(!resp.vote_granted, "a vote was granted while the leader lived: {resp}")
        }
        _ => panic!("expected the vote reply"),
    }
    drop(frames);
    assert_eq!(cluster.leader().await.id, old, "the live leader was deposed");

    let stopped = tokio::time::Instant::now();
    cluster.stop(old).await;
    let new = cluster.leader().await.id;
    assert_ne!(new, old);
    assert!(
        stopped.elapsed() < election_timeout_min,
        "the new leader took {:?}: no quicker than the election timer",
        stopped.elapsed()
    );
    cluster.write("after", 0..20, 4).await;
    cluster.wait_converged().await;
    for node in cluster.running() {
        assert_eq!(node.map().len(), 40, "node {} misses writes", node.id);
    }
}
