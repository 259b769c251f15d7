#!/usr/bin/env python3
"""Markdown rows from `facegate bench lock --gate …` JSON lines, BENCHMARKS.md §9.2.

    benches/lock_table.py < LOG

One row per phase of each report: the gate camera's slots missed, frame -> processed p50/p99, frame ->
decision p50/p99 (decisions), faces found, and the phase's p99 over the mean of the two quiet phases'.
"""
import json
import sys


def f(x):
    return "–" if x is None else f"{x:.0f}"


PHASES = [
    ("quiet", "quiet (first)"),
    ("reload", "100k reloads, now (built off the lock)"),
    ("enrol", "4 enrolments, now (models off the lock)"),
    ("reload_under_lock", "reloads, before (rebuilt under the lock)"),
    ("enrol_under_lock", "4 enrolments, before (models under the lock)"),
    ("quiet_after", "quiet (last)"),
]

print("| phase | gate slots missed | frame → processed p50 / p99 ms | frame p99 / quiet | "
      "frame → decision p50 / p99 ms (n) | decision p99 / quiet | faces |")
print("|---|---|---|---|---|---|---|")
for line in sys.stdin:
    line = line.strip()
    if not line.startswith("{"):
        continue
    r = json.loads(line)
    g = r.get("gate")
    if not g:
        continue
    q = [g["quiet"], g["quiet_after"]]

    def base(key):
        v = [p[key] for p in q if p.get(key) is not None]
        return sum(v) / len(v) if v else None

    for key, name in PHASES:
        p = g.get(key)
        if not p:
            continue
        fb, db = base("frame_latency_p99_ms"), base("decision_latency_p99_ms")
        fr = p["frame_latency_p99_ms"] / fb if fb and p["frame_latency_p99_ms"] else None
        dr = p["decision_latency_p99_ms"] / db if db and p["decision_latency_p99_ms"] else None
        print(f"| {name} | {p['missed']}/{p['slots']} ({p['missed_pct']:.1f}%) "
              f"| {f(p['frame_latency_p50_ms'])} / {f(p['frame_latency_p99_ms'])} "
              f"| {'–' if fr is None else f'{fr:.2f}'} "
              f"| {f(p['decision_latency_p50_ms'])} / {f(p['decision_latency_p99_ms'])} ({p['decisions']}) "
              f"| {'–' if dr is None else f'{dr:.2f}'} | {p['faces']} |")
