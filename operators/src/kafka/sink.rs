//! The `kafka_sink` bolt: each tuple becomes a message of a Kafka topic, acked once the broker
//! has it.
//!
//! ```yaml
//! bolts:
//!   - { id: out, kind: kafka_sink, args: { brokers: "127.0.0.1:9092", topic: counts, key: word, value: count }, inputs: [ { from: count } ] }
//! ```
//!
//! The message's value is the input's field `value` (default `value`), its key the field `key`
//! (default: no key). Strings are written as their UTF-8 bytes, bytes as they are, null as no
//! value (a tombstone) or no key, and numbers and booleans as their JSON text (`3`, `2.5`,
//! `true`). Without a key librdkafka spreads messages over the partitions; with one, equal keys
//! go to the same partition.
//!
//! Each task has an idempotent producer (`enable.idempotence=true`: the broker drops the
//! duplicates of its own retries). An input is acked only when its delivery report says the
//! broker has the message, and failed — so its spout tuple is replayed — when the report says
//! it could not be delivered. The task waits for its outstanding reports whenever the executor
//! flushes it (when its input queue is empty, and at least every millisecond under load): the
//! executor does not come back to an idle bolt, so a report not awaited then would wait for the
//! next input. When the producer's queue is full, `execute` waits for room.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Deserializer};
use squall_runtime::{Bolt, BoltFactory, BoltOutput, BoxError, Deferred, InputStream, StreamDecl, TaskContext, Tuple};

use super::{
    ClientSettings, ErrorLog, check_brokers, check_reserved, check_topic, client_config, creation_error, describe,
    value_bytes,
};
use crate::args::require_field;

/// The longest a flush waits for outstanding delivery reports; those still missing are settled
/// by a later call (or their trees time out and are replayed).
const FLUSH_WAIT: Duration = Duration::from_secs(1);
/// The longest `execute` waits for room in a full producer queue before it fails the input.
const QUEUE_FULL_WAIT: Duration = Duration::from_secs(30);
/// The longest `cleanup` waits for the producer to deliver what it holds.
const CLEANUP_WAIT: Duration = Duration::from_secs(10);

/// The librdkafka settings the sink makes itself, and why they cannot be changed.
const RESERVED: &[(&str, &str)] = &[
    ("bootstrap.servers", "use the sink's `brokers` argument"),
    ("delivery.report.only.error", "the sink acks each tuple on its delivery report"),
];

/// The arguments of the `kafka_sink` bolt.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// The bootstrap brokers, `host:port[,host:port...]` (required).
    #[serde(deserialize_with = "super::brokers")]
    pub brokers: String,
    /// The topic to produce to (required).
    #[serde(deserialize_with = "topic")]
    pub topic: String,
    /// The input field written as the message key (default: none, messages have no key).
    #[serde(default)]
    pub key: Option<String>,
    /// The input field written as the message value (default `value`).
    #[serde(default = "default_value")]
    pub value: String,
    /// librdkafka producer settings, passed on as they are (default none).
    #[serde(default, deserialize_with = "settings")]
    pub rdkafka: ClientSettings,
}

fn default_value() -> String {
    "value".into()
}

fn topic<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let topic = String::deserialize(d)?;
    check_topic(&topic).map_err(serde::de::Error::custom)?;
    Ok(topic)
}

fn settings<'de, D: Deserializer<'de>>(d: D) -> Result<ClientSettings, D::Error> {
    let settings = ClientSettings::deserialize(d)?;
    check_reserved(&settings, RESERVED).map_err(serde::de::Error::custom)?;
    Ok(settings)
}

impl KafkaSinkConfig {
    /// A sink writing field `value` of its inputs to `topic` on `brokers`, without keys.
    pub fn new(brokers: impl Into<String>, topic: impl Into<String>) -> Self {
        KafkaSinkConfig {
            brokers: brokers.into(),
            topic: topic.into(),
            key: None,
            value: default_value(),
            rdkafka: ClientSettings::new(),
        }
    }

    /// Checks the arguments; a config read from a topology file has passed these checks already.
    pub fn validate(&self) -> Result<(), String> {
        check_brokers(&self.brokers)?;
        check_topic(&self.topic)?;
        check_reserved(&self.rdkafka, RESERVED)
    }

    fn producer(&self, ctx: &TaskContext) -> Result<BaseProducer<DeliveryReports>, String> {
        let own = [
            ("client.id", format!("squall-{}-{}-{}", ctx.topology, ctx.component, ctx.task_index)),
            ("enable.idempotence", "true".into()),
            ("linger.ms", "5".into()),
        ];
        client_config(&self.brokers, &own, &self.rdkafka)
            .create_with_context(DeliveryReports::default())
            .map_err(|e| creation_error("kafka sink", e))
    }
}

impl BoltFactory for KafkaSinkConfig {
    fn declare(&self, inputs: &[InputStream]) -> Result<Vec<StreamDecl>, BoxError> {
        self.validate()?;
        require_field(inputs, &self.value, "value")?;
        if let Some(key) = &self.key {
            require_field(inputs, key, "key")?;
        }
        Ok(vec![])
    }

    fn create(&self, ctx: &TaskContext) -> Result<Box<dyn Bolt>, BoxError> {
        self.validate()?;
        Ok(Box::new(KafkaSinkBolt {
            producer: self.producer(ctx)?,
            topic: self.topic.clone(),
            key: self.key.clone(),
            value: self.value.clone(),
            waiting: FxHashMap::default(),
            next_id: 0,
            undelivered: BTreeMap::new(),
            errors: ErrorLog::default(),
        }))
    }
}

/// What the producer reports, kept until the task settles it. Callbacks run inside the task's
/// own `poll` calls, so the locks are never contended.
#[derive(Default)]
struct DeliveryReports {
    /// (delivery id, error if the message was not delivered).
    reports: Mutex<Vec<(usize, Option<String>)>>,
    /// Errors of the client itself (brokers away, a fatal producer error).
    errors: Mutex<Vec<String>>,
}

impl ClientContext for DeliveryReports {
    fn error(&self, error: KafkaError, reason: &str) {
        let message = format!("{}: {reason}", describe(&error));
        self.errors.lock().unwrap_or_else(PoisonError::into_inner).push(message);
    }
}

impl ProducerContext for DeliveryReports {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, id: usize) {
        let error = result.as_ref().err().map(|(e, _)| describe(e));
        self.reports.lock().unwrap_or_else(PoisonError::into_inner).push((id, error));
    }
}

/// One task of a `kafka_sink` bolt.
struct KafkaSinkBolt {
    producer: BaseProducer<DeliveryReports>,
    topic: String,
    key: Option<String>,
    value: String,
    /// Inputs whose messages await their delivery report, by delivery id.
    waiting: FxHashMap<usize, Deferred>,
    next_id: usize,
    /// Messages not delivered and not yet reported, by reason.
    undelivered: BTreeMap<String, u64>,
    errors: ErrorLog,
}

impl KafkaSinkBolt {
    /// Acks or fails the inputs whose delivery reports have come.
    fn settle(&mut self, out: &mut BoltOutput<'_>) {
        // Each poll serves one event; a delivery report event covers a whole batch.
        for _ in 0..64 {
            self.producer.poll(Duration::ZERO);
            let reports =
                std::mem::take(&mut *self.producer.context().reports.lock().unwrap_or_else(PoisonError::into_inner));
            if reports.is_empty() {
                break;
            }
            for (id, error) in reports {
                let Some(input) = self.waiting.remove(&id) else { continue };
                match error {
                    None => out.ack(input),
                    Some(reason) => {
                        *self.undelivered.entry(reason).or_default() += 1;
                        out.fail(input);
                    }
                }
            }
        }
    }

    /// Hands a message to the producer, waiting while its queue is full.
    fn send(
        &mut self,
        id: usize,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        out: &mut BoltOutput<'_>,
    ) -> Result<(), String> {
        let deadline = Instant::now() + QUEUE_FULL_WAIT;
        loop {
            let mut record = BaseRecord::<[u8], [u8], usize>::with_opaque_to(&self.topic, id);
            if let Some(key) = key {
                record = record.key(key);
            }
            if let Some(value) = value {
                record = record.payload(value);
            }
            let sent = self.producer.send(record).map_err(|(e, _)| e);
            match sent {
                Ok(()) => return Ok(()),
                Err(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)) if Instant::now() < deadline => {
                    self.producer.poll(Duration::from_millis(10));
                    self.settle(out);
                }
                Err(e) => return Err(format!("cannot produce to topic {}: {}", self.topic, describe(&e))),
            }
        }
    }

    /// The errors since the last report, as one.
    fn report(&mut self) -> Result<(), BoxError> {
        let client_errors =
            std::mem::take(&mut *self.producer.context().errors.lock().unwrap_or_else(PoisonError::into_inner));
        for error in client_errors {
            self.errors.push(format!("Kafka producer: {error}"));
        }
        // Counted until reported: at most once per reason every 30 s.
        let topic = &self.topic;
        let errors = &mut self.errors;
        self.undelivered.retain(|reason, n| {
            let message =
                format!("{n} messages could not be delivered to topic {topic}: {reason}; their tuples failed");
            !errors.push_as(format!("undelivered: {reason}"), message)
        });
        let errors: Vec<String> = self.errors.drain().collect();
        if errors.is_empty() { Ok(()) } else { Err(errors.join("; ").into()) }
    }
}

impl Bolt for KafkaSinkBolt {
    fn execute(&mut self, input: &Tuple, out: &mut BoltOutput<'_>) -> Result<(), BoxError> {
        let field = |name: &str| {
            input
                .get(name)
                .map(value_bytes)
                .ok_or_else(|| format!("the input has no field `{name}` (fields {})", input.fields()))
        };
        let value = field(&self.value)?;
        let key = match &self.key {
            Some(name) => field(name)?,
            None => None,
        };
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        self.send(id, key.as_deref(), value.as_deref(), out)?;
        self.waiting.insert(id, out.defer());
        self.settle(out);
        Ok(())
    }

    fn flush(&mut self, out: &mut BoltOutput<'_>) -> Result<(), BoxError> {
        self.settle(out);
        let deadline = Instant::now() + FLUSH_WAIT;
        while !self.waiting.is_empty() && Instant::now() < deadline {
            self.producer.poll(Duration::from_millis(1));
            self.settle(out);
        }
        self.report()
    }

    fn cleanup(&mut self) {
        // The executor has flushed for the last time: what is delivered now is in the topic,
        // but its input is neither acked nor failed.
        if let Err(e) = self.producer.flush(CLEANUP_WAIT) {
            let (n, topic) = (self.producer.in_flight_count(), &self.topic);
            tracing::error!("kafka sink: {n} messages to topic {topic} still undelivered when the task stopped: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::KafkaSpoutConfig;
    use crate::kafka::testing::{Kafka, Store};
    use crate::testing::stats;
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    use squall_runtime::{RunOptions, RunReport, StopReason, TopologyBuilder, run_local};
    use std::collections::BTreeSet;
    use std::sync::Arc;

    const TOPOLOGY: &str = "copying";

    /// Creates topics `in` and `out` (2 partitions each) and fills `in` with 500 messages per
    /// partition; returns their values.
    fn fill(kafka: &Kafka) -> BTreeSet<String> {
        kafka.create_topic("in", 2);
        kafka.create_topic("out", 2);
        let mut sent = BTreeSet::new();
        for p in 0..2 {
            let values: Vec<Vec<u8>> = (0..500).map(|i| format!("in/{p}-{i}").into_bytes()).collect();
            kafka.produce("in", p, &values);
            sent.extend(values.into_iter().map(|v| String::from_utf8(v).unwrap()));
        }
        sent
    }

    /// Copies topic `in` to topic `out`, with the offset as key, to the end of `in`.
    fn copy(kafka: &Kafka, store: &Store) -> RunReport {
        let spout: KafkaSpoutConfig = serde_yaml::from_str(&format!(
            "{{ brokers: \"{}\", topic: in, stop_at_end: true, commit_interval: 100ms }}",
            kafka.brokers
        ))
        .unwrap();
        let sink: KafkaSinkConfig =
            serde_yaml::from_str(&format!("{{ brokers: \"{}\", topic: out, key: offset }}", kafka.brokers)).unwrap();
        let mut builder = TopologyBuilder::new(TOPOLOGY);
        builder.spout("kafka", 2, Arc::new(spout));
        builder.bolt("out", 2, Arc::new(sink)).shuffle("kafka");
        let topology = builder.build().unwrap();
        let options =
            RunOptions { duration: Some(Duration::from_secs(20)), coordination: Some(store.session(TOPOLOGY)) };
        run_local(&topology, options).unwrap()
    }

    /// Every message of topic `out`, as (key, value) strings.
    fn written(kafka: &Kafka) -> Vec<(String, String)> {
        let total: i64 = (0..2).map(|p| kafka.watermarks("out", p).1).sum();
        let text = |b: Option<Vec<u8>>| String::from_utf8(b.unwrap()).unwrap();
        kafka.read("out", 2, total as usize).into_iter().map(|(_, _, key, value)| (text(key), text(value))).collect()
    }

    /// Guarantee: every input becomes one message of the topic, with the configured key, and
    /// is acked (so its spout tuple completes) once the broker has it.
    #[test]
    fn every_input_is_written_once_and_acked_after_delivery() {
        let (store, kafka) = (Store::start(), Kafka::start());
        let sent = fill(&kafka);
        let report = copy(&kafka, &store);
        assert_eq!(report.reason, StopReason::Completed);
        let written = written(&kafka);
        assert_eq!(written.len(), 1000, "one message per input");
        assert_eq!(written.iter().map(|(_, v)| v.clone()).collect::<BTreeSet<_>>(), sent);
        for (key, value) in &written {
            assert!(value.ends_with(&format!("-{key}")), "key {key} is the offset of {value}");
        }
        let (spout, sink) = (stats(&report, "kafka"), stats(&report, "out"));
        assert_eq!((spout.acked, spout.failed), (1000, 0));
        assert_eq!((sink.acked, sink.failed, sink.errors), (1000, 0, 0), "{:?}", sink.last_errors);
    }

    /// Guarantee: an input whose message the broker refuses fails, its spout tuple is emitted
    /// again, and in the end every input is in the topic.
    #[test]
    fn refused_messages_fail_and_are_replayed_until_written() {
        let (store, kafka) = (Store::start(), Kafka::start());
        let sent = fill(&kafka);
        // The sink's first produce requests are refused for good (not retried by librdkafka).
        let refused = [RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE; 3];
        kafka.mock().request_errors(RDKafkaApiKey::Produce, &refused);
        let report = copy(&kafka, &store);

        assert_eq!(report.reason, StopReason::Completed);
        let written = written(&kafka);
        assert_eq!(written.iter().map(|(_, v)| v.clone()).collect::<BTreeSet<_>>(), sent, "every input is there");
        let (spout, sink) = (stats(&report, "kafka"), stats(&report, "out"));
        assert!(sink.failed > 0, "no delivery failed: {sink:?}");
        assert_eq!(spout.failed, sink.failed, "each failed input failed its spout tuple");
        assert_eq!(spout.acked, 1000);
        assert!(
            sink.last_errors
                .iter()
                .any(|e| e.contains("could not be delivered to topic out: ") && e.contains("too large")),
            "{:?}",
            sink.last_errors
        );
    }

    #[test]
    fn args_from_yaml() {
        let registry = crate::registry();
        let load = |args: &str| {
            let yaml = format!(
                "name: t\nspouts: [ {{ id: s, kind: generator }} ]\nbolts:\n  - {{ id: o, kind: kafka_sink, args: {{ {args} }}, inputs: [ {{ from: s }} ] }}\n"
            );
            registry.load_str(&yaml, "t.yaml").map(|_| ()).map_err(|e| e.to_string())
        };
        assert_eq!(load("brokers: b, topic: out, value: line"), Ok(()));
        assert_eq!(
            load("brokers: b, topic: out, value: line, key: line, rdkafka: { linger.ms: 50, acks: all }"),
            Ok(())
        );
        let config: KafkaSinkConfig = serde_yaml::from_str("{ brokers: b, topic: out }").unwrap();
        assert_eq!((config.key, config.value.as_str()), (None, "value"));
        for (args, wanted) in [
            ("brokers: b, topic: out, value: line, partition: 1", "unknown field `partition`"),
            ("brokers: b, value: line", "missing field `topic`"),
            ("brokers: b, topic: \"a b\", value: line", "not a valid Kafka topic name"),
            ("brokers: b, topic: out", "value `value` is not a field of input stream s:default"),
            ("brokers: b, topic: out, value: line, key: id", "key `id` is not a field of input stream s:default"),
            ("brokers: b, topic: out, value: line, rdkafka: { bootstrap.servers: x }", "use the sink's `brokers`"),
        ] {
            let err = load(args).unwrap_err();
            assert!(err.contains(wanted), "{args}: {err}");
        }
    }
}
