#!/usr/bin/env bash
# Throughput on the whole box (issue 11 item 3): images per second through
# detect + align + embed (decoding excluded), the reference against facegate,
# same photos, same run, rounds alternating so that each sees the same load.
#   benches/throughput.sh [FACES_DIR]        (default ../shared/faces)
#
# Pipelines, in this order each round:
#   reference            reference_eval.py --threads 0: ONNX Runtime's default
#                        threading (one intra-op thread per physical core)
#   facegate:equal-work  the shipped config without landmark flip and fusion
#                        (YuNet + arcface, the reference's model work)
#   facegate:shipped     config/facegate.toml as shipped (vision.workers = 0:
#                        one engine per core)
# then one line per pipeline with the median images/s over the rounds and its
# ratio to the reference's median, and facegate's median CPU time per photo
# (all threads, detect + align + embed: `cpu_ms_per_image`, the work a photo
# costs, which other load on the box disturbs less than wall time). Every row also shows TAR@FAR1e-3 and
# DIR@FPIR1%, which must be the same in every round (the work is the same).
#
# Environment:
#   SET=clean|s35|s25     which photos (clean = FACES_DIR/identities; the others
#                         are benches/accuracy.sh's degraded copies)
#   ROUNDS=3              rounds
#   VARIANTS="name:section.key=value,... ..."   more facegate configs (the
#                         shipped config with these keys replaced), e.g.
#                         "w1t1:vision.workers=1 w1t2:vision.workers=1,vision.threads=2"
#   REFERENCE_THREADS=0   the reference's --threads (0 = ONNX Runtime's default);
#                         a list ("0 1") runs each, the first is the baseline of
#                         the ratios and the others are rows "reference:tN"
#   BEFORE_BIN=PATH       also run an older facegate binary on the shipped and
#                         equal-work configs, as "before:shipped" and
#                         "before:equal-work", without the keys in
#   BEFORE_DROP="workers landmark_flip_face_px"   (keys it does not know; keep
#                         `workers` for a binary that has vision.workers)
#   FACEGATE_BIN=PATH     use this binary instead of building --release
#   WORK=DIR              venv and degraded copies (target/accuracy)
set -euo pipefail
cd "$(dirname "$0")/.."
FACES=${1:-${FACEGATE_FACES:-../shared/faces}}
WORK=${WORK:-target/accuracy}
VENV=$WORK/venv
SET=${SET:-clean}
ROUNDS=${ROUNDS:-3}
VARIANTS=${VARIANTS:-}
REFERENCE_THREADS=${REFERENCE_THREADS:-0}
mkdir -p "$WORK/configs"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet -r benches/reference/requirements.txt
fi
case "$SET" in
  clean) DIR="$FACES/identities" ;;
  s35) DIR="$WORK/s35"; [ -d "$DIR" ] || "$VENV/bin/python" benches/reference/degrade.py -q "$FACES/identities" "$DIR" ;;
  s25) DIR="$WORK/s25"; [ -d "$DIR" ] || "$VENV/bin/python" benches/reference/degrade.py -q --scale 0.25 "$FACES/identities" "$DIR" ;;
  *) echo "SET must be clean, s35 or s25, not $SET" >&2; exit 2 ;;
esac
[ -d "$DIR" ] || { echo "no photos at $DIR (FACES_DIR/identities)" >&2; exit 2; }
BIN=${FACEGATE_BIN:-target/release/facegate}
if [ -z "${FACEGATE_BIN:-}" ]; then
  BIN="${CARGO_TARGET_DIR:-target}/release/facegate"
  cargo build --release --quiet --bin facegate
fi

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

names=(equal-work shipped)
make_config "$WORK/configs/equal-work.toml" "vision.quality.landmark_flip=false,vision.fusion.enabled=false"
configs=("$WORK/configs/equal-work.toml" config/facegate.toml)
for v in $VARIANTS; do
  name=${v%%:*}
  make_config "$WORK/configs/$name.toml" "${v#*:}"
  names+=("$name")
  configs+=("$WORK/configs/$name.toml")
done

before=()
if [ -n "${BEFORE_BIN:-}" ]; then
  for n in equal-work shipped; do
    src="$WORK/configs/$n.toml"; [ "$n" = shipped ] && src=config/facegate.toml
    drop=$(printf '%s\n' ${BEFORE_DROP-workers landmark_flip_face_px} | sed 's/.*/^&[[:space:]]*=/')
    if [ -n "$drop" ]; then grep -v "$drop" "$src"; else cat "$src"; fi > "$WORK/configs/before-$n.toml"
    before+=("$n")
  done
fi

RESULTS=$(mktemp)
trap 'rm -f "$RESULTS"' EXIT
echo "# $(date -u +%FT%TZ) $(uname -m), $(nproc) CPUs, set $SET ($DIR), $ROUNDS rounds; load average $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-5s %-28s %9s %8s %8s %8s %8s %7s\n' round pipeline images/s ms/img cpu_ms TAR@1e-3 DIR@1% workers
line() {  # round name json
  python3 - "$@" <<'PY' | tee -a "$RESULTS"
import json, sys
rnd, name, raw = sys.argv[1:4]
r = json.loads(raw)
ips = r.get("images_per_s") or 1000.0 / r["ms_per_image"]
workers = r.get("workers", "-")
if "threads" in r:
    workers = f"t{r['threads']}"
cpu = r.get("cpu_ms_per_image")
cpu = f"{cpu:8.1f}" if cpu else f"{'-':>8}"
print(f"{rnd:<5} {name:<28} {ips:9.2f} {r['ms_per_image']:8.1f} {cpu} {r['tar_at_far_1e-3']:8.3f} "
      f"{r['dir_at_fpir_1e-2']:8.3f} {workers:>7}")
PY
}
for round in $(seq 1 "$ROUNDS"); do
  first=1
  for t in $REFERENCE_THREADS; do
    name=reference; [ "$first" = 1 ] || name=reference:t$t; first=0
    line "$round" "$name" \
      "$("$VENV/bin/python" benches/reference/reference_eval.py --dataset "$DIR" --models models --threads "$t" --json)"
  done
  for i in "${!names[@]}"; do
    line "$round" "facegate:${names[$i]}" "$("$BIN" --config "${configs[$i]}" eval --dataset "$DIR" --json)"
  done
  for n in "${before[@]}"; do
    line "$round" "before:$n" "$("$BEFORE_BIN" --config "$WORK/configs/before-$n.toml" eval --dataset "$DIR" --json)"
  done
done
echo "# load average at the end $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$RESULTS" <<'PY'
import statistics, sys
rows, cpu = {}, {}
for l in open(sys.argv[1]):
    f = l.split()
    rows.setdefault(f[1], []).append(float(f[2]))
    if f[4] != "-":
        cpu.setdefault(f[1], []).append(float(f[4]))
ref = statistics.median(rows["reference"])
print(f"median images/s over {len(rows['reference'])} rounds (ratio to the reference):")
for name, v in rows.items():
    m = statistics.median(v)
    c = f"  CPU {statistics.median(cpu[name]):5.1f} ms/image" if name in cpu else ""
    print(f"  {name:<28} {m:8.2f} images/s  {m / ref:5.2f}x{c}")
PY
