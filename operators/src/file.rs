//! The `file` spout: one tuple per line of a text file, replayed until processed.
//!
//! ```yaml
//! spouts:
//!   - { id: lines, kind: file, parallelism: 2, args: { path: input.txt } }
//! ```
//!
//! Each tuple has one field, `line` (without its line ending; invalid UTF-8 is replaced with
//! U+FFFD), and is tracked with its 1-based line number as message id. The file is read as the
//! tuples are emitted, so it can be larger than memory. With parallelism n, task i emits the
//! lines whose number minus one is i modulo n. A line stays in memory until its tuple tree is
//! acked; when it fails or times out, the line is emitted again, before any new line.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use rustc_hash::FxHashMap;
use serde::Deserialize;
use smol_str::SmolStr;
use squall_runtime::{BoxError, MessageId, Spout, SpoutFactory, SpoutOutput, StreamDecl, TaskContext, values};

/// The arguments of the `file` spout.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpoutConfig {
    /// The file to read (required).
    pub path: PathBuf,
}

impl SpoutFactory for FileSpoutConfig {
    fn declare(&self) -> Vec<StreamDecl> {
        vec![StreamDecl::default_stream(["line"])]
    }

    fn create(&self, ctx: &TaskContext) -> Result<Box<dyn Spout>, BoxError> {
        Ok(Box::new(FileSpout::open(&self.path, ctx.task_index, ctx.parallelism)?))
    }
}

fn open(path: &Path) -> Result<File, BoxError> {
    let file = File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let metadata = file.metadata().map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if metadata.is_dir() {
        return Err(format!("cannot read {}: it is a directory", path.display()).into());
    }
    Ok(file)
}

/// One task of a `file` spout.
struct FileSpout {
    path: PathBuf,
    /// `None` once the end of the file (or a read error) is reached.
    reader: Option<BufReader<File>>,
    buffer: Vec<u8>,
    /// The number of the last line read.
    line_no: u64,
    task_index: u64,
    tasks: u64,
    /// Lines emitted and not yet acked, by line number.
    unacked: FxHashMap<MessageId, SmolStr>,
    /// Failed lines to emit again, oldest first.
    replays: VecDeque<MessageId>,
}

impl FileSpout {
    /// Task `task_index` of `tasks` reading `path`.
    fn open(path: &Path, task_index: u32, tasks: u32) -> Result<Self, BoxError> {
        Ok(FileSpout {
            path: path.to_path_buf(),
            reader: Some(BufReader::with_capacity(64 * 1024, open(path)?)),
            buffer: Vec::new(),
            line_no: 0,
            task_index: u64::from(task_index),
            tasks: u64::from(tasks.max(1)),
            unacked: FxHashMap::default(),
            replays: VecDeque::new(),
        })
    }

    /// The next line to emit, a replay first, kept until it is acked.
    fn next(&mut self) -> Option<(MessageId, SmolStr)> {
        while let Some(id) = self.replays.pop_front() {
            // A line acked after it failed (a late ack) has nothing left to replay.
            if let Some(line) = self.unacked.get(&id) {
                return Some((id, line.clone()));
            }
        }
        let (id, line) = self.next_line()?;
        self.unacked.insert(id, line.clone());
        Some((id, line))
    }

    /// The next line of the file that belongs to this task, with its number.
    fn next_line(&mut self) -> Option<(MessageId, SmolStr)> {
        let reader = self.reader.as_mut()?;
        loop {
            self.buffer.clear();
            match reader.read_until(b'\n', &mut self.buffer) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    // A spout cannot return an error: say why the file ends early and stop there.
                    tracing::error!(path = %self.path.display(), line = self.line_no + 1, "cannot read: {e}; no more lines");
                    break;
                }
            }
            self.line_no += 1;
            if (self.line_no - 1) % self.tasks != self.task_index {
                continue;
            }
            let mut line = self.buffer.as_slice();
            if let Some(rest) = line.strip_suffix(b"\n") {
                line = rest.strip_suffix(b"\r").unwrap_or(rest);
            }
            return Some((self.line_no, SmolStr::new(String::from_utf8_lossy(line))));
        }
        self.reader = None;
        None
    }
}

impl Spout for FileSpout {
    fn next_tuple(&mut self, out: &mut SpoutOutput<'_>) {
        if let Some((id, line)) = self.next() {
            out.emit_with_id(id, values![line]);
        }
    }

    fn ack(&mut self, id: MessageId) {
        self.unacked.remove(&id);
    }

    fn fail(&mut self, id: MessageId) {
        if self.unacked.contains_key(&id) {
            self.replays.push_back(id);
        }
    }

    fn is_done(&self) -> bool {
        self.reader.is_none() && self.replays.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{collected_strings, collector, fail_once, run, stats};
    use squall_runtime::{TopologyBuilder, TopologyConfig};
    use std::collections::HashMap;
    use std::io::Write;
    use std::sync::Arc;

    fn write_file(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.path().join(name);
        File::create(&path).unwrap().write_all(bytes).unwrap();
        path
    }

    fn spout(path: &Path) -> Arc<FileSpoutConfig> {
        Arc::new(FileSpoutConfig { path: path.to_path_buf() })
    }

    #[test]
    fn emits_every_line_once_and_acks_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_file(&dir, "in.txt", b"one\r\ntwo\n\nthree \xff\nlast without newline");
        let (sink, collected) = collector();
        let mut builder = TopologyBuilder::new("file");
        builder.spout("lines", 1, spout(&path));
        builder.bolt("sink", 1, sink).shuffle("lines");
        let report = run(builder);
        let lines = collected_strings(&collected, "line");
        assert_eq!(lines, ["one", "two", "", "three \u{fffd}", "last without newline"]);
        let s = stats(&report, "lines");
        assert_eq!((s.emitted, s.acked, s.failed), (5, 5, 0));
    }

    #[test]
    fn tasks_split_the_lines_between_them() {
        let dir = tempfile::tempdir().unwrap();
        let text: String = (1..=100).map(|i| format!("line {i}\n")).collect();
        let path = write_file(&dir, "in.txt", text.as_bytes());
        let (sink, collected) = collector();
        let mut builder = TopologyBuilder::new("file");
        builder.spout("lines", 3, spout(&path));
        builder.bolt("sink", 1, sink).shuffle("lines");
        let report = run(builder);
        let tuples = collected.lock().unwrap();
        let mut by_task: HashMap<u32, Vec<u32>> = HashMap::new();
        for t in tuples.iter() {
            let n: u32 = t.get_str("line").unwrap()["line ".len()..].parse().unwrap();
            by_task.entry(t.source_task()).or_default().push(n);
        }
        let mut all: Vec<u32> = by_task.values().flatten().copied().collect();
        all.sort_unstable();
        assert_eq!(all, (1..=100).collect::<Vec<_>>(), "every line exactly once");
        for (task, lines) in &by_task {
            let residue = (lines[0] - 1) % 3;
            assert!(lines.iter().all(|n| (n - 1) % 3 == residue), "task {task} emitted {lines:?}");
        }
        assert_eq!(by_task.len(), 3);
        assert_eq!(stats(&report, "lines").acked, 100);
    }

    #[test]
    fn failed_lines_are_replayed_until_acked() {
        let dir = tempfile::tempdir().unwrap();
        let text: String = (1..=50).map(|i| format!("l{i}\n")).collect();
        let path = write_file(&dir, "in.txt", text.as_bytes());
        let (flaky, failed) = fail_once();
        let (sink, collected) = collector();
        let mut builder = TopologyBuilder::new("replay");
        builder.spout("lines", 2, spout(&path));
        builder.bolt("flaky", 2, flaky).shuffle("lines");
        builder.bolt("sink", 1, sink).shuffle("flaky");
        let report = run(builder);

        let expected: Vec<String> = (1..=50).map(|i| format!("l{i}")).collect();
        let mut delivered = collected_strings(&collected, "line");
        delivered.sort();
        let mut failed = failed.lock().unwrap().clone();
        failed.sort();
        let mut sorted_expected = expected.clone();
        sorted_expected.sort();
        assert_eq!(failed, sorted_expected, "each line failed once");
        assert_eq!(delivered, sorted_expected, "each line delivered once after its replay");
        let s = stats(&report, "lines");
        assert_eq!((s.emitted, s.acked, s.failed, s.timed_out), (100, 50, 50, 0));
    }

    #[test]
    fn runs_with_acking_off() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_file(&dir, "in.txt", b"a\nb\nc\n");
        let (sink, collected) = collector();
        let mut builder = TopologyBuilder::new("file");
        builder.config(TopologyConfig { acking: false, ..TopologyConfig::default() });
        builder.spout("lines", 1, spout(&path));
        builder.bolt("sink", 1, sink).shuffle("lines");
        let report = run(builder);
        assert_eq!(collected_strings(&collected, "line"), ["a", "b", "c"]);
        // With acking off every emit counts as acked at once.
        let s = stats(&report, "lines");
        assert_eq!((s.emitted, s.acked, s.failed), (3, 3, 0));
    }

    #[test]
    fn unacked_lines_are_kept_and_replayed_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_file(&dir, "in.txt", b"a\nb\nc\nd\ne\n");
        let mut spout = FileSpout::open(&path, 1, 2).unwrap();
        assert_eq!(spout.next(), Some((2, "b".into())));
        assert_eq!(spout.next(), Some((4, "d".into())));
        spout.ack(2);
        spout.fail(4);
        spout.fail(2); // already acked: nothing to replay
        assert_eq!(spout.unacked.len(), 1);
        assert!(!spout.is_done());
        assert_eq!(spout.next(), Some((4, "d".into())), "the replay comes before new lines");
        assert_eq!(spout.next(), None, "line 5 belongs to task 0");
        assert!(!spout.unacked.is_empty() && spout.is_done(), "done: a pending line replays only if it fails");
        spout.fail(4);
        assert!(!spout.is_done());
        assert_eq!(spout.next(), Some((4, "d".into())));
        spout.ack(4);
        assert!(spout.unacked.is_empty() && spout.is_done());
    }

    #[test]
    fn a_missing_file_stops_the_run_before_it_starts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.txt");
        let (sink, _) = collector();
        let mut builder = TopologyBuilder::new("file");
        builder.spout("lines", 1, spout(&path));
        builder.bolt("sink", 1, sink).shuffle("lines");
        let topology = builder.build().unwrap();
        let err = squall_runtime::run_local(&topology, Default::default()).unwrap_err().to_string();
        assert!(err.contains(&format!("cannot open {}", path.display())), "{err}");
        assert!(err.contains("No such file"), "{err}");
        assert!(err.contains("component 'lines'"), "{err}");

        let err = open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("is a directory"), "{err}");
    }

    #[test]
    fn args_from_yaml() {
        let registry = crate::registry();
        let yaml = "name: t\nspouts:\n  - { id: lines, kind: file, args: { pth: x } }\nbolts: []\n";
        let err = registry.load_str(yaml, "t.yaml").unwrap_err().to_string();
        assert!(err.contains("unknown field `pth`"), "{err}");
        let yaml = "name: t\nspouts:\n  - { id: lines, kind: file }\n";
        let err = registry.load_str(yaml, "t.yaml").unwrap_err().to_string();
        assert!(err.contains("missing field `path`"), "{err}");
    }
}
