//! Spouts and bolts that tests wire around the kind under test.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use squall_runtime::prelude::*;
use squall_runtime::{RunReport, bolt_fn_streams};

/// Emits `rows` once each, tracked with ids 1, 2, …; failures are counted, not replayed.
struct Rows {
    rows: Arc<Vec<Values>>,
    next: usize,
}

impl Spout for Rows {
    fn next_tuple(&mut self, out: &mut SpoutOutput<'_>) {
        if let Some(row) = self.rows.get(self.next) {
            self.next += 1;
            out.emit_with_id(self.next as u64, row.clone());
        }
    }

    fn is_done(&self) -> bool {
        self.next == self.rows.len()
    }
}

/// A spout (parallelism 1) emitting `rows` with fields `fields`.
pub(crate) fn rows(fields: &[&str], rows: Vec<Values>) -> Arc<dyn SpoutFactory> {
    let rows = Arc::new(rows);
    spout_fn(Fields::new(fields), move |_| Rows { rows: rows.clone(), next: 0 })
}

/// The tuples a [`collector`] received.
pub(crate) type Collected = Arc<Mutex<Vec<Tuple>>>;

struct Collect(Collected);

impl Bolt for Collect {
    fn execute(&mut self, input: &Tuple, _out: &mut BoltOutput<'_>) -> Result<(), BoxError> {
        self.0.lock().unwrap().push(input.clone());
        Ok(())
    }
}

/// A bolt that keeps every tuple it receives, and emits nothing.
pub(crate) fn collector() -> (Arc<dyn BoltFactory>, Collected) {
    let collected = Collected::default();
    let shared = collected.clone();
    (bolt_fn_streams(Vec::new(), move |_| Collect(shared.clone())), collected)
}

/// The values of the collected tuples, as JSON arrays, in arrival order.
pub(crate) fn collected_values(collected: &Collected) -> Vec<serde_json::Value> {
    let tuples = collected.lock().unwrap();
    tuples.iter().map(|t| serde_json::Value::Array(t.values().iter().map(Value::to_json).collect())).collect()
}

/// The strings of field `field` of the collected tuples, in arrival order.
pub(crate) fn collected_strings(collected: &Collected, field: &str) -> Vec<String> {
    let tuples = collected.lock().unwrap();
    tuples.iter().map(|t| t.get_str(field).expect("a string field").to_string()).collect()
}

/// Fails the first delivery of each distinct value of field `line` and passes later ones on
/// (anchored, with field `line`). Shared by all its tasks: `failed` lists the values failed.
pub(crate) struct FailOnce {
    seen: Arc<Mutex<HashSet<String>>>,
    failed: Arc<Mutex<Vec<String>>>,
}

impl Bolt for FailOnce {
    fn execute(&mut self, input: &Tuple, out: &mut BoltOutput<'_>) -> Result<(), BoxError> {
        let line = input.get_str("line").ok_or("no line")?.to_string();
        if self.seen.lock().unwrap().insert(line.clone()) {
            self.failed.lock().unwrap().push(line.clone());
            return Err(format!("first delivery of {line:?}").into());
        }
        out.emit(values![line]);
        Ok(())
    }
}

/// A [`FailOnce`] bolt factory and the list of the values it failed.
pub(crate) fn fail_once() -> (Arc<dyn BoltFactory>, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let failed = Arc::new(Mutex::new(Vec::new()));
    let shared = failed.clone();
    (bolt_fn(["line"], move |_| FailOnce { seen: seen.clone(), failed: shared.clone() }), failed)
}

/// Builds and runs a topology to its end.
pub(crate) fn run(builder: TopologyBuilder) -> RunReport {
    let topology = builder.build().expect("a valid topology");
    run_local(&topology, RunOptions::default()).expect("the topology starts")
}

/// The error message of a topology that fails its checks.
pub(crate) fn build_error(builder: TopologyBuilder) -> String {
    match builder.build() {
        Ok(_) => panic!("the topology was accepted"),
        Err(e) => e.to_string(),
    }
}

/// The final counts of a component in a report.
pub(crate) fn stats(report: &RunReport, id: &str) -> squall_runtime::ComponentStats {
    report.component(id).unwrap_or_else(|| panic!("no component {id}")).stats.clone()
}
