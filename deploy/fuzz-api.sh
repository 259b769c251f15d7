#!/usr/bin/env bash
# Schema-driven API fuzzing: schemathesis (from PyPI) generates requests from
# /api/v1/openapi.json against a real `facegate run` on 127.0.0.1 (a real
# database, the real models, one camera looping a clip when the team's test
# media are there) and fails on any 5xx.
#   FACEGATE_BIN=PATH         the binary (default target/debug/facegate)
#   FUZZ_EXAMPLES=N           cases per operation (default 40)
# The live feed (/api/v1/events/stream) is left out: it never ends by design.
set -euo pipefail
cd "$(dirname "$0")/.."
FG=${FACEGATE_BIN:-target/debug/facegate}
VENV=target/fuzz-venv
if [ ! -x "$VENV/bin/schemathesis" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet "schemathesis==4.32.5"
fi
TMP=$(mktemp -d)
trap 'kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; rm -rf "$TMP"' EXIT
TOKEN=$("$FG" --db "$TMP/fg.db" token create --role admin --name fuzz 2>/dev/null)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
CAMERA=()
CLIP=${FACEGATE_FACES:-../shared/faces}/video/frec_short_hamilton_clip.mp4
if [ -f "$CLIP" ]; then
  CAMERA=(--camera "gate-1=file://$(realpath "$CLIP"),role=gate,fps=2")
  # Objects for the documented examples (owner H-1, template 1, watch entry 1),
  # so the fuzzer also reaches the code behind existing ids.
  REFS=$(dirname "$CLIP")/refs
  "$FG" --db "$TMP/fg.db" enroll --owner-id H-1 --name "Lin-Manuel Miranda" --consent-by fuzz "$REFS/Lin_Manuel_Miranda.jpg" >/dev/null
  "$FG" --db "$TMP/fg.db" watchlist add --name "Alex" --reason "fuzz" "$REFS/Alex_Lacamoire.jpg" >/dev/null
fi
"$FG" --db "$TMP/fg.db" run --data-dir "$TMP/data" --http "127.0.0.1:$PORT" "${CAMERA[@]}" >"$TMP/facegate.log" 2>&1 &
PID=$!
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break
  sleep 0.3
done
# With a camera: wait until it has a frame, so its snapshot answers 200 (before
# that it is, correctly, a 503 "no frame yet", which the fuzzer counts as a failure).
if [ "${#CAMERA[@]}" -gt 0 ]; then
  for _ in $(seq 150); do
    curl -sf -o /dev/null -H "Authorization: Bearer $TOKEN" \
      "http://127.0.0.1:$PORT/api/v1/cameras/gate-1/snapshot" && break
    sleep 0.2
  done
fi
status=0
"$VENV/bin/schemathesis" run "http://127.0.0.1:$PORT/api/v1/openapi.json" \
  --header "Authorization: Bearer $TOKEN" \
  --checks not_a_server_error \
  --exclude-path /api/v1/events/stream \
  --max-examples "${FUZZ_EXAMPLES:-40}" --seed 1 --workers 2 \
  --generation-database none --no-color --request-timeout 20 || status=$?
if ! kill -0 "$PID" 2>/dev/null; then
  echo "fuzz: facegate died during the run; its log:" >&2
  tail -50 "$TMP/facegate.log" >&2
  exit 1
fi
if grep -q "panicked" "$TMP/facegate.log"; then
  echo "fuzz: facegate panicked:" >&2
  grep -A5 panicked "$TMP/facegate.log" >&2
  exit 1
fi
exit "$status"
