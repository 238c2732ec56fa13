//! Backpressure: a spout with no limit on its rate is slowed to the pace of a slow sink, so the
//! tuples between them never exceed what the queues and batches on the path can hold; and
//! stopping drains the path, losing nothing.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use squall_runtime::prelude::*;
use squall_runtime::{LocalRun, StopReason};

/// Emits `[n]` for n = 0, 1, 2, … as fast as it is let, untracked, counting each emit first.
struct Firehose {
    next: i64,
    emitted: Arc<AtomicU64>,
}

impl Spout for Firehose {
    fn next_tuple(&mut self, out: &mut SpoutOutput<'_>) {
        self.emitted.fetch_add(1, Ordering::SeqCst);
        out.emit(values![self.next]);
        self.next += 1;
    }
}

#[test]
fn a_slow_sink_bounds_the_tuples_in_flight_and_stopping_loses_none() {
    const BATCH: u32 = 8;
    const QUEUE: u32 = 32;
    let config =
        TopologyConfig { acking: false, batch_size: BATCH, queue_capacity: QUEUE, ..TopologyConfig::default() };
    // Tuples the spout has emitted but the sink has not begun to execute can only be:
    // - at the spout: in its outgoing buffer (< BATCH), or in the one batch it is blocked
    //   sending (≤ BATCH, buffer then empty): ≤ BATCH;
    // - at the relay: in its input queue (≤ QUEUE: QUEUE / BATCH batches of ≤ BATCH), in the
    //   batch it took from the queue and has not finished (< BATCH), in its outgoing buffer or
    //   the batch it is blocked sending (≤ BATCH): ≤ QUEUE + 2·BATCH;
    // - at the sink: in its input queue (≤ QUEUE) and the rest of the batch it took (< BATCH).
    let (b, q) = (u64::from(BATCH), u64::from(QUEUE));
    let bound = b + (q + 2 * b) + (q + b);

    let emitted = Arc::new(AtomicU64::new(0));
    let executed = Arc::new(AtomicU64::new(0));
    let mut builder = TopologyBuilder::new("backpressure");
    builder.config(config);
    let spout_count = emitted.clone();
    builder.spout("firehose", 1, spout_fn(["n"], move |_| Firehose { next: 0, emitted: spout_count.clone() }));
    let relay = bolt_fn(["n"], |_| {
        execute_fn(|t, out| {
            out.emit(t.values().into());
            Ok(())
        })
    });
    builder.bolt("relay", 1, relay).shuffle("firehose");
    let sink_count = executed.clone();
    let sink = bolt_fn(NO_FIELDS, move |_| {
        let executed = sink_count.clone();
        execute_fn(move |_, _| {
            executed.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_micros(50));
            Ok(())
        })
    });
    builder.bolt("sink", 1, sink).shuffle("relay");
    let run = LocalRun::start(&builder.build().unwrap(), RunOptions::default()).unwrap();

    // Sampled spout first: the sink only gains between the two reads, so a sample never
    // overstates what is in flight.
    let mut most_in_flight = 0;
    let mut in_flight = || {
        let emitted = emitted.load(Ordering::SeqCst);
        let in_flight = emitted - executed.load(Ordering::SeqCst);
        most_in_flight = most_in_flight.max(in_flight);
        assert!(in_flight <= bound, "{in_flight} tuples in flight, more than the {bound} the path can hold");
    };
    // The live metrics lag by up to their publish interval; they only tell when enough went by.
    let sink_executed = || run.metrics().component("sink").unwrap().snapshot().executed;
    wait_until("the sink executed 1500 tuples", RUN_LIMIT, || {
        in_flight();
        sink_executed() >= 1500
    });
    run.stopper().stop();
    let report = run.wait();

    assert!(most_in_flight >= q, "the queues never filled ({most_in_flight} in flight): nothing was slowed down");
    assert_eq!(report.reason, StopReason::Stopped);
    let (emitted, executed) = (emitted.load(Ordering::SeqCst), executed.load(Ordering::SeqCst));
    assert_eq!(executed, emitted, "tuples emitted before the stop were lost");
    assert_eq!(stats(&report, "firehose").emitted, emitted);
    assert_eq!(stats(&report, "relay").executed, emitted);
    assert_eq!(stats(&report, "sink").executed, emitted);
    assert_eq!(report.errors(), 0);
}
