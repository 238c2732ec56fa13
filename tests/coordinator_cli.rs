//! `squall node` and `squall zk` as an operator runs them: the real binary in real processes on
//! loopback, ephemeral ports, temporary data directories, SIGKILL and SIGTERM for real.
//!
//! Every process a test starts is owned by a [`Running`] guard that kills it when the test ends,
//! passed or failed. Nothing waits by sleeping: each wait polls a condition against a deadline.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use common::free_addr;
use zookeeper_client as zk;

/// How long a node may take to start serving, or a command to finish.
const DEADLINE: Duration = Duration::from_secs(15);

fn squall() -> Command {
    Command::new(env!("CARGO_BIN_EXE_squall"))
}

/// Polls `ready` every 20 ms until it returns true; panics with `what` after [`DEADLINE`].
fn eventually(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// A child process that is killed (SIGKILL) and reaped when the guard goes, so a failing test
/// leaves nothing running.
struct Running {
    child: Child,
    what: String,
}

impl Running {
    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends SIGKILL and reaps the process.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM.
    fn terminate(&self) {
        // SAFETY: kill(2) with the pid of a child this guard has not reaped yet.
        let sent = unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        assert_eq!(sent, 0, "cannot send SIGTERM to {}", self.what);
    }

    /// Waits for the process to exit on its own, up to `limit`; `None` if it is still running.
    fn try_wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the process to exit on its own, up to `limit`.
    fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let status = self.try_wait_exit(limit);
        status.unwrap_or_else(|| panic!("{} did not exit within {limit:?}", self.what))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `squall node` process: its client address, its data directory and its stderr, kept in a
/// file outside the data directory so a failed assertion can show it.
struct Node {
    process: Running,
    id: u64,
    addr: SocketAddr,
    data_dir: PathBuf,
    log: PathBuf,
}

impl Node {
    /// Starts node `id` on `data_dir` serving clients on `addr`; returns once a client can
    /// open a session and read `/`.
    fn start(id: u64, data_dir: &Path, addr: SocketAddr, logs: &Path) -> Node {
        let mut node = Node::spawn(id, data_dir, addr, logs, &[]);
        node.wait_serving();
        node
    }

    /// Starts node `id`, with `extra` arguments, without waiting for it.
    fn spawn(id: u64, data_dir: &Path, addr: SocketAddr, logs: &Path, extra: &[String]) -> Node {
        // Appended to, so that the log of a restarted node keeps what the first run printed.
        let log = logs.join(format!("node-{id}-{}.log", addr.port()));
        let stderr = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        let child = squall()
            .args(["node", "--id", &id.to_string(), "--listen", &addr.to_string(), "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        Node {
            process: Running { child, what: format!("squall node {id}") },
            id,
            addr,
            data_dir: data_dir.to_path_buf(),
            log,
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls until the node answers `ruok` and then serves a session; panics, with the node's
    /// stderr, if it exits or the deadline passes first.
    fn wait_serving(&mut self) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.process.child.try_wait().unwrap() {
                panic!("node {} exited ({status}) instead of serving: {}", self.id, self.stderr());
            }
            if four_letter(self.addr, "ruok").as_deref() == Some("imok")
                && zk_cli(self.addr, &["stat", "/"]).status.success()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {} is not serving on {} after {DEADLINE:?}: {}",
                self.id,
                self.addr,
                self.stderr()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then the exit status, which must come within the deadline.
    fn stop(mut self) -> (ExitStatus, String) {
        self.process.terminate();
        let status = self.process.wait_exit(DEADLINE);
        (status, self.stderr())
    }
}

/// Runs `cmd` to completion, killing it and failing the test, with what it printed, if it
/// takes longer than [`DEADLINE`].
fn run(cmd: &mut Command) -> Output {
    let child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut process = Running { child, what: format!("{cmd:?}") };
    let read_all = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = read_all(Box::new(process.child.stdout.take().unwrap()));
    let stderr = read_all(Box::new(process.child.stderr.take().unwrap()));
    let status = process.try_wait_exit(DEADLINE);
    if status.is_none() {
        process.kill();
    }
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    let Some(status) = status else {
        panic!(
            "{} did not exit within {DEADLINE:?}; it printed: {}{}",
            process.what,
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        );
    };
    Output { status, stdout, stderr }
}

/// `squall zk --coordinator ADDR ARGS...`.
fn zk_cli(addr: SocketAddr, args: &[&str]) -> Output {
    run(squall().args(["zk", "--coordinator", &addr.to_string()]).args(args))
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs `squall zk ARGS...`, asserts it succeeded and returns its stdout.
fn zk_ok(addr: SocketAddr, args: &[&str]) -> String {
    let output = zk_cli(addr, args);
    assert!(output.status.success(), "squall zk {args:?} failed: {}", stderr(&output));
    stdout(&output)
}

/// Runs `squall zk ARGS...`, asserts it failed with a non-zero exit and exactly one line on
/// stderr, and returns that line.
fn zk_err(addr: SocketAddr, args: &[&str]) -> String {
    let output = zk_cli(addr, args);
    assert!(!output.status.success(), "squall zk {args:?} succeeded: {}", stdout(&output));
    assert_ne!(output.status.code(), Some(0));
    one_line(&stderr(&output))
}

/// Asserts `text` is a single line and returns it without its newline.
fn one_line(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line on stderr, got: {text:?}");
    lines[0].to_string()
}

/// The answer to a four-letter word, or `None` while nothing listens on `addr`.
fn four_letter(addr: SocketAddr, word: &str) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    std::io::Write::write_all(&mut stream, word.as_bytes()).ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    Some(answer)
}

/// The `key\tvalue` rows of `mntr`.
fn mntr(addr: SocketAddr) -> BTreeMap<String, String> {
    four_letter(addr, "mntr")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Every file and directory under `dir` with its contents, to show a refused start changed
/// nothing.
fn tree_contents(dir: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    let mut found = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let relative = path.strip_prefix(dir).unwrap().to_path_buf();
            if path.is_dir() {
                found.insert(relative, None);
                pending.push(path);
            } else {
                found.insert(relative, Some(std::fs::read(&path).unwrap()));
            }
        }
    }
    found
}

/// Starts `squall node --id ID --data-dir DIR` on a directory it must refuse, asserts it exits
/// non-zero leaving every file of the directory as it was, and returns its stderr.
fn refused(id: u64, data_dir: &Path) -> String {
    let before = tree_contents(data_dir);
    let output = run(squall()
        .args(["node", "--id", &id.to_string(), "--listen", &free_addr().to_string(), "--data-dir"])
        .arg(data_dir));
    assert!(!output.status.success(), "node {id} started on {}", data_dir.display());
    assert_eq!(tree_contents(data_dir), before, "the refused start changed {}", data_dir.display());
    stderr(&output)
}

/// [`refused`], with one line on stderr that names the directory and contains `reason`.
fn assert_refused(id: u64, data_dir: &Path, reason: &str) {
    let line = one_line(&refused(id, data_dir));
    assert!(line.starts_with("error: "), "{line}");
    assert!(line.contains(&data_dir.display().to_string()), "the error does not name the directory: {line}");
    assert!(line.contains(reason), "expected {reason:?} in: {line}");
}

/// A data directory initialized by node `id` holding `/kept`, its node stopped with SIGTERM.
fn initialized_data_dir(id: u64, logs: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(id, dir.path(), free_addr(), logs);
    zk_ok(node.addr, &["create", "/kept", "yes"]);
    let (status, log) = node.stop();
    assert!(status.success(), "{status}: {log}");
    dir
}

/// Guarantee: `squall zk` creates, lists, reads, stats, updates (with a version check),
/// deletes and watches znodes on a `squall node`, and reports each refusal as one line on
/// stderr with a non-zero exit.
#[test]
fn zk_shell_round_trips_znodes_through_a_node() {
    let logs = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let node = Node::start(1, data.path(), free_addr(), logs.path());
    let addr = node.addr;

    assert_eq!(zk_ok(addr, &["create", "/app", "hello"]), "/app\n");
    assert_eq!(zk_err(addr, &["create", "/app", "again"]), "error: /app: node already exists");
    assert_eq!(zk_err(addr, &["create", "/missing/child"]), "error: /missing/child: node does not exist");
    for expected in ["/app/job-0000000000", "/app/job-0000000001"] {
        assert_eq!(zk_ok(addr, &["create", "--sequential", "/app/job-", "work"]), format!("{expected}\n"));
    }
    assert_eq!(zk_ok(addr, &["ls", "/app"]), "job-0000000000\njob-0000000001\n");
    assert_eq!(zk_ok(addr, &["ls", "/"]), "app\nzookeeper\n");
    assert_eq!(zk_ok(addr, &["get", "/app"]), "hello\n");
    assert_eq!(zk_ok(addr, &["get", "/app/job-0000000001"]), "work\n");
    assert_eq!(zk_err(addr, &["get", "/nope"]), "error: /nope: node does not exist");

    let stat = stat_fields(&zk_ok(addr, &["stat", "/app"]));
    let fields = "czxid mzxid pzxid ctime mtime version cversion aversion ephemeralOwner dataLength numChildren";
    let mut expected: Vec<&str> = fields.split(' ').collect();
    expected.sort_unstable();
    assert_eq!(stat.keys().collect::<Vec<_>>(), expected, "every Stat field, once");
    assert_eq!(stat["version"], "0");
    assert_eq!(stat["dataLength"], "5");
    assert_eq!(stat["numChildren"], "2");
    assert_eq!(stat["cversion"], "2");
    assert_eq!(stat["ephemeralOwner"], "0x0");
    assert_eq!(stat["czxid"], stat["mzxid"], "never changed since it was created");
    assert!(zxid(&stat["pzxid"]) > zxid(&stat["czxid"]), "children were added after /app: {stat:?}");

    assert_eq!(zk_ok(addr, &["set", "/app", "v1", "--version", "0"]), "");
    assert_eq!(zk_err(addr, &["set", "/app", "v2", "--version", "0"]), "error: /app: version does not match");
    assert_eq!(zk_ok(addr, &["get", "/app"]), "v1\n", "a refused set changed the data");
    let stat = stat_fields(&zk_ok(addr, &["stat", "/app"]));
    assert_eq!((stat["version"].as_str(), stat["dataLength"].as_str()), ("1", "2"));
    assert!(zxid(&stat["mzxid"]) > zxid(&stat["czxid"]), "{stat:?}");

    assert_eq!(zk_err(addr, &["delete", "/app"]), "error: /app: node has children");
    let stale_delete = zk_err(addr, &["delete", "/app/job-0000000000", "--version", "3"]);
    assert_eq!(stale_delete, "error: /app/job-0000000000: version does not match");
    zk_ok(addr, &["delete", "/app/job-0000000000", "--version", "0"]);
    zk_ok(addr, &["delete", "/app/job-0000000001"]);
    zk_ok(addr, &["delete", "/app"]);
    assert_eq!(zk_err(addr, &["stat", "/app"]), "error: /app: node does not exist");
    assert_eq!(zk_ok(addr, &["ls", "/"]), "zookeeper\n");
}

/// A zxid as `squall zk stat` prints it (`0x1f`).
fn zxid(hex: &str) -> u64 {
    u64::from_str_radix(hex.trim_start_matches("0x"), 16).unwrap_or_else(|e| panic!("zxid {hex:?}: {e}"))
}

/// `name = value` lines of `squall zk stat`.
fn stat_fields(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(|line| {
            let (k, v) = line.split_once(" = ").unwrap_or_else(|| panic!("not `name = value`: {line:?}"));
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// Guarantee: `squall zk watch` prints one line per change that another process makes to the
/// watched node (and, with --recursive, below it).
#[test]
fn zk_watch_prints_changes_made_by_another_process() {
    let logs = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let node = Node::start(1, data.path(), free_addr(), logs.path());
    let addr = node.addr;
    zk_ok(addr, &["create", "/config", "a"]);

    let (mut watcher, lines) = watch(addr, &["watch", "/config"]);
    let (mut recursive, recursive_lines) = watch(addr, &["watch", "--recursive", "/config"]);

    zk_ok(addr, &["set", "/config", "b"]);
    assert_eq!(next_line(&lines, &mut watcher), "NodeDataChanged /config");
    assert_eq!(next_line(&recursive_lines, &mut recursive), "NodeDataChanged /config");
    zk_ok(addr, &["create", "/config/child", "c"]);
    assert_eq!(next_line(&lines, &mut watcher), "NodeChildrenChanged /config");
    assert_eq!(next_line(&recursive_lines, &mut recursive), "NodeCreated /config/child");
    zk_ok(addr, &["set", "/config/child", "d"]);
    assert_eq!(next_line(&recursive_lines, &mut recursive), "NodeDataChanged /config/child");
    zk_ok(addr, &["delete", "/config/child"]);
    assert_eq!(next_line(&recursive_lines, &mut recursive), "NodeDeleted /config/child");
    assert_eq!(next_line(&lines, &mut watcher), "NodeChildrenChanged /config");
    assert!(watcher.child.try_wait().unwrap().is_none(), "a watch runs until interrupted");
}

/// Spawns `squall zk ARGS...` and a thread that forwards its stdout lines; returns once the
/// server counts one more watch, so that a change made from then on is sure to be seen.
fn watch(addr: SocketAddr, args: &[&str]) -> (Running, mpsc::Receiver<String>) {
    let watch_count = || mntr(addr).get("zk_watch_count").and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
    let before = watch_count();
    let mut child = squall()
        .args(["zk", "--coordinator", &addr.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let watcher = Running { child, what: format!("squall zk {args:?}") };
    eventually("the watch to be registered", || watch_count() > before);
    (watcher, rx)
}

/// The next line a watcher printed, within the deadline.
fn next_line(lines: &mpsc::Receiver<String>, watcher: &mut Running) -> String {
    match lines.recv_timeout(DEADLINE) {
        Ok(line) => line,
        Err(e) => panic!("{} printed no line ({e}); exited: {:?}", watcher.what, watcher.child.try_wait()),
    }
}

/// Guarantee: a create the store acknowledged survives a SIGKILL of the node (it was fsynced
/// before the reply), however busy the node was when it died.
#[test]
fn acknowledged_creates_survive_sigkill_mid_write() {
    const WRITERS: usize = 4;
    const BEFORE_KILL: usize = 300;
    let logs = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut node = Node::start(1, data.path(), free_addr(), logs.path());
    let addr = node.addr;
    zk_ok(addr, &["create", "/durable"]);

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let acknowledged = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let killed = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let acknowledged = acknowledged.clone();
            let killed = killed.clone();
            runtime.spawn(async move {
                let client = connect(addr).await;
                let options = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
                for i in 0.. {
                    let path = format!("/durable/w{w}-{i:05}");
                    let data = format!("writer {w} create {i}");
                    match client.create(&path, data.as_bytes(), &options).await {
                        Ok(_) => acknowledged.lock().unwrap().push((path, data)),
                        Err(e) => {
                            assert!(killed.load(Ordering::SeqCst), "{path} failed before the kill: {e}");
                            return i;
                        }
                    }
                }
                unreachable!()
            })
        })
        .collect();

    eventually("the writers to have creates acknowledged", || acknowledged.lock().unwrap().len() >= BEFORE_KILL);
    killed.store(true, Ordering::SeqCst);
    node.process.kill();
    let attempted: usize = runtime.block_on(async {
        let mut attempted = 0;
        for writer in writers {
            attempted += tokio::time::timeout(DEADLINE, writer).await.expect("a writer noticed the kill").unwrap();
        }
        attempted
    });
    let acknowledged = std::mem::take(&mut *acknowledged.lock().unwrap());
    assert!(acknowledged.len() >= BEFORE_KILL);
    assert_eq!(attempted, acknowledged.len(), "every writer was cut off in the middle of a create");

    let node = Node::start(1, data.path(), addr, logs.path());
    let missing: Vec<String> = runtime.block_on(async {
        let client = connect(node.addr).await;
        // Sent all at once (zookeeper-client writes each request before its future is polled),
        // then awaited in order.
        let reads: Vec<_> = acknowledged.iter().map(|(path, _)| client.get_data(path)).collect();
        let mut missing = Vec::new();
        for ((path, data), read) in acknowledged.iter().zip(reads) {
            match read.await {
                Ok((found, _)) if found == data.as_bytes() => {}
                other => missing.push(format!("{path}: {other:?}")),
            }
        }
        missing
    });
    assert!(missing.is_empty(), "{} of {} acknowledged creates lost: {missing:?}", missing.len(), acknowledged.len());
}

async fn connect(addr: SocketAddr) -> zk::Client {
    connect_to(&addr.to_string()).await
}

/// Guarantee: SIGTERM stops a node cleanly (exit 0, its port and directory released), and a
/// node restarted on the same directory and port serves the same znodes.
#[test]
fn sigterm_stops_a_node_cleanly_and_a_restart_finds_its_data() {
    let logs = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let node = Node::start(7, data.path(), free_addr(), logs.path());
    let addr = node.addr;
    zk_ok(addr, &["create", "/kept", "before restart"]);
    zk_ok(addr, &["create", "--sequential", "/kept/s-"]);
    let (status, log) = node.stop();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("squall node 7: stopping"), "{log}");
    assert!(TcpStream::connect(addr).is_err(), "the client port is still open after exit");

    let node = Node::start(7, data.path(), addr, logs.path());
    assert_eq!(zk_ok(addr, &["get", "/kept"]), "before restart\n");
    assert_eq!(zk_ok(addr, &["create", "--sequential", "/kept/s-"]), "/kept/s-0000000001\n");
    let (status, log) = node.stop();
    assert_eq!(status.code(), Some(0), "{log}");
}

/// `--threads 1` runs the whole node on one thread, which serves writes and reads (the log's
/// fsyncs have their own thread); `--threads 0` is refused by the argument parser.
#[test]
fn a_node_on_one_thread_serves_writes_and_reads() {
    let logs = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut node = Node::spawn(3, data.path(), free_addr(), logs.path(), &["--threads".into(), "1".into()]);
    node.wait_serving();
    let addr = node.addr;
    zk_ok(addr, &["create", "/one", "thread"]);
    zk_ok(addr, &["set", "/one", "still one"]);
    assert_eq!(zk_ok(addr, &["get", "/one"]), "still one\n");
    let (status, log) = node.stop();
    assert_eq!(status.code(), Some(0), "{log}");

    let zero = run(squall().args(["node", "--id", "3", "--data-dir"]).arg(data.path()).args(["--threads", "0"]));
    assert_eq!(zero.status.code(), Some(2), "{}", stderr(&zero));
    assert!(stderr(&zero).contains("invalid value '0' for '--threads <THREADS>'"), "{}", stderr(&zero));
}

/// Guarantee: a data directory initialized by another node id is refused, untouched.
#[test]
fn a_data_directory_of_another_node_is_refused_untouched() {
    let logs = tempfile::tempdir().unwrap();
    let dir = initialized_data_dir(1, logs.path());
    assert_refused(2, dir.path(), "belongs to node 1, not to node 2");
}

/// Guarantee: a directory holding files that are not a Squall store is refused, untouched.
#[test]
fn a_directory_that_is_not_a_squall_store_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "my notes").unwrap();
    std::fs::create_dir(dir.path().join("version-2")).unwrap();
    std::fs::write(dir.path().join("version-2").join("log.1"), [0u8; 64]).unwrap();
    assert_refused(1, dir.path(), "is not a Squall Raft store");
}

/// Guarantee: a data directory whose identity file (`meta.json`) is damaged is refused,
/// untouched.
#[test]
fn a_data_directory_with_a_corrupt_identity_file_is_refused_untouched() {
    let logs = tempfile::tempdir().unwrap();
    let dir = initialized_data_dir(1, logs.path());
    std::fs::write(dir.path().join("meta.json"), b"\x00garbage{{").unwrap();
    assert_refused(1, dir.path(), "is corrupt: meta.json is not a valid identity file");
}

/// Guarantee: a data directory a running node is using is refused to a second process, which
/// leaves the running node serving.
#[test]
fn a_data_directory_in_use_is_refused_to_a_second_process() {
    let logs = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let node = Node::start(1, data.path(), free_addr(), logs.path());
    zk_ok(node.addr, &["create", "/first", "still here"]);
    let output =
        run(squall().args(["node", "--id", "1", "--listen", &free_addr().to_string(), "--data-dir"]).arg(data.path()));
    assert!(!output.status.success());
    let line = one_line(&stderr(&output));
    let log_dir = data.path().join("log");
    assert!(line.starts_with(&format!("error: cannot open the Raft log in {}: ", log_dir.display())), "{line}");
    assert!(line.contains("already locked by another process"), "{line}");
    assert_eq!(zk_ok(node.addr, &["get", "/first"]), "still here\n");
}

/// Guarantee: a port already in use is refused with a clear error and a non-zero exit.
#[test]
fn a_client_port_in_use_is_refused_with_a_clear_error() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let data = tempfile::tempdir().unwrap();
    let output = run(squall()
        .args(["node", "--id", "1", "--listen", &addr.to_string(), "--data-dir"])
        .arg(data.path().join("node-1")));
    assert!(!output.status.success());
    // The error is the last line. Raft has started by the time the port is bound, and its
    // tasks may log errors of their own as the process exits before it, so other lines are
    // tolerated here.
    let text = stderr(&output);
    let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{text}");
    assert_eq!(text.lines().last(), Some(errors[0]), "{text}");
    assert!(errors[0].starts_with(&format!("error: cannot listen for clients on {addr}: ")), "{text}");
    assert!(errors[0].contains("Address already in use"), "{text}");
    drop(taken);
}

/// Guarantee: a peer list that leaves this node out, or a malformed `--peer`, is refused with
/// a message naming the problem, before the data directory is created.
#[test]
fn bad_peer_lists_are_refused_with_clear_messages() {
    let parent = tempfile::tempdir().unwrap();
    let data_dir = parent.path().join("node-1");
    let raft = free_addr().to_string();
    let cases: &[(&[&str], &str)] = &[
        (
            &["--raft", &raft, "--peer", "2=127.0.0.1:1", "--peer", "3=127.0.0.1:2"],
            "error: --peer must list every replica, this one (id 1) included",
        ),
        (&["--peer", "1=127.0.0.1:1", "--peer", "1=127.0.0.1:2"], "error: --peer lists node 1 twice"),
        (
            &["--peer", "1=127.0.0.1:1", "--peer", "2=127.0.0.1:2"],
            "error: a replica with peers needs --raft, the address peers reach it at",
        ),
        (&["--peer", "2127.0.0.1:1"], "'2127.0.0.1:1' is not ID=HOST:PORT"),
        (&["--peer", "one=127.0.0.1:1"], "'one' in 'one=127.0.0.1:1' is not a node id"),
        (&["--peer", "1=localhost"], "'localhost' in '1=localhost' is not HOST:PORT"),
    ];
    for (args, expected) in cases {
        let output = run(squall()
            .args(["node", "--id", "1", "--listen", &free_addr().to_string(), "--data-dir"])
            .arg(&data_dir)
            .args(*args));
        assert!(!output.status.success(), "{args:?} was accepted");
        let text = stderr(&output);
        let first = text.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("error: ") && first.contains(expected),
            "{args:?}: expected {expected:?} in {text:?}"
        );
        assert!(!data_dir.exists(), "{args:?}: the refused start created {}", data_dir.display());
    }
}

/// Guarantee: the client port answers ZooKeeper 3.8's four-letter words, so its monitoring
/// scripts work unchanged.
#[test]
fn four_letter_words_answer_like_zookeeper_3_8() {
    let logs = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let node = Node::start(3, data.path(), free_addr(), logs.path());
    let addr = node.addr;
    zk_ok(addr, &["create", "/a", "x"]);
    let word = |w: &str| four_letter(addr, w).unwrap_or_else(|| panic!("no answer to {w}"));
    assert_eq!(word("ruok"), "imok");
    assert_eq!(word("isro"), "rw");
    let srvr = word("srvr");
    assert!(srvr.starts_with("Zookeeper version: 3.8."), "{srvr}");
    assert!(srvr.contains("\nMode: standalone\n"), "{srvr}");
    // /, /zookeeper, /zookeeper/quota, /zookeeper/config and /a.
    assert!(srvr.contains("\nNode count: 5\n"), "{srvr}");
    let stats = mntr(addr);
    assert_eq!(stats.get("zk_server_state").map(String::as_str), Some("standalone"), "{stats:?}");
    assert_eq!(stats.get("zk_znode_count").map(String::as_str), Some("5"), "{stats:?}");
    let conf = word("conf");
    assert!(conf.contains(&format!("clientPort={}\n", addr.port())), "{conf}");
    assert!(conf.contains("serverId=3\n"), "{conf}");
    assert!(conf.contains("tickTime=100\nminSessionTimeout=200\nmaxSessionTimeout=2000\n"), "{conf}");
    assert!(conf.contains(&format!("dataDir={}\n", node.data_dir.display())), "{conf}");
    assert!(word("envi").contains("zookeeper.version=3.8."));
    assert_eq!(word("dump"), "dump is not executed because it is not in the whitelist.\n");
}

/// A data directory of node 1 with a `snapshot.bin` and a Raft log of more than 5000 entries,
/// its node stopped with SIGTERM. With `--snapshot-every 5000` the node snapshots its state once
/// 5000 entries follow the last snapshot; many sessions writing at once share fsyncs and get
/// there in a couple of seconds.
fn data_dir_with_snapshot(logs: &Path) -> tempfile::TempDir {
    const CLIENTS: usize = 48;
    const WRITES: usize = 5100 / CLIENTS + 1;
    let data = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let mut node = Node::spawn(1, data.path(), addr, logs, &["--snapshot-every".into(), "5000".into()]);
    node.wait_serving();
    zk_ok(addr, &["create", "/counter", "0"]);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let writers: Vec<_> = (0..CLIENTS)
            .map(|c| {
                tokio::spawn(async move {
                    let client = connect(addr).await;
                    for i in 0..WRITES {
                        client.set_data("/counter", format!("{c}-{i}").as_bytes(), None).await.unwrap();
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.await.unwrap();
        }
    });
    eventually("the node to write snapshot.bin", || data.path().join("snapshot.bin").is_file());
    let (status, log) = node.stop();
    assert!(status.success(), "{status}: {log}");
    data
}

/// Guarantee: a data directory whose snapshot (`snapshot.bin`) is cut short or overwritten is
/// refused, untouched.
#[test]
fn a_data_directory_with_a_corrupt_snapshot_is_refused_untouched() {
    let logs = tempfile::tempdir().unwrap();
    let data = data_dir_with_snapshot(logs.path());
    let snapshot = data.path().join("snapshot.bin");
    let intact = std::fs::read(&snapshot).unwrap();
    std::fs::write(&snapshot, &intact[..intact.len() / 2]).unwrap();
    assert_refused(1, data.path(), "snapshot.bin: corrupt");
    std::fs::write(&snapshot, b"this is not a snapshot").unwrap();
    assert_refused(1, data.path(), "snapshot.bin: corrupt");
}

/// Guarantee: a data directory whose snapshot has a flipped bit is refused, untouched, rather
/// than served as if it were the state the log committed.
#[test]
fn a_snapshot_with_a_flipped_bit_is_refused_untouched() {
    let logs = tempfile::tempdir().unwrap();
    let data = data_dir_with_snapshot(logs.path());
    let snapshot = data.path().join("snapshot.bin");
    let mut bytes = std::fs::read(&snapshot).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&snapshot, &bytes).unwrap();
    assert_refused(1, data.path(), "snapshot.bin");
}

/// A data directory of node 1 whose Raft log holds the creates of `/n00` to `/n19`, its node
/// stopped with SIGTERM; returns it with the path of its (only) WAL chunk file.
fn data_dir_with_twenty_creates(logs: &Path) -> (tempfile::TempDir, PathBuf) {
    let data = tempfile::tempdir().unwrap();
    let node = Node::start(1, data.path(), free_addr(), logs);
    for i in 0..20 {
        zk_ok(node.addr, &["create", &format!("/n{i:02}"), "some data to fill the log"]);
    }
    let (status, log) = node.stop();
    assert!(status.success(), "{status}: {log}");
    let chunks: Vec<PathBuf> = std::fs::read_dir(data.path().join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    assert_eq!(chunks.len(), 1, "{chunks:?}");
    (data, chunks[0].clone())
}

/// Where `needle` first occurs in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> usize {
    haystack.windows(needle.len()).position(|w| w == needle).unwrap_or_else(|| panic!("{needle:?} not found"))
}

/// Asserts that node 1 refuses `data`, untouched, with a last line naming its `log/`.
fn assert_log_refused(data: &Path) {
    let text = refused(1, data);
    let last = text.lines().last().unwrap_or_default();
    let log_dir = data.join("log");
    assert!(
        last.starts_with(&format!("error: cannot open the Raft log in {}: ", log_dir.display())),
        "expected the last line to name {}: {text}",
        log_dir.display()
    );
}

/// Guarantee: a data directory whose Raft log has a damaged record before its end is refused,
/// untouched (a torn write at the very end, which a crash leaves, is not damage).
#[test]
fn a_data_directory_with_a_damaged_log_record_is_refused_untouched() {
    let logs = tempfile::tempdir().unwrap();
    let (data, wal) = data_dir_with_twenty_creates(logs.path());
    let mut bytes = std::fs::read(&wal).unwrap();
    // A flipped bit in the data of /n10's create: its record's checksum no longer matches.
    let at = find(&bytes, b"/n10") + 10;
    bytes[at] ^= 0x01;
    std::fs::write(&wal, &bytes).unwrap();
    assert_log_refused(data.path());
}

/// Where, in a WAL chunk, the length field of the entry that creates `path` is. raft-log writes
/// an append as [type: u32 = 1][log id: u32 length, bytes][entry: u32 length, bytes][checksum:
/// u64], all big-endian: the entry's length is the last u32 before the path that spans it and
/// ends at a checksum followed by the next record's type (0..=4).
fn entry_length_field(bytes: &[u8], path: &str) -> usize {
    let at = find(bytes, path.as_bytes());
    let u32_at = |p: usize| u32::from_be_bytes(bytes[p..p + 4].try_into().unwrap()) as usize;
    (at.saturating_sub(100)..at - 4)
        .rev()
        .find(|&p| {
            let next = p + 4 + u32_at(p) + 8;
            p + 4 + u32_at(p) > at && next + 4 <= bytes.len() && u32_at(next) <= 4
        })
        .unwrap_or_else(|| panic!("the length field of {path}'s entry"))
}

/// Guarantee: a damaged length field in the middle of the Raft log is refused like any other
/// damage, not taken for a torn write at the end and cut off with every entry after it.
#[test]
fn a_damaged_length_in_the_middle_of_the_log_is_refused_untouched() {
    let logs = tempfile::tempdir().unwrap();
    let (data, wal) = data_dir_with_twenty_creates(logs.path());
    let mut bytes = std::fs::read(&wal).unwrap();
    // The length now runs past the end of the file, as the last record's does after a torn
    // write.
    let length_at = entry_length_field(&bytes, "/n10");
    bytes[length_at] = 0x7f;
    std::fs::write(&wal, &bytes).unwrap();
    assert_log_refused(data.path());
}

/// Guarantee: a write cut short at the end of the log by a crash (never acknowledged: it had
/// not been fsynced) is dropped, said in the log, and every whole record before it is kept; so
/// is a tail of zeros that a file system can leave after a crash.
#[test]
fn a_torn_last_write_is_dropped_and_the_log_before_it_kept() {
    let logs = tempfile::tempdir().unwrap();
    let (data, wal) = data_dir_with_twenty_creates(logs.path());
    let mut bytes = std::fs::read(&wal).unwrap();
    let intact = bytes.len();
    // The first half of a copy of /n19's append record, as if a later write had stopped there.
    let length_at = entry_length_field(&bytes, "/n19");
    let u32_at = |p: usize| u32::from_be_bytes(bytes[p..p + 4].try_into().unwrap()) as usize;
    let record = (length_at.saturating_sub(64)..length_at)
        .rev()
        .find(|&p| u32_at(p) == 1 && p + 8 + u32_at(p + 4) == length_at)
        .expect("the start of /n19's append record");
    let end = length_at + 4 + u32_at(length_at) + 8;
    let torn = bytes[record..record + (end - record) / 2].to_vec();
    bytes.extend_from_slice(&torn);
    std::fs::write(&wal, &bytes).unwrap();

    let node = Node::start(1, data.path(), free_addr(), logs.path());
    let listed = zk_ok(node.addr, &["ls", "/"]);
    for i in 0..20 {
        assert!(listed.contains(&format!("n{i:02}")), "/n{i:02} is missing: {listed}");
    }
    let log = node.stderr();
    assert!(log.contains("is incomplete") && log.contains(&format!("at offset {intact}")), "{log}");
    let (status, log) = node.stop();
    assert!(status.success(), "{status}: {log}");

    // The recovered chunk is closed; writes go on in a new one, which now gets the zeros.
    let last_chunk = std::fs::read_dir(data.path().join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .max()
        .unwrap();
    let mut bytes = std::fs::read(&last_chunk).unwrap();
    bytes.extend_from_slice(&[0u8; 4096]);
    std::fs::write(&last_chunk, &bytes).unwrap();
    let node = Node::start(1, data.path(), free_addr(), logs.path());
    let listed = zk_ok(node.addr, &["ls", "/"]);
    assert!(listed.contains("n00") && listed.contains("n19"), "{listed}");
    let (status, log) = node.stop();
    assert!(status.success(), "{status}: {log}");
}

/// An ensemble of `squall node` processes on loopback, each with its own data directory; a
/// failing test prints every node's stderr.
struct Ensemble {
    nodes: BTreeMap<u64, Option<Node>>,
    dirs: BTreeMap<u64, tempfile::TempDir>,
    client: BTreeMap<u64, SocketAddr>,
    peer_args: Vec<String>,
    raft: BTreeMap<u64, SocketAddr>,
    logs: tempfile::TempDir,
}

impl Ensemble {
    fn start(size: u64) -> Ensemble {
        let ids: Vec<u64> = (1..=size).collect();
        let raft: BTreeMap<u64, SocketAddr> = ids.iter().map(|&id| (id, free_addr())).collect();
        let peer_args = raft.iter().flat_map(|(id, addr)| ["--peer".to_string(), format!("{id}={addr}")]).collect();
        let mut ensemble = Ensemble {
            nodes: BTreeMap::new(),
            dirs: ids.iter().map(|&id| (id, tempfile::tempdir().unwrap())).collect(),
            client: ids.iter().map(|&id| (id, free_addr())).collect(),
            peer_args,
            raft,
            logs: tempfile::tempdir().unwrap(),
        };
        for id in ids {
            ensemble.spawn(id);
        }
        ensemble
    }

    fn spawn(&mut self, id: u64) {
        let mut extra = vec!["--raft".to_string(), self.raft[&id].to_string()];
        extra.extend(self.peer_args.iter().cloned());
        let node = Node::spawn(id, self.dirs[&id].path(), self.client[&id], self.logs.path(), &extra);
        self.nodes.insert(id, Some(node));
    }

    /// `zk_server_state` of each running replica (`None` while it does not answer).
    fn modes(&self) -> BTreeMap<u64, Option<String>> {
        let running = self.nodes.iter().filter(|(_, n)| n.is_some());
        running.map(|(&id, _)| (id, mntr(self.client[&id]).get("zk_server_state").cloned())).collect()
    }

    /// Waits until one running replica leads and every other follows; returns the leader.
    fn wait_for_leader(&self) -> u64 {
        let mut leader = 0;
        eventually("one leader and only followers besides", || {
            let modes = self.modes();
            let leaders: Vec<u64> =
                modes.iter().filter(|(_, m)| m.as_deref() == Some("leader")).map(|(&id, _)| id).collect();
            let followers = modes.values().filter(|m| m.as_deref() == Some("follower")).count();
            if leaders.len() == 1 && followers == modes.len() - 1 {
                leader = leaders[0];
                true
            } else {
                false
            }
        });
        leader
    }

    /// Waits until every running replica reports `znodes` znodes at the same last zxid.
    fn wait_converged(&self, znodes: usize) {
        eventually(&format!("every replica to hold {znodes} znodes at one zxid"), || {
            let seen: Vec<(Option<String>, Option<String>)> = self
                .nodes
                .iter()
                .filter(|(_, n)| n.is_some())
                .map(|(id, _)| {
                    let m = mntr(self.client[id]);
                    (m.get("zk_znode_count").cloned(), m.get("zk_last_zxid").cloned())
                })
                .collect();
            seen.iter().all(|s| s == &seen[0] && s.0 == Some(znodes.to_string()))
        });
    }
}

impl Drop for Ensemble {
    fn drop(&mut self) {
        if thread::panicking() {
            for node in self.nodes.values_mut().flatten() {
                let status = node.process.child.try_wait();
                eprintln!("--- node {} ({}), exited: {status:?}:\n{}", node.id, node.addr, node.stderr());
            }
        }
    }
}

/// Guarantee: `squall zk` works through any replica of a three-replica ensemble: a write
/// through a follower is acknowledged once that follower has applied it (the next read there
/// sees it), a watch set on one follower sees a change made through another, and every
/// replica ends with the same znodes at the same zxid. A follower stopped with SIGTERM exits
/// 0 while the others go on, and catches up when restarted.
///
/// (The leader's loss under load is the subject of `tests/ensemble_processes.rs`.)
#[test]
fn zk_shell_reads_writes_and_watches_through_any_replica_of_an_ensemble() {
    // /, /zookeeper, /zookeeper/quota, /zookeeper/config.
    const BASE: usize = 4;
    let mut ensemble = Ensemble::start(3);
    let leader = ensemble.wait_for_leader();
    let followers: Vec<u64> = ensemble.client.keys().copied().filter(|&id| id != leader).collect();
    for (&id, &addr) in &ensemble.client {
        let path = format!("/via-{id}");
        assert_eq!(zk_ok(addr, &["create", &path, &format!("written through {id}")]), format!("{path}\n"));
        assert_eq!(zk_ok(addr, &["get", &path]), format!("written through {id}\n"), "read back through {id}");
    }

    let (mut watcher, lines) = watch(ensemble.client[&followers[0]], &["watch", "/via-1"]);
    zk_ok(ensemble.client[&followers[1]], &["set", "/via-1", "changed"]);
    assert_eq!(next_line(&lines, &mut watcher), "NodeDataChanged /via-1");
    ensemble.wait_converged(BASE + 3);

    let stopped = followers[1];
    let (status, log) = ensemble.nodes.get_mut(&stopped).unwrap().take().unwrap().stop();
    assert_eq!(status.code(), Some(0), "{log}");
    zk_ok(ensemble.client[&followers[0]], &["create", "/while-one-is-down"]);
    ensemble.spawn(stopped);
    ensemble.wait_for_leader();
    ensemble.wait_converged(BASE + 4);
    assert_eq!(zk_ok(ensemble.client[&stopped], &["get", "/via-1"]), "changed\n");
}

async fn connect_to(connect_string: &str) -> zk::Client {
    zk::Client::connector()
        .with_session_timeout(Duration::from_secs(2))
        .with_connection_timeout(DEADLINE)
        .connect(connect_string)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {connect_string}: {e}"))
}
