//! The Kafka side of the benchmarks: clients of a broker, a tansu broker started for a run,
//! topics, and a producer writing at a steady rate. Used by `squall bench kafka` and by
//! `squall bench failover` (its `kafka` source and its consumer-group baseline).

use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::ClientContext;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};

use super::failover::unix_nanos;

/// The longest a metadata, watermark or topic-creation request may take.
pub(crate) const BROKER_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts at starting tansu: another process may take its port between the moment it is
/// picked and tansu's bind.
const TANSU_STARTS: usize = 3;
/// How many of a log's last lines a failure report carries.
const LOG_TAIL: usize = 20;

/// Where the broker comes from.
#[derive(Clone, Debug)]
pub enum BrokerSource {
    /// Brokers that run already: their bootstrap list, `host:port[,host:port...]`.
    Given(String),
    /// A tansu binary to start on a free loopback port, with in-memory storage, for the run.
    Tansu(PathBuf),
}

/// A `tansu broker` on a free loopback port with in-memory storage, SIGKILLed when dropped.
pub(crate) struct Tansu {
    child: Child,
    /// Where it listens.
    pub(crate) addr: SocketAddr,
    /// What `tansu --version` says.
    pub(crate) version: String,
    /// Its output.
    pub(crate) log: PathBuf,
}

impl Tansu {
    /// Starts `binary` with its log in `dir`, and waits until it answers a metadata request.
    pub(crate) async fn start(binary: &Path, dir: &Path) -> anyhow::Result<Tansu> {
        let version = Command::new(binary)
            .arg("--version")
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "tansu".to_string());
        let log = dir.join("tansu.log");
        for _ in 0..TANSU_STARTS {
            let addr = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
            let mut tansu =
                Tansu { child: spawn_tansu(binary, addr, &log)?, addr, version: version.clone(), log: log.clone() };
            if tansu.ready().await? {
                return Ok(tansu);
            }
        }
        anyhow::bail!(
            "{} exited before it was ready, {TANSU_STARTS} times; its log ({}) ends:\n{}",
            binary.display(),
            log.display(),
            tail(&log)
        )
    }

    /// Waits until it answers a metadata request: `false` when it exited first.
    async fn ready(&mut self) -> anyhow::Result<bool> {
        let deadline = Instant::now() + BROKER_TIMEOUT;
        let mut client = None;
        loop {
            if self.child.try_wait()?.is_some() {
                return Ok(false);
            }
            // A client made before the port is open logs its failed connections as errors.
            if client.is_none() && TcpStream::connect_timeout(&self.addr, Duration::from_millis(100)).is_ok() {
                client = Some(metadata_client(&self.addr.to_string())?);
            }
            if client.as_ref().is_some_and(|c| c.fetch_metadata(None, Duration::from_millis(500)).is_ok()) {
                return Ok(true);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "tansu on {} did not answer within {BROKER_TIMEOUT:?}; its log ({}) ends:\n{}",
                self.addr,
                self.log.display(),
                tail(&self.log)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The tansu binary: `$SQUALL_TANSU`, else the path `scripts/tansu` (relative to the current
/// directory: a checkout of Squall) prints, which installs tansu on first use. The error says
/// how to get one.
pub fn find_tansu() -> anyhow::Result<PathBuf> {
    const HOW: &str = "install tansu (a Kafka-protocol broker) with `scripts/tansu` from a Squall checkout and run \
                       from there, or set SQUALL_TANSU to its path, or give a broker with --brokers";
    if let Some(path) = std::env::var_os("SQUALL_TANSU").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        anyhow::ensure!(path.is_file(), "SQUALL_TANSU={} is not a file: {HOW}", path.display());
        return Ok(path);
    }
    let script = Path::new("scripts/tansu");
    anyhow::ensure!(script.is_file(), "no tansu: SQUALL_TANSU is not set and there is no {}: {HOW}", script.display());
    // Its progress and errors show on stderr; stdout is the path.
    let output = Command::new(script)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {}: {HOW}", script.display()))?;
    anyhow::ensure!(output.status.success(), "{} failed ({}): {HOW}", script.display(), output.status);
    let path = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    anyhow::ensure!(path.is_file(), "{} printed {}, which is not a file: {HOW}", script.display(), path.display());
    Ok(path)
}

/// Starts `tansu broker` listening on `addr` only, its output appended to `log`.
fn spawn_tansu(binary: &Path, addr: SocketAddr, log: &Path) -> anyhow::Result<Child> {
    let url = format!("tcp://{addr}");
    let log = File::options().create(true).append(true).open(log)?;
    let mut command = Command::new(binary);
    command.args(["broker", "--listener-url", &url, "--advertised-listener-url", &url]);
    command.args(["--storage-engine", "memory://tansu/"]);
    // tansu reads these from the environment too: none may send it elsewhere.
    for var in ["CLUSTER_ID", "SCHEMA_REGISTRY", "OTEL_EXPORTER_OTLP_ENDPOINT"] {
        command.env_remove(var);
    }
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe and touches no memory of this process. Should this
        // process die without dropping the handle (SIGKILL), the kernel kills tansu too.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
    }
    command
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))
}

/// A client configuration for `brokers`.
pub(crate) fn client_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    config
}

/// A client that only reads metadata.
pub(crate) fn metadata_client(brokers: &str) -> anyhow::Result<BaseConsumer> {
    client_config(brokers).set("group.id", "squall-bench-metadata").create().context("cannot create a Kafka client")
}

/// Creates `topic` and waits until the metadata shows its `partitions` partitions, each with a
/// leader.
pub(crate) async fn create_topic(brokers: &str, topic: &str, partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> =
        client_config(brokers).create().context("cannot create a Kafka admin client")?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let options = AdminOptions::new().operation_timeout(Some(BROKER_TIMEOUT)).request_timeout(Some(BROKER_TIMEOUT));
    let created = tokio::time::timeout(BROKER_TIMEOUT * 2, admin.create_topics([&new], &options))
        .await
        .with_context(|| format!("creating topic {topic} on {brokers} took more than {:?}", BROKER_TIMEOUT * 2))?
        .with_context(|| format!("cannot create topic {topic} on {brokers}"))?;
    for result in created {
        if let Err((_, code)) = result {
            anyhow::bail!("cannot create topic {topic} on {brokers}: {code}");
        }
    }
    let client = metadata_client(brokers)?;
    let deadline = Instant::now() + BROKER_TIMEOUT;
    loop {
        let metadata = client.fetch_metadata(Some(topic), Duration::from_secs(1)).ok();
        let led = metadata.as_ref().and_then(|m| m.topics().iter().find(|t| t.name() == topic)).map(|t| {
            t.error().is_none()
                && t.partitions().iter().filter(|p| p.error().is_none() && p.leader() >= 0).count()
                    == partitions as usize
        });
        if led == Some(true) {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "topic {topic} was created but its {partitions} partitions have no leader after {BROKER_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) async fn delete_topic(brokers: &str, topic: &str) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> =
        client_config(brokers).create().context("cannot create a Kafka admin client")?;
    let options = AdminOptions::new().operation_timeout(Some(BROKER_TIMEOUT));
    let deleted = tokio::time::timeout(BROKER_TIMEOUT, admin.delete_topics(&[topic], &options))
        .await
        .with_context(|| format!("deleting topic {topic} took more than {BROKER_TIMEOUT:?}"))??;
    for result in deleted {
        if let Err((_, code)) = result {
            anyhow::bail!("cannot delete topic {topic} on {brokers}: {code}");
        }
    }
    Ok(())
}

/// What the producer's delivery reports said.
#[derive(Default)]
struct ProducerTally {
    delivered: u64,
    failed: u64,
    first_failure: Option<String>,
}

/// Counts the delivery reports.
struct Deliveries(Mutex<ProducerTally>);

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let mut tally = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(_) => tally.delivered += 1,
            Err((e, m)) => {
                tally.failed += 1;
                tally.first_failure.get_or_insert_with(|| format!("partition {}: {e}", m.partition()));
            }
        }
    }
}

/// A thread producing to every partition of a topic at a steady rate, round-robin; each
/// message's value is the Unix time in nanoseconds it was sent at, in decimal.
pub(crate) struct SteadyProducer {
    stop: Arc<AtomicBool>,
    producer: Arc<BaseProducer<Deliveries>>,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
}

impl SteadyProducer {
    pub(crate) fn start(brokers: &str, topic: &str, partitions: i32, rate: f64) -> anyhow::Result<SteadyProducer> {
        let producer: BaseProducer<Deliveries> = client_config(brokers)
            // Few, larger batches: tansu's fetch cost grows with the batches in a partition.
            .set("linger.ms", "10")
            .set("message.timeout.ms", "30000")
            .create_with_context(Deliveries(Mutex::new(ProducerTally::default())))
            .context("cannot create a Kafka producer")?;
        let producer = Arc::new(producer);
        let stop = Arc::new(AtomicBool::new(false));
        let (thread_stop, thread_producer, topic) = (stop.clone(), producer.clone(), topic.to_string());
        let thread = std::thread::Builder::new()
            .name("baseline-producer".into())
            .spawn(move || produce_steadily(&thread_producer, &topic, partitions, rate, &thread_stop))?;
        Ok(SteadyProducer { stop, producer, thread: Some(thread) })
    }

    /// Sent and failed so far, for a failure report.
    pub(crate) fn describe(&self) -> String {
        let tally = self.producer.context().0.lock().unwrap_or_else(|e| e.into_inner());
        match &tally.first_failure {
            None => format!("the producer had {} messages delivered, none failed", tally.delivered),
            Some(first) => {
                format!(
                    "the producer had {} messages delivered, {} failed, the first: {first}",
                    tally.delivered, tally.failed
                )
            }
        }
    }

    /// Stops the thread; how many of its messages the broker acknowledged.
    pub(crate) fn stop(mut self) -> anyhow::Result<u64> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result?,
            Some(Err(_)) => anyhow::bail!("the producer thread panicked"),
            None => {}
        }
        Ok(self.producer.context().0.lock().unwrap_or_else(|e| e.into_inner()).delivered)
    }
}

impl Drop for SteadyProducer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn produce_steadily(
    producer: &BaseProducer<Deliveries>,
    topic: &str,
    partitions: i32,
    rate: f64,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut sent: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let due = (started.elapsed().as_secs_f64() * rate) as u64;
        while sent < due {
            let value = unix_nanos().to_string();
            let partition = (sent % partitions as u64) as i32;
            let record: BaseRecord<'_, (), str> = BaseRecord::to(topic).payload(value.as_str()).partition(partition);
            match producer.send(record) {
                Ok(()) => {}
                // The local queue is full (the broker is slow or gone): this one is skipped,
                // and the delivery reports will tell.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {}
                Err((e, _)) => anyhow::bail!("cannot produce to topic {topic}: {e}"),
            }
            sent += 1;
        }
        producer.poll(Duration::from_millis(1));
    }
    // What is still queued is of no use to anyone: a short flush, then the rest is dropped.
    let _ = producer.flush(Duration::from_secs(1));
    Ok(())
}

/// The last [`LOG_TAIL`] lines of the file at `path`.
pub(crate) fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL)..].join("\n")
}

/// The Kafka source's side of a failover run: its broker (started for the run, or given), a
/// topic of its own and a producer writing to it at a steady rate.
pub(crate) struct KafkaFeed {
    /// Stopped when the feed is dropped.
    tansu: Option<Tansu>,
    /// The bootstrap brokers.
    pub(crate) brokers: String,
    /// The topic the producer writes to.
    pub(crate) topic: String,
    producer: Option<SteadyProducer>,
}

impl KafkaFeed {
    /// Starts the broker if it is to be started (its log in `dir`), creates the topic with
    /// `partitions` partitions and starts producing `rate` messages per second over them.
    pub(crate) async fn start(source: &BrokerSource, dir: &Path, partitions: i32, rate: f64) -> anyhow::Result<Self> {
        let (tansu, brokers) = match source {
            BrokerSource::Given(brokers) => (None, brokers.clone()),
            BrokerSource::Tansu(binary) => {
                let tansu = Tansu::start(binary, dir).await?;
                let brokers = tansu.addr.to_string();
                (Some(tansu), brokers)
            }
        };
        let topic = format!("squall-failover-{}", std::process::id());
        create_topic(&brokers, &topic, partitions).await?;
        let producer = SteadyProducer::start(&brokers, &topic, partitions, rate)?;
        Ok(KafkaFeed { tansu, brokers, topic, producer: Some(producer) })
    }

    /// Stops producing; how many messages the broker acknowledged over the run.
    pub(crate) fn stop_producing(&mut self) -> anyhow::Result<u64> {
        let producer = self.producer.take().context("the feed's producer was stopped already")?;
        producer.stop()
    }

    /// The broker's last log lines, when the run started it.
    pub(crate) fn broker_log(&self) -> Option<String> {
        self.tansu.as_ref().map(|t| format!("--- {} ({}) ---\n{}", t.version, t.log.display(), tail(&t.log)))
    }
}
