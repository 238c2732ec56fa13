//! A word count over a topology gives exactly the counts of a plain Rust loop, with acking on
//! (nothing fails, so nothing is replayed) and with acking off.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use common::*;
use squall_runtime::TaskId;
use squall_runtime::metrics::ComponentRole;
use squall_runtime::prelude::*;

const SENTENCES: u64 = 2000;
const VOCABULARY: [&str; 12] =
    ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "and", "runs", "far", "away"];

/// Sentence `id`: one to seven words, from a rule rather than a random generator, so every run
/// and the reference loop see the same text.
fn sentence(id: u64) -> String {
    let words = (id % 7 + 1) as usize;
    (0..words).map(|j| VOCABULARY[(id as usize * 31 + j * 17 + j * j) % VOCABULARY.len()]).collect::<Vec<_>>().join(" ")
}

fn reference_counts() -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for id in 0..SENTENCES {
        for word in sentence(id).split_whitespace() {
            *counts.entry(word.to_string()).or_default() += 1;
        }
    }
    counts
}

/// Counts words by task and hands its counts over when its task stops.
struct WordCounter {
    task: TaskId,
    counts: HashMap<String, u64>,
    totals: Arc<Mutex<Vec<(TaskId, String, u64)>>>,
}

impl Bolt for WordCounter {
    fn execute(&mut self, input: &Tuple, _: &mut BoltOutput<'_>) -> Result<(), BoxError> {
        let word = input.get_str("word").ok_or("no word")?;
        *self.counts.entry(word.to_string()).or_default() += 1;
        Ok(())
    }

    fn cleanup(&mut self) {
        lock(&self.totals).extend(self.counts.drain().map(|(w, n)| (self.task, w, n)));
    }
}

/// Runs sentences → split (2 tasks, shuffle) → count (3 tasks, fields `word`) and returns the
/// counts and the report.
fn word_count(acking: bool) -> (BTreeMap<String, u64>, squall_runtime::RunReport, SpoutLog) {
    let log = Arc::new(Mutex::new(SpoutLog::default()));
    let totals = Arc::new(Mutex::new(Vec::new()));
    let mut builder = TopologyBuilder::new("wordcount");
    builder.config(TopologyConfig { acking, ..TopologyConfig::default() });
    builder.spout(
        "sentences",
        1,
        replaying_spout_with(SENTENCES, ["line"], Arc::new(|id, _| values![sentence(id)]), &log),
    );
    let split = bolt_fn(["word"], |_| {
        execute_fn(|t, out| {
            for word in t.get_str("line").ok_or("no line")?.split_whitespace() {
                out.emit(values![word]);
            }
            Ok(())
        })
    });
    builder.bolt("split", 2, split).shuffle("sentences");
    let count = {
        let totals = totals.clone();
        bolt_fn(NO_FIELDS, move |ctx| WordCounter { task: ctx.task, counts: HashMap::new(), totals: totals.clone() })
    };
    builder.bolt("count", 3, count).fields("split", &["word"]);
    let report = run_to_completion(&builder.build().unwrap());

    let mut counts = BTreeMap::new();
    let mut owner: BTreeMap<String, TaskId> = BTreeMap::new();
    for (task, word, n) in lock(&totals).drain(..) {
        let first = *owner.entry(word.clone()).or_insert(task);
        assert_eq!(first, task, "word {word} was counted by tasks {first} and {task}");
        *counts.entry(word).or_default() += n;
    }
    let log = std::mem::take(&mut *lock(&log));
    (counts, report, log)
}

#[test]
fn word_counts_with_acking_equal_a_plain_loop() {
    let (counts, report, log) = word_count(true);
    assert_eq!(counts, reference_counts());
    log.assert_every_id_acked_once(SENTENCES);
    assert_eq!(log.total_fails(), 0);
    let spout = stats(&report, "sentences");
    assert_eq!((spout.acked, spout.failed), (SENTENCES, 0));
    let words: u64 = reference_counts().values().sum();
    assert_eq!(stats(&report, "split").executed, SENTENCES);
    assert_eq!(stats(&report, "split").emitted, words);
    assert_eq!(stats(&report, "count").executed, words);
    assert_eq!(report.errors(), 0);
}

#[test]
fn word_counts_without_acking_equal_a_plain_loop() {
    let (counts, report, log) = word_count(false);
    assert_eq!(counts, reference_counts());
    log.assert_every_id_acked_once(SENTENCES);
    assert!(report.components.iter().all(|c| c.role != ComponentRole::Acker), "an acker ran with acking off");
    assert_eq!(stats(&report, "count").executed, reference_counts().values().sum::<u64>());
    assert_eq!(report.errors(), 0);
}
