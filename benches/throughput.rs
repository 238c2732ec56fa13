//! `cargo bench --bench throughput`: generator → split → count, acking off and on, each next
//! to a plain single-threaded loop doing the same work. Under `cargo test` it runs a short
//! smoke version instead.

use std::path::Path;
use std::time::Duration;

use squall::bench::{ThroughputOptions, throughput};
use squall::runtime::TopologySpec;

fn main() -> anyhow::Result<()> {
    let full = std::env::args().any(|a| a == "--bench");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/throughput.yaml");
    let yaml = std::fs::read_to_string(&path)?;
    let registry = squall::operators::registry();
    let (duration, warmup) = if full {
        (Duration::from_secs(10), Duration::from_secs(2))
    } else {
        (Duration::from_millis(600), Duration::from_millis(200))
    };
    for acking in [false, true] {
        let mut spec = TopologySpec::parse(&yaml, &path.display().to_string())?;
        spec.config.acking = acking;
        let topology = registry.build(&spec, "examples/throughput.yaml")?;
        let options = ThroughputOptions { duration, warmup, component: "count".into(), baseline: true };
        let report = throughput(&topology, Some(&spec), &options)?;
        print!("{report}");
        anyhow::ensure!(report.tuples > 0, "nothing reached the count bolt");
    }
    Ok(())
}
