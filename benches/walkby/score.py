#!/usr/bin/env python3
"""Score gate decisions on a walk-up video against its ground truth (issue 9, item 4).

    score.py TRUTH.json EVENTS.jsonl [--label NAME] [--json] [--list]
    score.py --table RESULT.json [RESULT.json ...]     (one row per result of `score.py --json`)

EVENTS.jsonl: one JSON event per line as `facegate replay` prints them (lines that are not JSON
objects with a `kind` are ignored and counted: rtspsrc may print to stdout). Needed fields: kind,
id, revision, subject {kind,id,name} | null, score, faces, video_t; seen_for_s is used when present.

Attribution. A walk-up's window is [start_t, end_t + 2.5 s] (the track timeout is 2 s, so a
decision at a track's end comes a little after the face vanishes). An event goes to:
  1. the walk-up of an earlier event with the same id (a revision stays with its decision);
  2. else the one window containing video_t; when windows overlap (the gaps between walk-ups are
     shorter than 2.5 s), the walk-up whose face was on screen when the track was first seen
     (video_t - seen_for_s within [start_t - 0.5, end_t + 0.5]); without seen_for_s, the walk-up of
     an earlier event of the same track_id, else the earlier walk-up;
  3. else it is "unattributed" (counted and listed).
Primary events: every kind except loitering and camera_*.

Metrics (counts of walk-ups):
  owner_pass_ok        owner walk-ups with an owner_pass for the walker's owner_id (any revision)
  owner_alerted_first  owner walk-ups whose first primary event (revision 0) is a `stranger` alert
  owner_alerted_any    owner walk-ups with a `stranger` alert at any point (e.g. a pass, then the
                       track splits and the rest of the walk-up is alerted as a stranger)
  wrong_pass           walk-ups with an owner_pass naming someone other than the walker (any
                       stranger pass, or owner A passed as owner B); listed with score and faces
  stranger_alerted     stranger walk-ups with a stranger/watchlist alert (not a `repeat`) and no owner_pass
  repeat               walk-ups with a decision recorded as a `repeat` (within the repeat-alert cooldown
                       of the same decision for the same person: recorded, not alerted, no open)
  spoof                walk-ups with a spoof event (expected with liveness on: pasted photos)
  silent               walk-ups with no primary event; undecided_only: only `undecided` events
  several_decisions    walk-ups with more than one distinct event id among primary events
Time to decision per kind: for each walk-up, the first event of that kind minus start_t (and its
seen_for_s); p50/p99 by nearest rank.
"""
import argparse
import json
import math
import sys

WINDOW_AFTER_S = 2.5
NON_PRIMARY = ("loitering",)


def is_primary(kind):
    return kind not in NON_PRIMARY and not kind.startswith("camera_")


def read_events(path):
    events, skipped = [], 0
    with open(path) as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                e = json.loads(line)
            except ValueError:
                skipped += 1
                continue
            if not isinstance(e, dict) or "kind" not in e:
                skipped += 1
                continue
            events.append(e)
    return events, skipped


def attribute(walkups, events):
    """Return (per walk-up list of events, unattributed list, ambiguous count)."""
    per = {w["index"]: [] for w in walkups}
    by_id, by_track = {}, {}
    unattributed, ambiguous = [], 0
    wins = [(w["index"], w["start_t"], w["end_t"]) for w in walkups if w["start_t"] is not None]
    for e in events:
        t = e.get("video_t")
        if t is None:
            raise SystemExit("score.py: an event has no video_t (a binary too old for this bench?): "
                             + json.dumps(e)[:200])
        idx = by_id.get(e.get("id"))
        if idx is None:
            cands = [(i, s, end) for i, s, end in wins if s <= t <= end + WINDOW_AFTER_S]
            if len(cands) == 1:
                idx = cands[0][0]
            elif len(cands) > 1:
                ambiguous += 1
                seen = e.get("seen_for_s")
                if seen is not None:
                    first = t - seen
                    hit = [i for i, s, end in cands if s - 0.5 <= first <= end + 0.5]
                    idx = hit[0] if hit else None
                if idx is None and e.get("track_id") in by_track:
                    tr = by_track[e.get("track_id")]
                    idx = tr if any(i == tr for i, _, _ in cands) else None
                if idx is None:
                    idx = cands[0][0]
        if idx is None:
            unattributed.append(e)
            continue
        per[idx].append(e)
        if e.get("id") is not None:
            by_id.setdefault(e["id"], idx)
        if e.get("track_id") is not None:
            by_track[e["track_id"]] = idx
    return per, unattributed, ambiguous


def pct(values, p):
    if not values:
        return None
    v = sorted(values)
    return v[max(0, math.ceil(p * len(v)) - 1)]


def subject_id(e):
    s = e.get("subject")
    return s.get("id") if isinstance(s, dict) else None


def score(truth, events):
    walkups = truth["walkups"]
    per, unattributed, ambiguous = attribute(walkups, events)
    owners = [w for w in walkups if w["role"] == "owner"]
    strangers = [w for w in walkups if w["role"] != "owner"]
    m = {
        "walkups": len(walkups), "owner_walkups": len(owners), "stranger_walkups": len(strangers),
        "owner_pass_ok": 0, "owner_alerted_first": 0, "owner_alerted_any": 0, "wrong_pass": 0, "stranger_alerted": 0,
        "spoof": 0, "silent": 0, "undecided_only": 0, "several_decisions": 0, "repeat": 0,
        "events": len(events), "unattributed": len(unattributed), "ambiguous_windows": ambiguous,
    }
    wrong, per_walkup = [], []
    ttd = {}
    for w in walkups:
        evs = [e for e in per[w["index"]] if is_primary(e["kind"])]
        kinds = [e["kind"] for e in evs]
        first = next((e for e in evs if e.get("revision", 0) == 0), None)
        passes = [e for e in evs if e["kind"] == "owner_pass"]
        ok_pass = w["role"] == "owner" and any(subject_id(e) == w["owner_id"] for e in passes)
        bad = [e for e in passes if w["role"] != "owner" or subject_id(e) != w["owner_id"]]
        row = {"index": w["index"], "identity": w["identity"], "role": w["role"],
               "kinds": kinds, "first": first["kind"] if first else None}
        if w["role"] == "owner":
            m["owner_pass_ok"] += ok_pass
            m["owner_alerted_first"] += bool(first and first["kind"] == "stranger")
            m["owner_alerted_any"] += "stranger" in kinds
        else:
            alerts = [e for e in evs if e["kind"] in ("stranger", "watchlist") and not e.get("repeat")]
            m["stranger_alerted"] += bool(alerts and not passes)
        if bad:
            m["wrong_pass"] += 1
            for e in bad:
                wrong.append({"walkup": w["index"], "walker": w["identity"], "role": w["role"],
                              "passed_as": subject_id(e), "score": e.get("score"),
                              "faces": e.get("faces"), "revision": e.get("revision"),
                              "video_t": e.get("video_t")})
        m["spoof"] += "spoof" in kinds
        m["silent"] += not evs
        m["repeat"] += any(e.get("repeat") for e in evs)
        m["undecided_only"] += bool(evs) and all(k == "undecided" for k in kinds)
        m["several_decisions"] += len({e.get("id") for e in evs}) > 1
        if w["start_t"] is not None:
            for k in dict.fromkeys(kinds):
                e = next(x for x in evs if x["kind"] == k)
                d = ttd.setdefault(k, {"video": [], "seen_for": []})
                d["video"].append(e["video_t"] - w["start_t"])
                if e.get("seen_for_s") is not None:
                    d["seen_for"].append(e["seen_for_s"])
        per_walkup.append(row)
    m["time_to_decision_s"] = {
        k: {"n": len(d["video"]), "p50": pct(d["video"], 0.5), "p99": pct(d["video"], 0.99),
            "seen_for_p50": pct(d["seen_for"], 0.5), "seen_for_p99": pct(d["seen_for"], 0.99)}
        for k, d in sorted(ttd.items())}
    m["wrong_passes"] = wrong
    m["unattributed_events"] = [{k: e.get(k) for k in ("kind", "id", "revision", "video_t", "subject",
                                                       "score", "faces")} for e in unattributed]
    m["per_walkup"] = per_walkup
    return m


def fmt_t(d, k):
    x = d.get(k)
    return "-" if x is None else f"{x:.1f}"


def print_report(label, m, show_list):
    print(f"== {label}")
    print(f"owners passed (right owner)     {m['owner_pass_ok']}/{m['owner_walkups']}")
    print(f"owners alerted as stranger 1st  {m['owner_alerted_first']}/{m['owner_walkups']}")
    print(f"owners alerted as stranger any  {m['owner_alerted_any']}/{m['owner_walkups']}")
    print(f"wrong-person passes             {m['wrong_pass']} walk-ups")
    for w in m["wrong_passes"]:
        print(f"    walk-up {w['walkup']} {w['role']} {w['walker']} passed as {w['passed_as']}"
              f" score {w['score']} faces {w['faces']} rev {w['revision']} t {w['video_t']}")
    print(f"strangers alerted               {m['stranger_alerted']}/{m['stranger_walkups']}")
    print(f"spoof walk-ups                  {m['spoof']}/{m['walkups']}")
    print(f"silent / undecided only         {m['silent']} / {m['undecided_only']}")
    print(f"with a repeat (not alerted)     {m['repeat']}")
    print(f"several decisions (track split) {m['several_decisions']}")
    print(f"events {m['events']}, unattributed {m['unattributed']}, ambiguous windows "
          f"{m['ambiguous_windows']}")
    for e in m["unattributed_events"]:
        print(f"    unattributed {e['kind']} t {e['video_t']} subject {e['subject']}")
    for k, d in m["time_to_decision_s"].items():
        print(f"time to {k:12s} n {d['n']:2d}  p50 {fmt_t(d, 'p50')} s  p99 {fmt_t(d, 'p99')} s"
              f"  (seen_for p50 {fmt_t(d, 'seen_for_p50')} p99 {fmt_t(d, 'seen_for_p99')})")
    if show_list:
        for r in m["per_walkup"]:
            print(f"  {r['index']:3d} {r['role']:8s} {r['identity']:24s} {' '.join(r['kinds']) or '-'}")


TABLE_COLS = [
    ("pass", lambda m: f"{m['owner_pass_ok']}/{m['owner_walkups']}"),
    ("alert1st", lambda m: f"{m['owner_alerted_first']}"),
    ("alertany", lambda m: f"{m.get('owner_alerted_any', '-')}"),
    ("wrong", lambda m: f"{m['wrong_pass']}"),
    ("str.alert", lambda m: f"{m['stranger_alerted']}/{m['stranger_walkups']}"),
    ("spoof", lambda m: f"{m['spoof']}"),
    ("silent", lambda m: f"{m['silent']}"),
    ("undec", lambda m: f"{m['undecided_only']}"),
    ("split", lambda m: f"{m['several_decisions']}"),
    ("repeat", lambda m: f"{m.get('repeat', '-')}"),
    ("unattr", lambda m: f"{m['unattributed']}"),
    ("pass p50/p99", lambda m: ttd(m, "owner_pass")),
    ("stranger p50/p99", lambda m: ttd(m, "stranger")),
    ("run s", lambda m: "-" if m.get("run_s") is None else f"{m['run_s']:.0f}"),
]


def ttd(m, kind):
    d = m["time_to_decision_s"].get(kind)
    return "-" if not d else f"{d['p50']:.1f}/{d['p99']:.1f}"


def print_table(results):
    rows = [[r.get("label", "?")] + [f(r) for _, f in TABLE_COLS] for r in results]
    head = ["run"] + [c for c, _ in TABLE_COLS]
    widths = [max(len(x[i]) for x in rows + [head]) for i in range(len(head))]
    print("  ".join(h.ljust(wd) for h, wd in zip(head, widths)))
    for r in rows:
        print("  ".join(c.ljust(wd) for c, wd in zip(r, widths)))


def main(argv=None):
    ap = argparse.ArgumentParser(description="walk-up benchmark scorer")
    ap.add_argument("files", nargs="+", help="TRUTH.json EVENTS.jsonl, or result JSONs with --table")
    ap.add_argument("--label", default=None)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--list", action="store_true", help="also list each walk-up's events")
    ap.add_argument("--table", action="store_true", help="files are results of --json: one table")
    ap.add_argument("--run-s", type=float, default=None, help="wall time of the run, carried along")
    args = ap.parse_args(argv)
    if args.table:
        results = []
        for f in args.files:
            with open(f) as fh:
                results.append(json.load(fh))
        print_table(results)
        return
    if len(args.files) != 2:
        ap.error("expected TRUTH.json EVENTS.jsonl")
    with open(args.files[0]) as fh:
        truth = json.load(fh)
    events, skipped = read_events(args.files[1])
    m = score(truth, events)
    m["label"] = args.label or args.files[1]
    m["skipped_lines"] = skipped
    m["run_s"] = args.run_s
    m["video"] = truth.get("video")
    if args.json:
        print(json.dumps(m))
    else:
        print_report(m["label"], m, args.list)


if __name__ == "__main__":
    sys.exit(main())
