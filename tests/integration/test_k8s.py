"""deploy/k8s/ must not rot: validated offline, checked for what an operator relies on, and run.

1. Every manifest is validated with kubernetes-validate (its own copy of the API schemas, no
   cluster, no network), strictly: an unknown field fails. A broken copy must fail (negative
   control).
2. The rendered objects have the properties docs/DEPLOY.md promises: a StatefulSet whose pod
   names are the node ids, a headless Service with publishNotReadyAddresses for the peers, a
   client Service (ready pods only), readiness on /ready and liveness on /health, a
   PodDisruptionBudget of maxUnavailable 1, anti-affinity across hosts, the secrets from a
   Secret (no literal anywhere), the data on a PersistentVolumeClaim.
3. The manifests' own container commands and environment run as local processes, one network
   namespace per pod, with a hosts file (``ip netns exec`` mounts /etc/netns/<ns>/hosts on
   /etc/hosts) that gives the pods' DNS names (kvraft-0.kvraft-peers, kvraft-ftp): Kubernetes'
   ``$(VAR)`` expansion, fieldRef and secretKeyRef are done here, the volume mounts become
   directories, and the probes are the manifests' own. Needs root (CI runs as root).
"""

from __future__ import annotations

import copy
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import kubernetes_validate
import pytest
import requests
import websocket
import yaml

from tests.harness.cluster import wait_for
from tests.harness.compose_local import NetnsNetwork

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
VERSION = "1.30.0"
IMAGE_ENTRYPOINT = ["kvraft"]  # the Dockerfile's ENTRYPOINT (tests/integration/test_compose.py)
SECRET = {"cluster-secret": "k8s-local-test-secret-0123", "ftp-password": "k8s-local-ftp-pw"}


def manifests() -> list[dict]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def one(kind: str, name: str | None = None) -> dict:
    found = [
        d
        for d in manifests()
        if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


# -- 1. offline validation -----------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(p.name for p in K8S.glob("*.yaml")))
def test_manifest_validates_strictly_offline(path):
    docs = [d for d in yaml.safe_load_all((K8S / path).read_text()) if d]
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, VERSION, strict=True)


def test_validation_catches_a_broken_manifest():
    sts = copy.deepcopy(one("StatefulSet"))
    sts["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(sts, VERSION, strict=True)
    pdb = copy.deepcopy(one("PodDisruptionBudget"))
    pdb["spec"]["maxUnavailable"] = [1]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pdb, VERSION, strict=True)


# -- 2. the properties --------------------------------------------------------------------------


def test_statefulset_peers_and_client_services():
    sts = one("StatefulSet")
    labels = sts["spec"]["template"]["metadata"]["labels"]
    assert sts["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert sts["spec"]["podManagementPolicy"] == "Parallel", "a node is ready only with a quorum"
    peers = one("Service", sts["spec"]["serviceName"])
    assert peers["spec"]["clusterIP"] == "None", "headless: a DNS name per pod"
    assert peers["spec"]["publishNotReadyAddresses"] is True
    assert peers["spec"]["selector"].items() <= labels.items()
    assert {p["port"] for p in peers["spec"]["ports"]} == {8001, 9001}
    client = one("Service", "kvraft")
    assert client["spec"].get("clusterIP") != "None"
    assert not client["spec"].get("publishNotReadyAddresses"), "clients reach ready pods only"
    assert client["spec"]["selector"].items() <= labels.items()
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    env = env_of(container)
    assert env["CLUSTER_SIZE"]["value"] == str(sts["spec"]["replicas"]) == "3"
    assert env["PEER_SERVICE"]["value"] == peers["metadata"]["name"]
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["KVRAFT_RAFT"]["value"] == "$(POD_NAME).kvraft-peers:9001"
    assert env["KVRAFT_ADVERTISE"]["value"] == "$(POD_NAME).kvraft-peers:8001"


def test_probes_pdb_affinity_secret_and_volume():
    sts = one("StatefulSet")
    pod = sts["spec"]["template"]["spec"]
    labels = sts["spec"]["template"]["metadata"]["labels"]
    (container,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    env = env_of(container)
    http_port = int(env["KVRAFT_HTTP"]["value"].rpartition(":")[2])
    for probe, path in (("readinessProbe", "/ready"), ("livenessProbe", "/health")):
        get = container[probe]["httpGet"]
        assert get["path"] == path
        assert ports.get(get["port"], get["port"]) == http_port
    pdb = one("PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (term,) = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"].items() <= labels.items()
    # secrets only from a Secret, never as a value, in any manifest
    for name in ("KVRAFT_SECRET", "KVRAFT_FTP_PASSWORD"):
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == "kvraft-secrets" and ref["key"] in SECRET
    text = "".join(p.read_text() for p in K8S.glob("*.yaml"))
    assert "kind: Secret" not in text, "no Secret with a value everyone knows"
    for doc in manifests():
        for c in doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            for e in c.get("env", []):
                if "SECRET" in e["name"] or "PASSWORD" in e["name"]:
                    assert "value" not in e, (doc["metadata"]["name"], e["name"])
    # the data on a claim per pod, mounted where the node keeps it
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == env["KVRAFT_DATA_DIR"]["value"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["fsGroup"] == 10001  # the image's kvraft user


def test_ftp_service_serves_the_passive_range_and_the_nodes_find_it():
    deploy = one("Deployment", "kvraft-ftp")
    (container,) = deploy["spec"]["template"]["spec"]["containers"]
    env = env_of(container)
    low, high = map(int, env["KVRAFT_FTP_PASSIVE_PORTS"]["value"].split("-"))
    svc = one("Service", "kvraft-ftp")
    assert {p["port"] for p in svc["spec"]["ports"]} == {2121, *range(low, high + 1)}
    node_env = env_of(one("StatefulSet")["spec"]["template"]["spec"]["containers"][0])
    assert node_env["KVRAFT_FTP"]["value"] == "kvraft-ftp:2121"
    assert (
        env["KVRAFT_FTP_PASSWORD"]["valueFrom"]["secretKeyRef"]
        == (node_env["KVRAFT_FTP_PASSWORD"]["valueFrom"]["secretKeyRef"])
    )
    claim = deploy["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]
    assert one("PersistentVolumeClaim", claim["claimName"])


# -- 3. the manifests' commands as local processes ------------------------------------------------


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' expansion of ``$(VAR)`` (defined variables only) and ``$$``."""
    return re.sub(
        r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
        lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)),
        value,
    )


def pod_process(pod_name: str, container: dict, root: Path) -> tuple[list[str], dict[str, str]]:
    """The argv and environment Kubernetes would give ``container`` in pod ``pod_name``; volume
    mounts become directories under ``root``."""
    env: dict[str, str] = {}
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = expand(e["value"], env)
        elif "fieldRef" in e["valueFrom"]:
            assert e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
            env[e["name"]] = pod_name
        else:
            env[e["name"]] = SECRET[e["valueFrom"]["secretKeyRef"]["key"]]
    for mount in container.get("volumeMounts", []):
        local = root / pod_name / mount["name"]
        local.mkdir(parents=True, exist_ok=True)
        for k, v in env.items():
            if v == mount["mountPath"] or v.startswith(mount["mountPath"] + "/"):
                env[k] = str(local) + v[len(mount["mountPath"]) :]
    command = container.get("command") or IMAGE_ENTRYPOINT
    argv = [expand(a, env) for a in (*command, *container.get("args", []))]
    bindir = str(Path(sys.executable).parent)  # where this venv's `kvraft` is
    base = {k: v for k, v in os.environ.items() if not k.startswith("KVRAFT_")}
    base["PATH"] = f"{bindir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    return argv, {**base, **env}


@pytest.fixture
def pods(tmp_path):
    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.skip("the pods run in network namespaces: needs root and ip (CI has both)")
    sts = one("StatefulSet")
    ftp = one("Deployment", "kvraft-ftp")
    names = [f"{sts['metadata']['name']}-{i}" for i in range(sts["spec"]["replicas"])]
    net = NetnsNetwork([*names, "ftp"], random.Random())
    peers = sts["spec"]["serviceName"]
    hosts = ["127.0.0.1 localhost"]
    hosts += [
        f"{net.addresses[n]} {n}.{peers} {n}.{peers}.default.svc.cluster.local" for n in names
    ]
    hosts.append(f"{net.addresses['ftp']} kvraft-ftp kvraft-ftp.default.svc.cluster.local")
    etc = [Path("/etc/netns") / ns for ns in net.namespaces.values()]
    procs: dict[str, subprocess.Popen] = {}
    net.up()
    try:
        for d in etc:
            d.mkdir(parents=True, exist_ok=True)
            (d / "hosts").write_text("\n".join(hosts) + "\n")
        specs = {n: sts["spec"]["template"]["spec"]["containers"][0] for n in names}
        specs["ftp"] = ftp["spec"]["template"]["spec"]["containers"][0]
        for name, container in specs.items():
            argv, env = pod_process(name, container, tmp_path)
            log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 (closed with the process)
            procs[name] = subprocess.Popen(
                [*net.prefix(name), *argv],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            log.close()
        yield {"net": net, "names": names, "procs": procs, "specs": specs, "logs": tmp_path}
    finally:
        for p in procs.values():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for p in procs.values():
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)
        net.down()
        for d in etc:
            shutil.rmtree(d, ignore_errors=True)


def probe_ok(address: str, container: dict, probe: str) -> bool:
    spec = container[probe]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    if "httpGet" in spec:
        port = ports.get(spec["httpGet"]["port"], spec["httpGet"]["port"])
        try:
            return requests.get(
                f"http://{address}:{port}{spec['httpGet']['path']}",
                timeout=spec.get("timeoutSeconds", 1),
            ).ok
        except requests.RequestException:
            return False
    port = ports.get(spec["tcpSocket"]["port"], spec["tcpSocket"]["port"])
    try:
        socket.create_connection((address, port), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.mark.timeout(120)
def test_manifests_node_command_and_env_run_a_cluster(pods):
    net, names, procs, specs = pods["net"], pods["names"], pods["procs"], pods["specs"]

    def all_ready() -> bool:
        for name, p in procs.items():
            if p.poll() is not None:
                log = (pods["logs"] / f"{name}.log").read_text()[-2000:]
                raise AssertionError(f"{name} exited with {p.returncode}:\n{log}")
        return all(probe_ok(net.addresses[n], specs[n], "readinessProbe") for n in procs)

    wait_for(all_ready, 60, "every pod's readiness probe", interval=0.3)
    assert all(probe_ok(net.addresses[n], specs[n], "livenessProbe") for n in procs)
    urls = [f"http://{net.addresses[n]}:8001" for n in names]
    view = requests.get(urls[1] + "/cluster", timeout=5).json()
    # the pod names are the node ids ('-' as '_'), advertised by their headless-Service names
    assert sorted(n["id"] for n in view["nodes"]) == ["kvraft_0", "kvraft_1", "kvraft_2"]
    assert sorted(n["http"] for n in view["nodes"]) == [f"{n}.kvraft-peers:8001" for n in names]
    put = requests.put(urls[0] + "/kv/k8s", data=b"from kvraft-0", timeout=10)
    assert put.status_code == 201, put.text
    got = requests.get(urls[2] + "/kv/k8s", timeout=10)
    assert (got.status_code, got.content) == (200, b"from kvraft-0")
    # the nodes reach the FTP pod by its Service name with the password from the Secret
    ws = websocket.create_connection(
        urls[2].replace("http", "ws") + "/report", timeout=30, suppress_origin=True
    )  # not a browser
    try:
        ws.send(json.dumps({"type": "report", "prefix": "k8s"}))
        report = json.loads(ws.recv())
    finally:
        ws.close()
        ws.shutdown()
    assert report["node"] == "kvraft_2" and [k["key"] for k in report["keys"]] == ["k8s"]
    assert (pods["logs"] / "ftp" / "files" / report["file"]).exists()
