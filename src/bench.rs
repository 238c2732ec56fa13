//! The measurements behind `squall bench`.
//!
//! [`throughput`] runs a topology in this process for a fixed time and counts the tuples one
//! component executes per second, after a warm-up; when the topology is fed by a `generator`
//! spout it also times a plain single-threaded Rust loop doing the same split-and-count work on
//! the same sentences, so the figure comes with a baseline measured in the same run.

use std::time::{Duration, Instant};

use anyhow::Context;
use rustc_hash::FxHashMap;
use serde::Serialize;
use smol_str::SmolStr;
use squall_operators::generator::{GeneratorConfig, SentenceGenerator};
use squall_runtime::{LocalRun, RunOptions, Topology, TopologySpec};

/// What to measure.
#[derive(Clone, Debug)]
pub struct ThroughputOptions {
    /// How long the topology runs, warm-up included.
    pub duration: Duration,
    /// Excluded from the count at the start.
    pub warmup: Duration,
    /// The component whose executed tuples are counted.
    pub component: String,
    /// Whether to time the plain-loop baseline (needs a `generator` spout).
    pub baseline: bool,
}

/// The result of [`throughput`], as `--json` writes it.
#[derive(Clone, Debug, Serialize)]
pub struct ThroughputReport {
    /// The topology's name.
    pub topology: String,
    /// The counted component.
    pub component: String,
    /// Whether acking was on.
    pub acking: bool,
    /// The measured window, in seconds.
    pub measured_s: f64,
    /// Tuples the component executed in the window.
    pub tuples: u64,
    /// Tuples per second at the component.
    pub tuples_per_sec: f64,
    /// Median complete latency of spout tuples over the whole run, in ms (acking on only).
    pub complete_p50_ms: Option<f64>,
    /// 99th percentile complete latency, in ms (acking on only).
    pub complete_p99_ms: Option<f64>,
    /// Words per second of a single-threaded generate-split-count loop.
    pub baseline_tuples_per_sec: Option<f64>,
    /// `tuples_per_sec / baseline_tuples_per_sec`.
    pub ratio: Option<f64>,
    /// Spout tuple trees that failed (acking on only).
    pub failed: u64,
}

/// Runs `topology` for `options.duration` and measures the executed rate of one component.
/// `spec` is the parsed topology file, used to find the generator's arguments for the baseline.
pub fn throughput(
    topology: &Topology,
    spec: Option<&TopologySpec>,
    options: &ThroughputOptions,
) -> anyhow::Result<ThroughputReport> {
    anyhow::ensure!(
        topology.component(&options.component).is_some_and(|c| !c.is_spout()),
        "topology '{}' has no bolt '{}' to count at",
        topology.name,
        options.component
    );
    anyhow::ensure!(options.warmup < options.duration, "the warm-up must be shorter than the duration");
    let baseline = if options.baseline {
        let generator = spec.and_then(generator_config).ok_or_else(|| {
            anyhow::anyhow!("the baseline needs a topology fed by a `generator` spout (use --no-baseline)")
        })??;
        Some(baseline_rate(&generator, options.duration - options.warmup))
    } else {
        None
    };

    let run = LocalRun::start(topology, RunOptions { duration: None })?;
    let executed = || run.metrics().component(&options.component).map(|c| c.snapshot().executed).unwrap_or(0);
    std::thread::sleep(options.warmup);
    let (start, at_start) = (Instant::now(), executed());
    std::thread::sleep(options.duration - options.warmup);
    let (end, at_end) = (Instant::now(), executed());
    run.stopper().stop();
    let report = run.wait();

    let measured = end.duration_since(start).as_secs_f64();
    let tuples = at_end - at_start;
    let tuples_per_sec = tuples as f64 / measured;
    let spouts: Vec<_> =
        report.components.iter().filter(|c| c.role == squall_runtime::metrics::ComponentRole::Spout).collect();
    let mut complete = None;
    for s in &spouts {
        let h = &s.stats.complete_latency_us;
        if !h.is_empty() {
            complete = Some((h.value_at_quantile(0.5) as f64 / 1e3, h.value_at_quantile(0.99) as f64 / 1e3));
        }
    }
    Ok(ThroughputReport {
        topology: topology.name.clone(),
        component: options.component.clone(),
        acking: topology.config.acking,
        measured_s: measured,
        tuples,
        tuples_per_sec,
        complete_p50_ms: complete.map(|c| c.0),
        complete_p99_ms: complete.map(|c| c.1),
        baseline_tuples_per_sec: baseline,
        ratio: baseline.map(|b| tuples_per_sec / b),
        failed: spouts.iter().map(|s| s.stats.failed).sum(),
    })
}

fn generator_config(spec: &TopologySpec) -> Option<anyhow::Result<GeneratorConfig>> {
    let spout = spec.spouts.iter().find(|s| s.kind == "generator")?;
    let args = if spout.args.is_null() { serde_yaml::Value::Mapping(Default::default()) } else { spout.args.clone() };
    Some(serde_yaml::from_value(args).map_err(|e| anyhow::anyhow!("generator '{}': {e}", spout.id)))
}

/// Words per second of one thread generating the generator's sentences, splitting them on
/// whitespace and counting the words in a hash map: the work of generator → split → count
/// without the runtime.
pub fn baseline_rate(config: &GeneratorConfig, duration: Duration) -> f64 {
    let generator = SentenceGenerator::new(config);
    let mut counts: FxHashMap<SmolStr, i64> = FxHashMap::default();
    let mut line = String::new();
    let mut words: u64 = 0;
    let started = Instant::now();
    let mut seq = 0u64;
    loop {
        for _ in 0..1024 {
            line.clear();
            generator.sentence(0, seq, &mut line);
            seq += 1;
            for word in line.split_whitespace() {
                *counts.entry(SmolStr::new(word)).or_insert(0) += 1;
                words += 1;
            }
        }
        if started.elapsed() >= duration {
            break;
        }
    }
    std::hint::black_box(&counts);
    words as f64 / started.elapsed().as_secs_f64()
}

impl std::fmt::Display for ThroughputReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "topology '{}', acking {}: {:.0} tuples/s at '{}' ({} tuples in {:.1}s)",
            self.topology,
            if self.acking { "on" } else { "off" },
            self.tuples_per_sec,
            self.component,
            self.tuples,
            self.measured_s
        )?;
        if let (Some(p50), Some(p99)) = (self.complete_p50_ms, self.complete_p99_ms) {
            writeln!(f, "complete latency: p50 {p50:.2} ms, p99 {p99:.2} ms; failed trees: {}", self.failed)?;
        }
        if let (Some(b), Some(r)) = (self.baseline_tuples_per_sec, self.ratio) {
            writeln!(f, "plain single-threaded loop: {b:.0} words/s; Squall / loop = {r:.2}")?;
        }
        Ok(())
    }
}

/// What `squall bench coordinator` runs.
#[derive(Clone, Debug)]
pub struct CoordinatorOptions {
    /// The ensemble, as `host:port[,host:port...]`.
    pub target: String,
    /// Concurrent sessions.
    pub clients: usize,
    /// Operations in all.
    pub ops: usize,
    /// Requests each session keeps in flight.
    pub in_flight: usize,
    /// The operation mix.
    pub mix: Mix,
    /// Bytes of data per write.
    pub value_size: usize,
    /// Znodes the set/get mixes spread over.
    pub znodes: usize,
}

/// The operations of a coordinator benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mix {
    /// Creates of new znodes.
    Create,
    /// setData on existing znodes.
    Set,
    /// getData of existing znodes.
    Get,
    /// 80% get, 20% set.
    Mixed,
}

/// The result of [`coordinator`], as `--json` writes it.
#[derive(Clone, Debug, Serialize)]
pub struct CoordinatorReport {
    /// The mix run.
    pub mix: Mix,
    /// Sessions.
    pub clients: usize,
    /// Operations completed (errors included).
    pub ops: usize,
    /// Operations per second.
    pub ops_per_sec: f64,
    /// Median latency, µs.
    pub p50_us: u64,
    /// 99th percentile, µs.
    pub p99_us: u64,
    /// 99.9th percentile, µs.
    pub p999_us: u64,
    /// Operations that failed.
    pub errors: usize,
}

impl std::fmt::Display for CoordinatorReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{:?} x {} clients: {:.0} ops/s, latency p50 {} µs, p99 {} µs, p99.9 {} µs, errors {}",
            self.mix, self.clients, self.ops_per_sec, self.p50_us, self.p99_us, self.p999_us, self.errors
        )
    }
}

/// Runs a ZooKeeper-protocol workload against any ZooKeeper-compatible ensemble (Squall's or
/// Apache ZooKeeper) and measures throughput and latency.
pub async fn coordinator(options: &CoordinatorOptions) -> anyhow::Result<CoordinatorReport> {
    use futures::StreamExt;
    use zookeeper_client as zk;
    anyhow::ensure!(
        options.clients > 0 && options.ops > 0 && options.in_flight > 0,
        "clients, ops and in-flight must be positive"
    );
    let root = format!("/squall-bench-{}", std::process::id());
    let setup =
        zk::Client::connect(&options.target).await.with_context(|| format!("cannot connect to {}", options.target))?;
    let persistent = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    let value = vec![b'x'; options.value_size];
    setup.create(&root, b"", &persistent).await.with_context(|| format!("cannot create {root}"))?;
    if options.mix != Mix::Create {
        for i in 0..options.znodes {
            setup.create(&format!("{root}/n{i}"), &value, &persistent).await.context("cannot create the znodes")?;
        }
    }
    let per_client = options.ops.div_ceil(options.clients);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..options.clients {
        let client = zk::Client::connect(&options.target).await.context("cannot connect a benchmark session")?;
        let (root, value, options) = (root.clone(), value.clone(), options.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies =
                hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
            let mut errors = 0usize;
            let persistent = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
            let mut pending = futures::stream::FuturesUnordered::new();
            let mut next = 0usize;
            let mut done = 0usize;
            while done < per_client {
                while next < per_client && pending.len() < options.in_flight {
                    let i = next;
                    next += 1;
                    let key = format!("{root}/n{}", (c * 7919 + i * 104_729) % options.znodes.max(1));
                    let op = match options.mix {
                        Mix::Mixed if i % 5 == 0 => Mix::Set,
                        Mix::Mixed => Mix::Get,
                        m => m,
                    };
                    let (client, value, persistent, root) = (&client, &value, &persistent, &root);
                    let sent = Instant::now();
                    pending.push(async move {
                        let ok = match op {
                            Mix::Create => client.create(&format!("{root}/c{c}-{i}"), value, persistent).await.is_ok(),
                            Mix::Set => client.set_data(&key, value, None).await.is_ok(),
                            _ => client.get_data(&key).await.is_ok(),
                        };
                        (ok, sent.elapsed())
                    });
                }
                if let Some((ok, took)) = pending.next().await {
                    done += 1;
                    let _ = latencies.record(took.as_micros().max(1) as u64);
                    errors += usize::from(!ok);
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
    let mut errors = 0;
    for task in tasks {
        let (h, e) = task.await.context("a benchmark session failed")?;
        latencies.add(&h).ok();
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let ops = latencies.len() as usize;
    Ok(CoordinatorReport {
        mix: options.mix,
        clients: options.clients,
        ops,
        ops_per_sec: ops as f64 / elapsed,
        p50_us: latencies.value_at_quantile(0.5),
        p99_us: latencies.value_at_quantile(0.99),
        p999_us: latencies.value_at_quantile(0.999),
        errors,
    })
}
