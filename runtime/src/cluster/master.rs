//! The master: one node at a time (see [`election`](super::election)) turns the deployed
//! topologies into assignments over the live nodes' slots ([`crate::scheduler`]) and writes
//! them to `/squall/assignments/<name>`, every write fenced by its epoch. It reschedules when
//! nodes come and go or topologies are deployed: only the tasks that must move, move. A new
//! master starts from the znodes alone.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use zookeeper_client as zk;

use super::election::{Candidate, Fence};
use super::membership::{self, NodeInfo};
use super::paths;
use super::topologies::{self, Status};
use crate::scheduler::{Assignment, LiveNode, TaskLayout, schedule};

/// Why a scheduling round stopped.
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    /// Another master took a newer epoch: this one must stop writing.
    #[error("another master has taken over (this one's epoch {0} is stale)")]
    FencedOut(i32),
    /// The store failed.
    #[error("coordinator: {0}")]
    Store(#[from] zk::Error),
}

/// What one scheduling round changed: the topologies whose assignment it wrote, and the ones it
/// could not schedule, with why.
#[derive(Debug, Default)]
pub struct Round {
    /// Topologies whose assignment was written.
    pub written: Vec<String>,
    /// Topologies that could not be scheduled, with the reason.
    pub unschedulable: Vec<(String, String)>,
    /// Killed topologies whose assignment and record were removed.
    pub removed: Vec<String>,
}

/// How often a master asks whether it should step aside.
const STEP_ASIDE_CHECK: Duration = Duration::from_millis(500);

/// Campaigns for master as `node` and, once leading, schedules until fenced out or the session
/// ends. `poll` bounds how long a change can go unnoticed if a watch is missed.
///
/// `step_aside` says whether this node should leave the master role to another candidate: a
/// node whose coordinator replica leads the Raft group does, when another candidate waits, so
/// that the loss of one node costs one election — the store's or the master's — and not both
/// back to back (a new Raft leader restarts every session's timeout, so a master that died
/// with the Raft leader is replaced a whole session timeout after the new leader is elected).
pub async fn run(
    client: zk::Client,
    node: &str,
    poll: Duration,
    step_aside: &(dyn Fn() -> bool + Send + Sync),
) -> Result<(), MasterError> {
    loop {
        let candidate = Candidate::join(&client, node).await?;
        let leadership = candidate.lead().await?;
        tracing::info!("node {node} is the master (epoch {})", leadership.epoch);
        let fence = Fence { epoch: leadership.epoch };
        lead(&client, fence, poll, step_aside, &candidate).await?;
        tracing::info!("node {node} steps aside as master: its replica leads the coordinator");
        candidate.resign().await?;
    }
}

/// Schedules as master until fenced out, the session ends (errors) or it should step aside
/// (returns).
async fn lead(
    client: &zk::Client,
    fence: Fence,
    poll: Duration,
    step_aside: &(dyn Fn() -> bool + Send + Sync),
    candidate: &Candidate,
) -> Result<(), MasterError> {
    let mut aside = tokio::time::interval(STEP_ASIDE_CHECK);
    loop {
        // Watches set once per change, not once per round: a round the poll starts keeps them.
        let (_, _, nodes_changed) = client.get_and_watch_children(paths::NODES).await?;
        let (_, _, topologies_changed) = client.get_and_watch_children(paths::TOPOLOGIES).await?;
        let nodes_changed = nodes_changed.changed();
        let topologies_changed = topologies_changed.changed();
        tokio::pin!(nodes_changed, topologies_changed);
        loop {
            let round = schedule_round(client, fence).await?;
            for name in &round.written {
                tracing::info!("master: assignment of '{name}' written");
            }
            for name in &round.removed {
                tracing::info!("master: killed topology '{name}' removed");
            }
            for (name, why) in &round.unschedulable {
                tracing::warn!("master: cannot schedule '{name}': {why}");
            }
            let next_round = tokio::time::sleep(poll);
            tokio::pin!(next_round);
            let changed = loop {
                tokio::select! {
                    _ = &mut nodes_changed => break true,
                    _ = &mut topologies_changed => break true,
                    _ = &mut next_round => break false,
                    _ = aside.tick() => {
                        if step_aside() && candidate.others_waiting().await? {
                            return Ok(());
                        }
                    }
                }
            };
            if changed {
                break;
            }
        }
    }
}

/// One scheduling round: every live topology's assignment is brought up to date with the live
/// nodes, and written (fenced) where it changed.
pub async fn schedule_round(client: &zk::Client, fence: Fence) -> Result<Round, MasterError> {
    let nodes = membership::live_nodes(client).await?;
    let mut assignments: BTreeMap<String, (Assignment, i32)> = BTreeMap::new();
    let topologies = topologies::list(client).await?;
    for (name, _) in &topologies {
        match client.get_data(&paths::assignment(name)).await {
            Ok((data, stat)) => match Assignment::from_json(&data) {
                Ok(assignment) => {
                    assignments.insert(name.clone(), (assignment, stat.version));
                }
                Err(e) => tracing::warn!("{}: unreadable, rescheduling from scratch: {e}", paths::assignment(name)),
            },
            Err(zk::Error::NoNode) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let mut round = Round::default();
    for (name, record) in &topologies {
        if record.status == Status::Killed {
            // Its assignment goes first (the supervisors stop its workers), then its record.
            let mut writer = fence.writer(client);
            if let Some((_, version)) = assignments.remove(name) {
                writer.add_delete(&paths::assignment(name), Some(version)).expect("a valid path");
            }
            writer.add_delete(&paths::topology(name), None).expect("a valid path");
            if client.check_stat(&paths::config(name)).await?.is_some() {
                writer.add_delete(&paths::config(name), None).expect("a valid path");
            }
            match writer.commit().await {
                Ok(_) => round.removed.push(name.clone()),
                Err(e) if Fence::is_fenced_out(&e) => return Err(MasterError::FencedOut(fence.epoch)),
                Err(e) => return Err(MasterError::Store(e.into())),
            }
            continue;
        }
        let spec = match record.parse() {
            Ok(spec) => spec,
            Err(e) => {
                round.unschedulable.push((name.clone(), e));
                continue;
            }
        };
        let layout = match TaskLayout::of_spec(&spec) {
            Ok(layout) => layout,
            Err(e) => {
                round.unschedulable.push((name.clone(), e.to_string()));
                continue;
            }
        };
        let live = live_for(&nodes, name, &assignments);
        let previous = assignments.get(name);
        let next = match schedule(&layout, &live, previous.map(|(a, _)| a), spec.workers.max(1), fence.epoch as u64) {
            Ok(next) => next,
            Err(e) => {
                round.unschedulable.push((name.clone(), e.to_string()));
                continue;
            }
        };
        if previous.is_some_and(|(p, _)| p.workers() == next.workers() && p.layout() == next.layout()) {
            continue;
        }
        let mut writer = fence.writer(client);
        let json = next.to_json();
        let written = match previous {
            Some((_, version)) => writer.add_set_data(&paths::assignment(name), json.as_bytes(), Some(*version)),
            None => writer.add_create(
                &paths::assignment(name),
                json.as_bytes(),
                &zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all()),
            ),
        };
        written.expect("the assignment path is valid");
        match writer.commit().await {
            Ok(_) => {
                let stat_version = previous.map_or(0, |(_, v)| v + 1);
                assignments.insert(name.clone(), (next, stat_version));
                round.written.push(name.clone());
            }
            Err(e) if Fence::is_fenced_out(&e) => return Err(MasterError::FencedOut(fence.epoch)),
            Err(e) => return Err(MasterError::Store(e.into())),
        }
    }
    Ok(round)
}

/// The live nodes as `topology`'s scheduling sees them: slots that other topologies' workers
/// use are taken.
fn live_for(nodes: &[NodeInfo], topology: &str, assignments: &BTreeMap<String, (Assignment, i32)>) -> Vec<LiveNode> {
    let mut taken: BTreeMap<&str, BTreeSet<u32>> = BTreeMap::new();
    for (name, (assignment, _)) in assignments {
        if name != topology {
            for worker in assignment.workers() {
                taken.entry(worker.node.as_str()).or_default().insert(worker.slot);
            }
        }
    }
    nodes.iter().map(|n| n.live().with_taken(taken.get(n.id.as_str()).into_iter().flatten().copied())).collect()
}
