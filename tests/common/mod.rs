//! Real `squall node` processes on 127.0.0.1 for the process-level suites: a three-replica
//! [`Ensemble`] whose nodes are SIGKILLed and restarted for real, and the clients and waits the
//! tests drive it with.
//!
//! Every process belongs to an [`Ensemble`] that SIGKILLs it when the test ends, passed or
//! failed; a failing test prints each node's log (its stderr at `RUST_LOG=info`). Waits poll a
//! condition against a deadline.

// Each test crate that includes this module uses a different part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use zookeeper_client as zk;
pub mod tansu;

/// The nodes' tick: session timeouts are clamped to 20 ticks, so 200 ms allows [`SESSION_TIMEOUT`].
pub const TICK: &str = "200ms";
/// The session timeout every client asks for.
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(4);
/// How long a wait may take before the test fails: generous, the machine is shared.
pub const DEADLINE: Duration = Duration::from_secs(20);
/// The bound asserted on the time from the leader's SIGKILL to the first acknowledged write.
pub const RECOVERY_BOUND: Duration = Duration::from_secs(15);
/// How many log lines of each node a failing test prints.
pub const LOG_TAIL: usize = 150;

/// The first of `count` consecutive loopback ports no one listens on.
///
/// Ports come from below the kernel's ephemeral range (which starts at 32768 unless changed),
/// so the many outgoing connections of the processes under test cannot take one between the
/// moment it is picked and the moment a node binds it; each is handed out once per run, and
/// `count` consecutive ports are free (a node's worker slots listen on consecutive ports).
pub fn free_ports(count: u16) -> SocketAddr {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    // Spread test binaries and runs apart: start from a place the process id picks.
    let base = 20_000 + (std::process::id() as usize * 7919) % 10_000;
    loop {
        let offset = NEXT.fetch_add(usize::from(count), Ordering::Relaxed);
        let port = (base + offset) % 12_000 + 20_000;
        let free = (0..count).all(|i| TcpListener::bind(("127.0.0.1", port as u16 + i)).is_ok());
        if free {
            return SocketAddr::from(([127, 0, 0, 1], port as u16));
        }
    }
}

/// A loopback address no one listens on (see [`free_ports`]).
pub fn free_addr() -> SocketAddr {
    free_ports(1)
}

/// The answer of the node at `addr` to a four-letter word; `None` while it does not answer.
pub async fn four_letter(addr: SocketAddr, word: &'static str) -> Option<String> {
    tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        stream.write_all(word.as_bytes()).ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).ok()?;
        Some(answer)
    })
    .await
    .unwrap()
}

/// What `srvr` on `addr` says after `Mode: `; `None` while the node does not answer.
pub async fn mode(addr: SocketAddr) -> Option<String> {
    let srvr = four_letter(addr, "srvr").await?;
    srvr.lines().find_map(|line| line.strip_prefix("Mode: ")).map(str::to_string)
}

/// One replica's identity: the same on every start.
pub struct NodeSpec {
    client: SocketAddr,
    /// The first of the ports its workers listen on (`--worker-port`).
    worker_port: u16,
    raft: SocketAddr,
    data_dir: PathBuf,
    log: PathBuf,
}

/// Three `squall node` processes with fixed ids, ports and data directories, any of which may be
/// killed and started again.
pub struct Ensemble {
    /// Holds the data directories and logs; kept (not deleted) when a test fails.
    dir: Option<tempfile::TempDir>,
    nodes: BTreeMap<u64, NodeSpec>,
    running: BTreeMap<u64, Child>,
    /// Arguments every node gets besides its identity.
    extra: Vec<String>,
    /// The binary the nodes run: `squall`, or a binary with kinds of its own.
    program: PathBuf,
}

impl Ensemble {
    /// Starts replicas 1 to 3.
    pub fn start() -> Ensemble {
        Ensemble::start_with(&[])
    }

    /// Starts replicas 1 to 3, each also given `extra` arguments.
    pub fn start_with(extra: &[&str]) -> Ensemble {
        Ensemble::start_program(Path::new(env!("CARGO_BIN_EXE_squall")), extra)
    }

    /// Starts replicas 1 to 3 of `program` (a binary that runs `squall::main`), each also given
    /// `extra` arguments.
    pub fn start_program(program: &Path, extra: &[&str]) -> Ensemble {
        let dir = tempfile::tempdir().unwrap();
        let nodes = (1..=3u64)
            .map(|id| {
                let spec = NodeSpec {
                    client: free_addr(),
                    worker_port: free_ports(2).port(),
                    raft: free_addr(),
                    data_dir: dir.path().join(format!("node{id}")),
                    log: dir.path().join(format!("node{id}.log")),
                };
                (id, spec)
            })
            .collect();
        let extra = extra.iter().map(|a| a.to_string()).collect();
        let program = program.to_path_buf();
        let mut ensemble = Ensemble { dir: Some(dir), nodes, running: BTreeMap::new(), extra, program };
        for id in 1..=3 {
            ensemble.spawn(id);
        }
        ensemble
    }

    /// Starts replica `id` with its id, data directory, ports and peers; its stderr is appended
    /// to its log.
    pub fn spawn(&mut self, id: u64) {
        assert!(!self.running.contains_key(&id), "node {id} is already running");
        let spec = &self.nodes[&id];
        let mut log = File::options().create(true).append(true).open(&spec.log).unwrap();
        writeln!(log, "=== test: starting node {id} ===").unwrap();
        let mut command = Command::new(&self.program);
        command.args(["node", "--id", &id.to_string(), "--tick", TICK]);
        command.arg("--data-dir").arg(&spec.data_dir);
        command.args(["--listen", &spec.client.to_string(), "--raft", &spec.raft.to_string()]);
        for (peer, peer_spec) in &self.nodes {
            command.args(["--peer", &format!("{peer}={}", peer_spec.raft)]);
        }
        command.args(&self.extra);
        if self.extra.iter().any(|a| a == "--slots") {
            command.args(["--worker-port", &spec.worker_port.to_string()]);
        }
        // Its own process group, with the workers its supervisor starts: see `kill_group`.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start node {id}: {e}"));
        self.running.insert(id, child);
    }

    /// SIGKILLs replica `id` and reaps it; returns the instant the signal was sent.
    pub fn kill(&mut self, id: u64) -> Instant {
        let mut child = self.running.remove(&id).unwrap_or_else(|| panic!("node {id} is not running"));
        child.kill().unwrap();
        let killed = Instant::now();
        child.wait().unwrap();
        killed
    }

    /// SIGKILLs node `id`'s whole process group — the node and the workers it started — at
    /// once, as a machine's loss would; returns the instant the signal was sent.
    pub fn kill_group(&mut self, id: u64) -> Instant {
        let mut child = self.running.remove(&id).unwrap_or_else(|| panic!("node {id} is not running"));
        assert_eq!(unsafe { libc::killpg(child.id() as i32, libc::SIGKILL) }, 0, "killpg of node {id}");
        let killed = Instant::now();
        child.wait().unwrap();
        killed
    }

    /// Asserts that no running node has exited on its own.
    pub fn assert_running(&mut self, when: &str) {
        let exited: Vec<String> = self
            .running
            .iter_mut()
            .filter_map(|(id, child)| child.try_wait().unwrap().map(|status| format!("node {id} ({status})")))
            .collect();
        assert!(exited.is_empty(), "{when}: {} exited on their own", exited.join(", "));
    }

    pub fn addr(&self, id: u64) -> SocketAddr {
        self.nodes[&id].client
    }

    /// Every replica's client address, as a connect string.
    pub fn connect_string(&self) -> String {
        self.nodes.values().map(|n| n.client.to_string()).collect::<Vec<_>>().join(",")
    }

    /// Waits until one running replica leads and every other running one follows; returns the
    /// leader.
    pub async fn wait_for_leader(&self) -> u64 {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let mut modes = Vec::new();
            for &id in self.running.keys() {
                modes.push((id, mode(self.addr(id)).await));
            }
            let leaders: Vec<u64> =
                modes.iter().filter(|(_, m)| m.as_deref() == Some("leader")).map(|(id, _)| *id).collect();
            let followers = modes.iter().filter(|(_, m)| m.as_deref() == Some("follower")).count();
            if leaders.len() == 1 && followers == modes.len() - 1 {
                return leaders[0];
            }
            assert!(Instant::now() < deadline, "no single leader among the running nodes: {modes:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The last [`LOG_TAIL`] lines of each node's log.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for (id, spec) in &self.nodes {
            let text = std::fs::read_to_string(&spec.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL)..];
            out += &format!("----- node {id}: {} (last {} lines) -----\n", spec.log.display(), tail.len());
            for line in tail {
                out += line;
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for Ensemble {
    fn drop(&mut self) {
        // Read before any kill: killing one node must not be blamed on another.
        let exited: Vec<String> = self
            .running
            .iter_mut()
            .filter_map(|(id, child)| child.try_wait().ok().flatten().map(|status| format!("node {id} ({status})")))
            .collect();
        for child in self.running.values_mut() {
            // The whole group: no worker outlives its test.
            unsafe { libc::killpg(child.id() as i32, libc::SIGKILL) };
            let _ = child.wait();
        }
        if std::thread::panicking() {
            if !exited.is_empty() {
                eprintln!("exited on their own before the test ended: {}", exited.join(", "));
            }
            eprintln!("{}", self.logs());
            if let Some(dir) = self.dir.take() {
                eprintln!("node data and logs kept in {}", dir.keep().display());
            }
        }
    }
}

/// A client of `connect_string` with [`SESSION_TIMEOUT`]; retries until [`DEADLINE`].
pub async fn connect(connect_string: &str) -> zk::Client {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match zk::Client::connector().with_session_timeout(SESSION_TIMEOUT).connect(connect_string).await {
            Ok(client) => return client,
            Err(e) if Instant::now() < deadline => eprintln!("connecting to {connect_string}: {e}; retrying"),
            Err(e) => panic!("cannot connect to {connect_string}: {e}"),
        }
    }
}

pub fn persistent() -> zk::CreateOptions<'static> {
    zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all())
}

pub fn ephemeral() -> zk::CreateOptions<'static> {
    zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all())
}
