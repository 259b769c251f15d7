#!/usr/bin/env bash
# A short walk-up check for CI (run by deploy/test.sh): the whole bench path on a small video.
#   benches/walkby/smoke.sh FACEGATE_BIN
# Generates 3 owners and 3 strangers walking up once each (near distance: 28->72 px, 500 kbit/s),
# enrols the owners with the real binary, replays the video as a gate camera (liveness off, 1 s
# cooldown, as in the issue's protocol) and scores it: every owner passes, nobody passes as someone
# else, every stranger is alerted, no owner is alerted as a stranger first. About a minute, plus the
# Python venv (benches/reference/requirements.txt) on the first run.
set -euo pipefail
BIN=$(realpath "$1")
cd "$(dirname "$0")/../.."
HERE=benches/walkby
OUT=target/walkby/smoke
FACES=${FACEGATE_FACES:-../shared/faces}
if ! [ -d "$FACES/identities" ]; then
    if [ -n "${FACEGATE_REQUIRE_FACES:-}" ]; then
        echo "walkby smoke: face photos not found at $FACES and FACEGATE_REQUIRE_FACES is set" >&2
        exit 1
    fi
    echo "!!!!! SKIPPED: walkby smoke: face photos not found at $FACES (set FACEGATE_FACES) !!!!!" >&2
    exit 0
fi
PY=target/walkby/venv/bin/python
if ! [ -x "$PY" ] || ! cmp -s benches/reference/requirements.txt target/walkby/venv/requirements.txt; then
    rm -rf target/walkby/venv
    python3 -m venv target/walkby/venv
    target/walkby/venv/bin/pip install -q -r benches/reference/requirements.txt
    cp benches/reference/requirements.txt target/walkby/venv/requirements.txt
fi
rm -rf "$OUT"; mkdir -p "$OUT"
"$PY" $HERE/make_walkby.py --out "$OUT/video" --faces "$FACES" --seed 7 --owners 3 --strangers 3 \
    --passes 1 --face-start 28 --face-end 72 --kbps 500 --samples 0 >&2
"$PY" $HERE/config_variant.py config/facegate.toml "$OUT/noliveness.toml" \
    vision.liveness.enabled=false decide.cooldown_s=1.0
"$PY" $HERE/enrol.py "$OUT/video/truth.json" --bin "$BIN" --config "$OUT/noliveness.toml" \
    --db "$OUT/gate.db" --out "$OUT/truth.json"
"$BIN" --config "$OUT/noliveness.toml" --db "$OUT/gate.db" replay --camera gate-1 --role gate \
    --fps 10 --data-dir "$OUT/data" "$OUT/video/walkby.mp4" > "$OUT/events.jsonl"
"$PY" $HERE/score.py "$OUT/truth.json" "$OUT/events.jsonl" --label smoke --list >&2
"$PY" $HERE/score.py "$OUT/truth.json" "$OUT/events.jsonl" --json > "$OUT/score.json"
"$PY" - "$OUT/score.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
bad = []
if m["owner_pass_ok"] != m["owner_walkups"]: bad.append(f"owners passed {m['owner_pass_ok']}/{m['owner_walkups']}")
if m["wrong_pass"]: bad.append(f"{m['wrong_pass']} wrong-person passes")
if m["stranger_alerted"] != m["stranger_walkups"]: bad.append(f"strangers alerted {m['stranger_alerted']}/{m['stranger_walkups']}")
if m["owner_alerted_first"]: bad.append(f"{m['owner_alerted_first']} owners alerted as strangers first")
if m["silent"]: bad.append(f"{m['silent']} silent walk-ups")
if bad:
    sys.exit("walkby smoke: FAILED: " + "; ".join(bad))
print(f"walkby smoke: ok ({m['owner_walkups']} owners passed, {m['stranger_walkups']} strangers alerted, no wrong pass)")
PY
