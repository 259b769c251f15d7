#!/usr/bin/env bash
# Accuracy of facegate against the reference pipeline, same data, same run.
#   benches/accuracy.sh [FACES_DIR]     (default ../shared/faces)
# Makes the surveillance copy (35% area-scaled, JPEG q50) with the reference's
# degrade.py, then runs the reference (Python: ONNX Runtime + NumPy + OpenCV)
# and `facegate eval` (release build, default config) on both sets.
set -euo pipefail
cd "$(dirname "$0")/.."
FACES=${1:-${FACEGATE_FACES:-../shared/faces}}
WORK=target/accuracy
VENV=$WORK/venv
mkdir -p "$WORK"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet -r benches/reference/requirements.txt
fi
[ -d "$WORK/surveillance" ] || "$VENV/bin/python" benches/reference/degrade.py -q "$FACES/identities" "$WORK/surveillance"
cargo build --release --quiet
printf '%-14s %-10s %8s %8s %8s %8s %s\n' set pipeline TAR@1e-2 TAR@1e-3 DIR@1% ms/img model
for set in clean surveillance; do
  dir="$FACES/identities"; [ "$set" = surveillance ] && dir="$WORK/surveillance"
  ref=$("$VENV/bin/python" benches/reference/reference_eval.py --dataset "$dir" --models models --json)
  fg=$(target/release/facegate eval --dataset "$dir" --json)
  for pair in "reference:$ref" "facegate:$fg"; do
    name=${pair%%:*}; json=${pair#*:}
    python3 - "$set" "$name" "$json" <<'PY'
import json, sys
r = json.loads(sys.argv[3])
print(f"{sys.argv[1]:<14} {sys.argv[2]:<10} {r['tar_at_far_1e-2']:8.3f} {r['tar_at_far_1e-3']:8.3f} "
      f"{r['dir_at_fpir_1e-2']:8.3f} {r['ms_per_image']:8.1f} {r.get('model', 'yunet+arcface_mbf')}")
PY
  done
done
