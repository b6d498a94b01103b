"""Optional TLS for client and peer HTTP (KVRAFT_TLS_CERT / KVRAFT_TLS_KEY / KVRAFT_TLS_CA), on a
real 3-node cluster with a CA and a certificate this test generates (``cryptography``).

Clients are raw TLS sockets (``ssl`` around a socket, no HTTP library): a write acknowledged by
every replica shows the peers talk to each other over TLS too (they cannot reach each other
otherwise); plain HTTP on the TLS port gets no answer and changes nothing; a client that does
not trust the CA is refused at the handshake; the node keeps serving.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import socket
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.harness.cluster import Cluster, wait_for


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_pki(folder) -> dict[str, str]:
    """A CA, and a server certificate it signs for 127.0.0.1 and localhost; PEM file paths."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("kvraft test CA"))
        .issuer_name(_name("kvraft test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("kvraft node"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = {"ca": folder / "ca.pem", "cert": folder / "node.pem", "key": folder / "node.key"}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return {k: str(v) for k, v in paths.items()}


class TlsCluster(Cluster):
    def url(self, i: int) -> str:
        return "https://" + self.nodes[i].http


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, pki):
    c = TlsCluster(
        str(tmp_path_factory.mktemp("tls")),
        env={
            "KVRAFT_TLS_CERT": pki["cert"],
            "KVRAFT_TLS_KEY": pki["key"],
            "KVRAFT_TLS_CA": pki["ca"],
        },
    )
    c.http.verify = pki["ca"]  # the harness's own waits go over HTTPS too
    c.http.trust_env = False  # REQUESTS_CA_BUNDLE would win over verify
    with c:
        yield c


def tls_raw(c: Cluster, i: int, data: bytes, ca: str) -> tuple[bytes, bytes]:
    """One request over a raw TLS socket; (head, body) of the answer as sent."""
    host, port = c.nodes[i].http.rsplit(":", 1)
    ctx = ssl.create_default_context(cafile=ca)
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=host) as s:
            s.sendall(data)
            out = b""
            while chunk := s.recv(65536):
                out += chunk
    head, _, body = out.partition(b"\r\n\r\n")
    return head, body


def tls_exchange(c: Cluster, i: int, data: bytes, ca: str) -> tuple[int, bytes]:
    """One request over a raw TLS socket; (status, body)."""
    head, body = tls_raw(c, i, data, ca)
    return int(head.split(b" ")[1]), body


def req(method: str, target: str, body: bytes = b"") -> bytes:
    return (
        f"{method} {target} HTTP/1.1\r\nHost: tls\r\nConnection: close\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def test_a_write_is_replicated_over_tls_and_read_back(cluster, pki):
    status, body = tls_exchange(cluster, 0, req("PUT", "/kv/tls%2Fkey?w=all", b"secret"), pki["ca"])
    assert status == 201, body
    assert json.loads(body)["acks"] == 2  # both replicas: peers reached each other over TLS
    for i in range(3):
        status, body = tls_exchange(cluster, i, req("GET", "/kv/tls%2Fkey?r=all"), pki["ca"])
        assert status == 200 and body == b"secret"
    status, body = tls_exchange(cluster, 1, req("GET", "/cluster"), pki["ca"])
    assert all(n["alive"] for n in json.loads(body)["nodes"])


def test_plain_http_on_the_tls_port_gets_no_answer_and_the_node_serves(cluster, pki):
    host, port = cluster.nodes[0].http.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(req("PUT", "/kv/tls%2Fplain", b"cleartext"))
        got = b""
        try:
            while chunk := s.recv(65536):
                got += chunk
        except ConnectionResetError:
            pass
    assert b"HTTP/1.1 2" not in got  # no success: a TLS alert or nothing
    status, _body = tls_exchange(cluster, 0, req("GET", "/kv/tls%2Fplain?r=all"), pki["ca"])
    assert status == 404


def test_a_client_that_does_not_trust_the_ca_is_refused(cluster, pki, tmp_path):
    other = make_pki(tmp_path)
    with pytest.raises(ssl.SSLCertVerificationError):
        tls_exchange(cluster, 2, req("GET", "/health"), other["ca"])
    assert tls_exchange(cluster, 2, req("GET", "/health"), pki["ca"])[0] == 200


def test_a_redirect_from_the_leader_points_at_https(cluster, pki):
    leader = cluster.leader()

    def every_node_serving() -> bool:  # else the leader's balancer can choose only itself
        nodes = cluster.cluster_view(leader)["nodes"]
        return len(nodes) == 3 and all(n["alive"] and n["serving"] for n in nodes)

    wait_for(every_node_serving, 15, "the leader to see every node ready")
    status, _ = tls_exchange(cluster, leader, req("PUT", "/kv/tls%2Fredir?w=all", b"r"), pki["ca"])
    assert status in (200, 201)
    locations = []
    for _ in range(12):  # the balancer sends some requests to the leader itself (a 200)
        raw_head, _ = tls_raw(cluster, leader, req("GET", "/kv/tls%2Fredir?redirect=1"), pki["ca"])
        head = raw_head.decode("latin-1")
        if head.split(" ")[1] == "307":
            locations += [
                line.split(":", 1)[1].strip()
                for line in head.split("\r\n")
                if line.lower().startswith("location:")
            ]
    assert locations, "the leader never redirected"
    assert all(loc.startswith("https://") for loc in locations), locations
