#!/usr/bin/env python3
"""Writes BENCHMARKS.md (to stdout) from a `scripts/bench` run directory: results.jsonl
(one line per `switchyard bench --json` run), machine.txt, and the broker configurations.
Standard library only."""

import json
import sys
from collections import OrderedDict
from pathlib import Path

# Targets of issue 11, as (path, qos or None, peer variant, ratio, description).
TARGETS = [
    ("1. MQTT -> MQTT", 0, "mosquitto-bridge", 2.0, ">= 2x the Mosquitto bridge at QoS 0"),
    ("1. MQTT -> MQTT", 1, "mosquitto-bridge", 1.5, ">= 1.5x the Mosquitto bridge at QoS 1"),
    ("1. MQTT -> MQTT", 0, "direct", 0.8, ">= 80% of the direct Mosquitto path (QoS 0)"),
    ("1. MQTT -> MQTT", 1, "direct", 0.8, ">= 80% of the direct Mosquitto path (QoS 1)"),
    ("4a. ZeroMQ -> MQTT", 0, "direct", 0.8, ">= 80% of direct ZeroMQ"),
    ("4b. Redis -> WebSocket", 0, "direct", 0.8, ">= 80% of direct Redis pub/sub"),
]


def ms(micros):
    return f"{micros / 1000:.2f}"


def load(work):
    results = [json.loads(line) for line in (work / "results.jsonl").read_text().splitlines() if line]
    machine = OrderedDict()
    for line in (work / "machine.txt").read_text().splitlines():
        key, _, value = line.partition("=")
        machine[key] = value
    return results, machine


def fixed_tables(results):
    out = []
    by_path = OrderedDict()
    for r in results:
        if r["kind"] == "fixed":
            by_path.setdefault(r["path"], []).append(r)
    for path, rows in by_path.items():
        out.append(f"### {path}\n")
        out.append("| variant | QoS | size | rate/s | sent | received | lost | dup | reord "
                   "| p50 ms | p90 ms | p99 ms | p99.9 ms | max ms |")
        out.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
                   "| ---: | ---: | ---: |")
        for r in rows:
            p = r["report"]
            lat = p["latency_us"]
            out.append(
                f"| {r['variant']} | {p['qos']} | {p['size']} B | {p['rate']:.0f} | {p['sent']} "
                f"| {p['received']} | {p['lost']} | {p['duplicated']} | {p['reordered']} "
                f"| {ms(lat['p50'])} | {ms(lat['p90'])} | {ms(lat['p99'])} | {ms(lat['p999'])} "
                f"| {ms(lat['max'])} |")
        out.append("")
    return out


def added_latency(results):
    """p99 of the switchyard variant minus p99 of the direct path, same path/qos/size/rate."""
    direct = {}
    for r in results:
        if r["kind"] == "fixed" and r["variant"] == "direct":
            p = r["report"]
            direct[(r["path"], p["qos"], p["size"], p["rate"])] = p
    out = ["| path | QoS | size | rate/s | direct p99 ms | switchyard p99 ms | added by the hub ms |",
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        if r["kind"] != "fixed" or r["variant"] != "switchyard":
            continue
        p = r["report"]
        d = direct.get((r["path"], p["qos"], p["size"], p["rate"]))
        if d is None:
            continue
        added = p["latency_us"]["p99"] - d["latency_us"]["p99"]
        out.append(f"| {r['path']} | {p['qos']} | {p['size']} B | {p['rate']:.0f} "
                   f"| {ms(d['latency_us']['p99'])} | {ms(p['latency_us']['p99'])} | {ms(added)} |")
    return out + [""]


def sweeps(results):
    rows = [r for r in results if r["kind"] == "sweep"]
    best = {}
    out = ["| path | variant | QoS | max sustainable rate/s | p99 there ms | rates tried |",
           "| --- | --- | ---: | ---: | ---: | --- |"]
    for r in rows:
        s = r["report"]
        qos = s["runs"][0]["qos"] if s["runs"] else 0
        best[(r["path"], r["variant"], qos)] = s["max_sustainable_rate"]
        p99 = ms(s["best"]["latency_us"]["p99"]) if s["best"] else "-"
        tried = ", ".join(
            f"{run['rate']:.0f}{'' if run['lost'] == 0 and run['latency_us']['p99'] <= s['max_p99_us'] else ' ✗'}"
            for run in s["runs"])
        out.append(f"| {r['path']} | {r['variant']} | {qos} | {s['max_sustainable_rate']:.0f} "
                   f"| {p99} | {tried} |")
    return out + [""], best, (rows[0]["report"]["max_p99_us"] if rows else None)


def targets(best):
    out = ["| target | switchyard | reference | ratio | met |", "| --- | ---: | ---: | ---: | --- |"]
    for path, qos, peer, ratio, text in TARGETS:
        ours = best.get((path, "switchyard", qos))
        theirs = best.get((path, peer, qos))
        if ours is None or theirs is None:
            out.append(f"| {text} | - | - | - | not measured |")
            continue
        got = ours / theirs if theirs else float("inf")
        out.append(f"| {text} | {ours:.0f}/s | {theirs:.0f}/s ({peer}) | {got:.2f} "
                   f"| {'yes' if got >= ratio else 'no'} |")
    return out + [""]


def main():
    work = Path(sys.argv[1])
    results, machine = load(work)
    sweep_lines, best, bound = sweeps(results)
    lines = [
        "# Benchmarks",
        "",
        "Written by `scripts/bench` (do not edit by hand; run it again). Every figure below comes",
        "from one run of the script on the machine described here, all paths in the same run,",
        "release build. Load is open-loop: `switchyard bench` sends on a fixed schedule and",
        "measures latency from each message's *scheduled* send time into an HdrHistogram, so a",
        "stall is charged as latency instead of slowing the sender (no coordinated omission).",
        "Everything runs on 127.0.0.1 and shares the machine's cores: brokers, hub and the",
        "load generator compete for CPU, as they would on one small host.",
        "",
        "## Machine and versions",
        "",
    ]
    for key, value in machine.items():
        lines.append(f"- {key}: {value}")
    runs = [r["report"] for r in results if r["kind"] == "fixed"]
    runs += [run for r in results if r["kind"] == "sweep" for run in r["report"]["runs"]]
    lost = sum(run["lost"] for run in runs)
    lines += ["", f"{len(runs)} runs in all; {lost} messages lost across all of them. On a shared "
              "2-core machine a run that fails a sweep usually fails on p99, not loss: look at "
              "the sender's lateness in results.jsonl (`sender_lateness_ms`) before reading a "
              "failure as the path's limit."]
    lines += ["", "## Maximum sustainable rate (sweeps)", ""]
    if bound is not None:
        lines += [f"The highest rate at which a {'2 s'} run loses nothing and keeps p99 under "
                  f"{bound / 1000:.0f} ms; rates double from the first until a run fails, then the",
                  "interval is bisected to within 10%. ✗ marks a failed run. 100 B payloads.", ""]
        lines += sweep_lines
        lines += ["### Where switchyard stands against the targets of issue 11", ""]
        lines += targets(best)
    else:
        lines += ["No sweep ran (BENCH_SWEEP=0).", ""]
    lines += ["## Fixed rates", "",
              "Latency in milliseconds from the scheduled send time to arrival at the subscriber.",
              ""]
    lines += fixed_tables(results)
    lines += ["## Latency the hub adds (p99, same rate, same run)", ""]
    lines += added_latency(results)
    lines += [
        "## Not measured yet",
        "",
        "- Path 2 (MQTT -> AMQP versus RabbitMQ's `rabbitmq_mqtt` plugin) and path 3 (fedmsg ->",
        "  AMQP versus `fedmsg-migration-tools` 0.1.2): `switchyard bench` speaks AMQP (lapin,",
        "  confirms at QoS 1) but the suite does not yet start a private RabbitMQ with the MQTT",
        "  plugin on its own port, nor the fedmsg-migration-tools virtualenv.",
        "- Path 5 (fan-out to 10,000 WebSocket and MQTT subscribers; idle connections and hub",
        "  memory per idle connection).",
        "- Charts (PNG) and the profile of the three biggest costs.",
        "",
        "## Commands",
        "",
        "Each measurement, as run (ports are the free ones of that run):",
        "",
        "```sh",
    ]
    lines += [r["command"] for r in results]
    lines += ["```", "", "Configurations used:", ""]
    for name, title in [("central.conf", "central Mosquitto"), ("peer.conf", "peer Mosquitto bridge"),
                        ("hub.toml", "switchyard hub")]:
        path = work / name
        if path.exists():
            lines += [f"{title} (`{name}`):", "", "```", path.read_text().rstrip(), "```", ""]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
