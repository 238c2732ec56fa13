//! The `generator` spout: synthetic sentences at a given rate, for benchmarks.
//!
//! ```yaml
//! spouts:
//!   - { id: sentences, kind: generator, parallelism: 4, args: { rate: 100000, words: 10, vocabulary: 1000 } }
//! ```
//!
//! Each tuple has one field, `line`: a sentence of `words` pseudo-words drawn uniformly from a
//! vocabulary of `vocabulary` distinct words of 3 to 10 lowercase letters. Tuples are tracked
//! with a per-task sequence number (0, 1, 2, …) as message id. The sentence is a function of
//! (`seed`, task index, sequence number) alone, so a failed tuple is replayed with the same text
//! without being kept in memory. [`SentenceGenerator`] makes the same sentences outside a
//! topology, for baselines.

use std::collections::VecDeque;
use std::time::Instant;

use rustc_hash::FxHashSet;
use serde::{Deserialize, Deserializer};
use squall_runtime::{BoxError, MessageId, Spout, SpoutFactory, SpoutOutput, StreamDecl, TaskContext, values};

/// The most words a sentence may have.
const MAX_WORDS: u32 = 10_000;
/// The largest vocabulary (about 20 bytes of memory per word and task).
const MAX_VOCABULARY: u32 = 10_000_000;

/// The arguments of the `generator` spout.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratorConfig {
    /// Tuples per second per task; 0 (the default) emits as fast as the topology takes them.
    #[serde(default, deserialize_with = "rate")]
    pub rate: f64,
    /// How many new tuples each task emits before it is done (replays not counted); none
    /// (the default) runs until the topology is stopped.
    #[serde(default)]
    pub limit: Option<u64>,
    /// Words per sentence (default 10, at most 10,000).
    #[serde(default = "default_words", deserialize_with = "words")]
    pub words: u32,
    /// How many distinct words sentences are made of (default 1000, at most 10,000,000).
    #[serde(default = "default_vocabulary", deserialize_with = "vocabulary")]
    pub vocabulary: u32,
    /// Chooses the vocabulary and the sentences (default 0).
    #[serde(default)]
    pub seed: u64,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig { rate: 0.0, limit: None, words: default_words(), vocabulary: default_vocabulary(), seed: 0 }
    }
}

fn default_words() -> u32 {
    10
}

fn default_vocabulary() -> u32 {
    1000
}

fn check_rate(rate: f64) -> Result<f64, String> {
    if rate.is_finite() && rate >= 0.0 {
        Ok(rate)
    } else {
        Err(format!("`rate` must be a number of tuples per second, 0 or more (0: no limit), not {rate}"))
    }
}

fn check_count(name: &str, value: u32, max: u32) -> Result<u32, String> {
    if (1..=max).contains(&value) {
        Ok(value)
    } else {
        Err(format!("`{name}` must be between 1 and {max}, not {value}"))
    }
}

fn rate<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    check_rate(f64::deserialize(d)?).map_err(serde::de::Error::custom)
}

fn words<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    check_count("words", u32::deserialize(d)?, MAX_WORDS).map_err(serde::de::Error::custom)
}

fn vocabulary<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    check_count("vocabulary", u32::deserialize(d)?, MAX_VOCABULARY).map_err(serde::de::Error::custom)
}

impl GeneratorConfig {
    /// Checks the arguments; a config read from a topology file has passed these checks already.
    pub fn validate(&self) -> Result<(), String> {
        check_rate(self.rate)?;
        check_count("words", self.words, MAX_WORDS)?;
        check_count("vocabulary", self.vocabulary, MAX_VOCABULARY)?;
        Ok(())
    }
}

impl SpoutFactory for GeneratorConfig {
    fn declare(&self) -> Vec<StreamDecl> {
        vec![StreamDecl::default_stream(["line"])]
    }

    fn create(&self, ctx: &TaskContext) -> Result<Box<dyn Spout>, BoxError> {
        self.validate()?;
        Ok(Box::new(GeneratorSpout {
            sentences: SentenceGenerator::new(self),
            task_index: ctx.task_index,
            next_seq: 0,
            limit: self.limit.unwrap_or(u64::MAX),
            replays: VecDeque::new(),
            limiter: RateLimiter::new(self.rate),
            buffer: String::new(),
        }))
    }

    fn reloadable(&self) -> &[&str] {
        &["rate"]
    }
}

/// Makes the `generator` spout's sentences: a pure function of (seed, task index, sequence
/// number).
///
/// ```
/// use squall_operators::{GeneratorConfig, SentenceGenerator};
/// let config = GeneratorConfig { words: 5, vocabulary: 100, seed: 7, ..Default::default() };
/// let sentences = SentenceGenerator::new(&config);
/// let mut line = String::new();
/// sentences.sentence(0, 42, &mut line);
/// assert_eq!(line.split(' ').count(), 5);
/// let mut again = String::new();
/// sentences.sentence(0, 42, &mut again);
/// assert_eq!(line, again);
/// ```
#[derive(Clone, Debug)]
pub struct SentenceGenerator {
    words: usize,
    key: u64,
    /// Every word of the vocabulary, each followed by a space.
    text: String,
    /// Where each word is in `text`: start and end.
    spans: Vec<(u32, u32)>,
}

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;
const CONSONANTS: &[u8] = b"bcdfghjklmnpqrstvwxyz";
const VOWELS: &[u8] = b"aeiou";

/// SplitMix64's finalizer: a cheap bijection that spreads every input bit over the output.
#[inline]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A number below `n` from 64 random bits, without a division.
#[inline]
fn below(h: u64, n: usize) -> usize {
    ((u128::from(h) * n as u128) >> 64) as usize
}

impl SentenceGenerator {
    /// The sentences of a `generator` spout with these arguments: `words` words from a
    /// vocabulary of `vocabulary` distinct pseudo-words (0 counts as 1 for both), chosen by
    /// `seed`. `rate` and `limit` play no part.
    pub fn new(config: &GeneratorConfig) -> Self {
        let (words, seed) = (config.words, config.seed);
        let size = config.vocabulary.max(1) as usize;
        let mut text = String::with_capacity(size * 7);
        let mut spans = Vec::with_capacity(size);
        let mut seen = FxHashSet::default();
        let mut word = [0u8; 10];
        let mut draw = mix(seed ^ 0x5155_414c_4c57_4f52);
        while spans.len() < size {
            draw = draw.wrapping_add(GOLDEN);
            let len = pseudo_word(mix(draw), &mut word);
            // The letters as base-27 digits: equal codes, equal words.
            let code = word[..len].iter().fold(0u64, |code, &c| code * 27 + u64::from(c - b'a' + 1));
            if seen.insert(code) {
                let start = text.len() as u32;
                // Only ASCII letters were written.
                text.extend(word[..len].iter().map(|&c| char::from(c)));
                spans.push((start, text.len() as u32));
                text.push(' ');
            }
        }
        SentenceGenerator { words: words.max(1) as usize, key: mix(seed.wrapping_add(GOLDEN)), text, spans }
    }

    /// Replaces the contents of `out` with the sentence of task `task_index` number `seq`:
    /// its words separated by single spaces.
    #[inline]
    pub fn sentence(&self, task_index: u32, seq: u64, out: &mut String) {
        out.clear();
        out.reserve(self.words * 11);
        let base = mix(mix(self.key ^ u64::from(task_index)).wrapping_add(seq.wrapping_mul(GOLDEN)));
        let mut state = base;
        for _ in 0..self.words {
            state = state.wrapping_add(GOLDEN);
            let (start, end) = self.spans[below(mix(state), self.spans.len())];
            // Each word is stored with the space that follows it.
            out.push_str(&self.text[start as usize..end as usize + 1]);
        }
        out.pop();
    }

    /// The vocabulary, in the order it was drawn.
    pub fn vocabulary(&self) -> impl Iterator<Item = &str> + '_ {
        (0..self.spans.len()).map(|i| self.word(i))
    }

    #[inline]
    fn word(&self, i: usize) -> &str {
        let (start, end) = self.spans[i];
        &self.text[start as usize..end as usize]
    }
}

/// Writes a pronounceable pseudo-word of 3 to 10 letters (consonants and vowels alternating)
/// chosen by `h` into `out`; returns its length.
fn pseudo_word(h: u64, out: &mut [u8; 10]) -> usize {
    let len = 3 + (h % 8) as usize;
    let mut bits = mix(h);
    let vowel_first = h & (1 << 40) != 0;
    for (i, c) in out[..len].iter_mut().enumerate() {
        let letters = if (i % 2 == 0) == vowel_first { VOWELS } else { CONSONANTS };
        *c = letters[(bits % letters.len() as u64) as usize];
        bits /= letters.len() as u64;
    }
    len
}

/// Holds a spout to `rate` tuples per second, reading the clock only every few tuples.
#[derive(Debug)]
struct RateLimiter {
    /// Tuples per second; 0 is no limit.
    rate: f64,
    /// The most tuples made up after a stall: one second's worth.
    burst: u64,
    /// The most tuples granted per clock reading (about a millisecond's worth).
    grant: u64,
    /// When counting started, and how many tuples were due then.
    start: Option<Instant>,
    base: u64,
    /// Tuples taken so far.
    sent: u64,
    /// Tuples granted and not yet taken.
    allowance: u64,
}

impl RateLimiter {
    fn new(rate: f64) -> Self {
        RateLimiter {
            rate,
            burst: (rate.ceil() as u64).max(1),
            grant: ((rate / 1000.0) as u64).max(1),
            start: None,
            base: 0,
            sent: 0,
            allowance: 0,
        }
    }

    /// Whether one more tuple may go now.
    #[inline]
    fn try_take(&mut self) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        if self.allowance == 0 {
            self.allowance = self.granted(Instant::now());
            if self.allowance == 0 {
                return false;
            }
        }
        self.allowance -= 1;
        self.sent += 1;
        true
    }

    fn granted(&mut self, now: Instant) -> u64 {
        let start = *self.start.get_or_insert(now);
        // The first tuple is due at once, the next 1/rate s later, and so on.
        let elapsed_due = (now.duration_since(start).as_secs_f64() * self.rate) as u64;
        let mut due = self.base.saturating_add(elapsed_due).saturating_add(1);
        let most = self.sent.saturating_add(self.burst);
        if due > most {
            // After a stall (backpressure, deactivation) catch up at most a second's worth.
            self.start = Some(now);
            self.base = most - 1;
            due = most;
        }
        due.saturating_sub(self.sent).min(self.grant)
    }
}

/// One task of a `generator` spout.
struct GeneratorSpout {
    sentences: SentenceGenerator,
    task_index: u32,
    next_seq: u64,
    limit: u64,
    /// Failed sequence numbers to emit again, oldest first.
    replays: VecDeque<MessageId>,
    limiter: RateLimiter,
    buffer: String,
}

impl GeneratorSpout {
    /// The sequence number to emit now, a replay first; `None` when the limit is reached or
    /// the rate says wait.
    fn next(&mut self) -> Option<MessageId> {
        if self.replays.is_empty() && self.next_seq >= self.limit {
            return None;
        }
        if !self.limiter.try_take() {
            return None;
        }
        Some(self.replays.pop_front().unwrap_or_else(|| {
            self.next_seq += 1;
            self.next_seq - 1
        }))
    }
}

impl Spout for GeneratorSpout {
    fn next_tuple(&mut self, out: &mut SpoutOutput<'_>) {
        if let Some(seq) = self.next() {
            self.sentences.sentence(self.task_index, seq, &mut self.buffer);
            out.emit_with_id(seq, values![self.buffer.as_str()]);
        }
    }

    fn fail(&mut self, id: MessageId) {
        self.replays.push_back(id);
    }

    fn is_done(&self) -> bool {
        self.next_seq >= self.limit && self.replays.is_empty()
    }

    fn reconfigure(&mut self, arg: &str, value: &str) -> Result<(), BoxError> {
        match arg {
            "rate" => {
                let rate = value.parse().map_err(|_| format!("`rate` must be a number, not '{value}'"))?;
                self.limiter = RateLimiter::new(check_rate(rate)?);
                Ok(())
            }
            _ => Err(format!("`{arg}` cannot be changed while running").into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{collected_strings, collector, fail_once, run, stats};
    use squall_runtime::TopologyBuilder;
    use std::collections::HashSet;
    use std::sync::Arc;
    use std::time::Duration;

    fn generator(words: u32, vocabulary: u32, seed: u64) -> SentenceGenerator {
        SentenceGenerator::new(&GeneratorConfig { words, vocabulary, seed, ..Default::default() })
    }

    #[test]
    fn vocabulary_has_distinct_lowercase_words_of_3_to_10_letters() {
        let sentences = generator(10, 5000, 3);
        let words: Vec<&str> = sentences.vocabulary().collect();
        assert_eq!(words.len(), 5000);
        assert_eq!(words.iter().collect::<HashSet<_>>().len(), 5000, "distinct");
        assert!(words.iter().all(|w| (3..=10).contains(&w.len()) && w.bytes().all(|c| c.is_ascii_lowercase())));
        let lengths: HashSet<usize> = words.iter().map(|w| w.len()).collect();
        assert_eq!(lengths.len(), 8, "every length from 3 to 10 occurs");
    }

    #[test]
    fn sentences_depend_on_seed_task_and_seq_only() {
        let a = generator(10, 1000, 1);
        let sentence = |g: &SentenceGenerator, task, seq| {
            let mut s = String::from("leftover");
            g.sentence(task, seq, &mut s);
            s
        };
        let s = sentence(&a, 2, 17);
        assert_eq!(s.split(' ').count(), 10);
        let vocabulary: HashSet<&str> = a.vocabulary().collect();
        assert!(s.split(' ').all(|w| vocabulary.contains(w)), "{s}");
        assert_eq!(s, sentence(&generator(10, 1000, 1), 2, 17), "same inputs, same sentence");
        assert_ne!(s, sentence(&a, 2, 18));
        assert_ne!(s, sentence(&a, 3, 17));
        assert_ne!(s, sentence(&generator(10, 1000, 2), 2, 17));
        let distinct: HashSet<String> = (0..1000).map(|seq| sentence(&a, 0, seq)).collect();
        assert_eq!(distinct.len(), 1000);
    }

    #[test]
    fn words_are_drawn_from_the_whole_vocabulary() {
        let g = generator(10, 100, 0);
        let mut used = HashSet::new();
        let mut s = String::new();
        for seq in 0..1000 {
            g.sentence(0, seq, &mut s);
            used.extend(s.split(' ').map(str::to_string));
        }
        assert_eq!(used.len(), 100);
    }

    #[test]
    fn each_task_emits_limit_tuples_with_the_generators_sentences() {
        let config = GeneratorConfig { limit: Some(300), words: 4, seed: 9, ..Default::default() };
        let expected = SentenceGenerator::new(&config);
        let (sink, collected) = collector();
        let mut builder = TopologyBuilder::new("gen");
        builder.spout("gen", 2, Arc::new(config));
        builder.bolt("sink", 1, sink).shuffle("gen");
        let report = run(builder);
        let s = stats(&report, "gen");
        assert_eq!((s.emitted, s.acked, s.failed), (600, 600, 0));
        let tuples = collected.lock().unwrap();
        let mut wanted = HashSet::new();
        for task in tuples.iter().map(|t| t.source_task()).collect::<HashSet<_>>() {
            // Task ids are 0 and 1 here, which are also the task indexes.
            for seq in 0..300 {
                let mut line = String::new();
                expected.sentence(task, seq, &mut line);
                wanted.insert(line);
            }
        }
        let got: HashSet<String> = tuples.iter().map(|t| t.get_str("line").unwrap().to_string()).collect();
        assert_eq!(got, wanted);
    }

    #[test]
    fn failed_tuples_are_replayed_with_the_same_sentence() {
        let config = GeneratorConfig { limit: Some(200), words: 6, ..Default::default() };
        let (flaky, failed) = fail_once();
        let (sink, collected) = collector();
        let mut builder = TopologyBuilder::new("gen");
        builder.spout("gen", 1, Arc::new(config));
        builder.bolt("flaky", 2, flaky).shuffle("gen");
        builder.bolt("sink", 1, sink).shuffle("flaky");
        let report = run(builder);
        let s = stats(&report, "gen");
        assert_eq!((s.emitted, s.acked, s.failed), (400, 200, 200));
        let mut failed = failed.lock().unwrap().clone();
        let mut delivered = collected_strings(&collected, "line");
        failed.sort();
        delivered.sort();
        assert_eq!(failed.len(), 200);
        assert_eq!(delivered, failed, "every replay carries the text of the tuple that failed");
    }

    #[test]
    fn rate_holds_the_spout_back() {
        // 200 tuples at 2000/s: the last is due 99.5 ms after the first.
        let config = GeneratorConfig { rate: 2000.0, limit: Some(200), ..Default::default() };
        let (sink, _) = collector();
        let mut builder = TopologyBuilder::new("gen");
        builder.spout("gen", 1, Arc::new(config));
        builder.bolt("sink", 1, sink).shuffle("gen");
        let report = run(builder);
        assert_eq!(stats(&report, "gen").acked, 200);
        assert!(report.elapsed >= Duration::from_millis(95), "took {:?}", report.elapsed);
    }

    #[test]
    fn limit_counts_new_tuples_and_failures_are_replayed_first() {
        let mut spout = GeneratorSpout {
            sentences: generator(2, 10, 0),
            task_index: 0,
            next_seq: 0,
            limit: 3,
            replays: VecDeque::new(),
            limiter: RateLimiter::new(0.0),
            buffer: String::new(),
        };
        assert_eq!((spout.next(), spout.next()), (Some(0), Some(1)));
        spout.fail(0);
        assert_eq!((spout.next(), spout.next()), (Some(0), Some(2)));
        assert!(spout.is_done());
        assert_eq!(spout.next(), None);
        spout.fail(2);
        assert!(!spout.is_done());
        assert_eq!((spout.next(), spout.next()), (Some(2), None));
        assert!(spout.is_done());
    }

    #[test]
    fn rate_limiter_grants_what_is_due_and_no_big_burst_after_a_stall() {
        let mut limiter = RateLimiter::new(1000.0);
        let t0 = Instant::now();
        assert_eq!(limiter.granted(t0), 1, "the first tuple goes at once");
        limiter.sent = 1;
        assert_eq!(limiter.granted(t0), 0);
        let t10 = t0 + Duration::from_micros(10_500);
        assert_eq!(limiter.granted(t10), 1, "at most a millisecond's worth at once");
        limiter.sent = 10;
        assert_eq!(limiter.granted(t10), 1);
        // After a 60 s stall, at most one second's worth is made up.
        let late = t0 + Duration::from_secs(60);
        limiter.grant = u64::MAX;
        assert_eq!(limiter.granted(late), 1000);
        limiter.sent += 1000;
        assert_eq!(limiter.granted(late + Duration::from_micros(5_500)), 5, "then the rate again");
        let mut unlimited = RateLimiter::new(0.0);
        assert!((0..10_000).all(|_| unlimited.try_take()));
    }

    #[test]
    fn args_are_checked_when_the_file_is_read() {
        let registry = crate::registry();
        let load = |args: &str| {
            let yaml = format!("name: t\nspouts:\n  - {{ id: gen, kind: generator, args: {args} }}\n");
            registry.load_str(&yaml, "t.yaml").map(|_| ()).map_err(|e| e.to_string())
        };
        assert!(load("{ rate: 10.5, limit: 5, words: 3, vocabulary: 20, seed: 4 }").is_ok());
        assert!(load("{}").is_ok());
        let err = load("{ vocabulary: 0 }").unwrap_err();
        assert!(err.contains("`vocabulary` must be between 1 and 10000000, not 0"), "{err}");
        let err = load("{ words: 0 }").unwrap_err();
        assert!(err.contains("`words` must be between 1"), "{err}");
        let err = load("{ rate: -1 }").unwrap_err();
        assert!(err.contains("`rate` must be a number of tuples per second"), "{err}");
        let err = load("{ limt: 5 }").unwrap_err();
        assert!(err.contains("unknown field `limt`"), "{err}");
        let invalid = GeneratorConfig { vocabulary: 0, ..Default::default() };
        assert!(invalid.validate().unwrap_err().contains("`vocabulary`"));
    }
}
