//! Write throughput of a 3-replica loopback cluster with fsync on; a figure to print, not a test.
//!
//! `cargo test --release -p squall-coordinator raft::tests::throughput -- --ignored --nocapture`

use std::time::Instant;

use super::TestCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a measurement: run it by name with --ignored --nocapture"]
async fn raft_write_throughput_3_nodes_64_writers() {
    const WRITES: u64 = 30_000;
    const WRITERS: usize = 64;
    let cluster = TestCluster::start(3).await;
    cluster.write("warmup", 0..1_000, WRITERS).await;

    let leader = cluster.leader().await;
    let before: Vec<_> = cluster.running().map(|n| n.store.stats()).collect();
    let started = Instant::now();
    let acked = cluster.write("k", 0..WRITES, WRITERS).await;
    let elapsed = started.elapsed();
    let after: Vec<_> = cluster.running().map(|n| n.store.stats()).collect();
    let fsyncs: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a.fsyncs - b.fsyncs).collect();
    let fsync_ms: Vec<String> = after
        .iter()
        .zip(&before)
        .map(|(a, b)| {
            format!("{:.2}", (a.fsync_time - b.fsync_time).as_secs_f64() * 1e3 / (a.fsyncs - b.fsyncs).max(1) as f64)
        })
        .collect();
    assert_eq!(acked.len() as u64, WRITES);
    println!(
        "raft throughput: {WRITES} writes of ~12 bytes by {WRITERS} concurrent writers to leader {} in {:.2}s = \
         {:.0} writes/s; fsyncs per node: {fsyncs:?} (mean ms {fsync_ms:?}); {:.1} writes per leader fsync",
        leader.id,
        elapsed.as_secs_f64(),
        WRITES as f64 / elapsed.as_secs_f64(),
        WRITES as f64 / fsyncs[leader.id as usize - 1].max(1) as f64,
    );

    // One writer: each write waits for the one before, so this is the commit latency.
    const SERIAL: u64 = 500;
    let started = Instant::now();
    cluster.write("serial", 0..SERIAL, 1).await;
    let elapsed = started.elapsed();
    println!(
        "raft latency: {SERIAL} writes by 1 writer in {:.2}s = {:.2} ms per write",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e3 / SERIAL as f64
    );
}
