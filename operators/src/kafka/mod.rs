//! The Kafka kinds: the `kafka` spout and the `kafka_sink` bolt, on rdkafka (librdkafka).
//!
//! ```yaml
//! spouts:
//!   - { id: events, kind: kafka, parallelism: 2, args: { brokers: "127.0.0.1:9092", topic: [clicks, views] } }
//! bolts:
//!   - { id: copy, kind: kafka_sink, args: { brokers: "127.0.0.1:9092", topic: copied }, inputs: [ { from: events } ] }
//! ```
//!
//! The spout ([`spout`]) reads partitions it assigns itself — never a consumer group — and keeps
//! its progress in the znode store, `/squall/offsets/<topology>/<spout>/<topic>/<partition>`,
//! not in Kafka; the private `offsets` module holds what a task knows of one partition (the
//! messages it emitted and has not seen acked, and the znode it commits the acked prefix to).
//! The sink ([`sink`]) acks a tuple only once the broker has confirmed its message.
//!
//! Both take an `rdkafka` map of librdkafka settings passed to the client as they are
//! ([`ClientSetting`]), apart from the few each kind sets itself for its guarantees.

pub mod sink;
pub mod spout;

mod offsets;
#[cfg(test)]
mod testing;

pub use sink::KafkaSinkConfig;
pub use spout::{KafkaSpoutConfig, StartAt, ValueFormat};

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;
use rustc_hash::FxHashMap;
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use squall_runtime::Value;

/// The value of one librdkafka setting in a topology file's `rdkafka:` map: a string, a number
/// or a boolean, handed to librdkafka as text (`fetch.min.bytes: 65536` is `"65536"`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientSetting(pub String);

impl<'de> Deserialize<'de> for ClientSetting {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Scalar;
        impl Visitor<'_> for Scalar {
            type Value = ClientSetting;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, a number or a boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ClientSetting, E> {
                Ok(ClientSetting(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<ClientSetting, E> {
                Ok(ClientSetting(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ClientSetting, E> {
                Ok(ClientSetting(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ClientSetting, E> {
                Ok(ClientSetting(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ClientSetting, E> {
                Ok(ClientSetting(v.to_string()))
            }
        }
        d.deserialize_any(Scalar)
    }
}

/// The librdkafka settings of one kind's `rdkafka:` map.
pub type ClientSettings = BTreeMap<String, ClientSetting>;

/// The same error is reported at most this often.
const ERROR_REPEAT: Duration = Duration::from_secs(30);

/// Errors waiting to be reported, each at most once per [`ERROR_REPEAT`] (a broker or store
/// that is away would otherwise repeat the same one many times a second).
#[derive(Default)]
pub(crate) struct ErrorLog {
    queued: Vec<String>,
    last: FxHashMap<String, Instant>,
}

impl ErrorLog {
    /// Queues `message`, unless it was queued less than [`ERROR_REPEAT`] ago.
    pub(crate) fn push(&mut self, message: String) {
        self.push_as(message.clone(), message);
    }

    /// Queues `message` unless one of kind `kind` was queued less than [`ERROR_REPEAT`] ago;
    /// whether it was queued.
    pub(crate) fn push_as(&mut self, kind: String, message: String) -> bool {
        let now = Instant::now();
        if self.last.get(&kind).is_some_and(|at| now.duration_since(*at) < ERROR_REPEAT) {
            return false;
        }
        if self.last.len() > 64 {
            self.last.retain(|_, at| now.duration_since(*at) < ERROR_REPEAT);
        }
        tracing::warn!("{message}");
        self.last.insert(kind, now);
        self.queued.push(message);
        true
    }

    /// The queued messages, oldest first.
    pub(crate) fn drain(&mut self) -> std::vec::Drain<'_, String> {
        self.queued.drain(..)
    }
}

pub(crate) fn brokers<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let brokers = String::deserialize(d)?;
    check_brokers(&brokers).map_err(de::Error::custom)?;
    Ok(brokers)
}

pub(crate) fn check_brokers(brokers: &str) -> Result<(), String> {
    if brokers.trim().is_empty() {
        return Err("`brokers` must name at least one broker, `host:port`".into());
    }
    Ok(())
}

/// An error unless `settings` leaves alone every setting in `reserved` (name, why).
pub(crate) fn check_reserved(settings: &ClientSettings, reserved: &[(&str, &str)]) -> Result<(), String> {
    for (name, why) in reserved {
        if settings.contains_key(*name) {
            return Err(format!("`rdkafka: {{ {name}: ... }}` cannot be set: {why}"));
        }
    }
    Ok(())
}

/// The client configuration: `bootstrap.servers`, then the kind's own settings, then the
/// user's (which may override the kind's defaults, but not its reserved settings: the caller
/// checked those).
pub(crate) fn client_config(brokers: &str, own: &[(&str, String)], user: &ClientSettings) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    for (name, value) in own {
        config.set(*name, value);
    }
    for (name, value) in user {
        config.set(name, &value.0);
    }
    config
}

/// A client-creation error in the words of the topology file.
pub(crate) fn creation_error(kind: &str, error: KafkaError) -> String {
    match error {
        KafkaError::ClientConfig(_, description, name, value) => {
            format!("{kind}: rdkafka setting `{name}: {value}` is refused: {description}")
        }
        other => format!("{kind}: cannot create the Kafka client: {}", describe(&other)),
    }
}

/// An rdkafka error as a user reads it: librdkafka's own description when it has one.
pub(crate) fn describe(error: &KafkaError) -> String {
    match error.rdkafka_error_code() {
        Some(code) => code.to_string(),
        None => error.to_string(),
    }
}

/// Checks a topic name as Kafka does (1 to 249 of `a-z A-Z 0-9 . _ -`, not `.` or `..`); it is
/// also a segment of the spout's offset znode paths, which these characters keep valid.
pub(crate) fn check_topic(name: &str) -> Result<(), String> {
    let valid_chars = name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if name.is_empty() || name.len() > 249 || !valid_chars || name == "." || name == ".." {
        return Err(format!("`{name}` is not a valid Kafka topic name (1 to 249 letters, digits, `.`, `_` and `-`)"));
    }
    Ok(())
}

/// The bytes a tuple value is written to Kafka as: a string's UTF-8, bytes as they are, null as
/// no bytes at all (a tombstone value, or no key), anything else as its JSON text.
pub(crate) fn value_bytes(value: &Value) -> Option<Vec<u8>> {
    match value {
        Value::Null => None,
        Value::Str(s) => Some(s.as_bytes().to_vec()),
        Value::Bytes(b) => Some(b.clone()),
        other => Some(other.to_json().to_string().into_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_scalars_given_as_text() {
        let settings: ClientSettings =
            serde_yaml::from_str("{ fetch.min.bytes: 65536, check.crcs: true, client.id: me, x: 0.5 }").unwrap();
        assert_eq!(settings["fetch.min.bytes"], ClientSetting("65536".into()));
        assert_eq!(settings["check.crcs"], ClientSetting("true".into()));
        assert_eq!(settings["client.id"], ClientSetting("me".into()));
        assert_eq!(settings["x"], ClientSetting("0.5".into()));
        let err = serde_yaml::from_str::<ClientSettings>("{ a: [1] }").unwrap_err().to_string();
        assert!(err.contains("a string, a number or a boolean"), "{err}");
    }

    #[test]
    fn reserved_settings_are_named_with_the_reason() {
        let settings: ClientSettings = serde_yaml::from_str("{ auto.offset.reset: earliest }").unwrap();
        let err = check_reserved(&settings, &[("auto.offset.reset", "the spout reports lost offsets")]).unwrap_err();
        assert!(err.contains("auto.offset.reset") && err.contains("reports lost offsets"), "{err}");
        assert!(check_reserved(&settings, &[("group.id", "x")]).is_ok());
    }

    #[test]
    fn repeated_errors_are_reported_once() {
        let mut log = ErrorLog::default();
        log.push("broker away".into());
        log.push("broker away".into());
        log.push("store away".into());
        assert_eq!(log.drain().collect::<Vec<_>>(), ["broker away", "store away"]);
        log.push("broker away".into());
        assert_eq!(log.drain().count(), 0, "reported moments ago");
        assert!(log.push_as("undelivered".into(), "3 lost".into()));
        assert!(!log.push_as("undelivered".into(), "5 lost".into()), "the same kind of error");
        assert_eq!(log.drain().collect::<Vec<_>>(), ["3 lost"]);
    }

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(check_topic("clicks.v2_eu-1").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", &"x".repeat(250)] {
            assert!(check_topic(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn values_become_bytes() {
        assert_eq!(value_bytes(&Value::from("fox")), Some(b"fox".to_vec()));
        assert_eq!(value_bytes(&Value::Bytes(vec![0, 255])), Some(vec![0, 255]));
        assert_eq!(value_bytes(&Value::Null), None);
        assert_eq!(value_bytes(&Value::Int(42)), Some(b"42".to_vec()));
        assert_eq!(value_bytes(&Value::Bool(true)), Some(b"true".to_vec()));
        assert_eq!(value_bytes(&Value::Float(2.5)), Some(b"2.5".to_vec()));
    }
}
