"""Reads the runs (one JSON line per peer run; gpuq's as `loadtests --json peer` rows) and
prints each system's enqueue and drain rates as median (range), with gpuq's ratios to
the best peer. Used by run.sh."""

import json
import statistics
import sys
from collections import defaultdict

jobs = sys.argv[1]
figures = defaultdict(lambda: defaultdict(list))
text = sys.stdin.read()
decoder = json.JSONDecoder()
at = 0
while at < len(text):
    while at < len(text) and text[at].isspace():
        at += 1
    if at >= len(text):
        break
    value, at = decoder.raw_decode(text, at)
    if isinstance(value, list):  # gpuq: loadtests rows
        for row in value:
            case, _, metric = row["case"].rpartition(": ")
            if row["unit"] == "cmds":
                figures["gpuq: " + row["case"]]["value"].append(row["value"])
            elif row["unit"] == "ms":  # "W worker(s) x C: pickup p50"
                figures["gpuq " + case][metric.replace(" ", "_")].append(row["value"])
            elif row["unit"] == "jobs/s":
                figures["gpuq " + case][metric].append(row["value"])
    else:
        f = figures[value["peer"]]
        f["enqueue"].append(value["enqueue_per_s"])
        f["drain"].append(value["drain_per_s"])
        for p in ("p50", "p99"):
            if f"pickup_{p}_ms" in value:
                f[f"pickup_{p}"].append(value[f"pickup_{p}_ms"])


def cell(values, digits=0):
    if not values:
        return "–"
    m = statistics.median(values)
    return f"{m:,.{digits}f} ({min(values):,.{digits}f}–{max(values):,.{digits}f})"


print(f"\n{jobs} no-op jobs, enqueued in bulk while the workers run; jobs/s, median (range);")
print("then pickup on the idle workers, one job at a time; ms, median (range)\n")
print("| system | enqueue | drain (enqueue start to last done) | pickup p50 | pickup p99 |")
print("|---|---|---|---|---|")
for name in sorted(figures, key=lambda n: (not n.startswith("gpuq"), n)):
    f = figures[name]
    if "value" in f:
        continue
    print(f"| {name} | {cell(f['enqueue'])} | {cell(f['drain'])} | {cell(f['pickup_p50'], 2)} | {cell(f['pickup_p99'], 2)} |")
for name, f in figures.items():
    if "value" in f:
        print(f"\n{name}: {statistics.median(f['value']):.2f}")

peers = {n: f for n, f in figures.items() if not n.startswith("gpuq")}
if peers:
    def best(metric):
        return max(((statistics.median(f[metric]), n) for n, f in peers.items() if f[metric]), default=(None, None))
    def least(metric):
        return min(((statistics.median(f[metric]), n) for n, f in peers.items() if f[metric]), default=(None, None))
    for metric in ("pickup_p50", "pickup_p99"):
        peer_value, peer_name = least(metric)
        ours = [statistics.median(f[metric]) for n, f in figures.items()
                if n.startswith("gpuq") and "1 worker(s)" in n and f.get(metric)]
        if peer_value and ours:
            print(f"\ngpuq 1 worker {metric} / best peer ({peer_name}): {min(ours) / peer_value:.2f}")
    for metric, gpuq_case in [("enqueue", "library"), ("enqueue", "scheduler batch"), ("drain", "1 worker(s)")]:
        peer_value, peer_name = best(metric)
        # The peers enqueue while their workers run, so gpuq's no-worker row is left out.
        ours = [statistics.median(f[metric]) for n, f in figures.items()
                if n.startswith("gpuq") and gpuq_case in n and "no worker" not in n and f.get(metric)]
        if peer_value and ours:
            print(f"\ngpuq {gpuq_case} {metric} / best peer ({peer_name}): {max(ours) / peer_value:.2f}")
