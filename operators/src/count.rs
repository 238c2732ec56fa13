//! The `count` bolt: a running count per key.
//!
//! ```yaml
//! bolts:
//!   - { id: count, kind: count, args: { key: word }, inputs: [ { from: split, grouping: { fields: [word] } } ] }
//! ```
//!
//! For every input, adds one to the count of the value of field `key` and emits `[key, count]`
//! (fields `<key>` and `count`), anchored to the input. Counts live in the task's memory: give
//! the bolt a fields grouping on `key` so that each key is counted by one task. With
//! at-least-once processing a replayed input is counted again.

use std::hash::Hash;

use rustc_hash::FxHashMap;
use serde::Deserialize;
use smol_str::SmolStr;
use squall_runtime::{
    Bolt, BoltFactory, BoltOutput, BoxError, InputStream, StreamDecl, TaskContext, Tuple, Value, values,
};

use crate::args::require_field;

/// The arguments of the `count` bolt.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountBoltConfig {
    /// The input field whose values are counted (default `word`).
    #[serde(default = "default_key")]
    pub key: String,
}

impl Default for CountBoltConfig {
    fn default() -> Self {
        CountBoltConfig { key: default_key() }
    }
}

fn default_key() -> String {
    "word".into()
}

impl BoltFactory for CountBoltConfig {
    fn declare(&self, inputs: &[InputStream]) -> Result<Vec<StreamDecl>, BoxError> {
        if self.key == "count" {
            return Err("`key` cannot be `count`: that is the name of the output field that holds the count".into());
        }
        require_field(inputs, &self.key, "key")?;
        Ok(vec![StreamDecl::default_stream([self.key.as_str(), "count"])])
    }

    fn create(&self, _ctx: &TaskContext) -> Result<Box<dyn Bolt>, BoxError> {
        Ok(Box::new(CountBolt { key: self.key.clone(), strings: FxHashMap::default(), others: FxHashMap::default() }))
    }
}

/// A key that is not a string, in a form that can be hashed: floats by their bits.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum OtherKey {
    Null,
    Bool(bool),
    Int(i64),
    Float(u64),
    Str(SmolStr),
    Bytes(Vec<u8>),
}

impl OtherKey {
    fn of(value: &Value) -> OtherKey {
        match value {
            Value::Null => OtherKey::Null,
            Value::Bool(b) => OtherKey::Bool(*b),
            Value::Int(i) => OtherKey::Int(*i),
            // -0.0 and 0.0 are one key, as they are one number.
            Value::Float(f) => OtherKey::Float(if *f == 0.0 { 0 } else { f.to_bits() }),
            Value::Str(s) => OtherKey::Str(s.clone()),
            Value::Bytes(b) => OtherKey::Bytes(b.clone()),
        }
    }
}

/// One task of a `count` bolt.
struct CountBolt {
    key: String,
    /// Counts of string keys: the common case, looked up without building a key.
    strings: FxHashMap<SmolStr, i64>,
    /// Counts of every other kind of key.
    others: FxHashMap<OtherKey, i64>,
}

fn increment<K: Hash + Eq>(counts: &mut FxHashMap<K, i64>, key: K) -> i64 {
    let count = counts.entry(key).or_insert(0);
    *count += 1;
    *count
}

impl Bolt for CountBolt {
    fn execute(&mut self, input: &Tuple, out: &mut BoltOutput<'_>) -> Result<(), BoxError> {
        let Some(value) = input.get(&self.key) else {
            return Err(format!("the input has no field `{}` (fields {})", self.key, input.fields()).into());
        };
        let count = match value {
            Value::Str(s) => match self.strings.get_mut(s.as_str()) {
                Some(count) => {
                    *count += 1;
                    *count
                }
                None => increment(&mut self.strings, s.clone()),
            },
            other => increment(&mut self.others, OtherKey::of(other)),
        };
        out.emit(values![value.clone(), count]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{build_error, collected_values, collector, rows, run, stats};
    use serde_json::json;
    use squall_runtime::TopologyBuilder;
    use std::collections::HashMap;
    use std::sync::Arc;

    #[test]
    fn emits_the_running_count_of_each_key() {
        let words = ["a", "b", "a", "c", "a", "b"];
        let (sink, collected) = collector();
        let mut builder = TopologyBuilder::new("count");
        builder.spout("words", 1, rows(&["word"], words.iter().map(|w| values![*w]).collect()));
        builder.bolt("count", 1, Arc::new(CountBoltConfig::default())).fields("words", &["word"]);
        builder.bolt("sink", 1, sink).shuffle("count");
        let report = run(builder);
        assert_eq!(
            collected_values(&collected),
            [json!(["a", 1]), json!(["b", 1]), json!(["a", 2]), json!(["c", 1]), json!(["a", 3]), json!(["b", 2])]
        );
        assert_eq!(stats(&report, "words").acked, 6);
        let tuples = collected.lock().unwrap();
        assert_eq!(tuples[0].fields().names(), ["word", "count"]);
    }

    #[test]
    fn counts_keys_of_every_type_across_tasks() {
        let keys = [json!(1), json!(1.5), json!(1), json!(true), json!(null), json!("1"), json!(1.5), json!(2.0)];
        let (sink, collected) = collector();
        let mut builder = TopologyBuilder::new("count");
        let rows_of_keys = keys.iter().map(|k| values![Value::from_json(k)]).collect();
        builder.spout("keys", 1, rows(&["k"], rows_of_keys));
        builder.bolt("count", 3, Arc::new(CountBoltConfig { key: "k".into() })).fields("keys", &["k"]);
        builder.bolt("sink", 1, sink).shuffle("count");
        run(builder);
        let mut finals: HashMap<String, i64> = HashMap::new();
        for v in collected_values(&collected) {
            let count = finals.entry(v[0].to_string()).or_insert(0);
            *count = (*count).max(v[1].as_i64().unwrap());
        }
        let expected: HashMap<String, i64> = [("1", 2), ("1.5", 2), ("true", 1), ("null", 1), ("\"1\"", 1), ("2.0", 1)]
            .into_iter()
            .map(|(k, n)| (k.to_string(), n))
            .collect();
        assert_eq!(finals, expected);
    }

    #[test]
    fn other_keys_are_equal_when_their_values_are() {
        assert_eq!(OtherKey::of(&Value::Float(-0.0)), OtherKey::of(&Value::Float(0.0)));
        assert_ne!(OtherKey::of(&Value::Int(1)), OtherKey::of(&Value::Float(1.0)));
        assert_ne!(OtherKey::of(&Value::from("a")), OtherKey::of(&Value::Bytes(b"a".to_vec())));
    }

    #[test]
    fn declare_checks_the_key() {
        let mut builder = TopologyBuilder::new("count");
        builder.spout("lines", 1, rows(&["line"], vec![]));
        builder.bolt("count", 1, Arc::new(CountBoltConfig::default())).shuffle("lines");
        let err = build_error(builder);
        assert!(err.contains("key `word` is not a field of input stream lines:default (fields [line])"), "{err}");

        let mut builder = TopologyBuilder::new("count");
        builder.spout("counts", 1, rows(&["count"], vec![]));
        builder.bolt("count", 1, Arc::new(CountBoltConfig { key: "count".into() })).shuffle("counts");
        let err = build_error(builder);
        assert!(err.contains("`key` cannot be `count`"), "{err}");
    }

    #[test]
    fn unknown_args_are_rejected() {
        let yaml = "name: t\nspouts: [ { id: s, kind: generator } ]\nbolts:\n  - { id: c, kind: count, args: { field: line }, inputs: [ { from: s } ] }\n";
        let err = crate::registry().load_str(yaml, "t.yaml").unwrap_err().to_string();
        assert!(err.contains("unknown field `field`, expected `key`"), "{err}");
    }
}
