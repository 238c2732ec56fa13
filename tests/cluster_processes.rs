//! Cluster mode with real processes on 127.0.0.1: three `squall node --slots` nodes (each also
//! a coordinator replica) or nodes joining an ensemble with `--coordinator`, topologies deployed
//! with the CLI, and workers, nodes and the master SIGKILLed for real.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use zookeeper_client as zk;

use common::*;

/// The nodes whose slots run a worker of `topology`'s assignment, and its task count; `None`
/// while it has none.
async fn placement(client: &zk::Client, topology: &str) -> Option<(BTreeSet<String>, u64)> {
    let (data, _) = client.get_data(&format!("/squall/assignments/{topology}")).await.ok()?;
    let assignment: serde_json::Value = serde_json::from_slice(&data).unwrap();
    let nodes = assignment["workers"].as_array()?.iter().map(|w| w["node"].as_str().unwrap().to_string()).collect();
    let tasks = assignment["layout"].as_array()?.iter().map(|c| c["parallelism"].as_u64().unwrap()).sum::<u64>();
    Some((nodes, tasks))
}

/// Waits until the registered nodes are exactly `ids`.
async fn wait_for_nodes(client: &zk::Client, ids: &[&str], ensemble: &Ensemble) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let mut nodes = client.list_children("/squall/nodes").await.unwrap_or_default();
        nodes.sort();
        if nodes == ids {
            return;
        }
        assert!(Instant::now() < deadline, "registered nodes {nodes:?}, not {ids:?}: {}", ensemble.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `squall deploy FILE`, which must succeed.
fn deploy(file: &std::path::Path, target: &str) {
    let deployed = squall(&["deploy", file.to_str().unwrap(), "--coordinator", target]);
    assert!(deployed.status.success(), "{}", String::from_utf8_lossy(&deployed.stderr));
}

/// Runs `squall ARGS...` to completion.
fn squall(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_squall")).args(args).stdin(Stdio::null()).output().unwrap()
}

/// Guarantee: nodes that join the cluster (`--slots`) register under /squall/nodes and elect
/// one master, which schedules a deployed topology over them; when a node that runs one of its
/// workers is killed, its tasks move to the survivors within the session timeout plus a
/// scheduling round; a second deploy under the same name is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deployed_topology_is_scheduled_over_the_nodes_and_moves_off_a_killed_one() {
    let mut ensemble = Ensemble::start_with(&["--slots", "2"]);
    ensemble.wait_for_leader().await;
    let target = ensemble.connect_string();
    let client = connect(&target).await;
    wait_for_nodes(&client, &["1", "2", "3"], &ensemble).await;

    let topology = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/wordcount.yaml");
    let deployed = squall(&["deploy", topology, "--coordinator", &target]);
    assert!(deployed.status.success(), "{}", String::from_utf8_lossy(&deployed.stderr));
    assert_eq!(String::from_utf8_lossy(&deployed.stdout).trim(), "deployed wordcount");
    let again = squall(&["deploy", topology, "--coordinator", &target]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already deployed"), "{again:?}");

    let deadline = Instant::now() + DEADLINE;
    let (nodes, tasks) = loop {
        if let Some(placed) = placement(&client, "wordcount").await {
            break placed;
        }
        assert!(Instant::now() < deadline, "wordcount was not scheduled: {}", ensemble.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(nodes.len(), 2, "two workers on two nodes: {nodes:?}");
    let listed = squall(&["list", "--coordinator", &target]);
    let listed = String::from_utf8_lossy(&listed.stdout).to_string();
    assert!(listed.contains("wordcount") && listed.contains("active"), "{listed}");

    let victim: u64 = nodes.iter().next().unwrap().parse().unwrap();
    let killed = ensemble.kill(victim);
    let client = connect(&ensemble.connect_string()).await;
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some((now, now_tasks)) = placement(&client, "wordcount").await {
            if !now.contains(&victim.to_string()) {
                assert_eq!(now_tasks, tasks);
                break;
            }
        }
        assert!(Instant::now() < deadline, "node {victim}'s tasks did not move: {}", ensemble.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("node {victim}'s workers were rescheduled {:?} after its SIGKILL", killed.elapsed());
    ensemble.assert_running("after rescheduling");
}

/// Guarantee: word count deployed on three nodes runs in worker processes the supervisors
/// start, its tuples crossing between workers over TCP, and counts exactly what a plain loop
/// counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn word_count_deployed_on_three_nodes_counts_exactly() {
    let mut ensemble = Ensemble::start_with(&["--slots", "2"]);
    ensemble.wait_for_leader().await;
    let target = ensemble.connect_string();
    let input = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/storm.txt");
    let text = std::fs::read_to_string(input).unwrap();
    let mut expected: BTreeMap<String, i64> = BTreeMap::new();
    for word in text.split_whitespace() {
        *expected.entry(word.to_string()).or_default() += 1;
    }
    let total: i64 = expected.values().sum();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("counts.jsonl");
    let yaml = format!(
        "name: wc\nworkers: 3\nconfig: {{ message_timeout: 30s }}\nspouts:\n  - {{ id: lines, kind: file, args: {{ path: {input} }} }}\n\
         bolts:\n  - {{ id: split, kind: split, parallelism: 2, args: {{ field: line }}, inputs: [ {{ from: lines }} ] }}\n\
         \x20 - {{ id: count, kind: count, parallelism: 2, args: {{ key: word }}, inputs: [ {{ from: split, grouping: {{ fields: [word] }} }} ] }}\n\
         \x20 - {{ id: out, kind: file_sink, args: {{ path: {} }}, inputs: [ {{ from: count, grouping: global }} ] }}\n",
        out.display()
    );
    let file = dir.path().join("wc.yaml");
    std::fs::write(&file, yaml).unwrap();
    let client = connect(&target).await;
    wait_for_nodes(&client, &["1", "2", "3"], &ensemble).await;
    deploy(&file, &target);

    let deadline = Instant::now() + DEADLINE;
    let counted = loop {
        let written = std::fs::read_to_string(&out).unwrap_or_default();
        if written.lines().count() as i64 >= total {
            break written;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {total} counts after {DEADLINE:?}: {}",
            written.lines().count(),
            ensemble.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut finals: BTreeMap<String, i64> = BTreeMap::new();
    for line in counted.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let entry = finals.entry(v["word"].as_str().unwrap().to_string()).or_default();
        *entry = (*entry).max(v["count"].as_i64().unwrap());
    }
    assert_eq!(finals, expected);
    // Three workers published themselves (one may be re-publishing after its session expired
    // on a loaded machine: its znode comes back).
    let deadline = Instant::now() + DEADLINE;
    loop {
        let workers = client.list_children("/squall/workers/wc").await.unwrap_or_default();
        if workers.len() == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "workers {workers:?}: {}", ensemble.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // `status` shows each component, where it runs, and the counts the workers publish.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let status = squall(&["status", "wc", "--coordinator", &target]);
        let status = String::from_utf8_lossy(&status.stdout).to_string();
        let count_line = status.lines().find(|l| l.starts_with("count ")).unwrap_or_default().to_string();
        if status.starts_with("wc: active, 3 workers (3 running)") && count_line.contains(&format!(" {total} ")) {
            assert!(status.lines().any(|l| l.starts_with("lines ")), "{status}");
            break;
        }
        assert!(Instant::now() < deadline, "status never showed {total} executed by count: {status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Killed: every worker's znode goes (the process exits, its session ends), then the
    // topology's record.
    let killed = squall(&["kill", "wc", "--coordinator", &target]);
    assert!(killed.status.success(), "{}", String::from_utf8_lossy(&killed.stderr));
    let deadline = Instant::now() + DEADLINE;
    loop {
        let workers = client.list_children("/squall/workers/wc").await.unwrap_or_default();
        let record = client.check_stat("/squall/topologies/wc").await.unwrap();
        if workers.is_empty() && record.is_none() {
            break;
        }
        assert!(Instant::now() < deadline, "after kill: workers {workers:?}, record {record:?}: {}", ensemble.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let unknown = squall(&["kill", "wc", "--coordinator", &target]);
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no topology named 'wc'"), "{unknown:?}");
    ensemble.assert_running("after counting and killing");
}

/// A topology `lines` on a running cluster: a file spout of 20,000 numbered lines, a filter
/// with 3 tasks, a file sink; acking on, with a short message timeout so lost trees replay soon.
struct LinesRun {
    client: zk::Client,
    lines: Vec<String>,
    out: PathBuf,
    _dir: tempfile::TempDir,
}

impl LinesRun {
    /// Deploys it once every node has registered, and returns when its three workers have
    /// registered and lines reach the sink.
    async fn deploy(ensemble: &Ensemble) -> LinesRun {
        let target = ensemble.connect_string();
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("lines.txt");
        let lines: Vec<String> = (0..20_000).map(|i| format!("line-{i}")).collect();
        std::fs::write(&input, lines.join("\n") + "\n").unwrap();
        let out = dir.path().join("out.jsonl");
        let yaml = format!(
            "name: lines\nworkers: 3\nconfig: {{ message_timeout: 2s, max_spout_pending: 200 }}\n\
             spouts:\n  - {{ id: read, kind: file, args: {{ path: {} }} }}\n\
             bolts:\n  - {{ id: pass, kind: filter, parallelism: 3, args: {{ field: line, contains: line }}, inputs: [ {{ from: read }} ] }}\n\
             \x20 - {{ id: out, kind: file_sink, args: {{ path: {} }}, inputs: [ {{ from: pass, grouping: global }} ] }}\n",
            input.display(),
            out.display()
        );
        let file = dir.path().join("lines.yaml");
        std::fs::write(&file, yaml).unwrap();
        let client = connect(&target).await;
        wait_for_nodes(&client, &["1", "2", "3"], ensemble).await;
        deploy(&file, &target);
        let deadline = Instant::now() + DEADLINE;
        while std::fs::read_to_string(&out).map(|t| t.lines().count()).unwrap_or(0) < 100
            || client.list_children("/squall/workers/lines").await.map(|w| w.len()).unwrap_or(0) < 3
        {
            assert!(Instant::now() < deadline, "the workers did not all start: {}", ensemble.logs());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        LinesRun { client, lines, out, _dir: dir }
    }

    /// The pid of worker `name` (`<node>-<slot>`), from its znode; `None` while it has none.
    async fn pid_of(&self, name: &str) -> Option<i64> {
        let (data, _) = self.client.get_data(&format!("/squall/workers/lines/{name}")).await.ok()?;
        serde_json::from_slice::<serde_json::Value>(&data).ok()?["pid"].as_i64()
    }

    /// Waits until every line has reached the sink at least once.
    async fn assert_every_line_arrives(&self, ensemble: &Ensemble) {
        let deadline = Instant::now() + DEADLINE * 2;
        loop {
            let written = std::fs::read_to_string(&self.out).unwrap_or_default();
            let seen: BTreeSet<&str> = written.lines().filter_map(|l| l.split('"').nth(3)).collect();
            let missing = self.lines.iter().filter(|l| !seen.contains(l.as_str())).count();
            if missing == 0 {
                return;
            }
            assert!(Instant::now() < deadline, "{missing} lines never arrived: {}", ensemble.logs());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Guarantee: a worker killed with SIGKILL is started again by its node's supervisor, and
/// every line of a file spout still reaches the sink at least once (the trees the dead worker
/// held are replayed).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_worker_is_restarted_and_every_line_still_arrives() {
    let mut ensemble = Ensemble::start_with(&["--slots", "2"]);
    ensemble.wait_for_leader().await;
    let run = LinesRun::deploy(&ensemble).await;
    let workers = run.client.list_children("/squall/workers/lines").await.unwrap();
    let victim = workers.iter().max().unwrap().clone();
    let pid = run.pid_of(&victim).await.expect("the worker's pid");
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    let deadline = Instant::now() + DEADLINE;
    while run.pid_of(&victim).await.is_none_or(|now| now == pid) {
        assert!(Instant::now() < deadline, "worker {victim} was not restarted: {}", ensemble.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    run.assert_every_line_arrives(&ensemble).await;
    ensemble.assert_running("after a worker's SIGKILL");
}

/// Guarantee: when a whole node is SIGKILLed — its process group, the node and its workers at
/// once, as when its machine dies — the master moves its workers' tasks to the other nodes
/// within the session timeout plus a scheduling round, and every line still reaches the sink
/// at least once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_nodes_tasks_move_and_every_line_still_arrives() {
    let mut ensemble = Ensemble::start_with(&["--slots", "2"]);
    ensemble.wait_for_leader().await;
    let run = LinesRun::deploy(&ensemble).await;
    let workers = run.client.list_children("/squall/workers/lines").await.unwrap();
    let victim: u64 = workers.iter().max().unwrap().split('-').next().unwrap().parse().unwrap();
    let killed = ensemble.kill_group(victim);
    let client = connect(&ensemble.connect_string()).await;
    let deadline = Instant::now() + DEADLINE;
    loop {
        let placed = placement(&client, "lines").await;
        let workers = client.list_children("/squall/workers/lines").await.unwrap_or_default();
        let off_victim = |node: &String| node.split('-').next() != Some(&victim.to_string());
        if placed.is_some_and(|(nodes, _)| !nodes.contains(&victim.to_string()))
            && workers.len() == 3
            && workers.iter().all(off_victim)
        {
            break;
        }
        assert!(Instant::now() < deadline, "node {victim}'s workers did not move: {workers:?}: {}", ensemble.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("node {victim}'s workers run elsewhere {:?} after its SIGKILL", killed.elapsed());
    run.assert_every_line_arrives(&ensemble).await;
    ensemble.assert_running("after a node's SIGKILL");
}

/// Guarantee: when the master's node is SIGKILLed, another node becomes master with a newer
/// epoch, reschedules the dead node's workers from the znodes alone, and the workers on the
/// other nodes run on untouched (same processes); every line still arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_master_is_replaced_and_running_workers_are_not_interrupted() {
    let mut ensemble = Ensemble::start_with(&["--slots", "2"]);
    ensemble.wait_for_leader().await;
    let run = LinesRun::deploy(&ensemble).await;
    let (master, stat) = run.client.get_data("/squall/master/epoch").await.unwrap();
    let master = String::from_utf8(master).unwrap();
    let epoch = stat.version;
    let mut survivors = BTreeMap::new();
    for worker in run.client.list_children("/squall/workers/lines").await.unwrap() {
        if !worker.starts_with(&format!("{master}-")) {
            survivors.insert(worker.clone(), run.pid_of(&worker).await.unwrap());
        }
    }
    ensemble.kill(master.parse().unwrap());
    let client = connect(&ensemble.connect_string()).await;
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Ok((now, stat)) = client.get_data("/squall/master/epoch").await {
            if stat.version > epoch && now != master.as_bytes() {
                break;
            }
        }
        assert!(Instant::now() < deadline, "no new master after node {master}'s SIGKILL: {}", ensemble.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let run = LinesRun { client, ..run };
    run.assert_every_line_arrives(&ensemble).await;
    for (worker, pid) in survivors {
        assert_eq!(run.pid_of(&worker).await, Some(pid), "worker {worker} was restarted");
    }
    ensemble.assert_running("after the master's SIGKILL");
}

/// A process killed when the test ends, passed or failed.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Guarantee: a node started with `--coordinator` hosts no replica and joins an existing
/// ensemble for the cluster roles: it registers, leads as the only master candidate, and runs
/// the workers of a deployed topology, whose lines all arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_joins_an_existing_ensemble_with_coordinator_and_runs_workers() {
    let ensemble = Ensemble::start();
    ensemble.wait_for_leader().await;
    let target = ensemble.connect_string();
    let dir = tempfile::tempdir().unwrap();
    let (_node, _) = join_node_nine(&target, dir.path());
    let input = dir.path().join("in.txt");
    std::fs::write(&input, "a b\nb c\nc d\n").unwrap();
    let out = dir.path().join("out.jsonl");
    let yaml = format!(
        "name: joined\nworkers: 2\nspouts:\n  - {{ id: read, kind: file, args: {{ path: {} }} }}\n\
         bolts:\n  - {{ id: words, kind: split, parallelism: 2, args: {{ field: line }}, inputs: [ {{ from: read }} ] }}\n\
         \x20 - {{ id: out, kind: file_sink, args: {{ path: {} }}, inputs: [ {{ from: words, grouping: global }} ] }}\n",
        input.display(),
        out.display()
    );
    let file = dir.path().join("joined.yaml");
    std::fs::write(&file, yaml).unwrap();
    let client = connect(&target).await;
    wait_for_nodes(&client, &["9"], &ensemble).await;
    deploy(&file, &target);
    let deadline = Instant::now() + DEADLINE;
    while std::fs::read_to_string(&out).map(|t| t.lines().count()).unwrap_or(0) < 6 {
        let log = std::fs::read_to_string(dir.path().join("node9.log")).unwrap_or_default();
        assert!(Instant::now() < deadline, "the words did not all arrive: {log}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(client.get_data("/squall/master/epoch").await.unwrap().0, b"9");
}

/// Guarantee: a node whose coordinator is away (the ensemble lost its quorum for a few
/// seconds) keeps its workers running — the same processes — and goes on once the store is
/// back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_keep_running_while_the_coordinator_is_away() {
    let mut ensemble = Ensemble::start();
    ensemble.wait_for_leader().await;
    let target = ensemble.connect_string();
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("node9.log");
    let log = File::create(&log_path).unwrap();
    let worker_port = free_ports(2).port().to_string();
    let _node = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_squall"))
            .args(["node", "--id", "9", "--coordinator", &target, "--slots", "2", "--worker-port", &worker_port])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let yaml = "name: idle\nworkers: 2\nspouts:\n  - { id: gen, kind: generator, args: { rate: 100 } }\n\
                bolts:\n  - { id: drop, kind: filter, args: { field: line, equals: never }, inputs: [ { from: gen } ] }\n";
    let file = dir.path().join("idle.yaml");
    std::fs::write(&file, yaml).unwrap();
    let client = connect(&target).await;
    wait_for_nodes(&client, &["9"], &ensemble).await;
    deploy(&file, &target);
    let pids = |client: zk::Client| async move {
        let mut pids = BTreeMap::new();
        for worker in client.list_children("/squall/workers/idle").await.unwrap_or_default() {
            if let Ok((data, _)) = client.get_data(&format!("/squall/workers/idle/{worker}")).await {
                let about: serde_json::Value = serde_json::from_slice(&data).unwrap();
                pids.insert(worker, about["pid"].as_i64().unwrap());
            }
        }
        pids
    };
    let deadline = Instant::now() + DEADLINE;
    let before = loop {
        let pids = pids(client.clone()).await;
        if pids.len() == 2 {
            break pids;
        }
        assert!(Instant::now() < deadline, "the workers did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    drop(client);

    // The store loses its quorum for longer than the sessions' timeout.
    ensemble.kill(1);
    ensemble.kill(2);
    tokio::time::sleep(Duration::from_secs(4)).await;
    for (worker, pid) in &before {
        assert_eq!(unsafe { libc::kill(*pid as i32, 0) }, 0, "worker {worker} died while the store was away");
    }
    ensemble.spawn(1);
    ensemble.spawn(2);
    ensemble.wait_for_leader().await;
    let client = connect(&ensemble.connect_string()).await;
    let deadline = Instant::now() + DEADLINE;
    loop {
        let now = pids(client.clone()).await;
        if now == before {
            break;
        }
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        assert!(Instant::now() < deadline, "the workers did not come back as they were: {now:?} vs {before:?}: {log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts node 9, which joins `target` with `--coordinator` and 2 slots, serving HTTP on
/// a free port it returns; its log is in `dir`.
fn join_node_nine(target: &str, dir: &std::path::Path) -> (KillOnDrop, SocketAddr) {
    let log = File::create(dir.join("node9.log")).unwrap();
    let worker_port = free_ports(2).port().to_string();
    let http = free_addr();
    let node = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_squall"))
            .args(["node", "--id", "9", "--coordinator", target, "--slots", "2", "--worker-port", &worker_port])
            .args(["--http", &http.to_string()])
            // The default log filter, so that a test can see `log_level` change it.
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    (node, http)
}

/// The body of `GET path` on `addr`, if it answers 200.
fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    // In two pieces, as a client may send it: the server must wait for the whole line.
    stream.set_nodelay(true).ok()?;
    stream.write_all(b"GET ").ok()?;
    stream.write_all(format!("{path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// What topology `name`'s workers last published as emitted by component `component`.
async fn emitted(client: &zk::Client, name: &str, component: &str) -> u64 {
    let mut total = 0;
    for worker in client.list_children(&format!("/squall/workers/{name}")).await.unwrap_or_default() {
        if let Ok((data, _)) = client.get_data(&format!("/squall/workers/{name}/{worker}")).await {
            let about: serde_json::Value = serde_json::from_slice(&data).unwrap();
            total += about["components"][component]["emitted"].as_u64().unwrap_or(0);
        }
    }
    total
}

/// Guarantee: `deactivate` pauses a running topology's spouts and `activate` resumes them; a
/// live setting changed with `squall config` is applied by the running worker, and `status`
/// shows the version each worker applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deactivate_pauses_the_spouts_and_activate_resumes_them() {
    let ensemble = Ensemble::start();
    ensemble.wait_for_leader().await;
    let target = ensemble.connect_string();
    let dir = tempfile::tempdir().unwrap();
    let (_node, http) = join_node_nine(&target, dir.path());
    let yaml = "name: paced\nworkers: 1\nspouts:\n  - { id: gen, kind: generator, args: { rate: 500 } }\n\
                bolts:\n  - { id: drop, kind: filter, args: { field: line, equals: never }, inputs: [ { from: gen } ] }\n";
    let file = dir.path().join("paced.yaml");
    std::fs::write(&file, yaml).unwrap();
    let client = connect(&target).await;
    wait_for_nodes(&client, &["9"], &ensemble).await;
    deploy(&file, &target);
    let deadline = Instant::now() + DEADLINE;
    while emitted(&client, "paced", "gen").await == 0 {
        assert!(Instant::now() < deadline, "the spout never emitted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let paused = squall(&["deactivate", "paced", "--coordinator", &target]);
    assert!(paused.status.success(), "{}", String::from_utf8_lossy(&paused.stderr));
    // Paused once two published counts 2.5 s apart are equal.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let before = emitted(&client, "paced", "gen").await;
        tokio::time::sleep(Duration::from_millis(2500)).await;
        if emitted(&client, "paced", "gen").await == before {
            break;
        }
        assert!(Instant::now() < deadline, "the spout did not pause");
    }
    let stopped_at = emitted(&client, "paced", "gen").await;
    // The node's HTTP endpoint reports the same counts.
    let metrics = tokio::task::spawn_blocking(move || http_get(http, "/metrics")).await.unwrap().unwrap();
    let line = format!("squall_tuples_emitted_total{{node=\"9\",topology=\"paced\",component=\"gen\"}} {stopped_at}");
    assert!(metrics.lines().any(|l| l == line), "{line} not in:\n{metrics}");
    let status = tokio::task::spawn_blocking(move || http_get(http, "/status")).await.unwrap().unwrap();
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["workers"].as_array().unwrap().len(), 1, "{status}");
    let resumed = squall(&["activate", "paced", "--coordinator", &target]);
    assert!(resumed.status.success(), "{}", String::from_utf8_lossy(&resumed.stderr));
    let deadline = Instant::now() + DEADLINE;
    while emitted(&client, "paced", "gen").await <= stopped_at {
        assert!(Instant::now() < deadline, "the spout did not resume");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A live setting reaches the running worker, and `status` says which version it applied.
    let refused = squall(&["config", "paced", "workers=3", "--coordinator", &target]);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("cannot change while the topology runs"), "{refused:?}");
    for (setting, version) in [("max_spout_pending=50", "v0"), ("max_spout_pending=80", "v1")] {
        let changed = squall(&["config", "paced", setting, "--coordinator", &target]);
        assert!(changed.status.success(), "{}", String::from_utf8_lossy(&changed.stderr));
        let deadline = Instant::now() + DEADLINE;
        loop {
            let status = squall(&["status", "paced", "--coordinator", &target]);
            let status = String::from_utf8_lossy(&status.stdout).to_string();
            if status.contains(&format!("live configuration applied by each worker: 9-0 {version}")) {
                break;
            }
            assert!(Instant::now() < deadline, "{setting} was not applied: {status}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // A component arg its kind declares reloadable reaches the running task, checked; and
    // log_level changes what the worker logs (its default filter hides the info line that
    // reports the new rate).
    let fixed = squall(&["config", "paced", "drop.field=x", "--coordinator", &target]);
    assert!(
        String::from_utf8_lossy(&fixed.stderr).contains("cannot change while it runs (reloadable: none)"),
        "{fixed:?}"
    );
    let invalid = squall(&["config", "paced", "gen.rate=-5", "--coordinator", &target]);
    assert!(!invalid.status.success() && String::from_utf8_lossy(&invalid.stderr).contains("rate"), "{invalid:?}");
    let log = dir.path().join("node9.log");
    assert!(!std::fs::read_to_string(&log).unwrap().contains("gen.rate is now"));
    for setting in ["log_level=info", "gen.rate=2000"] {
        let changed = squall(&["config", "paced", setting, "--coordinator", &target]);
        assert!(changed.status.success(), "{}", String::from_utf8_lossy(&changed.stderr));
    }
    let deadline = Instant::now() + DEADLINE;
    while !std::fs::read_to_string(&log).unwrap().contains("gen.rate is now 2000") {
        assert!(Instant::now() < deadline, "the new rate was not applied: {}", std::fs::read_to_string(&log).unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The example binary `name` (`examples/<name>.rs`), built in this test's profile: a node binary
/// with component kinds of its own.
fn example_binary(name: &str) -> PathBuf {
    let squall = std::path::Path::new(env!("CARGO_BIN_EXE_squall"));
    let profile_dir = squall.parent().unwrap();
    let profile = match profile_dir.file_name().and_then(|p| p.to_str()) {
        Some("debug") => "dev",
        Some(other) => other,
        None => panic!("unexpected binary path {}", squall.display()),
    };
    let built = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--example", name, "--profile", profile])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .unwrap();
    assert!(built.success(), "cargo build --example {name} failed");
    profile_dir.join("examples").join(name)
}

/// One line of the `fenced_append` ledger: token, task, pid, entry and exit (ns).
fn ledger_entries(path: &std::path::Path) -> Vec<(i64, u32, u32, u128, u128)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|line| {
            let f: Vec<&str> = line.split(' ').collect();
            assert_eq!(f.len(), 5, "a ledger line has five fields: {line:?}");
            (
                f[0].parse().unwrap(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
                f[3].parse().unwrap(),
                f[4].parse().unwrap(),
            )
        })
        .collect()
}

/// The `leader_beacon` lines: (task, pid).
fn beacons(path: &std::path::Path) -> Vec<(u32, u32)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|line| {
            let f: Vec<&str> = line.split(' ').collect();
            (f[0].parse().unwrap(), f[1].parse().unwrap())
        })
        .collect()
}

/// Guarantee: components on different worker processes coordinate through the store: two
/// holders of a component lock are never inside it together (the ledger's intervals do not
/// overlap, and its fencing tokens only grow, across a holder's SIGKILL too), and exactly one
/// task of a component leads at a time; when the leader's worker is SIGKILLed, another task
/// leads within the session timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn components_lock_and_elect_a_leader_across_workers() {
    let program = example_binary("coordination");
    let ensemble = Ensemble::start_program(&program, &["--slots", "2"]);
    ensemble.wait_for_leader().await;
    let target = ensemble.connect_string();
    let client = connect(&target).await;
    wait_for_nodes(&client, &["1", "2", "3"], &ensemble).await;
    let dir = tempfile::tempdir().unwrap();
    let (ledger, beacon) = (dir.path().join("ledger.txt"), dir.path().join("beacon.txt"));
    let yaml = format!(
        "name: coord\nworkers: 3\nspouts:\n  - {{ id: ticks, kind: generator, args: {{ rate: 100, words: 1 }} }}\n\
         \x20 - {{ id: beacon, kind: leader_beacon, parallelism: 3, args: {{ path: {}, every: 50ms }} }}\n\
         bolts:\n  - {{ id: ledger, kind: fenced_append, parallelism: 4, args: {{ path: {} }}, inputs: [ {{ from: ticks }} ] }}\n",
        beacon.display(),
        ledger.display()
    );
    let file = dir.path().join("coord.yaml");
    std::fs::write(&file, yaml).unwrap();
    let deployed = Command::new(&program).args(["deploy", file.to_str().unwrap(), "--coordinator", &target]).output();
    let deployed = deployed.unwrap();
    assert!(deployed.status.success(), "{}", String::from_utf8_lossy(&deployed.stderr));

    let deadline = Instant::now() + DEADLINE;
    while beacons(&beacon).len() < 20 || ledger_entries(&ledger).len() < 50 {
        assert!(Instant::now() < deadline, "the components did not get going: {}", ensemble.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = beacons(&beacon);
    let leader = before[0];
    assert!(before.iter().all(|&b| b == leader), "one leader at a time: {before:?}");
    assert_eq!(unsafe { libc::kill(leader.1 as i32, libc::SIGKILL) }, 0);
    let killed = Instant::now();
    let seen = before.len();
    let deadline = Instant::now() + DEADLINE;
    let successor = loop {
        let now = beacons(&beacon);
        if let Some(&next) = now[seen..].iter().find(|&&b| b != leader) {
            break next;
        }
        assert!(Instant::now() < deadline, "no task took over from {leader:?}: {}", ensemble.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!("beacon task {} leads {:?} after the SIGKILL of its leader's worker", successor.0, killed.elapsed());
    assert_ne!(successor.1, leader.1, "the new leader runs in another process");
    // The lock goes on being taken after the kill, whoever held it then.
    let written = ledger_entries(&ledger).len();
    let deadline = Instant::now() + DEADLINE;
    while ledger_entries(&ledger).len() < written + 50 || beacons(&beacon).len() < seen + 20 {
        assert!(Instant::now() < deadline, "the components stalled after the kill: {}", ensemble.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let after: Vec<_> = beacons(&beacon)[seen..].to_vec();
    let switch = after.iter().position(|&b| b != leader).unwrap();
    assert!(after[switch..].iter().all(|&b| b == successor), "one leader at a time after the kill: {after:?}");

    let entries = ledger_entries(&ledger);
    assert!(entries.windows(2).all(|w| w[0].0 < w[1].0), "fencing tokens grow with each holder");
    assert!(entries.windows(2).all(|w| w[0].4 <= w[1].3), "two holders were inside the lock at once");
    let writers: BTreeSet<u32> = entries.iter().map(|e| e.2).collect();
    assert!(writers.len() >= 2, "the ledger's tasks run in several workers: {writers:?}");
    let killed = Command::new(&program).args(["kill", "coord", "--coordinator", &target]).output().unwrap();
    assert!(killed.status.success());
}
