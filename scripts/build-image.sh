#!/bin/sh
# Build the kvraft image where no registry can be reached, and quickly where one can.
#
# 1. The base: BASE_IMAGE (default python:3.11-slim, the Dockerfile's default) when it is present
#    or can be pulled; otherwise a local one made from Debian packages by
#    scripts/build-base-image.sh (kvraft-base:bookworm, about a minute the first time).
# 2. Wheels, built on this machine with pip (which reaches PyPI or its cache): every dependency
#    into deploy/wheels/deps/ (again only when pyproject.toml changed), kvraft itself into
#    deploy/wheels/app/ (again only when its sources changed; deploy/wheels/.stamp).
# 3. docker build with --build-arg BASE_IMAGE=...: the Dockerfile installs the wheels with
#    `pip install --no-index`, so the build itself needs no network.
#
# A second run with nothing changed takes a few seconds (every layer cached).
#
# Usage: scripts/build-image.sh [TAG]   (default kvraft:dev; KVRAFT_IMAGE also sets it)
#        PYTHON=python3.11 picks the interpreter that builds the wheels (must be 3.11, like the
#        image's); BASE_IMAGE=... another base; KVRAFT_PULL=0 never tries to pull.
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TAG=${1:-${KVRAFT_IMAGE:-kvraft:dev}}
BASE=${BASE_IMAGE:-python:3.11-slim}
LOCAL_BASE=${KVRAFT_LOCAL_BASE:-kvraft-base:bookworm}
PY=${PYTHON:-python3}
WHEELS="$ROOT/deploy/wheels"
started=$(date +%s)

if ! docker info >/dev/null 2>&1; then
    echo "build-image: no Docker engine (docker info failed)" >&2
    exit 1
fi

# 1. the base image
if docker image inspect "$BASE" >/dev/null 2>&1; then
    :
elif [ "${KVRAFT_PULL:-1}" != 0 ] && timeout 45 docker pull -q "$BASE" >/dev/null 2>&1; then
    :
else
    echo "build-image: $BASE cannot be pulled; using $LOCAL_BASE (built from Debian packages)" >&2
    sh "$ROOT/scripts/build-base-image.sh" "$LOCAL_BASE"
    BASE=$LOCAL_BASE
fi

# 2. wheels, unless nothing they are built from changed: the dependencies when pyproject.toml
#    changed, kvraft alone when only its sources did (the dependency layer then stays cached)
version=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [ "$version" != 3.11 ]; then
    echo "build-image: $PY is Python $version; the image runs 3.11, set PYTHON=python3.11" >&2
    exit 1
fi
deps_stamp=$(cd "$ROOT" && { echo "$version"; cat pyproject.toml; } | sha256sum | cut -d' ' -f1)
app_stamp=$(cd "$ROOT" && { echo "$deps_stamp"; cat README.md;
        find kvraft api kvraft_cmd -type f ! -path '*__pycache__*' ! -name '*.py[cod]' | LC_ALL=C sort |
        xargs sha256sum; } | sha256sum | cut -d' ' -f1)
old_deps=$(sed -n 1p "$WHEELS/.stamp" 2>/dev/null || true)
old_app=$(sed -n 2p "$WHEELS/.stamp" 2>/dev/null || true)
wheel() {  # pip wheel ARGS... into $tmp/all, quietly; the log on failure
    if ! (cd "$ROOT" && "$PY" -m pip wheel -q --disable-pip-version-check \
            --wheel-dir "$tmp/all" "$@" >"$tmp/pip.log" 2>&1); then
        cat "$tmp/pip.log" >&2
        echo "build-image: pip wheel failed" >&2
        exit 1
    fi
    rm -rf "$ROOT/build"  # setuptools' scratch folder from building the kvraft wheel
}
if [ "$old_deps" != "$deps_stamp" ] || ! ls "$WHEELS"/deps/*.whl >/dev/null 2>&1; then
    tmp=$(mktemp -d /tmp/kvraft-wheels.XXXXXX)
    trap 'rm -rf "$tmp"' EXIT
    wheel .
    rm -f "$WHEELS"/deps/*.whl "$WHEELS"/app/*.whl
    mv "$tmp"/all/kvraft-*.whl "$WHEELS/app/"
    mv "$tmp"/all/*.whl "$WHEELS/deps/"
    printf '%s\n%s\n' "$deps_stamp" "$app_stamp" >"$WHEELS/.stamp"
elif [ "$old_app" != "$app_stamp" ] || ! ls "$WHEELS"/app/kvraft-*.whl >/dev/null 2>&1; then
    tmp=$(mktemp -d /tmp/kvraft-wheels.XXXXXX)
    trap 'rm -rf "$tmp"' EXIT
    wheel --no-deps .
    rm -f "$WHEELS"/app/*.whl
    mv "$tmp"/all/kvraft-*.whl "$WHEELS/app/"
    printf '%s\n%s\n' "$deps_stamp" "$app_stamp" >"$WHEELS/.stamp"
fi

# 3. the image
blog=$(mktemp /tmp/kvraft-build.XXXXXX)
if ! docker build --build-arg "BASE_IMAGE=$BASE" -t "$TAG" "$ROOT" >"$blog" 2>&1; then
    cat "$blog" >&2
    rm -f "$blog"
    echo "build-image: docker build failed" >&2
    exit 1
fi
rm -f "$blog"
echo "build-image: $TAG on $BASE in $(( $(date +%s) - started )) s," \
     "$(docker image inspect -f '{{.Size}}' "$TAG" | awk '{printf "%.0f MB", $1 / 1e6}')"
