//! The benchmark's cluster: three `squall node` processes of this binary on loopback, each a
//! coordinator replica with worker slots, each in a process group of its own with its workers
//! (so that killing a node kills its workers with it, as a machine's loss would).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

/// Worker slots per node.
const SLOTS: u16 = 2;

/// One node's identity: the same on every start.
struct NodeSpec {
    client: SocketAddr,
    raft: SocketAddr,
    worker_port: u16,
    data_dir: PathBuf,
    log: PathBuf,
}

/// Three nodes, any of which may be killed and started again.
pub(crate) struct BenchCluster {
    program: PathBuf,
    nodes: BTreeMap<u64, NodeSpec>,
    running: BTreeMap<u64, Child>,
    session_timeout: Duration,
    tick: Duration,
}

/// Free loopback ports: `count` single ones and then one run of `SLOTS` consecutive ones per
/// node, held until all are chosen so that none is handed out twice.
fn free_ports(nodes: usize) -> anyhow::Result<Vec<(SocketAddr, SocketAddr, u16)>> {
    let mut held = Vec::new();
    let mut chosen = Vec::new();
    let bind = |port: u16| TcpListener::bind(("127.0.0.1", port));
    for _ in 0..nodes {
        let client = bind(0).context("no free loopback port")?;
        let raft = bind(0).context("no free loopback port")?;
        let (client_addr, raft_addr) = (client.local_addr()?, raft.local_addr()?);
        held.extend([client, raft]);
        let worker = loop {
            let first = bind(0).context("no free loopback port")?;
            let port = first.local_addr()?.port();
            if port < u16::MAX - SLOTS {
                let rest: Result<Vec<_>, _> = (1..SLOTS).map(|s| bind(port + s)).collect();
                if let Ok(rest) = rest {
                    held.push(first);
                    held.extend(rest);
                    break port;
                }
            }
        };
        chosen.push((client_addr, raft_addr, worker));
    }
    Ok(chosen)
}

impl BenchCluster {
    /// Starts nodes 1 to 3 of `program` with their data and logs in `dir`.
    pub(crate) fn start(program: &Path, dir: &Path, session_timeout: Duration, tick: Duration) -> anyhow::Result<Self> {
        let nodes = free_ports(3)?
            .into_iter()
            .zip(1u64..)
            .map(|((client, raft, worker_port), id)| {
                let spec = NodeSpec {
                    client,
                    raft,
                    worker_port,
                    data_dir: dir.join(format!("node{id}")),
                    log: dir.join(format!("node{id}.log")),
                };
                (id, spec)
            })
            .collect();
        let mut cluster =
            BenchCluster { program: program.to_path_buf(), nodes, running: BTreeMap::new(), session_timeout, tick };
        for id in 1..=3 {
            cluster.spawn(id)?;
        }
        Ok(cluster)
    }

    /// Starts node `id` (again), its output appended to its log.
    pub(crate) fn spawn(&mut self, id: u64) -> anyhow::Result<()> {
        anyhow::ensure!(!self.running.contains_key(&id), "node {id} is already running");
        let spec = &self.nodes[&id];
        let mut log = File::options().create(true).append(true).open(&spec.log)?;
        writeln!(log, "=== bench: starting node {id} ===")?;
        let mut command = Command::new(&self.program);
        command.args(["node", "--id", &id.to_string(), "--slots", &SLOTS.to_string()]);
        command.arg("--data-dir").arg(&spec.data_dir);
        command.args(["--listen", &spec.client.to_string(), "--raft", &spec.raft.to_string()]);
        for (peer, peer_spec) in &self.nodes {
            command.args(["--peer", &format!("{peer}={}", peer_spec.raft)]);
        }
        command.args(["--worker-port", &spec.worker_port.to_string()]);
        command.args(["--session-timeout", &format!("{}ms", self.session_timeout.as_millis())]);
        command.args(["--tick", &format!("{}ms", self.tick.as_millis())]);
        // Its own process group, with the workers its supervisor starts.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start node {id}"))?;
        self.running.insert(id, child);
        Ok(())
    }

    /// SIGKILLs node `id`'s process group — the node and its workers — at once; returns when
    /// the signal was sent.
    pub(crate) fn kill(&mut self, id: u64) -> anyhow::Result<Instant> {
        let mut child = self.running.remove(&id).with_context(|| format!("node {id} is not running"))?;
        // SAFETY: killpg with a process group id we created and SIGKILL has no memory effects.
        let killed = unsafe { libc::killpg(child.id() as i32, libc::SIGKILL) };
        let at = Instant::now();
        anyhow::ensure!(killed == 0, "cannot kill node {id}'s process group");
        child.wait()?;
        Ok(at)
    }

    /// The ensemble's client addresses, as a connect string.
    pub(crate) fn connect_string(&self) -> String {
        self.nodes.values().map(|n| n.client.to_string()).collect::<Vec<_>>().join(",")
    }

    /// The ids of the running nodes.
    pub(crate) fn running(&self) -> Vec<u64> {
        self.running.keys().copied().collect()
    }

    /// The running node whose replica says it leads the ensemble.
    pub(crate) fn raft_leader(&self) -> Option<u64> {
        self.running.keys().copied().find(|id| {
            let srvr = four_letter(self.nodes[id].client, "srvr").unwrap_or_default();
            srvr.lines().any(|line| line == "Mode: leader")
        })
    }

    /// The last lines of every node's log, for an error message.
    pub(crate) fn logs(&self) -> String {
        let mut out = String::new();
        for (id, spec) in &self.nodes {
            let log = std::fs::read_to_string(&spec.log).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            out.push_str(&format!("--- node {id} ({}) ---\n", spec.log.display()));
            for line in &lines[lines.len().saturating_sub(30)..] {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for BenchCluster {
    fn drop(&mut self) {
        for (_, mut child) in std::mem::take(&mut self.running) {
            // SAFETY: as in `kill`.
            unsafe { libc::killpg(child.id() as i32, libc::SIGKILL) };
            let _ = child.wait();
        }
    }
}

/// A four-letter word's answer from `addr`, if it answers within a second.
fn four_letter(addr: SocketAddr, word: &str) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    stream.write_all(word.as_bytes()).ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    Some(answer)
}
