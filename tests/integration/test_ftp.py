"""A real pyftpdlib server on 127.0.0.1 (port 0) against FtpClient and plain stdlib ftplib."""

from __future__ import annotations

import datetime
import ftplib
import io
import ipaddress
import random
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from kvraft.reports.ftp import BLOCK_SIZE, FtpAuthError, FtpClient, FtpError
from kvraft_cmd.ftpserver import FtpServer

USER, PASSWORD = "kvraft", "s3cret-pw"
MiB = 1024 * 1024


def _payload(size: int, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(size)


@pytest.fixture
def server(tmp_path):
    with FtpServer(
        "127.0.0.1", 0, USER, PASSWORD, tmp_path / "ftproot", auth_failed_delay=0
    ) as srv:
        yield srv


def _client(srv: FtpServer, **kw) -> FtpClient:
    host, port = srv.address
    kw.setdefault("timeout", 5.0)
    return FtpClient(host, port, kw.pop("user", USER), kw.pop("password", PASSWORD), **kw)


@pytest.fixture(scope="module")
def cert_files(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    d = tmp_path_factory.mktemp("tls")
    cert_path, key_path = d / "cert.pem", d / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path)


@pytest.fixture
def tls_server(tmp_path, cert_files):
    cert, key = cert_files
    with FtpServer(
        "127.0.0.1", 0, USER, PASSWORD, tmp_path / "ftpsroot", cert, key, auth_failed_delay=0
    ) as srv:
        yield srv


@pytest.mark.parametrize("size", [0, 1, BLOCK_SIZE + 1, 5 * MiB])
def test_round_trip_binary_and_file_lands_in_root(server, size):
    data = _payload(size)
    client = _client(server)
    assert client.upload("blob.bin", io.BytesIO(data)) == size
    assert (server.root / "blob.bin").read_bytes() == data
    out = io.BytesIO()
    assert client.download("blob.bin", out) == size
    assert out.getvalue() == data


def test_upload_reads_source_in_blocks(server):
    class Recording(io.BytesIO):
        largest = 0

        def read(self, n=-1):
            Recording.largest = max(Recording.largest, n if n >= 0 else 1 << 62)
            return super().read(n)

    _client(server).upload("big.bin", Recording(_payload(3 * BLOCK_SIZE + 5)))
    assert 0 < Recording.largest <= BLOCK_SIZE


def test_list_and_delete(server):
    client = _client(server)
    assert client.list() == []
    client.upload("b.json", io.BytesIO(b"{}"))
    client.upload("a.json", io.BytesIO(b"[]"))
    assert client.list() == ["a.json", "b.json"]
    client.delete("a.json")
    assert client.list() == ["b.json"]
    assert not (server.root / "a.json").exists()


def test_missing_file_is_a_transfer_error_not_auth(server):
    with pytest.raises(FtpError, match="FTP transfer failed: RETR nope.json") as info:
        _client(server).download("nope.json", io.BytesIO())
    assert not isinstance(info.value, FtpAuthError)


@pytest.mark.parametrize("name", ["", ".", "..", "../x", "a/b", "a\\b", "x\r\nDELE y"])
def test_client_rejects_path_like_remote_names(server, name):
    with pytest.raises(ValueError):
        _client(server).upload(name, io.BytesIO(b"x"))


def test_wrong_password_is_auth_error(server):
    with pytest.raises(FtpAuthError, match=f"FTP login failed for user '{USER}': 530"):
        _client(server, password="wrong").list()
    with pytest.raises(FtpAuthError):
        _client(server, user="nobody").list()


def test_anonymous_login_refused(server):
    host, port = server.address
    with ftplib.FTP() as ftp:
        ftp.connect(host, port, timeout=5)
        with pytest.raises(ftplib.error_perm, match="530"):
            ftp.login()
    with pytest.raises(FtpAuthError):
        _client(server, user="anonymous", password="guest@").list()


def test_server_refuses_anonymous_or_empty_credentials(tmp_path):
    with pytest.raises(ValueError):
        FtpServer("127.0.0.1", 0, "anonymous", "pw", tmp_path)
    with pytest.raises(ValueError):
        FtpServer("127.0.0.1", 0, USER, "", tmp_path)


def test_stopped_server_is_unreachable_and_a_new_one_on_same_port_works(tmp_path):
    root = tmp_path / "root"
    first = FtpServer("127.0.0.1", 0, USER, PASSWORD, root, auth_failed_delay=0)
    first.start()
    host, port = first.address
    client = FtpClient(host, port, USER, PASSWORD, timeout=5.0)
    client.upload("kept.json", io.BytesIO(b"kept"))
    assert first.stop()

    with pytest.raises(FtpError, match=f"FTP server {host}:{port} unreachable: connection refused"):
        client.list()

    with FtpServer(host, port, USER, PASSWORD, root, auth_failed_delay=0) as second:
        assert second.address == (host, port)
        assert client.list() == ["kept.json"]


def test_unreachable_on_timeout():
    # A listening socket that never accepts: the client must give up after its timeout.
    with socket.socket() as lsock:
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(1)
        host, port = lsock.getsockname()
        with pytest.raises(FtpError, match="unreachable: timed out"):
            FtpClient(host, port, USER, PASSWORD, timeout=0.3).list()


def test_independent_stdlib_client_lists_and_fetches(server):
    data = _payload(200_000, seed=3)
    _client(server).upload("report-n1.json", io.BytesIO(data))
    host, port = server.address
    with ftplib.FTP() as ftp:
        ftp.connect(host, port, timeout=5)
        ftp.login(USER, PASSWORD)
        assert ftp.nlst() == ["report-n1.json"]
        chunks: list[bytes] = []
        ftp.retrbinary("RETR report-n1.json", chunks.append)
    assert b"".join(chunks) == data


def test_ftps_round_trip_with_verified_certificate(tls_server, cert_files):
    data = _payload(MiB + 3, seed=11)
    client = _client(tls_server, tls=True, cafile=cert_files[0])
    assert client.upload("secure.bin", io.BytesIO(data)) == len(data)
    out = io.BytesIO()
    assert client.download("secure.bin", out) == len(data)
    assert out.getvalue() == data
    assert client.list() == ["secure.bin"]
    # Without a CA file the channel is still encrypted (certificate unchecked).
    assert _client(tls_server, tls=True).list() == ["secure.bin"]


def test_ftps_refuses_plain_login_and_clear_data_channel(tls_server):
    with pytest.raises(FtpAuthError, match="SSL/TLS required"):
        _client(tls_server).list()
    host, port = tls_server.address
    with ftplib.FTP_TLS() as ftp:  # TLS control channel, but no PROT P
        ftp.connect(host, port, timeout=5)
        ftp.login(USER, PASSWORD)
        with pytest.raises(ftplib.error_perm, match="SSL/TLS required"):
            ftp.nlst()


def test_ftps_client_rejects_untrusted_certificate(tls_server, tmp_path):
    other = tmp_path / "other-ca.pem"
    other.write_bytes(_self_signed_pem())
    with pytest.raises(FtpError, match="TLS negotiation"):
        _client(tls_server, tls=True, cafile=str(other)).list()


def _self_signed_pem() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "someone else")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def test_plain_and_tls_servers_coexist(server, tls_server):
    _client(server).upload("plain.json", io.BytesIO(b"p"))
    _client(tls_server, tls=True).upload("tls.json", io.BytesIO(b"t"))
    assert _client(server).list() == ["plain.json"]
    assert _client(tls_server, tls=True).list() == ["tls.json"]


def test_stop_with_idle_client_returns_within_timeout(tmp_path):
    srv = FtpServer("127.0.0.1", 0, USER, PASSWORD, tmp_path, auth_failed_delay=0)
    srv.start()
    host, port = srv.address
    with ftplib.FTP() as ftp:
        ftp.connect(host, port, timeout=5)
        ftp.login(USER, PASSWORD)
        started = time.monotonic()
        assert srv.stop(timeout=2.0)
        assert time.monotonic() - started < 2.0
        assert not srv.is_running
        with pytest.raises((EOFError, OSError)):
            ftp.voidcmd("NOOP")
    assert srv.stop()  # idempotent
    with pytest.raises(RuntimeError):
        srv.start()


def test_run_ftp_server_prints_address_and_stops_on_sigterm(tmp_path):
    code = (
        "import sys; from kvraft_cmd.ftpserver import run_ftp_server; "
        "run_ftp_server('127.0.0.1', 0, sys.argv[1], sys.argv[2], sys.argv[3])"
    )
    root = tmp_path / "cli-root"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, USER, PASSWORD, str(root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        m = re.fullmatch(r"ftp server on ftp://127\.0\.0\.1:(\d+) root=(.+) user=(\S+)\n", line)
        assert m, line
        assert (m.group(2), m.group(3)) == (str(root), USER)
        client = FtpClient("127.0.0.1", int(m.group(1)), USER, PASSWORD, timeout=5.0)
        client.upload("x.json", io.BytesIO(b"{}"))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert proc.stderr.read() == ""  # pyftpdlib's per-command INFO lines are silenced
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_passive_mode_uses_only_the_configured_ports(tmp_path):
    with socket.socket() as probe:  # a free range of 3 ports, found the honest way
        probe.bind(("127.0.0.1", 0))
        base = probe.getsockname()[1]
    ports = range(base, base + 3) if base + 3 <= 65535 else range(base - 3, base)
    with FtpServer(
        "127.0.0.1", 0, USER, PASSWORD, tmp_path, passive_ports=ports, auth_failed_delay=0
    ) as srv:
        with ftplib.FTP(timeout=5) as ftp:
            ftp.connect(*srv.address)
            ftp.login(USER, PASSWORD)
            seen = [ftp.makepasv()[1] for _ in range(4)]
        assert all(p in ports for p in seen), (seen, ports)
        client = _client(srv)
        client.upload("p.bin", io.BytesIO(b"passive"))  # a real transfer over that range
        out = io.BytesIO()
        client.download("p.bin", out)
        assert out.getvalue() == b"passive"


@pytest.mark.parametrize("text", ["30000-", "abc", "30010-30000", "80-90", "1024-70000"])
def test_kvraft_ftp_refuses_a_bad_passive_range(tmp_path, text):
    env = {"KVRAFT_FTP_PASSWORD": PASSWORD, "KVRAFT_FTP_PASSIVE_PORTS": text, "PATH": ""}
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "kvraft",
            "ftp",
            "--listen",
            "127.0.0.1:0",
            "--root",
            str(tmp_path / "r"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert res.returncode == 2, res
    assert "passive ports" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "r").exists()  # refused before anything was created
