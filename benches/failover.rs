//! `cargo bench --bench failover`: `squall bench failover` for every scenario, 5 trials each,
//! with the release binary (the full figures in docs/benchmarks.md use 20 trials). Under
//! `cargo test` it only says so: `tests/bench_failover.rs` runs every scenario there.

use std::process::Command;

fn main() -> anyhow::Result<()> {
    if !std::env::args().any(|a| a == "--bench") {
        println!("failover: run with `cargo bench --bench failover` (tests/bench_failover.rs covers it under test)");
        return Ok(());
    }
    for scenario in ["worker-kill", "node-kill", "master-kill", "coordinator-leader-kill"] {
        let status = Command::new(env!("CARGO_BIN_EXE_squall"))
            .args(["bench", "failover", "--scenario", scenario, "--trials", "5"])
            .status()?;
        anyhow::ensure!(status.success(), "squall bench failover --scenario {scenario} failed");
    }
    Ok(())
}
