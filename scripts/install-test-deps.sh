#!/bin/sh
# Install the Debian packages the test suite needs, and nothing else:
#   docker-compose  - validates docker-compose.yml without a Docker engine (tests/integration)
#   iptables        - network partitions and packet loss in chaos runs
#   iproute2        - network namespaces and veth pairs (`ip netns`, `ip link`)
#   chromium        - the headless browser the dashboard test drives (through Playwright)
#   fonts-liberation - readable text in its screenshots
#   debootstrap     - the Docker image's base where no registry can be reached
#                     (scripts/build-base-image.sh)
#   hey, wrk        - the independent load tools of make bench, driven by
#                     tests/integration/test_bench_loadtools.py
#
# Idempotent and quiet: a package already installed is skipped, and `apt-get update` runs only
# when something is missing. Needs root (or sudo) and a reachable Debian package mirror; no
# recommended packages (docker-compose would otherwise pull in the docker.io engine).
# Exits non-zero with a message on stderr when a package cannot be installed, so CI fails loudly.
#
# Usage: scripts/install-test-deps.sh [PACKAGE...]   (default: all of the above)
set -eu

PACKAGES=${*:-"docker-compose iptables iproute2 chromium fonts-liberation debootstrap hey wrk"}

installed() {
    dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null | grep -qx installed
}

missing=""
for pkg in $PACKAGES; do
    installed "$pkg" || missing="$missing $pkg"
done
[ -z "$missing" ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-test-deps: apt-get not found; install these packages by hand:$missing" >&2
    exit 1
fi
if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo -n"
else
    echo "install-test-deps: need root (or sudo) to install:$missing" >&2
    exit 1
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
export DEBIAN_FRONTEND=noninteractive
# shellcheck disable=SC2086  # word splitting of $missing and $SUDO is intended
if ! { $SUDO apt-get update -qq && \
       $SUDO apt-get install -y -qq --no-install-recommends $missing; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "install-test-deps: could not install:$missing" >&2
    exit 1
fi
for pkg in $missing; do
    if ! installed "$pkg"; then
        echo "install-test-deps: $pkg still not installed after apt-get" >&2
        exit 1
    fi
done
echo "install-test-deps: installed$missing"
