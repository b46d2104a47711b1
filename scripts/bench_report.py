#!/usr/bin/env python3
"""Writes BENCHMARKS.md (to stdout) from a `scripts/bench` run directory: results.jsonl
(one line per `switchyard bench --json` run), machine.txt, notes.txt, the broker
configurations, the charts' folder (linked when a chart is there) and, verbatim, the
hand-written profile notes benchmarks/PROFILE.md. Standard library only.
Usage: bench_report.py RUN_DIR CHART_DIR"""

import json
import sys
from collections import OrderedDict
from pathlib import Path

# Targets of issue 11, as (path, qos, switchyard's variant, reference variant, ratio,
# description).
TARGETS = [
    ("1. MQTT -> MQTT", 0, "switchyard", "mosquitto-bridge", 2.0,
     ">= 2x the Mosquitto bridge at QoS 0"),
    ("1. MQTT -> MQTT", 1, "switchyard", "mosquitto-bridge", 1.5,
     ">= 1.5x the Mosquitto bridge at QoS 1"),
    ("1. MQTT -> MQTT", 0, "switchyard", "direct", 0.8,
     ">= 80% of the direct Mosquitto path (QoS 0)"),
    ("1. MQTT -> MQTT", 1, "switchyard", "direct", 0.8,
     ">= 80% of the direct Mosquitto path (QoS 1)"),
    ("2. MQTT -> AMQP", 0, "switchyard", "rabbitmq-mqtt", 1.0,
     ">= RabbitMQ's MQTT plugin (QoS 0; switchyard with confirms, the plugin without)"),
    ("2. MQTT -> AMQP", 0, "switchyard-no-confirms", "rabbitmq-mqtt", 1.0,
     ">= RabbitMQ's MQTT plugin (QoS 0, both without confirms)"),
    ("2. MQTT -> AMQP", 1, "switchyard", "rabbitmq-mqtt", 1.0,
     ">= RabbitMQ's MQTT plugin (QoS 1, confirms)"),
    ("3. fedmsg -> AMQP", 0, "switchyard", "fedmsg-migration-tools", 50.0,
     ">= 50x fedmsg-migration-tools, zero loss"),
    ("4a. ZeroMQ -> MQTT", 0, "switchyard", "direct", 0.8, ">= 80% of direct ZeroMQ"),
    ("4b. Redis -> WebSocket", 0, "switchyard", "direct", 0.8, ">= 80% of direct Redis pub/sub"),
]

# Latency the hub may add at half its maximum rate (p99 minus the direct path's p99), ms:
# 5 ms where AMQP publisher confirms are on the way, else 1 ms.
def added_target(path, qos):
    return 5.0 if path.startswith("3.") or (path.startswith("2.") and qos == 1) else 1.0

# Resident memory the hub may spend per idle connection, KiB.
IDLE_TARGET_KIB = 10


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
        if r["kind"] in ("fixed", "half"):
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


def bridge_cpu_table(results):
    """CPU time of the bridging process per message delivered, where it is a process."""
    rows = [r for r in results if "bridge_cpu_ms" in r and r["report"]["received"]]
    if not rows:
        return []
    out = ["| path | variant | QoS | size | rate/s | received | CPU ms | CPU µs per message |",
           "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        p = r["report"]
        cpu = r["bridge_cpu_ms"]
        out.append(f"| {r['path']} | {r['variant']} | {p['qos']} | {p['size']} B "
                   f"| {p['rate']:.0f} | {p['received']} | {cpu} "
                   f"| {cpu * 1000 / p['received']:.1f} |")
    return out + [""]


def added_latency(results, kinds):
    """p99 of the switchyard variant minus p99 of the direct path, same path/qos/size/rate."""
    direct = {}
    for r in results:
        if r["kind"] in kinds and r["variant"] == "direct":
            p = r["report"]
            direct[(r["path"], p["qos"], p["size"], p["rate"])] = p
    out = ["| path | QoS | size | rate/s | direct p99 ms | switchyard p99 ms | added by the hub ms "
           "| target ms | met |",
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in results:
        if r["kind"] not in kinds or r["variant"] != "switchyard":
            continue
        p = r["report"]
        d = direct.get((r["path"], p["qos"], p["size"], p["rate"]))
        if d is None:
            continue
        added = p["latency_us"]["p99"] - d["latency_us"]["p99"]
        target = added_target(r["path"], p["qos"])
        met = "yes" if added <= target * 1000 and p["lost"] == 0 else "no"
        out.append(f"| {r['path']} | {p['qos']} | {p['size']} B | {p['rate']:.0f} "
                   f"| {ms(d['latency_us']['p99'])} | {ms(p['latency_us']['p99'])} | {ms(added)} "
                   f"| {target:.0f} | {met} |")
    return out + [""]


def fanout_table(results):
    rows = [r for r in results if r["kind"] == "fanout"]
    if not rows:
        return []
    out = ["| variant | QoS | size | subscribers | msgs/s | deliveries/s | deliveries | received "
           "| lost | dup | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms |",
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
           "| ---: | ---: | ---: |"]
    for r in rows:
        p = r["report"]
        lat = p["latency_us"]
        out.append(
            f"| {r['variant']} | {p['qos']} | {p['size']} B | {p['subscribers']} | {p['rate']:.0f} "
            f"| {p['rate'] * p['subscribers']:.0f} | {p['sent'] * p['subscribers']} "
            f"| {p['received']} | {p['lost']} | {p['duplicated']} | {ms(lat['p50'])} "
            f"| {ms(lat['p90'])} | {ms(lat['p99'])} | {ms(lat['p999'])} | {ms(lat['max'])} |")
    return out + [""]


def idle_table(results):
    rows = [r for r in results if r["kind"] == "idle"]
    if not rows:
        return []
    out = ["| server | connections held | opened in s | RSS before MiB | RSS holding them MiB "
           "| per connection KiB | target | met |",
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        p = r["report"]
        if not p["connected"]:
            out.append(f"| {r['variant']} | 0 | - | - | - | - | - | not measured |")
            continue
        per = (p["rss_during_kb"] - p["rss_before_kb"]) / p["connected"]
        target = f"< {IDLE_TARGET_KIB} KiB" if r["variant"].startswith("switchyard") else "-"
        met = ("yes" if per < IDLE_TARGET_KIB else "no") if target != "-" else "-"
        out.append(f"| {r['variant']} | {p['connected']} | {p['connect_s']:.1f} "
                   f"| {p['rss_before_kb'] / 1024:.1f} | {p['rss_during_kb'] / 1024:.1f} "
                   f"| {per:.2f} | {target} | {met} |")
    return out + [""]


def sweep_maxima(results):
    """Every sweep's report, grouped by (path, variant, QoS) in the order they ran."""
    groups = OrderedDict()
    for r in results:
        if r["kind"] == "sweep" and r["report"]["runs"]:
            key = (r["path"], r["variant"], r["report"]["runs"][0]["qos"])
            groups.setdefault(key, []).append(r["report"])
    return groups


def median_sweep(reports):
    """The sweep whose maximum is the median of `reports` (the lower one of an even count),
    so that the figure reported is one a sweep really found."""
    ordered = sorted(reports, key=lambda s: s["max_sustainable_rate"])
    return ordered[(len(ordered) - 1) // 2]


def sweeps(results):
    groups = sweep_maxima(results)
    best, each = {}, {}
    out = ["| path | variant | QoS | max sustainable rate/s (median) | each sweep | p99 there ms "
           "| rates tried by the median sweep |",
           "| --- | --- | ---: | ---: | --- | ---: | --- |"]
    for (path, variant, qos), reports in groups.items():
        s = median_sweep(reports)
        best[(path, variant, qos)] = s["max_sustainable_rate"]
        each[(path, variant, qos)] = [r["max_sustainable_rate"] for r in reports]
        p99 = ms(s["best"]["latency_us"]["p99"]) if s["best"] else "-"
        tried = ", ".join(
            f"{run['rate']:.0f}{'' if run['lost'] == 0 and run['latency_us']['p99'] <= s['max_p99_us'] else ' ✗'}"
            for run in s["runs"])
        maxima = ", ".join(f"{r['max_sustainable_rate']:.0f}" for r in reports)
        out.append(f"| {path} | {variant} | {qos} | {s['max_sustainable_rate']:.0f} | {maxima} "
                   f"| {p99} | {tried} |")
    bound = next(iter(groups.values()))[0]["max_p99_us"] if groups else None
    return out + [""], best, each, bound


def targets(best, each, results):
    lost = {}
    for r in results:
        runs = r["report"]["runs"] if r["kind"] == "sweep" else [r["report"]]
        if r["kind"] in ("fixed", "half", "sweep"):
            key = (r["path"], r["variant"])
            lost[key] = lost.get(key, 0) + sum(run.get("lost", 0) for run in runs
                                               if r["kind"] != "sweep")
    out = ["| target | switchyard | reference | ratio of the medians | ratio in each round | met |",
           "| --- | ---: | ---: | ---: | --- | --- |"]
    for path, qos, variant, peer, ratio, text in TARGETS:
        ours = best.get((path, variant, qos))
        theirs = best.get((path, peer, qos))
        if ours is None or theirs is None:
            out.append(f"| {text} | - | - | - | - | not measured |")
            continue
        got = ours / theirs if theirs else float("inf")
        met = got >= ratio
        if "zero loss" in text:
            met = met and lost.get((path, variant), 0) == 0
        shown = f"{got:.2f}" if theirs else "inf (the reference passed no rate)"
        rounds = ", ".join(f"{a / b:.2f}" if b else "inf" for a, b in
                           zip(each[(path, variant, qos)], each[(path, peer, qos)]))
        out.append(f"| {text} | {ours:.0f}/s | {theirs:.0f}/s ({peer}) | {shown} | {rounds} "
                   f"| {'yes' if met else 'no'} |")
    return out + [""]


def main():
    work = Path(sys.argv[1])
    charts = Path(sys.argv[2]) if len(sys.argv) > 2 else None
    results, machine = load(work)

    def chart(name, alt):
        if charts is not None and (charts / name).exists():
            return [f"![{alt}]({charts.name}/{name})", ""]
        return []
    sweep_lines, best, each, bound = sweeps(results)
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
    runs = [r["report"] for r in results if r["kind"] in ("fixed", "half", "fanout")]
    runs += [run for r in results if r["kind"] == "sweep" for run in r["report"]["runs"]]
    lost = sum(run["lost"] for run in runs)
    lines += ["", f"{len(runs)} runs in all; {lost} messages lost across all of them. On a shared "
              "2-core machine a run that fails a sweep usually fails on p99, not loss: look at "
              "the sender's lateness in results.jsonl (`sender_lateness_ms`) before reading a "
              "failure as the path's limit."]
    notes = (work / "notes.txt").read_text().strip() if (work / "notes.txt").exists() else ""
    if notes:
        lines += ["", "Notes from this run:", ""] + [f"- {n}" for n in notes.splitlines()]
    lines += ["", "## Maximum sustainable rate (sweeps)", ""]
    if bound is not None:
        rounds = max(len(reports) for reports in sweep_maxima(results).values())
        lines += [f"The highest rate at which a 2 s run loses nothing and keeps p99 under "
                  f"{bound / 1000:.0f} ms; rates double from the first until a rate fails (two "
                  "runs in a row fail there: one stall of another process on this shared "
                  "machine is not the path's limit), then the interval is bisected to within "
                  "10%. ✗ marks a failed run. 100 B payloads. Single sweeps on this shared "
                  "machine move by up to 2x from one to the next, so every variant is swept "
                  f"{rounds} time(s), in rounds (each round sweeps every variant of a path once, "
                  "so a slow spell of the machine hits all of them), and the median is what "
                  "counts.", ""]
        lines += chart("max-rate.png", "maximum sustainable rate per path and variant")
        lines += sweep_lines
        lines += ["### Where switchyard stands against the targets of issue 11", ""]
        lines += targets(best, each, results)
    else:
        lines += ["No sweep ran (BENCH_SWEEP=0).", ""]
    lines += ["## Latency the hub adds at half its maximum rate", "",
              "Each path once at half of switchyard's measured maximum (every variant at that "
              "rate): switchyard's p99 minus the direct path's p99. Targets: under 1 ms, 5 ms "
              "where AMQP publisher confirms are on the way.", ""]
    lines += chart("latency-half-max.png", "p99 at half of the maximum rate")
    lines += added_latency(results, ("half",))
    lines += ["## Fixed rates", "",
              "Latency in milliseconds from the scheduled send time to arrival at the subscriber "
              "(runs at half the maximum rate included).", ""]
    lines += fixed_tables(results)
    lines += ["### Latency the hub adds at the fixed rates (p99, same rate, same run)", ""]
    lines += added_latency(results, ("fixed",))
    cpu = bridge_cpu_table(results)
    if cpu:
        lines += ["## CPU the bridge spends per message", "",
                  "User + system CPU time of the process doing the bridging (the switchyard hub, "
                  "the peer Mosquitto, fedmsg-migration-tools) over each fixed-rate run (settle "
                  "and drain included), per message delivered. RabbitMQ's MQTT plugin runs "
                  "inside the broker and the direct paths have no bridge, so they have no row. "
                  "Clock ticks are 10 ms, so short runs at low rates are coarse.", ""]
        lines += cpu
    fan = fanout_table(results)
    idle = idle_table(results)
    if fan or idle:
        lines += ["## 5. Fan-out and idle connections", ""]
    if fan:
        lines += ["One publisher; every subscriber connection should get every message. Latency "
                  "is per delivery, from the scheduled send time; `lost` counts deliveries.", ""]
        lines += chart("fanout.png", "fan-out latency")
        lines += fan
    if idle:
        lines += ["Idle connections: CONNECT (or the WebSocket handshake) and one subscription "
                  "each, then silence, held by two load-generator processes (each under its own "
                  "open-file limit); the server's resident memory (VmRSS) before and while "
                  "they are held, measured first thing after start while the heap is fresh.",
                  ""]
        lines += chart("idle-memory.png", "memory per idle connection")
        lines += idle
    profile = Path(__file__).resolve().parent.parent / "benchmarks" / "PROFILE.md"
    if profile.exists():
        lines += [profile.read_text().rstrip(), ""]
    lines += [
        "## Commands",
        "",
        "Each measurement, as run (ports are the free ones of that run):",
        "",
        "```sh",
    ]
    lines += [r["command"] for r in results]
    lines += ["```", "", "Configurations used:", ""]
    for name, title in [("central.conf", "central Mosquitto"), ("peer.conf", "peer Mosquitto bridge"),
                        ("rabbitmq/rabbitmq.conf", "private RabbitMQ node"),
                        ("fmt/fedora-messaging.toml", "fedmsg-migration-tools (fedora-messaging)"),
                        ("fmt/fedmsg.py", "fedmsg-migration-tools (fedmsg)"),
                        ("fmt/command.txt", "fedmsg-migration-tools (command)"),
                        ("hub.toml", "switchyard hub")]:
        path = work / name
        if path.exists():
            lines += [f"{title} (`{name}`):", "", "```", path.read_text().rstrip(), "```", ""]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
