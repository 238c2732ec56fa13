//! `squall node`: runs a coordinator replica until interrupted and, with `--slots`, the node's
//! cluster roles: it registers under `/squall/nodes`, stands for master and supervises its
//! workers. With `--coordinator` it hosts no replica and joins an existing ensemble (Squall's
//! or Apache ZooKeeper) for the cluster roles only.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use squall_coordinator::replica::{Replica, ReplicaConfig};
use squall_runtime::Registry;
use squall_runtime::cluster::NodeInfo;

#[derive(Args)]
pub(crate) struct NodeArgs {
    /// This node's id (a positive integer, unique in the ensemble).
    #[arg(long)]
    id: u64,
    /// Where the replica keeps its Raft log, vote and snapshots. Created if missing; a
    /// directory of another node or one that is not a Squall store is refused.
    #[arg(long, required_unless_present = "coordinator")]
    data_dir: Option<PathBuf>,
    /// The address ZooKeeper clients connect to.
    #[arg(long, default_value = "127.0.0.1:2181")]
    listen: SocketAddr,
    /// The address this replica's peers reach its Raft port at (needed with --peer).
    #[arg(long)]
    raft: Option<SocketAddr>,
    /// A replica of the ensemble as ID=HOST:PORT (its Raft address); list every replica, this
    /// one included. Without --peer the node is a one-replica store.
    #[arg(long = "peer", value_parser = parse_peer)]
    peers: Vec<(u64, String)>,
    /// ZooKeeper's tick: negotiated session timeouts are clamped to [2, 20] ticks.
    #[arg(long, default_value = "100ms", value_parser = super::parse_duration)]
    tick: Duration,
    /// `user:password` of a super user that passes every ACL check.
    #[arg(long, env = "SQUALL_SUPER_USER", hide_env_values = true)]
    super_user: Option<String>,
    /// Writes a snapshot of the state after this many log entries (ZooKeeper's snapCount), or
    /// after half as many as the tree has znodes if that is more; the log before it is purged.
    #[arg(long, default_value_t = squall_coordinator::replica::DEFAULT_SNAPSHOT_EVERY, value_parser = clap::value_parser!(u64).range(1..))]
    snapshot_every: u64,
    /// Joins the cluster with this many worker slots: the node registers under /squall/nodes
    /// (with the component kinds this binary knows) and stands for master. Without it the
    /// node only serves the coordinator.
    #[arg(long)]
    slots: Option<u32>,
    /// The worker on slot S listens for other workers on this port + S.
    #[arg(long, default_value_t = 6700)]
    worker_port: u16,
    /// The address other nodes' workers reach this node's workers at (default: the IP of
    /// --listen).
    #[arg(long)]
    host: Option<String>,
    /// Hosts no replica: joins the ensemble at HOST:PORT[,HOST:PORT...] (Squall's or Apache
    /// ZooKeeper) for the cluster roles only. Needs --slots.
    #[arg(long, requires = "slots", conflicts_with_all = ["data_dir", "raft", "peers", "super_user"])]
    coordinator: Option<String>,
    /// Serves Prometheus metrics (/metrics) and a JSON status (/status) of this node's workers
    /// on this address. Needs --slots.
    #[arg(long, requires = "slots")]
    http: Option<SocketAddr>,
    /// How long after this node (or one of its workers) dies the cluster acts on it: the
    /// session timeout of the node's and its workers' sessions (clamped by the store to
    /// [2, 20] ticks).
    #[arg(long, default_value = super::cluster::DEFAULT_SESSION_TIMEOUT, value_parser = super::parse_duration)]
    session_timeout: Duration,
    /// Threads that run the node's replica, connections and cluster roles (default: one per
    /// core). Replicas that share a machine do best with their share of its cores: three on
    /// two cores, one thread each, spent 13% less CPU per write and served 16% more reads
    /// (docs/benchmarks.md).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    threads: Option<u16>,
}

fn parse_peer(s: &str) -> Result<(u64, String), String> {
    let (id, addr) = s.split_once('=').ok_or_else(|| format!("'{s}' is not ID=HOST:PORT"))?;
    let id = id.parse::<u64>().map_err(|_| format!("'{id}' in '{s}' is not a node id"))?;
    if !addr.contains(':') {
        return Err(format!("'{addr}' in '{s}' is not HOST:PORT"));
    }
    Ok((id, addr.to_string()))
}

pub(crate) fn run(registry: &Registry, args: NodeArgs) -> anyhow::Result<()> {
    let mut peers = BTreeMap::new();
    for (id, addr) in &args.peers {
        if peers.insert(*id, addr.clone()).is_some() {
            anyhow::bail!("--peer lists node {id} twice");
        }
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = args.threads {
        runtime.worker_threads(threads.into());
    }
    let runtime = runtime.enable_all().build().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let replica = match (&args.coordinator, &args.data_dir) {
            (None, Some(data_dir)) => {
                let config = ReplicaConfig {
                    id: args.id,
                    data_dir: data_dir.clone(),
                    client_addr: args.listen,
                    raft_addr: args.raft,
                    peers,
                    tick: args.tick,
                    super_user: args.super_user.clone(),
                    snapshot_every: args.snapshot_every,
                };
                let replica = Replica::start(config).await?;
                eprintln!(
                    "squall node {}: serving ZooKeeper clients on {}{}",
                    args.id,
                    replica.client_addr(),
                    replica.raft_addr().map(|a| format!(", peers on {a}")).unwrap_or_default()
                );
                Some(replica)
            }
            _ => None,
        };
        let target = match (&args.coordinator, &replica) {
            (Some(coordinator), _) => coordinator.clone(),
            (None, Some(replica)) => replica.client_addr().to_string(),
            (None, None) => anyhow::bail!("--data-dir or --coordinator is needed"),
        };
        let http = match args.http {
            Some(addr) => Some(super::http::bind(addr).await?),
            None => None,
        };
        let roles = args.slots.map(|slots| {
            let info = NodeInfo {
                id: args.id.to_string(),
                host: args.host.clone().unwrap_or_else(|| args.listen.ip().to_string()),
                slots,
                worker_port: args.worker_port,
                kinds: registry.spout_kinds().chain(registry.bolt_kinds()).map(str::to_string).collect(),
                version: env!("CARGO_PKG_VERSION").to_string(),
            };
            if let Some(listener) = http {
                tokio::spawn(super::http::serve(listener, target.clone(), info.id.clone()));
            }
            let session = args.session_timeout;
            // A node hosting the coordinator's Raft leader leaves the master role to another.
            let step_aside: super::cluster::StepAside = match &replica {
                Some(replica) => std::sync::Arc::new(replica.leader_probe()),
                None => std::sync::Arc::new(|| false),
            };
            let supervisor = tokio::spawn(super::supervisor::supervise(target.clone(), info.id.clone(), session));
            (tokio::spawn(super::cluster::run_roles(target.clone(), info, session, step_aside)), supervisor)
        });
        wait_for_signal().await?;
        if let Some((roles, supervisor)) = roles {
            roles.abort();
            // Dropping the supervisor's task kills the workers it started.
            supervisor.abort();
            let _ = supervisor.await;
        }
        eprintln!("squall node {}: stopping", args.id);
        if let Some(replica) = replica {
            replica.shutdown().await;
        }
        Ok(())
    })
}

/// Waits for Ctrl-C or SIGTERM.
async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("cannot listen for Ctrl-C"),
        _ = term.recv() => Ok(()),
    }
}
