# kvraft: one image for a node (`kvraft serve`, the default command) or the FTP server
# (`kvraft ftp`). Configuration comes from KVRAFT_* environment variables; see docker-compose.yml.
# The cluster secret is never baked in: a node refuses to start without KVRAFT_SECRET.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# Installed the way the README installs it (`make` runs `pip install -e '.[test]'`): pip from the
# source tree, here without the editable link and the test extras. .dockerignore lets in only
# pyproject.toml, README.md and the kvraft and api packages: no virtualenv, data, tests or git.
WORKDIR /src
COPY . .
RUN pip install . \
 && rm -rf /src

# Run as an unprivileged user that owns the data directory. A new named volume mounted on /data
# copies this ownership, so the node can write its SQLite store and Raft journal there.
RUN useradd --system --uid 10001 --user-group --home-dir /data --no-create-home kvraft \
 && mkdir -p /data \
 && chown kvraft:kvraft /data
WORKDIR /data
VOLUME ["/data"]

# Defaults that make sense in a container: listen on every interface, keep state in /data.
ENV KVRAFT_HTTP=0.0.0.0:8001 \
    KVRAFT_DATA_DIR=/data \
    KVRAFT_FTP_LISTEN=0.0.0.0:2121 \
    KVRAFT_FTP_ROOT=/data/ftp

# 8001 HTTP API and peer endpoints, 9001 Raft (pysyncobj, encrypted with the cluster secret),
# 2121 FTP control. 30000-30009 is the FTP passive (data) range: in passive mode the server opens
# a data port and the client connects to it, so a client outside the container only reaches it
# when the range is fixed and published 1:1 (see the ftp service in docker-compose.yml). No
# masquerade address is needed: Python's ftplib and curl ignore the address in a PASV reply and
# reuse the control connection's host, and EPSV replies carry no address at all.
EXPOSE 8001 9001 2121 30000-30009

USER kvraft

# Liveness of a node: GET /health on the HTTP port named by KVRAFT_HTTP (a bind-all address is
# probed on 127.0.0.1). Python, because the slim image has no curl. The FTP service overrides
# this in docker-compose.yml.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; h, _, p = os.environ.get('KVRAFT_HTTP', '0.0.0.0:8001').rpartition(':'); h = '127.0.0.1' if h in ('', '0.0.0.0', '[::]') else h; urllib.request.urlopen(f'http://{h}:{p}/health', timeout=2).close()"]

ENTRYPOINT ["kvraft"]
CMD ["serve"]
