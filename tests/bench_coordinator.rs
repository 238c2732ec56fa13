//! `squall bench coordinator` against a real one-replica `squall node` on loopback (ephemeral
//! ports, a temporary data directory): the report counts exactly the requests it was asked to
//! send, per kind of request, failures are counted and make the run fail, and the benchmark's
//! znodes are gone at the end unless `--keep` says otherwise.

mod common;

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long the node may take to start serving.
const DEADLINE: Duration = Duration::from_secs(15);

fn squall() -> Command {
    Command::new(env!("CARGO_BIN_EXE_squall"))
}

/// A one-replica `squall node`, killed (SIGKILL) and reaped when it goes, so a failing test
/// leaves nothing running.
struct Node {
    child: Child,
    addr: SocketAddr,
    _data: tempfile::TempDir,
}

impl Node {
    /// Starts a node and returns once its `srvr` says it serves.
    fn start() -> Node {
        let data = tempfile::tempdir().unwrap();
        let addr = common::free_addr();
        let child = squall()
            .args(["node", "--id", "1", "--listen", &addr.to_string(), "--data-dir"])
            .arg(data.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut node = Node { child, addr, _data: data };
        let deadline = Instant::now() + DEADLINE;
        while !srvr(addr).contains("Mode: standalone") {
            assert!(node.child.try_wait().unwrap().is_none(), "squall node exited instead of serving");
            assert!(Instant::now() < deadline, "squall node is not serving on {addr} after {DEADLINE:?}");
            thread::sleep(Duration::from_millis(20));
        }
        node
    }

    /// The children of `path`, by `squall zk ls`.
    fn children(&self, path: &str) -> Vec<String> {
        let output = squall().args(["zk", "--coordinator", &self.addr.to_string(), "ls", path]).output().unwrap();
        assert!(output.status.success(), "squall zk ls {path}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap().lines().map(str::to_string).collect()
    }

    /// Runs `squall bench coordinator` against the node with small counts and `args`; returns
    /// how it ended and the JSON it wrote.
    fn bench(&self, args: &[&str]) -> (Output, Value) {
        let json = tempfile::NamedTempFile::new().unwrap();
        let output = squall()
            .args(["bench", "coordinator", "--target", &self.addr.to_string(), "--clients", "4", "--in-flight", "4"])
            .args(["--znodes", "20", "--json"])
            .arg(json.path())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = std::fs::read_to_string(json.path()).unwrap();
        let report = serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!("no JSON report ({e}): {text:?}; stderr: {}", String::from_utf8_lossy(&output.stderr))
        });
        (output, report)
    }

    /// Znodes of benchmarks under `/`.
    fn bench_roots(&self) -> Vec<String> {
        self.children("/").into_iter().filter(|c| c.starts_with("squall-bench-")).collect()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The answer to `srvr`, or nothing while no one listens.
fn srvr(addr: SocketAddr) -> String {
    let mut answer = String::new();
    if let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        if std::io::Write::write_all(&mut stream, b"srvr").is_ok() {
            let _ = stream.read_to_string(&mut answer);
        }
    }
    answer
}

/// Guarantee: each mix sends exactly `--ops` requests, all answered without error, reported
/// in total and per kind of request (`mixed`: one set in five, the rest gets), with ordered
/// percentiles; and without `--keep` the benchmark's tree is deleted.
#[test]
fn every_mix_reports_the_requests_it_sent_and_leaves_no_znodes() {
    let node = Node::start();
    for (mix, expected) in [
        ("create", vec![("create", 200)]),
        ("set", vec![("set", 200)]),
        ("get", vec![("get", 200)]),
        ("mixed", vec![("get", 160), ("set", 40)]),
        ("multi", vec![("multi", 200)]),
    ] {
        let (output, report) = node.bench(&["--mix", mix, "--ops", "200"]);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{mix}: {stdout}{}", String::from_utf8_lossy(&output.stderr));
        assert_eq!(report["mix"], mix);
        assert_eq!((report["ops"].as_u64(), report["errors"].as_u64()), (Some(200), Some(0)), "{mix}: {report}");
        assert_eq!(report["errors_by_kind"], serde_json::json!({}), "{mix}");
        assert_eq!(report["first_error"], Value::Null, "{mix}");
        assert_eq!((&report["kept"], &report["cleanup_error"]), (&Value::Bool(false), &Value::Null), "{mix}");
        let by_op = report["by_op"].as_object().unwrap();
        let counts: Vec<(&str, u64)> = by_op.iter().map(|(op, r)| (op.as_str(), r["ops"].as_u64().unwrap())).collect();
        assert_eq!(counts, expected, "{mix}: requests per kind");
        for (op, r) in by_op.iter().map(|(op, r)| (op.clone(), r)).chain([("total".to_string(), &report)]) {
            let field = |name: &str| r[name].as_f64().unwrap_or_else(|| panic!("{mix} {op}: no {name}"));
            assert!(field("ops_per_sec") > 0.0, "{mix} {op}: {r}");
            assert!(field("p50_us") <= field("p99_us") && field("p99_us") <= field("p999_us"), "{mix} {op}: {r}");
            assert_eq!(field("errors"), 0.0, "{mix} {op}");
            // The total has a row of its own only when there is more than one kind.
            let shown = op != "total" || by_op.len() > 1;
            assert_eq!(
                stdout.lines().any(|line| line.split_whitespace().next() == Some(&op)),
                shown,
                "{mix}: {op} row in {stdout}"
            );
        }
        assert_eq!(node.bench_roots(), Vec::<String>::new(), "{mix} left its znodes");
    }
}

/// Guarantee: with `--keep` the created znodes stay, under the root the report names.
#[test]
fn keep_leaves_the_created_znodes_in_place() {
    let node = Node::start();
    let (output, report) = node.bench(&["--mix", "create", "--ops", "150", "--keep"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(report["kept"], true);
    let root = report["root"].as_str().unwrap();
    assert_eq!(node.bench_roots(), vec![root.trim_start_matches('/').to_string()]);
    assert_eq!(node.children(root).len(), 150);
}

/// Guarantee: a run whose requests fail is visibly broken: it exits non-zero, naming the
/// first failure, and its JSON counts the failures by kind instead of reporting their speed.
#[test]
fn failed_requests_are_counted_by_kind_and_fail_the_run() {
    let node = Node::start();
    // Larger than a request frame may be (1 MiB): the server closes the connection.
    let (output, report) = node.bench(&["--mix", "create", "--ops", "8", "--value-size", "1100000"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "the run succeeded: {report}");
    assert!(stderr.contains("8 of 8 requests failed; the first: create /squall-bench-"), "{stderr}");
    assert_eq!((report["ops"].as_u64(), report["errors"].as_u64()), (Some(8), Some(8)), "{report}");
    assert_eq!(report["ops_per_sec"], 0.0);
    let kinds = report["errors_by_kind"].as_object().unwrap();
    assert_eq!(kinds.values().map(|n| n.as_u64().unwrap()).sum::<u64>(), 8, "{report}");
    assert!(report["first_error"].as_str().unwrap().starts_with("create /squall-bench-"), "{report}");
    assert_eq!(node.bench_roots(), Vec::<String>::new());
}
