//! `squall bench kafka`: consume-and-count throughput from a Kafka topic, next to the raw
//! consume rate of a bare rdkafka consumer on the same topic, in the same run.
//!
//! [`kafka`] optionally creates the topic and fills it ([`KafkaOptions::produce`]), then runs,
//! for each round, first the baseline — one `BaseConsumer` assigned every partition from its
//! start, with the fetch settings of the `kafka` spout, polling until it has seen every
//! message up to the partitions' ends — and then Squall: a local run of a `kafka` spout feeding
//! the [`KafkaWork`] (`count`: a `count` bolt keyed by `partition`, that is, consume and count;
//! `wordcount`: `split` (field `value`) → `count` (key `word`, fields grouping)), acking on,
//! timed from its start until the spout has seen `messages` tuple trees acked.
//!
//! The ends come from the producer's delivery reports (last offset + 1) when the command
//! produced the messages itself, otherwise from the brokers' high watermarks. tansu 0.6 reports
//! a high watermark that is the base offset of the last record batch + 1, which is short of the
//! end, so against tansu the topic must be filled by the command (`--produce`).

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde::Serialize;
use squall_operators::{CountBoltConfig, GeneratorConfig, KafkaSpoutConfig, SentenceGenerator, SplitBoltConfig};
use squall_runtime::{Coordination, LocalRun, RunOptions, Topology, TopologyBuilder, TopologyConfig};

use super::broker::{BROKER_TIMEOUT, client_config, metadata_client};

/// The fetch settings the `kafka` spout gives its consumer (`KafkaSpoutConfig`'s consumer in
/// `operators/src/kafka/spout.rs`), which the baseline consumer uses too, so that both read the
/// same way; keep them in step with the spout.
const SPOUT_FETCH_SETTINGS: [(&str, &str); 4] = [
    ("fetch.wait.max.ms", "100"),
    ("queued.min.messages", "20000"),
    ("queued.max.messages.kbytes", "16384"),
    ("fetch.queue.backoff.ms", "10"),
];
/// How long a consumer (the baseline or Squall's spout) may go without progress before the
/// bench gives up on it.
const STALL: Duration = Duration::from_secs(30);
/// How often Squall's spout counts are read while it runs. They change every 100 ms (the
/// runtime's publication interval); this only bounds how late a change is seen.
const WATCH_INTERVAL: Duration = Duration::from_millis(2);
/// The spout's component id in the measured topology.
const SPOUT: &str = "kafka";

/// What `squall bench kafka` measures.
#[derive(Clone, Debug)]
pub struct KafkaOptions {
    /// The bootstrap brokers, `host:port[,host:port...]`.
    pub brokers: String,
    /// The topic to read (and, with `produce`, to create and fill).
    pub topic: String,
    /// Create the topic and produce `messages` messages into it before measuring; otherwise
    /// read the topic as it is, from the low to the high watermarks.
    pub produce: bool,
    /// How many messages to produce (with `produce`).
    pub messages: u64,
    /// The topic's partitions (with `produce`).
    pub partitions: i32,
    /// The largest size of a produced message's value, in bytes: whole words of a sentence up
    /// to this size.
    pub value_size: usize,
    /// How many times the baseline and Squall are each measured, in alternation.
    pub rounds: usize,
    /// What the topology does with each message.
    pub work: KafkaWork,
    /// Tasks of each bolt, `count` and, with `wordcount`, `split` (the spout has one, like the
    /// baseline's one consumer).
    pub bolt_tasks: u32,
    /// The topology's `max_spout_pending` (None: the runtime's default).
    pub max_spout_pending: Option<u32>,
}

/// What Squall's topology does with each message the `kafka` spout emits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KafkaWork {
    /// `count` keyed by `partition` (fields grouping): counts the messages, the work of the
    /// bare consumer too ("consume and count").
    #[default]
    Count,
    /// `split` (field `value`, shuffle) → `count` keyed by `word` (fields grouping): about ten
    /// tuples downstream per message.
    WordCount,
}

impl KafkaOptions {
    /// The names of the [`KafkaWork`]s, as `--work` and the JSON give them.
    pub const WORKS: [&str; 2] = ["count", "wordcount"];
}

impl KafkaWork {
    fn name(self) -> &'static str {
        match self {
            KafkaWork::Count => KafkaOptions::WORKS[0],
            KafkaWork::WordCount => KafkaOptions::WORKS[1],
        }
    }
}

impl FromStr for KafkaWork {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        [KafkaWork::Count, KafkaWork::WordCount]
            .into_iter()
            .find(|work| work.name() == s)
            .with_context(|| format!("unknown work `{s}`: `count` or `wordcount`"))
    }
}

impl fmt::Display for KafkaWork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One round of [`kafka`]: the baseline, then Squall.
#[derive(Clone, Debug, Serialize)]
pub struct KafkaRound {
    /// Messages per second of the bare consumer, from its creation to the last message.
    pub baseline_msgs_per_sec: f64,
    /// Spout tuple trees acked per second, from the run's start to the last ack.
    pub squall_msgs_per_sec: f64,
    /// Median complete latency of the spout's tuples, in ms.
    pub complete_p50_ms: f64,
    /// 99th percentile complete latency, in ms.
    pub complete_p99_ms: f64,
    /// Spout tuple trees that failed (and were replayed).
    pub failed: u64,
}

/// The result of [`kafka`], as `--json` writes it: the baseline's and Squall's median rounds.
#[derive(Clone, Debug, Serialize)]
pub struct KafkaReport {
    /// The topic read.
    pub topic: String,
    /// Messages read in each measurement.
    pub messages: u64,
    /// The topic's partitions.
    pub partitions: usize,
    /// What the topology did with each message.
    pub work: KafkaWork,
    /// Mean size of a message's value, in bytes (when the bench produced them).
    pub value_bytes: Option<f64>,
    /// Messages per second of the producer that filled the topic (when the bench did).
    pub produced_msgs_per_sec: Option<f64>,
    /// Tasks of each bolt.
    pub bolt_tasks: u32,
    /// The topology's `max_spout_pending`.
    pub max_spout_pending: u32,
    /// The median of the rounds' baseline rates.
    pub baseline_msgs_per_sec: f64,
    /// The median of the rounds' Squall rates.
    pub squall_msgs_per_sec: f64,
    /// `squall_msgs_per_sec / baseline_msgs_per_sec`.
    pub ratio: f64,
    /// Complete latency p50 of the round with the median Squall rate, in ms.
    pub complete_p50_ms: f64,
    /// Complete latency p99 of that round, in ms.
    pub complete_p99_ms: f64,
    /// Every round, in order.
    pub rounds: Vec<KafkaRound>,
}

/// Measures the bare consumer and Squall on `options.topic`, `options.rounds` times each.
/// `connect` opens a coordination session for a topology name: the `kafka` spout keeps its
/// offsets in the znode store. Each Squall run is a topology of its own name, so it finds no
/// stored offsets and starts at the partitions' beginnings.
pub fn kafka(
    options: &KafkaOptions,
    connect: &dyn Fn(&str) -> anyhow::Result<Coordination>,
) -> anyhow::Result<KafkaReport> {
    anyhow::ensure!(options.rounds > 0, "--rounds must be at least 1");
    anyhow::ensure!(options.bolt_tasks > 0, "--bolt-tasks must be at least 1");
    let (ranges, produced) = if options.produce {
        anyhow::ensure!(options.messages > 0, "--messages must be at least 1");
        anyhow::ensure!(options.partitions > 0, "--partitions must be at least 1");
        anyhow::ensure!(options.value_size > 0, "--value-size must be at least 1");
        create_topic(&options.brokers, &options.topic, options.partitions)?;
        let produced = produce(options)?;
        (produced.ends.iter().map(|&end| (0, end)).collect(), Some(produced))
    } else {
        (watermarks(&options.brokers, &options.topic)?, None)
    };

    let mut config = TopologyConfig::default();
    if let Some(max) = options.max_spout_pending {
        config.max_spout_pending = max;
    }
    let mut rounds = Vec::new();
    let mut messages = None;
    for round in 0..options.rounds {
        let baseline = baseline(&options.brokers, &options.topic, &ranges)?;
        if let Some(produced) = &produced {
            anyhow::ensure!(
                baseline.messages == produced.messages,
                "the bare consumer read {} messages up to the ends where {} were produced",
                baseline.messages,
                produced.messages
            );
        }
        let n = *messages.get_or_insert(baseline.messages);
        anyhow::ensure!(n > 0, "topic {} has no messages: fill it first (--produce)", options.topic);
        let name = format!("bench-kafka-{}-{round}", std::process::id());
        let topology = topology(&name, options, config.clone())?;
        let squall = squall(&topology, n, connect(&name)?)?;
        rounds.push(KafkaRound {
            baseline_msgs_per_sec: n as f64 / baseline.elapsed.as_secs_f64(),
            squall_msgs_per_sec: n as f64 / squall.elapsed.as_secs_f64(),
            complete_p50_ms: squall.complete_p50_ms,
            complete_p99_ms: squall.complete_p99_ms,
            failed: squall.failed,
        });
    }

    let baseline = median_by(&rounds, |r| r.baseline_msgs_per_sec).baseline_msgs_per_sec;
    let median = median_by(&rounds, |r| r.squall_msgs_per_sec);
    Ok(KafkaReport {
        topic: options.topic.clone(),
        messages: messages.unwrap_or(0),
        partitions: ranges.len(),
        work: options.work,
        value_bytes: produced.as_ref().map(|p| p.value_bytes as f64 / p.messages as f64),
        produced_msgs_per_sec: produced.as_ref().map(|p| p.messages as f64 / p.elapsed.as_secs_f64()),
        bolt_tasks: options.bolt_tasks,
        max_spout_pending: config.max_spout_pending,
        baseline_msgs_per_sec: baseline,
        squall_msgs_per_sec: median.squall_msgs_per_sec,
        ratio: median.squall_msgs_per_sec / baseline,
        complete_p50_ms: median.complete_p50_ms,
        complete_p99_ms: median.complete_p99_ms,
        rounds,
    })
}

/// The round whose `key` is the median (the lower of the two middle ones for an even count).
fn median_by(rounds: &[KafkaRound], key: impl Fn(&KafkaRound) -> f64) -> &KafkaRound {
    let mut sorted: Vec<&KafkaRound> = rounds.iter().collect();
    sorted.sort_by(|a, b| key(a).total_cmp(&key(b)));
    sorted[(sorted.len() - 1) / 2]
}

/// The partition count of `topic` in the metadata, once every partition has a leader; `None`
/// while the topic is unknown or some partition has none.
fn ready_partitions(client: &BaseConsumer, topic: &str) -> Option<usize> {
    let metadata = client.fetch_metadata(Some(topic), Duration::from_secs(1)).ok()?;
    let described = metadata.topics().iter().find(|t| t.name() == topic && t.error().is_none())?;
    let partitions = described.partitions();
    let led = partitions.iter().all(|p| p.error().is_none() && p.leader() >= 0);
    (led && !partitions.is_empty()).then_some(partitions.len())
}

/// Creates `topic` with `partitions` partitions and waits until the metadata shows each with a
/// leader. A topic that exists already is an error: its earlier messages would be counted
/// (which is why this is not [`super::broker::create_topic`], which leaves that to its callers' fresh
/// names and runs on an async runtime).
fn create_topic(brokers: &str, topic: &str, partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> =
        client_config(brokers).create().context("cannot create a Kafka admin client")?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let options = AdminOptions::new().operation_timeout(Some(BROKER_TIMEOUT));
    let results = futures::executor::block_on(admin.create_topics([&new], &options))
        .with_context(|| format!("cannot create topic {topic} on {brokers}"))?;
    for result in results {
        match result {
            Ok(_) => {}
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => anyhow::bail!(
                "topic {topic} exists already on {brokers}: --produce needs a new topic (or leave --produce out to \
                 read the topic as it is)"
            ),
            Err((_, code)) => anyhow::bail!("cannot create topic {topic} on {brokers}: {code}"),
        }
    }
    let client = metadata_client(brokers)?;
    let deadline = Instant::now() + BROKER_TIMEOUT;
    while ready_partitions(&client, topic) != Some(partitions as usize) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "topic {topic} was created but its {partitions} partitions have no leader after {BROKER_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Each partition's range to read, `(first offset, end)`, from the brokers' watermarks.
fn watermarks(brokers: &str, topic: &str) -> anyhow::Result<Vec<(i64, i64)>> {
    let client = metadata_client(brokers)?;
    let partitions = ready_partitions(&client, topic).with_context(|| {
        format!("topic {topic} is not on {brokers} (or a partition has no leader): create and fill it with --produce")
    })?;
    (0..partitions as i32)
        .map(|p| {
            client
                .fetch_watermarks(topic, p, BROKER_TIMEOUT)
                .with_context(|| format!("cannot read the watermarks of topic {topic} partition {p}"))
        })
        .collect()
}

/// What the producer left in the topic.
struct Produced {
    messages: u64,
    value_bytes: u64,
    /// Each partition's end: its last delivered offset + 1 (0 when it got nothing).
    ends: Vec<i64>,
    elapsed: Duration,
}

/// Delivery reports, folded into each partition's end.
struct Deliveries {
    ends: Mutex<Vec<i64>>,
    failures: Mutex<(u64, Option<String>)>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(m) => {
                let mut ends = self.ends.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(end) = usize::try_from(m.partition()).ok().and_then(|p| ends.get_mut(p)) {
                    *end = (*end).max(m.offset() + 1);
                }
            }
            Err((e, m)) => {
                let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
                failures.0 += 1;
                failures.1.get_or_insert_with(|| format!("partition {}: {e}", m.partition()));
            }
        }
    }
}

/// Produces `options.messages` sentences round-robin over the partitions with an idempotent
/// producer (which keeps each partition's order and writes each message once), and returns the
/// partitions' ends from the delivery reports.
fn produce(options: &KafkaOptions) -> anyhow::Result<Produced> {
    let partitions = options.partitions;
    let context = Deliveries { ends: Mutex::new(vec![0; partitions as usize]), failures: Mutex::new((0, None)) };
    let producer: BaseProducer<Deliveries> = client_config(&options.brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "20")
        .set("message.timeout.ms", "60000")
        .create_with_context(context)
        .context("cannot create a Kafka producer")?;
    let sentences = Sentences::new(options.value_size);
    let mut value = String::new();
    let mut value_bytes = 0;
    let started = Instant::now();
    for i in 0..options.messages {
        sentences.write(i, &mut value);
        value_bytes += value.len() as u64;
        let partition = (i % partitions as u64) as i32;
        let mut record: BaseRecord<(), str> =
            BaseRecord::to(&options.topic).payload(value.as_str()).partition(partition);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                // The local queue is full: serving delivery reports frees it.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => anyhow::bail!("cannot produce to topic {}: {e}", options.topic),
            }
        }
        if i % 1000 == 999 {
            producer.poll(Duration::ZERO);
        }
    }
    producer
        .flush(Duration::from_secs(120))
        .with_context(|| format!("cannot flush the messages to {}", options.topic))?;
    let elapsed = started.elapsed();
    let context = producer.context();
    let (failed, first) = &*context.failures.lock().unwrap_or_else(|e| e.into_inner());
    anyhow::ensure!(
        *failed == 0,
        "{failed} of {} messages were not delivered, the first: {}",
        options.messages,
        first.as_deref().unwrap_or("?")
    );
    let ends = context.ends.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Ok(Produced { messages: options.messages, value_bytes, ends, elapsed })
}

/// The produced values: sentences of the `generator` spout's pseudo-words (a vocabulary of
/// 1,000), cut after the last whole word that fits `value_size` bytes.
struct Sentences {
    generator: SentenceGenerator,
    value_size: usize,
}

impl Sentences {
    fn new(value_size: usize) -> Self {
        // Words have 3 to 10 letters: this many always fill `value_size` bytes.
        let words = (value_size / 4 + 1).min(10_000) as u32;
        let config = GeneratorConfig { words, vocabulary: 1000, ..GeneratorConfig::default() };
        Sentences { generator: SentenceGenerator::new(&config), value_size }
    }

    fn write(&self, seq: u64, out: &mut String) {
        self.generator.sentence(0, seq, out);
        if out.len() > self.value_size {
            // Words are ASCII, so any byte index is a char boundary; at least one word stays.
            let cut = out[..=self.value_size].rfind(' ').unwrap_or_else(|| out.find(' ').unwrap_or(out.len()));
            out.truncate(cut);
        }
    }
}

/// How long the bare consumer took.
struct Baseline {
    messages: u64,
    elapsed: Duration,
}

/// Reads every partition's range with one bare `BaseConsumer` (manual assignment, no group
/// joined, the spout's fetch settings), counting messages, and times it from the consumer's
/// creation to the last message.
fn baseline(brokers: &str, topic: &str, ranges: &[(i64, i64)]) -> anyhow::Result<Baseline> {
    let started = Instant::now();
    let mut config = client_config(brokers);
    config
        .set("group.id", "squall-bench-kafka-baseline")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "error");
    for (name, value) in SPOUT_FETCH_SETTINGS {
        config.set(name, value);
    }
    let consumer: BaseConsumer = config.create().context("cannot create the baseline consumer")?;
    let mut assignment = TopicPartitionList::new();
    let mut left = 0;
    for (p, &(start, end)) in ranges.iter().enumerate() {
        if start < end {
            assignment.add_partition_offset(topic, p as i32, Offset::Offset(start))?;
            left += 1;
        }
    }
    consumer.assign(&assignment).with_context(|| format!("cannot assign the partitions of {topic}"))?;

    let mut done = vec![false; ranges.len()];
    let (mut messages, mut bytes) = (0u64, 0usize);
    // Since when no message has come: read only when a poll comes back empty, so the clock is
    // not read once per message.
    let mut idle_since = None;
    while left > 0 {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                idle_since = None;
                let p = m.partition() as usize;
                let Some(&(_, end)) = ranges.get(p) else { continue };
                if m.offset() < end {
                    messages += 1;
                    bytes += m.payload().map_or(0, <[u8]>::len);
                    if m.offset() + 1 >= end && !done[p] {
                        done[p] = true;
                        left -= 1;
                    }
                }
            }
            Some(Err(e)) => anyhow::bail!("the baseline consumer of {topic}: {e}"),
            None => {
                let since = *idle_since.get_or_insert_with(Instant::now);
                let behind: Vec<usize> = (0..ranges.len()).filter(|&p| !done[p] && ranges[p].0 < ranges[p].1).collect();
                anyhow::ensure!(
                    since.elapsed() < STALL,
                    "the baseline consumer got no message for {STALL:?} with {messages} read; partitions {behind:?} \
                     are short of their ends"
                );
            }
        }
    }
    let elapsed = started.elapsed();
    std::hint::black_box(bytes);
    Ok(Baseline { messages, elapsed })
}

/// `kafka` spout (one task) → the work: `count` (key `partition`, fields grouping), or `split`
/// (field `value`) → `count` (key `word`, fields grouping).
fn topology(name: &str, options: &KafkaOptions, config: TopologyConfig) -> anyhow::Result<Topology> {
    let spout = KafkaSpoutConfig::new(options.brokers.clone(), [options.topic.clone()]);
    spout.validate().map_err(|e| anyhow::anyhow!("the kafka spout: {e}"))?;
    let mut builder = TopologyBuilder::new(name);
    builder.config(config);
    builder.spout(SPOUT, 1, Arc::new(spout));
    let tasks = options.bolt_tasks;
    match options.work {
        KafkaWork::Count => {
            let count = CountBoltConfig { key: "partition".into() };
            builder.bolt("count", tasks, Arc::new(count)).fields(SPOUT, &["partition"]);
        }
        KafkaWork::WordCount => {
            let split = SplitBoltConfig { field: "value".into(), ..SplitBoltConfig::default() };
            builder.bolt("split", tasks, Arc::new(split)).shuffle(SPOUT);
            builder.bolt("count", tasks, Arc::new(CountBoltConfig::default())).fields("split", &["word"]);
        }
    }
    Ok(builder.build()?)
}

/// What one Squall run measured.
struct SquallRun {
    elapsed: Duration,
    complete_p50_ms: f64,
    complete_p99_ms: f64,
    failed: u64,
}

/// Runs `topology` until its spout has `messages` tuple trees acked, then stops it.
///
/// The spout's counts are published every 100 ms, so the moment of the last ack is known only
/// to within that: the time taken is `messages` at the rate up to the last publication before
/// it (acked / time since the start), which, start-up included, is never above the rate of the
/// last stretch; the first publication is the end itself only when the run is that short.
fn squall(topology: &Topology, messages: u64, coordination: Coordination) -> anyhow::Result<SquallRun> {
    let started = Instant::now();
    let run = LocalRun::start(topology, RunOptions { duration: None, coordination: Some(coordination) })?;
    let spout = run.metrics().component(SPOUT).context("the topology has no spout to watch")?.clone();
    // The last change seen: (time since the start, acked).
    let mut last = (Duration::ZERO, 0);
    let outcome = loop {
        std::thread::sleep(WATCH_INTERVAL);
        let stats = spout.snapshot();
        let now = started.elapsed();
        if stats.acked >= messages {
            let (at, acked) = last;
            break Ok(if acked > 0 { at.mul_f64(messages as f64 / acked as f64) } else { now });
        }
        if stats.acked != last.1 {
            last = (now, stats.acked);
        } else if now - last.0 > STALL {
            let errors: Vec<_> = stats.last_errors.iter().cloned().collect();
            break Err(anyhow::anyhow!(
                "Squall's spout had {} of {messages} messages acked and no more for {STALL:?}; its last errors: {errors:?}",
                stats.acked
            ));
        }
    };
    run.stopper().stop();
    let report = run.wait();
    let elapsed = outcome?;
    let stats = &report.component(SPOUT).context("the run reported no spout")?.stats;
    let latency = &stats.complete_latency_us;
    Ok(SquallRun {
        elapsed,
        complete_p50_ms: latency.value_at_quantile(0.5) as f64 / 1e3,
        complete_p99_ms: latency.value_at_quantile(0.99) as f64 / 1e3,
        failed: stats.failed,
    })
}

impl fmt::Display for KafkaReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "topic {}: {} messages in {} partitions", self.topic, self.messages, self.partitions)?;
        if let (Some(bytes), Some(rate)) = (self.value_bytes, self.produced_msgs_per_sec) {
            write!(f, ", values of {bytes:.0} B on average, produced at {rate:.0} msg/s")?;
        }
        writeln!(f)?;
        let topology = match self.work {
            KafkaWork::Count => format!("count ({}, key partition, fields grouping)", self.bolt_tasks),
            KafkaWork::WordCount => {
                format!("split ({0}) -> count ({0}, key word, fields grouping)", self.bolt_tasks)
            }
        };
        writeln!(
            f,
            "Squall, work {}: kafka spout (1 task) -> {topology}, acking on, max_spout_pending {}",
            self.work, self.max_spout_pending
        )?;
        writeln!(
            f,
            "{:<7} {:>16} {:>14} {:>12} {:>13} {:>13} {:>7}",
            "round", "bare rdkafka/s", "Squall msg/s", "Squall/bare", "complete p50", "complete p99", "failed"
        )?;
        let mut rows: Vec<(String, &KafkaRound)> =
            self.rounds.iter().enumerate().map(|(i, r)| ((i + 1).to_string(), r)).collect();
        let median = KafkaRound {
            baseline_msgs_per_sec: self.baseline_msgs_per_sec,
            squall_msgs_per_sec: self.squall_msgs_per_sec,
            complete_p50_ms: self.complete_p50_ms,
            complete_p99_ms: self.complete_p99_ms,
            failed: median_by(&self.rounds, |r| r.squall_msgs_per_sec).failed,
        };
        if self.rounds.len() > 1 {
            rows.push(("median".into(), &median));
        }
        for (name, r) in rows {
            writeln!(
                f,
                "{name:<7} {:>16.0} {:>14.0} {:>12.2} {:>10.2} ms {:>10.2} ms {:>7}",
                r.baseline_msgs_per_sec,
                r.squall_msgs_per_sec,
                r.squall_msgs_per_sec / r.baseline_msgs_per_sec,
                r.complete_p50_ms,
                r.complete_p99_ms,
                r.failed
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_whole_words_up_to_the_size() {
        for size in [1, 5, 20, 80, 300] {
            let sentences = Sentences::new(size);
            let mut value = String::new();
            for seq in 0..200 {
                sentences.write(seq, &mut value);
                assert!(!value.is_empty() && !value.starts_with(' ') && !value.ends_with(' '), "{value:?}");
                // Only a single word longer than the size is let through.
                assert!(value.len() <= size || !value.contains(' '), "{size}: {value:?}");
                assert!(value.len() + 11 > size, "{size}: {value:?} leaves room for another word");
            }
        }
    }

    #[test]
    fn works_are_named_as_the_command_line_and_the_json_name_them() {
        for (name, work) in KafkaOptions::WORKS.into_iter().zip([KafkaWork::Count, KafkaWork::WordCount]) {
            assert_eq!(name.parse::<KafkaWork>().unwrap(), work);
            assert_eq!(work.to_string(), name);
            assert_eq!(serde_json::to_value(work).unwrap(), name);
        }
        let err = "words".parse::<KafkaWork>().unwrap_err().to_string();
        assert!(err.contains("`words`") && err.contains("`wordcount`"), "{err}");
    }

    #[test]
    fn the_median_round_is_a_real_round() {
        let round = |rate| KafkaRound {
            baseline_msgs_per_sec: 1.0,
            squall_msgs_per_sec: rate,
            complete_p50_ms: rate,
            complete_p99_ms: rate,
            failed: 0,
        };
        let rounds = [round(3.0), round(1.0), round(2.0), round(5.0)];
        assert_eq!(median_by(&rounds, |r| r.squall_msgs_per_sec).complete_p50_ms, 2.0);
        assert_eq!(median_by(&rounds[..3], |r| r.squall_msgs_per_sec).complete_p50_ms, 2.0);
    }
}
