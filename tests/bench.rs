//! `switchyard bench` measured against a real hub: the tool's own correctness (every
//! message sent is received, once, and accounted for), never its speed.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::rabbitmq::{unique, RABBITMQ_URL};
use support::{free_ports, hub_command, run_with_timeout, Hub};

/// Bound on one bench run: settle + 1 s of sending + drain, with room for a slow machine.
const BENCH_TIMEOUT: Duration = Duration::from_secs(60);

/// A hub with an MQTT broker (every topic both ways), the JSON firehose and a ZeroMQ SUB
/// socket taking fedmsg envelopes; returns the hub and the MQTT, WebSocket and ZeroMQ
/// ports.
fn hub() -> (Hub, u16, u16, u16) {
    let [admin, mqtt, websocket, zmq] = free_ports();
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

            [bridges.fedmsg]
            type = "zmq"
            socket = "sub"
            bind = ["tcp://127.0.0.1:{zmq}"]
            format = "fedmsg"

            [[bridges.fedmsg.topics]]
            pattern = "#"
            direction = "in"
            "##
        ),
        admin,
    );
    (hub, mqtt, websocket, zmq)
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

/// Every message arrived exactly once at every subscriber; the latency figures exist
/// (their values are not judged: this is a correctness test).
fn assert_complete(report: &Value, expected: u64) {
    assert_eq!(count(report, "sent"), expected, "{report}");
    assert_eq!(
        count(report, "received"),
        count(report, "sent") * count(report, "subscribers"),
        "{report}"
    );
    assert_eq!(count(report, "lost"), 0, "{report}");
    assert_eq!(count(report, "duplicated"), 0, "{report}");
    assert_eq!(count(report, "failed"), 0, "{report}");
    for quantile in ["p50", "p90", "p99", "p999", "max"] {
        assert!(report["latency_us"][quantile].is_number(), "{report}");
    }
}

#[test]
fn mqtt_to_the_websocket_firehose_loses_nothing() {
    let (_hub, mqtt, websocket, _) = hub();
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
    let (_hub, mqtt, _, _) = hub();
    let url = format!("mqtt://127.0.0.1:{mqtt}/bench/mqtt");
    for qos in ["0", "1"] {
        let report = bench(&["--from", &url, "--to", &url, "--rate", "300", "--qos", qos]);
        assert_complete(&report, 300);
        assert_eq!(report["qos"].to_string(), qos);
    }
}

#[test]
fn amqp_publishes_with_and_without_confirms_lose_nothing() {
    // The broker alone (the benchmarks' direct path): the publisher starts many publishes
    // before lapin writes them, and they must all arrive, in order, at both QoS.
    let url = format!("{RABBITMQ_URL}?key={}", unique("bench-amqp-direct"));
    for qos in ["0", "1"] {
        let report = bench(&["--from", &url, "--to", &url, "--rate", "2000", "--qos", qos]);
        assert_complete(&report, 2000);
        assert_eq!(count(&report, "reordered"), 0, "{report}");
    }
}

#[test]
fn a_sweep_reports_every_run_and_the_best_rate() {
    let (_hub, mqtt, _, _) = hub();
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
fn a_fan_out_reaches_every_mqtt_and_websocket_subscriber() {
    let (_hub, mqtt, websocket, _) = hub();
    let from = format!("mqtt://127.0.0.1:{mqtt}/bench/fan");
    for to in [
        from.clone(),
        format!("ws://127.0.0.1:{websocket}/?subscribe=bench%2Ffan"),
    ] {
        let report = bench(&[
            "--from",
            &from,
            "--to",
            &to,
            "--subscribers",
            "25",
            "--rate",
            "20",
        ]);
        assert_eq!(count(&report, "subscribers"), 25, "{report}");
        assert_complete(&report, 20);
    }
}

#[test]
fn fedmsg_envelopes_reach_the_hub_with_the_probe_as_their_msg() {
    let (_hub, mqtt, _, zmq) = hub();
    // The hub's fedmsg format rejects an envelope that is not one (counted invalid), so a
    // complete run shows the envelopes are well formed.
    let report = bench(&[
        "--from",
        &format!("zmq+pub://127.0.0.1:{zmq}/org.bench.fedmsg?format=fedmsg"),
        "--to",
        &format!("mqtt://127.0.0.1:{mqtt}/org/bench/fedmsg"),
        "--rate",
        "200",
    ]);
    assert_complete(&report, 200);
}

#[test]
fn idle_connections_are_held_and_reported() {
    let (_hub, mqtt, _, _) = hub();
    let output = run_with_timeout(
        hub_command().args([
            "bench",
            "--idle",
            "--to",
            &format!("mqtt://127.0.0.1:{mqtt}/bench/idle"),
            "--subscribers",
            "100",
            "--duration",
            "500ms",
        ]),
        BENCH_TIMEOUT,
    );
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    // Once when all are up, once when it lets go.
    assert_eq!(lines.len(), 2, "{stdout}");
    for line in &lines {
        assert_eq!(count(line, "connected"), 100, "{line}");
    }
    assert_eq!(count(&lines[1], "received"), 0, "{stdout}");
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
