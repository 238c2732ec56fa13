//! Word count built in Rust: the topology of `examples/wordcount.yaml`, with the counting done
//! by a bolt written here instead of the built-in `count` kind.
//!
//! Run from the repository's root: `cargo run --example wordcount [INPUT] [OUTPUT]`.

use std::collections::HashMap;
use std::sync::Arc;

use squall::operators::{FileSinkConfig, FileSpoutConfig, SplitBoltConfig};
use squall::prelude::*;
use squall::runtime::SummaryTable;

/// Counts words: for each input word, emits the word and how often it has been seen so far.
#[derive(Default)]
struct WordCounter {
    counts: HashMap<String, i64>,
}

impl Bolt for WordCounter {
    fn execute(&mut self, input: &Tuple, out: &mut BoltOutput<'_>) -> Result<(), BoxError> {
        let word = input.get_str("word").ok_or("the input has no string field `word`")?;
        let count = self.counts.entry(word.to_string()).or_insert(0);
        *count += 1;
        // Anchored to the input: if anything downstream fails, the line is replayed.
        out.emit(values![word, *count]);
        // Returning Ok acks the input; an Err (or a panic) fails it.
        Ok(())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let input = args.next().unwrap_or_else(|| "examples/data/storm.txt".into());
    let output = args.next().unwrap_or_else(|| "wordcount-counts.jsonl".into());

    let mut builder = TopologyBuilder::new("wordcount");
    builder.config(TopologyConfig { max_spout_pending: 5000, ..TopologyConfig::default() });
    builder.spout("lines", 1, Arc::new(FileSpoutConfig { path: input.into() }));
    builder.bolt("split", 2, Arc::new(SplitBoltConfig::default())).shuffle("lines");
    builder.bolt("count", 2, bolt_fn(["word", "count"], |_ctx| WordCounter::default())).fields("split", &["word"]);
    builder.bolt("out", 1, Arc::new(FileSinkConfig::new(&output, true))).global("count");

    let report = run_local(&builder.build()?, RunOptions::default())?;
    print!("{}", SummaryTable(&report.components));
    println!("counts written to {output}");
    Ok(())
}
