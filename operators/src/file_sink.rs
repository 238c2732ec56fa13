//! The `file_sink` bolt: appends each tuple to a file as one JSON line.
//!
//! ```yaml
//! bolts:
//!   - { id: out, kind: file_sink, args: { path: counts.jsonl, truncate: true }, inputs: [ { from: count } ] }
//! ```
//!
//! Each input becomes one line, a JSON object with the tuple's fields in order:
//! `{"word":"fox","count":3}`. An input is acked only once its line has been written to the file
//! (handed to the operating system; the file is not fsynced), and failed, so that its spout
//! tuple is replayed, if the write fails. Lines are buffered and written when the executor
//! flushes (when its queue is empty, and at least every millisecond under load). The tasks of a
//! component in one process share one open file and write whole lines only, so lines of
//! different tasks never interleave. The file is created if it does not exist; with
//! `truncate: true` it is emptied once, when the first task opens it.
//!
//! A process killed in the middle of a write can leave its last line cut short. Its inputs were
//! not acked, so their tuples are replayed and written again whole; the cut line stays where it
//! is, and a sink that opens a file ending without a newline starts on a new line, so that no
//! whole line is ever glued to a cut one. (The cut line is not removed: another process may be
//! appending to the same file at that moment.)

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use serde::Deserialize;
use squall_runtime::{Bolt, BoltFactory, BoltOutput, BoxError, Deferred, InputStream, StreamDecl, TaskContext, Tuple};

use crate::json::write_tuple;

/// A task writes its buffer at once, without waiting for a flush, once it holds this much.
const MAX_BUFFER: usize = 1 << 20;

/// The arguments of the `file_sink` bolt.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// The file to append to (required). Its directory must exist.
    pub path: PathBuf,
    /// Whether to empty the file when the sink opens it (default false: append).
    #[serde(default)]
    pub truncate: bool,
    /// The file, once the first task has opened it.
    #[serde(skip)]
    file: Mutex<Option<Arc<Mutex<File>>>>,
}

impl FileSinkConfig {
    /// A sink writing to `path`, emptying it first if `truncate`.
    pub fn new(path: impl Into<PathBuf>, truncate: bool) -> Self {
        FileSinkConfig { path: path.into(), truncate, file: Mutex::new(None) }
    }

    /// The shared file, opened by the first call.
    fn shared_file(&self) -> Result<Arc<Mutex<File>>, BoxError> {
        let mut slot = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(file) = &*slot {
            return Ok(file.clone());
        }
        let file = Arc::new(Mutex::new(open(&self.path, self.truncate)?));
        *slot = Some(file.clone());
        Ok(file)
    }
}

fn open(path: &Path, truncate: bool) -> Result<File, BoxError> {
    let mut options = OpenOptions::new();
    options.create(true);
    if truncate {
        options.write(true).truncate(true);
    } else {
        options.append(true).read(true);
    }
    let mut file = options.open(path).map_err(|e| format!("cannot open {} for writing: {e}", path.display()))?;
    if !truncate && ends_in_a_cut_line(&file).map_err(|e| format!("cannot read {}: {e}", path.display()))? {
        file.write_all(b"\n").map_err(|e| format!("cannot write to {}: {e}", path.display()))?;
    }
    Ok(file)
}

/// Whether `file` is not empty and its last byte is not a newline: a line cut short.
fn ends_in_a_cut_line(file: &File) -> std::io::Result<bool> {
    use std::os::unix::fs::FileExt;
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(false);
    }
    let mut last = [0u8];
    file.read_exact_at(&mut last, len - 1)?;
    Ok(last[0] != b'\n')
}

impl BoltFactory for FileSinkConfig {
    fn declare(&self, _inputs: &[InputStream]) -> Result<Vec<StreamDecl>, BoxError> {
        Ok(vec![])
    }

    fn create(&self, _ctx: &TaskContext) -> Result<Box<dyn Bolt>, BoxError> {
        Ok(Box::new(FileSinkBolt {
            path: self.path.clone(),
            file: self.shared_file()?,
            buffer: Vec::new(),
            waiting: Vec::new(),
        }))
    }
}

/// One task of a `file_sink` bolt.
struct FileSinkBolt {
    path: PathBuf,
    file: Arc<Mutex<File>>,
    /// Lines not yet written.
    buffer: Vec<u8>,
    /// The inputs whose lines are in `buffer`, to ack once it is written.
    waiting: Vec<Deferred>,
}

impl FileSinkBolt {
    /// Writes the buffered lines in one piece, then acks their inputs (or fails them).
    fn write(&mut self, out: &mut BoltOutput<'_>) -> Result<(), BoxError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let written = {
            let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
            file.write_all(&self.buffer)
        };
        self.buffer.clear();
        match written {
            Ok(()) => {
                self.waiting.drain(..).for_each(|input| out.ack(input));
                Ok(())
            }
            Err(e) => {
                let lines = self.waiting.len();
                self.waiting.drain(..).for_each(|input| out.fail(input));
                Err(format!("cannot write {lines} lines to {}: {e}", self.path.display()).into())
            }
        }
    }
}

impl Bolt for FileSinkBolt {
    fn execute(&mut self, input: &Tuple, out: &mut BoltOutput<'_>) -> Result<(), BoxError> {
        let start = self.buffer.len();
        if let Err(e) = write_tuple(input, &mut self.buffer) {
            self.buffer.truncate(start);
            return Err(format!("cannot write the tuple as JSON: {e}").into());
        }
        self.buffer.push(b'\n');
        self.waiting.push(out.defer());
        if self.buffer.len() >= MAX_BUFFER {
            self.write(out)?;
        }
        Ok(())
    }

    fn flush(&mut self, out: &mut BoltOutput<'_>) -> Result<(), BoxError> {
        self.write(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{rows, run, stats};
    use squall_runtime::{TopologyBuilder, values};
    use std::collections::HashMap;

    fn read_lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path).unwrap().lines().map(str::to_string).collect()
    }

    fn sink_numbers(path: &Path, truncate: bool, parallelism: u32, n: usize) -> squall_runtime::RunReport {
        let input = (0..n).map(|i| values![i, format!("row {i}")]).collect();
        let mut builder = TopologyBuilder::new("sink");
        builder.spout("rows", 1, rows(&["n", "text"], input));
        builder.bolt("out", parallelism, Arc::new(FileSinkConfig::new(path, truncate))).shuffle("rows");
        run(builder)
    }

    #[test]
    fn tasks_share_the_file_and_write_whole_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        std::fs::write(&path, "old line\n").unwrap();
        let report = sink_numbers(&path, true, 3, 3000);
        let lines = read_lines(&path);
        assert_eq!(lines.len(), 3000, "the old content is gone, every tuple is there");
        let mut seen: Vec<i64> = lines
            .iter()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}"));
                assert_eq!(v["text"], format!("row {}", v["n"]));
                assert!(l.starts_with("{\"n\":"), "fields in order: {l}");
                v["n"].as_i64().unwrap()
            })
            .collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..3000).collect::<Vec<_>>());
        assert_eq!(stats(&report, "rows").acked, 3000);
        assert_eq!(stats(&report, "out").acked, 3000);
    }

    #[test]
    fn appends_by_default() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        std::fs::write(&path, "old line\n").unwrap();
        sink_numbers(&path, false, 1, 2);
        assert_eq!(read_lines(&path), ["old line", r#"{"n":0,"text":"row 0"}"#, r#"{"n":1,"text":"row 1"}"#]);
    }

    #[test]
    fn a_line_cut_short_by_a_killed_writer_stays_on_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        std::fs::write(&path, "whole line\n{\"n\":7,\"te").unwrap();
        sink_numbers(&path, false, 1, 1);
        assert_eq!(read_lines(&path), ["whole line", r#"{"n":7,"te"#, r#"{"n":0,"text":"row 0"}"#]);
    }

    #[test]
    fn inputs_fail_when_the_write_fails() {
        // Writes to /dev/full fail with "no space left on device".
        let full = Path::new("/dev/full");
        if !full.exists() {
            eprintln!("skipped: this system has no /dev/full");
            return;
        }
        let report = sink_numbers(full, false, 1, 10);
        let spout = stats(&report, "rows");
        assert_eq!((spout.acked, spout.failed), (0, 10));
        let sink = stats(&report, "out");
        assert!(sink.last_errors.iter().any(|e| e.contains("cannot write") && e.contains("/dev/full")), "{sink:?}");
    }

    #[test]
    fn a_missing_directory_stops_the_run_before_it_starts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no-such-dir").join("out.jsonl");
        let mut builder = TopologyBuilder::new("sink");
        builder.spout("rows", 1, rows(&["n"], vec![values![1]]));
        builder.bolt("out", 1, Arc::new(FileSinkConfig::new(&path, false))).shuffle("rows");
        let topology = builder.build().unwrap();
        let err = squall_runtime::run_local(&topology, Default::default()).unwrap_err().to_string();
        assert!(err.contains(&format!("cannot open {} for writing", path.display())), "{err}");
        assert!(err.contains("component 'out'"), "{err}");
    }

    /// The word count of the design document, end to end: file → split → count → file_sink.
    #[test]
    fn word_count_matches_a_plain_count() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("input.txt");
        let output = dir.path().join("counts.jsonl");
        let words = ["fox", "dog", "the", "quick", "lazy", "brown", "jumps", "over"];
        let text: String = (0..500)
            .map(|i| {
                (0..(i % 7) + 1).map(|j| words[(i * 3 + j * 5) % words.len()]).collect::<Vec<_>>().join(" ") + "\n"
            })
            .collect();
        std::fs::write(&input, &text).unwrap();
        let mut expected: HashMap<String, i64> = HashMap::new();
        for word in text.split_whitespace() {
            *expected.entry(word.to_string()).or_default() += 1;
        }

        let yaml = format!(
            r#"
name: wordcount
config: {{ message_timeout: 30s, max_spout_pending: 100 }}
spouts:
  - {{ id: lines, kind: file, parallelism: 2, args: {{ path: "{}" }} }}
bolts:
  - {{ id: split, kind: split, parallelism: 2, inputs: [ {{ from: lines, grouping: shuffle }} ] }}
  - {{ id: count, kind: count, parallelism: 3, args: {{ key: word }}, inputs: [ {{ from: split, grouping: {{ fields: [word] }} }} ] }}
  - {{ id: out, kind: file_sink, parallelism: 2, args: {{ path: "{}", truncate: true }}, inputs: [ {{ from: count }} ] }}
"#,
            input.display(),
            output.display()
        );
        let topology = crate::registry().load_str(&yaml, "wordcount.yaml").unwrap();
        let report = squall_runtime::run_local(&topology, Default::default()).unwrap();
        assert_eq!(report.errors(), 0);
        assert_eq!(stats(&report, "lines").acked, 500);

        let mut counts: HashMap<String, i64> = HashMap::new();
        let lines = read_lines(&output);
        for line in &lines {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let count = counts.entry(v["word"].as_str().unwrap().to_string()).or_default();
            *count = (*count).max(v["count"].as_i64().unwrap());
        }
        assert_eq!(counts, expected);
        assert_eq!(lines.len() as i64, expected.values().sum::<i64>(), "one line per word occurrence");
    }

    #[test]
    fn unknown_args_are_rejected() {
        let yaml = "name: t\nspouts: [ { id: s, kind: generator } ]\nbolts:\n  - { id: o, kind: file_sink, args: { path: x, append: true }, inputs: [ { from: s } ] }\n";
        let err = crate::registry().load_str(yaml, "t.yaml").unwrap_err().to_string();
        assert!(err.contains("unknown field `append`"), "{err}");
    }
}
