//! Where the cluster keeps its state in the znode store (DESIGN §4; `docs/znodes.md`).

/// The root of everything Squall writes.
pub const ROOT: &str = "/squall";
/// One ephemeral znode per live node.
pub const NODES: &str = "/squall/nodes";
/// Master election: candidates and the epoch.
pub const MASTER: &str = "/squall/master";
/// Ephemeral-sequential candidates for master, `c-0000000000`, ...
pub const CANDIDATES: &str = "/squall/master/candidates";
/// The master epoch: its version is the epoch, bumped by each new master and checked by every
/// write a master makes (the fencing token).
pub const EPOCH: &str = "/squall/master/epoch";
/// One persistent znode per deployed topology.
pub const TOPOLOGIES: &str = "/squall/topologies";
/// One persistent znode per scheduled topology: task → node/slot.
pub const ASSIGNMENTS: &str = "/squall/assignments";
/// Worker liveness, per topology.
pub const WORKERS: &str = "/squall/workers";
/// Committed Kafka offsets.
pub const OFFSETS: &str = "/squall/offsets";
/// Recent errors per topology and component.
pub const ERRORS: &str = "/squall/errors";
/// Live configuration changes per topology (`squall config`).
pub const CONFIG: &str = "/squall/config";
/// Locks taken by user components (`ctx.lock`), per topology and lock name.
pub const LOCKS: &str = "/squall/locks";
/// Leader elections among a component's tasks (`ctx.is_leader`), per topology and component.
pub const LEADERS: &str = "/squall/leaders";
/// Where the failover benchmark's source tasks resume (`squall bench failover`).
pub const BENCH: &str = "/squall/bench";

/// The persistent znodes every cluster has, parents first.
pub const SKELETON: &[&str] =
    &[ROOT, NODES, MASTER, CANDIDATES, TOPOLOGIES, ASSIGNMENTS, WORKERS, OFFSETS, ERRORS, CONFIG, LOCKS, LEADERS];

/// `/squall/nodes/<node>`.
pub fn node(node: &str) -> String {
    format!("{NODES}/{node}")
}

/// `/squall/topologies/<name>`.
pub fn topology(name: &str) -> String {
    format!("{TOPOLOGIES}/{name}")
}

/// `/squall/config/<name>`.
pub fn config(name: &str) -> String {
    format!("{CONFIG}/{name}")
}

/// `/squall/assignments/<name>`.
pub fn assignment(name: &str) -> String {
    format!("{ASSIGNMENTS}/{name}")
}

/// `/squall/workers/<topology>`.
pub fn workers(topology: &str) -> String {
    format!("{WORKERS}/{topology}")
}

/// `/squall/workers/<topology>/<node>-<slot>`.
pub fn worker(topology: &str, node: &str, slot: u32) -> String {
    format!("{WORKERS}/{topology}/{node}-{slot}")
}

/// `/squall/bench/<topology>/<component>/<task index>`: the first sequence number a
/// `bench_sequence` task has not seen acknowledged.
pub fn bench_position(topology: &str, component: &str, task_index: u32) -> String {
    format!("{BENCH}/{topology}/{component}/{task_index}")
}

/// `/squall/offsets/<topology>/<spout>/<topic>/<partition>`: the next offset a Kafka spout
/// reads from a partition.
pub fn offset(topology: &str, spout: &str, topic: &str, partition: i32) -> String {
    format!("{OFFSETS}/{topology}/{spout}/{topic}/{partition}")
}
