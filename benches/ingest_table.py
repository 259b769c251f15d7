#!/usr/bin/env python3
"""Markdown rows from `facegate bench ingest` JSON lines (benches/ingest.sh's output), BENCHMARKS.md §4 (d).

    benches/ingest_table.py < LOG

One row per report: streams, motion gate, stream slots missed (busy/no frame/stale), frames skipped as
still of those taken, faces found, frame -> processed p50/p99 of the streams, the gate camera's slots
missed and frame -> decision p50/p99 (decisions) and frame -> processed p99, CPU of the process, and the
1-minute load average before/after.
"""
import json
import sys


def f(x, fmt="{:.0f}"):
    return "–" if x is None else fmt.format(x)


print("| streams | motion gate | stream slots missed | still / taken | faces | stream frame p50 / p99 ms "
      "| gate slots missed | gate decision p50 / p99 ms (n) | gate frame p99 ms | CPU (cores) | load 1-min before→after |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for line in sys.stdin:
    line = line.strip()
    if not line.startswith("{"):
        continue
    r = json.loads(line)
    g = r.get("gate") or {}
    a = r["all_streams"]
    n = r["streams"]
    if n and r["detect_fps"] > 0:
        streams = (f"{a['missed']}/{a['slots']} ({a['missed_pct']:.1f}%)"
                   f" [{a['missed_busy']}/{a['missed_no_frame']}/{a['missed_stale']}]")
        still = f"{a['frames_still']}/{a['frames_taken']}"
        lat = f"{f(a['frame_latency_p50_ms'])} / {f(a['frame_latency_p99_ms'])}"
        faces = str(a["faces"])
    elif n:
        streams, still, lat, faces = f"decode only: {a['missed']}/{a['slots']}", "–", "–", "–"
    else:
        streams, still, lat, faces = "–", "–", "–", "–"
    if g:
        gate = f"{g['missed']}/{g['slots']} ({g['missed_pct']:.1f}%)"
        dec = (f"{f(g['decision_latency_p50_ms'])} / {f(g['decision_latency_p99_ms'])} ({g['decisions']})")
        gfp = f(g["frame_latency_p99_ms"])
    else:
        gate = dec = gfp = "–"
    lb, la = r.get("load_before") or [None], r.get("load_after") or [None]
    print(f"| {n} | {'on' if r['motion_skip'] else 'off'} | {streams} | {still} | {faces} | {lat} | {gate} | {dec} "
          f"| {gfp} | {r['cpu_total']:.2f} | {f(lb[0], '{:.1f}')}→{f(la[0], '{:.1f}')} |")
