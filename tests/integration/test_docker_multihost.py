"""deploy/compose-node.yml for real: a cluster across "hosts", one compose project per node.

Each node is its own compose project with host networking, as on three machines, and finds the
others only through the addresses it is given (KVRAFT_ADDR, KVRAFT_PEERS, KVRAFT_FTP): here the
"hosts" are three random loopback addresses (127.A.B.2-4) and random free ports, so nothing
collides with another cluster on this machine. The first project also runs the FTP server
(profile ftp). Checked: every container healthy, every node ready, the cluster view names the
advertised addresses, a write through one host is read through another, a report goes through
the FTP server, and `down -v` leaves nothing. Skipped only where there is no Docker engine.
"""

from __future__ import annotations

import json
import random
import secrets
import socket

import pytest
import requests
import websocket

from chaos import compose as dc
from tests.harness.cluster import wait_for

FILE = dc.ROOT / "deploy" / "compose-node.yml"


def bindable(addr: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((addr, port))
        except OSError:
            return False
    return True


def pick(rng: random.Random) -> tuple[list[str], dict[str, str]]:
    """Three loopback "host" addresses and ports free on all of them."""
    base = f"127.{rng.randrange(100, 250)}.{rng.randrange(1, 250)}"
    addrs = [f"{base}.{i}" for i in (2, 3, 4)]
    for _ in range(100):
        low = rng.randrange(20000, 59000)
        ports = list(range(low, low + 13))  # http, raft, ftp, 10 passive
        if all(bindable(a, p) for a in addrs for p in ports):
            return addrs, {
                "KVRAFT_HTTP_PORT": str(ports[0]),
                "KVRAFT_RAFT_PORT": str(ports[1]),
                "KVRAFT_FTP_PORT": str(ports[2]),
                "KVRAFT_FTP_PASSIVE": f"{ports[3]}-{ports[12]}",
            }
    raise AssertionError("no free ports on the loopback hosts")


@pytest.fixture(scope="module")
def hosts():
    dc.skip_without_engine(pytest.skip)
    image = dc.source_tag()
    print(dc.build_image(image))
    rng = random.Random()
    addrs, ports = pick(rng)
    common = {
        "KVRAFT_SECRET": secrets.token_hex(24),
        "KVRAFT_FTP_PASSWORD": secrets.token_hex(16),
        "KVRAFT_FTP": f"{addrs[0]}:{ports['KVRAFT_FTP_PORT']}",
        "KVRAFT_IMAGE": image,
        **ports,
    }
    tag = f"kvraft-mh-{secrets.token_hex(3)}"
    projects = []
    for i, addr in enumerate(addrs):
        peers = ",".join(f"{a}:{ports['KVRAFT_RAFT_PORT']}" for a in addrs if a != addr)
        env = {**common, "KVRAFT_ID": f"n{i + 1}", "KVRAFT_ADDR": addr, "KVRAFT_PEERS": peers}
        projects.append(
            dc.ComposeProject(
                file=FILE,
                name=f"{tag}-n{i + 1}",
                env=env,
                nodes=("node",),
                owned=True,
                profiles=("ftp",) if i == 0 else (),
                extra=("ftp",) if i == 0 else (),
            )
        )
    try:
        for p in projects:
            p.up(timeout=120)
        for p in projects:
            p.wait_healthy(90)
        yield projects, [f"http://{a}:{ports['KVRAFT_HTTP_PORT']}" for a in addrs]
    finally:
        for p in projects:
            dc.stop_project(p)


def test_nodes_on_three_hosts_form_one_cluster(hosts):
    projects, urls = hosts
    with requests.Session() as http:
        wait_for(
            lambda: all(http.get(u + "/ready", timeout=2).ok for u in urls),
            60,
            "every node ready",
            interval=0.3,
        )
        view = http.get(urls[1] + "/cluster", timeout=5).json()
        advertised = {n["id"]: n["http"] for n in view["nodes"]}
        assert advertised == {f"n{i + 1}": u.removeprefix("http://") for i, u in enumerate(urls)}
        # host networking: the container has the host's addresses, nothing is published
        info = projects[1].inspect(projects[1].container("node"))
        assert info["HostConfig"]["NetworkMode"] == "host"
        assert info["Config"]["User"] == "kvraft"
        put = http.put(urls[0] + "/kv/across", data=b"written on host 1", timeout=10)
        assert put.status_code == 201, put.text
        got = http.get(urls[2] + "/kv/across", timeout=10)
        assert (got.status_code, got.content) == (200, b"written on host 1")
    ws = websocket.create_connection(urls[1].replace("http", "ws") + "/report", timeout=30)
    try:
        ws.send(json.dumps({"type": "report", "prefix": "across"}))
        report = json.loads(ws.recv())
    finally:
        ws.close()
        ws.shutdown()
    assert report["node"] == "n2" and [k["key"] for k in report["keys"]] == ["across"]


def test_down_v_removes_every_host_project(hosts):
    projects, _ = hosts
    for p in projects:
        assert dc.stop_project(p) == []
        assert p.leftovers() == {"containers": [], "networks": [], "volumes": []}
