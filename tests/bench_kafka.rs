//! `squall bench kafka --produce` against a real Kafka-protocol broker (tansu, on loopback): it
//! produces exactly the messages asked for, reads all of them with the bare consumer and with
//! the Squall topology, and reports both rates and their ratio in the JSON.

mod common;

use std::process::Command;

use common::tansu::Tansu;
use serde_json::Value;

#[test]
fn bench_kafka_reports_both_rates_and_their_ratio() {
    let tansu = Tansu::start();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("kafka.json");
    let output = Command::new(env!("CARGO_BIN_EXE_squall"))
        .args(["bench", "kafka", "--brokers", &tansu.bootstrap(), "--topic", "bench-test", "--produce"])
        .args(["--messages", "20000", "--partitions", "3", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "squall bench kafka failed ({}):\n{stdout}\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
        tansu.log_tail()
    );
    assert!(stdout.contains("bare rdkafka") && stdout.contains("Squall/bare"), "{stdout}");

    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["messages"], 20000, "{report:#}");
    assert_eq!(report["partitions"], 3, "{report:#}");
    let number = |key: &str| report[key].as_f64().unwrap_or_else(|| panic!("no number `{key}` in {report:#}"));
    let (baseline, squall, ratio) = (number("baseline_msgs_per_sec"), number("squall_msgs_per_sec"), number("ratio"));
    assert!(baseline > 0.0 && squall > 0.0, "{report:#}");
    assert!((ratio - squall / baseline).abs() <= 1e-9 * ratio.max(1.0), "{report:#}");
    let (p50, p99) = (number("complete_p50_ms"), number("complete_p99_ms"));
    assert!(0.0 < p50 && p50 <= p99, "{report:#}");
    assert_eq!(report["rounds"].as_array().map(Vec::len), Some(1), "{report:#}");
}

#[test]
fn bench_kafka_refuses_to_produce_into_a_topic_that_exists() {
    let tansu = Tansu::start();
    tansu.create_topic("taken", 1);
    let output = Command::new(env!("CARGO_BIN_EXE_squall"))
        .args(["bench", "kafka", "--brokers", &tansu.bootstrap(), "--topic", "taken", "--produce"])
        .args(["--messages", "10"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("topic taken exists already"), "{stderr}");
}
