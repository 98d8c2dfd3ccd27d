#!/usr/bin/env bash
# One command to set up and run the gateway, or to set up and run every test.
#
#   deploy/gateway.sh serve [whip-gateway serve flags]   # embedded Janus by default
#   deploy/gateway.sh test  [pytest args]                # the whole suite
#
# It installs what is missing: Debian/Ubuntu packages (Janus and the test
# peers) through apt, and a virtual environment in .venv with the project.
# Run it as root (or through sudo): apt needs it, and the tests put Janus in
# a private network namespace.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"
mode=${1:-}
[ -n "$mode" ] && shift || true

serve_packages=(janus python3-venv python3-dev iproute2)
test_packages=(simple-whip-client gstreamer1.0-tools gstreamer1.0-plugins-base
               gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly
               gstreamer1.0-nice gstreamer1.0-libav chromium redis-server nginx-light)

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

ensure_packages() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}" >&2
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

ensure_venv() {
  local extra=$1 stamp=.venv/.installed-$1
  local want
  want=$(sha256sum pyproject.toml | cut -d' ' -f1)
  if [ ! -x .venv/bin/python ]; then
    "${PYTHON:-python3}" -m venv .venv
  fi
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e ".$extra"
    echo "$want" > "$stamp"
  fi
}

case "$mode" in
  serve)
    ensure_packages "${serve_packages[@]}"
    ensure_venv "[serve]"
    exec .venv/bin/whip-gateway serve "$@"
    ;;
  test)
    ensure_packages "${serve_packages[@]}" "${test_packages[@]}"
    ensure_venv "[test]"
    # A newer Janus (Debian sid, 1.4.x) in a chroot, for the tests that compare
    # versions; without it those tests are skipped, not failed.
    "$here/deploy/janus-sid.sh" >/dev/null || echo "note: no Janus 1.4 chroot; its tests will be skipped" >&2
    exec .venv/bin/python -m pytest "$@"
    ;;
  *)
    echo "usage: $0 serve [flags] | test [pytest args]" >&2
    exit 2
    ;;
esac
