#!/usr/bin/env bash
# Installs, upgrades and purges the facegate .deb in a clean Debian 12 root (debootstrap minbase +
# chroot; no systemd runs there, so the unit is checked with `systemd-analyze verify --root`):
#
#   deploy/deb-test.sh [PACKAGE.deb]     default: builds one with deploy/deb.sh amd64
#
# The root is of the package's architecture: an arm64 package is installed into an arm64 root, its
# maintainer scripts and the binary run under qemu-aarch64 through binfmt_misc (registered here if
# it is not yet; the kernel must allow it, which a root shell in a VM or on a CI runner does).
#
# Checks: files, the `facegate` system user, permissions (state 0700, config 0640 root:facegate),
# the unit enabled and verified, `facegate doctor` passing as the service user on the installed
# files; an upgrade keeps the data and a locally edited conffile, backs the database up first and
# runs the migration; purge leaves no data, config, user or unit link behind.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DEB=${1:-}
if [ -z "$DEB" ]; then DEB=$(deploy/deb.sh amd64 | tail -1); fi
DEB=$(realpath "$DEB")
ARCH=$(dpkg-deb -f "$DEB" Architecture)
HOST_ARCH=$(dpkg --print-architecture)
if [ "$ARCH" = "$HOST_ARCH" ]; then
  R=$ROOT/target/debroot
  CACHE=$ROOT/target/debroot-cache/bookworm-minbase.tgz
else
  R=$ROOT/target/debroot-$ARCH
  CACHE=$ROOT/target/debroot-cache/bookworm-minbase-$ARCH.tgz
fi
fail() { echo "deb-test: FAIL: $*" >&2; exit 1; }
ok() { echo "deb-test: ok: $* (${SECONDS} s)"; }
in_root() { chroot "$R" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@"; }

command -v debootstrap >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
}
if [ "$ARCH" != "$HOST_ARCH" ]; then
  # A foreign root runs its programs through qemu-user: the interpreter registered with the F flag
  # (opened when registered, so it works inside the chroot) and statically linked.
  case "$ARCH" in
    arm64) QEMU=aarch64 ;;
    *) fail "no emulation set up here for architecture $ARCH" ;;
  esac
  command -v qemu-$QEMU-static >/dev/null ||
    fail "no qemu-$QEMU-static: run deploy/arm64.sh first (it installs qemu-user-static >= 8 from bookworm-backports)"
  # Exit 77: this kernel or container does not let us run foreign programs (deploy/test.sh says so
  # loudly and goes on); anything else that goes wrong is a failure.
  [ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null ||
    { echo "deb-test: SKIP: binfmt_misc is not mounted and cannot be: an $ARCH root cannot run here" >&2; exit 77; }
  if [ ! -e /proc/sys/fs/binfmt_misc/qemu-$QEMU ]; then
    if [ -f /usr/lib/binfmt.d/qemu-$QEMU.conf ]; then
      line=$(cat /usr/lib/binfmt.d/qemu-$QEMU.conf)
    else
      # The standard aarch64 ELF magic and mask, with the static interpreter, opened at once (F).
      line=":qemu-$QEMU:M::\\x7f\\x45\\x4c\\x46\\x02\\x01\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x02\\x00\\xb7\\x00:\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\x00\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xfe\\xff\\xff\\xff:$(command -v qemu-$QEMU-static):F"
    fi
    printf '%s' "$line" >/proc/sys/fs/binfmt_misc/register 2>/dev/null ||
      { echo "deb-test: SKIP: cannot register qemu-$QEMU with binfmt_misc" >&2; exit 77; }
  fi
  grep -q '^flags: .*F' /proc/sys/fs/binfmt_misc/qemu-$QEMU ||
    fail "qemu-$QEMU is registered without the F flag: programs in the chroot cannot find it"
  ok "$ARCH programs run through $(sed -n 's/^interpreter //p' /proc/sys/fs/binfmt_misc/qemu-$QEMU)"
fi
if [ ! -f "$CACHE" ]; then
  mkdir -p "$(dirname "$CACHE")"
  debootstrap --arch="$ARCH" --variant=minbase --make-tarball="$CACHE" bookworm "$R.tmp" http://deb.debian.org/debian >/dev/null
fi
rm -rf "$R"
debootstrap --arch="$ARCH" --variant=minbase --unpack-tarball="$CACHE" bookworm "$R" http://deb.debian.org/debian >/dev/null
[ "$(in_root dpkg --print-architecture)" = "$ARCH" ] || fail "the root is not $ARCH"
ok "clean Debian 12 $ARCH root in $R"

# Version 2 of the same package, for the upgrade.
V1=$(dpkg-deb -f "$DEB" Version)
V2="$V1+upgradetest"
work=$(mktemp -d)
dpkg-deb -R "$DEB" "$work/pkg"
sed -i "s/^Version: .*/Version: $V2/" "$work/pkg/DEBIAN/control"
dpkg-deb --root-owner-group -Znone --build "$work/pkg" "$R/tmp/facegate-2.deb" >/dev/null
rm -rf "$work"
cp "$DEB" "$R/tmp/facegate-1.deb"

in_root apt-get update -qq
in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  /tmp/facegate-1.deb >"$ROOT/target/deb-test.install.log" 2>&1 ||
  { tail -20 "$ROOT/target/deb-test.install.log"; fail "install"; }
[ "$(in_root dpkg-query -W -f='${Architecture}' facegate)" = "$ARCH" ] || fail "installed package is not $ARCH"
ok "installed $(basename "$DEB") ($ARCH) with its dependencies"

[ -x "$R/usr/bin/facegate" ] || fail "no /usr/bin/facegate"
in_root getent passwd facegate | grep -q ':/usr/sbin/nologin$' || fail "no facegate system user with nologin"
# Owners as the root's own /etc/passwd names them (stat inside the chroot).
st() { in_root stat -c "$1" "$2"; }
[ "$(st '%a %U' /var/lib/facegate)" = "700 facegate" ] || fail "/var/lib/facegate: $(st '%a %U' /var/lib/facegate)"
[ "$(st '%a %U %G' /etc/facegate/facegate.toml)" = "640 root facegate" ] ||
  fail "/etc/facegate/facegate.toml: $(st '%a %U %G' /etc/facegate/facegate.toml)"
[ -L "$R/etc/systemd/system/multi-user.target.wants/facegate.service" ] || fail "unit not enabled"
ok "user, permissions, unit enabled"

verify=$(systemd-analyze verify --root="$R" facegate.service 2>&1) || { echo "$verify"; fail "systemd-analyze verify"; }
[ -z "$verify" ] || { echo "$verify"; fail "systemd-analyze verify printed warnings"; }
ok "systemd-analyze verify facegate.service: clean"

FG=(runuser -u facegate -- /usr/bin/facegate --config /etc/facegate/facegate.toml)
in_root "${FG[@]}" doctor >"$ROOT/target/deb-test.doctor.log" 2>/dev/null ||
  { cat "$ROOT/target/deb-test.doctor.log"; fail "facegate doctor on the installed files"; }
tail -1 "$ROOT/target/deb-test.doctor.log"
ok "facegate doctor passes as the service user"

# Data and a local config edit that the upgrade must keep.
in_root "${FG[@]}" db migrate >/dev/null 2>&1
in_root "${FG[@]}" token create --role viewer --name kept-across-upgrade >/dev/null 2>&1
echo "# local edit by the technician" >>"$R/etc/facegate/facegate.toml"

in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o Dpkg::Options::=--force-confold \
  /tmp/facegate-2.deb >"$ROOT/target/deb-test.upgrade.log" 2>&1 ||
  { tail -20 "$ROOT/target/deb-test.upgrade.log"; fail "upgrade"; }
[ "$(in_root dpkg-query -W -f='${Version}' facegate)" = "$V2" ] || fail "not upgraded to $V2"
backup=$(ls "$R"/var/lib/facegate/backup/facegate.db."$V1".* 2>/dev/null | head -1) || backup=""
[ -n "$backup" ] || fail "no database backup before the migration"
[ "$(st '%a %U' "${backup#"$R"}")" = "600 facegate" ] || fail "backup permissions: $(st '%a %U' "${backup#"$R"}")"
grep -q "schema" "$ROOT/target/deb-test.upgrade.log" || fail "the upgrade did not run the migration"
in_root "${FG[@]}" token list 2>/dev/null | grep -q kept-across-upgrade || fail "data lost in the upgrade"
grep -q "^# local edit by the technician" "$R/etc/facegate/facegate.toml" || fail "local conffile edit lost"
ok "upgrade $V1 -> $V2: backup $(basename "$backup"), migration run, data and config kept"

in_root env DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq facegate >"$ROOT/target/deb-test.purge.log" 2>&1 ||
  { tail -20 "$ROOT/target/deb-test.purge.log"; fail "purge"; }
[ ! -e "$R/var/lib/facegate" ] || fail "purge left /var/lib/facegate"
[ ! -e "$R/etc/facegate" ] || fail "purge left /etc/facegate"
! in_root getent passwd facegate >/dev/null || fail "purge left the facegate user"
[ ! -e "$R/etc/systemd/system/multi-user.target.wants/facegate.service" ] || fail "purge left the unit link"
[ ! -e "$R/usr/bin/facegate" ] || fail "purge left the binary"
ok "purge: no data, config, user, unit link or binary left"
