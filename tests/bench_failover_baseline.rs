//! `squall bench failover --baseline kafka-group` end to end: one Squall worker-kill, then one
//! SIGKILL of a member of a plain rdkafka consumer group on a real tansu broker, measured and
//! reported beside Squall's figures.

mod common;

use std::process::{Command, Stdio};

use common::tansu::Tansu;

/// Guarantee: the baseline kills a consumer-group member, the survivor takes over its
/// partitions, and the recovery time is reported in the JSON under `"baseline"`; no member
/// process outlives the command.
#[test]
fn kafka_group_baseline_reports_its_recovery_beside_squalls() {
    let tansu = Tansu::start();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("failover.json");
    let child = Command::new(env!("CARGO_BIN_EXE_squall"))
        .args(["bench", "failover", "--scenario", "worker-kill", "--trials", "1", "--message-timeout", "1s"])
        .args(["--baseline", "kafka-group", "--brokers", &tansu.bootstrap()])
        // Only the tuned session timeout (6 s): the client's default takes over a minute a kill.
        .args(["--baseline-trials", "1", "--baseline-default-trials", "0"])
        .arg("--json")
        .arg(&json)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let run = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stdout}\n{stderr}\n--- tansu ---\n{}", tansu.log_tail());
    eprintln!("{stdout}");
    assert!(stdout.contains("baseline kafka-group session.timeout.ms=6000"), "{stdout}");

    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report["trials"], 1, "{report}");
    let baseline = report["baseline"].as_array().unwrap_or_else(|| panic!("no baseline array: {report}"));
    assert_eq!(baseline.len(), 1, "only the tuned configuration: {report}");
    let tuned = &baseline[0];
    assert_eq!(tuned["config"], "kafka-group session.timeout.ms=6000", "{tuned}");
    assert_eq!(tuned["trials"], 1, "{tuned}");
    assert_eq!(tuned["failed"], 0, "{tuned}");
    let (p50, max) = (tuned["p50_ms"].as_f64().unwrap(), tuned["max_ms"].as_f64().unwrap());
    assert!(p50 > 0.0 && p50 <= max, "{tuned}");
    let trial = &tuned["per_trial"][0];
    assert!(!trial["moved_partitions"].as_array().unwrap().is_empty(), "{trial}");
    // The group noticed the death before the moved partitions delivered again.
    assert!(trial["detection"].as_f64().unwrap() <= trial["recovery"].as_f64().unwrap(), "{trial}");

    // The members' group ids carry the command's pid.
    let group = format!("squall-baseline-{pid}-");
    let left: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| std::fs::read(entry.ok()?.path().join("cmdline")).ok())
        .map(|cmdline| String::from_utf8_lossy(&cmdline).replace('\0', " "))
        .filter(|cmdline| cmdline.contains("kafka-group-member") && cmdline.contains(&group))
        .collect();
    assert!(left.is_empty(), "members outlived the command: {left:?}");
}
