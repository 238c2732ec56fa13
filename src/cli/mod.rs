//! The command line: parses arguments, calls into the crates, prints results.

/// Writes a line to stdout, ignoring a reader that went away (`squall ... | head`): SIGPIPE
/// stays ignored, as a server must have it (a peer that dies mid-write is an error to handle,
/// not a reason to die), so a closed stdout is an error here, and nothing is left to tell.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// [`out!`] without the newline.
macro_rules! out_part {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout().lock(), $($arg)*);
    }};
}

mod bench;
mod cluster;
mod http;
mod local;
mod node;
mod supervisor;
mod worker;
mod zk;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use squall_runtime::Registry;

/// Squall: a Storm-like stream-processing runtime with its own coordinator.
#[derive(Parser)]
#[command(name = "squall", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a topology in this process until its spouts are done (or for --duration).
    Local(local::LocalArgs),
    /// Measures Squall.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Runs a node: a replica of the coordinator's znode store, serving ZooKeeper clients, and
    /// with --slots a member of the cluster (master candidate).
    Node(node::NodeArgs),
    /// Submits a topology to the cluster.
    Deploy(cluster::DeployArgs),
    /// Lists the deployed topologies and where their workers run.
    List(cluster::ListArgs),
    /// Kills a deployed topology: its workers stop and it is removed.
    Kill(cluster::KillArgs),
    /// A deployed topology's components: where their tasks run, their counts and latency.
    Status(cluster::StatusArgs),
    /// Changes how many workers a deployed topology runs on, moving as few tasks as it can.
    Rebalance(cluster::RebalanceArgs),
    /// Changes a running topology's settings (max_spout_pending) without restarting it.
    Config(cluster::ConfigArgs),
    /// Resumes a deactivated topology's spouts.
    Activate(cluster::ActivateArgs),
    /// Pauses a topology's spouts (its bolts finish what is in flight).
    Deactivate(cluster::ActivateArgs),
    /// Runs one worker of a deployed topology (started by a node's supervisor).
    Worker(worker::WorkerArgs),
    /// A ZooKeeper client shell: ls, get, stat, create, set, delete, watch.
    Zk(zk::ZkArgs),
    /// Lists the component kinds this binary knows.
    Kinds,
}

type LogFilterHandle = Box<dyn Fn(tracing_subscriber::EnvFilter) -> Result<(), String> + Send + Sync>;

/// Replaces the process's log filter (a worker applying `squall config NAME log_level=...`).
static LOG_FILTER: std::sync::OnceLock<LogFilterHandle> = std::sync::OnceLock::new();

/// Sets this process's log filter to `directives` (`debug`, `info,squall=debug`, ...).
pub(crate) fn set_log_filter(directives: &str) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_new(directives).map_err(|e| format!("'{directives}': {e}"))?;
    let set = LOG_FILTER.get().ok_or("logging is not set up")?;
    set(filter)
}

/// Parses durations such as `10s`, `500ms` or `2m`.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("'{s}' is not a duration (e.g. 10s, 500ms, 2m): {e}"))
}

pub(crate) fn main(registry: Registry) -> ExitCode {
    let cli = Cli::parse();
    let logging = tracing_subscriber::fmt()
        // openraft warns on every failed attempt to reach a peer that is still starting or is
        // down; those show in `RUST_LOG=openraft=warn`, not by default.
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn,openraft=error".into()),
        )
        .with_writer(std::io::stderr)
        .with_filter_reloading();
    let handle = logging.reload_handle();
    let _ = LOG_FILTER.set(Box::new(move |filter| handle.reload(filter).map_err(|e| e.to_string())));
    logging.init();
    let result = match cli.command {
        Command::Local(args) => local::run(&registry, args),
        Command::Bench(command) => bench::run(&registry, command),
        Command::Node(args) => node::run(&registry, args),
        Command::Deploy(args) => cluster::deploy(&registry, args),
        Command::List(args) => cluster::list(args),
        Command::Kill(args) => cluster::kill(args),
        Command::Status(args) => cluster::status(args),
        Command::Rebalance(args) => cluster::rebalance(&registry, args),
        Command::Config(args) => cluster::config(&registry, args),
        Command::Activate(args) => cluster::set_active(args, true),
        Command::Deactivate(args) => cluster::set_active(args, false),
        Command::Worker(args) => worker::run(&registry, args),
        Command::Zk(args) => zk::run(args),
        Command::Kinds => {
            out!("spouts: {}", registry.spout_kinds().collect::<Vec<_>>().join(", "));
            out!("bolts:  {}", registry.bolt_kinds().collect::<Vec<_>>().join(", "));
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
