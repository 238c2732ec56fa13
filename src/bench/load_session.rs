//! A ZooKeeper-protocol session made to load a server: requests are written as a pipeline on
//! one connection, read back in order, and timed, with no task, channel or allocation per
//! request beyond encoding it.
//!
//! `squall bench coordinator` measures servers on the machine that runs it, so whatever the
//! load generator spends is taken from the servers. Through the `zookeeper-client` crate a
//! request cost the generator about 8 µs of CPU (a fifth of a 3-replica ensemble's total under
//! `set`): a future, a channel and a wake-up of its reactor thread per request, and a system
//! call per frame. Here a session writes every request it may send in one system call and reads
//! every answer that has arrived in one, so the servers get the CPU. The codec is the
//! coordinator's own (`squall_coordinator::proto`), the one its tests check against ZooKeeper's
//! byte layouts; a ZooKeeper server answers it like any client.
//!
//! ZooKeeper answers a session's requests in the order it sent them (its one guarantee per
//! session that a pipeline needs), so answers are matched to requests by position, and an xid
//! out of order is a protocol error.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::Context;
use squall_coordinator::KeeperError;
use squall_coordinator::jute::{JUTE_MAX_BUFFER, Reader, split_frame};
use squall_coordinator::proto::{
    self, ConnectRequest, ConnectResponse, MultiResult, ReplyHeader, Request, Response, xid,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long connecting and the session handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The session timeout asked for. No pings are sent: a session under load is never idle.
const SESSION_TIMEOUT_MS: i32 = 30_000;
/// Longest a session waits for any answer while requests are unanswered: as long as the
/// session may live unheard, after which the server would have expired it anyway.
const ANSWER_TIMEOUT: Duration = Duration::from_millis(SESSION_TIMEOUT_MS as u64);
/// How long closing may wait for the server's answer.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a request failed: a ZooKeeper error code, or the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LoadError {
    /// The server answered with this error (`NoNode`, `BadVersion`, ...).
    Keeper(KeeperError),
    /// The server answered with a code ZooKeeper does not define.
    Code(i32),
    /// The connection broke, or the server broke the protocol, before the answer came.
    ConnectionLoss(String),
}

impl LoadError {
    /// The name errors are counted by: ZooKeeper's name for the code.
    pub(crate) fn kind(&self) -> String {
        match self {
            LoadError::Keeper(e) => format!("{e:?}"),
            LoadError::Code(code) => format!("error code {code}"),
            LoadError::ConnectionLoss(_) => "ConnectionLoss".to_string(),
        }
    }

    fn from_code(code: i32) -> LoadError {
        KeeperError::from_code(code).map_or(LoadError::Code(code), LoadError::Keeper)
    }
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Keeper(e) => write!(f, "{e:?} ({})", e.code()),
            LoadError::Code(code) => write!(f, "error code {code}"),
            LoadError::ConnectionLoss(why) => write!(f, "connection lost: {why}"),
        }
    }
}

/// One session on one connection; see the module documentation.
pub(crate) struct LoadSession {
    stream: TcpStream,
    server: String,
    next_xid: i32,
    /// Bytes read and not yet taken as frames: `read[start..end]`.
    read: Vec<u8>,
    start: usize,
    end: usize,
    write: Vec<u8>,
}

/// A request on its way: its xid, its op code, and whatever the caller attached to it.
struct Sent<T> {
    xid: i32,
    op: i32,
    tag: T,
    at: Instant,
}

/// The largest reply frame taken: the largest data a znode holds, and room for its Stat.
const MAX_FRAME: usize = JUTE_MAX_BUFFER + 1024;

impl LoadSession {
    /// Opens a session on `server` (`host:port`).
    pub(crate) async fn connect(server: &str) -> anyhow::Result<LoadSession> {
        let opening = async {
            let stream = TcpStream::connect(server).await.context("cannot connect")?;
            stream.set_nodelay(true).context("cannot set TCP_NODELAY")?;
            let mut session = LoadSession {
                stream,
                server: server.to_string(),
                next_xid: 1,
                read: vec![0; 64 << 10],
                start: 0,
                end: 0,
                write: Vec::with_capacity(64 << 10),
            };
            let hello = ConnectRequest {
                protocol_version: 0,
                last_zxid_seen: 0,
                timeout: SESSION_TIMEOUT_MS,
                session_id: 0,
                passwd: vec![0; 16],
                read_only: Some(false),
            };
            hello.encode(&mut session.write);
            session.flush().await?;
            let answer = session.next_frame().await?;
            let answer = ConnectResponse::decode(&answer).context("a malformed connect response")?;
            anyhow::ensure!(answer.timeout > 0 && answer.session_id != 0, "the server refused the session");
            Ok(session)
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, opening).await {
            Ok(opened) => opened.with_context(|| format!("cannot open a session on {server}")),
            Err(_) => anyhow::bail!("cannot open a session on {server}: no answer within {CONNECT_TIMEOUT:?}"),
        }
    }

    /// Sends `count` requests, the `i`th made by `request(i)` (with a tag the answer is
    /// reported with), keeping up to `in_flight` unanswered, and reports each answer with its
    /// latency to `answered`. A broken connection fails every request still unanswered and
    /// every one not yet sent, with [`LoadError::ConnectionLoss`].
    pub(crate) async fn run<T>(
        &mut self,
        count: usize,
        in_flight: usize,
        mut request: impl FnMut(usize) -> (Request, T),
        mut answered: impl FnMut(T, Result<(), LoadError>, Duration),
    ) {
        let mut waiting: VecDeque<Sent<T>> = VecDeque::with_capacity(in_flight);
        let mut next = 0;
        while next < count || !waiting.is_empty() {
            // Everything that may be sent goes in one write; the clock is read once for it.
            let now = Instant::now();
            while next < count && waiting.len() < in_flight {
                let (body, tag) = request(next);
                next += 1;
                let xid = self.next_xid;
                self.next_xid = self.next_xid.wrapping_add(1).max(1);
                proto::encode_request(&mut self.write, xid, &body);
                waiting.push_back(Sent { xid, op: body.op(), tag, at: now });
            }
            let exchanged = match self.flush().await {
                Ok(()) => self.receive().await,
                Err(e) => Err(e),
            };
            if let Err(e) = exchanged.and_then(|()| self.take_answers(&mut waiting, &mut answered)) {
                let lost = LoadError::ConnectionLoss(format!("{e:#}"));
                let now = Instant::now();
                for sent in waiting.drain(..) {
                    answered(sent.tag, Err(lost.clone()), now - sent.at);
                }
                for i in next..count {
                    answered(request(i).1, Err(lost.clone()), Duration::ZERO);
                }
                return;
            }
        }
    }

    /// Closes the session, waiting briefly for the server to confirm.
    pub(crate) async fn close(mut self) {
        let xid = self.next_xid;
        proto::encode_request(&mut self.write, xid, &Request::CloseSession);
        let closing = async {
            self.flush().await?;
            loop {
                let frame = self.next_frame().await?;
                let header: ReplyHeader = Reader::new(&frame).read()?;
                if header.xid == xid {
                    return anyhow::Ok(());
                }
            }
        };
        // A server that does not answer in time expires the session itself.
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, closing).await;
    }

    async fn flush(&mut self) -> anyhow::Result<()> {
        if !self.write.is_empty() {
            self.stream.write_all(&self.write).await.with_context(|| format!("cannot write to {}", self.server))?;
            self.write.clear();
        }
        Ok(())
    }

    /// Reads once, waiting for at least one byte; makes room first (moving the unread bytes
    /// to the front, or growing the buffer when a frame does not fit in it).
    async fn receive(&mut self) -> anyhow::Result<()> {
        if self.end == self.read.len() {
            if self.start > 0 {
                self.read.copy_within(self.start..self.end, 0);
                (self.start, self.end) = (0, self.end - self.start);
            } else {
                self.read.resize(self.read.len() * 2, 0);
            }
        }
        let reading = tokio::time::timeout(ANSWER_TIMEOUT, self.stream.read(&mut self.read[self.end..])).await;
        let Ok(n) = reading else {
            anyhow::bail!("{} sent nothing for {ANSWER_TIMEOUT:?} while requests waited", self.server);
        };
        let n = n.with_context(|| format!("cannot read from {}", self.server))?;
        anyhow::ensure!(n > 0, "{} closed the connection", self.server);
        self.end += n;
        Ok(())
    }

    /// The next whole frame's payload, read as needed (handshake and close only: a copy).
    async fn next_frame(&mut self) -> anyhow::Result<Vec<u8>> {
        loop {
            if let Some((payload, used)) = split_frame(&self.read[self.start..self.end], MAX_FRAME)? {
                let payload = payload.to_vec();
                self.start += used;
                return Ok(payload);
            }
            self.receive().await?;
        }
    }

    /// Answers, in order, the requests whose replies have been read whole.
    fn take_answers<T>(
        &mut self,
        waiting: &mut VecDeque<Sent<T>>,
        answered: &mut impl FnMut(T, Result<(), LoadError>, Duration),
    ) -> anyhow::Result<()> {
        let now = Instant::now();
        while let Some((payload, used)) = split_frame(&self.read[self.start..self.end], MAX_FRAME)? {
            let header: ReplyHeader = Reader::new(payload).read()?;
            if header.xid != xid::NOTIFICATION && header.xid != xid::PING {
                let sent = waiting.pop_front().context("an answer to no request")?;
                anyhow::ensure!(header.xid == sent.xid, "answer {} came where {} was due", header.xid, sent.xid);
                answered(sent.tag, outcome(payload, sent.op)?, now - sent.at);
            }
            self.start += used;
        }
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        }
        Ok(())
    }
}

/// What a reply frame says about its request: success, or the error of the reply or, for a
/// multi, of its first failed op.
fn outcome(payload: &[u8], op: i32) -> anyhow::Result<Result<(), LoadError>> {
    let (header, body) = proto::decode_reply(payload, op).context("a malformed reply")?;
    if header.err != 0 {
        return Ok(Err(LoadError::from_code(header.err)));
    }
    if let Some(Response::Multi(results)) = body {
        let failed = results.iter().find_map(|r| match r {
            MultiResult::Error { err } if *err != 0 => Some(*err),
            _ => None,
        });
        if let Some(err) = failed {
            return Ok(Err(LoadError::from_code(err)));
        }
    }
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use squall_coordinator::proto::{OpCode, encode_reply, rollback};
    use squall_coordinator::stat::Stat;

    /// A reply frame's payload, as a server sends it.
    fn reply(result: Result<&Response, KeeperError>) -> Vec<u8> {
        let mut frame = Vec::new();
        encode_reply(&mut frame, 7, 100, result);
        frame.split_off(4)
    }

    #[test]
    fn an_answer_is_a_success_or_zookeepers_error() {
        let set = OpCode::SetData.code();
        assert_eq!(outcome(&reply(Ok(&Response::Stat(Stat::default()))), set).unwrap(), Ok(()));
        let missing = outcome(&reply(Err(KeeperError::NoNode)), set).unwrap();
        assert_eq!(missing, Err(LoadError::Keeper(KeeperError::NoNode)));
        assert_eq!(missing.unwrap_err().kind(), "NoNode");
        assert!(outcome(&[0, 0, 0, 7], set).is_err(), "a truncated reply is a protocol error");
    }

    /// ZooKeeper reports a failed multi as a success whose results carry the error.
    #[test]
    fn a_multi_fails_with_its_first_failed_op() {
        let multi = OpCode::Multi.code();
        let failed = Response::Multi(rollback(2, 0, KeeperError::BadVersion));
        assert_eq!(outcome(&reply(Ok(&failed)), multi).unwrap(), Err(LoadError::Keeper(KeeperError::BadVersion)));
        let done = Response::Multi(vec![MultiResult::Check, MultiResult::SetData { stat: Stat::default() }]);
        assert_eq!(outcome(&reply(Ok(&done)), multi).unwrap(), Ok(()));
    }

    #[test]
    fn an_unknown_error_code_is_counted_by_its_number() {
        assert_eq!(LoadError::from_code(-12345).kind(), "error code -12345");
    }
}
