//! What the Kafka kinds' tests run against: a one-replica znode store and librdkafka's mock
//! cluster, with a producer and a reader for the tests' own messages.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, DefaultProducerContext, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use squall_coordinator::replica::{Replica, ReplicaConfig};
use squall_runtime::Coordination;

/// How long a test waits for anything before it fails.
pub(crate) const DEADLINE: Duration = Duration::from_secs(15);

/// A one-replica store and the runtime it (and the sessions on it) run on.
pub(crate) struct Store {
    replica: Option<Replica>,
    runtime: tokio::runtime::Runtime,
    inspector: Option<Coordination>,
    _dir: tempfile::TempDir,
}

impl Store {
    pub(crate) fn start() -> Store {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let replica = runtime.block_on(async {
            let replica = Replica::start(ReplicaConfig::standalone(dir.path(), "127.0.0.1:0".parse().unwrap())).await;
            let replica = replica.unwrap();
            assert!(replica.wait_ready(DEADLINE).await);
            replica
        });
        let mut store = Store { replica: Some(replica), runtime, inspector: None, _dir: dir };
        store.inspector = Some(store.session("inspector"));
        store
    }

    /// A new session for topology `topology`'s tasks.
    pub(crate) fn session(&self, topology: &str) -> Coordination {
        let addr = self.replica.as_ref().unwrap().client_addr().to_string();
        self.runtime.block_on(Coordination::connect(&addr, topology)).unwrap()
    }

    /// The offset stored at `path`.
    pub(crate) fn offset(&self, path: &str) -> Option<i64> {
        let (data, _) = self.inspector.as_ref().unwrap().read(path).unwrap()?;
        let stored: serde_json::Value = serde_json::from_slice(&data).unwrap();
        Some(stored["offset"].as_i64().unwrap())
    }

    /// Writes `{"offset": offset}` at `path`, whatever its version.
    pub(crate) fn set_offset(&self, path: &str, offset: i64) {
        let inspector = self.inspector.as_ref().unwrap();
        let data = serde_json::json!({ "offset": offset }).to_string();
        let version = inspector.read(path).unwrap().map(|(_, version)| version);
        inspector.write(path, data.as_bytes(), version).unwrap();
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.inspector = None;
        if let Some(replica) = self.replica.take() {
            self.runtime.block_on(replica.shutdown());
        }
    }
}

/// A mock Kafka cluster of one broker.
pub(crate) struct Kafka {
    mock: MockCluster<'static, DefaultProducerContext>,
    pub(crate) brokers: String,
}

/// Delivered offsets, by the index of the message in a `produce` call.
#[derive(Default)]
struct Delivered(Mutex<Vec<(usize, Result<i64, String>)>>);

impl ClientContext for Delivered {}

impl ProducerContext for Delivered {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, index: usize) {
        let outcome = match result {
            Ok(message) => Ok(message.offset()),
            Err((e, _)) => Err(e.to_string()),
        };
        self.0.lock().unwrap().push((index, outcome));
    }
}

/// A message read back: partition, offset, key, value.
pub(crate) type Record = (i32, i64, Option<Vec<u8>>, Option<Vec<u8>>);

impl Kafka {
    pub(crate) fn start() -> Kafka {
        let mock = MockCluster::new(1).unwrap();
        let brokers = mock.bootstrap_servers();
        Kafka { mock, brokers }
    }

    pub(crate) fn mock(&self) -> &MockCluster<'static, DefaultProducerContext> {
        &self.mock
    }

    pub(crate) fn create_topic(&self, topic: &str, partitions: i32) {
        self.mock.create_topic(topic, partitions, 1).unwrap();
    }

    /// Produces `values` (with no key) to partition `partition` of `topic` and returns the
    /// offsets they got, in order.
    pub(crate) fn produce(&self, topic: &str, partition: i32, values: &[Vec<u8>]) -> Vec<i64> {
        let producer: BaseProducer<Delivered> = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("linger.ms", "5")
            .create_with_context(Delivered::default())
            .unwrap();
        for (index, value) in values.iter().enumerate() {
            let mut record = BaseRecord::with_opaque_to(topic, index).partition(partition).payload(value.as_slice());
            loop {
                match producer.send::<(), [u8]>(record) {
                    Ok(()) => break,
                    Err((_, back)) => {
                        producer.poll(Duration::from_millis(10));
                        record = back;
                    }
                }
            }
            producer.poll(Duration::ZERO);
        }
        producer.flush(DEADLINE).unwrap();
        let mut delivered = std::mem::take(&mut *producer.context().0.lock().unwrap());
        delivered.sort_by_key(|(index, _)| *index);
        assert_eq!(delivered.len(), values.len());
        delivered.into_iter().map(|(_, offset)| offset.unwrap()).collect()
    }

    /// The low and high watermarks of a partition.
    pub(crate) fn watermarks(&self, topic: &str, partition: i32) -> (i64, i64) {
        let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &self.brokers).create().unwrap();
        consumer.fetch_watermarks(topic, partition, DEADLINE).unwrap()
    }

    /// Reads every partition of `topic` from its start until `count` messages have come.
    pub(crate) fn read(&self, topic: &str, partitions: i32, count: usize) -> Vec<Record> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", "test-reader")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut assignment = TopicPartitionList::new();
        for p in 0..partitions {
            assignment.add_partition_offset(topic, p, Offset::Beginning).unwrap();
        }
        consumer.assign(&assignment).unwrap();
        let deadline = Instant::now() + DEADLINE;
        let mut records = Vec::new();
        while records.len() < count {
            assert!(Instant::now() < deadline, "read {} of {count} messages of {topic}", records.len());
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => records.push((
                    m.partition(),
                    m.offset(),
                    m.key().map(<[u8]>::to_vec),
                    m.payload().map(<[u8]>::to_vec),
                )),
                Some(Err(e)) => panic!("reading {topic}: {e}"),
                None => {}
            }
        }
        records
    }
}

/// Waits until `done`, failing the test after [`DEADLINE`].
pub(crate) fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Something shared between a test and the tasks of its topology.
pub(crate) type Shared<T> = Arc<Mutex<T>>;
