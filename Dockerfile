# kvraft: one image for a node (`kvraft serve`, the default command) or the FTP server
# (`kvraft ftp`). Configuration comes from KVRAFT_* environment variables; see docker-compose.yml.
# The cluster secret is never baked in: a node refuses to start without KVRAFT_SECRET.
#
# Build it with scripts/build-image.sh: it picks the base (python:3.11-slim when it can be
# pulled, else a Debian base made with debootstrap), builds the wheels on the host and passes
# --build-arg BASE_IMAGE. The build itself then needs no network. A plain
# `docker build .` (or `docker compose build`) on a machine that can pull works too: with no
# wheels in deploy/wheels/, pip installs from the source tree and PyPI.
ARG BASE_IMAGE=python:3.11-slim

# -- stage 1: a virtualenv with the dependencies, from the host's wheels ------------------------
FROM ${BASE_IMAGE} AS deps
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
# A venv on both bases: Debian's python3 refuses system-wide pip installs (PEP 668).
RUN python3 -m venv /opt/kvraft
COPY deploy/wheels/deps/ /wheels/deps/
RUN set -- /wheels/deps/*.whl; \
    if [ -e "$1" ]; then /opt/kvraft/bin/pip install -q --no-index --no-deps "$@"; fi \
 && find /opt/kvraft -name __pycache__ -type d -prune -exec rm -rf {} +

# -- stage 2: the image: the base, the dependencies' venv, kvraft, an unprivileged user ---------
# Everything that does not change with kvraft's code comes first: on this engine's
# fuse-overlayfs every instruction after a cache miss costs about 2 s.
FROM ${BASE_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore \
    PATH=/opt/kvraft/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# Defaults that make sense in a container: listen on every interface, keep state in /data.
ENV KVRAFT_HTTP=0.0.0.0:8001 \
    KVRAFT_DATA_DIR=/data \
    KVRAFT_FTP_LISTEN=0.0.0.0:2121 \
    KVRAFT_FTP_ROOT=/data/ftp
COPY --from=deps /opt/kvraft /opt/kvraft

# An unprivileged user that owns the data directory. A new named volume mounted on /data copies
# this ownership, so the node can write its SQLite store and Raft journal there. The user is
# written into /etc/passwd directly: the same line works on both bases.
RUN echo 'kvraft:x:10001:10001:kvraft:/data:/usr/sbin/nologin' >>/etc/passwd \
 && echo 'kvraft:x:10001:' >>/etc/group \
 && mkdir -p /data \
 && chown 10001:10001 /data
WORKDIR /data

# 8001 HTTP API and peer endpoints, 9001 Raft (pysyncobj, encrypted with the cluster secret),
# 2121 FTP control. 30000-30009 is the FTP passive (data) range: in passive mode the server opens
# a data port and the client connects to it, so a client outside the container only reaches it
# when the range is fixed and published 1:1 (see the ftp service in docker-compose.yml). No
# masquerade address is needed: Python's ftplib and curl ignore the address in a PASV reply and
# reuse the control connection's host, and EPSV replies carry no address at all.
EXPOSE 8001 9001 2121 30000-30009

# Liveness of a node: GET /health on the HTTP port named by KVRAFT_HTTP (a bind-all address is
# probed on 127.0.0.1). Python, because neither base has curl. The FTP service overrides
# this in docker-compose.yml.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; h, _, p = os.environ.get('KVRAFT_HTTP', '0.0.0.0:8001').rpartition(':'); h = '127.0.0.1' if h in ('', '0.0.0.0', '[::]') else h; urllib.request.urlopen(f'http://{h}:{p}/health', timeout=2).close()"]

ENTRYPOINT ["kvraft"]
CMD ["serve"]

COPY pyproject.toml README.md /src/
COPY kvraft/ /src/kvraft/
COPY api/ /src/api/
COPY kvraft_cmd/ /src/kvraft_cmd/
COPY deploy/wheels/app/ /wheels/app/
# Installed the way the README installs it (pip, from this source tree), here from its wheel and
# without the test extras (--no-index: the dependencies are in the venv already, and the build
# needs no network); `pip check` fails the build when a dependency is missing. With no wheels
# (a plain `docker build .` where PyPI can be reached), pip installs the source tree.
RUN set -- /wheels/app/kvraft-*.whl; \
    if [ -e "$1" ]; then \
        /opt/kvraft/bin/pip install -q --no-index "$1"; \
    else \
        /opt/kvraft/bin/pip install -q /src; \
    fi \
 && /opt/kvraft/bin/pip check \
 && rm -rf /src /wheels \
 && find /opt/kvraft -name __pycache__ -type d -prune -exec rm -rf {} +

VOLUME ["/data"]
USER kvraft
