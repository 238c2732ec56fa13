//! The `squall` command line, run as a user runs it: a real process, real files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn squall() -> Command {
    Command::new(env!("CARGO_BIN_EXE_squall"))
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// The shipped word-count topology, with its input and output moved to absolute paths.
fn wordcount_yaml(out: &Path, acking: bool) -> String {
    std::fs::read_to_string(repo("examples/wordcount.yaml"))
        .unwrap()
        .replace("examples/data/storm.txt", repo("examples/data/storm.txt").to_str().unwrap())
        .replace("wordcount-counts.jsonl", out.to_str().unwrap())
        .replace("max_spout_pending: 5000", &format!("max_spout_pending: 5000, acking: {acking}"))
}

/// Final count per word in a file_sink output of running counts: the highest seen.
fn final_counts(jsonl: &str) -> HashMap<String, i64> {
    let mut counts = HashMap::new();
    for line in jsonl.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("bad line {line:?}: {e}"));
        let word = v["word"].as_str().unwrap().to_string();
        let count = v["count"].as_i64().unwrap();
        let entry = counts.entry(word).or_insert(0);
        *entry = (*entry).max(count);
    }
    counts
}

#[test]
fn wordcount_example_counts_exactly_what_a_plain_loop_counts_with_acking_on_and_off() {
    let input = std::fs::read_to_string(repo("examples/data/storm.txt")).unwrap();
    let mut expected: HashMap<String, i64> = HashMap::new();
    for word in input.split_whitespace() {
        *expected.entry(word.to_string()).or_default() += 1;
    }
    let total: i64 = expected.values().sum();
    for acking in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("counts.jsonl");
        let topology = dir.path().join("wordcount.yaml");
        std::fs::write(&topology, wordcount_yaml(&out, acking)).unwrap();
        let output = squall().arg("local").arg(&topology).output().unwrap();
        assert!(output.status.success(), "acking {acking}: {}", text(&output));
        assert!(text(&output).contains("completed"), "{}", text(&output));
        let written = std::fs::read_to_string(&out).unwrap();
        assert_eq!(written.lines().count() as i64, total, "one running count per word occurrence");
        assert_eq!(final_counts(&written), expected, "acking {acking}");
    }
}

/// Writes `yaml` to a file, runs `squall local` on it, and returns (success, all output).
fn run_topology(yaml: &str) -> (bool, String, PathBuf) {
    let dir = tempfile::tempdir().unwrap().keep();
    let path = dir.join("bad.yaml");
    std::fs::write(&path, yaml).unwrap();
    let output = squall().arg("local").arg(&path).output().unwrap();
    (output.status.success(), text(&output), path)
}

const HEADER: &str = "name: bad\nspouts:\n  - { id: lines, kind: generator, args: { limit: 10 } }\n";

#[test]
fn invalid_topology_files_are_rejected_with_one_message_naming_file_component_and_fault() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "unknown kind",
            "bolts:\n  - { id: split, kind: splitter, inputs: [ { from: lines } ] }\n",
            "component 'split': unknown bolt kind 'splitter'",
        ),
        (
            "unknown argument",
            "bolts:\n  - { id: split, kind: split, args: { feild: line }, inputs: [ { from: lines } ] }\n",
            "component 'split': invalid args for kind 'split': unknown field `feild`",
        ),
        (
            "unknown component field",
            "bolts:\n  - { id: split, kind: split, parallelsm: 2, inputs: [ { from: lines } ] }\n",
            "component 'split': unknown field `parallelsm`",
        ),
        (
            "cycle",
            "bolts:\n  - { id: a, kind: split, args: { field: word }, inputs: [ { from: b } ] }\n  - { id: b, kind: split, args: { field: word }, inputs: [ { from: a } ] }\n",
            "inputs form a cycle: a -> b -> a",
        ),
        (
            "input from a missing component",
            "bolts:\n  - { id: split, kind: split, inputs: [ { from: linez } ] }\n",
            "component 'split': input from 'linez', which is not a component of the topology",
        ),
        (
            "fields grouping on an undeclared field",
            "bolts:\n  - { id: split, kind: split, inputs: [ { from: lines, grouping: { fields: [word] } } ] }\n",
            "component 'split': fields grouping on `word`, which stream 'default' of 'lines' does not declare",
        ),
        (
            "parallelism 0",
            "bolts:\n  - { id: split, kind: split, parallelism: 0, inputs: [ { from: lines } ] }\n",
            "component 'split': parallelism must be at least 1",
        ),
        (
            "a field a bolt needs is missing",
            "bolts:\n  - { id: count, kind: count, inputs: [ { from: lines } ] }\n",
            "component 'count': ",
        ),
    ];
    for (what, bolts, expected) in cases {
        let (ok, output, path) = run_topology(&format!("{HEADER}{bolts}"));
        assert!(!ok, "{what}: accepted");
        let first = output.lines().next().unwrap_or_default();
        assert_eq!(output.lines().count(), 1, "{what}: one line expected, got:\n{output}");
        assert!(first.contains(path.to_str().unwrap()), "{what}: file not named in {first:?}");
        assert!(first.contains(expected), "{what}: {first:?} lacks {expected:?}");
    }
}

#[test]
fn unreadable_or_malformed_topology_files_are_rejected() {
    let output = squall().args(["local", "/nonexistent/topology.yaml"]).output().unwrap();
    assert!(!output.status.success());
    assert!(text(&output).contains("/nonexistent/topology.yaml: cannot read the topology file"), "{}", text(&output));

    let (ok, output, _) = run_topology("name: [unclosed\n");
    assert!(!ok);
    assert!(output.contains("invalid topology file"), "{output}");

    let (ok, output, _) = run_topology(
        "name: t\nspouts:\n  - { id: lines, kind: file, args: { path: /nonexistent/in.txt } }\nbolts:\n  - { id: log, kind: log, inputs: [ { from: lines } ] }\n",
    );
    assert!(!ok);
    assert!(output.contains("component 'lines'") && output.contains("/nonexistent/in.txt"), "{output}");
}

#[test]
fn duration_stops_an_endless_topology() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("endless.yaml");
    std::fs::write(
        &path,
        "name: endless\nconfig: { acking: false }\nspouts:\n  - { id: gen, kind: generator, args: { rate: 1000 } }\nbolts:\n  - { id: split, kind: split, inputs: [ { from: gen } ] }\n",
    )
    .unwrap();
    let started = Instant::now();
    let output = squall().arg("local").arg(&path).args(["--duration", "500ms"]).output().unwrap();
    assert!(output.status.success(), "{}", text(&output));
    assert!(text(&output).contains("stopped at --duration"), "{}", text(&output));
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn ctrl_c_stops_cleanly_and_flushes_the_sink() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("words.jsonl");
    let topology = dir.path().join("endless.yaml");
    std::fs::write(
        &topology,
        format!(
            "name: endless\nspouts:\n  - {{ id: gen, kind: generator, args: {{ rate: 20000 }} }}\nbolts:\n  - {{ id: split, kind: split, inputs: [ {{ from: gen }} ] }}\n  - {{ id: out, kind: file_sink, args: {{ path: {} }}, inputs: [ {{ from: split }} ] }}\n",
            out.display()
        ),
    )
    .unwrap();
    let child = squall().arg("local").arg(&topology).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    // Wait until the sink has written something, then interrupt.
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0) == 0 {
        assert!(Instant::now() < deadline, "the sink wrote nothing");
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", text(&output));
    assert!(text(&output).contains("interrupted"), "{}", text(&output));
    let written = std::fs::read_to_string(&out).unwrap();
    assert!(written.ends_with('\n'), "the sink stopped mid-line");
    for line in written.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(v["word"].is_string());
    }
}
