"""One frozen, validated configuration object per node, and the one place that reads ``KVRAFT_*``.

Every ``kvraft serve`` flag has an environment form: ``--replication-factor`` is
``KVRAFT_REPLICATION_FACTOR``. Command-line flags win over the environment, which wins over the
defaults below.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

ENV_PREFIX = "KVRAFT_"
NODE_ID = re.compile(r"^[A-Za-z0-9_.]{1,32}$")
# A new member's HOST:PORT: a host name, IPv4 or [IPv6] address, and a port of 1 to 65535. The
# OpenAPI document states the same pattern (api/openapi.py imports it; kvraft.leader checks it).
PORT = (
    r"(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]"
    r"|6553[0-5])"
)
MEMBER_ADDRESS = re.compile(r"^(?:[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\]):" + PORT + "$")

POLICIES = ("least-loaded", "round-robin", "random")
TEST_FAULTS = ("", "drop_replication", "ack_without_write", "lww_ack")


class ConfigError(ValueError):
    """A configuration value is missing or invalid; the message says which and why."""


def parse_hostport(text: str, what: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    # isascii: str.isdigit() is also true of digits int() cannot read (superscripts)
    if not sep or not host or not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{what}: expected HOST:PORT, got {text!r}")
    return host, int(port)


@dataclass(frozen=True)
class Config:
    """A node's configuration. Construct with keyword arguments; validated on construction."""

    id: str = ""
    http: str = "127.0.0.1:8001"
    advertise: str = ""  # HTTP address peers use to reach this node; default: http
    raft: str = "127.0.0.1:9001"
    peers: tuple[str, ...] = ()  # Raft addresses of the other members
    join: str = ""  # HTTP address of a member of a running cluster to join (peers learnt from it)
    data_dir: str = "data/n1"
    secret: str = field(default="", repr=False)
    partitions: int = 64
    replication_factor: int = 2
    max_value_bytes: int = 1 << 20
    threads: int = 32  # the node's pool for parallel peer calls (fan-out, sync)
    max_connections: int = 1024  # HTTP connections at once (each has its own thread)
    fsync: bool = False
    peer_timeout: float = 2.0
    sync_interval: float = 5.0
    dead_after: float = 30.0
    balance: str = "least-loaded"
    # seconds a key whose PUT met another coordinator's newer version has its PUTs sent to its
    # owner, its first replica serving (kvraft/hotkeys.py); 0: every node writes every key itself
    hot_key_ttl: float = 1.0
    token: str = field(default="", repr=False)
    # Cluster operations (membership, import, export) need this bearer token; empty: refused
    # to everyone but peers (their requests are signed with a key derived from the secret).
    admin_token: str = field(default="", repr=False)
    # Websocket Origins allowed ("scheme://host:port", comma-separated; "*" allows any); empty:
    # this node's own http/advertise addresses and their localhost forms.
    allowed_origins: tuple[str, ...] = ()
    tls_cert: str = ""  # PEM certificate (chain) for HTTPS on the HTTP port; with tls_key
    tls_key: str = ""
    tls_ca: str = ""  # PEM CA bundle peers are verified against (default: the system's)
    head_timeout: float = 10.0  # seconds for a whole request head, from its first byte
    body_timeout: float = 60.0  # seconds for a whole request body
    idle_timeout: float = 75.0  # seconds a keep-alive connection may wait for its next request
    max_client_connections: int = 256  # HTTP connections at once from one client address
    ftp: str = "127.0.0.1:2121"
    ftp_user: str = "kvraft"
    ftp_password: str = field(default="", repr=False)
    ftp_tls: bool = False
    clock_offset_ms: int = 0  # chaos: skew this node's physical clock
    # seconds this node's clock may be from the majority of its peers before it turns not-ready
    # and refuses to coordinate writes; also how far ahead a peer's timestamp may be and still be
    # folded into this node's HLC
    max_clock_offset: float = 0.5
    # Test-only fault switches (never set in production): "drop_replication" stops sending
    # records to other replicas (they diverge until anti-entropy heals them); "ack_without_write"
    # acknowledges writes without storing them (the chaos checker's negative control);
    # "lww_ack" counts a replica that kept a newer version as an ack (plain last-writer-wins:
    # the register checker's negative control).
    test_fault: str = ""
    log_level: str = "warning"

    def __post_init__(self) -> None:
        if not NODE_ID.match(self.id):
            raise ConfigError(f"id: 1-32 letters, digits, '_' or '.', got {self.id!r}")
        parse_hostport(self.http, "http")
        if self.advertise:
            parse_hostport(self.advertise, "advertise")
        parse_hostport(self.raft, "raft")
        for peer in self.peers:
            parse_hostport(peer, "peers")
        if self.raft in self.peers:
            raise ConfigError("peers: must not contain this node's own raft address")
        if len(self.secret) < 8:
            raise ConfigError("secret: the cluster secret (KVRAFT_SECRET) needs 8+ characters")
        if not 1 <= self.partitions <= 4096:
            raise ConfigError("partitions: 1 to 4096")
        if not 1 <= self.replication_factor <= 7:
            raise ConfigError("replication_factor: 1 to 7")
        if self.join:
            parse_hostport(self.join, "join")
        elif self.replication_factor > len(self.peers) + 1:
            raise ConfigError(
                f"replication_factor {self.replication_factor} exceeds the "
                f"{len(self.peers) + 1} members"
            )
        if not 1 <= self.max_value_bytes <= 64 << 20:
            raise ConfigError("max_value_bytes: 1 byte to 64 MiB")
        if not 4 <= self.threads <= 512:
            raise ConfigError("threads: 4 to 512")
        if not 16 <= self.max_connections <= 16384:
            raise ConfigError("max_connections: 16 to 16384")
        if self.balance not in POLICIES:
            raise ConfigError(f"balance: one of {', '.join(POLICIES)}")
        if not 0.001 <= self.max_clock_offset <= 86400:
            raise ConfigError("max_clock_offset: 0.001 to 86400 seconds")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("tls_cert and tls_key: give both or neither")
        for path in (self.tls_cert, self.tls_key, self.tls_ca):
            if path and not os.path.isfile(path):
                raise ConfigError(f"tls: no such file {path!r}")
        if not 1 <= self.max_client_connections <= self.max_connections:
            raise ConfigError("max_client_connections: 1 to max_connections")
        for origin in self.allowed_origins:
            if origin != "*" and not re.match(r"^https?://[^/?#\s]+$", origin):
                raise ConfigError(f"allowed_origins: scheme://host[:port], got {origin!r}")
        for name in (
            "peer_timeout",
            "sync_interval",
            "dead_after",
            "head_timeout",
            "body_timeout",
            "idle_timeout",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}: must be positive")
        if not 0 <= self.hot_key_ttl <= 60:
            raise ConfigError("hot_key_ttl: 0 (off) to 60 seconds")
        parse_hostport(self.ftp, "ftp")
        if self.test_fault not in TEST_FAULTS:
            raise ConfigError(f"test_fault: one of {', '.join(TEST_FAULTS[1:])} or empty")

    @property
    def http_addr(self) -> tuple[str, int]:
        return parse_hostport(self.http, "http")

    @property
    def all_raft(self) -> tuple[str, ...]:
        return tuple(sorted((self.raft, *self.peers)))

    @classmethod
    def load(cls, flags: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Config:
        """Merge defaults, ``KVRAFT_*`` variables and flags (None means "not given")."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = flags.get(f.name)
            if raw is None:
                raw = environ.get(ENV_PREFIX + f.name.upper())
            if raw is None:
                continue
            values[f.name] = _coerce(f.name, str(f.type), raw)  # a str: postponed annotations
        return cls(**values)


def _coerce(name: str, kind: str, raw: Any) -> Any:
    if not isinstance(raw, str):
        return tuple(raw) if kind.startswith("tuple") else raw
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "bool":
            low = raw.strip().lower()
            if low not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError(raw)
            return low in ("1", "true", "yes", "on")
        if kind.startswith("tuple"):
            return tuple(p.strip() for p in raw.split(",") if p.strip())
    except ValueError:
        raise ConfigError(f"{name}: cannot read {raw!r} as {kind}") from None
    return raw


def fields_help() -> list[tuple[str, str, Any]]:
    """(name, type, default) of every Config field, for building command-line flags."""
    return [(f.name, str(f.type), f.default) for f in fields(Config)]


# -- settings of the other commands: the same KVRAFT_* names, read here and nowhere else ---------


def _environ(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if environ is None else environ


def _env_int(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(ENV_PREFIX + name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{ENV_PREFIX + name}: cannot read {raw!r} as int") from None


@dataclass(frozen=True)
class FtpSettings:
    """``kvraft ftp`` (the FTP server alone): ``KVRAFT_FTP_LISTEN``, ``KVRAFT_FTP_USER``,
    ``KVRAFT_FTP_PASSWORD``, ``KVRAFT_FTP_ROOT``, ``KVRAFT_FTP_TLS_CERT``, ``KVRAFT_FTP_TLS_KEY``
    and ``KVRAFT_FTP_PASSIVE_PORTS``. Not validated here: the command checks what it uses."""

    listen: str = "0.0.0.0:2121"
    user: str = "kvraft"
    password: str = field(default="", repr=False)
    root: str = "data/ftp"
    tls_cert: str | None = None
    tls_key: str | None = None
    passive_ports: str = ""  # "LOW-HIGH", empty: any port

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> FtpSettings:
        env = _environ(environ)
        return cls(
            listen=env.get("KVRAFT_FTP_LISTEN", cls.listen),
            user=env.get("KVRAFT_FTP_USER", cls.user),
            password=env.get("KVRAFT_FTP_PASSWORD", ""),
            root=env.get("KVRAFT_FTP_ROOT", cls.root),
            tls_cert=env.get("KVRAFT_FTP_TLS_CERT"),
            tls_key=env.get("KVRAFT_FTP_TLS_KEY"),
            passive_ports=env.get("KVRAFT_FTP_PASSIVE_PORTS", ""),
        )


@dataclass(frozen=True)
class UpDefaults:
    """Defaults of ``kvraft up`` (its flags win): ``KVRAFT_HOST``, ``KVRAFT_HTTP_BASE``,
    ``KVRAFT_RAFT_BASE``, ``KVRAFT_FTP_PORT``, ``KVRAFT_DATA_DIR``, ``KVRAFT_REPLICATION_FACTOR``,
    and the secrets it would otherwise generate once under the data directory: ``KVRAFT_SECRET``,
    ``KVRAFT_ADMIN_TOKEN``, ``KVRAFT_FTP_PASSWORD`` (empty: not set). ConfigError when a number
    does not read as one."""

    host: str = "127.0.0.1"
    http_base: int = 8001
    raft_base: int = 9001
    ftp_port: int = 2121
    data_dir: str = "data"
    replication_factor: int = 2
    secret: str = field(default="", repr=False)
    admin_token: str = field(default="", repr=False)
    ftp_password: str = field(default="", repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> UpDefaults:
        env = _environ(environ)
        return cls(
            host=env.get("KVRAFT_HOST", cls.host),
            http_base=_env_int(env, "HTTP_BASE", cls.http_base),
            raft_base=_env_int(env, "RAFT_BASE", cls.raft_base),
            ftp_port=_env_int(env, "FTP_PORT", cls.ftp_port),
            data_dir=env.get("KVRAFT_DATA_DIR", cls.data_dir),
            replication_factor=_env_int(env, "REPLICATION_FACTOR", cls.replication_factor),
            secret=env.get("KVRAFT_SECRET", ""),
            admin_token=env.get("KVRAFT_ADMIN_TOKEN", ""),
            ftp_password=env.get("KVRAFT_FTP_PASSWORD", ""),
        )


@dataclass(frozen=True)
class ClientSettings:
    """Defaults of :class:`kvraft.client.Client` and the client commands: ``KVRAFT_NODES`` (the
    raw text: comma-separated URLs, or a node count), ``KVRAFT_TOKEN`` and ``KVRAFT_ADMIN_TOKEN``
    (None when unset or empty), ``KVRAFT_CLIENT_ROUTING`` (the raw text: replica or any,
    checked by kvraft.client.routing)."""

    nodes: str = ""
    token: str | None = field(default=None, repr=False)
    admin_token: str | None = field(default=None, repr=False)
    routing: str = ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ClientSettings:
        env = _environ(environ)
        return cls(
            nodes=env.get("KVRAFT_NODES", ""),
            token=env.get("KVRAFT_TOKEN") or None,
            admin_token=env.get("KVRAFT_ADMIN_TOKEN") or None,
            routing=env.get("KVRAFT_CLIENT_ROUTING", ""),
        )
