//! `squall worker`: one worker of a deployed topology, started by its node's supervisor. It
//! runs the tasks the assignment gives its slot, exchanging tuples with the other workers over
//! TCP, follows assignment changes, and exits when its supervisor goes (its stdin closes), when
//! its tasks move (the supervisor starts it again with the new ones), or when the topology is
//! killed.

use std::collections::BTreeMap;
use std::io::Read;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use squall_runtime::cluster::topologies::{Status, TopologyRecord};
use squall_runtime::cluster::{membership, paths};
use squall_runtime::scheduler::Assignment;
use squall_runtime::worker::{WorkerError, WorkerOptions, WorkerRun, worker_id};
use squall_runtime::{Coordination, Registry};
use zookeeper_client as zk;

/// How often a worker publishes its counts in its znode (for `squall status`).
const STATS_EVERY: Duration = Duration::from_secs(2);

/// What a worker's znode says: where it listens, its pid, the version of the topology's live
/// configuration it applied, and its components' counts.
fn about(addr: &str, run: &WorkerRun, config_version: i32) -> String {
    let mut components = serde_json::Map::new();
    for summary in run.metrics().summary() {
        let stats = &summary.stats;
        let latency = &stats.complete_latency_us;
        components.insert(
            summary.id.to_string(),
            serde_json::json!({
                "role": format!("{:?}", summary.role).to_lowercase(),
                "emitted": stats.emitted,
                "executed": stats.executed,
                "acked": stats.acked,
                "failed": stats.failed,
                "errors": stats.errors,
                "complete_p50_ms": (!latency.is_empty()).then(|| latency.value_at_quantile(0.5) as f64 / 1000.0),
                "complete_p99_ms": (!latency.is_empty()).then(|| latency.value_at_quantile(0.99) as f64 / 1000.0),
                "last_error": stats.last_errors.back(),
                "gauges": stats.gauges,
            }),
        );
    }
    serde_json::json!({
        "addr": addr,
        "pid": std::process::id(),
        "config_version": config_version,
        "components": components,
    })
    .to_string()
}

/// How often a worker looks at its topology's status and live configuration.
const FOLLOW_EVERY: Duration = Duration::from_millis(500);

/// Pauses or resumes the spouts as the topology's status says (`squall deactivate` /
/// `activate`), and applies a new version of its live configuration (`squall config`:
/// max_spout_pending, log_level, and component args its tasks take through `reconfigure`);
/// `config_version` is the version applied so far (-1: none).
async fn follow(client: &zk::Client, topology: &str, run: &WorkerRun, config_version: &mut i32) {
    if let Ok((data, _)) = client.get_data(&paths::topology(topology)).await {
        if let Ok(record) = serde_json::from_slice::<TopologyRecord>(&data) {
            run.set_active(record.status == Status::Active);
        }
    }
    let Ok((data, stat)) = client.get_data(&paths::config(topology)).await else { return };
    if stat.version == *config_version {
        return;
    }
    let values: BTreeMap<String, String> = serde_json::from_slice(&data).unwrap_or_default();
    if let Some(max) = values.get("max_spout_pending").and_then(|v| v.parse().ok()) {
        run.set_max_spout_pending(max);
    }
    if let Some(level) = values.get("log_level") {
        if let Err(e) = super::set_log_filter(level) {
            tracing::warn!("worker of '{topology}': cannot apply log_level {e}");
        }
    }
    run.set_live_args(values.into_iter().filter(|(key, _)| key.contains('.')).collect());
    tracing::info!("worker of '{topology}': live configuration version {} applied", stat.version);
    *config_version = stat.version;
}

#[derive(Args)]
pub(crate) struct WorkerArgs {
    /// The deployed topology.
    #[arg(long)]
    topology: String,
    /// The node this worker runs on.
    #[arg(long)]
    node: String,
    /// The node's slot it runs in.
    #[arg(long)]
    slot: u32,
    /// The ensemble, as HOST:PORT[,HOST:PORT...].
    #[arg(long, env = "SQUALL_COORDINATOR", default_value = "127.0.0.1:2181")]
    coordinator: String,
    /// The session timeout of the worker's sessions (its node's `--session-timeout`).
    #[arg(long, default_value = super::cluster::DEFAULT_SESSION_TIMEOUT, value_parser = super::parse_duration)]
    session_timeout: Duration,
}

/// The assignment of `topology` and the address of each of its workers.
async fn placement(client: &zk::Client, topology: &str) -> anyhow::Result<(Assignment, BTreeMap<String, String>)> {
    let (data, _) = client.get_data(&paths::assignment(topology)).await.context("no assignment")?;
    let assignment = Assignment::from_json(&data)?;
    let nodes = membership::live_nodes(client).await?;
    let mut peers = BTreeMap::new();
    for worker in assignment.workers() {
        if let Some(node) = nodes.iter().find(|n| n.id == worker.node) {
            peers.insert(worker_id(&worker.node, worker.slot), node.worker_addr(worker.slot));
        }
    }
    Ok((assignment, peers))
}

pub(crate) fn run(registry: &Registry, args: WorkerArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let client = super::cluster::connect(&args.coordinator, args.session_timeout).await?;
        let (data, _) = client
            .get_data(&paths::topology(&args.topology))
            .await
            .with_context(|| format!("topology '{}' is not deployed", args.topology))?;
        let record: TopologyRecord = serde_json::from_slice(&data).context("unreadable topology record")?;
        let spec = record.parse().map_err(anyhow::Error::msg)?;
        let topology = registry.build(&spec, &paths::topology(&args.topology))?;
        let (assignment, peers) = placement(&client, &args.topology).await?;
        let me = worker_id(&args.node, args.slot);
        let listen = peers.get(&me).with_context(|| format!("the assignment has no worker {me}"))?;
        let listen = listen.parse().with_context(|| format!("bad worker address {listen}"))?;
        // The tasks' own session (locks, leader elections, offsets): it ends with this
        // process, so what they hold passes on when the worker dies.
        let coordination = Coordination::connect_with_timeout(&args.coordinator, &args.topology, args.session_timeout)
            .await
            .context("cannot open the tasks' session on the coordinator")?;
        let options = WorkerOptions { coordination: Some(coordination), ..WorkerOptions::default() };
        let mut run = WorkerRun::start(&topology, &assignment, (&args.node, args.slot), listen, &peers, options)?;
        let persistent = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
        match client.create(&paths::workers(&args.topology), b"", &persistent).await {
            Ok(_) | Err(zk::Error::NodeExists) => {}
            Err(e) => return Err(e.into()),
        }
        let mut config_version = -1;
        let ephemeral = zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all());
        let znode = paths::worker(&args.topology, &args.node, args.slot);
        let published = about(&listen.to_string(), &run, config_version);
        match client.create(&znode, published.as_bytes(), &ephemeral).await {
            // The znode of this slot's previous worker, which died before its session expired:
            // this worker replaces it rather than wait for the expiry.
            Err(zk::Error::NodeExists) => {
                let _ = client.delete(&znode, None).await;
                client.create(&znode, published.as_bytes(), &ephemeral).await?;
            }
            created => drop(created?),
        }
        eprintln!("squall worker {me} of '{}': running tasks {:?}", args.topology, run.tasks());

        // The supervisor holds our stdin: end of file means it is gone.
        let (orphaned_tx, mut orphaned) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let mut sink = [0u8; 64];
            while matches!(std::io::stdin().read(&mut sink), Ok(n) if n > 0) {}
            let _ = orphaned_tx.send(());
        });
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut report = tokio::time::interval(STATS_EVERY);
        let mut watch_live = tokio::time::interval(FOLLOW_EVERY);
        let mut client = client;
        let why = 'run: loop {
            let watched = client.get_and_watch_data(&paths::assignment(&args.topology)).await;
            let changed = match watched {
                Ok((_, _, watcher)) => Some(watcher),
                Err(zk::Error::NoNode) => break "the topology's assignment was removed".to_string(),
                // The store is away: keep running, and look again in a moment (with a new
                // session, if ours expired meanwhile).
                Err(e) => {
                    tracing::warn!("worker {me}: coordinator: {e}; running on");
                    if e == zk::Error::SessionExpired {
                        if let Ok(fresh) = super::cluster::connect(&args.coordinator, args.session_timeout).await {
                            let about = about(&listen.to_string(), &run, config_version);
                            if fresh.create(&znode, about.as_bytes(), &ephemeral).await.is_ok() {
                                client = fresh;
                            }
                        }
                    }
                    None
                }
            };
            let changed = async move {
                match changed {
                    Some(watcher) => drop(watcher.changed().await),
                    None => tokio::time::sleep(Duration::from_millis(500)).await,
                }
            };
            tokio::pin!(changed);
            loop {
                tokio::select! {
                    _ = &mut orphaned => break 'run "its supervisor is gone".to_string(),
                    _ = term.recv() => break 'run "asked to stop".to_string(),
                    _ = &mut changed => break,
                    _ = report.tick() => {
                        if let Err(e) = client.set_data(&znode, about(&listen.to_string(), &run, config_version).as_bytes(), None).await {
                            tracing::debug!("worker {me}: cannot publish its counts: {e}");
                        }
                    }
                    _ = watch_live.tick() => follow(&client, &args.topology, &run, &mut config_version).await,
                }
            }
            match placement(&client, &args.topology).await {
                Ok((assignment, peers)) => match run.update(&assignment, &peers) {
                    Ok(()) => {}
                    Err(e @ (WorkerError::TasksChanged(_) | WorkerError::NotAssigned { .. })) => break e.to_string(),
                    Err(e) => tracing::warn!("worker {me}: cannot apply the new assignment: {e}"),
                },
                Err(e) if e.downcast_ref::<zk::Error>() == Some(&zk::Error::NoNode) => {
                    break "the topology's assignment was removed".to_string();
                }
                Err(e) => tracing::warn!("worker {me}: cannot read the assignment: {e:#}; running on"),
            }
        };
        eprintln!("squall worker {me} of '{}': stopping: {why}", args.topology);
        let report = run.stop();
        let stats = report.stats;
        eprintln!(
            "squall worker {me}: stopped; received {}, dropped {}, lost {}",
            stats.received, stats.dropped, stats.lost
        );
        Ok(())
    })
}
