#!/usr/bin/env python3
"""Draws the charts of BENCHMARKS.md from a `scripts/bench` run directory
(results.jsonl) into a folder of PNG files. Needs matplotlib (scripts/bench installs it
into a virtualenv of its own). Usage: bench_charts.py RUN_DIR CHART_DIR"""

import json
import sys
from collections import OrderedDict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from bench_report import median_sweep, sweep_maxima  # noqa: E402

# One colour per kind of variant, the same in every chart.
COLOURS = {"direct": "#9e9e9e", "switchyard": "#1f77b4"}
PEER_COLOUR = "#ff7f0e"
# A rate of 0 drawn on a log scale: a stub this high, labelled 0.
ZERO = 0.5


def colour(variant):
    for key, value in COLOURS.items():
        if variant.startswith(key):
            return value
    return PEER_COLOUR


def load(work):
    lines = (work / "results.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line]


def grouped_bars(ax, groups, log=False, spread=None):
    """groups: OrderedDict label -> OrderedDict variant -> value; spread, if given:
    (label, variant) -> every value measured, drawn as a whisker from lowest to highest."""
    variants = []
    for values in groups.values():
        for variant in values:
            if variant not in variants:
                variants.append(variant)
    width = 0.8 / max(len(variants), 1)
    for i, variant in enumerate(variants):
        xs, ys, low, high = [], [], [], []
        for j, (label, values) in enumerate(groups.items()):
            if variant in values:
                xs.append(j + (i - (len(variants) - 1) / 2) * width)
                ys.append(values[variant])
                measured = (spread or {}).get((label, variant), [values[variant]])
                low.append(values[variant] - min(measured))
                high.append(max(measured) - values[variant])
        bars = ax.bar(xs, ys, width, label=variant, color=colour(variant),
                      edgecolor="black", linewidth=0.4)
        if spread:
            ax.errorbar(xs, ys, yerr=[low, high], fmt="none", ecolor="black", elinewidth=0.8,
                        capsize=2)
        for bar, y, above in zip(bars, ys, high):
            text = "0" if y <= ZERO else f"{y:,.0f}" if y >= 10 else f"{y:.2f}"
            ax.annotate(text, (bar.get_x() + bar.get_width() / 2, y + above),
                        ha="center", va="bottom", fontsize=6, rotation=90,
                        xytext=(0, 2), textcoords="offset points")
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(list(groups), fontsize=7)
    if log:
        ax.set_yscale("log")
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)


def save(fig, out, name):
    """Writes `fig` as `out/name` and returns `name`."""
    fig.tight_layout()
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    return name


def log_bars(groups, out, name, ylabel, title, spread=None):
    """One bar per variant in each group, on a log scale; None when there is nothing."""
    if not groups:
        return None
    fig, ax = plt.subplots(figsize=(11, 5))
    grouped_bars(ax, groups, log=True, spread=spread)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return save(fig, out, name)


def max_rates(results, out):
    groups, spread = OrderedDict(), {}
    for (path, variant, qos), reports in sweep_maxima(results).items():
        label = f"{path}\nQoS {qos}"
        groups.setdefault(label, OrderedDict())[variant] = max(
            median_sweep(reports)["max_sustainable_rate"], ZERO)
        spread[(label, variant)] = [max(r["max_sustainable_rate"], ZERO) for r in reports]
    return log_bars(groups, out, "max-rate.png", "messages/s (log scale)",
                    "Highest rate with no loss and p99 under the sweep's bound, 100 B "
                    "(median of the sweeps; whiskers: lowest and highest)", spread)


def half_latency(results, out):
    groups = OrderedDict()
    for r in results:
        if r["kind"] != "half":
            continue
        p = r["report"]
        if p["size"] != 100:
            continue
        label = f"{r['path']}\nQoS {p['qos']}, {p['rate']:,.0f}/s"
        groups.setdefault(label, OrderedDict())[r["variant"]] = p["latency_us"]["p99"] / 1000
    return log_bars(groups, out, "latency-half-max.png", "p99 latency, ms (log scale)",
                    "p99 latency at half of switchyard's maximum rate, every variant at that "
                    "rate, 100 B")


def fanout(results, out):
    groups = OrderedDict()
    for r in results:
        if r["kind"] != "fanout":
            continue
        p = r["report"]
        label = f"{r['variant']}\nQoS {p['qos']}, {p['size']} B"
        lat = p["latency_us"]
        groups[label] = OrderedDict(
            (name, lat[key] / 1000) for name, key in
            [("p50", "p50"), ("p90", "p90"), ("p99", "p99"), ("max", "max")])
    if not groups:
        return None
    fig, ax = plt.subplots(figsize=(11, 5))
    # Percentiles, not variants, are the bars here: colour them by rank instead.
    names = ["p50", "p90", "p99", "max"]
    shades = ["#c6dbef", "#6baed6", "#2171b5", "#08306b"]
    width = 0.8 / len(names)
    for i, (name, shade) in enumerate(zip(names, shades)):
        xs = [j + (i - 1.5) * width for j in range(len(groups))]
        ax.bar(xs, [values[name] for values in groups.values()], width, label=name, color=shade,
               edgecolor="black", linewidth=0.4)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(list(groups), fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("latency per delivery, ms (log scale)")
    subscribers = next(r["report"]["subscribers"] for r in results if r["kind"] == "fanout")
    ax.set_title(f"Fan-out: each message to {subscribers:,} subscribers")
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    return save(fig, out, "fanout.png")


def idle(results, out):
    groups = OrderedDict()
    for r in results:
        if r["kind"] != "idle":
            continue
        p = r["report"]
        if p["connected"]:
            per = (p["rss_during_kb"] - p["rss_before_kb"]) / p["connected"]
            groups[f"{r['variant']}\n{p['connected']:,} connections"] = OrderedDict(
                [(r["variant"], per)])
    if not groups:
        return None
    fig, ax = plt.subplots(figsize=(8, 4))
    labels = list(groups)
    values = [next(iter(v.values())) for v in groups.values()]
    bars = ax.bar(range(len(labels)), values,
                  color=[colour(next(iter(v))) for v in groups.values()],
                  edgecolor="black", linewidth=0.4)
    for bar, value in zip(bars, values):
        ax.annotate(f"{value:.1f} KiB", (bar.get_x() + bar.get_width() / 2, value), ha="center",
                    va="bottom", fontsize=8, xytext=(0, 2), textcoords="offset points")
    ax.axhline(10, color="red", linestyle="--", linewidth=0.8, label="target: 10 KiB")
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylabel("resident memory per idle connection, KiB")
    ax.set_title("Idle connections: server RSS growth / connections")
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    return save(fig, out, "idle-memory.png")


def main():
    work, out = Path(sys.argv[1]), Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    results = load(work)
    for chart in (max_rates, half_latency, fanout, idle):
        name = chart(results, out)
        if name:
            print(f"wrote {out / name}", file=sys.stderr)


if __name__ == "__main__":
    main()
