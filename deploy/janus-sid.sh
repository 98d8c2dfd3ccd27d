#!/usr/bin/env bash
# A minimal Debian sid chroot with the `janus` package, for testing the
# gateway against a newer Janus (1.4.x) than the host's own (1.1.2).
#
#   deploy/janus-sid.sh            # as root; idempotent
#
# The chroot goes to ${WHIP_GATEWAY_JANUS_SID:-/var/cache/whip-gateway/janus-sid}.
# When it already holds Janus, the script only prints Janus's version.
# Mirror: ${WHIP_GATEWAY_DEBIAN_MIRROR}, or else the Debian mirror that this
# machine's apt sources already use.  ManagedJanus runs the chroot's Janus
# through JanusProcessConfig(chroot=DIR); tests use the `janus_new` fixture.
set -euo pipefail

dir=${WHIP_GATEWAY_JANUS_SID:-/var/cache/whip-gateway/janus-sid}
suite=sid
keyring=/usr/share/keyrings/debian-archive-keyring.gpg

die() { echo "janus-sid: $*" >&2; exit 1; }
note() { echo "janus-sid: $*" >&2; }

[ "$(id -u)" = 0 ] || die "run as root (debootstrap and chroot need it)"

print_version() { chroot "$dir" /usr/bin/janus --version; }

if [ -x "$dir/usr/bin/janus" ]; then
  print_version
  exit 0
fi

# The first Debian archive URI in the apt sources (one-line or deb822 form),
# skipping debian-security, debian-ports and the like.
find_mirror() {
  local files=() f
  [ -f /etc/apt/sources.list ] && files+=(/etc/apt/sources.list)
  for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] && files+=("$f")
  done
  [ ${#files[@]} -gt 0 ] || return 0
  sed -nE \
    -e 's/^[[:space:]]*deb[[:space:]]+(\[[^]]*\][[:space:]]+)?([a-z+]+:\/\/[^[:space:]]+).*/\2/p' \
    -e 's/^[[:space:]]*URIs:[[:space:]]*//p' "${files[@]}" \
    | tr ' ' '\n' | sed 's:/*$::' | grep -E '/debian$' | head -n1
}

mirror=${WHIP_GATEWAY_DEBIAN_MIRROR:-$(find_mirror)}
[ -n "$mirror" ] || die "no Debian mirror in /etc/apt/sources.list{,.d}; set WHIP_GATEWAY_DEBIAN_MIRROR"

ensure_host_packages() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    note "installing on the host: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}
ensure_host_packages debootstrap debian-archive-keyring

# Fail early and clearly if the mirror cannot give us sid.
probe=$(mktemp)
trap 'rm -f "$probe"' EXIT
if ! /usr/lib/apt/apt-helper -o Acquire::http::Timeout=20 -o Acquire::Retries=1 \
     download-file "$mirror/dists/$suite/InRelease" "$probe" >/dev/null 2>&1; then
  die "Debian mirror $mirror is unreachable (could not fetch dists/$suite/InRelease)"
fi

# Build next to the target and rename at the end, so an interrupted run
# never leaves a half-made chroot at $dir.  Nothing is ever mounted inside.
work="$dir.partial"
mkdir -p "$(dirname "$dir")"
if [ -e "$work" ]; then
  if findmnt -rno TARGET | grep -qF "$work"; then
    die "$work has something mounted inside; unmount it first"
  fi
  rm -rf --one-file-system "$work"
fi
if [ -e "$dir" ]; then
  findmnt -rno TARGET | grep -qF "$dir" && die "$dir has something mounted inside; unmount it first"
  note "$dir exists without Janus; rebuilding it"
  rm -rf --one-file-system "$dir"
fi

start=$(date +%s)
note "debootstrap --variant=minbase $suite from $mirror"
if ! debootstrap --variant=minbase --keyring="$keyring" "$suite" "$work" "$mirror" \
     >"$work.log" 2>&1; then
  tail -n 20 "$work.log" >&2
  die "debootstrap failed; full log in $work.log"
fi

# No docs, man pages or translations; no service starts inside the chroot.
cat >"$work/etc/dpkg/dpkg.cfg.d/01-whip-gateway-minimal" <<'EOF'
path-exclude /usr/share/doc/*
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
EOF
cat >"$work/etc/apt/apt.conf.d/01-whip-gateway-minimal" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
EOF
printf '#!/bin/sh\nexit 101\n' >"$work/usr/sbin/policy-rc.d"
chmod +x "$work/usr/sbin/policy-rc.d"

note "apt-get install janus (in the chroot)"
if ! chroot "$work" env DEBIAN_FRONTEND=noninteractive LC_ALL=C \
     apt-get install -y -q --no-install-recommends janus >>"$work.log" 2>&1; then
  tail -n 20 "$work.log" >&2
  die "installing janus in the chroot failed; full log in $work.log"
fi

chroot "$work" apt-get clean
rm -f "$work/usr/sbin/policy-rc.d"
rm -rf "$work"/var/lib/apt/lists/* "$work"/var/cache/apt/*.bin "$work"/var/cache/debconf/*-old \
       "$work"/var/log/*.log "$work"/var/log/apt/* "$work"/usr/share/doc/* "$work"/usr/share/man/* \
       "$work"/usr/share/locale/*
rm -f "$work.log"

mv "$work" "$dir"
note "made $dir in $(( $(date +%s) - start )) s, $(du -sh --one-file-system "$dir" | cut -f1) on disk"
print_version
