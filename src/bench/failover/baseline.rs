//! `squall bench failover --baseline kafka-group`: the same kind of kill against a plain Kafka
//! consumer group, so that Squall's recovery time is read beside the one a Kafka user gets
//! without Squall, measured on the same machine in the same command.
//!
//! [`kafka_group_baseline`] needs a Kafka-protocol broker ([`BrokerSource`]): one that runs
//! already, or a `tansu broker` it starts on a free loopback port with in-memory storage (the
//! binary [`find_tansu`] finds: `$SQUALL_TANSU`, else the path `scripts/tansu` prints). Then,
//! per configuration ([`GroupConfig`]: a `session.timeout.ms`, or the client's default) and
//! trial:
//!
//! 1. a new topic of [`BaselineOptions::partitions`] partitions is created and a thread
//!    produces to it at a steady rate, round-robin over the partitions, each value the Unix time
//!    it was sent at in nanoseconds; two member processes of this binary
//!    (`squall bench kafka-group-member`, [`group_member`]) subscribe to it in a new group
//!    (nothing of an earlier trial is in either), and print a line per message and per
//!    rebalance;
//! 2. once each owns some partitions, has delivered from each of them and no rebalance has
//!    happened for a while (the steady state), one of them (alternately) is SIGKILLed;
//! 3. **recovery** is the time from the kill until every partition the dead member owned has
//!    delivered, at the survivor, a message emitted after the kill (the figure to set beside
//!    Squall's recovery); **detection** until the survivor's partitions were revoked (the group
//!    began to rebalance), **reassignment** until the survivor was assigned the dead member's
//!    partitions, and **survivor gap** the longest pause in delivery of the partitions the
//!    survivor already owned (the eager protocol stops those too);
//! 4. the survivor is SIGKILLed as well, the producer stops and the topic is deleted.
//!
//! A trial that does not reach the steady state is tried again, at most twice; a trial that
//! fails is reported in [`BaselineResult::failures`], not counted. Every wait has a deadline
//! (those for the steady state and the recovery grow with the session timeout), and every
//! process started here (the members, tansu) is SIGKILLed when its handle drops, on success or
//! error; the members also exit when their stdin (a pipe from this process) closes, and tansu
//! when this process dies (Linux), so none outlives the benchmark.
//!
//! What tansu 0.6 does (observed on the build `scripts/tansu` installs, memory storage, and in
//! its `coordinator/group/administrator.rs`): it enforces no minimum session timeout; it
//! notices a dead member only when another member's request comes in (the survivor's next
//! heartbeat) more than the session timeout after the dead one's last; and it holds every
//! JoinGroup for about half the session timeout before answering, so a crash costs about 1.5
//! session timeouts before the partitions move. Apache Kafka instead evicts on a timer and
//! completes the join as soon as every known member has rejoined, so there the partitions move
//! after about one session timeout plus up to a heartbeat interval. The figures belong to the
//! broker they were measured on, which the report names.
//!
//! Recovery also includes the replay: the survivor resumes a moved partition from the dead
//! member's last committed offset (auto-commit, every 5 s by default), so up to 5 s of messages
//! from before the kill are delivered again before the first one from after it.
//!
//! Why a topic per trial and a modest rate ([`BaselineOptions::rate`], 400 messages per second
//! from the command line): tansu's memory engine lists every record batch of a partition on
//! each fetch, so its fetches slow down as a topic grows. On a 2-core machine at 3,000 messages
//! per second into one topic, its delivery latency reached a second within a minute, and the
//! time from a reassignment to the first delivery grew from 1 to 13 s over a run. The **steady
//! latency** each trial reports (emitted → delivered, the median between the group's last
//! rebalance and the kill) shows how much of a recovery is the broker's delivery latency.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Message;
use rdkafka::{ClientContext, TopicPartitionList};
use serde::Serialize;

use super::{Quantiles, headline_and_parts, millis, opt_millis, unix_nanos};
use crate::bench::broker::{BrokerSource, SteadyProducer, Tansu, client_config, create_topic, delete_topic, tail};

/// The subcommand of this binary that runs one group member ([`group_member`]).
pub const MEMBER_COMMAND: [&str; 2] = ["bench", "kafka-group-member"];
/// librdkafka's default `session.timeout.ms` (and the Java client's since Kafka 3.0): what a
/// [`GroupConfig`] without a session timeout gets.
pub const CLIENT_DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(45);
/// How often the trial looks at what the members printed.
const POLL: Duration = Duration::from_millis(5);
/// How long the group must go without a rebalance, beyond a heartbeat interval (a member hears
/// of a rebalance at its next heartbeat), before the state is taken as steady.
const SETTLE: Duration = Duration::from_secs(1);
/// Tries of a trial that does not reach the steady state.
const ATTEMPTS: usize = 3;

/// A baseline `squall bench failover` can run beside Squall's trials.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Baseline {
    /// A plain rdkafka consumer group: [`kafka_group_baseline`].
    KafkaGroup,
}

impl std::str::FromStr for Baseline {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "kafka-group" => Ok(Baseline::KafkaGroup),
            other => Err(format!("'{other}' is not a baseline (kafka-group)")),
        }
    }
}

impl std::fmt::Display for Baseline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Baseline::KafkaGroup => "kafka-group",
        })
    }
}

/// One consumer-group configuration and how many kills to measure it with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupConfig {
    /// The members' `session.timeout.ms` (and `heartbeat.interval.ms` a third of it); `None`
    /// leaves both at the client's defaults ([`CLIENT_DEFAULT_SESSION_TIMEOUT`], 3 s).
    pub session_timeout: Option<Duration>,
    /// How many kills.
    pub trials: usize,
}

impl GroupConfig {
    /// The session timeout in effect.
    pub fn effective_session_timeout(&self) -> Duration {
        self.session_timeout.unwrap_or(CLIENT_DEFAULT_SESSION_TIMEOUT)
    }

    /// The configuration's name in reports: `kafka-group session.timeout.ms=45000`.
    pub fn name(&self) -> String {
        format!("kafka-group session.timeout.ms={}", self.effective_session_timeout().as_millis())
    }

    /// The heartbeat interval in effect: a third of a set session timeout (librdkafka wants it
    /// below the session timeout), else librdkafka's default.
    fn heartbeat_interval(&self) -> Duration {
        self.session_timeout.map_or(Duration::from_secs(3), |t| t / 3)
    }
}
/// How to run [`kafka_group_baseline`].
#[derive(Clone, Debug)]
pub struct BaselineOptions {
    /// The binary the members run (this one): it must have the [`MEMBER_COMMAND`] subcommand.
    pub program: PathBuf,
    /// The broker.
    pub broker: BrokerSource,
    /// The configurations, in the order they are measured.
    pub configs: Vec<GroupConfig>,
    /// Messages per second over all partitions.
    pub rate: f64,
    /// Partitions of each trial's topic.
    pub partitions: i32,
}

/// One kill of a group member and what followed.
#[derive(Clone, Debug, Serialize)]
pub struct GroupTrial {
    /// The partitions the killed member owned.
    pub moved_partitions: Vec<i32>,
    /// Kill → every moved partition delivered, at the survivor, a message emitted after it.
    #[serde(serialize_with = "millis")]
    pub recovery: Duration,
    /// Kill → the survivor's partitions were revoked: the group began to rebalance.
    #[serde(serialize_with = "opt_millis")]
    pub detection: Option<Duration>,
    /// Kill → the survivor was assigned the moved partitions.
    #[serde(serialize_with = "opt_millis")]
    pub reassignment: Option<Duration>,
    /// The longest pause in delivery of the survivor's own partitions after the kill.
    #[serde(serialize_with = "millis")]
    pub survivor_gap: Duration,
    /// Assignments the survivor received between the kill and its recovery (1 when the group
    /// rebalanced once).
    pub rebalances: usize,
    /// Emitted → delivered, the median between the group's last rebalance and the kill: the
    /// broker's share of any delivery, recovery included.
    #[serde(serialize_with = "millis")]
    pub steady_latency: Duration,
    /// The members' start → the steady state: how long the group took to form.
    #[serde(serialize_with = "millis")]
    pub formation: Duration,
    /// Assignments the members received before the steady state (2 when the group formed in
    /// one rebalance).
    pub formation_assignments: usize,
    /// Tries it took to reach a steady state (1 when the first did).
    pub attempts: usize,
}

/// The outcome of one configuration.
#[derive(Clone, Debug)]
pub struct BaselineResult {
    /// The configuration.
    pub config: GroupConfig,
    /// The broker: `tansu 0.6.0 on 127.0.0.1:PORT`, or the brokers given.
    pub broker: String,
    /// Messages per second over all partitions.
    pub rate: f64,
    /// Each trial that completed.
    pub trials: Vec<GroupTrial>,
    /// Why each trial that did not complete failed.
    pub failures: Vec<String>,
}

impl BaselineResult {
    /// The percentiles of each measure, by name, headline first.
    pub fn measures(&self) -> Vec<(&'static str, Option<Quantiles>)> {
        let t = &self.trials;
        vec![
            ("recovery", Quantiles::of(t.iter().map(|t| t.recovery))),
            ("detection", Quantiles::of(t.iter().filter_map(|t| t.detection))),
            ("reassignment", Quantiles::of(t.iter().filter_map(|t| t.reassignment))),
            ("survivor gap", Quantiles::of(t.iter().map(|t| t.survivor_gap))),
            ("steady latency", Quantiles::of(t.iter().map(|t| t.steady_latency))),
            ("formation", Quantiles::of(t.iter().map(|t| t.formation))),
        ]
    }

    /// The JSON object `--json` lists under `"baseline"`: the recovery percentiles at the top,
    /// as in Squall's, then the other measures, every trial and every failure.
    pub fn to_json(&self) -> serde_json::Value {
        let (recovery, parts) = headline_and_parts(self.measures());
        let field = |f: fn(&Quantiles) -> f64| recovery.map(|q| f(&q));
        serde_json::json!({
            "config": self.config.name(),
            "client_default_session_timeout": self.config.session_timeout.is_none(),
            "session_timeout_ms": self.config.effective_session_timeout().as_millis() as u64,
            "heartbeat_interval_ms": self.config.heartbeat_interval().as_millis() as u64,
            "broker": self.broker,
            "rate": self.rate,
            "trials": self.trials.len(),
            "failed": self.failures.len(),
            "p50_ms": field(|q| q.p50_ms),
            "p90_ms": field(|q| q.p90_ms),
            "p99_ms": field(|q| q.p99_ms),
            "max_ms": field(|q| q.max_ms),
            "parts": parts,
            "per_trial": self.trials,
            "failures": self.failures,
        })
    }
}

/// Runs the consumer-group baseline: every configuration of `options`, trial after trial, on
/// one broker. Errors when the broker cannot be had or no trial of a configuration
/// completed; a trial that failed is reported in its result and the others still count.
pub async fn kafka_group_baseline(options: &BaselineOptions) -> anyhow::Result<Vec<BaselineResult>> {
    anyhow::ensure!(options.rate > 0.0, "the baseline's rate must be positive");
    anyhow::ensure!(options.partitions >= 2, "the baseline's topic needs at least 2 partitions for 2 members");
    if options.configs.iter().all(|c| c.trials == 0) {
        return Ok(Vec::new());
    }
    let dir = tempfile::Builder::new().prefix("squall-baseline-").tempdir()?;
    let (tansu, brokers, broker) = match &options.broker {
        BrokerSource::Given(brokers) => (None, brokers.clone(), brokers.clone()),
        BrokerSource::Tansu(binary) => {
            let tansu = Tansu::start(binary, dir.path()).await?;
            let (brokers, broker) = (tansu.addr.to_string(), format!("{} on {}", tansu.version, tansu.addr));
            (Some(tansu), brokers, broker)
        }
    };
    let result = run(options, dir.path(), &brokers, &broker).await;
    if let Err(e) = &result {
        let tansu_log = tansu.as_ref().map(|t| format!("\n--- tansu log ---\n{}", tail(&t.log))).unwrap_or_default();
        eprintln!("baseline failed: {e:#}{tansu_log}\nits logs are kept in {}", dir.keep().display());
    }
    drop(tansu);
    result
}

async fn run(
    options: &BaselineOptions,
    dir: &Path,
    brokers: &str,
    broker: &str,
) -> anyhow::Result<Vec<BaselineResult>> {
    let mut results = Vec::new();
    for (c, config) in options.configs.iter().enumerate() {
        let mut result = BaselineResult {
            config: *config,
            broker: broker.to_string(),
            rate: options.rate,
            trials: vec![],
            failures: vec![],
        };
        for n in 0..config.trials {
            let label = format!("baseline {} trial {}/{}", config.name(), n + 1, config.trials);
            let name = format!("squall-baseline-{}-{c}-{n}", std::process::id());
            let run = TrialRun { options, config, brokers, dir, victim: n % 2 };
            match run.measure(&name, &label).await {
                Ok(trial) => {
                    eprintln!(
                        "{label}: killed member {} owning partitions {:?}, delivered again after {:.0} ms",
                        run.victim,
                        trial.moved_partitions,
                        trial.recovery.as_secs_f64() * 1000.0
                    );
                    result.trials.push(trial);
                }
                Err(e) => {
                    let failure = format!("trial {}: {e:#}", n + 1);
                    eprintln!("{label} failed: {e:#}");
                    result.failures.push(failure);
                }
            }
        }
        anyhow::ensure!(
            config.trials == 0 || !result.trials.is_empty(),
            "no trial of {} completed: {}",
            config.name(),
            result.failures.join("; ")
        );
        results.push(result);
    }
    Ok(results)
}

/// One trial's fixed parts.
struct TrialRun<'a> {
    options: &'a BaselineOptions,
    config: &'a GroupConfig,
    brokers: &'a str,
    dir: &'a Path,
    /// Which of the two members is killed.
    victim: usize,
}

/// Why an attempt at a trial ended without a measurement.
enum Unmeasured {
    /// The group did not reach a steady state: worth another attempt.
    Unsteady(anyhow::Error),
    /// Anything else.
    Failed(anyhow::Error),
}

impl TrialRun<'_> {
    /// Runs the trial, trying again (at most [`ATTEMPTS`] in all) while the group does not
    /// reach a steady state. Each attempt's topic and group are named `{name}-{attempt}`.
    async fn measure(&self, name: &str, label: &str) -> anyhow::Result<GroupTrial> {
        for attempt in 1..=ATTEMPTS {
            match self.attempt(&format!("{name}-{attempt}")).await {
                Ok(mut trial) => {
                    trial.attempts = attempt;
                    return Ok(trial);
                }
                Err(Unmeasured::Unsteady(e)) if attempt < ATTEMPTS => {
                    eprintln!(
                        "{label}: attempt {attempt} of {ATTEMPTS}: {e:#}; trying again with a new topic and group"
                    );
                }
                Err(Unmeasured::Unsteady(e)) => {
                    return Err(e.context(format!("no steady state in {ATTEMPTS} attempts")));
                }
                Err(Unmeasured::Failed(e)) => return Err(e),
            }
        }
        unreachable!("the last attempt returns")
    }

    /// One attempt, on a new topic `name` with a new group `name`.
    async fn attempt(&self, name: &str) -> Result<GroupTrial, Unmeasured> {
        let partitions = self.options.partitions;
        create_topic(self.brokers, name, partitions).await.map_err(Unmeasured::Failed)?;
        let result = async {
            let producer =
                SteadyProducer::start(self.brokers, name, partitions, self.options.rate).map_err(Unmeasured::Failed)?;
            let trial = self.kill_a_member(name, &producer).await?;
            producer.stop().map_err(Unmeasured::Failed)?;
            Ok(trial)
        }
        .await;
        // Left on a broker that outlives the run, it would be clutter; on tansu, it would also
        // keep its memory.
        if let Err(e) = delete_topic(self.brokers, name).await {
            eprintln!("could not delete the baseline's topic: {e:#}");
        }
        result
    }

    /// Starts two members on `topic`, in a group of the same name, waits for the steady state,
    /// kills one and measures what follows.
    async fn kill_a_member(&self, topic: &str, producer: &SteadyProducer) -> Result<GroupTrial, Unmeasured> {
        let group = topic;
        let session = self.config.effective_session_timeout();
        let started = Instant::now();
        let (sender, events) = mpsc::channel();
        let mut members = Vec::new();
        for index in 0..2 {
            let member = Member::start(self, topic, group, index, sender.clone()).map_err(Unmeasured::Failed)?;
            members.push(member);
        }
        let mut view = GroupView::new(self.options.partitions);
        // tansu holds a JoinGroup for half the session timeout; Kafka delays a new group's
        // first rebalance by 3 s (group.initial.rebalance.delay.ms).
        let deadline = started + session + Duration::from_secs(30);
        let settle = SETTLE + self.config.heartbeat_interval();
        loop {
            for (index, event) in events.try_iter() {
                view.observe(index, &event);
            }
            if view.steady(settle, unix_nanos()) {
                break;
            }
            if let Some(index) = members.iter_mut().position(|m| m.exited()) {
                let why = format!("member {index} exited before the kill");
                return Err(Unmeasured::Failed(self.with_logs(why, &mut members)));
            }
            if Instant::now() > deadline {
                let why = format!("the group did not settle: {}", view.describe());
                return Err(Unmeasured::Unsteady(self.with_logs(why, &mut members)));
            }
            tokio::time::sleep(POLL).await;
        }

        let formation = started.elapsed();
        let moved = view.assignment(self.victim).to_vec();
        let kept = view.assignment(1 - self.victim).to_vec();
        let mut recovery = Recovery::new(unix_nanos(), self.victim, &moved, &kept);
        let killed = Instant::now();
        members[self.victim].kill();
        // The eviction waits for the session timeout; on tansu the rejoin for half of it more.
        let deadline = killed + session * 2 + Duration::from_secs(30);
        let recovered = loop {
            for (index, event) in events.try_iter() {
                recovery.observe(index, &event);
            }
            if let Some(recovered) = recovery.recovered() {
                break recovered;
            }
            if Instant::now() > deadline || members[1 - self.victim].exited() {
                let why = format!(
                    "partitions {moved:?} of the killed member {} did not deliver again within {:?} ({}); {}",
                    self.victim,
                    deadline - killed,
                    recovery.describe(),
                    producer.describe()
                );
                return Err(Unmeasured::Failed(self.with_logs(why, &mut members)));
            }
            tokio::time::sleep(POLL).await;
        };
        // The survivor's gap over the same stretch of time and a bit more, as Squall's is.
        let end_ns = recovery.kill_ns + recovered.as_nanos() as i64 + 500_000_000;
        while unix_nanos() < end_ns + 100_000_000 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for (index, event) in events.try_iter() {
            recovery.observe(index, &event);
        }
        Ok(recovery.trial(recovered, end_ns, formation, &view))
    }

    /// Kills the members and returns `why` with the last lines each logged.
    fn with_logs(&self, why: String, members: &mut [Member]) -> anyhow::Error {
        let mut logs = String::new();
        for member in members.iter_mut() {
            member.kill();
            logs += &format!("\n--- member {} ({}) ---\n{}", member.index, member.log.display(), tail(&member.log));
        }
        anyhow::anyhow!("{why}{logs}")
    }
}

/// A member process, SIGKILLed when dropped.
struct Member {
    index: usize,
    child: Child,
    /// Its end of the pipe the member watches: when it closes, the member exits.
    _stdin: ChildStdin,
    log: PathBuf,
}

impl Member {
    /// Starts member `index` of `group` on `topic`; a thread sends what it prints to `events`.
    fn start(
        run: &TrialRun<'_>,
        topic: &str,
        group: &str,
        index: usize,
        events: mpsc::Sender<(usize, Event)>,
    ) -> anyhow::Result<Member> {
        let log = run.dir.join(format!("{group}-member{index}.log"));
        let stderr = File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let mut command = Command::new(&run.options.program);
        command.args(MEMBER_COMMAND).args(["--brokers", run.brokers, "--topic", topic, "--group", group]);
        if let Some(timeout) = run.config.session_timeout {
            command.args(["--session-timeout-ms", &timeout.as_millis().to_string()]);
        }
        // librdkafka's notices (rebalances, heartbeat errors) in the member's log.
        command.env("RUST_LOG", "warn,librdkafka=info");
        let mut child =
            command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(stderr).spawn().with_context(|| {
                format!("cannot start {} {}", run.options.program.display(), MEMBER_COMMAND.join(" "))
            })?;
        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        std::thread::spawn(move || {
            let lines = BufReader::new(stdout).lines().map_while(Result::ok);
            for event in lines.filter_map(|line| Event::parse(&line)) {
                if events.send((index, event)).is_err() {
                    break;
                }
            }
        });
        Ok(Member { index, child, _stdin: stdin, log })
    }

    /// SIGKILLs and reaps it (again: no harm).
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether it exited.
    fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A line a member prints.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Event {
    /// `PARTITION OFFSET EMITTED_NS RECEIVED_NS`: a message.
    Delivered { partition: i32, offset: i64, emitted_ns: i64, received_ns: i64 },
    /// `assigned AT_NS P,P,...` (or `-` for none): the member's new assignment.
    Assigned { at_ns: i64, partitions: Vec<i32> },
    /// `revoked AT_NS`: the member gave up its partitions (a rebalance began).
    Revoked { at_ns: i64 },
}

impl Event {
    fn parse(line: &str) -> Option<Event> {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields[..] {
            ["assigned", at_ns, partitions] => Some(Event::Assigned {
                at_ns: at_ns.parse().ok()?,
                partitions: match partitions {
                    "-" => vec![],
                    list => list.split(',').map(str::parse).collect::<Result<_, _>>().ok()?,
                },
            }),
            ["revoked", at_ns] => Some(Event::Revoked { at_ns: at_ns.parse().ok()? }),
            [partition, offset, emitted_ns, received_ns] => Some(Event::Delivered {
                partition: partition.parse().ok()?,
                offset: offset.parse().ok()?,
                emitted_ns: emitted_ns.parse().ok()?,
                received_ns: received_ns.parse().ok()?,
            }),
            _ => None,
        }
    }
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::Delivered { partition, offset, emitted_ns, received_ns } => {
                write!(f, "{partition} {offset} {emitted_ns} {received_ns}")
            }
            Event::Assigned { at_ns, partitions } if partitions.is_empty() => write!(f, "assigned {at_ns} -"),
            Event::Assigned { at_ns, partitions } => {
                let list: Vec<String> = partitions.iter().map(i32::to_string).collect();
                write!(f, "assigned {at_ns} {}", list.join(","))
            }
            Event::Revoked { at_ns } => write!(f, "revoked {at_ns}"),
        }
    }
}

/// The group before the kill, as the two members' lines show it.
struct GroupView {
    partitions: i32,
    /// Per member: its assignment, and the partitions it delivered from since.
    members: [(Vec<i32>, BTreeSet<i32>); 2],
    /// When the last rebalance event (of either member) happened.
    last_change_ns: i64,
    /// Assignments seen, of both members.
    assignments: usize,
    /// Each delivery's (received, emitted → received), in nanoseconds.
    latencies: Vec<(i64, i64)>,
}

impl GroupView {
    fn new(partitions: i32) -> GroupView {
        GroupView { partitions, members: Default::default(), last_change_ns: 0, assignments: 0, latencies: vec![] }
    }

    fn observe(&mut self, member: usize, event: &Event) {
        let (assignment, delivered) = &mut self.members[member];
        match event {
            Event::Delivered { partition, emitted_ns, received_ns, .. } => {
                delivered.insert(*partition);
                self.latencies.push((*received_ns, received_ns - emitted_ns));
            }
            Event::Assigned { at_ns, partitions } => {
                *assignment = partitions.clone();
                delivered.clear();
                self.assignments += 1;
                self.last_change_ns = self.last_change_ns.max(*at_ns);
            }
            Event::Revoked { at_ns } => {
                assignment.clear();
                delivered.clear();
                self.last_change_ns = self.last_change_ns.max(*at_ns);
            }
        }
    }

    fn assignment(&self, member: usize) -> &[i32] {
        &self.members[member].0
    }

    /// Whether each member owns some partitions, together all and none twice, each has
    /// delivered from all of its own, and no rebalance happened in the last `settle`.
    fn steady(&self, settle: Duration, now_ns: i64) -> bool {
        let mut owned: Vec<i32> = self.members.iter().flat_map(|(a, _)| a.iter().copied()).collect();
        owned.sort_unstable();
        let covered = owned == (0..self.partitions).collect::<Vec<_>>();
        let flowing =
            self.members.iter().all(|(a, delivered)| !a.is_empty() && a.iter().all(|p| delivered.contains(p)));
        covered && flowing && now_ns - self.last_change_ns >= settle.as_nanos() as i64
    }

    /// The median latency of the deliveries since the last rebalance.
    fn steady_latency(&self) -> Duration {
        let mut steady: Vec<i64> =
            self.latencies.iter().filter(|(at, _)| *at >= self.last_change_ns).map(|(_, l)| *l).collect();
        steady.sort_unstable();
        Duration::from_nanos(steady.get(steady.len() / 2).copied().unwrap_or(0).max(0) as u64)
    }

    fn describe(&self) -> String {
        let member = |m: usize| {
            let (assignment, delivered) = &self.members[m];
            format!("member {m} owns {assignment:?} and delivered from {delivered:?}")
        };
        format!("{}, {}", member(0), member(1))
    }
}

/// The survivor's lines after the kill, folded into the trial's measures.
struct Recovery {
    kill_ns: i64,
    victim: usize,
    moved: Vec<i32>,
    kept: Vec<i32>,
    detection_ns: Option<i64>,
    reassignment_ns: Option<i64>,
    rebalances: usize,
    /// Per moved partition, when it first delivered a message emitted after the kill.
    fresh: BTreeMap<i32, i64>,
    /// When the kept partitions delivered, after the kill.
    kept_arrivals: Vec<i64>,
}

impl Recovery {
    fn new(kill_ns: i64, victim: usize, moved: &[i32], kept: &[i32]) -> Recovery {
        Recovery {
            kill_ns,
            victim,
            moved: moved.to_vec(),
            kept: kept.to_vec(),
            detection_ns: None,
            reassignment_ns: None,
            rebalances: 0,
            fresh: BTreeMap::new(),
            kept_arrivals: Vec::new(),
        }
    }

    fn observe(&mut self, member: usize, event: &Event) {
        // What the killed member printed before it died may still be in the pipe.
        if member == self.victim {
            return;
        }
        match event {
            Event::Delivered { partition, emitted_ns, received_ns, .. } => {
                if self.moved.contains(partition) && *emitted_ns >= self.kill_ns {
                    self.fresh.entry(*partition).or_insert(*received_ns);
                }
                if self.kept.contains(partition) && *received_ns >= self.kill_ns {
                    self.kept_arrivals.push(*received_ns);
                }
            }
            Event::Revoked { at_ns } if *at_ns >= self.kill_ns => {
                self.detection_ns.get_or_insert(*at_ns);
            }
            Event::Assigned { at_ns, partitions } if *at_ns >= self.kill_ns && self.recovered().is_none() => {
                self.rebalances += 1;
                if self.moved.iter().all(|p| partitions.contains(p)) {
                    self.reassignment_ns.get_or_insert(*at_ns);
                }
            }
            _ => {}
        }
    }

    fn since_kill(&self, ns: i64) -> Duration {
        Duration::from_nanos((ns - self.kill_ns).max(0) as u64)
    }

    /// Kill → the last moved partition's first fresh delivery, once all have one.
    fn recovered(&self) -> Option<Duration> {
        let all = self.moved.iter().all(|p| self.fresh.contains_key(p));
        all.then(|| self.since_kill(self.fresh.values().copied().max().unwrap_or(self.kill_ns)))
    }

    fn describe(&self) -> String {
        let at = |ns: Option<i64>| ns.map_or("never".to_string(), |ns| format!("{:?}", self.since_kill(ns)));
        format!(
            "the survivor's partitions were revoked after {}, it was assigned the moved ones after {}, \
             and partitions {:?} delivered again",
            at(self.detection_ns),
            at(self.reassignment_ns),
            self.fresh.keys().collect::<Vec<_>>()
        )
    }

    /// The trial, once recovered after `recovery`; the survivor's gap is taken up to `end_ns`.
    /// The group had formed in `formation`, as `formed` shows it.
    fn trial(&self, recovery: Duration, end_ns: i64, formation: Duration, formed: &GroupView) -> GroupTrial {
        let mut times: Vec<i64> = self.kept_arrivals.iter().copied().filter(|&t| t <= end_ns).collect();
        times.sort_unstable();
        times.insert(0, self.kill_ns);
        times.push(end_ns);
        let gap = times.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
        GroupTrial {
            moved_partitions: self.moved.clone(),
            recovery,
            detection: self.detection_ns.map(|ns| self.since_kill(ns)),
            reassignment: self.reassignment_ns.map(|ns| self.since_kill(ns)),
            survivor_gap: Duration::from_nanos(gap.max(0) as u64),
            rebalances: self.rebalances,
            steady_latency: formed.steady_latency(),
            formation,
            formation_assignments: formed.assignments,
            attempts: 1,
        }
    }
}

/// How [`group_member`] runs.
#[derive(Clone, Debug)]
pub struct MemberOptions {
    /// The bootstrap brokers.
    pub brokers: String,
    /// The topic to subscribe to.
    pub topic: String,
    /// The group to join.
    pub group: String,
    /// `session.timeout.ms` (and `heartbeat.interval.ms` a third of it); `None`: the client's
    /// defaults.
    pub session_timeout: Option<Duration>,
}

/// Collects the rebalances librdkafka reports during `poll`, for the poll loop to print in
/// line with the messages.
struct RebalanceLog(Mutex<Vec<Event>>);

impl ClientContext for RebalanceLog {}

impl ConsumerContext for RebalanceLog {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let at_ns = unix_nanos();
        let event = match rebalance {
            Rebalance::Assign(list) => Event::Assigned { at_ns, partitions: partitions_of(list) },
            Rebalance::Revoke(_) => Event::Revoked { at_ns },
            Rebalance::Error(e) => {
                eprintln!("rebalance error: {e}");
                return;
            }
        };
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(event);
    }
}

fn partitions_of(list: &TopicPartitionList) -> Vec<i32> {
    let mut partitions: Vec<i32> = list.elements().iter().map(|e| e.partition()).collect();
    partitions.sort_unstable();
    partitions
}

/// A consumer-group member: subscribes to the topic in the group and prints to stdout a line
/// per message (`PARTITION OFFSET EMITTED_NS RECEIVED_NS`, the emitted time being the message's
/// value) and per rebalance (`assigned AT_NS P,P,...`, `revoked AT_NS`). Runs until stdin
/// closes or stdout cannot be written; commits offsets automatically (librdkafka's default),
/// and a new group starts at the partitions' ends.
pub fn group_member(options: &MemberOptions) -> anyhow::Result<()> {
    let mut config = client_config(&options.brokers);
    config.set("group.id", &options.group).set("auto.offset.reset", "latest");
    if let Some(timeout) = options.session_timeout {
        config
            .set("session.timeout.ms", timeout.as_millis().to_string())
            .set("heartbeat.interval.ms", (timeout / 3).as_millis().max(1).to_string());
    }
    let consumer: BaseConsumer<RebalanceLog> =
        config.create_with_context(RebalanceLog(Mutex::new(Vec::new()))).context("cannot create a Kafka consumer")?;
    consumer.subscribe(&[&options.topic]).with_context(|| format!("cannot subscribe to {}", options.topic))?;

    // The benchmark holds the other end of stdin: when it goes, so does this member.
    let orphaned = Arc::new(AtomicBool::new(false));
    let watch = orphaned.clone();
    std::thread::spawn(move || {
        let _ = std::io::stdin().lock().read_to_end(&mut Vec::new());
        watch.store(true, Ordering::Relaxed);
    });

    let mut out = BufWriter::new(std::io::stdout().lock());
    let mut flushed = Instant::now();
    while !orphaned.load(Ordering::Relaxed) {
        let polled = consumer.poll(Duration::from_millis(50));
        let received_ns = unix_nanos();
        for event in consumer.context().0.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            writeln!(out, "{event}")?;
        }
        match &polled {
            Some(Ok(m)) => {
                let emitted_ns = m.payload().and_then(|v| std::str::from_utf8(v).ok()?.parse().ok());
                if let Some(emitted_ns) = emitted_ns {
                    let event =
                        Event::Delivered { partition: m.partition(), offset: m.offset(), emitted_ns, received_ns };
                    writeln!(out, "{event}")?;
                }
            }
            Some(Err(e)) => eprintln!("consumer error: {e}"),
            None => {}
        }
        if polled.is_none() || flushed.elapsed() >= Duration::from_millis(10) {
            out.flush()?;
            flushed = Instant::now();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_lines_read_back_as_they_were_printed() {
        let events = [
            Event::Delivered { partition: 3, offset: 17, emitted_ns: 1_000, received_ns: 2_000 },
            Event::Assigned { at_ns: 5, partitions: vec![0, 2] },
            Event::Assigned { at_ns: 6, partitions: vec![] },
            Event::Revoked { at_ns: 7 },
        ];
        for event in events {
            assert_eq!(Event::parse(&event.to_string()), Some(event.clone()), "{event}");
        }
        assert_eq!(Event::parse("rdkafka says hello"), None);
        assert_eq!(Event::parse("assigned 5 0,x"), None);
    }

    #[test]
    fn the_group_is_steady_once_both_own_and_deliver_from_all_partitions_and_it_settled() {
        let settle = Duration::from_secs(1);
        let mut view = GroupView::new(4);
        view.observe(0, &Event::Assigned { at_ns: 0, partitions: vec![0, 1, 2, 3] });
        for p in 0..4 {
            view.observe(0, &Event::Delivered { partition: p, offset: 0, emitted_ns: 1, received_ns: 1 });
        }
        assert!(!view.steady(settle, 5_000_000_000), "one member owns everything");
        view.observe(0, &Event::Revoked { at_ns: 10 });
        view.observe(0, &Event::Assigned { at_ns: 11, partitions: vec![0, 1] });
        view.observe(1, &Event::Assigned { at_ns: 12, partitions: vec![2, 3] });
        for p in [0, 1, 2] {
            view.observe(p as usize / 2, &Event::Delivered { partition: p, offset: 0, emitted_ns: 1, received_ns: 20 });
        }
        assert!(!view.steady(settle, 5_000_000_000), "partition 3 has not delivered");
        view.observe(1, &Event::Delivered { partition: 3, offset: 0, emitted_ns: 1, received_ns: 20 });
        assert!(!view.steady(settle, 500_000_000), "not settled yet");
        assert!(view.steady(settle, 1_000_000_012));
        assert_eq!(view.assignment(1), [2, 3]);
    }

    #[test]
    fn recovery_waits_for_every_moved_partition_to_deliver_a_message_from_after_the_kill() {
        let ms = 1_000_000;
        let kill = 1_000 * ms;
        let mut recovery = Recovery::new(kill, 0, &[0, 1], &[2, 3]);
        let delivered =
            |partition, emitted_ns, received_ns| Event::Delivered { partition, offset: 0, emitted_ns, received_ns };
        // The dead member's last lines, and the survivor's replay of messages from before the kill.
        recovery.observe(0, &delivered(0, kill + ms, kill + 2 * ms));
        recovery.observe(1, &delivered(2, kill + 10 * ms, kill + 11 * ms));
        recovery.observe(1, &Event::Revoked { at_ns: kill + 6000 * ms });
        recovery.observe(1, &Event::Assigned { at_ns: kill + 9000 * ms, partitions: vec![0, 1, 2, 3] });
        recovery.observe(1, &delivered(0, kill - 500 * ms, kill + 9001 * ms));
        recovery.observe(1, &delivered(0, kill + 20 * ms, kill + 9002 * ms));
        assert_eq!(recovery.recovered(), None, "partition 1 has not delivered");
        recovery.observe(1, &delivered(1, kill + 30 * ms, kill + 9005 * ms));
        recovery.observe(1, &delivered(2, kill + 9003 * ms, kill + 9004 * ms));
        let recovered = recovery.recovered().expect("both moved partitions delivered");
        assert_eq!(recovered, Duration::from_millis(9005));
        let mut formed = GroupView::new(4);
        formed.observe(1, &Event::Assigned { at_ns: 0, partitions: vec![2, 3] });
        formed.observe(1, &delivered(2, 10 * ms, 30 * ms));
        formed.observe(1, &delivered(3, 20 * ms, 30 * ms));
        formed.observe(1, &delivered(2, 30 * ms, 50 * ms));
        let trial = recovery.trial(recovered, kill + 9505 * ms, Duration::from_secs(7), &formed);
        assert_eq!(trial.detection, Some(Duration::from_millis(6000)));
        assert_eq!(trial.reassignment, Some(Duration::from_millis(9000)));
        assert_eq!(trial.rebalances, 1);
        assert_eq!(trial.steady_latency, Duration::from_millis(20));
        assert_eq!((trial.formation, trial.formation_assignments), (Duration::from_secs(7), 1));
        // Partition 2 paused from 11 ms to 9004 ms after the kill.
        assert_eq!(trial.survivor_gap, Duration::from_millis(8993));
    }

    #[test]
    fn configurations_are_named_by_the_session_timeout_in_effect() {
        let default = GroupConfig { session_timeout: None, trials: 2 };
        assert_eq!(default.name(), "kafka-group session.timeout.ms=45000");
        let tuned = GroupConfig { session_timeout: Some(Duration::from_secs(6)), trials: 5 };
        assert_eq!(tuned.name(), "kafka-group session.timeout.ms=6000");
        assert_eq!(tuned.heartbeat_interval(), Duration::from_secs(2));
        assert_eq!("kafka-group".parse::<Baseline>(), Ok(Baseline::KafkaGroup));
    }
}
