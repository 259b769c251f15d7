#!/usr/bin/env bash
# The whole test suite: set up (packages, models), then lint and test.
#   FACEGATE_FACES=DIR           the face photos (default ../shared/faces)
#   FACEGATE_REQUIRE_FACES=1     fail instead of skipping when they are absent (CI)
# Network: only 127.0.0.1 (and the package registries during set-up).
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/setup-debian.sh
cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings
cargo test --all-targets --quiet
# The web console in headless Chromium (Debian's chromium, playwright-core
# from npm) and a schemathesis fuzz run of the HTTP API (no 5xx), both
# against the binary the tests built.
cargo build --quiet
export FACEGATE_BIN="${FACEGATE_BIN:-$(realpath "${CARGO_TARGET_DIR:-target}")/debug/facegate}"
(cd tests/console && npm ci --silent --no-audit --no-fund)
node tests/console/console.mjs
deploy/fuzz-api.sh
# The walk-up benchmark's path on a short video (benches/walkby/smoke.sh: ~1 min plus a Python venv).
benches/walkby/smoke.sh "$FACEGATE_BIN"
# The newcomer's demo (deploy/demo.sh) with the test build: RTSP camera, mosquitto, owner_pass, erasure,
# stranger alert over MQTT, with nothing from ../shared (~20 s).
DEMO_HTTP="127.0.0.1:$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')" \
  deploy/demo.sh
# The .deb (with the test build): install, doctor, upgrade (backup + migration, data and conffile kept)
# and purge in a clean Debian 12 root (debootstrap + chroot, ~3 min).
deploy/deb-test.sh "$(FACEGATE_BIN="$FACEGATE_BIN" deploy/deb.sh amd64 | tail -1)"
# The arm64 build (cross-compiled) and its smoke test under qemu: the same match as this build within
# 0.01 (deploy/arm64.sh; cold ~10 min for the cross build).
P=${FACEGATE_FACES:-../shared/faces}/identities/Angelina_Jolie
if [ -f "$P/1.jpg" ]; then A=$P/1.jpg; B=$P/2.jpg; else A=data/samples/astronaut.png; B=$A; fi
FACEGATE_X86_BIN="$FACEGATE_BIN" deploy/arm64.sh smoke "$A" "$B"
# The arm64 .deb from that cross build: checked as a file (aarch64 binary and libonnxruntime, models
# and their checksums, the conffile, the maintainer scripts, the unit), then installed, upgraded and
# purged in a clean arm64 Debian 12 root whose programs run under qemu-aarch64 (binfmt_misc).
DEB_ARM64=$(FACEGATE_BIN= deploy/deb.sh arm64 | tail -1)
deploy/deb-check.sh "$DEB_ARM64" aarch64
rc=0; deploy/deb-test.sh "$DEB_ARM64" || rc=$?
if [ "$rc" = 77 ]; then
  echo "########## SKIPPED: the arm64 .deb install test: this machine cannot run arm64 programs in a chroot (binfmt_misc) ##########" >&2
elif [ "$rc" != 0 ]; then exit "$rc"; fi
