//! `squall local`: one topology in this process.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use squall_runtime::{LocalRun, Registry, RunOptions, StopReason, SummaryTable};

#[derive(Args)]
pub(crate) struct LocalArgs {
    /// The topology file (YAML).
    topology: PathBuf,
    /// Stop after this long (e.g. 30s) even if the spouts have more to emit.
    #[arg(long, value_parser = super::parse_duration)]
    duration: Option<Duration>,
}

pub(crate) fn run(registry: &Registry, args: LocalArgs) -> anyhow::Result<()> {
    let topology = registry.load_file(&args.topology)?;
    let run = LocalRun::start(&topology, RunOptions { duration: args.duration })?;
    let stopper = run.stopper();
    let stopping = AtomicBool::new(false);
    ctrlc::set_handler(move || {
        if stopping.swap(true, Ordering::Relaxed) {
            eprintln!("second interrupt: exiting without flushing");
            std::process::exit(130);
        }
        eprintln!("interrupted: stopping spouts and flushing sinks (Ctrl-C again to exit at once)");
        stopper.stop();
    })
    .context("cannot install the Ctrl-C handler")?;
    let report = run.wait();
    let how = match report.reason {
        StopReason::Completed => "completed",
        StopReason::Duration => "stopped at --duration",
        StopReason::Stopped => "interrupted",
    };
    println!("topology '{}' {how} after {:.2?}", report.topology, report.elapsed);
    print!("{}", SummaryTable(&report.components));
    Ok(())
}
