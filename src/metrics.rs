//! `/metrics`: the Prometheus text exposition of the hub's counters.

use std::fmt::Write;

use switchyard_api::telemetry::LATENCY_BUCKETS;
use switchyard_api::DropReason;

use crate::state::HubState;

/// One metric family: name, type, help, and a value per bridge.
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    value: fn(&crate::state::BridgeRuntime, &switchyard_api::telemetry::MetricsSnapshot) -> u64,
}

const FAMILIES: &[Family] = &[
    Family {
        name: "switchyard_messages_received_total",
        kind: "counter",
        help: "Messages that entered the hub through a bridge.",
        value: |_, snapshot| snapshot.received,
    },
    Family {
        name: "switchyard_messages_sent_total",
        kind: "counter",
        help: "Messages a bridge handed to its remote side.",
        value: |_, snapshot| snapshot.sent,
    },
    Family {
        name: "switchyard_queue_messages",
        kind: "gauge",
        help: "Messages waiting in a bridge's outbound queue (in memory and spilled to its spool).",
        value: |bridge, _| bridge.queue.depth().0 as u64,
    },
    Family {
        name: "switchyard_queue_bytes",
        kind: "gauge",
        help: "Bytes waiting in a bridge's outbound queue (in memory and spilled to its spool).",
        value: |bridge, _| bridge.queue.depth().1 as u64,
    },
    Family {
        name: "switchyard_bridge_up",
        kind: "gauge",
        help: "1 when the bridge is connected or listening, else 0.",
        value: |_, snapshot| u64::from(snapshot.up),
    },
    Family {
        name: "switchyard_bridge_reconnects_total",
        kind: "counter",
        help: "Times a bridge connected again after losing its connection or failing.",
        value: |_, snapshot| snapshot.reconnects,
    },
    Family {
        name: "switchyard_connections",
        kind: "gauge",
        help: "Client connections open on a server bridge.",
        value: |_, snapshot| snapshot.connections,
    },
];

/// Renders every metric.
pub fn render(state: &HubState) -> String {
    let bridges = state.bridges();
    let snapshots: Vec<_> = bridges
        .iter()
        .map(|bridge| bridge.metrics.snapshot())
        .collect();
    let mut out = String::with_capacity(4096);
    for family in FAMILIES {
        header(&mut out, family.name, family.kind, family.help);
        for (bridge, snapshot) in bridges.iter().zip(&snapshots) {
            let _ = writeln!(
                out,
                "{}{{bridge=\"{}\"}} {}",
                family.name,
                bridge.name,
                (family.value)(bridge, snapshot)
            );
        }
    }
    spool_families(&mut out, &bridges);
    header(
        &mut out,
        "switchyard_messages_dropped_total",
        "counter",
        "Messages dropped, by bridge and reason.",
    );
    for (bridge, snapshot) in bridges.iter().zip(&snapshots) {
        for reason in DropReason::ALL {
            let _ = writeln!(
                out,
                "switchyard_messages_dropped_total{{bridge=\"{}\",reason=\"{}\"}} {}",
                bridge.name,
                reason.as_str(),
                snapshot.dropped[reason as usize]
            );
        }
    }
    let name = "switchyard_forward_latency_seconds";
    header(
        &mut out,
        name,
        "histogram",
        "Time from entering the hub to being handed to a destination's remote side.",
    );
    let (cumulative, sum) = state.latency.cumulative();
    for (bound, count) in LATENCY_BUCKETS.iter().zip(&cumulative) {
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {count}");
    }
    let total = cumulative.last().copied().unwrap_or(0);
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {total}");
    let _ = writeln!(out, "{name}_sum {sum}");
    let _ = writeln!(out, "{name}_count {total}");
    out
}

/// The spool gauges, for bridges with `queue.spool` set.
fn spool_families(out: &mut String, bridges: &[crate::state::BridgeRuntime]) {
    type Value = fn(&crate::state::BridgeRuntime) -> u64;
    let families: [(&str, &str, Value); 3] = [
        (
            "switchyard_spool_messages",
            "Records in a bridge's spool file: spilled messages, and QoS 1 messages until delivered.",
            |bridge| bridge.queue.spool_depth().map_or(0, |depth| depth.0),
        ),
        (
            "switchyard_spool_bytes",
            "Bytes of the records in a bridge's spool file.",
            |bridge| bridge.queue.spool_depth().map_or(0, |depth| depth.1),
        ),
        (
            "switchyard_spool_damaged",
            "1 when the bridge's spool file was found damaged at startup (see /api/bridges).",
            |bridge| u64::from(bridge.spool.as_ref().is_some_and(|s| s.damage.is_some())),
        ),
    ];
    for (name, help, value) in families {
        header(out, name, "gauge", help);
        for bridge in bridges.iter().filter(|bridge| bridge.spool.is_some()) {
            let _ = writeln!(
                out,
                "{name}{{bridge=\"{}\"}} {}",
                bridge.name,
                value(bridge)
            );
        }
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}
