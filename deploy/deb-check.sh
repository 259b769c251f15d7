#!/usr/bin/env bash
# Checks a built facegate .deb without installing it (for the arm64 package, whose install test
# would need a whole emulated arm64 root): the control fields, the file list deb.sh promises, the
# machine of the binary and of libonnxruntime (file(1)), the models against their SHA256SUMS, the
# conffile, and the systemd unit with `systemd-analyze verify --root` on the unpacked files.
#
#   deploy/deb-check.sh target/deb/facegate_<v>_arm64.deb aarch64
set -euo pipefail
DEB=$1
MACHINE=${2:-x86-64}
ARCH=$(dpkg-deb -f "$DEB" Architecture)
case "$MACHINE" in aarch64) want_arch=arm64 ;; x86-64) want_arch=amd64 ;; *) want_arch=$MACHINE ;; esac
fail() { echo "deb-check: $DEB: $*" >&2; exit 1; }
[ "$ARCH" = "$want_arch" ] || fail "Architecture is $ARCH, expected $want_arch"
[ "$(dpkg-deb -f "$DEB" Package)" = facegate ] || fail "Package is not facegate"
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT
dpkg-deb -x "$DEB" "$DIR/root"
dpkg-deb -e "$DEB" "$DIR/DEBIAN"
for f in usr/bin/facegate etc/facegate/facegate.toml lib/systemd/system/facegate.service \
         usr/share/facegate/models/SHA256SUMS; do
  [ -f "$DIR/root/$f" ] || fail "missing /$f"
done
grep -qx /etc/facegate/facegate.toml "$DIR/DEBIAN/conffiles" || fail "facegate.toml is not a conffile"
for s in postinst prerm postrm; do [ -x "$DIR/DEBIAN/$s" ] || fail "no $s"; done
file -L "$DIR/root/usr/bin/facegate" | grep -q "ELF 64-bit.*$MACHINE" ||
  fail "binary is not $MACHINE: $(file -L "$DIR/root/usr/bin/facegate")"
lib=$(ls "$DIR"/root/usr/lib/facegate/libonnxruntime.so.1.*.* 2>/dev/null | head -1) || lib=""
[ -n "$lib" ] || fail "no libonnxruntime.so in /usr/lib/facegate"
file -L "$lib" | grep -q "ELF 64-bit.*$MACHINE" || fail "libonnxruntime is not $MACHINE: $(file -L "$lib")"
(cd "$DIR/root/usr/share/facegate/models" && sha256sum --quiet -c SHA256SUMS) || fail "model checksums"
n=$(grep -c . "$DIR/root/usr/share/facegate/models/SHA256SUMS")
[ "$n" -ge 2 ] || fail "only $n model(s)"
if command -v systemd-analyze >/dev/null; then
  # The targets and slices the unit refers to come from this machine's systemd.
  cp -rn /lib/systemd/system/. "$DIR/root/lib/systemd/system/" 2>/dev/null || true
  verify=$(systemd-analyze verify --root="$DIR/root" facegate.service 2>&1) || { echo "$verify" >&2; fail "systemd-analyze verify"; }
  [ -z "$verify" ] || { echo "$verify" >&2; fail "systemd-analyze verify printed warnings"; }
fi
echo "deb-check: $DEB ok ($ARCH, $MACHINE binary and libonnxruntime, $n models, unit verified)"
