//! A `squall` binary whose components coordinate through the znode store (docs/cluster.md,
//! "Coordination for your components"):
//!
//! - `fenced_append` (bolt): for each input, takes the topology's lock `lock` (default
//!   `ledger`) and appends one line to `path` while holding it: the lock's fencing token, the
//!   task, the process id and when it held the lock (nanoseconds since the Unix epoch, entry and
//!   exit). The file is the protected resource: it refuses a writer whose token is lower than
//!   the last one written, which is how a fencing token keeps a holder that lost its lock (a
//!   paused process whose session expired) from writing.
//! - `leader_beacon` (spout): every `every` (default 100ms) the task that leads its component
//!   appends `<task> <pid> <unix ms>` to `path`; every change of leadership is logged.
//!
//! `cargo run --example coordination -- local examples/coordination.yaml --duration 5s`

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use squall::prelude::*;

fn unix_nanos() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("the clock is after 1970").as_nanos()
}

/// Args of the `fenced_append` bolt.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FencedAppendConfig {
    path: PathBuf,
    #[serde(default = "default_lock")]
    lock: String,
}

fn default_lock() -> String {
    "ledger".into()
}

impl BoltFactory for FencedAppendConfig {
    fn declare(&self, _inputs: &[InputStream]) -> Result<Vec<StreamDecl>, BoxError> {
        Ok(vec![])
    }

    fn create(&self, ctx: &TaskContext) -> Result<Box<dyn Bolt>, BoxError> {
        ctx.coordination()?; // refuse to run without a store rather than fail every tuple
        Ok(Box::new(FencedAppend { ctx: ctx.clone(), path: self.path.clone(), lock: self.lock.clone() }))
    }
}

struct FencedAppend {
    ctx: TaskContext,
    path: PathBuf,
    lock: String,
}

/// The last token written to the ledger at `path` (0 for an empty or missing one).
fn last_token(path: &PathBuf) -> Result<i64, BoxError> {
    let Ok(file) = File::open(path) else { return Ok(0) };
    let last = BufReader::new(file).lines().map_while(Result::ok).last();
    let token = last.as_deref().and_then(|l| l.split(' ').next()).map(str::parse).transpose()?;
    Ok(token.unwrap_or(0))
}

impl Bolt for FencedAppend {
    fn execute(&mut self, _input: &Tuple, _out: &mut BoltOutput<'_>) -> Result<(), BoxError> {
        let lock = self.ctx.lock(&self.lock)?;
        let entered = unix_nanos();
        let token = lock.fencing_token();
        let last = last_token(&self.path)?;
        if token <= last {
            return Err(format!("fenced out: token {token} is not above the ledger's last token {last}").into());
        }
        let mut ledger = OpenOptions::new().create(true).append(true).open(&self.path)?;
        let (task, pid) = (self.ctx.task, std::process::id());
        let line = format!("{token} {task} {pid} {entered} {}\n", unix_nanos());
        ledger.write_all(line.as_bytes())?;
        ledger.sync_data()?;
        lock.unlock()?;
        Ok(())
    }
}

/// Args of the `leader_beacon` spout.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LeaderBeaconConfig {
    path: PathBuf,
    #[serde(default = "default_every", with = "humantime_serde")]
    every: Duration,
}

fn default_every() -> Duration {
    Duration::from_millis(100)
}

impl SpoutFactory for LeaderBeaconConfig {
    fn declare(&self) -> Vec<StreamDecl> {
        vec![StreamDecl::default_stream(["task"])]
    }

    fn create(&self, ctx: &TaskContext) -> Result<Box<dyn Spout>, BoxError> {
        let election = ctx.leader_election()?;
        let (component, task) = (ctx.component.clone(), ctx.task_index);
        election.on_change(move |leading| eprintln!("{component} task {task}: leading: {leading}"));
        Ok(Box::new(LeaderBeacon {
            election,
            task: ctx.task_index,
            path: self.path.clone(),
            every: self.every,
            next: Instant::now(),
        }))
    }
}

struct LeaderBeacon {
    election: squall::runtime::LeaderElection,
    task: u32,
    path: PathBuf,
    every: Duration,
    next: Instant,
}

impl Spout for LeaderBeacon {
    fn next_tuple(&mut self, _out: &mut SpoutOutput<'_>) {
        if Instant::now() < self.next {
            return;
        }
        self.next += self.every;
        if self.election.is_leader() {
            let line = format!("{} {} {}\n", self.task, std::process::id(), unix_nanos() / 1_000_000);
            let appended = OpenOptions::new().create(true).append(true).open(&self.path);
            if let Err(e) = appended.and_then(|mut f| f.write_all(line.as_bytes())) {
                eprintln!("leader_beacon: cannot append to {}: {e}", self.path.display());
            }
        }
    }
}

fn main() -> std::process::ExitCode {
    let mut registry = squall::operators::registry();
    registry.bolt::<FencedAppendConfig>("fenced_append");
    registry.spout::<LeaderBeaconConfig>("leader_beacon");
    squall::main(registry)
}
