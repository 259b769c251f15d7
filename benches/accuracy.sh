#!/usr/bin/env bash
# Accuracy of facegate against the reference pipeline, same data, same run.
#   benches/accuracy.sh [FACES_DIR]     (default ../shared/faces)
# Makes the surveillance copy (35% area-scaled, JPEG q50) and a 25% copy (q50)
# with the reference's degrade.py, then runs the reference (Python: ONNX
# Runtime + NumPy + OpenCV) and `facegate eval` (release build, default
# config) on each set: whole, and each half of the identities (`--split a|b`,
# the same people in both pipelines).
#
# Environment:
#   SETS="clean s35 s25"     which sets (clean = FACES_DIR/identities)
#   HALVES="all a b"         all = every identity; a, b = the two halves
#   VARIANTS="name:section.key=value,section.key=value ..."
#                            facegate config variants (the shipped config with
#                            these keys replaced); "shipped" is always first.
#   REFERENCE=0              skip the reference runs
#   FACEGATE_BIN=PATH        use this facegate binary instead of building --release
#   WORK=DIR                 where the venv and the degraded copies go (target/accuracy)
# One line per (set, half, pipeline): TAR@FAR1e-2, TAR@FAR1e-3, its threshold,
# DIR@FPIR1%, failures to acquire (by cause for facegate), ms/image (the
# reference: one thread, one photo at a time; facegate: wall time over the
# photos with `vision.workers` engines, one per core as shipped, so its
# ms/image is the inverse of its throughput). Throughput against the
# reference at ONNX Runtime's default threading: benches/throughput.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
FACES=${1:-${FACEGATE_FACES:-../shared/faces}}
WORK=${WORK:-target/accuracy}
VENV=$WORK/venv
SETS=${SETS:-clean s35 s25}
HALVES=${HALVES:-all a b}
VARIANTS=${VARIANTS:-}
REFERENCE=${REFERENCE:-1}
mkdir -p "$WORK/configs"
if [ "$REFERENCE" = 1 ] || [ ! -d "$WORK/s35" ] || [ ! -d "$WORK/s25" ]; then
  if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet -r benches/reference/requirements.txt
  fi
fi
[ -d "$WORK/s35" ] || "$VENV/bin/python" benches/reference/degrade.py -q "$FACES/identities" "$WORK/s35"
[ -d "$WORK/s25" ] || "$VENV/bin/python" benches/reference/degrade.py -q --scale 0.25 "$FACES/identities" "$WORK/s25"
BIN=${FACEGATE_BIN:-target/release/facegate}
[ -n "${FACEGATE_BIN:-}" ] || cargo build --release --quiet --bin facegate

# The shipped config with some keys replaced: `section.key=value` (TOML value).
make_config() {
  python3 - "$1" "$2" <<'PY'
import re, sys
out, spec = sys.argv[1], sys.argv[2]
text = open("config/facegate.toml").read().split("\n")
for kv in filter(None, spec.split(",")):
    key, value = kv.split("=", 1)
    section, name = key.rsplit(".", 1)
    cur, done = None, False
    for i, line in enumerate(text):
        m = re.match(r"\s*\[([^\]]+)\]\s*$", line)
        if m:
            cur = m.group(1)
        elif cur == section and re.match(rf"\s*{re.escape(name)}\s*=", line):
            text[i] = f"{name} = {value}"
            done = True
            break
    if not done:
        sys.exit(f"no key {key} in config/facegate.toml")
open(out, "w").write("\n".join(text))
PY
}

row() {  # set half pipeline json
  python3 - "$@" <<'PY'
import json, sys
s, half, name, raw = sys.argv[1:5]
r = json.loads(raw)
causes = r.get("failed_by_cause")
fta = str(r["failed_to_acquire"])
if causes:
    fta += " (" + ", ".join(f"{k} {v}" for k, v in causes.items()) + ")"
print(f"{s:<6} {half:<4} {name:<28} {r['tar_at_far_1e-2']:8.3f} {r['tar_at_far_1e-3']:8.3f} "
      f"{r['threshold_far_1e-3']:8.3f} {r['dir_at_fpir_1e-2']:8.3f} {r['ms_per_image']:7.1f}  {fta}")
PY
}

names=(shipped)
configs=(config/facegate.toml)
for v in $VARIANTS; do
  name=${v%%:*}
  make_config "$WORK/configs/$name.toml" "${v#*:}"
  names+=("$name")
  configs+=("$WORK/configs/$name.toml")
done

printf '%-6s %-4s %-28s %8s %8s %8s %8s %7s  %s\n' set half pipeline TAR@1e-2 TAR@1e-3 thr@1e-3 DIR@1% ms/img FTA
for set in $SETS; do
  dir="$FACES/identities"; [ "$set" = clean ] || dir="$WORK/$set"
  for half in $HALVES; do
    split=(); [ "$half" = all ] || split=(--split "$half")
    if [ "$REFERENCE" = 1 ]; then
      row "$set" "$half" reference \
        "$("$VENV/bin/python" benches/reference/reference_eval.py --dataset "$dir" --models models "${split[@]}" --json)"
    fi
    for i in "${!names[@]}"; do
      row "$set" "$half" "facegate:${names[$i]}" \
        "$("$BIN" --config "${configs[$i]}" eval --dataset "$dir" "${split[@]}" --json)"
    done
  done
done
