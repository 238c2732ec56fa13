//! The `log` bolt: prints each tuple to stdout.
//!
//! ```yaml
//! bolts:
//!   - { id: print, kind: log, args: { prefix: counts }, inputs: [ { from: count } ] }
//! ```
//!
//! Prints one line per tuple, `<prefix>: <tuple as JSON>` (e.g. `counts: {"word":"fox","count":3}`),
//! where `prefix` defaults to the component's id. Emits nothing. If stdout is closed (the reader
//! of a pipe went away) tuples are dropped silently; any other write error fails the input.

use std::io::{ErrorKind, Write};

use serde::Deserialize;
use squall_runtime::{Bolt, BoltFactory, BoltOutput, BoxError, InputStream, StreamDecl, TaskContext, Tuple};

use crate::json::write_tuple;

/// The arguments of the `log` bolt.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogBoltConfig {
    /// What each line starts with (default: the component's id).
    #[serde(default)]
    pub prefix: Option<String>,
}

impl BoltFactory for LogBoltConfig {
    fn declare(&self, _inputs: &[InputStream]) -> Result<Vec<StreamDecl>, BoxError> {
        Ok(vec![])
    }

    fn create(&self, ctx: &TaskContext) -> Result<Box<dyn Bolt>, BoxError> {
        let prefix = self.prefix.clone().unwrap_or_else(|| ctx.component.to_string());
        Ok(Box::new(LogBolt::new(&prefix)))
    }
}

/// One task of a `log` bolt.
struct LogBolt {
    /// The line being printed; starts with the prefix, which stays in place.
    line: Vec<u8>,
    prefix_len: usize,
}

impl LogBolt {
    fn new(prefix: &str) -> Self {
        let line = format!("{prefix}: ").into_bytes();
        LogBolt { prefix_len: line.len(), line }
    }

    /// The line for `tuple`, newline included.
    fn format(&mut self, tuple: &Tuple) -> Result<&[u8], BoxError> {
        self.line.truncate(self.prefix_len);
        write_tuple(tuple, &mut self.line).map_err(|e| format!("cannot write the tuple as JSON: {e}"))?;
        self.line.push(b'\n');
        Ok(&self.line)
    }
}

impl Bolt for LogBolt {
    fn execute(&mut self, input: &Tuple, _out: &mut BoltOutput<'_>) -> Result<(), BoxError> {
        let line = self.format(input)?;
        match std::io::stdout().lock().write_all(line) {
            Err(e) if e.kind() != ErrorKind::BrokenPipe => Err(format!("cannot print to stdout: {e}").into()),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{rows, run, stats};
    use squall_runtime::tuple::StreamSource;
    use squall_runtime::{Fields, TopologyBuilder, values};
    use std::sync::Arc;

    #[test]
    fn formats_prefix_and_json() {
        let source = StreamSource::intern("count", "default", &Fields::new(["word", "count"]));
        let mut bolt = LogBolt::new("counts");
        let line = bolt.format(&Tuple::new(source, 0, values!["fox", 3])).unwrap().to_vec();
        assert_eq!(String::from_utf8(line).unwrap(), "counts: {\"word\":\"fox\",\"count\":3}\n");
        let line = bolt.format(&Tuple::new(source, 0, values!["a\"b", -1])).unwrap().to_vec();
        assert_eq!(String::from_utf8(line).unwrap(), "counts: {\"word\":\"a\\\"b\",\"count\":-1}\n");
    }

    #[test]
    fn acks_what_it_prints() {
        let mut builder = TopologyBuilder::new("log");
        builder.spout("rows", 1, rows(&["n"], vec![values![1], values![2]]));
        builder.bolt("print", 1, Arc::new(LogBoltConfig::default())).shuffle("rows");
        let report = run(builder);
        assert_eq!(stats(&report, "rows").acked, 2);
        assert_eq!(stats(&report, "print").errors, 0);
        assert!(report.component("print").unwrap().stats.emitted == 0);
    }

    #[test]
    fn unknown_args_are_rejected() {
        let yaml = "name: t\nspouts: [ { id: s, kind: generator } ]\nbolts:\n  - { id: p, kind: log, args: { prefx: x }, inputs: [ { from: s } ] }\n";
        let err = crate::registry().load_str(yaml, "t.yaml").unwrap_err().to_string();
        assert!(err.contains("unknown field `prefx`"), "{err}");
    }
}
