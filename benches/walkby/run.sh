#!/usr/bin/env bash
# The walk-up benchmark in one command (issue 9, item 4).
#
#   benches/walkby/run.sh
#
# Env: FACEGATE_BIN (default target/release/facegate, built with `cargo build --release` if missing),
#      FACES (default ../shared/faces), SPLIT (all | a | b; default all), SEED (default 1),
#      WALKBY_CONFIG (an extra facegate config to run, optional), DISTANCES (default "near far").
#
# Two distances: near = faces 28->72 px at 500 kbit/s, far = 20->44 px at 400 kbit/s (videos cached
# under target/walkby/<distance>-s<SEED>-<SPLIT>/). Pipelines: facegate with the shipped
# config/facegate.toml ("shipped"), facegate with liveness off and a 1 s repeat-alert cooldown
# ("noliveness", generated from the shipped file), WALKBY_CONFIG if given, and the Python reference.
# Each facegate config enrols the owners into a fresh SQLite db (enrol.py); each replay gets its own
# copy of that db. One table at the end; all results as JSON under target/walkby/results/.
set -euo pipefail
abs() { case "$1" in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
# paths given in the environment are relative to where run.sh was started
[ -n "${FACEGATE_BIN:-}" ] && FACEGATE_BIN=$(abs "$FACEGATE_BIN")
[ -n "${WALKBY_CONFIG:-}" ] && WALKBY_CONFIG=$(abs "$WALKBY_CONFIG")
[ -n "${FACES:-}" ] && FACES=$(abs "$FACES")
cd "$(dirname "$0")/../.."
HERE=benches/walkby
OUT=target/walkby
FACES=${FACES:-../shared/faces}
SPLIT=${SPLIT:-all}
SEED=${SEED:-1}
DISTANCES=${DISTANCES:-near far}
BIN=${FACEGATE_BIN:-target/release/facegate}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RUN=$OUT/runs/$STAMP
mkdir -p "$RUN" "$OUT/results"
t_all=$SECONDS
say() { echo "walkby: $*" >&2; }

# --- Python environment: the reference's pinned versions (nothing else is needed)
PY=$OUT/venv/bin/python
if ! [ -x "$PY" ] || ! cmp -s benches/reference/requirements.txt "$OUT/venv/requirements.txt"; then
    say "making $OUT/venv"
    rm -rf "$OUT/venv"
    python3 -m venv "$OUT/venv"
    "$OUT/venv/bin/pip" install -q -r benches/reference/requirements.txt
    cp benches/reference/requirements.txt "$OUT/venv/requirements.txt"
fi

# --- videos (cached; regenerated when the generator changed)
declare -A ARGS=([near]="--face-start 28 --face-end 72 --kbps 500" [far]="--face-start 20 --face-end 44 --kbps 400")
for d in $DISTANCES; do
    v=$OUT/$d-s$SEED-$SPLIT
    if ! [ -f "$v/truth.json" ] || [ $HERE/make_walkby.py -nt "$v/truth.json" ]; then
        say "generating $v"
        t0=$SECONDS
        # shellcheck disable=SC2086
        nice -n 5 "$PY" $HERE/make_walkby.py --out "$v" --faces "$FACES" --seed "$SEED" --split "$SPLIT" ${ARGS[$d]}
        say "generated $v in $((SECONDS - t0)) s"
    fi
done

# --- the binary
if ! [ -x "$BIN" ]; then
    if [ -n "${FACEGATE_BIN:-}" ]; then
        say "FACEGATE_BIN=$BIN is not an executable"; exit 1
    fi
    say "building $BIN"
    cargo build --release --bin facegate
fi
BIN=$(realpath "$BIN")

# --- configs: name=path
CONFIGS=("shipped=config/facegate.toml")
"$PY" $HERE/config_variant.py config/facegate.toml "$RUN/noliveness.toml" \
    vision.liveness.enabled=false decide.cooldown_s=1.0
CONFIGS+=("noliveness=$RUN/noliveness.toml")
if [ -n "${WALKBY_CONFIG:-}" ]; then
    CONFIGS+=("$(basename "$WALKBY_CONFIG" .toml)=$WALKBY_CONFIG")
fi

RESULTS=()
score() { # label truth events run_s
    "$PY" $HERE/score.py "$2" "$3" --json --label "$1" --run-s "$4" > "$RUN/$1.json"
    "$PY" $HERE/score.py "$2" "$3" --label "$1" --list >> "$RUN/report.txt"
    RESULTS+=("$RUN/$1.json")
}

# --- facegate: one fresh enrolment per config, one replay per distance
for c in "${CONFIGS[@]}"; do
    name=${c%%=*}; cfg=${c#*=}
    first=$(set -- $DISTANCES; echo "$1")
    "$PY" $HERE/enrol.py "$OUT/$first-s$SEED-$SPLIT/truth.json" --bin "$BIN" --config "$cfg" \
        --db "$RUN/$name.enrolled.db" --out "$RUN/$name.truth.json" 2> >(tee "$RUN/$name.enrol.log" >&2)
    for d in $DISTANCES; do
        v=$OUT/$d-s$SEED-$SPLIT
        label=$d/$name
        # the same owners and photos in both videos (same seed and split): reuse the enrolment
        "$PY" - "$RUN/$name.truth.json" "$v/truth.json" "$RUN/$d-$name.truth.json" <<'PYEOF'
import json, sys
enr, truth = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
dropped = set(enr["dropped_owners"])
want = {e["owner_id"] for e in truth["enrolments"]}
if want != {e["owner_id"] for e in enr["enrolments"]} | dropped:
    sys.exit(f"{sys.argv[2]}: its owners differ from the enrolled ones")
for k in ("enrolments", "enrol_log", "dropped_owners"):
    truth[k] = enr[k]
for w in truth["walkups"]:
    if w["role"] == "owner" and w["owner_id"] in dropped:
        w["role"], w["was_owner"], w["owner_id"] = "stranger", w["owner_id"], None
json.dump(truth, open(sys.argv[3], "w"), indent=1)
PYEOF
        db=$RUN/$d-$name.db
        cp "$RUN/$name.enrolled.db" "$db"
        mkdir -p "$RUN/$d-$name.data"
        say "replay $label"
        t0=$SECONDS
        if ! nice -n 5 "$BIN" --config "$cfg" --db "$db" replay --camera gate-1 --role gate --fps 10 \
            --data-dir "$RUN/$d-$name.data" --stats "$v/walkby.mp4" \
            > "$RUN/$d-$name.events.jsonl" 2> "$RUN/$d-$name.stderr"; then
            tail -5 "$RUN/$d-$name.stderr" >&2
            say "replay $label failed"
            exit 1
        fi
        el=$((SECONDS - t0))
        grep '^replay:' "$RUN/$d-$name.stderr" >&2 || true
        score "$d-$name" "$RUN/$d-$name.truth.json" "$RUN/$d-$name.events.jsonl" "$el"
    done
done

# --- the Python reference, with the shipped config's enrolment photos
for d in $DISTANCES; do
    say "reference $d"
    t0=$SECONDS
    nice -n 5 "$PY" $HERE/reference_walkby.py "$RUN/$d-shipped.truth.json" \
        > "$RUN/$d-reference.events.jsonl" 2> "$RUN/$d-reference.stderr"
    el=$((SECONDS - t0))
    cat "$RUN/$d-reference.stderr" >&2
    score "$d-reference" "$RUN/$d-shipped.truth.json" "$RUN/$d-reference.events.jsonl" "$el"
done

"$PY" - "$RUN" "$OUT/results/walkby-$STAMP.json" "$BIN" "$SPLIT" "$SEED" "$((SECONDS - t_all))" "${RESULTS[@]}" <<'PYEOF'
import json, sys, platform, subprocess
run, dst, binary, split, seed, total = sys.argv[1:7]
rows = [json.load(open(f)) for f in sys.argv[7:]]
for r in rows:
    r.pop("per_walkup", None)
meta = {"date_utc": run.rsplit("/", 1)[-1], "binary": binary, "split": split, "seed": int(seed),
        "total_s": int(total), "machine": f"{platform.machine()} {platform.node()}",
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                 text=True).stdout.strip()}
json.dump({"meta": meta, "results": rows}, open(dst, "w"), indent=1)
PYEOF
echo
echo "walk-up benchmark: split $SPLIT, seed $SEED, binary $BIN ($((SECONDS - t_all)) s in all)"
"$PY" $HERE/score.py --table "${RESULTS[@]}"
echo "details: $RUN/report.txt   results: $OUT/results/walkby-$STAMP.json"
