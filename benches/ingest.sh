#!/usr/bin/env bash
# The camera-ingest figures of BENCHMARKS.md (`facegate bench ingest`):
#  1. CPU per stream, decode (+ scaling of the frames taken), 1080p and 640x480,
#     against a bare gst-launch-1.0 decode of the same file in the same run;
#  2. how many 1080p 25 fps streams hold detection at 3 fps with < 5% missed;
#  3. gate latency, frame arrival → decision, p50/p99.
# Media: 60 s loops of the real clips in ../shared/faces/video, H.264 by x264.
set -euo pipefail
cd "$(dirname "$0")/.."
FACES=${FACEGATE_FACES:-../shared/faces}
MEDIA=target/bench-media
SECONDS_RUN=${SECONDS_RUN:-20}
mkdir -p "$MEDIA"
make_loop() { # src width height fps copies out
  local src=$1 w=$2 h=$3 fps=$4 n=$5 out=$6 parts=""
  [ -f "$out" ] && return
  for _ in $(seq "$n"); do parts="$parts filesrc location=$src ! decodebin ! videoconvert ! videoscale ! videorate ! video/x-raw,format=I420,width=$w,height=$h,framerate=$fps/1 ! c. "; done
  # shellcheck disable=SC2086
  gst-launch-1.0 -q concat name=c ! x264enc speed-preset=veryfast key-int-max=50 bitrate=4000 ! \
    video/x-h264,profile=main ! h264parse ! mp4mux ! filesink location="$out.tmp" $parts
  mv "$out.tmp" "$out"
}
make_loop "$FACES/video/facenet_pytorch_video.mp4" 1920 1080 25 16 "$MEDIA/faces-1080p25.mp4"
make_loop "$FACES/video/frec_short_hamilton_clip.mp4" 640 480 25 8 "$MEDIA/stage-480p25.mp4"
cargo build --release --quiet
FG=target/release/facegate
DB=$(mktemp -d)/bench.db
echo "# decode (+ scale of taken frames) vs bare gst-launch decode, 1 stream"
$FG --db "$DB" bench ingest --video "$MEDIA/faces-1080p25.mp4" --seconds "$SECONDS_RUN"
$FG --db "$DB" bench ingest --video "$MEDIA/stage-480p25.mp4" --seconds "$SECONDS_RUN"
echo "# 1080p25 streams with detection at 3 fps each"
for n in 1 2 3 4; do
  $FG --db "$DB" bench ingest --video "$MEDIA/faces-1080p25.mp4" --streams "$n" --detect-fps 3 --seconds "$SECONDS_RUN" --no-baseline
done
echo "# gate latency: 640x480 gate camera, detection at 10 fps, owner enrolled"
$FG --db "$DB" enroll --owner-id H-1 --name "Lin-Manuel Miranda" --consent-by bench \
  "$FACES/video/refs/Lin_Manuel_Miranda.jpg" >/dev/null 2>&1 || true
$FG --db "$DB" bench ingest --video "$MEDIA/stage-480p25.mp4" --detect-fps 10 --seconds "$SECONDS_RUN" --no-baseline
