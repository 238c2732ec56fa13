//! A real Kafka-protocol broker for the end-to-end Kafka tests: [`Tansu`], one `tansu broker`
//! process on a loopback port with in-memory storage, and the rdkafka clients the tests drive it
//! with.
//!
//! The binary is `$SQUALL_TANSU` (which `scripts/test` sets), else whatever `scripts/tansu`
//! prints, which installs it on first use. The broker runs in its own process group and is
//! SIGKILLed when the [`Tansu`] drops, passed or failed; a failing test prints its log.
//!
//! What tansu 0.6 cannot do, and where it is tested instead: its in-memory storage does not
//! implement DeleteRecords (the broker task panics "not yet implemented" in tansu-storage's
//! `dynostore.rs`) nor retention, so a log that starts past offset 0 — a stored offset that
//! retention removed — is tested against librdkafka's mock cluster, which drops a partition's
//! oldest messages past 5 MiB (`operators/src/kafka/spout.rs`,
//! `an_offset_gone_from_the_log_stops_its_partition_and_the_others_go_on`).

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::{DEADLINE, LOG_TAIL, free_addr};

/// How many times [`Tansu::start`] tries a fresh port when the broker exits before it is ready
/// (another process may bind the port between the moment it is picked and tansu's bind).
const START_ATTEMPTS: usize = 3;
/// How long one metadata request may take while waiting for the broker or a topic.
const METADATA_TIMEOUT: Duration = Duration::from_millis(500);
/// The pause between two probes of a condition being waited for.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// A `tansu broker` on 127.0.0.1 with in-memory storage; killed when dropped.
pub struct Tansu {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    /// Holds the log; kept (not deleted) when a test fails.
    dir: Option<tempfile::TempDir>,
}

impl Tansu {
    /// Starts a broker on a free loopback port and waits until an rdkafka client can fetch its
    /// metadata.
    ///
    /// Panics (saying to run `scripts/tansu`) when no tansu binary can be found, and with the
    /// broker's log when it does not become ready within [`DEADLINE`].
    pub fn start() -> Tansu {
        let binary = binary();
        let mut last_log = String::new();
        for _ in 0..START_ATTEMPTS {
            let dir = tempfile::tempdir().unwrap();
            let log = dir.path().join("tansu.log");
            let addr = free_addr();
            let child = spawn(&binary, addr, &log);
            let mut tansu = Tansu { child, addr, log, dir: Some(dir) };
            if tansu.wait_ready() {
                return tansu;
            }
            // It exited on its own, most likely because the port was taken: try another one.
            last_log = tansu.log_tail();
        }
        panic!(
            "tansu ({}) exited before it was ready, {START_ATTEMPTS} times; its last log:\n{last_log}\n\
             (run `scripts/tansu` to check the installation)",
            binary.display()
        );
    }

    /// The address clients bootstrap from, `127.0.0.1:PORT`.
    pub fn bootstrap(&self) -> String {
        self.addr.to_string()
    }

    /// Client configuration for this broker: its bootstrap address, and reconnect backoffs short
    /// enough that a client started before the broker listens notices it quickly.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", self.bootstrap())
            .set("reconnect.backoff.ms", "20")
            .set("reconnect.backoff.max.ms", "200");
        config
    }

    /// Creates `name` with `partitions` partitions (through CreateTopics, which tansu supports)
    /// and waits until the metadata shows every partition with a leader.
    pub fn create_topic(&self, name: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> =
            self.client_config().create().unwrap_or_else(|e| panic!("cannot create an admin client: {e}"));
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        let options = AdminOptions::new().operation_timeout(Some(DEADLINE));
        let results = futures::executor::block_on(admin.create_topics([&topic], &options))
            .unwrap_or_else(|e| panic!("creating topic {name}: {e}\n{}", self.log_tail()));
        for result in results {
            if let Err((topic, code)) = result {
                panic!("creating topic {topic}: {code}\n{}", self.log_tail());
            }
        }

        let consumer = self.metadata_client();
        let deadline = Instant::now() + DEADLINE;
        loop {
            let seen = match consumer.fetch_metadata(Some(name), METADATA_TIMEOUT) {
                Ok(metadata) => metadata
                    .topics()
                    .iter()
                    .find(|t| t.name() == name && t.error().is_none())
                    .map(|t| t.partitions().iter().filter(|p| p.error().is_none() && p.leader() >= 0).count()),
                Err(_) => None,
            };
            if seen == Some(partitions as usize) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "topic {name}: metadata shows {seen:?} of {partitions} partitions after {DEADLINE:?}\n{}",
                self.log_tail()
            );
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Produces `messages` — each an optional partition (the partitioner picks one otherwise),
    /// an optional key and a value — to `topic` with an idempotent producer, and returns each
    /// message's delivered `(partition, offset)` in input order.
    ///
    /// The idempotent producer keeps each partition's order, so a partition's offsets follow
    /// the input order. Panics on any delivery error.
    pub fn produce(
        &self,
        topic: &str,
        messages: impl IntoIterator<Item = (Option<i32>, Option<Vec<u8>>, Vec<u8>)>,
    ) -> Vec<(i32, i64)> {
        let (reports, delivered) = mpsc::channel();
        let producer: BaseProducer<Deliveries> = self
            .client_config()
            .set("enable.idempotence", "true")
            // Batches of many small messages: 100,000 of them take about half a second.
            .set("linger.ms", "20")
            // Fail within the test's patience rather than librdkafka's default five minutes.
            .set("message.timeout.ms", (DEADLINE.as_millis() as u64).to_string())
            .create_with_context(Deliveries(reports))
            .unwrap_or_else(|e| panic!("cannot create a producer: {e}"));

        let mut sent = 0;
        for (index, (partition, key, value)) in messages.into_iter().enumerate() {
            let mut record = BaseRecord::with_opaque_to(topic, index).payload(&value);
            if let Some(key) = &key {
                record = record.key(key);
            }
            if let Some(partition) = partition {
                record = record.partition(partition);
            }
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    // The local queue is full: serve delivery reports, which frees it, and retry.
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        producer.poll(Duration::from_millis(10));
                    }
                    Err((e, _)) => panic!("producing message {index} to {topic}: {e}"),
                }
            }
            sent += 1;
            // Serve delivery reports as they come, so they do not pile up until the flush.
            if sent % 1000 == 0 {
                producer.poll(Duration::ZERO);
            }
        }
        producer
            .flush(DEADLINE)
            .unwrap_or_else(|e| panic!("flushing {sent} messages to {topic}: {e}\n{}", self.log_tail()));
        drop(producer);

        let mut offsets: Vec<Option<(i32, i64)>> = vec![None; sent];
        for (index, report) in delivered.try_iter() {
            match report {
                Ok(at) => offsets[index] = Some(at),
                Err(e) => panic!("message {index} to {topic} was not delivered: {e}\n{}", self.log_tail()),
            }
        }
        offsets
            .into_iter()
            .enumerate()
            .map(|(index, at)| at.unwrap_or_else(|| panic!("no delivery report for message {index} to {topic}")))
            .collect()
    }

    /// Reads `topic`'s `partition` from offset `from` until `until_count` messages have come or
    /// `deadline` has passed, whichever is first; returns `(offset, key, value)` of each.
    ///
    /// Fewer than `until_count` messages means the deadline passed: callers assert the count.
    /// The consumer is assigned the partition at an explicit offset, as the Kafka spout is
    /// (a `group.id` is required by librdkafka but no group is joined), and a start offset out
    /// of the partition's range is an error (a panic here), not a silent jump.
    pub fn consume_all(
        &self,
        topic: &str,
        partition: i32,
        from: i64,
        until_count: usize,
        deadline: Duration,
    ) -> Vec<(i64, Option<Vec<u8>>, Vec<u8>)> {
        let consumer: BaseConsumer = self
            .client_config()
            .set("group.id", "squall-tests-unused")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "error")
            .create()
            .unwrap_or_else(|e| panic!("cannot create a consumer: {e}"));
        let mut assignment = TopicPartitionList::new();
        assignment.add_partition_offset(topic, partition, Offset::Offset(from)).unwrap();
        consumer.assign(&assignment).unwrap_or_else(|e| panic!("assigning {topic}/{partition}@{from}: {e}"));

        let deadline = Instant::now() + deadline;
        let mut messages = Vec::new();
        while messages.len() < until_count {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match consumer.poll(left.min(Duration::from_millis(100))) {
                Some(Ok(m)) => {
                    messages.push((m.offset(), m.key().map(<[u8]>::to_vec), m.payload().unwrap_or_default().to_vec()))
                }
                Some(Err(e)) => panic!("consuming {topic}/{partition} from {from}: {e}\n{}", self.log_tail()),
                None => {}
            }
        }
        messages
    }

    /// Each partition's high watermark, as the broker reports it through ListOffsets.
    ///
    /// Beware: tansu 0.6 reports the base offset of the partition's last record batch + 1, not
    /// the last offset + 1 (25,000 records produced in batches read back as offsets 0..24999
    /// while the watermark said 20001). Tests must take end offsets from [`Tansu::produce`]'s
    /// delivery reports instead; this is here to observe the broker, not to rely on.
    pub fn end_offsets(&self, topic: &str) -> Vec<i64> {
        let consumer = self.metadata_client();
        let metadata = consumer
            .fetch_metadata(Some(topic), DEADLINE)
            .unwrap_or_else(|e| panic!("metadata of {topic}: {e}\n{}", self.log_tail()));
        let partitions = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .unwrap_or_else(|| panic!("no topic {topic} in the metadata"))
            .partitions()
            .len() as i32;
        (0..partitions)
            .map(|p| {
                let (_low, high) = consumer
                    .fetch_watermarks(topic, p, DEADLINE)
                    .unwrap_or_else(|e| panic!("watermarks of {topic}/{p}: {e}\n{}", self.log_tail()));
                high
            })
            .collect()
    }

    /// The last [`LOG_TAIL`] lines of the broker's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(LOG_TAIL)..];
        format!("----- tansu: {} (last {} lines) -----\n{}", self.log.display(), tail.len(), tail.join("\n"))
    }

    /// A client that only asks for metadata (a consumer that is never assigned anything).
    fn metadata_client(&self) -> BaseConsumer {
        self.client_config()
            .set("group.id", "squall-tests-unused")
            .create()
            .unwrap_or_else(|e| panic!("cannot create a metadata client: {e}"))
    }

    /// Waits until the broker accepts connections and answers a metadata request: true then,
    /// false if it exits first. Panics when [`DEADLINE`] passes.
    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + DEADLINE;
        // A plain TCP connect first: cheaper to repeat than a client's metadata request, and
        // it keeps librdkafka's reconnect backoff out of the start-up time.
        let mut client = None;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                eprintln!("tansu on {} exited before it was ready ({status})", self.addr);
                return false;
            }
            if client.is_none() && TcpStream::connect_timeout(&self.addr, METADATA_TIMEOUT).is_ok() {
                client = Some(self.metadata_client());
            }
            if client.as_ref().is_some_and(|c| c.fetch_metadata(None, METADATA_TIMEOUT).is_ok()) {
                return true;
            }
            assert!(
                Instant::now() < deadline,
                "tansu on {} did not answer a metadata request within {DEADLINE:?}\n{}",
                self.addr,
                self.log_tail()
            );
            std::thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        // The whole group, in case tansu ever starts helpers: nothing outlives its test.
        unsafe { libc::killpg(self.child.id() as i32, libc::SIGKILL) };
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail());
            if let Some(dir) = self.dir.take() {
                eprintln!("tansu's log kept in {}", dir.keep().display());
            }
        }
    }
}

/// One delivery report: the index of the message in `produce()`'s input, and where it landed
/// (partition, offset) or why it did not.
type Report = (usize, Result<(i32, i64), String>);

/// Collects delivery reports.
struct Deliveries(mpsc::Sender<Report>);

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, index: usize) {
        let report = match result {
            Ok(m) => Ok((m.partition(), m.offset())),
            Err((e, m)) => Err(format!("{e} (partition {})", m.partition())),
        };
        // The receiver outlives the producer, which is dropped before the reports are read.
        let _ = self.0.send((index, report));
    }
}

/// The tansu binary: `$SQUALL_TANSU`, else what `scripts/tansu` prints (installing it first if
/// it must).
fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("SQUALL_TANSU").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        assert!(
            is_executable(&path),
            "SQUALL_TANSU={} is not an executable file; unset it or run `scripts/tansu` to install tansu",
            path.display()
        );
        return path;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/tansu");
    // Its progress and errors (stderr) show in the test's output; stdout is the path.
    let output = Command::new(&script)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}; run `scripts/tansu` to install tansu", script.display()));
    assert!(
        output.status.success(),
        "{} failed ({}); run `scripts/tansu` to see why and install tansu",
        script.display(),
        output.status
    );
    let path = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    assert!(is_executable(&path), "scripts/tansu printed {}, which is not executable", path.display());
    path
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Starts `tansu broker` listening on `addr` only, its output appended to `log`.
fn spawn(binary: &Path, addr: SocketAddr, log: &Path) -> Child {
    let url = format!("tcp://{addr}");
    let log = File::options().create(true).append(true).open(log).unwrap();
    let mut command = Command::new(binary);
    command.args(["broker", "--listener-url", &url, "--advertised-listener-url", &url]);
    command.args(["--storage-engine", "memory://tansu/"]);
    // tansu reads these from the environment too: none may send it elsewhere (an OTLP
    // exporter, a schema registry) or change its cluster.
    for var in ["CLUSTER_ID", "SCHEMA_REGISTRY", "OTEL_EXPORTER_OTLP_ENDPOINT"] {
        command.env_remove(var);
    }
    // Its own process group: see `Drop`.
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    command.stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log).spawn().unwrap_or_else(|e| {
        panic!("cannot start {}: {e}; run `scripts/tansu` to check the installation", binary.display())
    })
}
