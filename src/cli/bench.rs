//! `squall bench`: measurements (DESIGN §8).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use squall_runtime::{Registry, TopologySpec};

use super::local::EmbeddedStore;
use crate::bench::{ThroughputOptions, throughput};

#[derive(Subcommand)]
pub(crate) enum BenchCommand {
    /// Tuples per second of a topology run locally, with the complete-latency distribution and,
    /// for a generator-fed topology, a plain single-threaded loop as the baseline.
    Throughput(ThroughputArgs),
    /// Throughput and latency of a ZooKeeper-protocol workload against any ensemble (Squall's
    /// or Apache ZooKeeper), per kind of request. Failed requests are counted by kind and make
    /// the command exit non-zero.
    Coordinator(CoordinatorArgs),
    /// Consume-and-count throughput from a Kafka topic: a bare rdkafka consumer, then a kafka
    /// spout -> count topology (or -> split -> count, --work wordcount) with acking on, on the
    /// same messages, side by side.
    Kafka(KafkaArgs),
    /// Failover latency: starts a 3-node cluster on loopback, runs a steady-rate topology and
    /// SIGKILLs a worker, a node, the master or the coordinator's leader, trial after trial;
    /// reports how long the affected streams took to deliver again, lost and duplicated tuples.
    Failover(FailoverArgs),
    /// One member of `bench failover --baseline kafka-group`'s consumer group: prints a line per
    /// message and per rebalance until its stdin closes.
    #[command(hide = true)]
    KafkaGroupMember(KafkaGroupMemberArgs),
}

#[derive(Args)]
pub(crate) struct FailoverArgs {
    /// What to kill: worker-kill, node-kill, master-kill or coordinator-leader-kill.
    #[arg(long)]
    scenario: crate::bench::failover::Scenario,
    /// How many kills.
    #[arg(long, default_value_t = 10)]
    trials: usize,
    /// The nodes' and workers' session timeout: how long after a node dies the cluster acts.
    #[arg(long, default_value = "1s", value_parser = super::parse_duration)]
    session_timeout: Duration,
    /// Tuples per second, over the topology's three streams.
    #[arg(long, default_value_t = 3000.0)]
    rate: f64,
    /// What feeds the topology: `generator` (spouts of replayable sequences kept in the znode
    /// store) or `kafka` (a `kafka` spout on a topic of three partitions that the benchmark
    /// produces to at --rate, on --brokers or a tansu broker it starts).
    #[arg(long, default_value = "generator", value_parser = ["generator", "kafka"])]
    source: String,
    /// The coordinator's tick (session timeouts are clamped to [2, 20] ticks).
    #[arg(long, default_value = "100ms", value_parser = super::parse_duration)]
    tick: Duration,
    /// The topology's message timeout: how long a tuple tree may take before it is replayed.
    #[arg(long, default_value = "3s", value_parser = super::parse_duration)]
    message_timeout: Duration,
    /// Also writes the result as one JSON object to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Also draws the distribution of each measure over the trials as an SVG to this file.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// After Squall's trials (its cluster stopped), runs the same kind of kill against a
    /// baseline and reports its recovery beside Squall's: `kafka-group`, a plain rdkafka
    /// consumer group of two member processes on one topic, one SIGKILLed per trial, with the
    /// client's default session timeout (45 s) and with --baseline-session-timeout.
    #[arg(long)]
    baseline: Option<crate::bench::failover::baseline::Baseline>,
    /// The Kafka-protocol broker of --source kafka and --baseline kafka-group, as
    /// HOST:PORT[,HOST:PORT...]. Without it, a tansu broker is started on loopback
    /// ($SQUALL_TANSU, else what `scripts/tansu` prints, run from a Squall checkout).
    #[arg(long)]
    brokers: Option<String>,
    /// Baseline kills with --baseline-session-timeout.
    #[arg(long, default_value_t = 5, requires = "baseline")]
    baseline_trials: usize,
    /// Baseline kills with the client's default session timeout (45 s: each takes over a
    /// minute on tansu); 0 skips them.
    #[arg(long, default_value_t = 2, requires = "baseline")]
    baseline_default_trials: usize,
    /// The baseline's tuned session.timeout.ms (the heartbeat interval is a third of it). Kafka
    /// brokers refuse less than 6 s by default (group.min.session.timeout.ms); tansu has no
    /// minimum.
    #[arg(long, default_value = "6s", value_parser = super::parse_duration, requires = "baseline")]
    baseline_session_timeout: Duration,
    /// Messages per second the baseline produces, over its topic's four partitions: modest,
    /// because tansu's fetches slow down as a topic grows (each lists all its record batches).
    #[arg(long, default_value_t = 400.0, requires = "baseline")]
    baseline_rate: f64,
}

#[derive(Args)]
pub(crate) struct KafkaGroupMemberArgs {
    /// The bootstrap brokers.
    #[arg(long)]
    brokers: String,
    /// The topic to subscribe to.
    #[arg(long)]
    topic: String,
    /// The group to join.
    #[arg(long)]
    group: String,
    /// session.timeout.ms (heartbeat.interval.ms is a third of it); the client's default
    /// without it.
    #[arg(long)]
    session_timeout_ms: Option<u64>,
}

#[derive(Args)]
pub(crate) struct KafkaArgs {
    /// The bootstrap brokers, as HOST:PORT[,HOST:PORT...].
    #[arg(long)]
    brokers: String,
    /// The topic to read.
    #[arg(long)]
    topic: String,
    /// Creates the topic (it must not exist) and produces --messages messages into it first,
    /// taking the partitions' ends from the delivery reports. Without it the topic is read from
    /// its low to its high watermarks; tansu reports a high watermark short of the end, so
    /// against tansu always use --produce.
    #[arg(long)]
    produce: bool,
    /// Messages to produce (only with --produce; default 1000000).
    #[arg(long, requires = "produce")]
    messages: Option<u64>,
    /// Partitions of the topic to create (only with --produce; default 4).
    #[arg(long, requires = "produce")]
    partitions: Option<i32>,
    /// The most bytes of a produced value: a sentence of whole words up to this size (only with
    /// --produce; default 80).
    #[arg(long, requires = "produce")]
    value_size: Option<usize>,
    /// How many times to measure each side, in alternation; the medians are reported.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// What the topology does with each message: `count` counts them by partition (kafka ->
    /// count), `wordcount` counts the words of their values (kafka -> split -> count).
    #[arg(long, default_value = "count", value_parser = crate::bench::KafkaOptions::WORKS)]
    work: String,
    /// Tasks of each bolt (count, and split with --work wordcount).
    #[arg(long, default_value_t = 1)]
    bolt_tasks: u32,
    /// The topology's max_spout_pending (default: the runtime's default).
    #[arg(long)]
    max_spout_pending: Option<u32>,
    /// Also writes the result as one JSON object to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args)]
pub(crate) struct CoordinatorArgs {
    /// The ensemble, as HOST:PORT[,HOST:PORT...]; the sessions are spread evenly over its servers.
    #[arg(long, env = "SQUALL_COORDINATOR", default_value = "127.0.0.1:2181")]
    target: String,
    /// Concurrent sessions.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Requests in all, spread evenly over the sessions.
    #[arg(long, default_value_t = 100_000)]
    ops: usize,
    /// Requests each session keeps in flight.
    #[arg(long, default_value_t = 8)]
    in_flight: usize,
    /// The requests to send; each kind is reported on its own, and in total.
    #[arg(long, value_enum, default_value = "mixed")]
    mix: crate::bench::Mix,
    /// Bytes of data per write.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Znodes the set, get, mixed and multi workloads spread over (made before the clock starts).
    #[arg(long, default_value_t = 1000)]
    znodes: usize,
    /// Leaves /squall-bench-PID and the znodes under it in place instead of deleting them.
    #[arg(long)]
    keep: bool,
    /// Also writes the result as one JSON object to this file (written even when requests
    /// failed).
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args)]
pub(crate) struct ThroughputArgs {
    /// The topology file (YAML).
    topology: PathBuf,
    /// How long to run, warm-up included.
    #[arg(long, default_value = "10s", value_parser = super::parse_duration)]
    duration: Duration,
    /// Time at the start that is not counted.
    #[arg(long, default_value = "2s", value_parser = super::parse_duration)]
    warmup: Duration,
    /// The bolt whose executed tuples are counted (default: the last bolt in the file).
    #[arg(long)]
    at: Option<String>,
    /// Overrides the topology's `config.acking`.
    #[arg(long)]
    acking: Option<bool>,
    /// Skips the plain-loop baseline.
    #[arg(long)]
    no_baseline: bool,
    /// Also writes the result as one JSON object to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

pub(crate) fn run(registry: &Registry, command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Throughput(args) => run_throughput(registry, args),
        BenchCommand::Coordinator(args) => run_coordinator(args),
        BenchCommand::Kafka(args) => run_kafka(args),
        BenchCommand::Failover(args) => run_failover(registry, args),
        BenchCommand::KafkaGroupMember(args) => run_kafka_group_member(args),
    }
}

fn run_failover(registry: &Registry, args: FailoverArgs) -> anyhow::Result<()> {
    use crate::bench::broker::{BrokerSource, find_tansu};
    use crate::bench::failover::baseline::{
        Baseline, BaselineOptions, BaselineResult, GroupConfig, kafka_group_baseline,
    };
    use crate::bench::failover::{FailoverOptions, Source, failover};
    let kafka_source = args.source == "kafka";
    anyhow::ensure!(
        args.brokers.is_none() || kafka_source || args.baseline.is_some(),
        "--brokers is for --source kafka or --baseline kafka-group"
    );
    // The broker is looked for first: a missing one is better told before the trials.
    let broker = match (kafka_source || args.baseline.is_some(), &args.brokers) {
        (false, _) => None,
        (true, Some(brokers)) => Some(BrokerSource::Given(brokers.clone())),
        (true, None) => Some(BrokerSource::Tansu(find_tansu()?)),
    };
    let source = match &broker {
        Some(broker) if kafka_source => Source::Kafka(broker.clone()),
        _ => Source::Generator,
    };
    let options = FailoverOptions {
        program: std::env::current_exe().context("cannot find this binary to start the nodes")?,
        scenario: args.scenario,
        trials: args.trials,
        session_timeout: args.session_timeout,
        rate: args.rate,
        tick: args.tick,
        message_timeout: args.message_timeout,
        source,
    };
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let report = runtime.block_on(failover(&options, registry))?;
    out!(
        "failover {}: {} trials, session timeout {:?}, {} tuples/s from a {} source",
        report.scenario,
        report.trials.len(),
        report.session_timeout,
        report.rate,
        report.source
    );
    print_measures(&report.measures());
    out!("lost {}, duplicated {}, delivered {}", report.lost, report.duplicated, report.delivered);
    // Squall's figures are kept, in the JSON too, when the baseline fails.
    let baseline = args.baseline.zip(broker).map(|(kind, broker)| match kind {
        Baseline::KafkaGroup => {
            let configs = [
                GroupConfig { session_timeout: None, trials: args.baseline_default_trials },
                GroupConfig { session_timeout: Some(args.baseline_session_timeout), trials: args.baseline_trials },
            ];
            let options = BaselineOptions {
                program: options.program.clone(),
                broker,
                configs: configs.into_iter().filter(|c| c.trials > 0).collect(),
                rate: args.baseline_rate,
                partitions: 4,
            };
            runtime.block_on(kafka_group_baseline(&options))
        }
    });
    if let Some(Ok(results)) = &baseline {
        print_baseline(results);
    }
    if let Some(path) = &args.json {
        let mut json = report.to_json();
        match &baseline {
            Some(Ok(results)) => json["baseline"] = results.iter().map(BaselineResult::to_json).collect(),
            Some(Err(e)) => json["baseline_error"] = format!("{e:#}").into(),
            None => {}
        }
        std::fs::write(path, serde_json::to_string_pretty(&json)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &args.plot {
        let samples: Vec<(&str, Vec<f64>)> = [
            ("recovery", report.trials.iter().map(|t| Some(t.recovery)).collect::<Vec<_>>()),
            ("detection", report.trials.iter().map(|t| t.detection).collect()),
            ("reassignment", report.trials.iter().map(|t| t.reassignment).collect()),
            ("resume", report.trials.iter().map(|t| t.resume).collect()),
        ]
        .into_iter()
        .map(|(name, values)| (name, values.into_iter().flatten().map(|d| d.as_secs_f64() * 1000.0).collect()))
        .collect();
        let series: Vec<crate::bench::plot::Series<'_>> =
            samples.iter().map(|(name, ms)| crate::bench::plot::Series { name, samples_ms: ms }).collect();
        let title = format!("squall bench failover --scenario {} ({} trials)", report.scenario, report.trials.len());
        std::fs::write(path, crate::bench::plot::latency_svg(&title, &series))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    anyhow::ensure!(report.lost == 0, "{} tuples were lost", report.lost);
    match baseline {
        Some(Err(e)) => Err(e.context("the baseline failed (Squall's figures are above)")),
        _ => Ok(()),
    }
}

/// A table of percentiles, a measure per row.
fn print_measures(measures: &[(&str, Option<crate::bench::failover::Quantiles>)]) {
    out!("{:<16} {:>10} {:>10} {:>10} {:>10}", "ms", "p50", "p90", "p99", "max");
    for (name, quantiles) in measures {
        match quantiles {
            Some(q) => out!("{name:<16} {:>10.1} {:>10.1} {:>10.1} {:>10.1}", q.p50_ms, q.p90_ms, q.p99_ms, q.max_ms),
            None => out!("{name:<16} {:>10}", "-"),
        }
    }
}

/// The baseline's measures per configuration, in the columns of Squall's table above them.
fn print_baseline(results: &[crate::bench::failover::baseline::BaselineResult]) {
    for result in results {
        let (trials, failed) = (result.trials.len(), result.failures.len());
        out!(
            "baseline {} on {}: {trials} trials{}, {} msg/s",
            result.config.name(),
            result.broker,
            if failed > 0 { format!(" ({failed} failed)") } else { String::new() },
            result.rate
        );
        print_measures(&result.measures());
        for failure in &result.failures {
            out!("failed {failure}");
        }
    }
}

/// One member of the consumer-group baseline (`bench failover --baseline kafka-group`).
fn run_kafka_group_member(args: KafkaGroupMemberArgs) -> anyhow::Result<()> {
    crate::bench::failover::baseline::group_member(&crate::bench::failover::baseline::MemberOptions {
        brokers: args.brokers,
        topic: args.topic,
        group: args.group,
        session_timeout: args.session_timeout_ms.map(Duration::from_millis),
    })
}

fn run_throughput(registry: &Registry, args: ThroughputArgs) -> anyhow::Result<()> {
    let origin = args.topology.display().to_string();
    let yaml = std::fs::read_to_string(&args.topology).with_context(|| format!("{origin}: cannot read"))?;
    let mut spec = TopologySpec::parse(&yaml, &origin)?;
    if let Some(acking) = args.acking {
        spec.config.acking = acking;
    }
    let topology = registry.build(&spec, &origin)?;
    let component = match args.at {
        Some(c) => c,
        None => spec.bolts.last().map(|b| b.id.clone()).context("the topology has no bolt to count at")?,
    };
    let options =
        ThroughputOptions { duration: args.duration, warmup: args.warmup, component, baseline: !args.no_baseline };
    let report = throughput(&topology, Some(&spec), &options)?;
    out_part!("{report}");
    if let Some(path) = args.json {
        std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

fn run_kafka(args: KafkaArgs) -> anyhow::Result<()> {
    let options = crate::bench::KafkaOptions {
        brokers: args.brokers,
        topic: args.topic,
        produce: args.produce,
        messages: args.messages.unwrap_or(1_000_000),
        partitions: args.partitions.unwrap_or(4),
        value_size: args.value_size.unwrap_or(80),
        rounds: args.rounds,
        // Checked by clap against the same names.
        work: args.work.parse()?,
        bolt_tasks: args.bolt_tasks,
        max_spout_pending: args.max_spout_pending,
    };
    // The kafka spout keeps its offsets in a znode store: a one-replica store for this run.
    let store = EmbeddedStore::start(None)?;
    let result = crate::bench::kafka(&options, &|topology| store.connect(topology));
    store.stop();
    let report = result?;
    out_part!("{report}");
    if let Some(path) = args.json {
        std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

fn run_coordinator(args: CoordinatorArgs) -> anyhow::Result<()> {
    let options = crate::bench::CoordinatorOptions {
        target: args.target,
        clients: args.clients,
        ops: args.ops,
        in_flight: args.in_flight,
        mix: args.mix,
        value_size: args.value_size,
        znodes: args.znodes,
        keep: args.keep,
    };
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let report = runtime.block_on(crate::bench::coordinator(&options))?;
    out_part!("{report}");
    if let Some(path) = args.json {
        std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    // Figures with failed requests in them are not a measurement of the server.
    anyhow::ensure!(
        report.total.errors == 0,
        "{} of {} requests failed; the first: {}",
        report.total.errors,
        report.total.ops,
        report.first_error.as_deref().unwrap_or("?")
    );
    if let Some(error) = &report.cleanup_error {
        anyhow::bail!("could not delete {}: {error}", report.root);
    }
    Ok(())
}
