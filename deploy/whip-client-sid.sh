#!/usr/bin/env bash
# GStreamer's simple-whip-client as Debian 13 (trixie) and sid ship it, in a
# chroot, for tests/integration/test_gstreamer_stock.py.
#
# Debian 12's simple-whip-client (0.0~git20230131) aborts at start: it links
# libsoup 2.4 while GStreamer's nice plugin pulls in libsoup 3.  Trixie and
# sid ship 0.0~git20240308, built against libsoup 3, which does not.  This
# script makes that client runnable here without touching the host: it
# copies the Debian sid chroot of deploy/janus-sid.sh (building that first
# if needed) to /var/cache/whip-gateway/whip-client-sid and installs the
# package into the copy.  Run as root; it needs the Debian mirror once.
# Prints the client's package version; does nothing when the chroot exists.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
janus_dir=${WHIP_GATEWAY_JANUS_SID:-/var/cache/whip-gateway/janus-sid}
dir=${WHIP_GATEWAY_WHIP_CLIENT_SID:-/var/cache/whip-gateway/whip-client-sid}

die() { echo "whip-client-sid: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (chroot needs it)"

version() { chroot "$dir" dpkg-query -W -f='${Version}\n' simple-whip-client; }

if [ -x "$dir/usr/bin/whip-client" ]; then
  version
  exit 0
fi

"$here/janus-sid.sh" >/dev/null || die "no Debian sid chroot (deploy/janus-sid.sh failed)"

work="$dir.partial"
rm -rf --one-file-system "$work"
cp -a "$janus_dir" "$work"
printf '#!/bin/sh\nexit 101\n' >"$work/usr/sbin/policy-rc.d"
# Check-Valid-Until=false: sid's InRelease is re-signed daily; a mirror or a
# machine clock a few weeks off makes apt refuse it as expired.  The
# signature is still checked.
chmod +x "$work/usr/sbin/policy-rc.d"
if ! { chroot "$work" env LC_ALL=C apt-get -o Acquire::Check-Valid-Until=false update -q &&
       chroot "$work" env DEBIAN_FRONTEND=noninteractive LC_ALL=C \
         apt-get install -y -q --no-install-recommends simple-whip-client gstreamer1.0-plugins-good \
         gstreamer1.0-plugins-bad gstreamer1.0-nice; } >"$work.log" 2>&1; then
  tail -n 20 "$work.log" >&2
  die "installing simple-whip-client in the chroot failed; full log in $work.log"
fi
chroot "$work" apt-get clean
rm -f "$work/usr/sbin/policy-rc.d" "$work.log"
rm -rf "$work"/var/lib/apt/lists/* "$work"/var/cache/apt/*.bin "$work"/usr/share/doc/* \
       "$work"/usr/share/man/* "$work"/usr/share/locale/*
mv "$work" "$dir"
version
