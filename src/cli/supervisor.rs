//! A node's supervisor: keeps one `squall worker` process running for each slot of this node
//! that an assignment uses — starts it, restarts it at once when it exits, stops it when its
//! slot is no longer assigned. Each worker's stdin is a pipe the supervisor holds: when the
//! supervisor's process dies, however it dies, the pipe closes and the worker exits by itself.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use squall_runtime::cluster::paths;
use squall_runtime::scheduler::Assignment;
use tokio::process::{Child, Command};
use zookeeper_client as zk;

/// How often the supervisor checks its workers and the assignments.
const CHECK_EVERY: Duration = Duration::from_millis(200);

/// A worker process and the write end of its stdin pipe: the worker exits when it closes.
struct Worker {
    child: Child,
    _stdin: Option<tokio::process::ChildStdin>,
}

/// Supervises the workers of `node` against the ensemble `target` until the task is dropped
/// (which kills every worker it started).
pub(crate) async fn supervise(target: String, node: String, session_timeout: Duration) {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            tracing::error!("supervisor of node {node}: cannot find its own binary: {e}");
            return;
        }
    };
    let mut workers: BTreeMap<(String, u32), Worker> = BTreeMap::new();
    let mut client: Option<zk::Client> = None;
    loop {
        if client.is_none() {
            client = super::cluster::connect(&target, session_timeout).await.ok();
        }
        if let Some(c) = &client {
            match wanted(c, &node).await {
                Ok(wanted) => reconcile(&exe, &target, &node, session_timeout, &wanted, &mut workers),
                // Keep the workers running while the store is away.
                Err(zk::Error::SessionExpired | zk::Error::ClientClosed) => client = None,
                Err(e) => tracing::debug!("supervisor of node {node}: {e}"),
            }
        }
        // Look again in a moment, or at once when a worker exits: a crashed worker is
        // restarted without waiting for the next round.
        tokio::select! {
            _ = tokio::time::sleep(CHECK_EVERY) => {}
            _ = first_exit(&mut workers) => {}
        }
    }
}

/// Waits until one of `workers` exits (forever if there are none).
async fn first_exit(workers: &mut BTreeMap<(String, u32), Worker>) {
    if workers.is_empty() {
        return std::future::pending().await;
    }
    let exits = workers.values_mut().map(|worker| Box::pin(worker.child.wait()));
    let _ = futures::future::select_all(exits).await;
}

/// The (topology, slot) pairs of this node that assignments use.
async fn wanted(client: &zk::Client, node: &str) -> Result<Vec<(String, u32)>, zk::Error> {
    let mut wanted = Vec::new();
    let topologies = match client.list_children(paths::ASSIGNMENTS).await {
        Ok(t) => t,
        Err(zk::Error::NoNode) => return Ok(wanted),
        Err(e) => return Err(e),
    };
    for topology in topologies {
        let data = match client.get_data(&paths::assignment(&topology)).await {
            Ok((data, _)) => data,
            Err(zk::Error::NoNode) => continue,
            Err(e) => return Err(e),
        };
        if let Ok(assignment) = Assignment::from_json(&data) {
            wanted.extend(assignment.workers_on(node).map(|w| (topology.clone(), w.slot)));
        }
    }
    Ok(wanted)
}

/// Starts the wanted workers that are not running (or exited), stops the unwanted ones.
fn reconcile(
    exe: &PathBuf,
    target: &str,
    node: &str,
    session_timeout: Duration,
    wanted: &[(String, u32)],
    workers: &mut BTreeMap<(String, u32), Worker>,
) {
    workers.retain(|key, Worker { child, .. }| {
        if !wanted.contains(key) {
            tracing::info!("supervisor of node {node}: stopping worker {}-{} of '{}'", node, key.1, key.0);
            let _ = child.start_kill();
            return false;
        }
        match child.try_wait() {
            Ok(Some(status)) => {
                eprintln!("squall node {node}: worker {node}-{} of '{}' exited ({status}); restarting", key.1, key.0);
                false
            }
            _ => true,
        }
    });
    for key in wanted {
        if workers.contains_key(key) {
            continue;
        }
        let (topology, slot) = key;
        let spawned = Command::new(exe)
            .args(["worker", "--topology", topology, "--node", node, "--slot", &slot.to_string()])
            .args(["--coordinator", target])
            .args(["--session-timeout", &format!("{}ms", session_timeout.as_millis())])
            .stdin(Stdio::piped())
            .kill_on_drop(true)
            .spawn();
        match spawned {
            Ok(mut child) => {
                // Kept apart from the child: waiting on a tokio child closes its stdin, which
                // would tell the worker its supervisor is gone.
                let stdin = child.stdin.take();
                workers.insert(key.clone(), Worker { child, _stdin: stdin });
            }
            Err(e) => tracing::error!("supervisor of node {node}: cannot start a worker: {e}"),
        }
    }
}
