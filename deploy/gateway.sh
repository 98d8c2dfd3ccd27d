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
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  cd "$here"
  mode=${1:-}
  [ -n "$mode" ] && shift || true
fi

serve_packages=(janus janus-tools python3-venv python3-dev iproute2)  # janus-tools: janus-pp-rec, for recordings
test_packages=(simple-whip-client gstreamer1.0-tools gstreamer1.0-plugins-base
               gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly
               gstreamer1.0-nice gstreamer1.0-libav chromium firefox-esr redis-server nginx-light
               coturn nftables)

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

# Debian's janus package enables its own janus.service: a stock Janus with its
# HTTP API open on every interface and no secret, next to the managed ones.
# Where systemd runs, stop it and keep it from ever starting (disable + mask).
# SYSTEMD_RUN_DIR is the sd_booted() check's folder; tests point it elsewhere.
silence_stock_janus() {
  local run_dir=${SYSTEMD_RUN_DIR:-/run/systemd/system}
  [ -d "$run_dir" ] || return 0            # no systemd: nothing starts the unit
  command -v systemctl >/dev/null || return 0
  [ "$(systemctl is-enabled janus.service 2>/dev/null || true)" = masked ] && return 0
  echo "stopping, disabling and masking Debian's janus.service (the gateway runs its own Janus)" >&2
  as_root systemctl stop janus.service || true
  as_root systemctl disable janus.service || true
  as_root systemctl mask janus.service
}

# --janus URL on the command line: the gateway uses that Janus, not a managed one.
uses_managed_janus() {
  local arg
  for arg in "$@"; do
    case "$arg" in --janus|--janus=*) return 1 ;; esac
  done
  [ -z "${WHIP_GATEWAY_JANUS:-}" ]
}

# The third-party browser players (tests/browser/players) are bundled from npm
# at test time: node and npm from Debian, unless some node is already on PATH.
ensure_node() {
  local missing=()
  command -v node >/dev/null || missing+=(nodejs)
  command -v npm >/dev/null || missing+=(npm)
  [ ${#missing[@]} -eq 0 ] || ensure_packages "${missing[@]}"
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

main() {
case "$mode" in
  serve)
    ensure_packages "${serve_packages[@]}"
    if uses_managed_janus "$@"; then silence_stock_janus; fi
    ensure_venv "[serve]"
    exec .venv/bin/whip-gateway serve "$@"
    ;;
  test)
    ensure_packages "${serve_packages[@]}" "${test_packages[@]}"
    silence_stock_janus
    ensure_node
    ensure_venv "[test]"
    # The npm players of tests/browser/test_players.py, installed and bundled into
    # /var/cache/whip-gateway/npm-players while the registry is reachable (the
    # tests run in a network namespace without it); without them those tests skip.
    .venv/bin/python -m tests.browser.npm_players >/dev/null || echo "note: no npm players; their tests will be skipped" >&2
    # A newer Janus (Debian sid, 1.4.x) in a chroot, for the tests that compare
    # versions; without it those tests are skipped, not failed.
    "$here/deploy/janus-sid.sh" >/dev/null || echo "note: no Janus 1.4 chroot; its tests will be skipped" >&2
    # Debian 13/sid's simple-whip-client (Debian 12's aborts at start), in a copy of that chroot.
    "$here/deploy/whip-client-sid.sh" >/dev/null || echo "note: no sid simple-whip-client; its test will be skipped" >&2
    exec .venv/bin/python -m pytest "$@"
    ;;
  *)
    echo "usage: $0 serve [flags] | test [pytest args]" >&2
    exit 2
    ;;
esac
}

# Sourced (tests/unit/test_deploy_script.py calls single functions): define only.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then main "$@"; fi
