#!/usr/bin/env bash
# The demo: set up, build, and run facegate on a sample photo (no camera
# configured). Enrols the person in the photo, then identifies her.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/setup-debian.sh
cargo build --release --quiet

SAMPLE=data/samples/astronaut.png
if [ ! -f "$SAMPLE" ]; then
  # A public-domain portrait (NASA) shipped inside the scikit-image wheel.
  mkdir -p data/samples
  tmp=$(mktemp -d)
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$tmp" "scikit-image==0.24.0"
  python3 - "$tmp" "$SAMPLE" <<'PY'
import glob, sys, zipfile
whl = glob.glob(sys.argv[1] + "/scikit_image-*.whl")[0]
with zipfile.ZipFile(whl) as z:
    open(sys.argv[2], "wb").write(z.read("skimage/data/astronaut.png"))
PY
  rm -rf "$tmp"
fi

FG=target/release/facegate
DB=data/demo.db
rm -f "$DB" "$DB-wal" "$DB-shm"
echo "== identify $SAMPLE with nobody enrolled"
$FG --db "$DB" identify "$SAMPLE"
echo "== enrol her as owner DEMO-0001 (consent taken by gate staff 'demo')"
$FG --db "$DB" enroll --owner-id DEMO-0001 --name "Eileen Collins" --building 1 --unit 1-101 \
  --consent-by demo "$SAMPLE"
echo "== identify again"
$FG --db "$DB" identify "$SAMPLE"
$FG --db "$DB" owners list

# The camera pipeline on a sample clip, when the team's test media are beside the repository.
CLIP=${FACEGATE_FACES:-../shared/faces}/video/frec_short_hamilton_clip.mp4
if [ -f "$CLIP" ]; then
  echo "== replay $CLIP as gate camera 'gate-1' (events as JSON lines)"
  $FG --db "$DB" enroll --owner-id DEMO-0002 --name "Lin-Manuel Miranda" --consent-by demo \
    "$(dirname "$CLIP")/refs/Lin_Manuel_Miranda.jpg"
  $FG --db "$DB" replay --camera gate-1 --stats "$CLIP"
  $FG --db "$DB" events list
fi

# The gateway itself with its web console, on the clip as a looping gate camera where there is one.
SECS=${DEMO_RUN_SECONDS:-60}
if [ "$SECS" -gt 0 ]; then
  TOKEN=$($FG --db "$DB" token create --role admin --name demo-admin 2>/dev/null)
  CAM=()
  [ -f "$CLIP" ] && CAM=(--camera "gate-1=file://$(realpath "$CLIP"),role=gate")
  echo "== the gateway for ${SECS}s: open http://127.0.0.1:8080/ and sign in with the token"
  echo "   $TOKEN"
  timeout --signal=TERM "$SECS" $FG --db "$DB" run --data-dir data/demo "${CAM[@]}" || true
  $FG --db "$DB" events list
fi
