//! The `filter` bolt: passes on the tuples whose field satisfies a predicate.
//!
//! ```yaml
//! bolts:
//!   - { id: long, kind: filter, args: { field: count, greater_than: 100 }, inputs: [ { from: count } ] }
//! ```
//!
//! Takes `field` and exactly one predicate: `equals`, `not_equals` (any scalar), `contains`,
//! `starts_with` (strings), `greater_than`, `less_than` (numbers) or `in` (a list of scalars).
//! Integers and floats compare by numeric value (`3` equals `3.0`); a string predicate never
//! holds for a value that is not a string, nor a number predicate for one that is not a number.
//! A tuple that passes is emitted unchanged, anchored to the input, with the input's fields;
//! one that does not is acked and dropped. Every input must have the same fields.

use serde::{Deserialize, Deserializer};
use squall_runtime::{Bolt, BoltFactory, BoltOutput, BoxError, InputStream, StreamDecl, TaskContext, Tuple, Value};

use crate::args::{common_fields, compare_numbers, require_field, scalar, values_equal};

/// The arguments of the `filter` bolt: `field` and exactly one predicate.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterBoltConfig {
    /// The input field the predicate looks at (required).
    pub field: String,
    /// Holds when the field equals this scalar (`null` included).
    #[serde(default, deserialize_with = "present")]
    pub equals: Option<serde_json::Value>,
    /// Holds when the field does not equal this scalar.
    #[serde(default, deserialize_with = "present")]
    pub not_equals: Option<serde_json::Value>,
    /// Holds when the field is a string containing this one.
    #[serde(default)]
    pub contains: Option<String>,
    /// Holds when the field is a string starting with this one.
    #[serde(default)]
    pub starts_with: Option<String>,
    /// Holds when the field is a number greater than this one.
    #[serde(default)]
    pub greater_than: Option<serde_json::Number>,
    /// Holds when the field is a number less than this one.
    #[serde(default)]
    pub less_than: Option<serde_json::Number>,
    /// Holds when the field equals one of these scalars (`in:` in a topology file).
    #[serde(default, rename = "in")]
    pub one_of: Option<Vec<serde_json::Value>>,
}

/// Reads an argument that is present, even as `null`, as `Some`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(d).map(Some)
}

/// The names of the predicates, as a topology file spells them.
const PREDICATES: &str = "equals, not_equals, contains, starts_with, greater_than, less_than or in";

/// A filter's predicate, with its constants turned into values.
#[derive(Clone, Debug, PartialEq)]
enum Predicate {
    Equals(Value),
    NotEquals(Value),
    Contains(String),
    StartsWith(String),
    GreaterThan(Value),
    LessThan(Value),
    In(Vec<Value>),
}

impl Predicate {
    fn holds(&self, value: &Value) -> bool {
        match self {
            Predicate::Equals(c) => values_equal(value, c),
            Predicate::NotEquals(c) => !values_equal(value, c),
            Predicate::Contains(s) => value.as_str().is_some_and(|v| v.contains(s.as_str())),
            Predicate::StartsWith(s) => value.as_str().is_some_and(|v| v.starts_with(s.as_str())),
            Predicate::GreaterThan(c) => compare_numbers(value, c).is_some_and(|o| o.is_gt()),
            Predicate::LessThan(c) => compare_numbers(value, c).is_some_and(|o| o.is_lt()),
            Predicate::In(list) => list.iter().any(|c| values_equal(value, c)),
        }
    }
}

fn number(n: &serde_json::Number) -> Value {
    Value::from_json(&serde_json::Value::Number(n.clone()))
}

impl FilterBoltConfig {
    /// The one predicate the arguments name, or what is wrong with them.
    fn predicate(&self) -> Result<Predicate, String> {
        let mut given: Vec<(&str, Result<Predicate, String>)> = Vec::new();
        if let Some(c) = &self.equals {
            given.push(("equals", scalar(c, "`equals`").map(Predicate::Equals)));
        }
        if let Some(c) = &self.not_equals {
            given.push(("not_equals", scalar(c, "`not_equals`").map(Predicate::NotEquals)));
        }
        if let Some(s) = &self.contains {
            given.push(("contains", Ok(Predicate::Contains(s.clone()))));
        }
        if let Some(s) = &self.starts_with {
            given.push(("starts_with", Ok(Predicate::StartsWith(s.clone()))));
        }
        if let Some(n) = &self.greater_than {
            given.push(("greater_than", Ok(Predicate::GreaterThan(number(n)))));
        }
        if let Some(n) = &self.less_than {
            given.push(("less_than", Ok(Predicate::LessThan(number(n)))));
        }
        if let Some(list) = &self.one_of {
            let values: Result<Vec<Value>, String> = list.iter().map(|c| scalar(c, "every item of `in`")).collect();
            given.push(("in", values.map(Predicate::In)));
        }
        if given.len() > 1 {
            let names: Vec<String> = given.iter().map(|(name, _)| format!("`{name}`")).collect();
            return Err(format!("a filter takes exactly one predicate, but has {}", names.join(" and ")));
        }
        match given.pop() {
            Some((_, predicate)) => predicate,
            None => Err(format!("a filter needs one predicate on `{}`: {PREDICATES}", self.field)),
        }
    }
}

impl BoltFactory for FilterBoltConfig {
    fn declare(&self, inputs: &[InputStream]) -> Result<Vec<StreamDecl>, BoxError> {
        self.predicate()?;
        require_field(inputs, &self.field, "field")?;
        let fields = common_fields(inputs, "filter")?;
        Ok(vec![StreamDecl::default_stream(fields)])
    }

    fn create(&self, _ctx: &TaskContext) -> Result<Box<dyn Bolt>, BoxError> {
        Ok(Box::new(FilterBolt { field: self.field.clone(), predicate: self.predicate()? }))
    }
}

/// One task of a `filter` bolt.
struct FilterBolt {
    field: String,
    predicate: Predicate,
}

impl Bolt for FilterBolt {
    fn execute(&mut self, input: &Tuple, out: &mut BoltOutput<'_>) -> Result<(), BoxError> {
        let Some(value) = input.get(&self.field) else {
            return Err(format!("the input has no field `{}` (fields {})", self.field, input.fields()).into());
        };
        if self.predicate.holds(value) {
            out.emit(input.values().iter().cloned().collect());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{build_error, collected_values, collector, rows, run, stats};
    use serde_json::json;
    use squall_runtime::{TopologyBuilder, values};
    use std::sync::Arc;

    /// The config read from the YAML of its args, as a topology file would give it.
    fn config(args: &str) -> FilterBoltConfig {
        serde_yaml::from_str(args).expect("valid filter args")
    }

    fn filter(args: &str) -> Vec<serde_json::Value> {
        let rows_in = vec![
            values!["fox", 3],
            values!["the", 12],
            values!["foxglove", 2.5],
            values![Value::Null, -1],
            values!["dog", 3.0],
        ];
        let (sink, collected) = collector();
        let mut builder = TopologyBuilder::new("filter");
        builder.spout("rows", 1, rows(&["word", "n"], rows_in));
        builder.bolt("filter", 2, Arc::new(config(args))).shuffle("rows");
        builder.bolt("sink", 1, sink).global("filter");
        let report = run(builder);
        assert_eq!(stats(&report, "rows").acked, 5, "tuples filtered out are acked too");
        let mut passed = collected_values(&collected);
        passed.sort_by_key(|v| v.to_string());
        passed
    }

    #[test]
    fn each_predicate() {
        assert_eq!(filter("{ field: word, equals: fox }"), [json!(["fox", 3])]);
        assert_eq!(filter("{ field: n, equals: 3 }"), [json!(["dog", 3.0]), json!(["fox", 3])]);
        assert_eq!(filter("{ field: word, equals: null }"), [json!([null, -1])]);
        assert_eq!(filter("{ field: word, not_equals: fox }").len(), 4);
        assert_eq!(filter("{ field: word, contains: ox }"), [json!(["fox", 3]), json!(["foxglove", 2.5])]);
        assert_eq!(filter("{ field: word, starts_with: th }"), [json!(["the", 12])]);
        assert_eq!(
            filter("{ field: n, greater_than: 2.9 }"),
            [json!(["dog", 3.0]), json!(["fox", 3]), json!(["the", 12])]
        );
        assert_eq!(filter("{ field: n, less_than: 3 }"), [json!(["foxglove", 2.5]), json!([null, -1])]);
        assert_eq!(filter("{ field: word, in: [dog, the, 3] }"), [json!(["dog", 3.0]), json!(["the", 12])]);
        assert_eq!(filter("{ field: n, in: [12, -1.0] }"), [json!(["the", 12]), json!([null, -1])]);
        assert!(filter("{ field: word, greater_than: 0 }").is_empty(), "strings are not numbers");
    }

    fn declare_error(args: &str, fields: &[&str]) -> String {
        let mut builder = TopologyBuilder::new("filter");
        builder.spout("rows", 1, rows(fields, vec![]));
        builder.bolt("filter", 1, Arc::new(config(args))).shuffle("rows");
        build_error(builder)
    }

    #[test]
    fn declare_rejects_bad_predicates_and_fields() {
        let err = declare_error("{ field: word }", &["word"]);
        assert!(err.contains("a filter needs one predicate on `word`: equals, not_equals"), "{err}");
        let err = declare_error("{ field: word, equals: a, contains: b }", &["word"]);
        assert!(err.contains("exactly one predicate, but has `equals` and `contains`"), "{err}");
        let err = declare_error("{ field: word, equals: [a] }", &["word"]);
        assert!(err.contains("`equals` must be a scalar"), "{err}");
        let err = declare_error("{ field: word, in: [a, { b: 1 }] }", &["word"]);
        assert!(err.contains("every item of `in` must be a scalar"), "{err}");
        let err = declare_error("{ field: wrd, equals: a }", &["word"]);
        assert!(err.contains("field `wrd` is not a field of input stream rows:default (fields [word])"), "{err}");
    }

    #[test]
    fn inputs_must_have_the_same_fields() {
        let mut builder = TopologyBuilder::new("filter");
        builder.spout("a", 1, rows(&["word", "n"], vec![]));
        builder.spout("b", 1, rows(&["word"], vec![]));
        builder.bolt("filter", 1, Arc::new(config("{ field: word, equals: x }"))).shuffle("a").shuffle("b");
        let err = build_error(builder);
        assert!(
            err.contains("must have the same fields, but a:default has [word, n] and b:default has [word]"),
            "{err}"
        );
    }

    #[test]
    fn args_from_yaml() {
        let load = |args: &str| {
            let yaml = format!(
                "name: t\nspouts: [ {{ id: s, kind: generator }} ]\nbolts:\n  - {{ id: f, kind: filter, args: {args}, inputs: [ {{ from: s }} ] }}\n"
            );
            crate::registry().load_str(&yaml, "t.yaml").map(|_| ()).map_err(|e| e.to_string())
        };
        assert!(load("{ field: line, contains: x }").is_ok());
        let err = load("{ field: line, matches: x }").unwrap_err();
        assert!(err.contains("unknown field `matches`"), "{err}");
        let err = load("{ field: line, greater_than: ten }").unwrap_err();
        assert!(err.contains("invalid args for kind 'filter'"), "{err}");
        let err = load("{ equals: x }").unwrap_err();
        assert!(err.contains("missing field `field`"), "{err}");
    }
}
