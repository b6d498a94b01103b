#!/bin/sh
# Make a Debian bookworm base image with python3 and python3-venv, from Debian packages only, for
# engines that cannot pull python:3.11-slim (no registry). Used by scripts/build-image.sh.
#
#   debootstrap --variant=minbase bookworm  ->  a root file system in a temporary folder
#   apt caches, package lists, docs, man pages and locales removed  ->  about 130 MB
#   tar | docker import  ->  the image (default tag kvraft-base:bookworm)
#
# Idempotent: does nothing when the tag already exists (remove it to rebuild). Needs root, the
# docker CLI, debootstrap (scripts/install-test-deps.sh debootstrap installs it) and a reachable
# Debian mirror (DEBIAN_MIRROR, default http://deb.debian.org/debian). Takes about a minute.
#
# Usage: scripts/build-base-image.sh [TAG]
set -eu

TAG=${1:-${KVRAFT_LOCAL_BASE:-kvraft-base:bookworm}}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm

if docker image inspect "$TAG" >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "build-base-image: debootstrap needs root" >&2
    exit 1
fi
if ! command -v debootstrap >/dev/null 2>&1; then
    sh "$(dirname "$0")/install-test-deps.sh" debootstrap
fi

root=$(mktemp -d /tmp/kvraft-base.XXXXXX)
log="$root.log"
cleanup() { rm -rf "$root" "$log"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

started=$(date +%s)
if ! debootstrap --variant=minbase --include=python3,python3-venv "$SUITE" "$root" "$MIRROR" \
        >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    echo "build-base-image: debootstrap $SUITE from $MIRROR failed" >&2
    exit 1
fi
# what a container never needs: downloaded packages, package lists, docs, man pages, locales
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin \
       "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* "$root"/usr/share/man/* \
       "$root"/usr/share/info/* "$root"/var/log/* "$root"/tmp/*
find "$root"/usr/share/locale -mindepth 1 -maxdepth 1 ! -name 'locale.alias' -exec rm -rf {} +
find "$root"/usr/lib/python3* -name __pycache__ -type d -prune -exec rm -rf {} +
# the image's own DNS and hosts files come from the engine at run time
: >"$root"/etc/resolv.conf
printf '%s\n' "$TAG" >"$root"/etc/kvraft-base

tar -C "$root" --numeric-owner -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' \
    --message "debootstrap --variant=minbase $SUITE + python3 python3-venv" \
    - "$TAG" >/dev/null
echo "build-base-image: $TAG from debootstrap $SUITE in $(( $(date +%s) - started )) s," \
     "$(docker image inspect -f '{{.Size}}' "$TAG" | awk '{printf "%.0f MB", $1 / 1e6}')"
