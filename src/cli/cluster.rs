//! The cluster side of the command line: a node's cluster roles (membership and master
//! candidacy) and the client commands `deploy` and `list`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use squall_runtime::Registry;
use squall_runtime::cluster::master;
use squall_runtime::cluster::{NodeInfo, membership, paths, topologies};
use squall_runtime::scheduler::Assignment;
use zookeeper_client as zk;

/// How long a node's session lives without the coordinator hearing from it: its znode, and so
/// its workers' tasks, move this long after it dies. The store clamps it to [2, 20] ticks.
const NODE_SESSION_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the master looks again even without a watch firing.
const MASTER_POLL: Duration = Duration::from_secs(2);
/// Pause before a node re-joins after losing its session.
const REJOIN_PAUSE: Duration = Duration::from_millis(500);

/// Connects to the ensemble `target` (HOST:PORT[,HOST:PORT...]).
pub(crate) async fn connect(target: &str, session_timeout: Duration) -> anyhow::Result<zk::Client> {
    zk::Client::connector()
        .with_session_timeout(session_timeout)
        .connect(target)
        .await
        .with_context(|| format!("cannot reach the coordinator at {target}"))
}

/// Runs node `info`'s cluster roles against the ensemble `target` until the process ends:
/// registers it under `/squall/nodes` and stands for master. A lost session (the store was
/// away longer than the session timeout) is re-joined with a new one.
pub(crate) async fn run_roles(target: String, info: NodeInfo) {
    loop {
        match roles_once(&target, &info).await {
            Ok(()) => return,
            Err(e) => tracing::warn!("node {}: cluster roles stopped ({e:#}); re-joining", info.id),
        }
        tokio::time::sleep(REJOIN_PAUSE).await;
    }
}

async fn roles_once(target: &str, info: &NodeInfo) -> anyhow::Result<()> {
    let client = connect(target, NODE_SESSION_TIMEOUT).await?;
    membership::register(&client, info).await.context("cannot register the node")?;
    eprintln!("squall node {}: registered in the cluster ({} slots)", info.id, info.slots);
    master::run(client, &info.id, MASTER_POLL).await?;
    Ok(())
}

#[derive(Args)]
pub(crate) struct DeployArgs {
    /// The topology file (YAML).
    topology: PathBuf,
    /// Deploys it under this name instead of the file's.
    #[arg(long)]
    name: Option<String>,
    /// The ensemble, as HOST:PORT[,HOST:PORT...].
    #[arg(long, env = "SQUALL_COORDINATOR", default_value = "127.0.0.1:2181")]
    coordinator: String,
}

pub(crate) fn deploy(registry: &Registry, args: DeployArgs) -> anyhow::Result<()> {
    let origin = args.topology.display().to_string();
    let yaml = std::fs::read_to_string(&args.topology).with_context(|| format!("{origin}: cannot read"))?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let name = runtime.block_on(async {
        let client = connect(&args.coordinator, Duration::from_secs(10)).await?;
        Ok::<_, anyhow::Error>(topologies::deploy(&client, registry, &yaml, &origin, args.name.as_deref()).await?)
    })?;
    out!("deployed {name}");
    Ok(())
}

#[derive(Args)]
pub(crate) struct KillArgs {
    /// The deployed topology.
    name: String,
    /// The ensemble, as HOST:PORT[,HOST:PORT...].
    #[arg(long, env = "SQUALL_COORDINATOR", default_value = "127.0.0.1:2181")]
    coordinator: String,
}

pub(crate) fn kill(args: KillArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let client = connect(&args.coordinator, Duration::from_secs(10)).await?;
        match topologies::kill(&client, &args.name).await {
            Ok(()) => Ok(()),
            Err(zk::Error::NoNode) => Err(anyhow::anyhow!("no topology named '{}' is deployed", args.name)),
            Err(e) => Err(e.into()),
        }
    })?;
    out!("killed {}: its workers stop and it is removed once the master has seen it", args.name);
    Ok(())
}

#[derive(Args)]
pub(crate) struct ListArgs {
    /// The ensemble, as HOST:PORT[,HOST:PORT...].
    #[arg(long, env = "SQUALL_COORDINATOR", default_value = "127.0.0.1:2181")]
    coordinator: String,
}

pub(crate) fn list(args: ListArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let client = connect(&args.coordinator, Duration::from_secs(10)).await?;
        let deployed = topologies::list(&client).await?;
        if deployed.is_empty() {
            out!("no topologies deployed");
            return Ok(());
        }
        out!("{:<24} {:<9} {:>7} {:>6}  placement", "name", "status", "workers", "tasks");
        for (name, record) in deployed {
            let status = format!("{:?}", record.status).to_lowercase();
            let assignment = match client.get_data(&paths::assignment(&name)).await {
                Ok((data, _)) => Assignment::from_json(&data).ok(),
                Err(zk::Error::NoNode) => None,
                Err(e) => return Err(e.into()),
            };
            match assignment {
                Some(a) => {
                    let placement: Vec<String> = a.workers().iter().map(|w| format!("{}/{}", w.node, w.slot)).collect();
                    out!(
                        "{:<24} {:<9} {:>7} {:>6}  {}",
                        name,
                        status,
                        a.workers().len(),
                        a.layout().task_count(),
                        placement.join(" ")
                    );
                }
                None => out!("{:<24} {:<9} {:>7} {:>6}  (not scheduled yet)", name, status, "-", "-"),
            }
        }
        Ok(())
    })
}
