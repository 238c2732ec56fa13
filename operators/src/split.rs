//! The `split` bolt: a string field into one tuple per piece.
//!
//! ```yaml
//! bolts:
//!   - { id: words, kind: split, args: { field: line, output: word }, inputs: [ { from: lines } ] }
//! ```
//!
//! For each input, emits one tuple per non-empty piece of the string field `field`, split at
//! `separator` (default: at any run of whitespace), on the default stream with the single field
//! `output`, anchored to the input. An input whose field is not a string fails with an error.

use serde::Deserialize;
use squall_runtime::{
    Bolt, BoltFactory, BoltOutput, BoxError, InputStream, StreamDecl, TaskContext, Tuple, Value, values,
};

use crate::args::require_field;

/// The arguments of the `split` bolt.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitBoltConfig {
    /// The input field to split (default `line`).
    #[serde(default = "default_field")]
    pub field: String,
    /// Where to split; none (the default) splits at any run of whitespace.
    #[serde(default)]
    pub separator: Option<String>,
    /// The name of the output field (default `word`).
    #[serde(default = "default_output")]
    pub output: String,
}

impl Default for SplitBoltConfig {
    fn default() -> Self {
        SplitBoltConfig { field: default_field(), separator: None, output: default_output() }
    }
}

fn default_field() -> String {
    "line".into()
}

fn default_output() -> String {
    "word".into()
}

impl SplitBoltConfig {
    fn check(&self) -> Result<(), BoxError> {
        if self.separator.as_deref() == Some("") {
            return Err("`separator` must not be empty (leave it out to split at whitespace)".into());
        }
        if self.output.is_empty() {
            return Err("`output` must not be empty".into());
        }
        Ok(())
    }
}

impl BoltFactory for SplitBoltConfig {
    fn declare(&self, inputs: &[InputStream]) -> Result<Vec<StreamDecl>, BoxError> {
        self.check()?;
        require_field(inputs, &self.field, "field")?;
        Ok(vec![StreamDecl::default_stream([self.output.as_str()])])
    }

    fn create(&self, _ctx: &TaskContext) -> Result<Box<dyn Bolt>, BoxError> {
        self.check()?;
        Ok(Box::new(SplitBolt { field: self.field.clone(), separator: self.separator.clone() }))
    }
}

/// One task of a `split` bolt.
struct SplitBolt {
    field: String,
    separator: Option<String>,
}

impl Bolt for SplitBolt {
    fn execute(&mut self, input: &Tuple, out: &mut BoltOutput<'_>) -> Result<(), BoxError> {
        let text = match input.get(&self.field) {
            Some(Value::Str(text)) => text.as_str(),
            Some(other) => return Err(format!("field `{}` is not a string: {other:?}", self.field).into()),
            None => return Err(format!("the input has no field `{}` (fields {})", self.field, input.fields()).into()),
        };
        match &self.separator {
            None => text.split_whitespace().for_each(|piece| out.emit(values![piece])),
            Some(sep) => text.split(sep.as_str()).filter(|p| !p.is_empty()).for_each(|piece| out.emit(values![piece])),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{build_error, collected_strings, collector, rows, run, stats};
    use squall_runtime::TopologyBuilder;
    use std::sync::Arc;

    fn split(config: SplitBoltConfig, lines: Vec<squall_runtime::Values>) -> (Vec<String>, squall_runtime::RunReport) {
        let output = config.output.clone();
        let (sink, collected) = collector();
        let mut builder = TopologyBuilder::new("split");
        builder.spout("lines", 1, rows(&["id", "line"], lines));
        builder.bolt("split", 2, Arc::new(config)).shuffle("lines");
        builder.bolt("sink", 1, sink).shuffle("split");
        let report = run(builder);
        let mut pieces = collected_strings(&collected, &output);
        pieces.sort();
        (pieces, report)
    }

    #[test]
    fn splits_at_whitespace_by_default() {
        let lines = vec![values![1, "the quick\tbrown  fox\n"], values![2, "   "], values![3, "the end"]];
        let (words, report) = split(SplitBoltConfig::default(), lines);
        assert_eq!(words, ["brown", "end", "fox", "quick", "the", "the"]);
        let spout = stats(&report, "lines");
        assert_eq!((spout.acked, spout.failed), (3, 0), "every line's tree completed");
        assert_eq!(stats(&report, "split").emitted, 6);
    }

    #[test]
    fn splits_at_a_separator_into_a_named_field() {
        let config = SplitBoltConfig { field: "id".into(), separator: Some(", ".into()), output: "tag".into() };
        let lines = vec![values!["a, b,, c, ", "ignored"], values![", d", "x"]];
        let (tags, _) = split(config, lines);
        assert_eq!(tags, ["a", "b,", "c", "d"]);
    }

    #[test]
    fn a_non_string_field_fails_the_input() {
        let config = SplitBoltConfig { field: "id".into(), ..Default::default() };
        let (words, report) = split(config, vec![values![7, "x"], values!["ok go", "y"]]);
        assert_eq!(words, ["go", "ok"]);
        let s = stats(&report, "lines");
        assert_eq!((s.acked, s.failed), (1, 1));
        let errors = stats(&report, "split").last_errors;
        assert!(errors.iter().any(|e| e.contains("field `id` is not a string: Int(7)")), "{errors:?}");
    }

    #[test]
    fn declare_requires_the_field_in_every_input() {
        let mut builder = TopologyBuilder::new("split");
        builder.spout("lines", 1, rows(&["line"], vec![]));
        builder.spout("texts", 1, rows(&["text"], vec![]));
        builder.bolt("split", 1, Arc::new(SplitBoltConfig::default())).shuffle("lines").shuffle("texts");
        let err = build_error(builder);
        assert!(
            err.contains("component 'split'")
                && err.contains("field `line` is not a field of input stream texts:default"),
            "{err}"
        );
    }

    #[test]
    fn an_empty_separator_is_rejected() {
        let registry = crate::registry();
        let yaml = "name: t\nspouts: [ { id: s, kind: generator } ]\nbolts:\n  - { id: b, kind: split, args: { separator: '' }, inputs: [ { from: s } ] }\n";
        let err = registry.load_str(yaml, "t.yaml").unwrap_err().to_string();
        assert!(err.contains("`separator` must not be empty"), "{err}");
        let yaml = "name: t\nspouts: [ { id: s, kind: generator } ]\nbolts:\n  - { id: b, kind: split, args: { sep: ',' }, inputs: [ { from: s } ] }\n";
        let err = registry.load_str(yaml, "t.yaml").unwrap_err().to_string();
        assert!(err.contains("unknown field `sep`"), "{err}");
    }
}
