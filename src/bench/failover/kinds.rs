//! The components of the failover benchmark's topology, registered in every `squall` binary so
//! that any cluster can run the benchmark:
//!
//! - `bench_sequence` (spout): each task emits `stream` (its task index), `seq` (0, 1, 2, ...)
//!   and `emitted_ns` (Unix time) at `rate` tuples per second. It is a replayable source: it
//!   commits the first unacknowledged `seq` to `/squall/bench/<topology>/<component>/<task>`
//!   every `commit_interval`, and a task that starts (again) resumes from there, so a killed
//!   task's tuples are emitted again and none is lost.
//! - `bench_relay` (bolt): passes each tuple on, anchored.
//! - `bench_kafka_relay` (bolt): the same for a `kafka` spout's tuples, whose messages the
//!   benchmark produced (the value is the Unix time in ns it was sent at): `stream` is the
//!   partition, `seq` the offset, `emitted_ns` the value.
//! - `bench_arrivals` (bolt): appends `stream seq emitted_ns arrived_ns` lines to a file per task
//!   in `dir`, and acks each input once its line is written.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use squall_runtime::cluster::paths;
use squall_runtime::{
    Bolt, BoltFactory, BoltOutput, BoxError, Coordination, CoordinationError, Deferred, InputStream, MessageId,
    PendingWrite, Registry, Spout, SpoutFactory, SpoutOutput, StreamDecl, TaskContext, Tuple, Value, values,
};

/// The kind names.
pub const SEQUENCE: &str = "bench_sequence";
/// See the module docs.
pub const RELAY: &str = "bench_relay";
/// See the module docs.
pub const KAFKA_RELAY: &str = "bench_kafka_relay";
/// See the module docs.
pub const ARRIVALS: &str = "bench_arrivals";

/// The fields every bench tuple carries.
const FIELDS: [&str; 3] = ["stream", "seq", "emitted_ns"];

/// Adds the benchmark's kinds to `registry`.
pub fn register(registry: &mut Registry) {
    registry
        .spout::<SequenceConfig>(SEQUENCE)
        .bolt::<RelayConfig>(RELAY)
        .bolt::<KafkaRelayConfig>(KAFKA_RELAY)
        .bolt::<ArrivalsConfig>(ARRIVALS);
}

/// Nanoseconds since the Unix epoch: comparable across the processes of one machine.
pub fn unix_nanos() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64)
}

/// Args of `bench_sequence`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SequenceConfig {
    /// Tuples per second per task.
    rate: f64,
    #[serde(default = "default_commit_interval", with = "humantime_serde")]
    commit_interval: Duration,
}

fn default_commit_interval() -> Duration {
    Duration::from_millis(100)
}

impl SpoutFactory for SequenceConfig {
    fn declare(&self) -> Vec<StreamDecl> {
        vec![StreamDecl::default_stream(FIELDS)]
    }

    fn create(&self, ctx: &TaskContext) -> Result<Box<dyn Spout>, BoxError> {
        if !(self.rate.is_finite() && self.rate > 0.0) {
            return Err(format!("`rate` must be a positive number of tuples per second, not {}", self.rate).into());
        }
        let coordination = ctx.coordination()?.clone();
        let path = paths::bench_position(&ctx.topology, &ctx.component, ctx.task_index);
        Ok(Box::new(Sequence {
            coordination,
            path,
            stream: ctx.task_index as i64,
            period: Duration::from_secs_f64(1.0 / self.rate),
            commit_interval: self.commit_interval,
            started: None,
            next_seq: 0,
            emitted: 0,
            pending: BTreeMap::new(),
            replays: VecDeque::new(),
            version: None,
            committed: 0,
            next_commit: Instant::now(),
            committing: None,
        }))
    }
}

/// A `bench_sequence` task.
struct Sequence {
    coordination: Coordination,
    path: String,
    stream: i64,
    period: Duration,
    commit_interval: Duration,
    /// When the task started emitting (after it read where to resume), and from which seq.
    started: Option<(Instant, i64)>,
    next_seq: i64,
    /// New tuples emitted since `started` (the rate's count).
    emitted: u64,
    /// Emitted, not yet acked: seq → emitted_ns.
    pending: BTreeMap<i64, i64>,
    replays: VecDeque<i64>,
    /// The version of the commit znode as last written (None before the first read).
    version: Option<i32>,
    committed: i64,
    next_commit: Instant,
    /// The commit under way, and the seq it writes: commits never hold up the emitting (the
    /// store may be electing a new leader).
    committing: Option<(PendingWrite, i64)>,
}

impl Sequence {
    /// Reads where to resume and claims the znode (a write that bumps its version, so that a
    /// task it took over from cannot move it any more).
    fn resume(&mut self) -> Result<(), CoordinationError> {
        let stored = self.coordination.read(&self.path)?;
        let (next, version) = match stored {
            Some((data, version)) => {
                (std::str::from_utf8(&data).ok().and_then(|s| s.trim().parse().ok()), Some(version))
            }
            None => (None, None),
        };
        let next = next.unwrap_or(0);
        self.version = Some(self.coordination.write(&self.path, next.to_string().as_bytes(), version)?);
        (self.next_seq, self.committed) = (next, next);
        self.started = Some((Instant::now(), next));
        Ok(())
    }

    /// Settles the commit under way, if it is done; starts one of the first unacknowledged
    /// seq if none is under way and it moved.
    fn commit(&mut self) {
        if let Some((pending, point)) = &mut self.committing {
            match pending.outcome() {
                None => return,
                Some(Ok(version)) => (self.version, self.committed) = (Some(version), *point),
                // Another task claimed the sequence: it resumes it; this one stops committing.
                Some(Err(CoordinationError::Conflict { .. })) => self.version = None,
                Some(Err(e)) => tracing::warn!("{}: cannot commit {point}: {e}", self.path),
            }
            self.committing = None;
        }
        let point = self.pending.keys().next().copied().unwrap_or(self.next_seq);
        if point == self.committed || self.version.is_none() {
            return;
        }
        let write = self.coordination.write_in_background(&self.path, point.to_string().into_bytes(), self.version);
        self.committing = Some((write, point));
    }

    fn tuple(&self, seq: i64, emitted_ns: i64) -> squall_runtime::Values {
        values![Value::Int(self.stream), Value::Int(seq), Value::Int(emitted_ns)]
    }
}

impl Spout for Sequence {
    fn next_tuple(&mut self, out: &mut SpoutOutput<'_>) {
        let Some((started, first)) = self.started else {
            if let Err(e) = self.resume() {
                out.report_error(format!("cannot read where {} resumes: {e}", self.path));
            }
            return;
        };
        let now = Instant::now();
        if now >= self.next_commit && self.version.is_some() {
            self.commit();
            self.next_commit = now + self.commit_interval;
        }
        if let Some(seq) = self.replays.pop_front() {
            if let Some(&emitted_ns) = self.pending.get(&seq) {
                out.emit_with_id(seq as MessageId, self.tuple(seq, emitted_ns));
            }
            return;
        }
        // New tuples at `rate`, counted from the start, so a pause is not made up in a burst
        // larger than what fell due.
        let due = started + self.period.mul_f64(self.emitted as f64);
        if now < due {
            return;
        }
        let seq = self.next_seq;
        let emitted_ns = unix_nanos();
        self.pending.insert(seq, emitted_ns);
        out.emit_with_id(seq as MessageId, self.tuple(seq, emitted_ns));
        self.next_seq += 1;
        self.emitted += 1;
        debug_assert!(self.next_seq > first);
    }

    fn ack(&mut self, id: MessageId) {
        self.pending.remove(&(id as i64));
    }

    fn fail(&mut self, id: MessageId) {
        if self.pending.contains_key(&(id as i64)) {
            self.replays.push_back(id as i64);
        }
    }

    fn deactivate(&mut self) {
        if self.version.is_some() {
            self.commit();
        }
    }

    fn close(&mut self) {
        self.deactivate();
    }
}

/// Args of `bench_relay` (none).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RelayConfig {}

/// A relay's output, once every input has the fields it reads.
fn relay_streams(inputs: &[InputStream], reads: &[&str]) -> Result<Vec<StreamDecl>, BoxError> {
    for input in inputs {
        for field in reads {
            input.require(field, "field")?;
        }
    }
    Ok(vec![StreamDecl::default_stream(FIELDS)])
}

impl BoltFactory for RelayConfig {
    fn declare(&self, inputs: &[InputStream]) -> Result<Vec<StreamDecl>, BoxError> {
        relay_streams(inputs, &FIELDS)
    }

    fn create(&self, _ctx: &TaskContext) -> Result<Box<dyn Bolt>, BoxError> {
        Ok(Box::new(Relay))
    }
}

struct Relay;

impl Bolt for Relay {
    fn execute(&mut self, input: &Tuple, out: &mut BoltOutput<'_>) -> Result<(), BoxError> {
        let field = |name: &str| input.get(name).cloned().ok_or_else(|| format!("no field {name}"));
        out.emit(values![field("stream")?, field("seq")?, field("emitted_ns")?]);
        Ok(())
    }
}

/// Args of `bench_kafka_relay` (none).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KafkaRelayConfig {}

impl BoltFactory for KafkaRelayConfig {
    fn declare(&self, inputs: &[InputStream]) -> Result<Vec<StreamDecl>, BoxError> {
        relay_streams(inputs, &["partition", "offset", "value"])
    }

    fn create(&self, _ctx: &TaskContext) -> Result<Box<dyn Bolt>, BoxError> {
        Ok(Box::new(KafkaRelay))
    }
}

struct KafkaRelay;

impl Bolt for KafkaRelay {
    fn execute(&mut self, input: &Tuple, out: &mut BoltOutput<'_>) -> Result<(), BoxError> {
        let int = |name: &str| input.get(name).and_then(Value::as_int).ok_or_else(|| format!("no integer {name}"));
        let value = input.get("value").and_then(Value::as_str).ok_or("no string value")?;
        let emitted_ns: i64 = value.parse().map_err(|_| format!("the value {value:?} is not a time in ns"))?;
        out.emit(values![Value::Int(int("partition")?), Value::Int(int("offset")?), Value::Int(emitted_ns)]);
        Ok(())
    }
}

/// Args of `bench_arrivals`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ArrivalsConfig {
    /// The directory the arrival files go to (it must exist).
    dir: PathBuf,
}

impl BoltFactory for ArrivalsConfig {
    fn declare(&self, inputs: &[InputStream]) -> Result<Vec<StreamDecl>, BoxError> {
        for input in inputs {
            for field in FIELDS {
                input.require(field, "field")?;
            }
        }
        Ok(vec![])
    }

    fn create(&self, ctx: &TaskContext) -> Result<Box<dyn Bolt>, BoxError> {
        let path = self.dir.join(format!("{}-{}.arrivals", std::process::id(), ctx.task));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        Ok(Box::new(Arrivals { file, buffer: Vec::new(), waiting: Vec::new() }))
    }
}

struct Arrivals {
    file: File,
    buffer: Vec<u8>,
    waiting: Vec<Deferred>,
}

impl Bolt for Arrivals {
    fn execute(&mut self, input: &Tuple, out: &mut BoltOutput<'_>) -> Result<(), BoxError> {
        let int = |name: &str| input.get(name).and_then(Value::as_int).ok_or_else(|| format!("no integer {name}"));
        let line = format!("{} {} {} {}\n", int("stream")?, int("seq")?, int("emitted_ns")?, unix_nanos());
        self.buffer.extend_from_slice(line.as_bytes());
        self.waiting.push(out.defer());
        Ok(())
    }

    fn flush(&mut self, out: &mut BoltOutput<'_>) -> Result<(), BoxError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let written = self.file.write_all(&self.buffer);
        self.buffer.clear();
        match written {
            Ok(()) => {
                self.waiting.drain(..).for_each(|input| out.ack(input));
                Ok(())
            }
            Err(e) => {
                self.waiting.drain(..).for_each(|input| out.fail(input));
                Err(format!("cannot write arrivals: {e}").into())
            }
        }
    }
}
