//! The `map` bolt: selects, renames, sets and case-converts fields.
//!
//! ```yaml
//! bolts:
//!   - id: tidy
//!     kind: map
//!     args: { select: [word, count], rename: { word: term }, set: { source: web }, lowercase: [term] }
//!     inputs: [ { from: count } ]
//! ```
//!
//! The steps run in this order: `select` keeps the listed input fields in the listed order
//! (default: every field); `rename` renames some of them; `set` gives a field a constant value,
//! replacing the field if it exists and appending it otherwise; `lowercase` and `uppercase`
//! convert string fields of the result (other values pass unchanged). Each input is emitted
//! once, transformed, anchored to it. Every input must have the same fields, and every field
//! named must exist at its step: the topology is rejected otherwise.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use smol_str::SmolStr;
use squall_runtime::{
    Bolt, BoltFactory, BoltOutput, BoxError, Fields, InputStream, StreamDecl, TaskContext, Tuple, Value, Values,
};

use crate::args::{common_fields, scalar};

/// The arguments of the `map` bolt; all are optional.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MapBoltConfig {
    /// The input fields to keep, in output order (default: all of them, in input order).
    #[serde(default)]
    pub select: Option<Vec<String>>,
    /// New names for selected fields: old name → new name.
    #[serde(default)]
    pub rename: BTreeMap<String, String>,
    /// Fields given a constant scalar value, replacing a field of that name or appended in
    /// this order.
    #[serde(default, deserialize_with = "ordered_map")]
    pub set: Vec<(String, serde_json::Value)>,
    /// String fields converted to lowercase.
    #[serde(default)]
    pub lowercase: Vec<String>,
    /// String fields converted to uppercase.
    #[serde(default)]
    pub uppercase: Vec<String>,
}

/// Reads a mapping keeping the order it is written in.
fn ordered_map<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, serde_json::Value)>, D::Error> {
    struct Pairs;
    impl<'de> Visitor<'de> for Pairs {
        type Value = Vec<(String, serde_json::Value)>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a mapping of field names to constants, e.g. { source: web }")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut pairs = Vec::new();
            while let Some(pair) = map.next_entry()? {
                pairs.push(pair);
            }
            Ok(pairs)
        }
    }
    d.deserialize_map(Pairs)
}

/// How a column's strings are converted.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Case {
    Keep,
    Lower,
    Upper,
}

impl Case {
    fn apply(self, value: &Value) -> Value {
        match (self, value) {
            (Case::Lower, Value::Str(s)) if s.chars().any(char::is_uppercase) => Value::Str(s.to_lowercase().into()),
            (Case::Upper, Value::Str(s)) if s.chars().any(char::is_lowercase) => Value::Str(s.to_uppercase().into()),
            _ => value.clone(),
        }
    }
}

/// Where an output field's value comes from.
#[derive(Clone, Debug, PartialEq)]
enum Column {
    /// The input value at this position, case-converted.
    Input(usize, Case),
    /// A constant (already case-converted).
    Constant(Value),
}

/// What the bolt does to tuples with given input fields.
#[derive(Clone, Debug)]
struct MapPlan {
    fields: Fields,
    columns: Vec<Column>,
}

impl MapBoltConfig {
    /// The plan for inputs with fields `input`, or which field named in the arguments is wrong.
    fn plan(&self, input: &Fields) -> Result<MapPlan, String> {
        let mut names: Vec<SmolStr> = Vec::new();
        let mut columns: Vec<Column> = Vec::new();
        match &self.select {
            None => {
                names.extend(input.names().iter().cloned());
                columns.extend((0..input.len()).map(|i| Column::Input(i, Case::Keep)));
            }
            Some(select) => {
                for name in select {
                    let i = input.index_of(name).ok_or_else(|| {
                        format!("`select` names `{name}`, which is not an input field (fields {input})")
                    })?;
                    if names.contains(&SmolStr::new(name)) {
                        return Err(format!("`select` names `{name}` twice"));
                    }
                    names.push(name.into());
                    columns.push(Column::Input(i, Case::Keep));
                }
            }
        }
        for (old, new) in &self.rename {
            if !names.iter().any(|n| n == old) {
                let after = Fields::new(&names);
                return Err(format!("`rename` names `{old}`, which is not a selected field (fields {after})"));
            }
            if new.is_empty() {
                return Err(format!("`rename` gives `{old}` an empty name"));
            }
        }
        for name in &mut names {
            if let Some(new) = self.rename.get(name.as_str()) {
                *name = new.into();
            }
        }
        for (i, name) in names.iter().enumerate() {
            if names[..i].contains(name) {
                return Err(format!("two output fields would be called `{name}`; rename one of them"));
            }
        }
        for (name, constant) in &self.set {
            let value = scalar(constant, &format!("`set.{name}`"))?;
            match names.iter().position(|n| n == name) {
                Some(i) => columns[i] = Column::Constant(value),
                None => {
                    names.push(name.into());
                    columns.push(Column::Constant(value));
                }
            }
        }
        if names.is_empty() {
            return Err("the output would have no field: `select` keeps none and `set` adds none".into());
        }
        for (list, case, other) in
            [(&self.lowercase, Case::Lower, &self.uppercase), (&self.uppercase, Case::Upper, &self.lowercase)]
        {
            for name in list {
                let i = names.iter().position(|n| n == name).ok_or_else(|| {
                    let fields = Fields::new(&names);
                    let arg = if case == Case::Lower { "lowercase" } else { "uppercase" };
                    format!("`{arg}` names `{name}`, which is not an output field (fields {fields})")
                })?;
                if other.contains(name) {
                    return Err(format!("`{name}` is listed in both `lowercase` and `uppercase`"));
                }
                columns[i] = match &columns[i] {
                    Column::Input(index, _) => Column::Input(*index, case),
                    Column::Constant(value) => Column::Constant(case.apply(value)),
                };
            }
        }
        Ok(MapPlan { fields: Fields::new(&names), columns })
    }
}

impl BoltFactory for MapBoltConfig {
    fn declare(&self, inputs: &[InputStream]) -> Result<Vec<StreamDecl>, BoxError> {
        let input = common_fields(inputs, "map")?;
        let plan = self.plan(&input)?;
        Ok(vec![StreamDecl::default_stream(plan.fields)])
    }

    fn create(&self, _ctx: &TaskContext) -> Result<Box<dyn Bolt>, BoxError> {
        Ok(Box::new(MapBolt { config: self.clone(), plan: None }))
    }
}

/// One task of a `map` bolt.
struct MapBolt {
    config: MapBoltConfig,
    /// The plan for the input fields seen last: every input has the same fields, so it is
    /// made once (comparing `Fields` of one stream is a pointer comparison).
    plan: Option<(Fields, MapPlan)>,
}

impl MapBolt {
    fn plan_for(&mut self, fields: &Fields) -> Result<&MapPlan, BoxError> {
        let (_, plan) = match self.plan.take() {
            Some((seen, plan)) if seen == *fields => self.plan.insert((seen, plan)),
            _ => self.plan.insert((fields.clone(), self.config.plan(fields)?)),
        };
        Ok(plan)
    }
}

impl Bolt for MapBolt {
    fn execute(&mut self, input: &Tuple, out: &mut BoltOutput<'_>) -> Result<(), BoxError> {
        let plan = self.plan_for(input.fields())?;
        let mut values = Values::with_capacity(plan.columns.len());
        for column in &plan.columns {
            values.push(match column {
                Column::Input(i, case) => case.apply(input.value(*i).unwrap_or(&Value::Null)),
                Column::Constant(value) => value.clone(),
            });
        }
        out.emit(values);
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

    fn config(args: &str) -> MapBoltConfig {
        serde_yaml::from_str(args).expect("valid map args")
    }

    /// Runs rows [word, n, tag] through a map with `args`; returns the output fields and rows.
    fn map(args: &str) -> (Vec<String>, Vec<serde_json::Value>) {
        let input = vec![values!["Fox", 3, "Web"], values!["dog", Value::Null, "APP"]];
        let (sink, collected) = collector();
        let mut builder = TopologyBuilder::new("map");
        builder.spout("rows", 1, rows(&["word", "n", "tag"], input));
        builder.bolt("map", 1, Arc::new(config(args))).shuffle("rows");
        builder.bolt("sink", 1, sink).shuffle("map");
        let report = run(builder);
        assert_eq!(stats(&report, "rows").acked, 2);
        let fields = collected.lock().unwrap()[0].fields().names().iter().map(|f| f.to_string()).collect();
        (fields, collected_values(&collected))
    }

    #[test]
    fn no_args_passes_tuples_unchanged() {
        let (fields, rows) = map("{}");
        assert_eq!(fields, ["word", "n", "tag"]);
        assert_eq!(rows, [json!(["Fox", 3, "Web"]), json!(["dog", null, "APP"])]);
    }

    #[test]
    fn select_rename_set_and_case_in_that_order() {
        let (fields, rows) =
            map("{ select: [tag, word], rename: { word: term, tag: word }, set: { source: Feed, word: X, n: 1 }, \
             lowercase: [term, source], uppercase: [word] }");
        assert_eq!(fields, ["word", "term", "source", "n"]);
        assert_eq!(rows, [json!(["X", "fox", "feed", 1]), json!(["X", "dog", "feed", 1])]);
    }

    #[test]
    fn case_conversion_leaves_non_strings_alone() {
        let (fields, rows) = map("{ select: [n, tag], uppercase: [n], lowercase: [tag] }");
        assert_eq!(fields, ["n", "tag"]);
        assert_eq!(rows, [json!([3, "web"]), json!([null, "app"])]);
    }

    fn declare_error(args: &str) -> String {
        let mut builder = TopologyBuilder::new("map");
        builder.spout("rows", 1, rows(&["word", "n"], vec![]));
        builder.bolt("map", 1, Arc::new(config(args))).shuffle("rows");
        build_error(builder)
    }

    #[test]
    fn declare_names_the_wrong_field() {
        let cases = [
            ("{ select: [word, cnt] }", "`select` names `cnt`, which is not an input field (fields [word, n])"),
            ("{ select: [word, word] }", "`select` names `word` twice"),
            (
                "{ select: [word], rename: { n: count } }",
                "`rename` names `n`, which is not a selected field (fields [word])",
            ),
            ("{ rename: { word: n } }", "two output fields would be called `n`"),
            ("{ rename: { word: '' } }", "`rename` gives `word` an empty name"),
            ("{ set: { x: [1, 2] } }", "`set.x` must be a scalar"),
            ("{ lowercase: [words] }", "`lowercase` names `words`, which is not an output field (fields [word, n])"),
            ("{ rename: { word: w }, uppercase: [word] }", "`uppercase` names `word`, which is not an output field"),
            ("{ lowercase: [word], uppercase: [word] }", "`word` is listed in both `lowercase` and `uppercase`"),
            ("{ select: [] }", "the output would have no field"),
        ];
        for (args, expected) in cases {
            let err = declare_error(args);
            assert!(err.contains("component 'map'") && err.contains(expected), "{args}: {err}");
        }
    }

    #[test]
    fn inputs_must_have_the_same_fields() {
        let mut builder = TopologyBuilder::new("map");
        builder.spout("a", 1, rows(&["word"], vec![]));
        builder.spout("b", 1, rows(&["line"], vec![]));
        builder.bolt("map", 1, Arc::new(MapBoltConfig::default())).shuffle("a").shuffle("b");
        let err = build_error(builder);
        assert!(err.contains("all inputs of a map bolt must have the same fields"), "{err}");
    }

    #[test]
    fn set_keeps_the_written_order_and_rejects_unknown_args() {
        let c = config("{ set: { z: 1, a: 2, m: 3 } }");
        assert_eq!(c.set.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["z", "a", "m"]);
        let yaml = "name: t\nspouts: [ { id: s, kind: generator } ]\nbolts:\n  - { id: m, kind: map, args: { project: [line] }, inputs: [ { from: s } ] }\n";
        let err = crate::registry().load_str(yaml, "t.yaml").unwrap_err().to_string();
        assert!(err.contains("unknown field `project`"), "{err}");
    }
}
