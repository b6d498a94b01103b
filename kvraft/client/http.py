"""A typed Python client for the kvraft public HTTP API (v1), used by the CLI and the tests.

:class:`Client` holds a list of node URLs and one :class:`requests.Session` (persistent, keep-alive
connections). Every node serves every request, so a request goes to the node that answered last
and moves on to the next one when a node is down: connection refused or reset, a timeout, or an
answer of 502/503/504. That failover applies to operations that are safe to repeat: reads, ``PUT``
and ``DELETE`` of a named key (last writer wins, so a repeated write only makes a newer version)
and ``import``. ``POST /kv`` and ``POST /export`` create something new each time: they move to
another node only when the connection could not even be opened, never once the request may have
been sent. After every node failed the client waits (exponential backoff) and makes up to
``retries`` more passes before raising :class:`Unavailable`.

Key requests (get, put, delete) are partition-aware by default (``smart=True``, or
``KVRAFT_CLIENT_ROUTING=replica``): the client learns the partition map from ``GET /cluster``
on first use (kvraft.client.router) and sends each one straight to a replica of its key that
may serve it (kvraft.client.routing), which saves the hop a non-replica node or the partition
leader's balancing adds. When it has no map, or every such replica failed (unreachable, or
502/503/504), the request goes the way above; an unreachable replica, a forwarded answer or a
write whose replicas differ from the map makes the client fetch the map again. Routing never
changes an answer (every node serves every key), only where it is computed.

Errors are typed (:class:`KvClientError` and subclasses) and carry the HTTP status, the server's
error code and message (kvraft.client.errors). This module does no printing; its defaults
(``KVRAFT_NODES``, ``KVRAFT_TOKEN``, ``KVRAFT_ADMIN_TOKEN``, ``KVRAFT_CLIENT_ROUTING``) come
from :class:`kvraft.config.ClientSettings`. The routing state is thread-safe; the client as a
whole is not (it shares one requests session): use one client per thread.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import requests

from ..config import ClientSettings
from ..keys import LEVELS
from . import routing
from .errors import (
    RETRY_STATUSES,
    BadRequest,
    KvClientError,
    ServerError,
    Unavailable,
    error_from_code,
    error_from_status,
)
from .router import Router

DEFAULT_NODES = ("http://127.0.0.1:8001", "http://127.0.0.1:8002", "http://127.0.0.1:8003")
MAX_PAGE = 1000  # the server's largest ``limit`` for GET /kv

ProgressCallback = Callable[[dict], None]


# -- results -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WriteResult:
    """The answer to a PUT, POST /kv or DELETE. ``node`` is the id of the node that handled it
    (``X-Kvraft-Node``); ``created`` is True for a 201 (a new key)."""

    key: str
    version: str
    replicas: tuple[str, ...] = ()
    acks: int = 0
    created: bool = False
    hinted: tuple[str, ...] = ()
    node: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "version": self.version,
            "replicas": list(self.replicas),
            "acks": self.acks,
            "created": self.created,
            "hinted": list(self.hinted),
            "node": self.node,
        }


@dataclass(frozen=True, slots=True)
class Value:
    """A value read by GET: the raw bytes, their version and the id of the node that answered."""

    value: bytes
    version: str
    node: str


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a listing: sorted keys, and the ``after`` for the next page (None at the end)."""

    keys: list[str]
    next: str | None


# -- helpers -------------------------------------------------------------------------------------


def normalize_node(url: str) -> str:
    """``host:port`` or ``http://host:port/`` -> ``http://host:port`` (ValueError when empty)."""
    text = url.strip()
    if not text:
        raise ValueError("empty node URL")
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) node URL: {url!r}")
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def nodes_from_env(environ: Mapping[str, str] | None = None) -> list[str]:
    """The default node list: ``KVRAFT_NODES`` (comma-separated URLs), else the local cluster.

    A bare number N in ``KVRAFT_NODES`` (the node count ``kvraft up`` reads) means the local
    cluster of N nodes: ``http://127.0.0.1:8001`` onwards."""
    raw = ClientSettings.from_env(environ).nodes.strip()
    if raw.isdigit() and int(raw) > 0:
        return [f"http://127.0.0.1:{8001 + i}" for i in range(int(raw))]
    urls = [normalize_node(p) for p in raw.split(",") if p.strip()]
    return urls or list(DEFAULT_NODES)


def routing_from_env(environ: Mapping[str, str] | None = None, default: str = "replica") -> str:
    """``KVRAFT_CLIENT_ROUTING``: ``replica`` (partition-aware) or ``any`` (any node; it
    forwards), ``default`` when unset or empty; ValueError for another value."""
    return routing.routing_mode(ClientSettings.from_env(environ).routing, default)


def quote_key(key: str) -> str:
    """A key as one URL path segment: ``quote(key, safe="")``, and the keys ``.`` and ``..``
    as ``%2E``/``%2E%2E`` (else HTTP libraries resolve them as dot segments of the path)."""
    quoted = quote(key, safe="")
    return quoted.replace(".", "%2E") if quoted in (".", "..") else quoted


def _check_level(value: str | None, name: str) -> str | None:
    if value is not None and value not in LEVELS:
        raise BadRequest(
            f"{name} must be one of {', '.join(LEVELS)}, got {value!r}", code="bad_request"
        )
    return value


def _never_sent(exc: requests.RequestException) -> bool:
    """True when the request surely did not reach the server (the connection never opened)."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    if isinstance(exc, requests.exceptions.ConnectionError):
        text = repr(exc)
        return any(s in text for s in ("NewConnectionError", "Connection refused", "NameResol"))
    return False


def _reason(exc: requests.RequestException) -> str:
    """A short reason for a failed attempt, for error messages."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "connect timed out"
    if isinstance(exc, requests.exceptions.Timeout):
        return "timed out waiting for the answer"
    if isinstance(exc, requests.exceptions.ConnectionError):
        text = repr(exc)
        if "Connection refused" in text:
            return "connection refused"
        if "NewConnectionError" in text or "NameResolution" in text:
            return "cannot connect"
        return "connection lost"
    return f"{type(exc).__name__}: {str(exc)[:200]}"


def _error_of(resp: requests.Response, node: str) -> KvClientError:
    try:
        body = resp.json()
        code, message = str(body.get("error", "error")), str(body.get("message", ""))
    except (ValueError, AttributeError):
        code, message = "error", resp.text[:200]
    message = message or f"HTTP {resp.status_code}"
    return error_from_status(resp.status_code, code, message, node)


# -- the client ----------------------------------------------------------------------------------


ADMIN_PATHS = ("/export", "/import", "/cluster/members")
ADMIN_TOKEN_FILE = os.path.join("data", "admin-token")


def default_admin_token() -> str | None:
    """``KVRAFT_ADMIN_TOKEN``, else the first line of ``data/admin-token``, else None."""
    from_env = ClientSettings.from_env().admin_token
    if from_env:
        return from_env
    try:
        with open(ADMIN_TOKEN_FILE) as f:
            return f.read().strip() or None
    except OSError:
        return None


class Client:
    """A client of a kvraft cluster.

    ``nodes``: node URLs (``http://host:port`` or ``host:port``), default ``KVRAFT_NODES`` or the
    local cluster on ports 8001-8003. ``token``: bearer token, default ``KVRAFT_TOKEN``.
    ``admin_token``: the bearer token of cluster operations (export, import, membership),
    default ``KVRAFT_ADMIN_TOKEN``, else the ``data/admin-token`` file ``kvraft up`` writes.
    ``timeout``: seconds per request (connecting is capped at 3 s so a dead host is skipped
    quickly). ``retries``: extra passes over the whole node list after every node failed, with
    ``backoff`` seconds doubling between passes. ``sleep`` is injectable for tests.
    ``smart``: route get/put/delete to a replica of the key (default: ``KVRAFT_CLIENT_ROUTING``,
    else on); ``False`` sends every request to the node that answered last, as before.
    ``map_ttl``: seconds after which the partition map is fetched again without a miss.

    Every method blocks; none is thread-safe (one ``Client`` per thread). Methods raise
    :class:`NotFound`, :class:`BadRequest`, :class:`Unauthorized`, :class:`ServerError`, or
    :class:`Unavailable` when no node could serve the request.
    """

    def __init__(
        self,
        nodes: Sequence[str] | None = None,
        token: str | None = None,
        timeout: float = 10.0,
        retries: int = 2,
        backoff: float = 0.2,
        sleep: Callable[[float], None] = time.sleep,
        admin_token: str | None = None,
        smart: bool | None = None,
        map_ttl: float = 30.0,
    ) -> None:
        urls = [normalize_node(n) for n in nodes] if nodes else nodes_from_env()
        self.nodes: list[str] = list(dict.fromkeys(urls))  # de-duplicated, order kept
        self.token = token if token is not None else ClientSettings.from_env().token
        self.admin_token = admin_token if admin_token is not None else default_admin_token()
        self.timeout = timeout
        self.retries = max(0, retries)
        self.backoff = backoff
        self._sleep = sleep
        self._preferred = 0  # index of the listed node that answered last
        self._last = self.nodes[0]  # URL of the node that answered last (listed or routed to)
        if smart is None:
            smart = routing_from_env() == "replica"
        self.router: Router | None = Router(self._fetch_map, ttl=map_ttl) if smart else None
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "kvraft-client/1"
        if self.token:
            self.session.headers["Authorization"] = f"Bearer {self.token}"

    # -- lifecycle -------------------------------------------------------------------------------

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def last_node(self) -> str:
        """URL of the node that answered the last request. Requests sent the old way go first
        to the listed node that answered last."""
        return self._last

    @property
    def smart(self) -> bool:
        """Whether get/put/delete are routed to a replica of their key."""
        return self.router is not None

    # -- the transport ---------------------------------------------------------------------------

    def _order(self) -> list[int]:
        n = len(self.nodes)
        return [(self._preferred + i) % n for i in range(n)]

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        data: bytes | None = None,
        json_body: Any = None,
        retry: bool = True,
        ok: Sequence[int] = (200, 201),
        stream: bool = False,
        passes: int | None = None,
        errors: list[tuple[str, str]] | None = None,
    ) -> tuple[requests.Response, str]:
        """Send one request, failing over between nodes; return (response, node URL).

        ``retry=False`` (non-idempotent requests): another node is tried only when the
        connection could not be opened; a timeout, reset or 5xx after sending raises
        :class:`Unavailable` at once. Responses with a status in ``ok`` are returned; any other
        status raises its typed error. ``passes``: passes over the node list (default
        ``retries + 1``); ``errors``: failed attempts made before (they are reported too, and
        the nodes they name are tried last)."""
        params = {k: v for k, v in (params or {}).items() if v is not None}
        errors = [] if errors is None else errors
        failed = {n for n, _ in errors}
        order = sorted(self._order(), key=lambda i: self.nodes[i] in failed)  # stable
        for attempt in range(self.retries + 1 if passes is None else passes):
            if attempt:
                self._sleep(self.backoff * 2 ** (attempt - 1))
            for i in order:
                node = self.nodes[i]
                url = node + path + ("?" + urlencode(params) if params else "")
                try:
                    resp = self._send(method, url, data, json_body, stream)
                except requests.RequestException as exc:
                    errors.append((node, _reason(exc)))
                    if retry or _never_sent(exc):
                        continue
                    raise Unavailable(
                        f"{method} {path} on {node} failed after it may have been sent; it may or "
                        f"may not have taken effect: {exc}",
                        errors,
                        node=node,
                    ) from exc
                self._learn(resp, node)
                if resp.status_code in ok:
                    self._preferred, self._last = i, node
                    return resp, node
                err = _error_of(resp, node)
                if isinstance(err, Unavailable):
                    errors.append((node, f"HTTP {resp.status_code}: {err.message}"))
                    if retry:
                        continue
                    raise Unavailable(f"{node}: {err.message}", errors, resp.status_code, node)
                self._preferred, self._last = i, node  # the node answered; that is the answer
                raise err
        tried = "; ".join(f"{n}: {why}" for n, why in errors[-len(self.nodes) :])
        raise Unavailable(f"no node could serve {method} {path} ({tried})", errors)

    def _learn(self, resp: requests.Response, url: str) -> None:
        """A listed node served a request itself: the router may reach that node id there."""
        served = resp.headers.get(routing.NODE_HEADER)
        if self.router is not None and served and not resp.headers.get(routing.VIA_HEADER):
            self.router.answered(served, url)

    def _fetch_map(self) -> tuple[Any, str]:
        """``GET /cluster`` for the router: one pass over the listed nodes, no backoff."""
        resp, node = self._request("GET", "/cluster", ok=(200,), passes=1)
        return resp.json(), node

    def _key_request(
        self,
        method: str,
        key: str,
        params: Mapping[str, Any],
        data: bytes | None = None,
        ok: Sequence[int] = (200, 201),
    ) -> tuple[requests.Response, str]:
        """A get, put or delete of ``key``: to a replica of the key when the router has a map
        and one answers (2xx or a definite 4xx/5xx), else the old way (:meth:`_request`, which
        reports the replicas' failures with its own). Every attempt is safe to repeat."""
        path = "/kv/" + quote_key(key)
        router = self.router
        rmap = router.current() if router is not None else None
        if router is None or rmap is None:
            return self._request(method, path, params=params, data=data, ok=ok)
        query = {k: v for k, v in params.items() if v is not None}
        target = path + ("?" + urlencode(query) if query else "")
        errors: list[tuple[str, str]] = []
        for node_id in router.route(rmap, key, write=method != "GET"):
            url = rmap.nodes[node_id].url
            try:
                resp = self._send(method, url + target, data, None)
            except requests.RequestException as exc:
                errors.append((url, _reason(exc)))
                router.failed(node_id, _reason(exc), connect=_never_sent(exc))
                continue
            if resp.status_code in RETRY_STATUSES:
                errors.append((url, f"HTTP {resp.status_code}: {_error_of(resp, url).message}"))
                router.failed(node_id, f"HTTP {resp.status_code}")
                continue
            replicas = None
            if method != "GET" and resp.status_code in ok:
                try:
                    replicas = resp.json().get("replicas")
                except (ValueError, AttributeError):
                    pass
            why = routing.miss(rmap, key, node_id, resp.headers, replicas)
            if why is not None:
                router.stale(why)
            elif not resp.headers.get(routing.VIA_HEADER):
                router.answered(node_id, url)
            self._last = url
            if resp.status_code in ok:
                return resp, url
            raise _error_of(resp, url)  # the replica answered; the answer is the answer
        return self._request(method, path, params=params, data=data, ok=ok, errors=errors)

    def _send(
        self, method: str, url: str, data: bytes | None, json_body: Any, stream: bool = False
    ) -> requests.Response:
        """One HTTP exchange with ``url`` sent exactly as given (requests would otherwise
        decode ``%2E`` and drop dot segments, changing the key)."""
        headers = {}
        if self.admin_token and urlsplit(url).path in ADMIN_PATHS:
            headers["Authorization"] = f"Bearer {self.admin_token}"
        prep = self.session.prepare_request(
            requests.Request(method, url, data=data, json=json_body, headers=headers)
        )
        prep.url = url
        settings = self.session.merge_environment_settings(url, {}, None, None, None)
        settings["stream"] = stream
        return self.session.send(prep, timeout=(min(3.0, self.timeout), self.timeout), **settings)

    def _json(self, method: str, path: str, **kw: Any) -> tuple[dict, requests.Response]:
        resp, node = self._request(method, path, **kw)
        return self._body(resp, node, path), resp

    @staticmethod
    def _body(resp: requests.Response, node: str, what: str) -> dict:
        try:
            return resp.json()
        except ValueError:
            raise ServerError(
                f"{node} answered {what} with a body that is not JSON",
                resp.status_code,
                "bad_response",
                node,
            ) from None

    @staticmethod
    def _write_result(body: dict, resp: requests.Response) -> WriteResult:
        return WriteResult(
            key=str(body["key"]),
            version=str(body.get("version", "")),
            replicas=tuple(body.get("replicas") or ()),
            acks=int(body.get("acks") or 0),
            created=resp.status_code == 201,
            hinted=tuple(body.get("hinted") or ()),
            node=resp.headers.get("X-Kvraft-Node", ""),
        )

    # -- key-value operations --------------------------------------------------------------------

    def put(self, key: str, value: bytes, w: str | None = None) -> WriteResult:
        """Store ``value`` under ``key``; ``w`` is one/quorum/all (server default quorum).

        Retried on another node when one is down; a repeat only writes a newer version.
        ``created`` tells a new key (201) from a replaced one (200) as the answering node saw it
        (after a failover the retry may report a replacement of its own first attempt)."""
        resp, node = self._key_request(
            "PUT", key, {"w": _check_level(w, "w")}, data=bytes(value), ok=(200, 201)
        )
        return self._write_result(self._body(resp, node, "PUT"), resp)

    def get(self, key: str, r: str | None = None) -> Value:
        """The value of ``key`` (``r`` is one/quorum/all); raises :class:`NotFound`."""
        resp, node = self._key_request("GET", key, {"r": _check_level(r, "r")}, ok=(200,))
        version = resp.headers.get("X-Kvraft-Version") or resp.headers.get("ETag", "").strip('"')
        return Value(resp.content, version, resp.headers.get("X-Kvraft-Node", node))

    def delete(self, key: str, w: str | None = None) -> WriteResult:
        """Delete ``key`` (writes a tombstone); raises :class:`NotFound` when it is absent.

        Retried on another node when one is down. Caveat: when the first attempt was applied
        but its answer lost, the retry finds the key gone and raises :class:`NotFound`."""
        resp, node = self._key_request("DELETE", key, {"w": _check_level(w, "w")}, ok=(200,))
        return self._write_result(self._body(resp, node, "DELETE"), resp)

    def create(self, value: str, w: str | None = None) -> WriteResult:
        """Store ``value`` (text) under a key the store picks (``POST /kv``); returns it.

        Not repeated once the request may have been sent: a retry could create a second key.
        :class:`Unavailable` then means the outcome is unknown."""
        body, resp = self._json(
            "POST",
            "/kv",
            json_body={"value": value},
            params={"w": _check_level(w, "w")},
            retry=False,
            ok=(201, 200),
        )
        return self._write_result(body, resp)

    def list(self, prefix: str = "", limit: int = 100, after: str | None = None) -> Page:
        """One page of at most ``limit`` (1-1000) sorted live keys under ``prefix`` after
        ``after``; pass ``page.next`` as ``after`` for the next page."""
        body, _ = self._json(
            "GET",
            "/kv",
            params={"prefix": prefix or None, "limit": limit, "after": after},
            ok=(200,),
        )
        return Page(list(body.get("keys") or []), body.get("next"))

    def iter_pages(
        self, prefix: str = "", page_size: int = MAX_PAGE, after: str | None = None
    ) -> Iterator[Page]:
        """Every page under ``prefix``, lazily (one request per page). Stops when ``next`` is
        None or does not advance (a defence against a server that repeats itself)."""
        while True:
            page = self.list(prefix, page_size, after)
            yield page
            if page.next is None or (after is not None and page.next <= after):
                return
            after = page.next

    def iter_keys(self, prefix: str = "", page_size: int = MAX_PAGE) -> Iterator[str]:
        """Every live key under ``prefix`` in order, fetched page by page."""
        for page in self.iter_pages(prefix, page_size):
            yield from page.keys

    def explain(self, key: str) -> dict:
        """``GET /kv/<key>?explain=1``: partition, replicas and the version each one holds."""
        return self._json("GET", "/kv/" + quote_key(key), params={"explain": 1}, ok=(200,))[0]

    # -- cluster and operations ------------------------------------------------------------------

    def cluster(self) -> dict:
        """``GET /cluster`` from the first node that answers: leader, nodes, partition map."""
        return self._json("GET", "/cluster", ok=(200,))[0]

    def health(self, node: str | None = None) -> bool:
        """True when ``node`` (default: any) answers ``/health``; never raises."""
        try:
            if node is not None:
                url = normalize_node(node) + "/health"
                return self.session.get(url, timeout=min(3.0, self.timeout)).ok
            self._request("GET", "/health", ok=(200,))
            return True
        except (KvClientError, requests.RequestException, ValueError):
            return False

    def export(self, progress: ProgressCallback | None = None) -> dict:
        """``POST /export``: a snapshot of every live key on the FTP server; returns ``{name,
        keys, bytes, ...}``. With ``progress``, asks for streamed progress (``?progress=1``) and
        calls ``progress({"keys", ...})`` from this thread as lines arrive. Not repeated once
        sent (each call makes a new snapshot); :class:`Unavailable` then means "unknown"."""
        return self._job("/export", None, {}, progress, retry=False)

    def import_(
        self, name: str, w: str | None = None, progress: ProgressCallback | None = None
    ) -> dict:
        """``POST /import {"name"}``: write every record of export ``name`` back (``w`` per
        write); returns ``{name, keys, bytes}``. ``progress`` as for :meth:`export`, with
        ``{"keys", "total"}``. Retried on another node when one is down (importing again
        rewrites the same values). :class:`NotFound` when there is no such export."""
        return self._job(
            "/import", {"name": name}, {"w": _check_level(w, "w")}, progress, retry=True
        )

    def _job(
        self,
        path: str,
        body: Any,
        params: dict[str, Any],
        progress: ProgressCallback | None,
        retry: bool,
    ) -> dict:
        if progress is None:
            return self._json(
                "POST", path, json_body=body, params=params, retry=retry, ok=(200, 201)
            )[0]
        resp, node = self._request(
            "POST",
            path,
            json_body=body,
            retry=retry,
            ok=(200, 201),
            params=dict(params, progress=1),
            stream=True,
        )
        with resp:
            if "ndjson" not in resp.headers.get("Content-Type", ""):
                return resp.json()  # a node without streamed progress: the plain answer
            try:
                for line in resp.iter_lines():
                    if not line.strip():
                        continue
                    msg = json.loads(line)
                    kind = msg.pop("type", None)
                    if kind == "progress":
                        progress(msg)
                    elif kind == "done":
                        return msg
                    elif kind == "error":
                        raise error_from_code(str(msg.get("error")), str(msg.get("message")), node)
            except (requests.RequestException, ValueError) as exc:
                raise Unavailable(
                    f"{node}: the {path} stream broke ({exc}); the outcome is unknown",
                    [(node, str(exc))],
                    node=node,
                ) from exc
        raise Unavailable(
            f"{node}: the {path} stream ended without a result; the outcome is unknown",
            [(node, "no result line")],
            node=node,
        )

    def report_text(self, prefix: str = "") -> str:
        """The text of a report from WebSocket ``/report`` (JSON: time, node, cluster view,
        every live key under ``prefix`` with its value and version). Blocks until the node has
        written the report to the FTP server and read it back. Tries the nodes in turn (a
        report only reads); needs the ``websocket-client`` package."""
        try:
            import websocket  # websocket-client
        except ImportError:
            raise KvClientError(
                "reports need the websocket-client package (pip install websocket-client)"
            ) from None
        message = json.dumps({"type": "report", "prefix": prefix} if prefix else {"type": "report"})
        headers = [f"Authorization: Bearer {self.token}"] if self.token else []
        errors: list[tuple[str, str]] = []
        for attempt in range(self.retries + 1):
            if attempt:
                self._sleep(self.backoff * 2 ** (attempt - 1))
            for i in self._order():
                node = self.nodes[i]
                ws_url = "ws" + node[len("http") :] + "/report"
                try:
                    sock = websocket.create_connection(
                        ws_url, timeout=self.timeout, header=headers, suppress_origin=True
                    )
                except websocket.WebSocketBadStatusException as exc:
                    status = exc.status_code
                    if status in RETRY_STATUSES:
                        errors.append((node, f"HTTP {status}"))
                        continue
                    raise error_from_status(
                        status,
                        "websocket",
                        f"{node} refused the report socket: HTTP {status}",
                        node,
                    ) from None
                except (OSError, websocket.WebSocketException) as exc:
                    errors.append((node, f"{type(exc).__name__}: {exc}"))
                    continue
                try:
                    sock.send(message)
                    text = sock.recv()
                except (OSError, websocket.WebSocketException) as exc:
                    errors.append((node, f"{type(exc).__name__}: {exc}"))
                    continue
                finally:
                    sock.close()
                self._preferred = i
                if isinstance(text, bytes):
                    text = text.decode("utf-8", "replace")
                self._check_report(text, node)
                return text
        tried = "; ".join(f"{n}: {why}" for n, why in errors[-len(self.nodes) :])
        raise Unavailable(f"no node could serve a report ({tried})", errors)

    @staticmethod
    def _check_report(text: str, node: str) -> None:
        """Raise the typed error when the reply is an error message, not a report."""
        try:
            body = json.loads(text)
        except ValueError:
            raise ServerError(
                f"{node} sent a report that is not JSON", None, "bad_response", node
            ) from None
        if not isinstance(body, dict):
            raise ServerError(
                f"{node} sent a report that is not a JSON object", None, "bad_response", node
            )
        if body.get("type") == "error":
            raise error_from_code(str(body.get("error")), str(body.get("message")), node)

    def report(self, prefix: str = "") -> dict:
        """:meth:`report_text` parsed."""
        return json.loads(self.report_text(prefix))
