//! `squall local`: one topology in this process.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use squall_coordinator::replica::{Replica, ReplicaConfig};
use squall_runtime::{Coordination, LocalRun, Registry, RunOptions, StopReason, SummaryTable};

#[derive(Args)]
pub(crate) struct LocalArgs {
    /// The topology file (YAML).
    topology: PathBuf,
    /// Stop after this long (e.g. 30s) even if the spouts have more to emit.
    #[arg(long, value_parser = super::parse_duration)]
    duration: Option<Duration>,
    /// Keep the embedded znode store here, so that what the run stores (Kafka offsets, say)
    /// is there for the next run over the same directory. Default: a temp dir removed at the
    /// end of the run.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

pub(crate) fn run(registry: &Registry, args: LocalArgs) -> anyhow::Result<()> {
    let topology = registry.load_file(&args.topology)?;
    let store = EmbeddedStore::start(args.data_dir.as_deref())?;
    match &args.data_dir {
        Some(dir) => eprintln!("coordinator: one-replica store in {} on {}", dir.display(), store.addr),
        None => eprintln!("coordinator: one-replica store for this run on {}", store.addr),
    }
    let coordination = store.connect(&topology.name)?;
    let options = RunOptions { duration: args.duration, coordination: Some(coordination) };
    let run = LocalRun::start(&topology, options)?;
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
    out!("topology '{}' {how} after {:.2?}", report.topology, report.elapsed);
    out_part!("{}", SummaryTable(&report.components));
    store.stop();
    Ok(())
}

/// The znode store a local run embeds (`squall local`, `squall bench kafka`): one replica on a
/// loopback port, its data in `--data-dir` or in a temp directory removed at the end of the run.
pub(super) struct EmbeddedStore {
    pub(super) addr: std::net::SocketAddr,
    replica: Replica,
    runtime: tokio::runtime::Runtime,
    _temp: Option<tempfile::TempDir>,
}

impl EmbeddedStore {
    pub(super) fn start(data_dir: Option<&Path>) -> anyhow::Result<Self> {
        let temp = match data_dir {
            Some(_) => None,
            None => {
                Some(tempfile::Builder::new().prefix("squall-local-").tempdir().context("cannot create a temp dir")?)
            }
        };
        let dir = data_dir.unwrap_or_else(|| temp.as_ref().expect("made above").path());
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("squall-store")
            .enable_all()
            .build()
            .context("cannot start the store's runtime")?;
        let config = ReplicaConfig::standalone(dir, "127.0.0.1:0".parse().expect("a valid address"));
        let replica = runtime.block_on(Replica::start(config)).context("cannot start the embedded store")?;
        Ok(EmbeddedStore { addr: replica.client_addr(), replica, runtime, _temp: temp })
    }

    /// Opens a session on the store for topology `topology`'s tasks.
    pub(super) fn connect(&self, topology: &str) -> anyhow::Result<Coordination> {
        let target = self.addr.to_string();
        self.runtime
            .block_on(Coordination::connect(&target, topology))
            .context("cannot open a session on the embedded store")
    }

    pub(super) fn stop(self) {
        self.runtime.block_on(self.replica.shutdown());
    }
}
