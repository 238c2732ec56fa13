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

/// How long a node's session lives without the coordinator hearing from it, by default: its
/// znode, and so its workers' tasks, move this long after it dies. The store clamps it to
/// [2, 20] ticks.
pub(crate) const DEFAULT_SESSION_TIMEOUT: &str = "2s";
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
/// Whether this node's master should leave the role to another node (see `master::run`).
pub(crate) type StepAside = std::sync::Arc<dyn Fn() -> bool + Send + Sync>;

pub(crate) async fn run_roles(target: String, info: NodeInfo, session_timeout: Duration, step_aside: StepAside) {
    loop {
        match roles_once(&target, &info, session_timeout, &step_aside).await {
            Ok(()) => return,
            Err(e) => tracing::warn!("node {}: cluster roles stopped ({e:#}); re-joining", info.id),
        }
        tokio::time::sleep(REJOIN_PAUSE).await;
    }
}

async fn roles_once(
    target: &str,
    info: &NodeInfo,
    session_timeout: Duration,
    step_aside: &StepAside,
) -> anyhow::Result<()> {
    let client = connect(target, session_timeout).await?;
    membership::register(&client, info).await.context("cannot register the node")?;
    eprintln!("squall node {}: registered in the cluster ({} slots)", info.id, info.slots);
    master::run(client, &info.id, MASTER_POLL, step_aside.as_ref()).await?;
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
pub(crate) struct ActivateArgs {
    /// The deployed topology.
    name: String,
    /// The ensemble, as HOST:PORT[,HOST:PORT...].
    #[arg(long, env = "SQUALL_COORDINATOR", default_value = "127.0.0.1:2181")]
    coordinator: String,
}

/// `squall activate` (`active`) or `squall deactivate`.
pub(crate) fn set_active(args: ActivateArgs, active: bool) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let client = connect(&args.coordinator, Duration::from_secs(10)).await?;
        match topologies::set_active(&client, &args.name, active).await {
            Ok(()) => Ok(()),
            Err(zk::Error::NoNode) => Err(anyhow::anyhow!("no topology named '{}' is deployed", args.name)),
            Err(e) => Err(e.into()),
        }
    })?;
    let what = if active { "its spouts resume" } else { "its spouts pause; bolts finish what is in flight" };
    out!("{} {}: {what} within a few seconds", if active { "activated" } else { "deactivated" }, args.name);
    Ok(())
}

#[derive(Args)]
pub(crate) struct ConfigArgs {
    /// The deployed topology.
    name: String,
    /// Settings to change, as KEY=VALUE: max_spout_pending, log_level (a level or a filter such
    /// as info,squall=debug), or COMPONENT.ARG for an arg its kind declares reloadable (e.g.
    /// a generator's rate).
    #[arg(required = true, value_parser = parse_setting)]
    settings: Vec<(String, String)>,
    /// The ensemble, as HOST:PORT[,HOST:PORT...].
    #[arg(long, env = "SQUALL_COORDINATOR", default_value = "127.0.0.1:2181")]
    coordinator: String,
}

fn parse_setting(s: &str) -> Result<(String, String), String> {
    s.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).ok_or_else(|| format!("'{s}' is not KEY=VALUE"))
}

pub(crate) fn config(registry: &Registry, args: ConfigArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let version = runtime.block_on(async {
        let client = connect(&args.coordinator, Duration::from_secs(10)).await?;
        Ok::<_, anyhow::Error>(topologies::configure(&client, registry, &args.name, &args.settings).await?)
    })?;
    out!("{}: live configuration version {version}; running workers apply it within a second", args.name);
    Ok(())
}

#[derive(Args)]
pub(crate) struct RebalanceArgs {
    /// The deployed topology.
    name: String,
    /// How many workers it should run on.
    #[arg(long)]
    workers: Option<u32>,
    /// A component's new number of tasks, as COMPONENT=N (repeatable). The workers whose tasks
    /// change are restarted with their new ones.
    #[arg(long = "parallelism", value_parser = parse_parallelism)]
    parallelism: Vec<(String, u32)>,
    /// The ensemble, as HOST:PORT[,HOST:PORT...].
    #[arg(long, env = "SQUALL_COORDINATOR", default_value = "127.0.0.1:2181")]
    coordinator: String,
}

fn parse_parallelism(s: &str) -> Result<(String, u32), String> {
    let (component, tasks) = s.split_once('=').ok_or_else(|| format!("'{s}' is not COMPONENT=N"))?;
    let tasks = tasks.parse().map_err(|_| format!("'{tasks}' is not a number of tasks"))?;
    Ok((component.to_string(), tasks))
}

pub(crate) fn rebalance(registry: &Registry, args: RebalanceArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.workers.is_some() || !args.parallelism.is_empty(),
        "say what to change: --workers N and/or --parallelism COMPONENT=N"
    );
    anyhow::ensure!(args.workers != Some(0), "--workers must be at least 1");
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let client = connect(&args.coordinator, Duration::from_secs(10)).await?;
        if !args.parallelism.is_empty() {
            topologies::set_parallelism(&client, registry, &args.name, &args.parallelism).await?;
        }
        match args.workers.map(|workers| topologies::rebalance(&client, &args.name, workers)) {
            None => Ok(()),
            Some(rebalanced) => match rebalanced.await {
                Ok(()) => Ok(()),
                Err(zk::Error::NoNode) => Err(anyhow::anyhow!("no topology named '{}' is deployed", args.name)),
                Err(e) => Err(e.into()),
            },
        }
    })?;
    let mut what = Vec::new();
    if let Some(workers) = args.workers {
        what.push(format!("{workers} workers"));
    }
    for (component, tasks) in &args.parallelism {
        what.push(format!("{tasks} tasks of {component}"));
    }
    out!("rebalancing {} to {}: the master moves as few tasks as it can", args.name, what.join(", "));
    Ok(())
}

/// What each running worker of `topology` last published in its znode (see `squall worker`),
/// by worker name (`<node>-<slot>`), in name order, for the workers `wanted` picks by name;
/// unreadable znodes are left out.
pub(crate) async fn published_by_workers(
    client: &zk::Client,
    topology: &str,
    wanted: impl Fn(&str) -> bool,
) -> Vec<(String, serde_json::Value)> {
    let mut names = client.list_children(&paths::workers(topology)).await.unwrap_or_default();
    names.retain(|name| wanted(name));
    names.sort();
    let mut published = Vec::new();
    for worker in names {
        if let Ok((data, _)) = client.get_data(&format!("{}/{worker}", paths::workers(topology))).await {
            if let Ok(about) = serde_json::from_slice(&data) {
                published.push((worker, about));
            }
        }
    }
    published
}

#[derive(Args)]
pub(crate) struct StatusArgs {
    /// A deployed topology (without it: every topology, as `list` prints them).
    name: Option<String>,
    /// The ensemble, as HOST:PORT[,HOST:PORT...].
    #[arg(long, env = "SQUALL_COORDINATOR", default_value = "127.0.0.1:2181")]
    coordinator: String,
}

/// Per component: where its tasks run and what its workers last published (every 2 s).
pub(crate) fn status(args: StatusArgs) -> anyhow::Result<()> {
    let Some(name) = args.name else {
        return list(ListArgs { coordinator: args.coordinator });
    };
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let client = connect(&args.coordinator, Duration::from_secs(10)).await?;
        let record = match client.get_data(&paths::topology(&name)).await {
            Ok((data, _)) => serde_json::from_slice::<topologies::TopologyRecord>(&data)?,
            Err(zk::Error::NoNode) => anyhow::bail!("no topology named '{name}' is deployed"),
            Err(e) => return Err(e.into()),
        };
        let assignment = match client.get_data(&paths::assignment(&name)).await {
            Ok((data, _)) => Assignment::from_json(&data)?,
            Err(zk::Error::NoNode) => {
                out!("{name}: {}, not scheduled yet", record.status);
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        let mut published: Vec<serde_json::Value> = Vec::new();
        let mut applied = Vec::new();
        for (worker, about) in published_by_workers(&client, &name, |_| true).await {
            let version = about["config_version"].as_i64().filter(|v| *v >= 0);
            applied.push(format!("{worker} {}", version.map_or("-".to_string(), |v| format!("v{v}"))));
            published.push(about);
        }
        out!(
            "{name}: {}, {} workers ({} running), assignment version {} by master epoch {}{}",
            record.status,
            assignment.workers().len(),
            published.len(),
            assignment.version(),
            assignment.epoch(),
            if assignment.short_by() > 0 {
                format!(", {} short of free slots", assignment.short_by())
            } else {
                String::new()
            }
        );
        out!("live configuration applied by each worker: {}", applied.join(", "));
        out!(
            "{:<16} {:>5}  {:<16} {:>10} {:>10} {:>10} {:>8} {:>9}  last error",
            "component",
            "tasks",
            "on",
            "emitted",
            "executed",
            "acked",
            "failed",
            "p99 ms"
        );
        for component in assignment.layout().components() {
            let range = component.tasks();
            let on: Vec<String> = assignment
                .workers()
                .iter()
                .filter(|w| range.clone().any(|t| w.tasks.contains(t)))
                .map(|w| format!("{}/{}", w.node, w.slot))
                .collect();
            let field = |key: &str| -> u64 {
                published.iter().filter_map(|w| w["components"][&component.id][key].as_u64()).sum()
            };
            let p99 = published
                .iter()
                .filter_map(|w| w["components"][&component.id]["complete_p99_ms"].as_f64())
                .fold(None, |worst: Option<f64>, v| Some(worst.map_or(v, |w| w.max(v))));
            let last_error =
                published.iter().find_map(|w| w["components"][&component.id]["last_error"].as_str()).unwrap_or("");
            out!(
                "{:<16} {:>5}  {:<16} {:>10} {:>10} {:>10} {:>8} {:>9}  {}",
                component.id,
                component.parallelism,
                on.join(" "),
                field("emitted"),
                field("executed"),
                field("acked"),
                field("failed"),
                p99.map_or("-".to_string(), |p| format!("{p:.1}")),
                last_error
            );
        }
        for component in assignment.layout().components() {
            for worker in &published {
                for (name, value) in worker["components"][&component.id]["gauges"].as_object().into_iter().flatten() {
                    out!("{}: {name} = {value}", component.id);
                }
            }
        }
        Ok(())
    })
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
            let status = record.status.to_string();
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
