//! The measurements behind `squall bench`.
//!
//! [`throughput`] runs a topology in this process for a fixed time and counts the tuples one
//! component executes per second, after a warm-up; when the topology is fed by a `generator`
//! spout it also times a plain single-threaded Rust loop doing the same split-and-count work on
//! the same sentences, so the figure comes with a baseline measured in the same run.
//!
//! [`coordinator`] drives a ZooKeeper-protocol workload (create, set, get, a get/set mix, or a
//! fenced multi) from many concurrent sessions against any ZooKeeper-compatible ensemble, so
//! Squall's coordinator and Apache ZooKeeper are measured by the same client on the same
//! requests; it reports throughput, latency percentiles and errors per kind of request.
//!
//! [`kafka()`] reads a Kafka topic with a bare rdkafka consumer and then with a `kafka` spout →
//! `split` → `count` topology, acking on, and reports both rates from the same run.

pub mod broker;
pub mod failover;
mod kafka;
mod load_session;
pub mod plot;

pub use kafka::{KafkaOptions, KafkaReport, KafkaRound, kafka};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::stream::{StreamExt, TryStreamExt};
use hdrhistogram::Histogram;
use rustc_hash::FxHashMap;
use serde::Serialize;
use smol_str::SmolStr;
use squall_coordinator::Acl;
use squall_coordinator::proto::records::{CheckVersionRequest, GetDataRequest, SetDataRequest};
use squall_coordinator::proto::{self, MultiOp};
use squall_operators::generator::{GeneratorConfig, SentenceGenerator};
use squall_runtime::{LocalRun, RunOptions, Topology, TopologySpec};
use zookeeper_client as zk;

use load_session::{LoadError, LoadSession};

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

    let run = LocalRun::start(topology, RunOptions::default())?;
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
    /// Requests in all, spread evenly over the sessions.
    pub ops: usize,
    /// Requests each session keeps in flight.
    pub in_flight: usize,
    /// The operation mix.
    pub mix: Mix,
    /// Bytes of data per write.
    pub value_size: usize,
    /// Znodes the set, get, mixed and multi workloads spread over.
    pub znodes: usize,
    /// Leaves the benchmark's znodes in place instead of deleting them at the end.
    pub keep: bool,
}

/// The workloads of a coordinator benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mix {
    /// A create of a new znode per request.
    Create,
    /// A setData on one of the existing znodes.
    Set,
    /// A getData of one of the existing znodes.
    Get,
    /// 80% getData, 20% setData (one request in five).
    Mixed,
    /// A fenced write: a multi of check(the version of an epoch znode) and setData on one of the
    /// existing znodes, as Kafka's controller wraps each of its writes in ZooKeeper mode.
    Multi,
}

impl Mix {
    /// The request a session sends as its `i`th.
    fn request(self, i: usize) -> Request {
        match self {
            Mix::Create => Request::Create,
            Mix::Set => Request::Set,
            Mix::Get => Request::Get,
            Mix::Mixed if i % 5 == 0 => Request::Set,
            Mix::Mixed => Request::Get,
            Mix::Multi => Request::Multi,
        }
    }
}

impl std::fmt::Display for Mix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use clap::ValueEnum as _;
        f.write_str(self.to_possible_value().expect("no mix is skipped").get_name())
    }
}

/// One kind of request the benchmark sends, reported on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Request {
    Create,
    Set,
    Get,
    Multi,
}

impl Request {
    fn name(self) -> &'static str {
        match self {
            Request::Create => "create",
            Request::Set => "set",
            Request::Get => "get",
            Request::Multi => "multi",
        }
    }
}

/// Throughput and latency of one kind of request, or of all of them.
#[derive(Clone, Debug, Serialize)]
pub struct RequestReport {
    /// Requests answered, errors included.
    pub ops: u64,
    /// Requests answered without error, per second of the whole run.
    pub ops_per_sec: f64,
    /// Median latency of the requests answered without error, µs.
    pub p50_us: u64,
    /// 99th percentile, µs.
    pub p99_us: u64,
    /// 99.9th percentile, µs.
    pub p999_us: u64,
    /// Requests answered with an error (or lost with their connection).
    pub errors: u64,
}

/// The result of [`coordinator`], as `--json` writes it. The top-level `ops_per_sec`,
/// `p50_us`, `p99_us`, `p999_us` and `errors` are over all requests (DESIGN §8); `by_op` breaks
/// them down by kind of request.
#[derive(Clone, Debug, Serialize)]
pub struct CoordinatorReport {
    /// The mix run.
    pub mix: Mix,
    /// Sessions.
    pub clients: usize,
    /// Requests each session kept in flight.
    pub in_flight: usize,
    /// Bytes of data per write.
    pub value_size: usize,
    /// The znode under which the benchmark made its znodes.
    pub root: String,
    /// Whether that tree was left in place (`--keep`); otherwise it was deleted.
    pub kept: bool,
    /// Why the tree could not be deleted, if it could not.
    pub cleanup_error: Option<String>,
    /// Seconds from the first request to the last answer.
    pub elapsed_s: f64,
    /// All requests: `ops, ops_per_sec, p50_us, p99_us, p999_us, errors` at the top level of
    /// the JSON.
    #[serde(flatten)]
    pub total: RequestReport,
    /// Failed requests by ZooKeeper's name for the error (`NoNode`, `ConnectionLoss`, ...).
    pub errors_by_kind: BTreeMap<String, u64>,
    /// The first failure, naming its request.
    pub first_error: Option<String>,
    /// The same figures per kind of request (`create`, `set`, `get`, `multi`).
    pub by_op: BTreeMap<&'static str, RequestReport>,
}

impl std::fmt::Display for CoordinatorReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let total = &self.total;
        writeln!(
            f,
            "{}: {} sessions x {} in flight, {} B values: {} requests in {:.2} s, {} errors",
            self.mix, self.clients, self.in_flight, self.value_size, total.ops, self.elapsed_s, total.errors
        )?;
        writeln!(f, "{:<7} {:>10} {:>9} {:>9} {:>9} {:>8}", "op", "ops/s", "p50 µs", "p99 µs", "p99.9 µs", "errors")?;
        let mut rows: Vec<(&str, &RequestReport)> = self.by_op.iter().map(|(op, r)| (*op, r)).collect();
        if rows.len() > 1 {
            rows.push(("total", total));
        }
        for (op, r) in rows {
            let (rate, p50, p99, p999, errors) = (r.ops_per_sec, r.p50_us, r.p99_us, r.p999_us, r.errors);
            writeln!(f, "{op:<7} {rate:>10.0} {p50:>9} {p99:>9} {p999:>9} {errors:>8}")?;
        }
        if total.errors > 0 {
            let kinds: Vec<String> = self.errors_by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect();
            writeln!(f, "errors by kind: {}", kinds.join(", "))?;
        }
        if let Some(first) = &self.first_error {
            writeln!(f, "first error: {first}")?;
        }
        if self.kept {
            writeln!(f, "kept {} and its znodes (--keep)", self.root)?;
        }
        if let Some(error) = &self.cleanup_error {
            writeln!(f, "could not delete {}: {error}", self.root)?;
        }
        Ok(())
    }
}

/// Runs a ZooKeeper-protocol workload against any ZooKeeper-compatible ensemble (Squall's or
/// Apache ZooKeeper) and measures throughput and latency per kind of request.
///
/// It makes `/squall-bench-<pid>` (and, except for `create`, the `znodes` znodes the requests
/// go to) through the `zookeeper-client` crate, then opens `clients` measuring sessions, spread
/// evenly over the target's servers, and has every session send its share of `ops` requests
/// with up to `in_flight` of them unanswered at a time. The measuring sessions are pipelines of
/// their own (`load_session`), so that the load generator, which runs on the machine it
/// measures, takes little CPU from the servers. A failed request is counted by the kind of its
/// error and left out of the rates and latencies, so a broken server shows up as errors, not as
/// speed. At the end the tree is deleted through new sessions, unless `keep` is set; a failure
/// to delete it goes into [`CoordinatorReport::cleanup_error`], so the measurement is not lost
/// with it.
pub async fn coordinator(options: &CoordinatorOptions) -> anyhow::Result<CoordinatorReport> {
    anyhow::ensure!(
        options.clients > 0 && options.ops > 0 && options.in_flight > 0,
        "clients, ops and in-flight must be positive"
    );
    anyhow::ensure!(options.mix == Mix::Create || options.znodes > 0, "the {} mix needs --znodes > 0", options.mix);
    let servers = servers(&options.target)?;
    let sessions = open_sessions(options).await?;
    let workload = Arc::new(Workload {
        root: format!("/squall-bench-{}", std::process::id()),
        value: vec![b'x'; options.value_size],
        znodes: options.znodes,
        mix: options.mix,
        in_flight: options.in_flight,
    });
    workload.set_up(&sessions).await?;
    drop(sessions);

    // The measuring sessions, spread evenly over the servers.
    let opening = (0..options.clients).map(|s| {
        let server = servers[s % servers.len()];
        async move {
            LoadSession::connect(server)
                .await
                .with_context(|| format!("cannot open measuring session {} of {}", s + 1, options.clients))
        }
    });
    let measuring = futures::future::try_join_all(opening).await?;
    let started = Instant::now();
    let mut running = Vec::new();
    for (s, session) in measuring.into_iter().enumerate() {
        let workload = workload.clone();
        let count = share(options.ops, options.clients, s);
        running.push(tokio::spawn(async move { workload.run_session(session, s, count).await }));
    }
    let mut tally = Tally::default();
    for session in running {
        tally.merge(session.await.context("a benchmark session panicked")?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut report = tally.report(options, &workload.root, elapsed);

    if !options.keep {
        let cleaned = match open_sessions(options).await {
            Ok(sessions) => workload.tear_down(&sessions, options.ops).await,
            Err(e) => Err(e),
        };
        report.cleanup_error = cleaned.err().map(|e| format!("{e:#}"));
    }
    Ok(report)
}

/// The `host:port` servers of a connect string; a chroot (`/path` suffix) has no place in a
/// benchmark's target.
fn servers(target: &str) -> anyhow::Result<Vec<&str>> {
    anyhow::ensure!(!target.contains('/'), "--target {target}: give host:port,... without a chroot");
    let servers: Vec<&str> = target.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    anyhow::ensure!(!servers.is_empty(), "--target is empty: give host:port,...");
    Ok(servers)
}

/// Opens `options.clients` sessions to the target.
async fn open_sessions(options: &CoordinatorOptions) -> anyhow::Result<Vec<zk::Client>> {
    let connecting = (0..options.clients).map(|s| async move {
        zk::Client::connect(&options.target)
            .await
            .with_context(|| format!("cannot open session {} of {} to {}", s + 1, options.clients, options.target))
    });
    futures::future::try_join_all(connecting).await
}

/// Requests of session `s` when `ops` are spread over `clients` sessions.
fn share(ops: usize, clients: usize, s: usize) -> usize {
    ops / clients + usize::from(s < ops % clients)
}

/// The znodes a benchmark works on and the requests it sends, shared by its sessions.
struct Workload {
    root: String,
    value: Vec<u8>,
    znodes: usize,
    mix: Mix,
    in_flight: usize,
}

impl Workload {
    /// The znode session `s` creates with its `i`th request (mix `create`).
    fn created(&self, s: usize, i: usize) -> String {
        format!("{}/c{s}-{i}", self.root)
    }

    /// The `k`th of the znodes that set, get and multi requests go to.
    fn znode(&self, k: usize) -> String {
        format!("{}/n{k}", self.root)
    }

    /// The znode whose version every multi checks; it is never written, so the check passes.
    fn epoch(&self) -> String {
        format!("{}/epoch", self.root)
    }

    /// Makes the root and, for the mixes that need them, the epoch and the znodes, with the
    /// requests spread over every session.
    async fn set_up(&self, sessions: &[zk::Client]) -> anyhow::Result<()> {
        let persistent = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
        sessions[0]
            .create(&self.root, b"", &persistent)
            .await
            .with_context(|| format!("cannot create {}", self.root))?;
        if self.mix == Mix::Create {
            return Ok(());
        }
        sessions[0]
            .create(&self.epoch(), b"", &persistent)
            .await
            .with_context(|| format!("cannot create {}", self.epoch()))?;
        let persistent = &persistent;
        let create = |k: usize| async move {
            let path = self.znode(k);
            let created = sessions[k % sessions.len()].create(&path, &self.value, persistent).await;
            created.map(drop).with_context(|| format!("cannot create {path}"))
        };
        pipelined(self.znodes, self.in_flight * sessions.len(), create).await
    }

    /// Deletes everything [`Workload::set_up`] and the sessions' `ops` requests made.
    async fn tear_down(&self, sessions: &[zk::Client], ops: usize) -> anyhow::Result<()> {
        let in_flight = self.in_flight * sessions.len();
        if self.mix == Mix::Create {
            let created: Vec<(usize, usize)> =
                (0..sessions.len()).flat_map(|s| (0..share(ops, sessions.len(), s)).map(move |i| (s, i))).collect();
            let delete = |n: usize| {
                let (s, i) = created[n];
                delete_if_there(&sessions[s], self.created(s, i))
            };
            pipelined(created.len(), in_flight, delete).await?;
        } else {
            let delete = |k: usize| delete_if_there(&sessions[k % sessions.len()], self.znode(k));
            pipelined(self.znodes, in_flight, delete).await?;
            delete_if_there(&sessions[0], self.epoch()).await?;
        }
        delete_if_there(&sessions[0], self.root.clone()).await
    }

    /// Sends session `s`'s `count` requests, `in_flight` at a time, tallies the answers and
    /// closes the session.
    async fn run_session(&self, mut session: LoadSession, s: usize, count: usize) -> Tally {
        let mut tally = Tally::default();
        let request = |i: usize| {
            let kind = self.mix.request(i);
            (self.wire_request(kind, s, i), (kind, i))
        };
        let answered = |(request, i): (Request, usize), answer: Result<(), LoadError>, took: Duration| {
            let answer = answer.map_err(|e| Failure {
                kind: e.kind(),
                message: format!("{} {}: {e}", request.name(), self.path(request, s, i)),
            });
            tally.record(request, answer, took);
        };
        session.run(count, self.in_flight, request, answered).await;
        session.close().await;
        tally
    }

    /// The znode session `s`'s `i`th request goes to: a new one for a create, else one of the
    /// znodes, spread over them in a different sequence per session.
    fn path(&self, request: Request, s: usize, i: usize) -> String {
        match request {
            Request::Create => self.created(s, i),
            _ => self.znode((s * 7919 + i * 104_729) % self.znodes),
        }
    }

    /// Session `s`'s `i`th request, of kind `kind`, on the wire.
    fn wire_request(&self, kind: Request, s: usize, i: usize) -> proto::Request {
        let path = self.path(kind, s, i);
        let set = |path| SetDataRequest { path, data: self.value.clone(), version: -1 };
        match kind {
            Request::Create => proto::Request::Create(proto::records::CreateRequest {
                path,
                data: self.value.clone(),
                acl: Acl::open_unsafe(),
                flags: 0,
            }),
            Request::Set => proto::Request::SetData(set(path)),
            Request::Get => proto::Request::GetData(GetDataRequest { path, watch: false }),
            Request::Multi => proto::Request::Multi(vec![
                MultiOp::Check(CheckVersionRequest { path: self.epoch(), version: 0 }),
                MultiOp::SetData(set(path)),
            ]),
        }
    }
}

/// Runs `count` requests made by `request(0..count)`, `in_flight` at a time; stops at the
/// first that fails.
async fn pipelined<F, R>(count: usize, in_flight: usize, request: F) -> anyhow::Result<()>
where
    F: FnMut(usize) -> R,
    R: std::future::Future<Output = anyhow::Result<()>>,
{
    futures::stream::iter(0..count).map(request).buffer_unordered(in_flight).try_collect().await
}

/// Deletes `path`; one that is not there (a create that failed) is not an error.
async fn delete_if_there(client: &zk::Client, path: String) -> anyhow::Result<()> {
    match client.delete(&path, None).await {
        Ok(()) | Err(zk::Error::NoNode) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot delete {path}")),
    }
}

/// A request that failed: ZooKeeper's name for the error and a message naming the request.
struct Failure {
    kind: String,
    message: String,
}

/// What sessions measured: latencies and errors per kind of request.
#[derive(Default)]
struct Tally {
    by_request: BTreeMap<Request, (Histogram<u64>, u64)>,
    errors_by_kind: BTreeMap<String, u64>,
    first_error: Option<(Instant, String)>,
}

fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("1 µs to 60 s at 3 significant digits are valid bounds")
}

impl Tally {
    fn record(&mut self, request: Request, answer: Result<(), Failure>, took: Duration) {
        let (latencies, errors) = self.by_request.entry(request).or_insert_with(|| (latency_histogram(), 0));
        match answer {
            Ok(()) => latencies.saturating_record(took.as_micros().max(1) as u64),
            Err(failure) => {
                *errors += 1;
                *self.errors_by_kind.entry(failure.kind).or_default() += 1;
                self.first_error.get_or_insert((Instant::now(), failure.message));
            }
        }
    }

    fn merge(&mut self, other: Tally) {
        for (request, (latencies, errors)) in other.by_request {
            let mine = self.by_request.entry(request).or_insert_with(|| (latency_histogram(), 0));
            mine.0.add(&latencies).expect("histograms with the same bounds add up");
            mine.1 += errors;
        }
        for (kind, n) in other.errors_by_kind {
            *self.errors_by_kind.entry(kind).or_default() += n;
        }
        if let Some(theirs) = other.first_error {
            if self.first_error.as_ref().is_none_or(|mine| theirs.0 < mine.0) {
                self.first_error = Some(theirs);
            }
        }
    }

    fn report(self, options: &CoordinatorOptions, root: &str, elapsed: f64) -> CoordinatorReport {
        let summary = |latencies: &Histogram<u64>, errors: u64| RequestReport {
            ops: latencies.len() + errors,
            ops_per_sec: latencies.len() as f64 / elapsed,
            p50_us: latencies.value_at_quantile(0.5),
            p99_us: latencies.value_at_quantile(0.99),
            p999_us: latencies.value_at_quantile(0.999),
            errors,
        };
        let mut all = latency_histogram();
        for (latencies, _) in self.by_request.values() {
            all.add(latencies).expect("histograms with the same bounds add up");
        }
        let total = summary(&all, self.by_request.values().map(|(_, errors)| errors).sum());
        CoordinatorReport {
            mix: options.mix,
            clients: options.clients,
            in_flight: options.in_flight,
            value_size: options.value_size,
            root: root.to_string(),
            kept: options.keep,
            cleanup_error: None,
            elapsed_s: elapsed,
            total,
            errors_by_kind: self.errors_by_kind,
            first_error: self.first_error.map(|(_, message)| message),
            by_op: self
                .by_request
                .iter()
                .map(|(r, (latencies, errors))| (r.name(), summary(latencies, *errors)))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_is_a_list_of_servers_without_a_chroot() {
        assert_eq!(servers("127.0.0.1:1, 127.0.0.1:2,").unwrap(), vec!["127.0.0.1:1", "127.0.0.1:2"]);
        assert!(servers("127.0.0.1:1/app").unwrap_err().to_string().contains("without a chroot"));
        assert!(servers(" , ").is_err());
    }
}
