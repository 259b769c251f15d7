#!/usr/bin/env python3
"""Enrol a walk-up video's owners into a fresh facegate database with the real binary.

    enrol.py TRUTH.json --bin FACEGATE --config CFG.toml --db DB --out TRUTH_ENROLLED.json

For each enrolment in the truth: `facegate --config CFG --db DB enroll --owner-id ID --name NAME
--consent-by bench PHOTO`, with the enrolment photo first and then its fallbacks (photos of that
owner never shown in the video). The gateway refuses a photo with no usable face, or a face that is
already enrolled as another owner: then the next photo is tried; an owner none of whose photos
enrols is dropped, and their walk-ups become stranger walk-ups (they are not enrolled, so a stranger
alert is the right decision). Every refusal is logged on stderr. Writes the truth with the
enrolments actually made (and `enrol_log`) to --out; score.py and reference_walkby.py read that.
"""
import argparse
import json
import os
import subprocess
import sys


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("truth")
    ap.add_argument("--bin", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--db", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    with open(args.truth) as fh:
        truth = json.load(fh)
    if os.path.exists(args.db):
        raise SystemExit(f"enrol.py: {args.db} exists; a run enrols into a fresh database")
    made, log, dropped = [], [], []
    for en in truth["enrolments"]:
        chosen = None
        for photo in [en["photo"]] + en.get("fallback_photos", []):
            cmd = [args.bin, "--config", args.config, "--db", args.db, "enroll", "--owner-id",
                   en["owner_id"], "--name", en["name"], "--consent-by", "bench", photo]
            p = subprocess.run(cmd, capture_output=True, text=True)
            if p.returncode == 0:
                chosen = photo
                break
            why = (p.stderr.strip().splitlines() or ["(no message)"])[-1]
            log.append({"owner_id": en["owner_id"], "photo": photo, "refused": why})
            print(f"enrol.py: {en['owner_id']}: {photo} refused: {why}", file=sys.stderr)
        if chosen is None:
            dropped.append(en["owner_id"])
            print(f"enrol.py: {en['owner_id']}: no photo enrols; its walk-ups count as strangers",
                  file=sys.stderr)
            continue
        made.append({"owner_id": en["owner_id"], "name": en["name"], "photo": chosen})
    out = dict(truth)
    out["enrolments"] = made
    out["enrol_log"] = log
    out["dropped_owners"] = dropped
    out["walkups"] = []
    for w in truth["walkups"]:
        w = dict(w)
        if w["role"] == "owner" and w["owner_id"] in dropped:
            w["role"], w["was_owner"], w["owner_id"] = "stranger", w["owner_id"], None
        out["walkups"].append(w)
    with open(args.out, "w") as fh:
        json.dump(out, fh, indent=1)
    print(f"enrol.py: {len(made)} of {len(truth['enrolments'])} owners enrolled "
          f"({len(log)} refusals)", file=sys.stderr)


if __name__ == "__main__":
    main()
