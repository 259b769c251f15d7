#!/usr/bin/env bash
# The whole test suite: set up (packages, models), then lint and test.
#   FACEGATE_FACES=DIR           the face photos (default ../shared/faces)
#   FACEGATE_REQUIRE_FACES=1     fail instead of skipping when they are absent (CI)
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/setup-debian.sh
cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings
cargo test --all-targets --quiet
