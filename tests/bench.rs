//! `switchyard bench` measured against a real hub: the tool's own correctness (every
//! message sent is received, once, and accounted for), never its speed.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{free_ports, hub_command, run_with_timeout, Hub};

/// Bound on one bench run: settle + 1 s of sending + drain, with room for a slow machine.
const BENCH_TIMEOUT: Duration = Duration::from_secs(60);

/// A hub with an MQTT broker (every topic both ways) and the JSON firehose; returns the
/// hub and the MQTT and WebSocket ports.
fn hub() -> (Hub, u16, u16) {
    let [admin, mqtt, websocket] = free_ports();
    let hub = Hub::start(
        &format!(
            r##"
            [admin]
            listen = "127.0.0.1:{admin}"

            [bridges.mqtt]
            type = "mqtt-server"
            listen = "127.0.0.1:{mqtt}"

            [[bridges.mqtt.topics]]
            pattern = "#"
            direction = "both"
            qos = 1

            [bridges.firehose]
            type = "websocket-server"
            listen = "127.0.0.1:{websocket}"

            [[bridges.firehose.topics]]
            pattern = "#"
            direction = "out"
            qos = 1
            "##
        ),
        admin,
    );
    (hub, mqtt, websocket)
}

/// Runs `switchyard bench ARGS... --json` and returns its report.
fn bench(args: &[&str]) -> Value {
    let output = run_with_timeout(
        hub_command().arg("bench").args(args).args([
            "--duration",
            "1s",
            "--settle",
            "300ms",
            "--drain",
            "10s",
            "--json",
        ]),
        BENCH_TIMEOUT,
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "bench failed: {output:?}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not a JSON report ({e}): {stdout}"))
}

fn count(report: &Value, field: &str) -> u64 {
    report[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} missing from {report}"))
}

/// Every message arrived exactly once; the latency figures exist (their values are not
/// judged: this is a correctness test).
fn assert_complete(report: &Value, expected: u64) {
    assert_eq!(count(report, "sent"), expected, "{report}");
    assert_eq!(count(report, "received"), count(report, "sent"), "{report}");
    assert_eq!(count(report, "lost"), 0, "{report}");
    assert_eq!(count(report, "duplicated"), 0, "{report}");
    assert_eq!(count(report, "failed"), 0, "{report}");
    for quantile in ["p50", "p90", "p99", "p999", "max"] {
        assert!(report["latency_us"][quantile].is_number(), "{report}");
    }
}

#[test]
fn mqtt_to_the_websocket_firehose_loses_nothing() {
    let (_hub, mqtt, websocket) = hub();
    let report = bench(&[
        "--from",
        &format!("mqtt://127.0.0.1:{mqtt}/bench/ws"),
        "--to",
        &format!("ws://127.0.0.1:{websocket}/?subscribe=bench%2Fws"),
        "--rate",
        "200",
        "--size",
        "1024",
    ]);
    assert_complete(&report, 200);
    assert_eq!(count(&report, "size"), 1024);
}

#[test]
fn mqtt_to_mqtt_at_qos_0_and_1_loses_nothing() {
    let (_hub, mqtt, _) = hub();
    let url = format!("mqtt://127.0.0.1:{mqtt}/bench/mqtt");
    for qos in ["0", "1"] {
        let report = bench(&["--from", &url, "--to", &url, "--rate", "300", "--qos", qos]);
        assert_complete(&report, 300);
        assert_eq!(report["qos"].to_string(), qos);
    }
}

#[test]
fn a_sweep_reports_every_run_and_the_best_rate() {
    let (_hub, mqtt, _) = hub();
    let url = format!("mqtt://127.0.0.1:{mqtt}/bench/sweep");
    // A ceiling at the first rate: one run, which must pass on any machine.
    let report = bench(&[
        "--from",
        &url,
        "--to",
        &url,
        "--rate",
        "100",
        "--max-rate",
        "100",
        "--sweep",
        "--max-p99",
        "10s",
    ]);
    let runs = report["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 1, "{report}");
    assert_complete(&runs[0], 100);
    assert_eq!(
        report["max_sustainable_rate"].as_f64(),
        Some(100.0),
        "{report}"
    );
}

#[test]
fn unusable_urls_are_refused_before_connecting() {
    let output = run_with_timeout(
        hub_command().args([
            "bench",
            "--from",
            "ws://127.0.0.1:1/",
            "--to",
            "mqtt://127.0.0.1:1/x",
        ]),
        BENCH_TIMEOUT,
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(
        stderr.contains("cannot send through this endpoint"),
        "{stderr}"
    );
}
