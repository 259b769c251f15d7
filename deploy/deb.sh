#!/usr/bin/env bash
# Builds the facegate .deb for amd64 or arm64 (dpkg-deb; no debian/ source tree needed):
#
#   deploy/deb.sh [amd64|arm64]     -> target/deb/facegate_<version>_<arch>.deb
#
#   /usr/bin/facegate                       the release binary (arm64: deploy/arm64.sh's cross build)
#   /usr/lib/facegate/libonnxruntime.so*    ONNX Runtime 1.31.1 for that machine (found next to the binary)
#   /usr/share/facegate/models/             the models present in models/, with SHA256SUMS
#   /etc/facegate/facegate.toml             conffile: config/facegate.toml with the installed paths
#   /lib/systemd/system/facegate.service    Type=notify, watchdog, sandboxed (deploy/debian/)
#   postinst/prerm/postrm                   `facegate` system user, /var/lib/facegate (0700), backup +
#                                           migration on upgrade, purge erases all data
#
#   FACEGATE_BIN=PATH            package this binary instead of building the release one
#   FACEGATE_DEB_VERSION=V       package version (default: Cargo.toml's)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ARCH=${1:-amd64}
VERSION=${FACEGATE_DEB_VERSION:-$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)}
case "$ARCH" in
  amd64)
    if [ -z "${FACEGATE_BIN:-}" ]; then cargo build --release --locked --quiet --bin facegate; fi
    BIN=${FACEGATE_BIN:-target/release/facegate}
    LIBDIR=models/onnxruntime
    STRIP=strip
    ;;
  arm64)
    if [ -z "${FACEGATE_BIN:-}" ]; then deploy/arm64.sh build; fi
    BIN=${FACEGATE_BIN:-target/aarch64-unknown-linux-gnu/release/facegate}
    LIBDIR=target/arm64-models/onnxruntime
    STRIP=aarch64-linux-gnu-strip
    ;;
  *) echo "usage: deploy/deb.sh [amd64|arm64]" >&2; exit 2 ;;
esac
ORT=$(ls "$LIBDIR"/libonnxruntime.so.1.*.* | head -1)
[ -f "$BIN" ] || { echo "deb: no binary at $BIN" >&2; exit 1; }
case "$ARCH" in amd64) MACHINE=x86-64 ;; arm64) MACHINE=aarch64 ;; esac
file -L "$BIN" | grep -q "ELF 64-bit.*$MACHINE" ||
  { echo "deb: $BIN is not an $MACHINE binary (FACEGATE_BIN set for another machine?)" >&2; exit 1; }
[ -f "$ORT" ] || { echo "deb: no ONNX Runtime library in $LIBDIR" >&2; exit 1; }

PKG=$ROOT/target/deb/facegate_${VERSION}_${ARCH}
rm -rf "$PKG" && mkdir -p "$PKG/DEBIAN" "$PKG/usr/bin" "$PKG/usr/lib/facegate" \
  "$PKG/usr/share/facegate/models" "$PKG/etc/facegate" "$PKG/lib/systemd/system" "$PKG/usr/share/doc/facegate"
install -m 0755 "$BIN" "$PKG/usr/bin/facegate"
$STRIP --strip-debug "$PKG/usr/bin/facegate"
install -m 0644 "$ORT" "$PKG/usr/lib/facegate/"
ln -s "$(basename "$ORT")" "$PKG/usr/lib/facegate/libonnxruntime.so.1"
ln -s "$(basename "$ORT")" "$PKG/usr/lib/facegate/libonnxruntime.so"

# The models the shipped config names that are here (the mirror-only ones may not be), with their
# checksums.
: >"$PKG/usr/share/facegate/models/SHA256SUMS"
grep -v '^#' deploy/models.sha256 | awk 'NF==2' | while read -r sum file; do
  if [ -f "models/$file" ] && grep -q "\"$file\"" config/facegate.toml; then
    install -m 0644 "models/$file" "$PKG/usr/share/facegate/models/$file"
    echo "$sum  $file" >>"$PKG/usr/share/facegate/models/SHA256SUMS"
  fi
done
(cd "$PKG/usr/share/facegate/models" && sha256sum --quiet -c SHA256SUMS)

# The shipped config with the installed paths.
sed -e 's|^models_dir = "models" |models_dir = "/usr/share/facegate/models"|' \
  -e 's|^# onnxruntime = .*|onnxruntime = "/usr/lib/facegate/libonnxruntime.so"|' \
  -e 's|^db = "data/facegate.db"|db = "/var/lib/facegate/facegate.db"|' \
  -e 's|^data_dir = "data"|data_dir = "/var/lib/facegate"|' \
  config/facegate.toml >"$PKG/etc/facegate/facegate.toml"
for want in 'models_dir = "/usr/share/facegate/models"' 'onnxruntime = "/usr/lib/facegate/libonnxruntime.so"' \
  'db = "/var/lib/facegate/facegate.db"' 'data_dir = "/var/lib/facegate"'; do
  grep -q "^$want" "$PKG/etc/facegate/facegate.toml" || { echo "deb: config edit failed: $want" >&2; exit 1; }
done
chmod 0640 "$PKG/etc/facegate/facegate.toml"
install -m 0644 deploy/debian/facegate.service "$PKG/lib/systemd/system/facegate.service"
install -m 0644 README.md "$PKG/usr/share/doc/facegate/README.md"
install -m 0644 docs/mqtt.md "$PKG/usr/share/doc/facegate/mqtt.md"
for s in postinst prerm postrm; do install -m 0755 "deploy/debian/$s" "$PKG/DEBIAN/$s"; done
echo /etc/facegate/facegate.toml >"$PKG/DEBIAN/conffiles"
SIZE=$(du -sk --exclude=DEBIAN "$PKG" | cut -f1)
cat >"$PKG/DEBIAN/control" <<CONTROL
Package: facegate
Version: $VERSION
Architecture: $ARCH
Maintainer: facegate developers <facegate@localhost>
Installed-Size: $SIZE
Depends: libc6 (>= 2.36), libgcc-s1, libssl3, adduser, libgstreamer1.0-0 (>= 1.22), libgstreamer-plugins-base1.0-0 (>= 1.22), gstreamer1.0-plugins-base, gstreamer1.0-plugins-good, gstreamer1.0-libav
Recommends: mosquitto-clients, systemd-timesyncd | chrony
Section: video
Priority: optional
Description: face recognition gateway for residential estates
 Recognises enrolled owners and watch-list entries on the estate's gate and
 patrol cameras locally (ONNX Runtime), decides per person, and publishes
 events and alerts to the district command centre over MQTT with a durable
 outbox. Face data stays on the device.
CONTROL
mkdir -p target/deb
dpkg-deb --root-owner-group -Zxz --build "$PKG" "$PKG.deb" >/dev/null
echo "$PKG.deb"
