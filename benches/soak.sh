#!/usr/bin/env bash
# Soak (issue 10, item 7; not part of CI): `facegate run` for SOAK_MINUTES
# (default 30) with
#   - 4 RTSP cameras (benches/rtsp_serve.py in its own process, 127.0.0.1),
#     each a ~73 s 25 fps loop of the Hamilton clip with an enrolled owner in
#     it; the server plays a file once per session, so each camera reconnects
#     at the end of every loop (an end of stream, then a new session);
#   - the HTTP API under a steady load (SOAK_RPS requests/s, default 5:
#     /healthz, /metrics, /api/v1/events, /api/v1/cameras, /api/v1/me in turn,
#     with a viewer token);
#   - mosquitto restarted every SOAK_BROKER_RESTART_S seconds (default 300),
#     with persistence on so the subscriber's session (clean session off,
#     QoS 1) survives the restart as it would at a real broker;
#   - a subscriber (mosquitto_sub) recording every message.
# It records every event published (the events table: delivered outbox rows are deleted) vs
# received by the subscriber, the gateway's RSS and open file descriptors
# every 10 s, and API answers; prints a summary and writes it as JSON to
# target/soak/soak-<time>.json (with the run's files in target/soak/run-<time>/).
#
# The bar (issue 10): every event id reaches the subscriber, RSS growth < 5 %
# from the end of the first 5 minutes (or of the first third of a shorter
# run) to the end, file descriptors flat. Exit status 1 when a message is
# missing; the RSS and fd figures are reported, for a person to judge.
#
# Binary: FACEGATE_BIN (default ${CARGO_TARGET_DIR:-target}/release/facegate,
# built when absent). Faces: FACEGATE_FACES (default ../shared/faces).
# Needs mosquitto, mosquitto_sub, gst-launch-1.0, python3-gi and
# gir1.2-gst-rtsp-server-1.0 (Debian), like benches/ingest.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
SOAK_MINUTES=${SOAK_MINUTES:-30}
SOAK_RPS=${SOAK_RPS:-5}
SOAK_BROKER_RESTART_S=${SOAK_BROKER_RESTART_S:-300}
FACES=${FACEGATE_FACES:-../shared/faces}
TARGET=${CARGO_TARGET_DIR:-target}
FG=${FACEGATE_BIN:-$TARGET/release/facegate}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=target/soak
RUN=$OUT/run-$STAMP
MEDIA=$OUT/media
mkdir -p "$RUN" "$MEDIA"
RUN=$(cd "$RUN" && pwd)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

if [ ! -x "$FG" ]; then
  echo "# building $FG"
  cargo build --release --quiet --bin facegate
fi

# The media: the clip decoded once to 640x480 I420 at exactly 25 fps, then
# encoded 8 times back to back (~73 s), as benches/ingest.sh makes it.
LOOP=$MEDIA/stage-480p25.mp4
if [ ! -s "$LOOP" ]; then
  raw=$MEDIA/stage.i420
  gst-launch-1.0 -q filesrc location="$FACES/video/frec_short_hamilton_clip.mp4" ! decodebin ! videoconvert ! \
    videoscale ! videorate ! "video/x-raw,format=I420,width=640,height=480,framerate=25/1" ! filesink location="$raw"
  gst-launch-1.0 -q multifilesrc location="$raw" index=0 stop-index=7 ! \
    rawvideoparse width=640 height=480 format=i420 framerate=25/1 ! \
    x264enc speed-preset=veryfast key-int-max=50 bitrate=2000 ! video/x-h264,profile=main ! \
    h264parse ! mp4mux ! filesink location="$LOOP.tmp"
  rm -f "$raw"
  mv "$LOOP.tmp" "$LOOP"
fi

PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -n "${BROKER:-}" ] && kill "$BROKER" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT

# Broker, persistent sessions.
MQTT_PORT=$(free_port)
mkdir -p "$RUN/mosquitto"
cat >"$RUN/mosquitto/mosquitto.conf" <<EOF
listener $MQTT_PORT 127.0.0.1
allow_anonymous true
persistence true
persistence_location $RUN/mosquitto/
log_dest file $RUN/mosquitto/mosquitto.log
user $(id -un)
EOF
# `user`: started as root, mosquitto would otherwise switch to the user
# "mosquitto", fail to write its persistence file here and forget the
# subscriber's session at each restart (the first smoke lost 8 events so).
start_broker() {
  mosquitto -c "$RUN/mosquitto/mosquitto.conf" >/dev/null 2>&1 &
  BROKER=$!
  for _ in $(seq 50); do
    (exec 3<>/dev/tcp/127.0.0.1/"$MQTT_PORT") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "mosquitto did not start" >&2
  exit 1
}
start_broker

# RTSP server: 4 cameras.
RTSP_PORT=$(free_port)
/usr/bin/python3 benches/rtsp_serve.py --port "$RTSP_PORT" \
  cam1="$LOOP" cam2="$LOOP" cam3="$LOOP" cam4="$LOOP" >"$RUN/rtsp_serve.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do grep -q '^# ready' "$RUN/rtsp_serve.log" && break; sleep 0.2; done
grep -q '^# ready' "$RUN/rtsp_serve.log" || { echo "RTSP server not ready" >&2; cat "$RUN/rtsp_serve.log" >&2; exit 1; }

# Registry: the owner in the clip, and a viewer token for the API load.
DB=$RUN/soak.db
"$FG" --db "$DB" enroll --owner-id L-1 --name "Soak Owner" --consent-by soak \
  "$FACES/video/refs/Lin_Manuel_Miranda.jpg" >/dev/null
TOKEN=$("$FG" --db "$DB" token create --role viewer --name soak-load)

# Subscriber first, with a persistent session.
mosquitto_sub -h 127.0.0.1 -p "$MQTT_PORT" -i soak-subscriber -c -q 1 -v -t 'facegate/#' \
  >"$RUN/received.txt" 2>"$RUN/subscriber.log" &
PIDS+=($!)
sleep 1

HTTP_PORT=$(free_port)
CAMS=()
for i in 1 2 3 4; do CAMS+=(--camera "gate-$i=rtsp://127.0.0.1:$RTSP_PORT/cam$i,role=gate"); done
FACEGATE_LOG=${FACEGATE_LOG:-warn} "$FG" --db "$DB" run "${CAMS[@]}" --mqtt "mqtt://127.0.0.1:$MQTT_PORT" \
  --http "127.0.0.1:$HTTP_PORT" --data-dir "$RUN/data" >"$RUN/gateway.out" 2>"$RUN/gateway.log" &
GW=$!
PIDS+=($GW)
for _ in $(seq 300); do
  curl -sf "http://127.0.0.1:$HTTP_PORT/healthz" >/dev/null 2>&1 && break
  kill -0 "$GW" 2>/dev/null || { echo "gateway stopped:" >&2; tail -20 "$RUN/gateway.log" >&2; exit 1; }
  sleep 0.2
done
echo "# $(date -Is) soak: $SOAK_MINUTES min, gateway pid $GW, $(nproc) cores, load:$(uptime | sed 's/.*load average://')"
echo "# run files in $RUN"

# API load and sampling, in one Python process: requests at SOAK_RPS, a
# sample of the gateway's RSS/fds every 10 s, a broker restart every
# SOAK_BROKER_RESTART_S (it signals this script, which restarts mosquitto).
python3 - "$GW" "$HTTP_PORT" "$TOKEN" "$SOAK_MINUTES" "$SOAK_RPS" "$RUN" <<'PY' &
import json, os, sys, time, urllib.request, urllib.error
gw, port, token, minutes, rps, run = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5]), sys.argv[6]
paths = ["/healthz", "/metrics", "/api/v1/events?limit=20", "/api/v1/cameras", "/api/v1/me"]
end = time.time() + minutes * 60
start = time.time()
stats = {"requests": 0, "by_status": {}, "errors": [], "latency_ms": []}
samples = []
next_sample = 0.0
i = 0
def sample():
    try:
        with open(f"/proc/{gw}/status") as f:
            rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
        fds = len(os.listdir(f"/proc/{gw}/fd"))
        samples.append({"t_s": round(time.time() - start, 1), "rss_kb": rss, "fds": fds})
    except (OSError, StopIteration) as e:
        samples.append({"t_s": round(time.time() - start, 1), "error": str(e)})
while time.time() < end:
    now = time.time()
    if now >= next_sample:
        sample()
        next_sample = now + 10
    p = paths[i % len(paths)]
    i += 1
    req = urllib.request.Request(f"http://127.0.0.1:{port}{p}", headers={"Authorization": f"Bearer {token}"})
    t = time.time()
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            r.read()
            code = r.status
    except urllib.error.HTTPError as e:
        code = e.code
    except Exception as e:  # timeouts, refused connections
        code = "error"
        if len(stats["errors"]) < 20:
            stats["errors"].append(f"{round(t - start, 1)} s {p}: {e}")
    stats["latency_ms"].append(round((time.time() - t) * 1000, 1))
    stats["requests"] += 1
    stats["by_status"][str(code)] = stats["by_status"].get(str(code), 0) + 1
    time.sleep(max(0.0, 1.0 / rps - (time.time() - t)))
sample()
lat = sorted(stats.pop("latency_ms"))
stats["latency_ms"] = {q: lat[min(len(lat) - 1, int(len(lat) * f))] for q, f in (("p50", 0.5), ("p99", 0.99), ("max", 1.0))} if lat else {}
json.dump({"api": stats, "samples": samples}, open(f"{run}/load.json", "w"))
PY
LOAD=$!
PIDS+=($LOAD)

RESTARTS=0
T0=$(date +%s)
NEXT=$((T0 + SOAK_BROKER_RESTART_S))
while kill -0 "$LOAD" 2>/dev/null; do
  kill -0 "$GW" 2>/dev/null || { echo "gateway died during the soak:" >&2; tail -20 "$RUN/gateway.log" >&2; break; }
  if [ "$(date +%s)" -ge "$NEXT" ]; then
    kill "$BROKER"; wait "$BROKER" 2>/dev/null || true
    sleep 2
    start_broker
    RESTARTS=$((RESTARTS + 1))
    echo "# $(date -Is) broker restarted ($RESTARTS)"
    NEXT=$((NEXT + SOAK_BROKER_RESTART_S))
  fi
  sleep 1
done
wait "$LOAD" || true

# Drain: let the outbox empty (60 s at most), then stop the gateway and give
# the subscriber a moment for the last messages.
for _ in $(seq 60); do
  PENDING=$(python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL').fetchone()[0])" "$DB")
  [ "$PENDING" = 0 ] && break
  sleep 1
done
kill -TERM "$GW" 2>/dev/null || true
wait "$GW" 2>/dev/null || true
sleep 3

python3 - "$RUN" "$DB" "$SOAK_MINUTES" "$RESTARTS" "$OUT/soak-$STAMP.json" "$FG" <<'PY'
import json, re, sqlite3, sys
run, db, minutes, restarts, out, binary = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
conn = sqlite3.connect(db)
# Delivered outbox rows are deleted, so what was published is read from the
# events table: every event is published (camera state on cameras/<name>/status,
# the rest on events/<camera>), revision N of an event as "<id>.rN".
published = {eid: kind for eid, kind in conn.execute("SELECT id, kind FROM events")}
undelivered = conn.execute("SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL").fetchone()[0]
events = dict(conn.execute("SELECT kind, COUNT(*) FROM events GROUP BY kind").fetchall())
received = set()
lines = 0
for line in open(f"{run}/received.txt", errors="replace"):
    topic, _, payload = line.rstrip("\n").partition(" ")
    lines += 1
    try:
        mid = json.loads(payload).get("id")
    except (ValueError, AttributeError):
        continue
    if mid:
        received.add(re.sub(r"\.r[0-9]+$", "", mid))
missing = sorted(k for k in published if k not in received)
load = json.load(open(f"{run}/load.json"))
samples = [s for s in load["samples"] if "rss_kb" in s]
first_window = min(300.0, minutes * 60 / 3)
base = next((s for s in samples if s["t_s"] >= first_window), samples[0] if samples else None)
last = samples[-1] if samples else None
fds = [s["fds"] for s in samples]
summary = {
    "date": __import__("datetime").datetime.utcnow().isoformat() + "Z",
    "binary": binary,
    "minutes": minutes,
    "broker_restarts": restarts,
    "events_by_kind": events,
    "events_published": len(published),
    "outbox_undelivered_at_end": undelivered,
    "messages_received": lines,
    "events_missing_at_subscriber": len(missing),
    "missing_sample": [[m, published[m]] for m in missing[:20]],
    "rss_kb_at_first_window_end": base and base["rss_kb"],
    "first_window_s": first_window,
    "rss_kb_end": last and last["rss_kb"],
    "rss_growth_pct": base and last and round(100.0 * (last["rss_kb"] - base["rss_kb"]) / base["rss_kb"], 2),
    "fds_at_first_window_end": base and base["fds"],
    "fds_end": last and last["fds"],
    "fds_min_max": [min(fds), max(fds)] if fds else None,
    "api": load["api"],
    "samples": load["samples"],
}
json.dump(summary, open(out, "w"), indent=1)
print(f"soak {minutes:g} min ({binary}), {restarts} broker restart(s)")
print(f"  events stored: {events}")
print(f"  events: {len(published)} published, {len(missing)} missing at the subscriber ({lines} messages received), {undelivered} still in the outbox")
print(f"  RSS: {summary['rss_kb_at_first_window_end']} kB at {first_window:.0f} s -> {summary['rss_kb_end']} kB at the end ({summary['rss_growth_pct']}%)")
print(f"  fds: {summary['fds_at_first_window_end']} at {first_window:.0f} s -> {summary['fds_end']} at the end (min {summary['fds_min_max'][0] if fds else '-'}, max {summary['fds_min_max'][1] if fds else '-'})")
a = load["api"]
print(f"  API: {a['requests']} requests, by status {a['by_status']}, latency {a['latency_ms']}")
print(f"  JSON: {out}")
sys.exit(1 if missing else 0)
PY
