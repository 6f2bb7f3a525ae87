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
            if row["unit"] != "jobs/s":
                if row["unit"] == "cmds":
                    figures["gpuq: " + row["case"]]["value"].append(row["value"])
                continue
            case, _, metric = row["case"].rpartition(": ")
            figures["gpuq " + case][metric].append(row["value"])
    else:
        figures[value["peer"]]["enqueue"].append(value["enqueue_per_s"])
        figures[value["peer"]]["drain"].append(value["drain_per_s"])


def cell(values):
    if not values:
        return "–"
    m = statistics.median(values)
    return f"{m:,.0f} ({min(values):,.0f}–{max(values):,.0f})"


print(f"\n{jobs} no-op jobs, enqueued in bulk while the workers run; jobs/s, median (range)\n")
print("| system | enqueue | drain (enqueue start to last done) |")
print("|---|---|---|")
for name in sorted(figures, key=lambda n: (not n.startswith("gpuq"), n)):
    f = figures[name]
    if "value" in f:
        continue
    print(f"| {name} | {cell(f['enqueue'])} | {cell(f['drain'])} |")
for name, f in figures.items():
    if "value" in f:
        print(f"\n{name}: {statistics.median(f['value']):.2f}")

peers = {n: f for n, f in figures.items() if not n.startswith("gpuq")}
if peers:
    def best(metric):
        return max(((statistics.median(f[metric]), n) for n, f in peers.items() if f[metric]), default=(None, None))
    for metric, gpuq_case in [("enqueue", "library"), ("enqueue", "scheduler batch"), ("drain", "1 worker(s)")]:
        peer_value, peer_name = best(metric)
        ours = [statistics.median(f[metric]) for n, f in figures.items()
                if n.startswith("gpuq") and gpuq_case in n and f.get(metric)]
        if peer_value and ours:
            print(f"\ngpuq {gpuq_case} {metric} / best peer ({peer_name}): {max(ours) / peer_value:.2f}")
