//! `squall bench failover` end to end: every scenario runs two trials on a real three-node
//! cluster of this binary, recovers each time, and loses no tuple.

use std::process::Command;

/// Guarantee: after each kind of kill the affected streams deliver again, and nothing the
/// spouts emitted is lost (the bench exits non-zero if a tuple is).
#[test]
fn every_scenario_recovers_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for scenario in ["worker-kill", "node-kill", "master-kill", "coordinator-leader-kill"] {
        let json = dir.path().join(format!("{scenario}.json"));
        let svg = dir.path().join(format!("{scenario}.svg"));
        let run = Command::new(env!("CARGO_BIN_EXE_squall"))
            .args(["bench", "failover", "--scenario", scenario, "--trials", "2", "--message-timeout", "1s"])
            .arg("--json")
            .arg(&json)
            .arg("--plot")
            .arg(&svg)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&run.stdout);
        assert!(run.status.success(), "{scenario}: {stdout}\n{}", String::from_utf8_lossy(&run.stderr));
        eprintln!("{stdout}");
        let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        assert_eq!(report["scenario"], scenario);
        assert_eq!(report["trials"], 2);
        assert_eq!(report["lost"], 0, "{report}");
        assert!(report["delivered"].as_u64().unwrap() > 1000, "{report}");
        let (p50, max) = (report["p50_ms"].as_f64().unwrap(), report["max_ms"].as_f64().unwrap());
        assert!(p50 > 0.0 && p50 <= max, "{report}");
        assert_eq!(report["per_trial"].as_array().unwrap().len(), 2);
        assert!(std::fs::read_to_string(&svg).unwrap().starts_with("<svg"));
    }
}

/// Guarantee: a Kafka-fed topology (a `kafka` spout on a topic the benchmark produces to, on a
/// tansu broker it starts) recovers from a node's loss, and every message the broker
/// acknowledged reaches the sink.
#[test]
fn a_kafka_source_recovers_and_loses_no_message() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("kafka.json");
    let run = Command::new(env!("CARGO_BIN_EXE_squall"))
        .args(["bench", "failover", "--source", "kafka", "--scenario", "node-kill", "--trials", "2"])
        .args(["--message-timeout", "1s", "--rate", "1500"])
        .arg("--json")
        .arg(&json)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    eprintln!("{stdout}");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report["source"], "kafka");
    assert_eq!(report["trials"], 2);
    assert_eq!(report["lost"], 0, "{report}");
    assert!(report["delivered"].as_u64().unwrap() > 1000, "{report}");
    for trial in report["per_trial"].as_array().unwrap() {
        assert!(!trial["affected_streams"].as_array().unwrap().is_empty(), "{trial}");
    }
}
