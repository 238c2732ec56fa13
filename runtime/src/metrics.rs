//! Per-component counters and latency histograms.
//!
//! Each task counts into its own [`ComponentStats`] without synchronisation and merges it into
//! the component's shared copy every [`PUBLISH_INTERVAL`] and when it stops, so reading the
//! metrics never slows the tuples down.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hdrhistogram::Histogram;
use smol_str::SmolStr;

/// How often a task publishes its counts.
pub const PUBLISH_INTERVAL: Duration = Duration::from_millis(100);

/// How many error messages a component keeps.
const KEPT_ERRORS: usize = 10;

/// What kind of task a component runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ComponentRole {
    /// A spout.
    Spout,
    /// A bolt.
    Bolt,
    /// The system's acker.
    Acker,
}

/// Counts and latencies of one component, summed over its tasks.
#[derive(Clone, Debug)]
pub struct ComponentStats {
    /// Tuples emitted (one per emit call, whatever the number of receivers).
    pub emitted: u64,
    /// Bolts: input tuples executed. Ackers: messages processed.
    pub executed: u64,
    /// Spouts: tuple trees completed (with acking off, every tracked emit). Bolts: inputs acked
    /// (counted with acking on only).
    pub acked: u64,
    /// Spouts: tuple trees failed, timed-out ones included. Bolts: inputs failed.
    pub failed: u64,
    /// Spouts: tuple trees that failed by timing out.
    pub timed_out: u64,
    /// Errors returned or panics raised by the component's code.
    pub errors: u64,
    /// The last few error messages, oldest first.
    pub last_errors: VecDeque<String>,
    /// Spouts: time from emit to tree completion, in microseconds.
    pub complete_latency_us: Histogram<u64>,
    /// Bolts: time spent in `execute`, in nanoseconds (sampled).
    pub execute_latency_ns: Histogram<u64>,
    /// The latest value of each gauge the component's tasks set (a Kafka spout's lag per
    /// partition, say), by name in Prometheus form: `metric{label="value",...}`.
    pub gauges: BTreeMap<String, i64>,
}

impl Default for ComponentStats {
    fn default() -> Self {
        ComponentStats {
            emitted: 0,
            executed: 0,
            acked: 0,
            failed: 0,
            timed_out: 0,
            errors: 0,
            last_errors: VecDeque::new(),
            complete_latency_us: Histogram::new_with_bounds(1, 24 * 3600 * 1_000_000, 2)
                .expect("valid histogram bounds"),
            execute_latency_ns: Histogram::new_with_bounds(1, 3600 * 1_000_000_000, 2).expect("valid histogram bounds"),
            gauges: BTreeMap::new(),
        }
    }
}

impl ComponentStats {
    /// Records an error message, keeping the last few.
    pub fn record_error(&mut self, message: String) {
        self.errors += 1;
        if self.last_errors.len() == KEPT_ERRORS {
            self.last_errors.pop_front();
        }
        self.last_errors.push_back(message);
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &ComponentStats) {
        self.emitted += other.emitted;
        self.executed += other.executed;
        self.acked += other.acked;
        self.failed += other.failed;
        self.timed_out += other.timed_out;
        self.errors += other.errors;
        for e in &other.last_errors {
            if self.last_errors.len() == KEPT_ERRORS {
                self.last_errors.pop_front();
            }
            self.last_errors.push_back(e.clone());
        }
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = self.complete_latency_us.add(&other.complete_latency_us);
        let _ = self.execute_latency_ns.add(&other.execute_latency_ns);
        for (name, value) in &other.gauges {
            self.gauges.insert(name.clone(), *value);
        }
    }

    /// Sets gauge `metric` with `labels` to `value` (see [`gauges`](Self::gauges)).
    pub fn set_gauge(&mut self, metric: &str, labels: &[(&str, &str)], value: i64) {
        let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        self.gauges.insert(format!("{metric}{{{}}}", labels.join(",")), value);
    }

    /// Adds `self` into `shared` and starts counting from zero again.
    pub(crate) fn publish(&mut self, shared: &ComponentMetrics) {
        shared.lock().merge(self);
        self.emitted = 0;
        self.executed = 0;
        self.acked = 0;
        self.failed = 0;
        self.timed_out = 0;
        self.errors = 0;
        self.last_errors.clear();
        self.complete_latency_us.reset();
        self.execute_latency_ns.reset();
        // The shared stats keep the latest values.
        self.gauges.clear();
    }
}

/// The shared metrics of one component.
#[derive(Debug)]
pub struct ComponentMetrics {
    /// The component's id.
    pub id: SmolStr,
    /// Spout, bolt or acker.
    pub role: ComponentRole,
    /// How many tasks run it.
    pub tasks: u32,
    stats: Mutex<ComponentStats>,
}

impl ComponentMetrics {
    pub(crate) fn new(id: SmolStr, role: ComponentRole, tasks: u32) -> Arc<Self> {
        Arc::new(ComponentMetrics { id, role, tasks, stats: Mutex::new(ComponentStats::default()) })
    }

    fn lock(&self) -> MutexGuard<'_, ComponentStats> {
        // A task that panicked while publishing leaves counts that are still counts.
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A copy of the current counts.
    pub fn snapshot(&self) -> ComponentStats {
        self.lock().clone()
    }
}

/// The metrics of every component of a running topology.
#[derive(Clone, Debug, Default)]
pub struct TopologyMetrics {
    /// Components in declaration order, the acker last.
    pub components: Vec<Arc<ComponentMetrics>>,
}

impl TopologyMetrics {
    /// The metrics of the component called `id`.
    pub fn component(&self, id: &str) -> Option<&Arc<ComponentMetrics>> {
        self.components.iter().find(|c| c.id == id)
    }

    /// A summary of every component's counts so far.
    pub fn summary(&self) -> Vec<ComponentSummary> {
        self.components
            .iter()
            .map(|c| ComponentSummary { id: c.id.clone(), role: c.role, tasks: c.tasks, stats: c.snapshot() })
            .collect()
    }
}

/// One row of a run's summary.
#[derive(Clone, Debug)]
pub struct ComponentSummary {
    /// The component's id.
    pub id: SmolStr,
    /// Spout, bolt or acker.
    pub role: ComponentRole,
    /// How many tasks ran it.
    pub tasks: u32,
    /// Its counts.
    pub stats: ComponentStats,
}

/// Formats a latency given in microseconds for people.
fn human_us(us: u64) -> String {
    if us >= 1_000_000 {
        format!("{:.2}s", us as f64 / 1e6)
    } else if us >= 1_000 {
        format!("{:.2}ms", us as f64 / 1e3)
    } else {
        format!("{us}µs")
    }
}

/// Prints summaries as a table: one row per component.
pub struct SummaryTable<'a>(pub &'a [ComponentSummary]);

impl fmt::Display for SummaryTable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<16} {:<6} {:>5} {:>12} {:>12} {:>12} {:>10} {:>10} {:>10} {:>7}",
            "component", "role", "tasks", "emitted", "executed", "acked", "failed", "p50", "p99", "errors"
        )?;
        for c in self.0 {
            let s = &c.stats;
            let (role, hist, scale) = match c.role {
                ComponentRole::Spout => ("spout", &s.complete_latency_us, 1),
                ComponentRole::Bolt => ("bolt", &s.execute_latency_ns, 1000),
                ComponentRole::Acker => ("acker", &s.execute_latency_ns, 1000),
            };
            let (p50, p99) = if hist.is_empty() {
                ("-".to_string(), "-".to_string())
            } else {
                let q = |p: f64| {
                    let v = hist.value_at_quantile(p);
                    if scale == 1 { human_us(v) } else { format!("{:.1}µs", v as f64 / scale as f64) }
                };
                (q(0.5), q(0.99))
            };
            writeln!(
                f,
                "{:<16} {:<6} {:>5} {:>12} {:>12} {:>12} {:>10} {:>10} {:>10} {:>7}",
                c.id, role, c.tasks, s.emitted, s.executed, s.acked, s.failed, p50, p99, s.errors
            )?;
        }
        writeln!(f, "(latency: complete latency for spouts, execute latency for bolts)")?;
        for c in self.0 {
            for (name, value) in &c.stats.gauges {
                writeln!(f, "{}: {name} = {value}", c.id)?;
            }
        }
        for c in self.0 {
            for e in &c.stats.last_errors {
                writeln!(f, "error in '{}': {}", c.id, e)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_moves_counts_into_the_shared_copy() {
        let shared = ComponentMetrics::new("c".into(), ComponentRole::Bolt, 1);
        let mut local = ComponentStats { executed: 5, ..Default::default() };
        local.execute_latency_ns.record(100).unwrap();
        local.record_error("boom".into());
        local.publish(&shared);
        local.executed = 2;
        local.publish(&shared);
        let s = shared.snapshot();
        assert_eq!(s.executed, 7);
        assert_eq!(s.errors, 1);
        assert_eq!(s.execute_latency_ns.len(), 1);
        assert_eq!(local.executed, 0);
    }

    #[test]
    fn gauges_keep_the_latest_value_of_each_name() {
        let shared = ComponentMetrics::new("k".into(), ComponentRole::Spout, 2);
        let mut task = ComponentStats::default();
        task.set_gauge("kafka_lag", &[("topic", "t"), ("partition", "0")], 7);
        task.set_gauge("kafka_lag", &[("topic", "t"), ("partition", "1")], 2);
        task.publish(&shared);
        assert!(task.gauges.is_empty());
        task.set_gauge("kafka_lag", &[("topic", "t"), ("partition", "0")], 3);
        task.publish(&shared);
        let gauges = shared.snapshot().gauges;
        assert_eq!(gauges.get("kafka_lag{topic=\"t\",partition=\"0\"}"), Some(&3));
        assert_eq!(gauges.get("kafka_lag{topic=\"t\",partition=\"1\"}"), Some(&2));
    }

    #[test]
    fn errors_are_capped() {
        let mut s = ComponentStats::default();
        for i in 0..25 {
            s.record_error(format!("e{i}"));
        }
        assert_eq!(s.errors, 25);
        assert_eq!(s.last_errors.len(), KEPT_ERRORS);
        assert_eq!(s.last_errors.back().unwrap(), "e24");
    }
}
