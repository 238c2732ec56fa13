//! The tansu harness against a real broker: what the end-to-end Kafka tests rely on — delivery
//! reports that give every message its offset, and reads from an explicit offset that return
//! exactly what was produced from there on.

mod common;

use std::time::{Duration, Instant};

use common::tansu::Tansu;

/// How long a read may take before the test fails.
const READ_DEADLINE: Duration = Duration::from_secs(20);

/// A value of about 20 bytes that says which message it is.
fn value(i: usize) -> Vec<u8> {
    format!("message-{i:012}").into_bytes()
}

#[test]
fn hundred_thousand_messages_get_contiguous_offsets_and_read_back() {
    const MESSAGES: usize = 100_000;
    const PARTITIONS: i32 = 4;
    let tansu = Tansu::start();
    tansu.create_topic("bulk", PARTITIONS);

    // Spread over the partitions round-robin, so each partition's input order is known.
    let started = Instant::now();
    let delivered = tansu.produce("bulk", (0..MESSAGES).map(|i| (Some(i as i32 % PARTITIONS), None, value(i))));
    let produce_time = started.elapsed();
    eprintln!("produced {MESSAGES} messages in {produce_time:?}");
    assert!(produce_time < Duration::from_secs(10), "producing {MESSAGES} messages took {produce_time:?}");

    // Each partition's messages, in input order, got offsets 0, 1, 2, … with no gap.
    let mut next = vec![0i64; PARTITIONS as usize];
    for (i, &(partition, offset)) in delivered.iter().enumerate() {
        assert_eq!(partition, i as i32 % PARTITIONS, "message {i} landed on another partition");
        assert_eq!(offset, next[partition as usize], "message {i} on partition {partition}");
        next[partition as usize] += 1;
    }
    assert!(next.iter().all(|&n| n == (MESSAGES / PARTITIONS as usize) as i64), "per-partition counts {next:?}");

    // Partition 0 reads back whole: every offset once, each with the value produced there.
    let expected: Vec<(i64, Vec<u8>)> = delivered
        .iter()
        .enumerate()
        .filter(|(_, (p, _))| *p == 0)
        .map(|(i, &(_, offset))| (offset, value(i)))
        .collect();
    let started = Instant::now();
    let read = tansu.consume_all("bulk", 0, 0, expected.len(), READ_DEADLINE);
    eprintln!("consumed {} messages in {:?}", read.len(), started.elapsed());
    assert_eq!(read.len(), expected.len(), "messages read back from partition 0 before the deadline");
    for ((offset, key, value), (want_offset, want_value)) in read.iter().zip(&expected) {
        assert_eq!(offset, want_offset);
        assert_eq!(key, &None, "offset {offset}");
        assert_eq!(value, want_value, "offset {offset}");
    }
    // Recorded for the curious, not relied on: see `Tansu::end_offsets`.
    eprintln!("tansu's end offsets: {:?}; delivered: {next:?}", tansu.end_offsets("bulk"));
}

#[test]
fn reading_from_an_offset_inside_a_batch_returns_exactly_the_rest() {
    let tansu = Tansu::start();
    tansu.create_topic("small", 4);
    let messages = (0..10).map(|i| (Some(2), Some(format!("k{i}").into_bytes()), value(i)));
    let delivered = tansu.produce("small", messages);
    assert_eq!(delivered, (0..10).map(|i| (2, i)).collect::<Vec<_>>());

    // The ten lingered into one batch; the read starts in its middle.
    let read = tansu.consume_all("small", 2, 5, 5, READ_DEADLINE);
    let offsets: Vec<i64> = read.iter().map(|(offset, _, _)| *offset).collect();
    assert_eq!(offsets, vec![5, 6, 7, 8, 9]);
    for (offset, key, value) in &read {
        assert_eq!(key.as_deref(), Some(format!("k{offset}").as_bytes()));
        assert_eq!(value, &self::value(*offset as usize));
    }

    // And nothing comes after offset 9: asking for one more returns the same five once a short
    // deadline has passed (an absence can only be waited for).
    let read_more = tansu.consume_all("small", 2, 5, 6, Duration::from_secs(1));
    assert_eq!(read_more, read);
}
