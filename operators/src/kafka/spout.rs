//! The `kafka` spout: messages of Kafka topics, at least once, with offsets in the znode store.
//!
//! ```yaml
//! spouts:
//!   - id: events
//!     kind: kafka
//!     parallelism: 2
//!     args: { brokers: "127.0.0.1:9092", topic: [clicks, views], start: earliest, commit_interval: 1s }
//! ```
//!
//! Each tuple has the fields `topic, partition, offset, key, value`; key and value are strings
//! (invalid UTF-8 replaced with U+FFFD) or, with `format: bytes`, bytes; a missing key or
//! value is null. The message id is the partition's slot in the task (high 16 bits) and the
//! offset (low 48 bits).
//!
//! **Partitions.** The tasks divide the partitions among themselves without a consumer group:
//! with topics sorted by name, task `i` of `n` reads partition `p` of the `k`-th topic when
//! `(k + p) mod n = i`. The rule never moves a partition when a topic grows, so partitions found
//! by the periodic metadata refresh (`metadata_refresh`) are simply added to a task. Each task
//! `assign()`s its partitions itself, each with a queue of its own (so an error names its
//! partition), starting at the offset stored in the znode store or, when none is, at `start`.
//! Before it reads a partition it claims the partition's znode: it writes it at once (the
//! stored offset again, or the offset `start` resolves to), so that the znode's version moves
//! past anything an earlier owner read.
//!
//! **At least once.** A message stays in the task's memory from its emission until its tuple
//! tree is acked; a failed one is emitted again, as it was, before any new message (no seek).
//! The task commits, per partition, the first offset not yet acked with a versioned write, at
//! most every `commit_interval` and when the topology is deactivated or stops. The periodic
//! commits are written in the background, one round at a time (the next starts once the store
//! answered every write of the last), so emitting goes on while the store is slow or electing
//! a leader; the commits of a deactivation and of the end are waited for. A restarted task or the task that takes a partition over reads from there: nothing
//! acked is read twice unless it was acked after the last commit, and nothing unacked is lost.
//! When the write finds that someone else changed the znode, the partition now belongs to
//! another task (which claimed it): this task reports it, stops reading it and forgets its
//! messages; it never overwrites the other's offset.
//!
//! **Offsets that are gone.** The consumer runs with `auto.offset.reset=error`: a stored offset
//! that retention removed (or that is past the end of a recreated topic) stops that partition
//! with an error naming the topic, partition and offset; the other partitions go on. The spout
//! never skips messages by itself.
//!
//! **Reading.** Each call of `next_tuple` emits up to 64 messages, read from a partition's queue
//! in one go, and never more than the room the topology's `max_spout_pending` leaves (nor than
//! the spout's `max_pending`): the tuple trees in flight stay within both.
//!
//! **`stop_at_end`.** The task reads each partition up to the end it had when the task started
//! reading it (the high watermark; brokers that report it as the start of the last batch plus
//! one, as tansu does, make that end earlier than the last message), and is done when every
//! partition is there, every message is acked and every offset committed. Without it the spout
//! runs until the topology stops.

use std::collections::VecDeque;
use std::ffi::CString;
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::bindings as rdsys;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};
use rdkafka::{Offset, TopicPartitionList};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Deserializer};
use smol_str::SmolStr;
use squall_runtime::cluster::paths;
use squall_runtime::{
    BoxError, Coordination, MessageId, Spout, SpoutFactory, SpoutOutput, StreamDecl, TaskContext, Value, Values,
};

use super::offsets::{Commit, OffsetZnode, PartitionProgress, PendingMessage};
use super::{
    ClientSettings, ErrorLog, check_brokers, check_reserved, check_topic, client_config, creation_error, describe,
};

/// The fields of every tuple, in order.
pub const FIELDS: [&str; 5] = ["topic", "partition", "offset", "key", "value"];

/// Message ids: the partition's slot in the high bits, the offset in the low ones.
const OFFSET_BITS: u32 = 48;
const OFFSET_MASK: u64 = (1 << OFFSET_BITS) - 1;
/// The most partitions one task can read.
const MAX_SLOTS: usize = 1 << (64 - OFFSET_BITS);

/// The most tuples one `next_tuple` emits. The executor bounds the trees in flight
/// (`max_spout_pending`) only between calls, so a call emits no more than the room the
/// topology's setting leaves; within that, a few dozen per call pay the call, the clock
/// read and the checks once for all of them.
const BATCH: usize = 64;
/// How often `next_tuple` serves the consumer's own queue and looks at the timers.
const HOUSEKEEPING_EVERY: Duration = Duration::from_millis(5);
/// How often a task publishes its partitions' offsets and lag.
const LAG_EVERY: Duration = Duration::from_secs(2);
/// The longest a metadata or watermark request may take.
const BROKER_TIMEOUT: Duration = Duration::from_secs(5);
/// How soon a task tries again to start partitions after the store or the brokers failed it
/// (at most), and to commit after the store failed it (at least: the store is likely away, and
/// each attempt waits up to 5 s for it in the background).
const RETRY: Duration = Duration::from_secs(5);

/// The librdkafka settings the spout makes itself, and why they cannot be changed.
const RESERVED: &[(&str, &str)] = &[
    ("bootstrap.servers", "use the spout's `brokers` argument"),
    ("enable.auto.commit", "the spout keeps its offsets in the znode store, never in Kafka"),
    ("enable.auto.offset.store", "the spout keeps its offsets in the znode store, never in Kafka"),
    ("auto.offset.reset", "an offset that is gone is reported and stops its partition, never skipped"),
    ("enable.partition.eof", "the spout sets it for `stop_at_end`"),
];

/// Where a partition without a stored offset starts.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StartAt {
    /// At its first message still in the log.
    #[default]
    Earliest,
    /// After its last message: only messages produced from then on.
    Latest,
}

/// How the spout emits a message's key and value.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ValueFormat {
    /// As strings, invalid UTF-8 replaced with U+FFFD (what `split`, `filter` and `map` read).
    #[default]
    String,
    /// As the bytes they are.
    Bytes,
}

/// The arguments of the `kafka` spout.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSpoutConfig {
    /// The bootstrap brokers, `host:port[,host:port...]` (required).
    #[serde(deserialize_with = "super::brokers")]
    pub brokers: String,
    /// The topic, or a list of topics, to read (required).
    #[serde(deserialize_with = "topics")]
    pub topic: Vec<String>,
    /// Where a partition without a stored offset starts (default earliest).
    #[serde(default)]
    pub start: StartAt,
    /// How often each task commits its partitions' offsets (default 1s).
    #[serde(default = "default_commit_interval", deserialize_with = "positive_duration")]
    pub commit_interval: Duration,
    /// How many messages a task may have emitted and not yet acked before it stops reading new
    /// ones (default 10,000).
    #[serde(default = "default_max_pending", deserialize_with = "max_pending")]
    pub max_pending: usize,
    /// How often each task looks for new partitions and topics (default 10s).
    #[serde(default = "default_metadata_refresh", deserialize_with = "positive_duration")]
    pub metadata_refresh: Duration,
    /// How keys and values are emitted (default string).
    #[serde(default)]
    pub format: ValueFormat,
    /// Whether each task is done once it has read every partition up to the end it saw at
    /// start, and everything is acked and committed (default false: run until stopped).
    #[serde(default)]
    pub stop_at_end: bool,
    /// librdkafka consumer settings, passed on as they are (default none).
    #[serde(default, deserialize_with = "settings")]
    pub rdkafka: ClientSettings,
}

fn default_commit_interval() -> Duration {
    Duration::from_secs(1)
}

fn default_max_pending() -> usize {
    10_000
}

fn default_metadata_refresh() -> Duration {
    Duration::from_secs(10)
}

fn topics<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged, expecting = "a topic name or a list of topic names")]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    let topics = match OneOrMany::deserialize(d)? {
        OneOrMany::One(topic) => vec![topic],
        OneOrMany::Many(topics) => topics,
    };
    check_topics(&topics).map_err(serde::de::Error::custom)?;
    Ok(topics)
}

fn check_topics(topics: &[String]) -> Result<(), String> {
    if topics.is_empty() {
        return Err("`topic` must name at least one topic".into());
    }
    for (i, topic) in topics.iter().enumerate() {
        check_topic(topic)?;
        if topics[..i].contains(topic) {
            return Err(format!("`topic` lists `{topic}` twice"));
        }
    }
    Ok(())
}

fn positive_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let duration: Duration = humantime_serde::deserialize(d)?;
    if duration.is_zero() {
        return Err(serde::de::Error::custom("must be longer than 0"));
    }
    Ok(duration)
}

fn max_pending<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    match usize::deserialize(d)? {
        0 => Err(serde::de::Error::custom("`max_pending` must be at least 1")),
        n => Ok(n),
    }
}

fn settings<'de, D: Deserializer<'de>>(d: D) -> Result<ClientSettings, D::Error> {
    let settings = ClientSettings::deserialize(d)?;
    check_reserved(&settings, RESERVED).map_err(serde::de::Error::custom)?;
    Ok(settings)
}

impl KafkaSpoutConfig {
    /// A spout reading `topics` from `brokers`, every other argument at its default.
    pub fn new(brokers: impl Into<String>, topics: impl IntoIterator<Item = impl Into<String>>) -> Self {
        KafkaSpoutConfig {
            brokers: brokers.into(),
            topic: topics.into_iter().map(Into::into).collect(),
            start: StartAt::default(),
            commit_interval: default_commit_interval(),
            max_pending: default_max_pending(),
            metadata_refresh: default_metadata_refresh(),
            format: ValueFormat::default(),
            stop_at_end: false,
            rdkafka: ClientSettings::new(),
        }
    }

    /// Checks the arguments; a config read from a topology file has passed these checks already.
    pub fn validate(&self) -> Result<(), String> {
        check_brokers(&self.brokers)?;
        check_topics(&self.topic)?;
        if self.commit_interval.is_zero() || self.metadata_refresh.is_zero() {
            return Err("`commit_interval` and `metadata_refresh` must be longer than 0".into());
        }
        if self.max_pending == 0 {
            return Err("`max_pending` must be at least 1".into());
        }
        check_reserved(&self.rdkafka, RESERVED)
    }

    /// The consumer of task `ctx`: no group is joined, the group id only satisfies librdkafka.
    fn consumer(&self, ctx: &TaskContext) -> Result<BaseConsumer, String> {
        let group = format!("squall-{}-{}", ctx.topology, ctx.component);
        let own = [
            ("group.id", group.clone()),
            ("client.id", format!("{group}-{}", ctx.task_index)),
            ("enable.auto.commit", "false".into()),
            ("enable.auto.offset.store", "false".into()),
            ("auto.offset.reset", "error".into()),
            ("enable.partition.eof", self.stop_at_end.to_string()),
            // Low latency when a partition is idle, bounded memory per partition queue, and no
            // one-second pause after a queue was full.
            ("fetch.wait.max.ms", "100".into()),
            ("queued.min.messages", "20000".into()),
            ("queued.max.messages.kbytes", "16384".into()),
            ("fetch.queue.backoff.ms", "10".into()),
            // Connect to the brokers as the consumer is created, not when the first request
            // needs one: librdkafka holds a connection asked for within `reconnect.backoff.ms`
            // / 2 (50 ms) of the last, so the task's first metadata request waited ~50 ms.
            ("enable.sparse.connections", "false".into()),
        ];
        client_config(&self.brokers, &own, &self.rdkafka).create().map_err(|e| creation_error("kafka spout", e))
    }
}

impl SpoutFactory for KafkaSpoutConfig {
    fn declare(&self) -> Vec<StreamDecl> {
        vec![StreamDecl::default_stream(FIELDS)]
    }

    fn create(&self, ctx: &TaskContext) -> Result<Box<dyn Spout>, BoxError> {
        self.validate()?;
        let coordination = ctx.coordination().map_err(|_| {
            "the kafka spout keeps its offsets in the znode store, and this run has none \
             (`squall local` and cluster workers provide one)"
        })?;
        let consumer = self.consumer(ctx)?;
        Ok(Box::new(KafkaSpout::new(self, ctx, Arc::new(consumer), coordination.clone())))
    }
}

/// Where a partition's reading stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReadState {
    /// Fetching messages.
    Reading,
    /// At the end it had when the task started it (`stop_at_end`).
    AtEnd,
    /// Its offset is no longer in the log: stopped with an error.
    Stopped,
    /// Another task commits its offsets now: forgotten by this one.
    Lost,
}

/// One partition a task reads.
struct Partition {
    topic: SmolStr,
    partition: i32,
    state: ReadState,
    /// Its own message queue, while `Reading`.
    queue: Option<PartitionQueue>,
    progress: PartitionProgress,
    znode: OffsetZnode,
    /// With `stop_at_end`: the first offset not to read.
    end: Option<i64>,
    /// The last high watermark known: read when the partition started, then the one of the
    /// consumer's last fetch response.
    high_watermark: Option<i64>,
}

impl Partition {
    /// Whether its offset znode holds everything acked.
    fn committed(&self) -> bool {
        self.progress.commit_point().is_none_or(|point| self.znode.committed() == Some(point))
    }
}

/// What reading a partition's queue gave.
enum Polled {
    Message { offset: i64, key: Value, value: Value },
    Error(KafkaError),
}

/// A partition's own message queue, split off the consumer's, read many messages at a time.
///
/// rdkafka's `PartitionQueue::poll` gives one message per call, and each call reads the clock
/// three times, wraps the message in an event behind a new `Arc` and dispatches on the event's
/// type; `rd_kafka_consume_batch_queue` does the clock reads and the dispatch once per batch and
/// allocates nothing, which takes about a third off the spout's CPU time per message. rdkafka
/// has no safe binding for it, hence this small wrapper: it owns its queue handle, and hands out
/// only owned copies of what it reads.
struct PartitionQueue {
    queue: NonNull<rdsys::rd_kafka_queue_t>,
    /// The client the queue belongs to, which must outlive it: released after `drop` destroyed
    /// the queue.
    _consumer: Arc<BaseConsumer>,
}

// SAFETY: librdkafka's queue handles may be used from any thread (every operation takes the
// queue's lock); this one is only ever used by the thread that owns the spout.
unsafe impl Send for PartitionQueue {}

impl PartitionQueue {
    /// The queue of `topic` partition `partition`, no longer forwarded to the consumer's own
    /// queue (what rdkafka's `split_partition_queue` does); `None` if librdkafka has none.
    fn split(consumer: &Arc<BaseConsumer>, topic: &str, partition: i32) -> Option<Self> {
        let topic = CString::new(topic).ok()?;
        // SAFETY: the client handle is valid while `consumer` is, and the topic a C string;
        // the returned handle is ours to destroy.
        let queue =
            unsafe { rdsys::rd_kafka_queue_get_partition(consumer.client().native_ptr(), topic.as_ptr(), partition) };
        let queue = NonNull::new(queue)?;
        // SAFETY: `queue` is a valid handle; a null destination stops the forwarding.
        unsafe { rdsys::rd_kafka_queue_forward(queue.as_ptr(), std::ptr::null_mut()) };
        Some(PartitionQueue { queue, _consumer: consumer.clone() })
    }

    /// Appends to `polled` up to `max` (at most [`BATCH`]) messages or errors the queue holds
    /// now, in order, without waiting.
    fn read(&self, max: usize, format: ValueFormat, polled: &mut Vec<Polled>) {
        let mut messages = [std::ptr::null_mut::<rdsys::rd_kafka_message_t>(); BATCH];
        let max = max.min(BATCH);
        // SAFETY: `queue` is a valid handle and `messages` has room for `max` pointers.
        let n = unsafe { rdsys::rd_kafka_consume_batch_queue(self.queue.as_ptr(), 0, messages.as_mut_ptr(), max) };
        for &message in &messages[..usize::try_from(n).unwrap_or(0).min(max)] {
            // SAFETY: librdkafka filled the first `n` slots with valid messages, which are ours
            // until destroyed below; nothing borrowed from them outlives this iteration.
            unsafe {
                polled.push(Self::copy(&*message, format));
                rdsys::rd_kafka_message_destroy(message);
            }
        }
    }

    /// An owned copy of `message`, or its error as rdkafka reports it.
    ///
    /// # Safety
    /// `message` must be a message librdkafka returned and has not destroyed.
    unsafe fn copy(message: &rdsys::rd_kafka_message_t, format: ValueFormat) -> Polled {
        match message.err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR => {}
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__PARTITION_EOF => {
                return Polled::Error(KafkaError::PartitionEOF(message.partition));
            }
            code => return Polled::Error(KafkaError::MessageConsumption(code.into())),
        }
        // SAFETY (both): a non-null pointer of a message is valid for its length while the
        // message lives.
        let bytes = |data: *mut std::ffi::c_void, len: usize| {
            (!data.is_null()).then(|| unsafe { std::slice::from_raw_parts(data as *const u8, len) })
        };
        Polled::Message {
            offset: message.offset,
            key: convert(bytes(message.key, message.key_len), format),
            value: convert(bytes(message.payload, message.len), format),
        }
    }
}

impl Drop for PartitionQueue {
    fn drop(&mut self) {
        // SAFETY: the handle is valid and destroyed once; the client outlives it.
        unsafe { rdsys::rd_kafka_queue_destroy(self.queue.as_ptr()) }
    }
}

/// One task of a `kafka` spout.
struct KafkaSpout {
    config: KafkaSpoutConfig,
    consumer: Arc<BaseConsumer>,
    coordination: Coordination,
    topology: String,
    component: String,
    task_index: u64,
    tasks: u64,
    /// The topics, sorted by name, and whether each has been seen in the metadata.
    topics: Vec<(SmolStr, bool)>,
    /// The partitions this task reads or read, by slot (the high bits of its message ids).
    partitions: Vec<Partition>,
    slots: FxHashMap<(SmolStr, i32), usize>,
    /// Messages to emit before reading new ones: failed ones, and any that came through the
    /// consumer's main queue. Each is pending in its partition.
    queued: VecDeque<MessageId>,
    /// Messages emitted (or queued) and not yet acked, over all partitions.
    unacked: usize,
    /// The topology's `max_spout_pending` when it acks (the trees in flight are bounded then).
    max_in_flight: Option<usize>,
    /// What the last read of a partition queue gave (kept for its memory).
    polled: Vec<Polled>,
    /// The slot polled first next time, so every partition gets its turn.
    cursor: usize,
    /// Whether every partition of every existing topic that belongs to this task has been
    /// started (false until the first metadata refresh, and after one that failed somewhere).
    complete: bool,
    next_housekeeping: Instant,
    next_refresh: Instant,
    next_commit: Instant,
    /// When the partitions' lag gauges are due again.
    next_lag: Instant,
    /// Whether a commit ran since the committed-offset gauges were last set.
    commits_to_publish: bool,
    /// Whether the last commit round reached the store.
    last_commit_done: bool,
    /// Whether a commit round is under way: its writes go on in the background, and the next
    /// round starts only once every one of them is answered.
    committing: bool,
    /// The first partition of the round under way that found the store away, and why.
    commit_failure: Option<String>,
    errors: ErrorLog,
}

fn message_id(slot: usize, offset: i64) -> MessageId {
    ((slot as u64) << OFFSET_BITS) | (offset as u64 & OFFSET_MASK)
}

fn split_id(id: MessageId) -> (usize, i64) {
    ((id >> OFFSET_BITS) as usize, (id & OFFSET_MASK) as i64)
}

fn convert(bytes: Option<&[u8]>, format: ValueFormat) -> Value {
    match (bytes, format) {
        (None, _) => Value::Null,
        (Some(bytes), ValueFormat::Bytes) => Value::Bytes(bytes.to_vec()),
        // Valid UTF-8, the usual case, is checked at full speed and copied once, into the string.
        (Some(bytes), ValueFormat::String) => Value::Str(match std::str::from_utf8(bytes) {
            Ok(text) => SmolStr::new(text),
            Err(_) => SmolStr::new(String::from_utf8_lossy(bytes)),
        }),
    }
}

impl KafkaSpout {
    fn new(
        config: &KafkaSpoutConfig,
        ctx: &TaskContext,
        consumer: Arc<BaseConsumer>,
        coordination: Coordination,
    ) -> Self {
        let mut topics: Vec<(SmolStr, bool)> = config.topic.iter().map(|t| (SmolStr::new(t), false)).collect();
        topics.sort();
        let now = Instant::now();
        KafkaSpout {
            config: config.clone(),
            consumer,
            coordination,
            topology: ctx.topology.to_string(),
            component: ctx.component.to_string(),
            task_index: u64::from(ctx.task_index),
            tasks: u64::from(ctx.parallelism.max(1)),
            topics,
            partitions: Vec::new(),
            slots: FxHashMap::default(),
            queued: VecDeque::new(),
            unacked: 0,
            max_in_flight: ctx.config.acking.then_some(ctx.config.max_spout_pending as usize),
            polled: Vec::with_capacity(BATCH),
            cursor: 0,
            complete: false,
            next_housekeeping: now,
            next_lag: now,
            commits_to_publish: false,
            next_refresh: now,
            next_commit: now + config.commit_interval,
            last_commit_done: true,
            committing: false,
            commit_failure: None,
            errors: ErrorLog::default(),
        }
    }

    /// Whether partition `partition` of the `k`-th topic is this task's.
    fn owns(&self, k: usize, partition: i32) -> bool {
        (k as u64 + partition as u64) % self.tasks == self.task_index
    }

    fn name(&self, slot: usize) -> String {
        let p = &self.partitions[slot];
        format!("topic {} partition {}", p.topic, p.partition)
    }

    /// Serves the consumer's queue, and refreshes and commits when their time has come.
    fn housekeeping(&mut self, now: Instant) {
        self.serve_main_queue();
        if now >= self.next_refresh {
            self.refresh();
            let config = &self.config;
            let wait = if self.complete { config.metadata_refresh } else { config.metadata_refresh.min(RETRY) };
            self.next_refresh = now + wait;
        }
        if self.committing {
            self.collect_commits(now);
        }
        // With `stop_at_end`, the last commit is made as soon as everything is read and acked
        // (again at the interval if the store refused it).
        let finishing = self.last_commit_done && self.all_read() && !self.all_committed();
        if !self.committing && (now >= self.next_commit || finishing) {
            self.start_commits();
            self.collect_commits(now);
        }
    }

    /// Events of the consumer itself (client errors), and messages of any partition whose
    /// queue was not yet split off when they arrived.
    fn serve_main_queue(&mut self) {
        let consumer = self.consumer.clone();
        let format = self.config.format;
        while let Some(polled) = consumer.poll(Duration::ZERO) {
            match polled {
                Ok(message) => {
                    let key = (SmolStr::new(message.topic()), message.partition());
                    let Some(&slot) = self.slots.get(&key) else { continue };
                    let offset = message.offset();
                    let (key, value) = (convert(message.key(), format), convert(message.payload(), format));
                    drop(message);
                    if let Some((id, _)) = self.accept(slot, offset, key, value) {
                        self.queued.push_back(id);
                    }
                }
                // Partition events all come through the partitions' own queues.
                Err(KafkaError::PartitionEOF(_)) => {}
                Err(e) => self.errors.push(format!("Kafka client ({}): {}", self.config.brokers, describe(&e))),
            }
        }
    }

    /// Looks for this task's partitions in the metadata and starts the new ones.
    fn refresh(&mut self) {
        let consumer = self.consumer.clone();
        let mut complete = true;
        let mut found = Vec::new();
        for k in 0..self.topics.len() {
            let topic = self.topics[k].0.clone();
            let metadata = match consumer.fetch_metadata(Some(&topic), BROKER_TIMEOUT) {
                Ok(metadata) => metadata,
                Err(e) => {
                    let brokers = &self.config.brokers;
                    self.errors
                        .push(format!("cannot read the metadata of topic {topic} from {brokers}: {}", describe(&e)));
                    // The brokers are likely away: the other topics wait for the next round.
                    complete = false;
                    break;
                }
            };
            let Some(described) = metadata.topics().iter().find(|t| t.name() == topic.as_str()) else { continue };
            if let Some(error) = described.error() {
                let code = RDKafkaErrorCode::from(error);
                if code == RDKafkaErrorCode::UnknownTopicOrPartition {
                    self.errors
                        .push(format!("topic {topic} does not exist (yet) on {}: waiting for it", self.config.brokers));
                } else {
                    self.errors.push(format!("topic {topic}: {code}"));
                }
                continue;
            }
            self.topics[k].1 = true;
            for partition in described.partitions().iter().map(|p| p.id()) {
                if self.owns(k, partition) && !self.slots.contains_key(&(topic.clone(), partition)) {
                    found.push((topic.clone(), partition));
                }
            }
        }
        if !found.is_empty() {
            found.sort();
            complete &= self.start(found);
        }
        self.complete = complete;
    }

    /// Starts reading `partitions` where their znodes say (or at `start`); `false` if some
    /// could not be started now.
    fn start(&mut self, partitions: Vec<(SmolStr, i32)>) -> bool {
        // The new partitions' gauges are published at once, not in a while.
        self.next_lag = Instant::now();
        let consumer = self.consumer.clone();
        let first_new = self.partitions.len();
        let mut assignment = TopicPartitionList::new();
        let mut all = true;
        for (topic, partition) in partitions {
            if self.partitions.len() == MAX_SLOTS {
                self.errors.push(format!("a task reads at most {MAX_SLOTS} partitions: raise the spout's parallelism"));
                return false;
            }
            let path = paths::offset(&self.topology, &self.component, &topic, partition);
            let mut znode = match OffsetZnode::load(&self.coordination, path) {
                Ok(znode) => znode,
                Err(e) => {
                    self.errors.push(format!("topic {topic} partition {partition}: cannot read its offset: {e}"));
                    // The store is likely away: try the rest at the next round.
                    all = false;
                    break;
                }
            };
            let stored = znode.committed();
            let mut watermarks = None;
            if self.config.stop_at_end || stored.is_none() {
                match consumer.fetch_watermarks(&topic, partition, BROKER_TIMEOUT) {
                    Ok(found) => watermarks = Some(found),
                    Err(e) => {
                        let e = describe(&e);
                        self.errors.push(format!("topic {topic} partition {partition}: cannot read its offsets: {e}"));
                        all = false;
                        continue;
                    }
                }
            }
            // Where a partition without a stored offset starts is pinned when it is claimed,
            // though librdkafka resolves the logical offset itself (an explicit earliest offset
            // could fall to retention before the first fetch).
            let start = self.config.start;
            let logical = watermarks.map(|(low, high)| if start == StartAt::Earliest { low } else { high });
            let claimed = stored.or(logical).expect("the watermarks are read when no offset is stored");
            match znode.claim(&self.coordination, claimed) {
                Commit::Done => {}
                Commit::Retry(why) => {
                    let path = znode.path();
                    self.errors.push(format!("topic {topic} partition {partition}: cannot take {path} over: {why}"));
                    all = false;
                    break;
                }
                Commit::Lost => {
                    // Written by someone else since it was read: read it again next round.
                    all = false;
                    continue;
                }
            }
            let end = watermarks.filter(|_| self.config.stop_at_end);
            let at_end = match (end, stored) {
                (Some((_, high)), Some(stored)) => stored >= high,
                (Some((low, high)), None) => self.config.start == StartAt::Latest || low >= high,
                (None, _) => false,
            };
            let mut queue = None;
            if !at_end {
                // Split off before assigning, so that no message or error of the partition
                // reaches the consumer's main queue.
                let Some(split) = PartitionQueue::split(&consumer, &topic, partition) else {
                    self.errors.push(format!("topic {topic} partition {partition}: librdkafka has no queue for it"));
                    all = false;
                    continue;
                };
                queue = Some(split);
                let offset = match (stored, self.config.start) {
                    (Some(stored), _) => Offset::Offset(stored),
                    (None, StartAt::Earliest) => Offset::Beginning,
                    (None, StartAt::Latest) => Offset::End,
                };
                if let Err(e) = assignment.add_partition_offset(&topic, partition, offset) {
                    self.errors.push(format!("topic {topic} partition {partition}: {}", describe(&e)));
                    all = false;
                    continue;
                }
            }
            self.slots.insert((topic.clone(), partition), self.partitions.len());
            self.partitions.push(Partition {
                topic,
                partition,
                state: if at_end { ReadState::AtEnd } else { ReadState::Reading },
                queue,
                progress: PartitionProgress::new(stored),
                znode,
                end: end.map(|(_, high)| high),
                high_watermark: watermarks.map(|(_, high)| high),
            });
        }
        if assignment.count() == 0 {
            return all;
        }
        if let Err(e) = consumer.incremental_assign(&assignment) {
            self.errors.push(format!("cannot assign partitions to the consumer: {}", describe(&e)));
            for p in self.partitions.drain(first_new..) {
                self.slots.remove(&(p.topic, p.partition));
            }
            return false;
        }
        all
    }

    /// Stops fetching a partition.
    fn unassign(&mut self, slot: usize) {
        let p = &mut self.partitions[slot];
        let mut partitions = TopicPartitionList::new();
        partitions.add_partition(&p.topic, p.partition);
        if let Err(e) = self.consumer.incremental_unassign(&partitions) {
            let name = format!("topic {} partition {}", p.topic, p.partition);
            self.errors.push(format!("{name}: cannot stop fetching it: {}", describe(&e)));
        }
        p.queue = None;
    }

    /// Emits up to `budget` new messages from the partitions' queues, taking turns: each call
    /// starts at the partition after the last one that gave a message.
    fn poll_partitions(&mut self, mut budget: usize, out: &mut SpoutOutput<'_>) {
        let (n, first) = (self.partitions.len(), self.cursor);
        let mut polled = std::mem::take(&mut self.polled);
        for step in 0..n {
            let room = budget.min(self.config.max_pending.saturating_sub(self.unacked));
            if room == 0 {
                break;
            }
            let slot = (first + step) % n;
            let Some(queue) = &self.partitions[slot].queue else { continue };
            queue.read(room, self.config.format, &mut polled);
            if !polled.is_empty() {
                self.cursor = slot + 1;
            }
            for message in polled.drain(..) {
                // What follows the end of a partition, or an error that stopped it, is dropped
                // with its queue.
                if self.partitions[slot].state != ReadState::Reading {
                    continue;
                }
                match message {
                    Polled::Message { offset, key, value } => {
                        if let Some((id, values)) = self.accept(slot, offset, key, value) {
                            out.emit_with_id(id, values);
                            budget -= 1;
                        }
                    }
                    Polled::Error(e) => self.partition_error(slot, e),
                }
            }
        }
        self.polled = polled;
    }

    /// Takes a message read from partition `slot` in charge: its id and tuple, if it is to be
    /// emitted.
    fn accept(&mut self, slot: usize, offset: i64, key: Value, value: Value) -> Option<(MessageId, Values)> {
        if self.partitions[slot].state != ReadState::Reading {
            return None;
        }
        if self.partitions[slot].end.is_some_and(|end| offset >= end) {
            self.partitions[slot].state = ReadState::AtEnd;
            self.unassign(slot);
            return None;
        }
        if offset < 0 || offset as u64 > OFFSET_MASK {
            let name = self.name(slot);
            self.errors.push(format!("{name}: offset {offset} does not fit a message id: the partition is stopped"));
            self.partitions[slot].state = ReadState::Stopped;
            self.unassign(slot);
            return None;
        }
        let p = &mut self.partitions[slot];
        let message = PendingMessage { key, value };
        let values = tuple_values(p, offset, &message);
        if !p.progress.received(offset, message) {
            return None;
        }
        self.unacked += 1;
        Some((message_id(slot, offset), values))
    }

    fn partition_error(&mut self, slot: usize, error: KafkaError) {
        let code = error.rdkafka_error_code();
        if let KafkaError::PartitionEOF(_) = error {
            if self.config.stop_at_end {
                self.partitions[slot].state = ReadState::AtEnd;
                self.unassign(slot);
            }
        } else if matches!(code, Some(RDKafkaErrorCode::AutoOffsetReset | RDKafkaErrorCode::OffsetOutOfRange)) {
            self.stop_out_of_range(slot);
        } else {
            let name = self.name(slot);
            self.errors.push(format!("{name}: {}", describe(&error)));
        }
    }

    /// Stops a partition whose offset is no longer in the log, saying why and what to do.
    fn stop_out_of_range(&mut self, slot: usize) {
        let p = &self.partitions[slot];
        let offset = p.progress.position().map_or_else(|| "?".to_string(), |o| o.to_string());
        let name = self.name(slot);
        let what = match self.consumer.fetch_watermarks(&p.topic, p.partition, BROKER_TIMEOUT) {
            Ok((low, _)) if p.progress.position().is_some_and(|o| o < low) => {
                format!("offset {offset} is no longer in {name}, which now starts at offset {low} (retention?)")
            }
            Ok((_, high)) if p.progress.position().is_some_and(|o| o > high) => {
                format!(
                    "offset {offset} is past the end of {name}, which ends at offset {high} (was the topic recreated?)"
                )
            }
            _ => format!("offset {offset} is no longer in {name} (retention?)"),
        };
        let start = match self.config.start {
            StartAt::Earliest => "earliest",
            StartAt::Latest => "latest",
        };
        let path = p.znode.path().to_string();
        self.errors
            .push(format!("{what}: the partition is stopped; delete {path} to read it again from `start: {start}`"));
        self.partitions[slot].state = ReadState::Stopped;
        self.unassign(slot);
    }

    /// Forgets a partition another task now commits.
    fn lose(&mut self, slot: usize) {
        let name = self.name(slot);
        let p = &mut self.partitions[slot];
        p.state = ReadState::Lost;
        self.unacked -= p.progress.clear();
        let path = p.znode.path().to_string();
        self.errors.push(format!(
            "{name}: {path} was changed by someone else (another task reads the partition now): this task stops reading it"
        ));
        self.unassign(slot);
    }

    /// Starts a commit round: writes each partition's acked prefix in the background (when its
    /// znode does not hold it already); stops at the first partition that finds the store away.
    /// Called only when no round is under way, so a znode never has two writes at once.
    fn start_commits(&mut self) {
        self.committing = true;
        for slot in 0..self.partitions.len() {
            let p = &mut self.partitions[slot];
            if p.state == ReadState::Lost {
                continue;
            }
            let Some(point) = p.progress.commit_point() else { continue };
            if let Some(decided) = p.znode.start_commit(&self.coordination, point) {
                if !self.committed(slot, decided) {
                    break;
                }
            }
        }
    }

    /// Takes in the outcomes of the round's writes that have one, and ends the round when no
    /// write is under way any more.
    fn collect_commits(&mut self, now: Instant) {
        let mut under_way = false;
        for slot in 0..self.partitions.len() {
            if let Some(commit) = self.partitions[slot].znode.poll() {
                self.committed(slot, commit);
            }
            under_way |= self.partitions[slot].znode.writing();
        }
        if !under_way {
            self.end_commits(now);
        }
    }

    /// Commits every partition's acked prefix and waits for it (after the round under way, if
    /// any): the commit of a deactivation or of the end. `false` if the store was away.
    fn commit_all(&mut self) -> bool {
        self.wait_commits();
        self.start_commits();
        self.wait_commits();
        self.last_commit_done
    }

    /// Waits for the round under way, if any, and ends it.
    fn wait_commits(&mut self) {
        if !self.committing {
            return;
        }
        for slot in 0..self.partitions.len() {
            if let Some(commit) = self.partitions[slot].znode.wait() {
                self.committed(slot, commit);
            }
        }
        self.end_commits(Instant::now());
    }

    /// Takes in what became of partition `slot`'s commit; `false` when the store was away.
    fn committed(&mut self, slot: usize, commit: Commit) -> bool {
        match commit {
            Commit::Done => true,
            Commit::Lost => {
                self.lose(slot);
                true
            }
            Commit::Retry(why) => {
                if self.commit_failure.is_none() {
                    self.commit_failure = Some(format!("{}: {why}", self.name(slot)));
                }
                false
            }
        }
    }

    /// Ends the commit round: the next is due a `commit_interval` from now, or later when the
    /// store was away.
    fn end_commits(&mut self, now: Instant) {
        self.committing = false;
        self.commits_to_publish = true;
        self.last_commit_done = self.commit_failure.is_none();
        self.next_commit = now + self.commit_every();
        if let Some(failure) = self.commit_failure.take() {
            let every = humantime_serde::re::humantime::format_duration(self.commit_every());
            self.errors.push(format!("cannot commit the offset of {failure}; retrying every {every}"));
        }
    }

    /// Sets each partition's gauges: the committed offset, the high watermark and the lag
    /// between them (`squall status`, `/metrics`). The lag is informational: brokers differ in
    /// what they report as the high watermark (tansu 0.6 gives the base offset of the last
    /// batch + 1), so it is never used to decide anything.
    ///
    /// The high watermark is the one the consumer's last fetch response carried, which
    /// librdkafka keeps: no request is made. Asking the broker (a ListOffsets round trip per
    /// partition) held the task's thread, the one that emits, for 20–30 ms per partition on
    /// tansu — 120 ms before the first message of a 4-partition topic, and again every
    /// [`LAG_EVERY`].
    fn publish_lag(&mut self, out: &mut SpoutOutput<'_>) {
        self.publish_committed(out);
        for p in self.partitions.iter_mut().filter(|p| p.state != ReadState::Lost) {
            if let Some((_, high)) = last_fetched_watermarks(&self.consumer, &p.topic, p.partition) {
                p.high_watermark = Some(high);
            }
            let (Some(committed), Some(high)) = (p.znode.committed(), p.high_watermark) else { continue };
            let partition = p.partition.to_string();
            let labels = [("topic", p.topic.as_str()), ("partition", partition.as_str())];
            out.set_gauge("kafka_high_watermark", &labels, high);
            out.set_gauge("kafka_lag", &labels, (high - committed).max(0));
        }
    }

    /// Sets each partition's committed-offset gauge (after every commit: it costs nothing).
    fn publish_committed(&mut self, out: &mut SpoutOutput<'_>) {
        self.commits_to_publish = false;
        for p in self.partitions.iter().filter(|p| p.state != ReadState::Lost) {
            if let Some(committed) = p.znode.committed() {
                let partition = p.partition.to_string();
                let labels = [("topic", p.topic.as_str()), ("partition", partition.as_str())];
                out.set_gauge("kafka_committed_offset", &labels, committed);
            }
        }
    }

    /// How long after a commit round the next one is due: `commit_interval`, and at least
    /// [`RETRY`] while the store refuses.
    fn commit_every(&self) -> Duration {
        if self.last_commit_done { self.config.commit_interval } else { self.config.commit_interval.max(RETRY) }
    }

    /// With `stop_at_end`: whether every partition has been read to its end and every
    /// message acked.
    fn all_read(&self) -> bool {
        self.config.stop_at_end
            && self.complete
            && self.unacked == 0
            && self.queued.is_empty()
            && self.topics.iter().all(|(_, seen)| *seen)
            && self.partitions.iter().all(|p| p.state != ReadState::Reading)
    }

    fn all_committed(&self) -> bool {
        self.partitions.iter().all(|p| p.state == ReadState::Lost || p.committed())
    }

    /// The tuple of a pending message.
    fn tuple(&self, id: MessageId) -> Option<Values> {
        let (slot, offset) = split_id(id);
        let p = self.partitions.get(slot)?;
        Some(tuple_values(p, offset, p.progress.get(offset)?))
    }

    /// How many tuples this call of `next_tuple` may emit: [`BATCH`], and no more than the
    /// room under `max_spout_pending`, but at least one, as without batches. The setting is the
    /// one the topology started with: a live change is seen by the executor only, which then
    /// bounds the trees itself (after a change that lowers it, a call may pass the new value by
    /// less than a batch).
    fn budget(&self, out: &SpoutOutput<'_>) -> usize {
        self.max_in_flight.map_or(BATCH, |max| max.saturating_sub(out.pending()).clamp(1, BATCH))
    }
}

/// The low and high watermarks of `topic` partition `partition` that the consumer's last fetch
/// response carried, as librdkafka keeps them (no request is made); `None` before the first.
fn last_fetched_watermarks(consumer: &BaseConsumer, topic: &str, partition: i32) -> Option<(i64, i64)> {
    let topic = CString::new(topic).ok()?;
    let (mut low, mut high) = (-1, -1);
    // SAFETY: the client handle is valid while `consumer` is, the topic is a C string, and
    // the two out-pointers point to live integers; librdkafka only reads its cache.
    let err = unsafe {
        rdsys::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    // Unknown watermarks are negative (librdkafka's invalid offset).
    (err == RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0).then_some((low, high))
}

/// The tuple of the message at `offset` of partition `p`.
fn tuple_values(p: &Partition, offset: i64, message: &PendingMessage) -> Values {
    let mut values = Values::with_capacity(FIELDS.len());
    values.push(Value::Str(p.topic.clone()));
    values.push(Value::Int(i64::from(p.partition)));
    values.push(Value::Int(offset));
    values.push(message.key.clone());
    values.push(message.value.clone());
    values
}

impl Spout for KafkaSpout {
    fn next_tuple(&mut self, out: &mut SpoutOutput<'_>) {
        let now = Instant::now();
        if now >= self.next_housekeeping {
            self.housekeeping(now);
            self.next_housekeeping = now + HOUSEKEEPING_EVERY;
        }
        for message in self.errors.drain() {
            out.report_error(message);
        }
        if now >= self.next_lag {
            self.publish_lag(out);
            self.next_lag = Instant::now() + LAG_EVERY;
        } else if self.commits_to_publish {
            self.publish_committed(out);
        }
        let mut budget = self.budget(out);
        while budget > 0 {
            let Some(id) = self.queued.pop_front() else { break };
            // A message acked after it failed, or of a lost partition, has nothing to replay.
            if let Some(values) = self.tuple(id) {
                out.emit_with_id(id, values);
                budget -= 1;
            }
        }
        if budget > 0 && self.queued.is_empty() {
            self.poll_partitions(budget, out);
        }
    }

    fn ack(&mut self, id: MessageId) {
        let (slot, offset) = split_id(id);
        if self.partitions.get_mut(slot).is_some_and(|p| p.progress.acked(offset)) {
            self.unacked -= 1;
        }
    }

    fn fail(&mut self, id: MessageId) {
        let (slot, offset) = split_id(id);
        if self.partitions.get(slot).is_some_and(|p| p.progress.get(offset).is_some()) {
            self.queued.push_back(id);
        }
    }

    fn deactivate(&mut self) {
        self.commit_all();
    }

    fn is_done(&self) -> bool {
        self.all_read() && self.all_committed()
    }

    fn close(&mut self) {
        if !self.commit_all() {
            tracing::error!("kafka spout {}: the last offsets could not be committed", self.component);
        }
        for message in self.errors.drain() {
            tracing::error!("kafka spout {}: {message} (while closing)", self.component);
        }
        // The queues hold the consumer; it closes when the last of them goes.
        self.partitions.iter_mut().for_each(|p| p.queue = None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::testing::{DEADLINE, Kafka, Shared, Store, wait_until};
    use crate::testing::{Collected, collector, stats};
    use squall_runtime::{
        Bolt, BoltOutput, Deferred, LocalRun, RunOptions, RunReport, StopReason, TopologyBuilder, TopologyConfig,
        Tuple, bolt_fn, run_local,
    };
    use std::collections::{BTreeMap, HashSet};
    use std::sync::Mutex;

    const TOPOLOGY: &str = "reading";

    /// A spout config from YAML args, with short intervals unless `args` sets them.
    fn spout(kafka: &Kafka, args: &str) -> Arc<KafkaSpoutConfig> {
        let mut args: serde_yaml::Mapping = serde_yaml::from_str(&format!("{{ {args} }}")).unwrap();
        for (name, value) in
            [("brokers", kafka.brokers.as_str()), ("commit_interval", "100ms"), ("metadata_refresh", "200ms")]
        {
            args.entry(name.into()).or_insert(value.into());
        }
        Arc::new(serde_yaml::from_value(serde_yaml::Value::Mapping(args)).unwrap())
    }

    fn values(prefix: &str, n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|i| format!("{prefix}-{i}").into_bytes()).collect()
    }

    /// Produces `n` messages `<topic>/<partition>-<i>` to each partition; returns the ends.
    fn fill(kafka: &Kafka, topic: &str, partitions: i32, n: usize) -> Vec<i64> {
        (0..partitions)
            .map(|p| kafka.produce(topic, p, &values(&format!("{topic}/{p}"), n)).last().map_or(0, |last| last + 1))
            .collect()
    }

    fn offset_path(spout: &str, topic: &str, partition: i32) -> String {
        paths::offset(TOPOLOGY, spout, topic, partition)
    }

    /// Runs a topology to its end (at most 20 s) with the store's session.
    fn run(builder: TopologyBuilder, session: Coordination) -> RunReport {
        let topology = builder.build().unwrap();
        let options = RunOptions { duration: Some(Duration::from_secs(20)), coordination: Some(session) };
        run_local(&topology, options).unwrap()
    }

    /// (topic, partition, offset, value) of the collected tuples, sorted.
    fn read(collected: &Collected) -> Vec<(String, i64, i64, String)> {
        let mut read: Vec<_> = collected
            .lock()
            .unwrap()
            .iter()
            .map(|t| {
                let int = |f: &str| t.get(f).and_then(Value::as_int).unwrap();
                (
                    t.get_str("topic").unwrap().to_string(),
                    int("partition"),
                    int("offset"),
                    t.get_str("value").unwrap().to_string(),
                )
            })
            .collect();
        read.sort();
        read
    }

    /// Every message of `partitions` partitions of `topic` from offset `from` to `to`.
    fn expected(topic: &str, partitions: i32, from: usize, to: usize) -> Vec<(String, i64, i64, String)> {
        let mut all = Vec::new();
        for p in 0..partitions {
            for i in from..to {
                all.push((topic.to_string(), i64::from(p), i as i64, format!("{topic}/{p}-{i}")));
            }
        }
        all.sort();
        all
    }

    /// Guarantee: with `stop_at_end`, two tasks read every message of a 4-partition topic
    /// exactly once, each partition by one task as the division rule says, and commit each
    /// partition's end.
    #[test]
    fn every_message_is_read_once_and_the_offsets_end_at_the_partition_ends() {
        let (store, kafka) = (Store::start(), Kafka::start());
        kafka.create_topic("events", 4);
        let ends = fill(&kafka, "events", 4, 1000);
        assert_eq!(ends, [1000; 4]);

        let (sink, collected) = collector();
        let mut builder = TopologyBuilder::new(TOPOLOGY);
        builder.spout("kafka", 2, spout(&kafka, "topic: events, stop_at_end: true"));
        builder.bolt("sink", 2, sink).shuffle("kafka");
        let report = run(builder, store.session(TOPOLOGY));

        assert_eq!(report.reason, StopReason::Completed);
        // Each partition's gauges were published as it started.
        let gauges = &stats(&report, "kafka").gauges;
        for p in 0..4 {
            let labels = format!("{{topic=\"events\",partition=\"{p}\"}}");
            assert_eq!(gauges.get(&format!("kafka_high_watermark{labels}")), Some(&1000), "{gauges:?}");
            assert!(gauges.contains_key(&format!("kafka_committed_offset{labels}")), "{gauges:?}");
            assert!(gauges.get(&format!("kafka_lag{labels}")).is_some_and(|&lag| (0..=1000).contains(&lag)));
        }
        assert_eq!(read(&collected), expected("events", 4, 0, 1000));
        let s = stats(&report, "kafka");
        assert_eq!((s.emitted, s.acked, s.failed, s.errors), (4000, 4000, 0, 0), "{:?}", s.last_errors);
        let mut readers: BTreeMap<i64, HashSet<u32>> = BTreeMap::new();
        for t in collected.lock().unwrap().iter() {
            readers.entry(t.get("partition").unwrap().as_int().unwrap()).or_default().insert(t.source_task());
        }
        // Task 0 (task id 0) reads partitions 0 and 2, task 1 partitions 1 and 3.
        let expected_readers: BTreeMap<i64, HashSet<u32>> =
            (0..4).map(|p| (p, HashSet::from([(p % 2) as u32]))).collect();
        assert_eq!(readers, expected_readers);
        for (p, end) in ends.iter().enumerate() {
            assert_eq!(store.offset(&offset_path("kafka", "events", p as i32)), Some(*end), "partition {p}");
        }
    }

    /// Guarantee: a run resumes each partition at the offset the last one committed: it reads
    /// only the messages produced since, and commits the new ends.
    #[test]
    fn a_second_run_reads_only_what_came_after_the_first() {
        let (store, kafka) = (Store::start(), Kafka::start());
        kafka.create_topic("events", 2);
        fill(&kafka, "events", 2, 500);
        let topology = |kafka: &Kafka| {
            let (sink, collected) = collector();
            let mut builder = TopologyBuilder::new(TOPOLOGY);
            builder.spout("kafka", 2, spout(kafka, "topic: [events], stop_at_end: true"));
            builder.bolt("sink", 1, sink).shuffle("kafka");
            (builder, collected)
        };
        let (builder, first) = topology(&kafka);
        run(builder, store.session(TOPOLOGY));
        assert_eq!(read(&first), expected("events", 2, 0, 500));

        // The new messages continue each partition at offset 500.
        let values: Vec<Vec<Vec<u8>>> =
            (0..2).map(|p| (500..800).map(|i| format!("events/{p}-{i}").into_bytes()).collect()).collect();
        for (p, values) in values.iter().enumerate() {
            assert_eq!(kafka.produce("events", p as i32, values).last(), Some(&799));
        }
        let (builder, second) = topology(&kafka);
        let report = run(builder, store.session(TOPOLOGY));
        assert_eq!(read(&second), expected("events", 2, 500, 800), "only the new messages");
        assert_eq!(stats(&report, "kafka").emitted, 600);
        for p in 0..2 {
            assert_eq!(store.offset(&offset_path("kafka", "events", p)), Some(800));
        }
    }

    /// Fails the first delivery of each message, and checks on every delivery that the
    /// message's partition is not committed past it (it is not acked yet).
    struct FailFirstAndCheck {
        coordination: Coordination,
        seen: Shared<HashSet<(i64, i64)>>,
        violations: Shared<Vec<String>>,
    }

    impl Bolt for FailFirstAndCheck {
        fn execute(&mut self, input: &Tuple, out: &mut BoltOutput<'_>) -> Result<(), BoxError> {
            let int = |f: &str| input.get(f).and_then(Value::as_int).unwrap();
            let (partition, offset) = (int("partition"), int("offset"));
            let path = offset_path("kafka", "events", partition as i32);
            if let Some((data, _)) = self.coordination.read(&path)? {
                let committed: serde_json::Value = serde_json::from_slice(&data)?;
                if committed["offset"].as_i64().unwrap() > offset {
                    self.violations.lock().unwrap().push(format!("{path} at {committed} while {offset} is unacked"));
                }
            }
            if self.seen.lock().unwrap().insert((partition, offset)) {
                return Err("first delivery".into());
            }
            out.emit(input.values().iter().cloned().collect());
            Ok(())
        }
    }

    /// Guarantee: a failed tuple is emitted again, with the same values, until it is acked; the
    /// committed offset never passes a message that is not acked, and ends at the partition end.
    #[test]
    fn failed_tuples_are_replayed_and_no_offset_is_committed_past_an_unacked_one() {
        let (store, kafka) = (Store::start(), Kafka::start());
        kafka.create_topic("events", 2);
        fill(&kafka, "events", 2, 300);
        let seen = Shared::default();
        let violations: Shared<Vec<String>> = Shared::default();
        let flaky = {
            let (seen, violations) = (seen.clone(), violations.clone());
            bolt_fn(FIELDS, move |ctx| FailFirstAndCheck {
                coordination: ctx.coordination().unwrap().clone(),
                seen: seen.clone(),
                violations: violations.clone(),
            })
        };
        let (sink, collected) = collector();
        let mut builder = TopologyBuilder::new(TOPOLOGY);
        builder.spout("kafka", 2, spout(&kafka, "topic: events, stop_at_end: true, commit_interval: 20ms"));
        builder.bolt("flaky", 2, flaky).shuffle("kafka");
        builder.bolt("sink", 1, sink).shuffle("flaky");
        let report = run(builder, store.session(TOPOLOGY));

        assert_eq!(report.reason, StopReason::Completed);
        assert_eq!(read(&collected), expected("events", 2, 0, 300), "each message once, after its replay");
        let s = stats(&report, "kafka");
        assert_eq!((s.emitted, s.acked, s.failed), (1200, 600, 600));
        let violations = violations.lock().unwrap();
        assert!(violations.is_empty(), "{} violations, the first: {:?}", violations.len(), &violations[..1]);
        for p in 0..2 {
            assert_eq!(store.offset(&offset_path("kafka", "events", p)), Some(300));
        }
    }

    /// Keeps every input without acking it, and counts them.
    struct Holder {
        held: Vec<Deferred>,
        count: Shared<usize>,
    }

    impl Bolt for Holder {
        fn execute(&mut self, _input: &Tuple, out: &mut BoltOutput<'_>) -> Result<(), BoxError> {
            self.held.push(out.defer());
            *self.count.lock().unwrap() += 1;
            Ok(())
        }
    }

    /// How many tuples a task emits when none is ever acked, with the topology's
    /// `max_spout_pending` and the spout's `max_pending` as given.
    fn emitted_without_acks(max_spout_pending: u32, max_pending: usize) -> usize {
        let (store, kafka) = (Store::start(), Kafka::start());
        kafka.create_topic("events", 2);
        fill(&kafka, "events", 2, 200);
        let count = Shared::default();
        let holder = {
            let count = count.clone();
            bolt_fn(Vec::<&str>::new(), move |_| Holder { held: Vec::new(), count: count.clone() })
        };
        let mut builder = TopologyBuilder::new(TOPOLOGY);
        builder.config(TopologyConfig { max_spout_pending, ..TopologyConfig::default() });
        builder.spout("kafka", 1, spout(&kafka, &format!("topic: events, max_pending: {max_pending}")));
        builder.bolt("holder", 1, holder).shuffle("kafka");
        let topology = builder.build().unwrap();
        let options = RunOptions { duration: Some(DEADLINE), coordination: Some(store.session(TOPOLOGY)) };
        let run = LocalRun::start(&topology, options).unwrap();
        wait_until("the first tuples arrive", || *count.lock().unwrap() > 0);
        // Long enough for many more calls of `next_tuple`, far shorter than the message timeout.
        std::thread::sleep(Duration::from_millis(500));
        let emitted = *count.lock().unwrap();
        run.stopper().stop();
        run.wait();
        emitted
    }

    /// Guarantee: though a task emits several tuples per call, it never has more tuple trees
    /// in flight than the topology's `max_spout_pending`, nor more messages unacked than its
    /// `max_pending`.
    #[test]
    fn in_flight_tuples_stay_within_max_spout_pending_and_max_pending() {
        assert_eq!(emitted_without_acks(3, 10_000), 3);
        assert_eq!(emitted_without_acks(1000, 5), 5);
    }

    /// Guarantee: a stored offset that retention removed from the log stops its partition with
    /// an error naming the topic, partition and offset, and no message of it is emitted; the
    /// other partitions are read to their ends.
    #[test]
    fn an_offset_gone_from_the_log_stops_its_partition_and_the_others_go_on() {
        let (store, kafka) = (Store::start(), Kafka::start());
        kafka.create_topic("events", 2);
        // The mock broker keeps 5 MiB per partition: 6 MiB pushes the first messages out.
        let big: Vec<Vec<u8>> = (0..6 * 1024).map(|i| format!("{i:01024}").into_bytes()).collect();
        kafka.produce("events", 0, &big);
        let (low, _) = kafka.watermarks("events", 0);
        assert!(low > 0, "the log of partition 0 still starts at 0");
        kafka.produce("events", 1, &values("events/1", 100));
        store.set_offset(&offset_path("kafka", "events", 0), 0);

        let (sink, collected) = collector();
        let mut builder = TopologyBuilder::new(TOPOLOGY);
        builder.spout("kafka", 1, spout(&kafka, "topic: events, stop_at_end: true"));
        builder.bolt("sink", 1, sink).shuffle("kafka");
        let report = run(builder, store.session(TOPOLOGY));

        assert_eq!(report.reason, StopReason::Completed);
        assert_eq!(
            read(&collected),
            expected("events", 1, 0, 100)
                .into_iter()
                .map(|(t, _, o, _)| (t, 1, o, format!("events/1-{o}")))
                .collect::<Vec<_>>()
        );
        let s = stats(&report, "kafka");
        let wanted = format!(
            "offset 0 is no longer in topic events partition 0, which now starts at offset {low} (retention?): \
             the partition is stopped; delete {} to read it again from `start: earliest`",
            offset_path("kafka", "events", 0)
        );
        assert_eq!(s.last_errors.iter().collect::<Vec<_>>(), [&wanted]);
        assert_eq!(store.offset(&offset_path("kafka", "events", 0)), Some(0), "left as it was");
        assert_eq!(store.offset(&offset_path("kafka", "events", 1)), Some(100));
    }

    /// Guarantee: when someone else changes a partition's offset znode (another task took the
    /// partition over), the task stops committing that partition and never overwrites what the
    /// other wrote; its other partitions are committed as usual.
    #[test]
    fn a_partition_whose_znode_another_task_wrote_is_no_longer_committed() {
        let (store, kafka) = (Store::start(), Kafka::start());
        kafka.create_topic("events", 2);
        fill(&kafka, "events", 2, 200);
        for p in 0..2 {
            store.set_offset(&offset_path("kafka", "events", p), 0);
        }
        let other = store.session(TOPOLOGY);
        let taken = Arc::new(Mutex::new(false));
        let usurper = {
            let taken = taken.clone();
            bolt_fn(Vec::<&str>::new(), move |_| Usurper { other: other.clone(), taken: taken.clone() })
        };
        let mut builder = TopologyBuilder::new(TOPOLOGY);
        // Nothing is committed before the spout has read everything, long after the takeover.
        builder.spout("kafka", 1, spout(&kafka, "topic: events, stop_at_end: true, commit_interval: 1h"));
        builder.bolt("usurper", 1, usurper).shuffle("kafka");
        let report = run(builder, store.session(TOPOLOGY));

        assert!(*taken.lock().unwrap());
        assert_eq!(report.reason, StopReason::Completed);
        assert_eq!(store.offset(&offset_path("kafka", "events", 0)), Some(777), "the other writer's offset stays");
        assert_eq!(store.offset(&offset_path("kafka", "events", 1)), Some(200));
        let errors = stats(&report, "kafka").last_errors;
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("topic events partition 0: ") && e.contains("was changed by someone else")),
            "{errors:?}"
        );
    }

    /// On the first tuple of partition 0, writes offset 777 over that partition's znode.
    struct Usurper {
        other: Coordination,
        taken: Arc<Mutex<bool>>,
    }

    impl Bolt for Usurper {
        fn execute(&mut self, input: &Tuple, _out: &mut BoltOutput<'_>) -> Result<(), BoxError> {
            let mut taken = self.taken.lock().unwrap();
            if input.get("partition") == Some(&Value::Int(0)) && !*taken {
                let path = offset_path("kafka", "events", 0);
                let (_, version) = self.other.read(&path)?.expect("stored before the run");
                self.other.write(&path, br#"{"offset":777}"#, Some(version))?;
                *taken = true;
            }
            Ok(())
        }
    }

    /// Guarantee: a topic that does not exist yet is waited for (and said so), and read from
    /// its start once it appears; partitions found by a refresh are read like the others.
    #[test]
    fn a_topic_created_while_running_is_read_from_its_start() {
        let (store, kafka) = (Store::start(), Kafka::start());
        kafka.create_topic("early", 1);
        fill(&kafka, "early", 1, 100);
        let (sink, collected) = collector();
        let mut builder = TopologyBuilder::new(TOPOLOGY);
        builder.config(TopologyConfig { max_spout_pending: 50, ..TopologyConfig::default() });
        builder.spout("kafka", 2, spout(&kafka, "topic: [late, early]"));
        builder.bolt("sink", 1, sink).shuffle("kafka");
        let topology = builder.build().unwrap();
        let options = RunOptions { duration: Some(DEADLINE), coordination: Some(store.session(TOPOLOGY)) };
        let run = LocalRun::start(&topology, options).unwrap();
        wait_until("the early topic is read", || collected.lock().unwrap().len() == 100);
        kafka.create_topic("late", 3);
        fill(&kafka, "late", 3, 50);
        wait_until("the late topic is read", || collected.lock().unwrap().len() == 250);
        run.stopper().stop();
        let report = run.wait();

        let mut all = expected("early", 1, 0, 100);
        all.extend(expected("late", 3, 0, 50));
        all.sort();
        assert_eq!(read(&collected), all);
        let errors = stats(&report, "kafka").last_errors;
        assert!(errors.iter().any(|e| e.starts_with("topic late does not exist (yet)")), "{errors:?}");
        // Committed when the spout stopped.
        for p in 0..3 {
            assert_eq!(store.offset(&offset_path("kafka", "late", p)), Some(50));
        }
    }

    /// Keys and values as bytes with `format: bytes`; a missing key is null.
    #[test]
    fn bytes_format_emits_raw_bytes() {
        let (store, kafka) = (Store::start(), Kafka::start());
        kafka.create_topic("raw", 1);
        kafka.produce("raw", 0, &[vec![0xff, 0x00], b"ok".to_vec()]);
        let (sink, collected) = collector();
        let mut builder = TopologyBuilder::new(TOPOLOGY);
        builder.spout("kafka", 1, spout(&kafka, "topic: raw, stop_at_end: true, format: bytes"));
        builder.bolt("sink", 1, sink).shuffle("kafka");
        run(builder, store.session(TOPOLOGY));
        let tuples = collected.lock().unwrap();
        let got: Vec<(Value, Value)> =
            tuples.iter().map(|t| (t.get("key").unwrap().clone(), t.get("value").unwrap().clone())).collect();
        assert_eq!(got, [(Value::Null, Value::Bytes(vec![0xff, 0])), (Value::Null, Value::Bytes(b"ok".to_vec()))]);
        assert_eq!(convert(Some(&[0x66, 0xff]), ValueFormat::String), Value::from("f\u{fffd}"));
    }

    #[test]
    fn message_ids_hold_the_slot_and_the_offset() {
        let id = message_id(3, 1_234_567_890_123);
        assert_eq!(split_id(id), (3, 1_234_567_890_123));
        assert_eq!(split_id(message_id(MAX_SLOTS - 1, OFFSET_MASK as i64)), (MAX_SLOTS - 1, OFFSET_MASK as i64));
    }

    #[test]
    fn without_a_store_the_spout_does_not_start() {
        let mut builder = TopologyBuilder::new(TOPOLOGY);
        builder.spout("kafka", 1, Arc::new(KafkaSpoutConfig::new("127.0.0.1:9", ["events"])));
        let topology = builder.build().unwrap();
        let err = run_local(&topology, RunOptions::default()).unwrap_err().to_string();
        assert!(err.contains("component 'kafka'") && err.contains("keeps its offsets in the znode store"), "{err}");
    }

    #[test]
    fn args_from_yaml() {
        let registry = crate::registry();
        let load = |args: &str| {
            let yaml = format!("name: t\nspouts:\n  - {{ id: k, kind: kafka, args: {{ {args} }} }}\n");
            registry.load_str(&yaml, "t.yaml").map(|_| ()).map_err(|e| e.to_string())
        };
        assert_eq!(load("brokers: \"b:9092\", topic: events"), Ok(()));
        let config: KafkaSpoutConfig = serde_yaml::from_str(
            "{ brokers: b, topic: [a, b], start: latest, commit_interval: 2s, max_pending: 5, metadata_refresh: 1m, \
               format: bytes, stop_at_end: true, rdkafka: { fetch.min.bytes: 1024, group.id: mine } }",
        )
        .unwrap();
        assert_eq!(config.topic, ["a", "b"]);
        assert_eq!((config.start, config.format, config.max_pending), (StartAt::Latest, ValueFormat::Bytes, 5));
        assert_eq!(
            (config.commit_interval, config.metadata_refresh),
            (Duration::from_secs(2), Duration::from_secs(60))
        );
        assert_eq!(config.rdkafka["fetch.min.bytes"].0, "1024");

        for (args, wanted) in [
            ("brokers: b, topic: t, commit: 1s", "unknown field `commit`"),
            ("brokers: b", "missing field `topic`"),
            ("topic: t", "missing field `brokers`"),
            ("brokers: b, topic: [a, a]", "`topic` lists `a` twice"),
            ("brokers: b, topic: []", "at least one topic"),
            ("brokers: b, topic: a/b", "not a valid Kafka topic name"),
            ("brokers: b, topic: {a: 1}", "a topic name or a list of topic names"),
            ("brokers: \"\", topic: t", "`brokers` must name at least one broker"),
            ("brokers: b, topic: t, start: middle", "unknown variant `middle`"),
            ("brokers: b, topic: t, commit_interval: 0s", "must be longer than 0"),
            ("brokers: b, topic: t, commit_interval: 5", "expected a duration"),
            ("brokers: b, topic: t, max_pending: 0", "`max_pending` must be at least 1"),
            ("brokers: b, topic: t, rdkafka: { auto.offset.reset: earliest }", "never skipped"),
            ("brokers: b, topic: t, rdkafka: { enable.auto.commit: true }", "never in Kafka"),
        ] {
            let err = load(args).unwrap_err();
            assert!(err.contains(wanted), "{args}: {err}");
        }
    }

    #[test]
    fn an_unknown_rdkafka_setting_stops_the_run_before_it_starts() {
        let store = Store::start();
        let mut config = KafkaSpoutConfig::new("127.0.0.1:9", ["events"]);
        config.rdkafka.insert("no.such.setting".into(), super::super::ClientSetting("1".into()));
        let mut builder = TopologyBuilder::new(TOPOLOGY);
        builder.spout("kafka", 1, Arc::new(config));
        let topology = builder.build().unwrap();
        let options = RunOptions { duration: None, coordination: Some(store.session(TOPOLOGY)) };
        let err = run_local(&topology, options).unwrap_err().to_string();
        assert!(err.contains("rdkafka setting `no.such.setting: 1` is refused"), "{err}");
    }
}
