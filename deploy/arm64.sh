#!/usr/bin/env bash
# Cross-builds facegate for the estate's ARM64 box (aarch64-unknown-linux-gnu) on an x86_64 Debian 12
# build machine, and checks the result under qemu.
#
#   deploy/arm64.sh                      build target/aarch64-unknown-linux-gnu/release/facegate
#   deploy/arm64.sh smoke ENROL PROBE    enrol ENROL in a temporary database and identify PROBE with the
#                                        arm64 binary under qemu-aarch64-static; prints its identify JSON,
#                                        then does the same with the x86_64 build and fails unless the
#                                        best scores agree within 0.01 (FACEGATE_X86_BIN: the x86_64
#                                        binary to compare with; default: a release build)
#
# What it sets up (idempotent; a second run only checks):
# - the Rust target (rustup target add), gcc-aarch64-linux-gnu and qemu-user-static;
# - Debian's arm64 GStreamer development packages, through multiarch (dpkg --add-architecture arm64):
#   they are downloaded with apt and unpacked into a sysroot (target/arm64-sysroot), not installed,
#   because libgstreamer-plugins-base1.0-dev:arm64 conflicts with the amd64 one the x86 build needs
#   (apt would remove it);
# - the aarch64 libonnxruntime.so from the same PyPI wheel version as x86 (onnxruntime 1.31.1,
#   manylinux_2_28_aarch64), checksum checked by deploy/fetch-models.py, into target/arm64-models.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TRIPLE=aarch64-unknown-linux-gnu
SYSROOT=$ROOT/target/arm64-sysroot
ARM_MODELS=$ROOT/target/arm64-models
BIN=$ROOT/target/$TRIPLE/release/facegate
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

say() { echo "arm64: $*" >&2; }

host_tools() {
  local need=()
  for p in gcc-aarch64-linux-gnu libc6-dev-arm64-cross file; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
  done
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    say "adding the arm64 architecture to dpkg (multiarch)"
    $SUDO dpkg --add-architecture arm64
    $SUDO apt-get update -qq
  fi
  if [ "${#need[@]}" -gt 0 ]; then
    say "installing ${need[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
  rustup target list --installed | grep -qx "$TRIPLE" || rustup target add "$TRIPLE"
  # qemu 7.2 (bookworm) shows aarch64 programs the host's x86 /proc/cpuinfo, and ONNX Runtime's CPU
  # probe (cpuinfo) then crashes on a null pointer; qemu >= 8 emulates it. bookworm-backports has 10.x.
  local q
  # (Not installed yet on a fresh box: the probe's failure must not stop the script under pipefail.)
  q=$(qemu-aarch64-static --version 2>/dev/null | sed -n 's/.*version \([0-9]*\)\..*/\1/p' | head -1) || q=""
  if [ -z "$q" ] || [ "$q" -lt 8 ]; then
    if [ ! -f /etc/apt/sources.list.d/backports.sources ] && ! grep -rqs bookworm-backports /etc/apt/sources.list*; then
      say "adding bookworm-backports for qemu-user-static >= 8"
      printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' |
        $SUDO tee /etc/apt/sources.list.d/backports.sources >/dev/null
    fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
      -t bookworm-backports qemu-user-static >/dev/null
  fi
}

# The arm64 packages the link needs: GStreamer's and GLib's development files and everything they
# pull in, minus what only their tools need (Python, LLVM, Mesa's drivers, ICU).
sysroot() {
  # .complete holds the package list it was made for: a new list rebuilds it.
  local want="gstreamer gst-plugins-base libc6 libssl"
  if [ "$(cat "$SYSROOT/.complete" 2>/dev/null)" = "$want" ]; then return; fi
  say "building the arm64 sysroot in $SYSROOT"
  local debs=$ROOT/target/arm64-debs
  rm -rf "$SYSROOT" && mkdir -p "$SYSROOT" "$debs"
  apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
    --no-replaces --no-enhances \
    libgstreamer1.0-dev:arm64 libgstreamer-plugins-base1.0-dev:arm64 libc6-dev:arm64 libssl-dev:arm64 2>/dev/null |
    grep -v '^ ' | grep ':arm64$' | grep -v '^<' |
    grep -vE '^(libllvm|libgl1-mesa-dri|python3|libpython3|libz3|dpkg|tar|install-info|libicu)' |
    sort -u >"$debs/packages.txt"
  (cd "$debs" && xargs apt-get download -qq <packages.txt 2>&1 | grep -v "unsandboxed" || true)
  local n=0
  for d in "$debs"/*_arm64.deb; do dpkg-deb -x "$d" "$SYSROOT"; n=$((n + 1)); done
  # Absolute symlinks (libfoo.so -> /lib/aarch64-linux-gnu/libfoo.so.1) must point inside the sysroot.
  find "$SYSROOT" -type l -lname '/*' | while read -r l; do
    ln -sfn "$SYSROOT$(readlink "$l")" "$l"
  done
  say "sysroot: $n packages"
  echo "$want" >"$SYSROOT/.complete"
}

build() {
  host_tools
  sysroot
  python3 deploy/fetch-models.py --quiet --arch aarch64 --only onnxruntime --dest "$ARM_MODELS"
  local rl=$SYSROOT/usr/lib/aarch64-linux-gnu
  export PKG_CONFIG_ALLOW_CROSS=1
  export PKG_CONFIG_SYSROOT_DIR=$SYSROOT
  export PKG_CONFIG_LIBDIR=$rl/pkgconfig:$SYSROOT/usr/share/pkgconfig
  export PKG_CONFIG_PATH=
  # SQLCipher links the sysroot's libcrypto (libssl-dev:arm64); the cross gcc must look in the
  # sysroot's multiarch include folder, not the host's /usr/include.
  export AARCH64_UNKNOWN_LINUX_GNU_OPENSSL_LIB_DIR=$rl
  export AARCH64_UNKNOWN_LINUX_GNU_OPENSSL_INCLUDE_DIR=$SYSROOT/usr/include
  export CFLAGS_aarch64_unknown_linux_gnu="-I$SYSROOT/usr/include/aarch64-linux-gnu -I$SYSROOT/usr/include"
  export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
  export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
  export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
  export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C link-arg=--sysroot=$SYSROOT \
-C link-arg=-Wl,-rpath-link,$rl -C link-arg=-Wl,-rpath-link,$SYSROOT/lib/aarch64-linux-gnu"
  say "cargo build --release --target $TRIPLE"
  cargo build --release --locked --target "$TRIPLE" --bin facegate
  # (not `tee /dev/stderr`: reopening a redirected stderr truncates the log it goes to)
  local what
  what=$(file -L "$BIN")
  echo "$what" >&2
  grep -q "ARM aarch64" <<<"$what" || { say "not an aarch64 ELF: $BIN"; exit 1; }
  say "built $BIN"
}

# Runs the CLI with one binary ("$@" after the runner) on a fresh database; prints identify's JSON.
enrol_and_identify() {
  local dir=$1 enrol=$2 probe=$3
  shift 3
  rm -rf "$dir" && mkdir -p "$dir"
  "$@" --db "$dir/registry.db" enroll --owner-id smoke-1 --name "Smoke Owner" \
    --consent-by arm64-smoke "$enrol" >"$dir/enroll.log" 2>&1 ||
    { cat "$dir/enroll.log" >&2; say "enrolment failed"; return 1; }
  "$@" --db "$dir/registry.db" identify "$probe" 2>"$dir/identify.log" ||
    { cat "$dir/identify.log" >&2; say "identify failed"; return 1; }
}

best_score() {
  python3 -c '
import json, sys
faces = json.load(open(sys.argv[1])).get("faces") or []
scores = [f["best_match"]["score"] for f in faces if f.get("best_match")]
print(max(scores) if scores else "none")' "$1"
}

smoke() {
  local enrol=${1:?usage: deploy/arm64.sh smoke ENROL_PHOTO PROBE_PHOTO} probe=${2:?usage: deploy/arm64.sh smoke ENROL_PHOTO PROBE_PHOTO}
  build
  local work=$ROOT/target/arm64-smoke
  say "arm64 binary under qemu-aarch64-static (slow: the models run emulated)"
  ORT_DYLIB_PATH=$ARM_MODELS/onnxruntime/libonnxruntime.so \
    enrol_and_identify "$work/arm64" "$enrol" "$probe" \
    qemu-aarch64-static -L "$SYSROOT" "$BIN" >"$work.arm64.json"
  cat "$work.arm64.json"
  local x86=${FACEGATE_X86_BIN:-$ROOT/target/release/facegate}
  if [ -z "${FACEGATE_X86_BIN:-}" ]; then cargo build --release --locked --bin facegate >/dev/null; fi
  say "the same with the x86_64 build ($x86)"
  enrol_and_identify "$work/x86" "$enrol" "$probe" "$x86" >"$work.x86.json"
  local a x
  a=$(best_score "$work.arm64.json")
  x=$(best_score "$work.x86.json")
  say "best score: arm64 $a, x86_64 $x"
  python3 -c 'import sys
a, x = sys.argv[1], sys.argv[2]
if a == "none" or x == "none":
    sys.exit(f"arm64: no match score to compare (arm64 {a}, x86_64 {x})")
if abs(float(a) - float(x)) > 0.01:
    sys.exit(f"arm64: scores differ by more than 0.01 (arm64 {a}, x86_64 {x})")
print(f"arm64: same match as x86_64 (|{a} - {x}| <= 0.01)", file=sys.stderr)' "$a" "$x"
}

case "${1:-build}" in
  build) build ;;
  smoke) shift; smoke "$@" ;;
  *) echo "usage: deploy/arm64.sh [build | smoke ENROL_PHOTO PROBE_PHOTO]" >&2; exit 2 ;;
esac
