//! `squall bench failover`: how long a cluster takes to deliver again after a worker, a node,
//! the master or the coordinator's leader is SIGKILLed (DESIGN §8).
//!
//! The benchmark starts three nodes of this binary on loopback ([`cluster`]), deploys a
//! steady-rate topology of the benchmark's own kinds ([`kinds`]): `bench_sequence` spouts (a
//! replayable source that keeps its position in the znode store) → `bench_relay` →
//! `bench_arrivals`, wired local-or-shuffle so that each spout task's stream stays inside its
//! worker, and then, trial after trial, kills the target and watches:
//!
//! - **recovery**: from the kill until every affected stream — those whose spout task ran in
//!   what was killed — has delivered a tuple it emitted after the kill (the headline figure);
//! - **detection**: until the cluster noticed (the node's znode gone, a new master epoch, a new
//!   Raft leader; for a worker, its replacement's znode);
//! - **reassignment**: until the affected tasks run again (their new worker published itself);
//! - **resume**: until the first affected stream delivered again;
//! - **gap**: the longest pause in delivery of the streams that were not affected.
//!
//! After the last trial the spouts are deactivated, the replays drain, and every stream is
//! checked for holes: **lost** counts tuples never delivered, **duplicated** the extra
//! deliveries.
//!
//! With `--source kafka` the spout is a `kafka` spout instead ([`Source::Kafka`]): the benchmark
//! produces to a topic of three partitions at the rate (tansu started on loopback, or given
//! brokers; [`broker`]), each partition one stream, and `bench_kafka_relay` turns each message
//! into the same `stream, seq, emitted_ns` (partition, offset, the time it was produced at). A
//! stream recovers when it delivers a message produced after the kill; lost counts the messages
//! the broker acknowledged that never reached the sink.

pub mod baseline;
mod cluster;
pub mod kinds;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::Serialize;
use squall_runtime::Registry;
use squall_runtime::cluster::{paths, topologies};
use squall_runtime::scheduler::Assignment;
use zookeeper_client as zk;

use crate::bench::broker;
use cluster::BenchCluster;
pub use kinds::{register as register_kinds, unix_nanos};

/// The topology's name.
const TOPOLOGY: &str = "failover-bench";
/// Spout tasks (streams), workers and nodes.
const STREAMS: u32 = 3;
/// How often the watch loop looks at the arrivals and the znodes.
const POLL: Duration = Duration::from_millis(5);
/// The longest a trial, or getting to a steady state, may take.
const PATIENCE: Duration = Duration::from_secs(60);

/// What is killed in each trial.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// The worker process that runs spout task 0.
    WorkerKill,
    /// A node (its process group: node and workers) that runs spout tasks and is not the
    /// coordinator's Raft leader (nor the master, when another node runs spout tasks).
    NodeKill,
    /// The node that is master, with its workers.
    MasterKill,
    /// The node whose replica leads the coordinator's Raft group, with its workers.
    CoordinatorLeaderKill,
}

impl std::str::FromStr for Scenario {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "worker-kill" => Ok(Scenario::WorkerKill),
            "node-kill" => Ok(Scenario::NodeKill),
            "master-kill" => Ok(Scenario::MasterKill),
            "coordinator-leader-kill" => Ok(Scenario::CoordinatorLeaderKill),
            other => Err(format!(
                "'{other}' is not a scenario (worker-kill, node-kill, master-kill, coordinator-leader-kill)"
            )),
        }
    }
}

impl std::fmt::Display for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Scenario::WorkerKill => "worker-kill",
            Scenario::NodeKill => "node-kill",
            Scenario::MasterKill => "master-kill",
            Scenario::CoordinatorLeaderKill => "coordinator-leader-kill",
        })
    }
}

/// What feeds the benchmark's topology.
#[derive(Clone, Debug)]
pub enum Source {
    /// `bench_sequence` spouts: replayable sequences whose positions are in the znode store.
    Generator,
    /// A `kafka` spout reading a topic the benchmark produces to at the rate, on this broker.
    Kafka(broker::BrokerSource),
}

impl Source {
    fn name(&self) -> &'static str {
        match self {
            Source::Generator => "generator",
            Source::Kafka(_) => "kafka",
        }
    }
}

/// How to run the benchmark.
#[derive(Clone, Debug)]
pub struct FailoverOptions {
    /// The binary the nodes run (this one).
    pub program: PathBuf,
    /// What to kill.
    pub scenario: Scenario,
    /// How many kills.
    pub trials: usize,
    /// The nodes' and workers' session timeout.
    pub session_timeout: Duration,
    /// Tuples per second over all streams.
    pub rate: f64,
    /// The coordinator's tick.
    pub tick: Duration,
    /// The topology's message timeout: how long a tree may take before it is replayed.
    pub message_timeout: Duration,
    /// What feeds the topology.
    pub source: Source,
}

/// One kill and what followed.
#[derive(Clone, Debug, Serialize)]
pub struct Trial {
    /// What was killed.
    pub victim: String,
    /// The streams whose spout task ran in it.
    pub affected_streams: Vec<i64>,
    /// Kill → every affected stream delivered a tuple emitted after the kill.
    #[serde(serialize_with = "millis")]
    pub recovery: Duration,
    /// Kill → the cluster noticed.
    #[serde(serialize_with = "opt_millis")]
    pub detection: Option<Duration>,
    /// Kill → the affected tasks' new worker published itself.
    #[serde(serialize_with = "opt_millis")]
    pub reassignment: Option<Duration>,
    /// Kill → the first affected stream delivered again.
    #[serde(serialize_with = "opt_millis")]
    pub resume: Option<Duration>,
    /// The longest pause in delivery of the unaffected streams around the kill.
    #[serde(serialize_with = "millis")]
    pub unaffected_gap: Duration,
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

fn opt_millis<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => millis(d, s),
        None => s.serialize_none(),
    }
}

/// The outcome of a benchmark run.
#[derive(Clone, Debug)]
pub struct FailoverReport {
    /// What was killed.
    pub scenario: Scenario,
    /// What fed the topology: `generator` or `kafka`.
    pub source: &'static str,
    /// The session timeout used.
    pub session_timeout: Duration,
    /// Tuples per second over all streams.
    pub rate: f64,
    /// Each trial.
    pub trials: Vec<Trial>,
    /// Tuples emitted and never delivered.
    pub lost: u64,
    /// Deliveries beyond the first of a tuple.
    pub duplicated: u64,
    /// Distinct tuples delivered.
    pub delivered: u64,
}

/// Percentiles of one measure over the trials.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Quantiles {
    /// 50th percentile, ms.
    pub p50_ms: f64,
    /// 90th percentile, ms.
    pub p90_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// The largest, ms.
    pub max_ms: f64,
}

impl Quantiles {
    /// Of `samples` (none: `None`).
    pub fn of(samples: impl IntoIterator<Item = Duration>) -> Option<Quantiles> {
        let mut histogram = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds");
        for sample in samples {
            histogram.saturating_record(sample.as_micros().max(1) as u64);
        }
        if histogram.is_empty() {
            return None;
        }
        let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
        Some(Quantiles { p50_ms: ms(0.5), p90_ms: ms(0.9), p99_ms: ms(0.99), max_ms: histogram.max() as f64 / 1000.0 })
    }
}

/// Of `measures` (headline first): the headline's percentiles, which a JSON report puts at its
/// top, and the others by JSON key (`unaffected gap` → `unaffected_gap`), under its `parts`.
fn headline_and_parts(
    measures: Vec<(&'static str, Option<Quantiles>)>,
) -> (Option<Quantiles>, serde_json::Map<String, serde_json::Value>) {
    let mut measures = measures.into_iter();
    let headline = measures.next().and_then(|(_, q)| q);
    let parts =
        measures.map(|(name, q)| (name.replace(' ', "_"), serde_json::to_value(q).expect("plain data"))).collect();
    (headline, parts)
}

impl FailoverReport {
    /// The percentiles of each measure, by name, headline first.
    pub fn measures(&self) -> Vec<(&'static str, Option<Quantiles>)> {
        let t = &self.trials;
        vec![
            ("recovery", Quantiles::of(t.iter().map(|t| t.recovery))),
            ("detection", Quantiles::of(t.iter().filter_map(|t| t.detection))),
            ("reassignment", Quantiles::of(t.iter().filter_map(|t| t.reassignment))),
            ("resume", Quantiles::of(t.iter().filter_map(|t| t.resume))),
            ("unaffected gap", Quantiles::of(t.iter().map(|t| t.unaffected_gap))),
        ]
    }

    /// DESIGN §8's JSON object, with the parts and every trial.
    pub fn to_json(&self) -> serde_json::Value {
        let (recovery, parts) = headline_and_parts(self.measures());
        let field = |f: fn(&Quantiles) -> f64| recovery.map(|q| f(&q));
        serde_json::json!({
            "scenario": self.scenario.to_string(),
            "source": self.source,
            "trials": self.trials.len(),
            "session_timeout_ms": self.session_timeout.as_millis() as u64,
            "rate": self.rate,
            "p50_ms": field(|q| q.p50_ms),
            "p90_ms": field(|q| q.p90_ms),
            "p99_ms": field(|q| q.p99_ms),
            "max_ms": field(|q| q.max_ms),
            "lost": self.lost,
            "duplicated": self.duplicated,
            "delivered": self.delivered,
            "parts": parts,
            "per_trial": self.trials,
        })
    }
}

/// One delivered tuple.
#[derive(Clone, Copy, Debug)]
struct Arrival {
    stream: i64,
    seq: i64,
    emitted_ns: i64,
    arrived_ns: i64,
}

/// Reads the `bench_arrivals` files as they grow.
struct ArrivalReader {
    dir: PathBuf,
    /// Per file: how far it was read, and a line cut short at that point.
    read: BTreeMap<PathBuf, (u64, String)>,
    arrivals: Vec<Arrival>,
}

impl ArrivalReader {
    fn new(dir: &Path) -> Self {
        ArrivalReader { dir: dir.to_path_buf(), read: BTreeMap::new(), arrivals: Vec::new() }
    }

    /// Reads what was appended since the last call.
    fn poll(&mut self) -> anyhow::Result<()> {
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let (offset, partial) = self.read.entry(path.clone()).or_default();
            let mut file = File::open(&path)?;
            file.seek(SeekFrom::Start(*offset))?;
            let mut text = String::new();
            *offset += file.read_to_string(&mut text)? as u64;
            let text = std::mem::take(partial) + &text;
            let complete = text.rfind('\n').map_or(0, |i| i + 1);
            for line in text[..complete].lines() {
                let f: Vec<i64> = line.split(' ').filter_map(|x| x.parse().ok()).collect();
                if let [stream, seq, emitted_ns, arrived_ns] = f[..] {
                    self.arrivals.push(Arrival { stream, seq, emitted_ns, arrived_ns });
                }
            }
            *partial = text[complete..].to_string();
        }
        Ok(())
    }

    /// The first arrival time of a tuple that `stream` emitted at or after `since_ns`, among
    /// the arrivals read from index `from` on (those read before `since_ns` cannot be such).
    fn first_fresh(&self, stream: i64, since_ns: i64, from: usize) -> Option<i64> {
        let read = &self.arrivals[from.min(self.arrivals.len())..];
        read.iter().filter(|a| a.stream == stream && a.emitted_ns >= since_ns).map(|a| a.arrived_ns).min()
    }

    /// The longest pause between arrivals of `streams` after `from_ns` (up to `to_ns`), among
    /// the arrivals read from index `from` on.
    fn longest_gap(&self, streams: &[i64], from_ns: i64, to_ns: i64, from: usize) -> Duration {
        let mut longest = 0;
        for &stream in streams {
            let mut times: Vec<i64> = self.arrivals[from.min(self.arrivals.len())..]
                .iter()
                .filter(|a| a.stream == stream && a.arrived_ns >= from_ns && a.arrived_ns <= to_ns)
                .map(|a| a.arrived_ns)
                .collect();
            times.sort_unstable();
            times.insert(0, from_ns);
            times.push(to_ns);
            longest = longest.max(times.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0));
        }
        Duration::from_nanos(longest.max(0) as u64)
    }

    /// Whether every stream delivered in the last `within`.
    fn all_flowing(&self, within: Duration) -> bool {
        let since = unix_nanos() - within.as_nanos() as i64;
        (0..STREAMS as i64)
            .all(|s| self.arrivals.iter().rev().take(20_000).any(|a| a.stream == s && a.arrived_ns >= since))
    }

    /// How many distinct tuples arrived.
    fn distinct(&self) -> u64 {
        self.arrivals.iter().map(|a| (a.stream, a.seq)).collect::<BTreeSet<_>>().len() as u64
    }

    /// (lost, duplicated, delivered) over everything read. Lost: the holes in each stream's
    /// sequence, or, when `produced` tuples are known to have been fed (a Kafka source), those
    /// of them that never arrived, if more.
    fn tally(&self, produced: Option<u64>) -> (u64, u64, u64) {
        let mut seen: BTreeMap<i64, BTreeSet<i64>> = BTreeMap::new();
        let mut duplicated = 0;
        for a in &self.arrivals {
            if !seen.entry(a.stream).or_default().insert(a.seq) {
                duplicated += 1;
            }
        }
        let mut lost = 0;
        let mut delivered = 0;
        for seqs in seen.values() {
            let top = seqs.last().copied().unwrap_or(-1);
            lost += (top + 1) as u64 - seqs.len() as u64;
            delivered += seqs.len() as u64;
        }
        let never_arrived = produced.map_or(0, |produced| produced.saturating_sub(delivered));
        (lost.max(never_arrived), duplicated, delivered)
    }
}

fn topology_yaml(options: &FailoverOptions, arrivals: &Path, feed: Option<&broker::KafkaFeed>) -> String {
    let timeout = format!("{}ms", options.message_timeout.as_millis());
    // The spout is `seq` whatever its kind: its task i is stream i (a `kafka` task i of 3 reads
    // partition i of a one-topic spout).
    let (spout, relay) = match feed {
        None => (
            format!(
                "{{ id: seq, kind: {}, parallelism: {STREAMS}, args: {{ rate: {} }} }}",
                kinds::SEQUENCE,
                options.rate / STREAMS as f64
            ),
            kinds::RELAY,
        ),
        Some(feed) => (
            format!(
                "{{ id: seq, kind: kafka, parallelism: {STREAMS}, args: {{ brokers: \"{}\", topic: {}, start: earliest, commit_interval: 100ms }} }}",
                feed.brokers, feed.topic
            ),
            kinds::KAFKA_RELAY,
        ),
    };
    format!(
        "name: {TOPOLOGY}\nworkers: {STREAMS}\nconfig: {{ message_timeout: {timeout}, max_spout_pending: 2000, ackers: {STREAMS} }}\n\
         spouts:\n  - {spout}\n\
         bolts:\n  - {{ id: relay, kind: {relay}, parallelism: {STREAMS}, inputs: [ {{ from: seq, grouping: local_or_shuffle }} ] }}\n\
         \x20 - {{ id: arrivals, kind: {}, parallelism: {STREAMS}, args: {{ dir: {} }}, inputs: [ {{ from: relay, grouping: local_or_shuffle }} ] }}\n",
        kinds::ARRIVALS,
        arrivals.display()
    )
}

/// The benchmark's view of the cluster: a client, the assignment, who is master.
struct Observer {
    client: zk::Client,
}

impl Observer {
    async fn connect(target: &str) -> anyhow::Result<Observer> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let connecting = zk::Client::connector().with_session_timeout(Duration::from_secs(10)).connect(target);
            match connecting.await {
                Ok(client) => return Ok(Observer { client }),
                Err(e) if Instant::now() > deadline => return Err(e).context("cannot reach the bench cluster"),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    async fn nodes(&self) -> Vec<String> {
        self.client.list_children(paths::NODES).await.unwrap_or_default()
    }

    async fn assignment(&self) -> Option<Assignment> {
        let (data, _) = self.client.get_data(&paths::assignment(TOPOLOGY)).await.ok()?;
        Assignment::from_json(&data).ok()
    }

    /// The master's node id and epoch.
    async fn master(&self) -> Option<(String, i32)> {
        let (data, stat) = self.client.get_data(paths::EPOCH).await.ok()?;
        Some((String::from_utf8_lossy(&data).to_string(), stat.version))
    }

    /// What worker `node-slot` published: its pid.
    async fn worker_pid(&self, node: &str, slot: u32) -> Option<u32> {
        let (data, _) = self.client.get_data(&paths::worker(TOPOLOGY, node, slot)).await.ok()?;
        let about: serde_json::Value = serde_json::from_slice(&data).ok()?;
        about["pid"].as_u64().map(|p| p as u32)
    }

    /// Where each stream's spout task runs: (node, slot) by stream.
    async fn placement(&self) -> Option<BTreeMap<i64, (String, u32)>> {
        let assignment = self.assignment().await?;
        let spouts = assignment.layout().components().iter().find(|c| c.id == "seq")?.tasks();
        let mut placed = BTreeMap::new();
        for (stream, task) in spouts.enumerate() {
            let worker = assignment.workers().iter().find(|w| w.tasks.contains(task))?;
            placed.insert(stream as i64, (worker.node.clone(), worker.slot));
        }
        Some(placed)
    }
}

/// What a trial kills.
enum Victim {
    Worker { node: String, slot: u32, pid: u32 },
    Node { id: u64 },
}

/// Runs the benchmark.
pub async fn failover(options: &FailoverOptions, registry: &Registry) -> anyhow::Result<FailoverReport> {
    anyhow::ensure!(options.trials > 0, "--trials must be at least 1");
    anyhow::ensure!(options.rate > 0.0, "--rate must be positive");
    let dir = tempfile::Builder::new().prefix("squall-failover-").tempdir()?;
    let arrivals_dir = dir.path().join("arrivals");
    std::fs::create_dir_all(&arrivals_dir)?;
    let mut feed = match &options.source {
        Source::Generator => None,
        Source::Kafka(broker) => {
            Some(broker::KafkaFeed::start(broker, dir.path(), STREAMS as i32, options.rate).await?)
        }
    };
    let mut cluster = BenchCluster::start(&options.program, dir.path(), options.session_timeout, options.tick)?;
    let result = run(options, registry, &mut cluster, &arrivals_dir, feed.as_mut()).await;
    if result.is_err() {
        eprintln!("{}", cluster.logs());
        if let Some(log) = feed.as_ref().and_then(broker::KafkaFeed::broker_log) {
            eprintln!("{log}");
        }
        eprintln!("bench cluster kept in {}", dir.keep().display());
    }
    result
}

async fn run(
    options: &FailoverOptions,
    registry: &Registry,
    cluster: &mut BenchCluster,
    arrivals_dir: &Path,
    mut feed: Option<&mut broker::KafkaFeed>,
) -> anyhow::Result<FailoverReport> {
    let observer = Observer::connect(&cluster.connect_string()).await?;
    wait_until("three nodes registered", async || observer.nodes().await.len() == 3).await?;
    let yaml = topology_yaml(options, arrivals_dir, feed.as_deref());
    topologies::deploy(&observer.client, registry, &yaml, "failover-bench.yaml", None).await?;
    let mut reader = ArrivalReader::new(arrivals_dir);
    steady(&mut reader, &observer).await?;

    let mut trials = Vec::new();
    for n in 0..options.trials {
        let trial = trial(options, cluster, &observer, &mut reader).await?;
        eprintln!(
            "trial {}/{}: killed {}, streams {:?} delivered again after {:.0} ms",
            n + 1,
            options.trials,
            trial.victim,
            trial.affected_streams,
            trial.recovery.as_secs_f64() * 1000.0
        );
        trials.push(trial);
        for id in 1..=3 {
            if !cluster.running().contains(&id) {
                cluster.spawn(id)?;
            }
        }
        wait_until("the killed node is back", async || observer.nodes().await.len() == 3).await?;
        steady(&mut reader, &observer).await?;
    }

    // Let what is in flight land. A Kafka feed stops first, and its messages are read to the
    // end while the spouts run; then the spouts stop and the replays of failed trees drain.
    let quiet = options.message_timeout * 2 + Duration::from_secs(2);
    let produced = match feed.as_mut() {
        Some(feed) => {
            let produced = feed.stop_producing()?;
            drain(&mut reader, quiet, |reader| reader.distinct() >= produced).await?;
            Some(produced)
        }
        None => None,
    };
    topologies::set_active(&observer.client, TOPOLOGY, false).await?;
    drain(&mut reader, quiet, |_| false).await?;
    let (lost, duplicated, delivered) = reader.tally(produced);
    let _ = topologies::kill(&observer.client, TOPOLOGY).await;
    Ok(FailoverReport {
        scenario: options.scenario,
        source: options.source.name(),
        session_timeout: options.session_timeout,
        rate: options.rate,
        trials,
        lost,
        duplicated,
        delivered,
    })
}

/// Reads arrivals until `done`, or until none came for `quiet` (for at most [`PATIENCE`] more).
async fn drain(
    reader: &mut ArrivalReader,
    quiet: Duration,
    done: impl Fn(&ArrivalReader) -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + quiet + PATIENCE;
    let mut last = (reader.arrivals.len(), Instant::now());
    while !done(reader) && last.1.elapsed() < quiet && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        reader.poll()?;
        if reader.arrivals.len() != last.0 {
            last = (reader.arrivals.len(), Instant::now());
        }
    }
    Ok(())
}

/// Polls `done` until it holds, for at most [`PATIENCE`].
async fn wait_until(what: &str, mut done: impl AsyncFnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + PATIENCE;
    while !done().await {
        anyhow::ensure!(Instant::now() < deadline, "gave up waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Waits until all streams run on three workers and have delivered steadily for a second.
async fn steady(reader: &mut ArrivalReader, observer: &Observer) -> anyhow::Result<()> {
    let mut since: Option<Instant> = None;
    let deadline = Instant::now() + PATIENCE;
    loop {
        reader.poll()?;
        let placed = observer.placement().await.is_some_and(|p| p.len() == STREAMS as usize);
        if placed && reader.all_flowing(Duration::from_millis(200)) {
            if since.get_or_insert_with(Instant::now).elapsed() >= Duration::from_secs(1) {
                return Ok(());
            }
        } else {
            since = None;
        }
        anyhow::ensure!(Instant::now() < deadline, "the topology did not reach a steady state");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Kills the scenario's target once and measures what follows.
async fn trial(
    options: &FailoverOptions,
    cluster: &mut BenchCluster,
    observer: &Observer,
    reader: &mut ArrivalReader,
) -> anyhow::Result<Trial> {
    let placement = observer.placement().await.context("no assignment")?;
    let (master, epoch) = observer.master().await.context("no master")?;
    // A node-kill takes a node that runs spout tasks and is not the coordinator's Raft leader
    // (losing that one is the coordinator-leader-kill scenario), not the master if it can.
    let leader = cluster.raft_leader().map(|id| id.to_string());
    let nodes: Vec<&String> = placement.values().map(|(node, _)| node).collect();
    let plain_node = [
        nodes.iter().find(|node| ***node != master && Some(**node) != leader.as_ref()),
        nodes.iter().find(|node| Some(**node) != leader.as_ref()),
    ]
    .into_iter()
    .flatten()
    .next()
    .map_or_else(|| placement[&0].0.clone(), |node| (*node).clone());
    let victim = match options.scenario {
        Scenario::WorkerKill => {
            let (node, slot) = placement[&0].clone();
            let pid = observer.worker_pid(&node, slot).await.context("the worker has not published its pid")?;
            Victim::Worker { node, slot, pid }
        }
        Scenario::NodeKill => Victim::Node { id: plain_node.parse()? },
        Scenario::MasterKill => Victim::Node { id: master.parse()? },
        Scenario::CoordinatorLeaderKill => Victim::Node { id: cluster.raft_leader().context("no Raft leader")? },
    };
    let affected: Vec<i64> = placement
        .iter()
        .filter(|(_, (node, slot))| match &victim {
            Victim::Worker { node: n, slot: s, .. } => node == n && slot == s,
            Victim::Node { id } => *node == id.to_string(),
        })
        .map(|(&stream, _)| stream)
        .collect();
    let unaffected: Vec<i64> = (0..STREAMS as i64).filter(|s| !affected.contains(s)).collect();

    // Everything read so far arrived before the kill: the watch loop looks only past it.
    reader.poll()?;
    let read_before_kill = reader.arrivals.len();
    let kill_ns = unix_nanos();
    let (killed, name) = match &victim {
        Victim::Worker { node, slot, pid } => {
            // SAFETY: kill with SIGKILL has no memory effects.
            anyhow::ensure!(unsafe { libc::kill(*pid as i32, libc::SIGKILL) } == 0, "cannot kill worker {pid}");
            (Instant::now(), format!("worker {node}-{slot} (pid {pid})"))
        }
        Victim::Node { id } => {
            // Its roles, which decide what its loss costs.
            let mut roles = Vec::new();
            if leader.as_deref() == Some(id.to_string().as_str()) {
                roles.push("coordinator leader");
            }
            if master == id.to_string() {
                roles.push("master");
            }
            let roles = if roles.is_empty() { String::new() } else { format!(" ({})", roles.join(", ")) };
            (cluster.kill(*id)?, format!("node {id}{roles}"))
        }
    };

    let (mut detection, mut reassignment, mut resume, mut recovery) = (None, None, None, None);
    let deadline = killed + PATIENCE;
    // Until the affected streams deliver again, and the parts are seen (the new worker may
    // publish itself after its tasks are already delivering), or a while after recovery.
    while recovery.is_none_or(|r: Duration| {
        (detection.is_none() || reassignment.is_none()) && killed.elapsed() < r + Duration::from_secs(5)
    }) {
        reader.poll()?;
        let since = |t: i64| Duration::from_nanos((t - kill_ns).max(0) as u64);
        let resumed: Vec<Option<i64>> =
            affected.iter().map(|&s| reader.first_fresh(s, kill_ns, read_before_kill)).collect();
        if resume.is_none() {
            resume = resumed.iter().flatten().min().map(|&t| since(t));
        }
        if detection.is_none() {
            detection = detected(options.scenario, &victim, observer, cluster, epoch).await.then(|| killed.elapsed());
        }
        if reassignment.is_none() && reassigned(&victim, &affected, observer).await {
            reassignment = Some(killed.elapsed());
        }
        if recovery.is_none() && resumed.iter().all(Option::is_some) {
            recovery = Some(resumed.iter().flatten().max().map_or(Duration::ZERO, |&t| since(t)));
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the affected streams {affected:?} did not deliver again after the kill of {name}"
        );
        tokio::time::sleep(POLL).await;
    }
    let recovery = recovery.expect("the loop ends once recovered");
    // The unaffected streams' longest pause, over the same stretch of time and a bit more.
    let end_ns = kill_ns + recovery.as_nanos() as i64 + 500_000_000;
    while unix_nanos() < end_ns + 100_000_000 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    reader.poll()?;
    let unaffected_gap = reader.longest_gap(&unaffected, kill_ns, end_ns, read_before_kill);
    if detection.is_none() && matches!(victim, Victim::Worker { .. }) {
        detection = reassignment;
    }
    Ok(Trial { victim: name, affected_streams: affected, recovery, detection, reassignment, resume, unaffected_gap })
}

/// Whether the cluster noticed the kill of `victim`.
async fn detected(
    scenario: Scenario,
    victim: &Victim,
    observer: &Observer,
    cluster: &BenchCluster,
    epoch: i32,
) -> bool {
    let Victim::Node { id } = victim else {
        return false; // a worker's death shows as its replacement's znode (reassignment)
    };
    match scenario {
        Scenario::CoordinatorLeaderKill => cluster.raft_leader().is_some_and(|l| l != *id),
        Scenario::MasterKill => observer.master().await.is_some_and(|(_, e)| e > epoch),
        _ => !observer.nodes().await.contains(&id.to_string()),
    }
}

/// Whether the affected streams' spout tasks run in a new worker that published itself.
async fn reassigned(victim: &Victim, affected: &[i64], observer: &Observer) -> bool {
    let Some(placement) = observer.placement().await else { return false };
    for stream in affected {
        let Some((node, slot)) = placement.get(stream) else { return false };
        let Some(pid) = observer.worker_pid(node, *slot).await else { return false };
        match victim {
            Victim::Worker { pid: dead, .. } if pid == *dead => return false,
            Victim::Node { id } if *node == id.to_string() => return false,
            _ => {}
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(arrivals: &[(i64, i64)]) -> ArrivalReader {
        let mut reader = ArrivalReader::new(Path::new("/nonexistent"));
        reader.arrivals =
            arrivals.iter().map(|&(stream, seq)| Arrival { stream, seq, emitted_ns: 0, arrived_ns: 0 }).collect();
        reader
    }

    #[test]
    fn lost_counts_holes_and_what_was_fed_but_never_arrived() {
        let complete = reader(&[(0, 0), (0, 1), (1, 0), (0, 1)]);
        assert_eq!(complete.tally(None), (0, 1, 3));
        assert_eq!(complete.tally(Some(3)), (0, 1, 3));
        assert_eq!(complete.distinct(), 3);
        // A hole in stream 0; and a tail nobody saw, which only the fed count reveals.
        let holey = reader(&[(0, 0), (0, 2), (1, 0)]);
        assert_eq!(holey.tally(None), (1, 0, 3));
        assert_eq!(holey.tally(Some(6)), (3, 0, 3));
    }
}
