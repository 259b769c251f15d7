#!/usr/bin/env bash
# The demo: sets up, builds, and shows the whole path on this machine with nothing but what the
# package registries ship (no camera, no broker, no test media needed):
#
#   1. a gate camera: a clip generated from a public-domain portrait (NASA's photo of astronaut
#      Eileen Collins, shipped inside the scikit-image wheel), served over RTSP on 127.0.0.1;
#   2. a local mosquitto on 127.0.0.1, and a subscriber standing in for the command centre: every
#      message it receives is printed as `mosquitto_sub -v` prints it (topic, then the JSON);
#   3. she is enrolled as an owner; the gateway (with its web console) watches the camera and
#      publishes an `owner_pass`;
#   4. her data is erased through the API (as on a request to erase); the same face is now a
#      stranger, and the `stranger` alert arrives.
#
#   DEMO_HTTP=127.0.0.1:8080   the console's address
#   DEMO_HOLD_SECONDS=0        keep everything running this long at the end (to look at the console)
#   FACEGATE_BIN=...           use this facegate binary instead of building the release one
# Exit status 0 when both messages arrived.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
if [ -z "${FACEGATE_BIN:-}" ]; then
  deploy/setup-debian.sh
  cargo build --release --quiet --bin facegate
  FG=$ROOT/target/release/facegate
else
  FG=$(realpath "$FACEGATE_BIN")
fi
HTTP=${DEMO_HTTP:-127.0.0.1:8080}
HOLD=${DEMO_HOLD_SECONDS:-0}
WORK=$ROOT/data/demo
SAMPLE=$ROOT/data/samples/astronaut.png

say() { printf '\n== %s\n' "$*"; }

if [ ! -f "$SAMPLE" ]; then
  # A public-domain portrait (NASA) shipped inside the scikit-image wheel; the wheel is only read.
  mkdir -p "$(dirname "$SAMPLE")"
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

rm -rf "$WORK" && mkdir -p "$WORK"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 100); do
    python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 0.2)' "$1" \
      2>/dev/null && return 0
    sleep 0.1
  done
  echo "demo: nothing listens on 127.0.0.1:$1" >&2
  return 1
}

say "a gate camera clip from the portrait: 6 walk-ups, 5 s in view, 3 s empty (640x480, 10 fps, H.264)"
CLIP=$WORK/gate.mp4
gap='videotestsrc pattern=solid-color foreground-color=0xff4a5560 num-buffers=30 ! video/x-raw,format=I420,width=640,height=480,framerate=10/1,pixel-aspect-ratio=1/1 ! c.'
face="filesrc location=$SAMPLE ! pngdec ! imagefreeze num-buffers=50 ! videoconvert ! videoscale add-borders=true ! video/x-raw,format=I420,width=640,height=480,framerate=10/1,pixel-aspect-ratio=1/1 ! c."
pipeline="concat name=c ! videoconvert ! x264enc key-int-max=10 speed-preset=fast bitrate=800 ! h264parse ! mp4mux ! filesink location=$CLIP"
for _ in 1 2 3 4 5 6; do pipeline="$pipeline $gap $face"; done
# shellcheck disable=SC2086
gst-launch-1.0 -q $pipeline
echo "$CLIP"

RTSP_PORT=$(free_port)
say "serving it at rtsp://127.0.0.1:$RTSP_PORT/gate"
/usr/bin/python3 benches/rtsp_serve.py --port "$RTSP_PORT" "gate=$CLIP" >"$WORK/rtsp.log" 2>&1 &
PIDS+=($!)
wait_port "$RTSP_PORT"

MQTT_PORT=$(free_port)
say "a local broker at mqtt://127.0.0.1:$MQTT_PORT; the command centre subscribes to events and alerts"
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$MQTT_PORT" >"$WORK/mosquitto.conf"
mosquitto -c "$WORK/mosquitto.conf" >"$WORK/mosquitto.log" 2>&1 &
PIDS+=($!)
wait_port "$MQTT_PORT"
mosquitto_sub -h 127.0.0.1 -p "$MQTT_PORT" -v -q 1 \
  -t 'facegate/+/events/#' -t 'facegate/+/alerts' >>"$WORK/received.txt" 2>&1 &
PIDS+=($!)

cat >"$WORK/facegate.toml" <<EOF
# The demo's gateway. Liveness is off because the "person" in this clip IS a photo: refusing
# photos is exactly what the liveness check is for (at a real gate it stays on).
[site]
code = "demo-estate"
name = "Demo estate"

[vision.liveness]
enabled = false

[storage]
db = "$WORK/facegate.db"
data_dir = "$WORK/data"

[mqtt]
url = "mqtt://127.0.0.1:$MQTT_PORT"

[http]
listen = "$HTTP"

[[cameras]]
name = "gate-1"
url = "rtsp://127.0.0.1:$RTSP_PORT/gate"
role = "gate"
gate_id = "gate-1"
EOF
CFG=(--config "$WORK/facegate.toml")

say "enrol her as owner DEMO-0001 (consent taken by gate staff 'demo')"
"$FG" "${CFG[@]}" enroll --owner-id DEMO-0001 --name "Eileen Collins" --building 1 --unit 1-101 \
  --consent-by demo "$SAMPLE"
TOKEN=$("$FG" "${CFG[@]}" token create --role admin --name demo-admin 2>/dev/null)

say "the gateway: console at http://$HTTP/ (sign in with the token below)"
echo "   $TOKEN"
"$FG" "${CFG[@]}" run >"$WORK/gateway.log" 2>&1 &
GW=$!
PIDS+=($GW)

# Prints what the command centre receives as it arrives; returns when a line after line FROM matches.
SHOWN=0
FROM=0
wait_for() {
  local pattern=$1 what=$2 deadline=$((SECONDS + 120))
  while [ $SECONDS -lt $deadline ]; do
    local n
    n=$(wc -l <"$WORK/received.txt")
    if [ "$n" -gt "$SHOWN" ]; then
      sed -n "$((SHOWN + 1)),${n}p" "$WORK/received.txt"
      SHOWN=$n
    fi
    # Only the lines already shown: a line arriving after the count above is shown on the next turn.
    if [ "$n" -gt "$FROM" ] && sed -n "$((FROM + 1)),${n}p" "$WORK/received.txt" | grep -q "$pattern"; then
      return 0
    fi
    if ! kill -0 "$GW" 2>/dev/null; then
      echo "demo: the gateway stopped; its log:" >&2
      tail -20 "$WORK/gateway.log" >&2
      return 1
    fi
    sleep 0.5
  done
  echo "demo: no $what within 120 s; gateway log: $WORK/gateway.log" >&2
  tail -20 "$WORK/gateway.log" >&2
  return 1
}

say "received by the command centre (mosquitto_sub -v):"
wait_for '"kind":"owner_pass"' "owner_pass"

say "erase owner DEMO-0001 through the API (DELETE /api/v1/owners/DEMO-0001)"
code=$(curl -s -o /dev/null -w '%{http_code}' -X DELETE -H "Authorization: Bearer $TOKEN" \
  "http://$HTTP/api/v1/owners/DEMO-0001")
echo "HTTP $code"
[ "$code" = 204 ] || { echo "demo: erasure refused (HTTP $code)" >&2; exit 1; }
FROM=$(wc -l <"$WORK/received.txt")

say "the same face is now a stranger; received by the command centre:"
wait_for '^facegate/demo-estate/alerts .*"kind":"stranger"' "stranger alert"

if [ "$HOLD" -gt 0 ]; then
  say "holding for ${HOLD}s: console at http://$HTTP/"
  sleep "$HOLD"
fi
kill -TERM "$GW" 2>/dev/null || true
wait "$GW" 2>/dev/null || true
say "done: an owner_pass, then after the erasure a stranger alert, both over MQTT"
