//! How much memory a million znodes take: builds a tree of 1,000,000 znodes with 100 bytes of data
//! each and prints the resident set size it added, plus snapshot size and timings. Each layout
//! (one flat parent, or 1,000 parents of 1,000) is measured in a fresh process, since freed
//! memory does not leave the RSS.
//!
//! `cargo run --release -p squall-coordinator --example tree_memory [flat|1000x1000]`

use std::time::Instant;

use squall_coordinator::{Caller, CreateRequest, TreeConfig, Txn, ZnodeTree};

const NODES: usize = 1_000_000;
const DATA: usize = 100;

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn build(layout: &str) -> ZnodeTree {
    let mut tree = ZnodeTree::default();
    let me = Caller::new(1, &[]);
    let mut zxid = 0;
    let mut create = |tree: &mut ZnodeTree, path: String, data: Vec<u8>| {
        zxid += 1;
        tree.create(Txn::new(zxid, 1_700_000_000_000 + zxid), me, CreateRequest::new(path, data)).expect("create");
    };
    create(&mut tree, "/bench".to_string(), vec![]);
    match layout {
        "flat" => {
            for i in 0..NODES {
                create(&mut tree, format!("/bench/node-{i:07}"), vec![b'x'; DATA]);
            }
        }
        _ => {
            for p in 0..1_000 {
                create(&mut tree, format!("/bench/p{p:03}"), vec![]);
                for i in 0..(NODES / 1_000 - 1) {
                    create(&mut tree, format!("/bench/p{p:03}/node-{i:03}"), vec![b'x'; DATA]);
                }
            }
        }
    }
    tree
}

fn main() {
    let Some(layout) = std::env::args().nth(1) else {
        for layout in ["flat", "1000x1000"] {
            let me = std::env::current_exe().expect("own path");
            let status = std::process::Command::new(me).arg(layout).status().expect("run a layout");
            assert!(status.success(), "{layout} failed");
        }
        return;
    };
    {
        let layout = layout.as_str();
        let before = rss_bytes();
        let started = Instant::now();
        let tree = build(layout);
        let built = started.elapsed();
        let used = rss_bytes().saturating_sub(before);
        let started = Instant::now();
        let snapshot = tree.snapshot();
        let written = started.elapsed();
        let started = Instant::now();
        let restored = ZnodeTree::restore(&snapshot, TreeConfig::default()).expect("restore");
        let read = started.elapsed();
        println!(
            "{layout:>9}: {} znodes of {DATA} B: RSS +{:.1} MiB ({} B/znode); built in {:.2?}; snapshot {:.1} MiB written in {:.2?}, restored in {:.2?}",
            tree.node_count(),
            used as f64 / (1 << 20) as f64,
            used / tree.node_count() as u64,
            built,
            snapshot.len() as f64 / (1 << 20) as f64,
            written,
            read,
        );
        drop((tree, restored, snapshot));
    }
}
