//! The Kafka spout and sink end to end against a real Kafka-protocol broker (tansu, on
//! loopback), in `squall local` processes and on a cluster of `squall node` processes: counts
//! are exact, offsets in the znode store end at the partitions' ends, a run over the same data
//! directory resumes where the last one stopped, and a SIGKILLed worker's partitions resume
//! from their committed offsets with duplicates bounded by what was in flight.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::tansu::Tansu;
use common::*;
use zookeeper_client as zk;

const PARTITIONS: i32 = 4;

/// The words of message `i`.
fn sentence(i: usize) -> String {
    format!("w{} v{} common", i % 97, i % 13)
}

/// Produces messages `range` to `topic`, spread round-robin over the partitions; returns each
/// partition's end (last delivered offset + 1) as the delivery reports give it.
fn produce(tansu: &Tansu, topic: &str, range: std::ops::Range<usize>) -> BTreeMap<i32, i64> {
    let messages = range.map(|i| (Some(i as i32 % PARTITIONS), None, sentence(i).into_bytes()));
    let mut ends = BTreeMap::new();
    for (partition, offset) in tansu.produce(topic, messages) {
        let end = ends.entry(partition).or_insert(0);
        *end = (*end).max(offset + 1);
    }
    ends
}

fn word_counts(range: std::ops::Range<usize>) -> BTreeMap<String, i64> {
    let mut counts = BTreeMap::new();
    for i in range {
        for word in sentence(i).split(' ') {
            *counts.entry(word.to_string()).or_default() += 1;
        }
    }
    counts
}

/// The last count of each word a `count` → `file_sink` run wrote to `path`.
fn last_counts(path: &Path) -> BTreeMap<String, i64> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut counts = BTreeMap::new();
    for line in text.lines() {
        let Ok(tuple) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        counts.insert(tuple["word"].as_str().unwrap().to_string(), tuple["count"].as_i64().unwrap());
    }
    counts
}

/// The offsets stored under `/squall/offsets/<topology>/<spout>/<topic>`, by partition.
async fn stored_offsets(client: &zk::Client, topology: &str, spout: &str, topic: &str) -> BTreeMap<i32, i64> {
    let dir = format!("/squall/offsets/{topology}/{spout}/{topic}");
    let mut offsets = BTreeMap::new();
    for partition in client.list_children(&dir).await.unwrap_or_default() {
        if let Ok((data, _)) = client.get_data(&format!("{dir}/{partition}")).await {
            let stored: serde_json::Value = serde_json::from_slice(&data).unwrap();
            offsets.insert(partition.parse().unwrap(), stored["offset"].as_i64().unwrap());
        }
    }
    offsets
}

/// A word-count topology over Kafka topic `topic`, its counts written to `out`.
fn kafka_wordcount(dir: &Path, tansu: &Tansu, topic: &str, out: &Path) -> PathBuf {
    let yaml = format!(
        "name: kwc\nspouts:\n  - {{ id: lines, kind: kafka, parallelism: 2, args: {{ brokers: \"{}\", topic: {topic}, commit_interval: 200ms }} }}\n\
         bolts:\n  - {{ id: split, kind: split, parallelism: 2, args: {{ field: value }}, inputs: [ {{ from: lines }} ] }}\n\
         \x20 - {{ id: count, kind: count, parallelism: 2, args: {{ key: word }}, inputs: [ {{ from: split, grouping: {{ fields: [word] }} }} ] }}\n\
         \x20 - {{ id: out, kind: file_sink, args: {{ path: {} }}, inputs: [ {{ from: count }} ] }}\n",
        tansu.bootstrap(),
        out.display()
    );
    let file = dir.join("kwc.yaml");
    std::fs::write(&file, yaml).unwrap();
    file
}

/// A `squall local` process over a data directory, its stderr in a file.
struct LocalProcess {
    child: Child,
    log: PathBuf,
}

impl LocalProcess {
    fn start(topology: &Path, data_dir: &Path, log: PathBuf) -> LocalProcess {
        let child = Command::new(env!("CARGO_BIN_EXE_squall"))
            .args(["local", topology.to_str().unwrap(), "--data-dir", data_dir.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(log.with_extension("out")).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        LocalProcess { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The address of the run's embedded store, from what it printed.
    fn store(&self) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(addr) = self.log().lines().find_map(|l| l.strip_prefix("coordinator: ")) {
                return addr.rsplit(' ').next().unwrap().to_string();
            }
            assert!(Instant::now() < deadline, "the run printed no store address: {}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Interrupts the run (Ctrl-C) and waits for its orderly end.
    fn interrupt(mut self) {
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) }, 0);
        let status = self.child.wait().unwrap();
        assert!(status.success(), "the run did not stop cleanly: {}", self.log());
    }
}

impl Drop for LocalProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `done()`, polling.
async fn wait_for(what: &str, deadline: Duration, mut done: impl AsyncFnMut() -> bool, context: impl Fn() -> String) {
    let deadline = Instant::now() + deadline;
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}: {}", context());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Guarantee: word count over 100,000 Kafka messages in 4 partitions counts exactly, and each
/// partition's offset in the znode store ends at its end; a second run over the same data
/// directory starts from those offsets: it counts only the messages produced since.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn word_count_from_kafka_is_exact_and_a_second_run_resumes_from_the_stored_offsets() {
    const FIRST: usize = 100_000;
    const SECOND: usize = 2_000;
    let tansu = Tansu::start();
    tansu.create_topic("lines", PARTITIONS);
    let ends = produce(&tansu, "lines", 0..FIRST);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");

    let out = dir.path().join("first.jsonl");
    let run =
        LocalProcess::start(&kafka_wordcount(dir.path(), &tansu, "lines", &out), &data, dir.path().join("first.log"));
    let client = connect(&run.store()).await;
    let expected = word_counts(0..FIRST);
    wait_for("the counts are complete", Duration::from_secs(120), async || last_counts(&out) == expected, || run.log())
        .await;
    wait_for(
        "the offsets reach the partition ends",
        DEADLINE,
        async || stored_offsets(&client, "kwc", "lines", "lines").await == ends,
        || format!("{:?} vs {ends:?}", std::fs::read_to_string(&run.log)),
    )
    .await;
    drop(client);
    run.interrupt();

    let ends = produce(&tansu, "lines", FIRST..FIRST + SECOND);
    let out = dir.path().join("second.jsonl");
    let run =
        LocalProcess::start(&kafka_wordcount(dir.path(), &tansu, "lines", &out), &data, dir.path().join("second.log"));
    let client = connect(&run.store()).await;
    let expected = word_counts(FIRST..FIRST + SECOND);
    wait_for("the new messages are counted", DEADLINE, async || last_counts(&out) == expected, || run.log()).await;
    wait_for(
        "the offsets reach the new ends",
        DEADLINE,
        async || stored_offsets(&client, "kwc", "lines", "lines").await == ends,
        || run.log(),
    )
    .await;
    // Nothing from before was counted again: the counts stay those of the new messages.
    assert_eq!(last_counts(&out), expected);
    drop(client);
    run.interrupt();
}

/// (partition, offset) of every message a `kafka` → `file_sink` topology wrote to `path`, in
/// file order. A last line without its newline is a write still under way (a read of a file
/// may see part of a concurrent write): it is left for the next read. Lines cut short by a
/// worker killed mid-write are not counted (see [`cut_lines`]).
fn delivered(path: &Path) -> Vec<(i32, i64)> {
    complete_lines(path)
        .iter()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .map(|tuple| (tuple["partition"].as_i64().unwrap() as i32, tuple["offset"].as_i64().unwrap()))
        .collect()
}

/// The lines of `path` that are not whole JSON objects: lines a SIGKILLed worker left cut short
/// (the file_sink starts a new line after one). Each must look like the start of a message.
fn cut_lines(path: &Path) -> Vec<String> {
    let cut: Vec<String> = complete_lines(path)
        .into_iter()
        .filter(|line| !line.is_empty() && serde_json::from_str::<serde_json::Value>(line).is_err())
        .collect();
    for line in &cut {
        assert!(line.starts_with("{\"topic\":\"events\""), "a line that is not a message: {line:?}");
    }
    cut
}

/// The lines of `path` that end in a newline.
fn complete_lines(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete.lines().map(str::to_string).collect()
}

/// Whether every offset below each partition's end was delivered.
fn covers(delivered: &[(i32, i64)], ends: &BTreeMap<i32, i64>) -> bool {
    let unique: BTreeSet<_> = delivered.iter().copied().collect();
    unique.len() as i64 == ends.values().sum::<i64>()
        && ends.iter().all(|(&p, &end)| (0..end).all(|o| unique.contains(&(p, o))))
}

/// A cluster of three nodes with two slots each, and a `kafka` → `file_sink` topology `ktop`
/// over topic `topic` with `spout_tasks` spout tasks, its output in `out`.
struct KafkaCluster {
    ensemble: Ensemble,
    client: zk::Client,
    target: String,
}

const MAX_SPOUT_PENDING: i64 = 1000;
const COMMIT_INTERVAL_MS: i64 = 200;

impl KafkaCluster {
    async fn deploy(tansu: &Tansu, topic: &str, spout_tasks: u32, dir: &Path, out: &Path) -> KafkaCluster {
        let ensemble = Ensemble::start_with(&["--slots", "2"]);
        ensemble.wait_for_leader().await;
        let target = ensemble.connect_string();
        let client = connect(&target).await;
        wait_for(
            "three nodes registered",
            DEADLINE,
            async || client.list_children("/squall/nodes").await.is_ok_and(|n| n.len() == 3),
            || ensemble.logs(),
        )
        .await;
        let yaml = format!(
            "name: ktop\nworkers: 2\nconfig: {{ max_spout_pending: {MAX_SPOUT_PENDING}, message_timeout: 10s }}\n\
             spouts:\n  - {{ id: lines, kind: kafka, parallelism: {spout_tasks}, args: {{ brokers: \"{}\", topic: {topic}, commit_interval: {COMMIT_INTERVAL_MS}ms }} }}\n\
             bolts:\n  - {{ id: out, kind: file_sink, args: {{ path: {} }}, inputs: [ {{ from: lines }} ] }}\n",
            tansu.bootstrap(),
            out.display()
        );
        let file = dir.join("ktop.yaml");
        std::fs::write(&file, yaml).unwrap();
        let deployed = squall(&["deploy", file.to_str().unwrap(), "--coordinator", &target]);
        assert!(deployed.status.success(), "{}", String::from_utf8_lossy(&deployed.stderr));
        KafkaCluster { ensemble, client, target }
    }

    /// The pid of the worker that runs task `task`.
    async fn pid_of_task(&self, task: u64) -> u32 {
        let (data, _) = self.client.get_data("/squall/assignments/ktop").await.unwrap();
        let assignment: serde_json::Value = serde_json::from_slice(&data).unwrap();
        let worker = assignment["workers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| {
                w["tasks"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|r| r[0].as_u64().unwrap() <= task && task <= r[1].as_u64().unwrap())
            })
            .unwrap();
        let name = format!("{}-{}", worker["node"].as_str().unwrap(), worker["slot"]);
        let (data, _) = self.client.get_data(&format!("/squall/workers/ktop/{name}")).await.unwrap();
        let about: serde_json::Value = serde_json::from_slice(&data).unwrap();
        about["pid"].as_u64().unwrap() as u32
    }

    async fn wait_until_all_delivered_and_committed(&self, out: &Path, ends: &BTreeMap<i32, i64>) {
        wait_for(
            "every message is delivered",
            Duration::from_secs(60),
            async || covers(&delivered(out), ends),
            || self.ensemble.logs(),
        )
        .await;
        wait_for(
            "the offsets reach the partition ends",
            DEADLINE,
            async || stored_offsets(&self.client, "ktop", "lines", "events").await == *ends,
            || self.ensemble.logs(),
        )
        .await;
    }
}

/// Runs `squall ARGS...` to completion.
fn squall(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_squall")).args(args).stdin(Stdio::null()).output().unwrap()
}

/// How many lines `path` has (cheaper than parsing them while a test polls).
fn line_count(path: &Path) -> usize {
    std::fs::read(path).map_or(0, |bytes| bytes.iter().filter(|&&b| b == b'\n').count())
}

/// Guarantee: when the worker that reads a Kafka partition is SIGKILLed mid-stream, the
/// partition resumes from its committed offset: every message is delivered at least once, the
/// offsets end at the partition ends, and the duplicates are what was delivered past the
/// committed offsets — about one commit interval of the stream — plus the trees in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_workers_partitions_resume_from_their_committed_offsets() {
    const FIRST: usize = 200_000;
    const SECOND: usize = 20_000;
    let tansu = Tansu::start();
    tansu.create_topic("events", PARTITIONS);
    produce(&tansu, "events", 0..FIRST);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let cluster = KafkaCluster::deploy(&tansu, "events", 2, dir.path(), &out).await;
    let client = &cluster.client;
    // Mid-stream, with commits under way.
    let committed_sum = async || stored_offsets(client, "ktop", "lines", "events").await.values().sum::<i64>();
    wait_for(
        "the commits are under way",
        Duration::from_secs(60),
        async || committed_sum().await >= 10_000,
        || cluster.ensemble.logs(),
    )
    .await;
    let (started, before) = (Instant::now(), line_count(&out));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rate = (line_count(&out) - before) as f64 / started.elapsed().as_secs_f64();
    let pid = cluster.pid_of_task(0).await;
    let committed = stored_offsets(client, "ktop", "lines", "events").await;
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    let at_kill = delivered(&out);
    eprintln!("killed worker {pid} with {} of {FIRST} messages delivered, at {rate:.0} msg/s", at_kill.len());
    assert!(at_kill.len() < FIRST, "the kill came after the stream");
    let ends = produce(&tansu, "events", FIRST..FIRST + SECOND);
    cluster.wait_until_all_delivered_and_committed(&out, &ends).await;
    let all = delivered(&out);
    let cut = cut_lines(&out);
    assert!(cut.len() <= 1, "one worker was killed, yet {} lines were cut short: {cut:?}", cut.len());
    let unique: BTreeSet<_> = all.iter().copied().collect();
    let duplicates = all.len() - unique.len();
    // A partition resumes at its committed offset, so what it delivers again is what was
    // delivered past that offset before the kill; on top of that, the trees in flight at the
    // kill (at most max_spout_pending per spout task) may fail and be replayed.
    let mut uncommitted = 0;
    for p in 0..PARTITIONS {
        let last = at_kill.iter().filter(|d| d.0 == p).map(|d| d.1 + 1).max().unwrap_or(0);
        uncommitted += (last - committed.get(&p).copied().unwrap_or(0)).max(0);
    }
    let bound = uncommitted + 2 * MAX_SPOUT_PENDING;
    let interval_worth = rate * COMMIT_INTERVAL_MS as f64 / 1000.0;
    eprintln!(
        "{} deliveries, {duplicates} duplicates; {uncommitted} delivered past the commits at the kill; one commit \
         interval holds {interval_worth:.0}",
        all.len()
    );
    assert!(duplicates as i64 <= bound, "{duplicates} duplicates, more than {bound}");
    // The commits kept up: what was delivered past them is about a commit interval's worth of
    // the stream (plus the time it took to read the offsets and the file around the kill).
    let allowed = 3.0 * interval_worth + 2.0 * MAX_SPOUT_PENDING as f64;
    assert!((uncommitted as f64) <= allowed, "{uncommitted} delivered past the commits, more than {allowed:.0}");
    let _ = squall(&["kill", "ktop", "--coordinator", &cluster.target]);
}

/// Guarantee: rebalancing the Kafka spout from 1 to 4 tasks moves its partitions to the new
/// tasks, which resume from the committed offsets: nothing is lost and nothing gets stuck.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rebalancing_the_spout_from_one_to_four_tasks_loses_nothing() {
    const FIRST: usize = 20_000;
    const SECOND: usize = 20_000;
    let tansu = Tansu::start();
    tansu.create_topic("events", PARTITIONS);
    let ends = produce(&tansu, "events", 0..FIRST);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let cluster = KafkaCluster::deploy(&tansu, "events", 1, dir.path(), &out).await;
    cluster.wait_until_all_delivered_and_committed(&out, &ends).await;

    let rebalanced = squall(&["rebalance", "ktop", "--parallelism", "lines=4", "--coordinator", &cluster.target]);
    assert!(rebalanced.status.success(), "{}", String::from_utf8_lossy(&rebalanced.stderr));
    wait_for(
        "the spout runs as four tasks",
        DEADLINE,
        async || {
            let Ok((data, _)) = cluster.client.get_data("/squall/assignments/ktop").await else { return false };
            let assignment: serde_json::Value = serde_json::from_slice(&data).unwrap();
            assignment["layout"][0]["parallelism"] == 4
        },
        || cluster.ensemble.logs(),
    )
    .await;
    let ends = produce(&tansu, "events", FIRST..FIRST + SECOND);
    cluster.wait_until_all_delivered_and_committed(&out, &ends).await;
    // `status` shows each partition's committed offset (and the lag the broker reports).
    let target = cluster.target.clone();
    wait_for(
        "status shows the committed offsets",
        DEADLINE,
        async || {
            let status = squall(&["status", "ktop", "--coordinator", &target]);
            let status = String::from_utf8_lossy(&status.stdout).to_string();
            ends.iter().all(|(p, end)| {
                status.contains(&format!("lines: kafka_committed_offset{{topic=\"events\",partition=\"{p}\"}} = {end}"))
            }) && status.contains("kafka_lag{")
        },
        || String::from_utf8_lossy(&squall(&["status", "ktop", "--coordinator", &cluster.target]).stdout).to_string(),
    )
    .await;
    let _ = squall(&["kill", "ktop", "--coordinator", &cluster.target]);
}
