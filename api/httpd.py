"""A small threaded HTTP/1.1 WSGI server: one thread per connection, keep-alive, and the IO
around a maintained parser (:mod:`api.http1`: llhttp for heads, h11 for chunked bodies).

Concurrency model: a connection's thread blocks in ``recv`` and does everything itself: the
head is parsed by llhttp in C, the answer goes out in one ``sendall`` (status line, headers and
body together), and there is no hand-off between a poller and a pool (why not gunicorn's gthread
worker: docs/BENCHMARKS.md, "What changed"). One process per node, so ``kill -9`` of the process
is the crash of the node.

What it supports, because the app needs it: keep-alive (HTTP/1.1 default, HTTP/1.0 on request),
pipelining, ``Content-Length`` and chunked request bodies (``wsgi.input_terminated``), ``Expect:
100-continue``, streamed responses (chunked when the app gives no length), HEAD, optional TLS,
and websockets: simple-websocket (flask-sock) takes the raw socket from
``environ["gunicorn.socket"]`` and, when the socket closes, flask-sock ends the response with
``StopIteration``: the connection is then closed without another byte. kvraft's peer stream
upgrade works the same way, taking the connection (``environ["kvraft.connection"]``: its
socket, buffered reader and ``idle()``).

Refusals are JSON errors (``{"error", "message"}``) followed by a closed connection, never a
500, a dead thread or silence: 400 malformed, 408 a head or body not complete within its total
deadline (``head_timeout`` from the head's first byte, ``body_timeout`` from the first read of
the body: a client trickling a byte at a time is dropped all the same), 414 request line over
8 KiB, 431 over 100 fields or 16 KiB of head, 501 a transfer coding other than chunked, 505 an
HTTP version other than 1.0/1.1, 429 over ``max_client_connections`` from one address, 503 over
``max_connections``. An idle keep-alive connection is closed after ``idle_timeout``. No request
deadline is ever lifted by a header: only the app may lift it, by calling
``connection.upgraded()`` once a websocket handshake is valid. Connections over a limit are
answered by a few refusal threads (at most :data:`REFUSAL_THREADS`, a bounded queue; beyond it
they are closed), which still serve ``GET /health`` and ``GET /ready``, so probes see the node.

    server = HttpServer(app, "127.0.0.1", 8001)
    server.serve_forever()        # until server.shutdown() from another thread or a signal
"""

from __future__ import annotations

import io
import json
import logging
import queue
import socket
import ssl
import sys
import threading
import time
from email.utils import formatdate
from urllib.parse import unquote_to_bytes

from .http1 import MAX_HEAD_BYTES, MAX_HEADERS, MAX_LINE, ChunkedBody, Head, HeadReader, HttpError

try:  # a body error inside the app is a client error the app answers quietly (400), not a bug
    from werkzeug.exceptions import ClientDisconnected as _BodyBase
except ImportError:  # pragma: no cover - werkzeug comes with Flask
    _BodyBase = ConnectionError  # type: ignore[misc,assignment]

__all__ = ["HttpServer", "MAX_HEADERS", "MAX_HEAD_BYTES", "MAX_LINE", "BodyError"]

log = logging.getLogger(__name__)

RECV = 65536
# A body the app did not read (it answered 413 first, say) is read and dropped up to this much,
# so a client that sends its whole body before reading the answer gets that answer.
DRAIN_LIMIT = 256 << 20
REFUSAL_THREADS = 4  # threads answering connections over a limit
REFUSAL_QUEUE = 16  # connections waiting for them; beyond, closed at once
REFUSAL_TIMEOUT = 0.5  # seconds a refused connection gets to send its request head
OPEN_PATHS = ("/health", "/ready")  # answered even over the connection limits
_REASONS = {
    100: "Continue",
    101: "Switching Protocols",
    200: "OK",
    201: "Created",
    204: "No Content",
    307: "Temporary Redirect",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Payload Too Large",
    414: "URI Too Long",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}


class _Closed(Exception):
    """The peer closed the connection (or it timed out idle) between requests."""


class BodyError(_BodyBase):
    """Reading the request body failed: malformed, over its deadline, or the client left. The
    server answers it (``error``) whatever the app made of it."""

    def __init__(self, error: HttpError | None) -> None:
        super().__init__(error.message if error else "the client closed the connection")
        self.error = error


class _SocketReader(io.RawIOBase):
    """The connection's socket as a raw stream, after the bytes already received."""

    def __init__(self, sock: socket.socket, prefix: bytes) -> None:
        self.sock, self.prefix = sock, prefix

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        if self.prefix:
            n = min(len(b), len(self.prefix))
            b[:n] = self.prefix[:n]
            self.prefix = self.prefix[n:]
            return n
        return self.sock.recv_into(b)


class _Body(io.RawIOBase):
    """``wsgi.input``: the request body, ``Content-Length`` or chunked, ending at its end.

    Sends ``100 Continue`` before the first read when the client asked for it; the body
    deadline starts at that first read. Raises :class:`BodyError`.

    It keeps nothing of the head: the environ refers to the body (``wsgi.input``) and the head
    to the environ, so a body holding its head would make a reference cycle per request, which
    only the cyclic GC frees (and an IOBase in a cycle is finalized first)."""

    def __init__(self, conn: _Connection, head: Head, prefix: bytes) -> None:
        self.conn = conn
        self.expect_continue = head.expect_continue
        self.deadline: float | None = None
        self.error: HttpError | None = None
        self.chunks: ChunkedBody | None = None
        if head.chunked:
            self.chunks = ChunkedBody(head.raw)
            self.pending = b"".join(self.chunks.feed(prefix)) if prefix else b""
            self.remaining = 0
            self.done = self.chunks.done and not self.pending
            if self.chunks.done:
                conn.buf = self.chunks.leftover
        else:
            n = head.length
            self.pending, conn.buf = prefix[:n], prefix[n:]
            self.remaining = n - len(self.pending)
            self.done = n == 0

    def readable(self) -> bool:
        return True

    def _fail(self, error: HttpError | None) -> BodyError:
        self.error = error
        self.conn.broken = True
        return BodyError(error)

    def _recv(self) -> bytes:
        conn = self.conn
        if self.expect_continue:
            self.expect_continue = False
            conn.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        now = time.monotonic()
        if self.deadline is None:
            self.deadline = now + conn.server.body_timeout
        left = self.deadline - now
        if left <= 0:
            raise self._fail(
                HttpError(
                    408,
                    "request_timeout",
                    f"request body not received within {conn.server.body_timeout:g} s",
                )
            )
        conn.sock.settimeout(left)
        try:
            data = conn.sock.recv(RECV)
        except TimeoutError:
            raise self._fail(
                HttpError(
                    408,
                    "request_timeout",
                    f"request body not received within {conn.server.body_timeout:g} s",
                )
            ) from None
        except OSError:
            raise self._fail(None) from None
        if not data:
            raise self._fail(None)
        return data

    def _more(self) -> None:
        """Receive more of the body into ``pending``."""
        data = self._recv()
        if self.chunks is None:
            take = data[: self.remaining]
            self.conn.buf = data[self.remaining :]
            self.remaining -= len(take)
            self.pending += take
            return
        try:
            self.pending += b"".join(self.chunks.feed(data))
        except HttpError as exc:
            raise self._fail(exc) from None
        if self.chunks.done:
            self.conn.buf = self.chunks.leftover

    def _ended(self) -> bool:
        return self.remaining == 0 if self.chunks is None else self.chunks.done

    def read(self, size: int = -1) -> bytes:
        if self.error is not None or self.conn.broken:
            raise BodyError(self.error)
        if size is None or size < 0:
            while not self._ended():
                self._more()
            out, self.pending = self.pending, b""
        else:
            while len(self.pending) < size and not self._ended():
                self._more()
            out, self.pending = self.pending[:size], self.pending[size:]
        self.done = self._ended() and not self.pending
        return out

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def readline(self, size: int = -1) -> bytes:  # type: ignore[override]  # never None
        out = bytearray()
        while size < 0 or len(out) < size:
            c = self.read(1)
            if not c:
                break
            out += c
            if c == b"\n":
                break
        return bytes(out)

    def drain(self, limit: int) -> bool:
        """Read and drop what is left of the body, up to ``limit`` bytes; True if it ended."""
        if self.expect_continue:  # the client waits for our go: it sent nothing yet
            return False
        try:
            while not self.done and limit > 0:
                data = self.read(min(RECV, limit))
                if not data:
                    break
                limit -= len(data)
        except BodyError:
            return False
        return self.done


class _Connection:
    """One client connection, served by its own thread until it closes."""

    def __init__(self, server: HttpServer, sock: socket.socket, addr) -> None:
        self.server, self.sock, self.addr = server, sock, addr
        self.busy = False
        self.broken = False  # the byte stream is out of step: close after this answer
        self.buf = b""  # bytes received after the current request (a pipelined one)
        self._rfile: io.BufferedReader | None = None
        self._base = server._base_environ(addr)  # what every request's environ starts from
        self._base["gunicorn.socket"] = sock  # simple-websocket takes the socket from here
        self._base["kvraft.connection"] = self  # an upgraded peer stream takes the connection

    @property
    def rfile(self):
        """A buffered reader of the connection (for a protocol taking the connection over)."""
        if self._rfile is None:
            self._rfile = io.BufferedReader(_SocketReader(self.sock, self.buf), RECV)
            self.buf = b""
        return self._rfile

    def run(self) -> None:
        sock = self.sock
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if isinstance(sock, ssl.SSLSocket):
                sock.settimeout(self.server.head_timeout)
                sock.do_handshake()
            while not self.server.stopping.is_set():
                try:
                    keep = self._one()
                except _Closed:
                    break
                if not keep:
                    break
        except (OSError, ValueError) as exc:
            log.debug("connection from %s ended: %s", self.addr, exc)  # the client went away
        finally:
            self.server._forget(self)
            self._base = {}  # it refers to this connection: no cycle left behind
            try:
                if self._rfile is not None:
                    self._rfile.close()
                sock.close()
            except OSError:
                pass

    def upgraded(self) -> None:
        """The app took the connection over for a protocol that watches its own liveness (a
        websocket with pings, after a valid handshake): no request deadline applies any more."""
        self.sock.settimeout(None)

    def idle(self, waiting: bool) -> None:
        """An upgraded connection waiting for its next message is idle: shutdown may close it."""
        self.busy = not waiting

    def read_head(self, idle_timeout: float) -> tuple[Head, bytes]:
        """The next request's head and the bytes received after it. Raises _Closed when the
        connection ends (or stays idle ``idle_timeout``) before a request, HttpError for a bad
        or late one. The head's environ is this connection's base environ plus its fields."""
        server, sock = self.server, self.sock
        reader = HeadReader()
        data, self.buf = self.buf, b""
        deadline = time.monotonic() + idle_timeout
        if not data:  # the usual case: one recv brings the whole head
            if server.stopping.is_set():
                raise _Closed()
            if sock.gettimeout() != idle_timeout:  # a syscall: only when it changes
                sock.settimeout(idle_timeout)
            try:
                data = sock.recv(RECV)
            except TimeoutError:
                raise _Closed() from None
            except OSError as exc:
                raise _Closed() from exc
            if not data:
                raise _Closed()
        started = False
        while True:
            if data:
                used = reader.feed(data)
                if reader.started and not started:
                    started, self.busy = True, True
                    if used is None:
                        deadline = time.monotonic() + server.head_timeout
                if used is not None:
                    return reader.head(self._base.copy()), data[used:]
            elif server.stopping.is_set() and not started:
                raise _Closed()
            left = deadline - time.monotonic()
            if left <= 0:
                if started:
                    raise HttpError(
                        408,
                        "request_timeout",
                        f"request head not received within {server.head_timeout:g} s",
                    )
                raise _Closed()
            sock.settimeout(left)
            try:
                data = sock.recv(RECV)
            except TimeoutError:
                data = b""
                if time.monotonic() < deadline:
                    continue
                if started:
                    raise HttpError(
                        408,
                        "request_timeout",
                        f"request head not received within {server.head_timeout:g} s",
                    ) from None
                raise _Closed() from None
            except OSError as exc:
                raise _Closed() from exc
            if not data:
                raise _Closed()

    def _one(self) -> bool:
        """Serve one request; False when the connection must close afterwards."""
        try:
            try:
                head, rest = self.read_head(self.server.idle_timeout)
            except HttpError as exc:
                self._reject(exc)
                return False
            try:
                environ, body = self._environ(head, rest)
            except HttpError as exc:
                self._reject(exc)
                return False
            return self._respond(environ, body, head)
        finally:
            self.busy = False

    def _environ(self, head: Head, rest: bytes) -> tuple[dict, _Body]:
        environ = head.environ
        target = head.target
        if target.startswith(("http://", "https://")):  # absolute form
            target = "/" + target.split("://", 1)[1].partition("/")[2]
        path, _, query = target.partition("?")
        path = path.partition("#")[0]
        if not path.startswith("/") and not (head.method == "OPTIONS" and path == "*"):
            raise HttpError(400, "bad_request", "request target must start with /")
        environ["REQUEST_METHOD"] = head.method
        environ["SERVER_PROTOCOL"] = head.version
        environ["RAW_URI"] = target
        if "%" in path or not path.isascii():  # (unquote_to_bytes encodes text as UTF-8 first)
            path = unquote_to_bytes(path).decode("latin-1")
        environ["PATH_INFO"] = path
        environ["QUERY_STRING"] = query
        body = _Body(self, head, rest)
        environ["wsgi.input"] = body
        return environ, body

    def _respond(self, environ: dict, body: _Body, request: Head) -> bool:
        server, sock = self.server, self.sock
        state: dict = {"status": None, "headers": None, "sent": False}
        head_only = environ["REQUEST_METHOD"] == "HEAD"
        out_chunked = False
        # an upgrade request answered without taking the connection over: llhttp stopped at
        # its head, so close rather than guess where the next request starts
        closing = not request.keep_alive or request.upgrade

        def start_response(status, headers, exc_info=None):
            if exc_info and state["sent"]:
                raise exc_info[1].with_traceback(exc_info[2])
            state["status"], state["headers"] = status, headers
            return write

        def head(first: bytes, length_known: bool) -> bytes:
            nonlocal out_chunked, closing
            status = state["status"]
            code = int(status[:3])
            lines = [f"{environ['SERVER_PROTOCOL']} {status}\r\n"]
            has_length = False
            for name, value in state["headers"]:
                low = name.lower()
                if low == "content-length":
                    has_length = True
                elif low == "connection":
                    if "close" in (t.strip().lower() for t in value.split(",")):
                        closing = True
                    continue
                lines.append(f"{name}: {value}\r\n")
            nobody = head_only or code in (204, 304) or code < 200
            if not has_length and not nobody:
                if length_known:
                    lines.append(f"Content-Length: {len(first)}\r\n")
                elif environ["SERVER_PROTOCOL"] == "HTTP/1.1":
                    out_chunked = True
                    lines.append("Transfer-Encoding: chunked\r\n")
                else:
                    closing = True
            if not body.done and not closing and not body.drain(DRAIN_LIMIT):
                closing = True  # an unread body we cannot skip: the stream is out of step
            if server.stopping.is_set() or self.broken:
                closing = True
            lines.append(server.date_server())
            if closing:
                lines.append("Connection: close\r\n\r\n")
            elif environ["SERVER_PROTOCOL"] == "HTTP/1.0":
                lines.append("Connection: keep-alive\r\n\r\n")  # 1.0 closes unless told
            else:
                lines.append("\r\n")
            state["sent"] = True
            data = "".join(lines).encode("latin-1")
            if nobody:
                return data
            if out_chunked:
                return data + (b"%x\r\n%s\r\n" % (len(first), first) if first else b"")
            return data + first

        def write(data: bytes) -> None:
            if not state["sent"]:
                sock.sendall(head(data, False))
            elif head_only or not data:
                return
            elif out_chunked:
                sock.sendall(b"%x\r\n%s\r\n" % (len(data), data))
            else:
                sock.sendall(data)

        try:
            result = server.app(environ, start_response)
        except StopIteration:  # flask-sock: the websocket had the socket and is done with it
            return False
        except HttpError as exc:
            self._reject(exc)
            return False
        except (OSError, ValueError):
            if body.error is not None and not state["sent"]:
                self._reject(body.error)
                return False
            raise  # the connection broke: nothing to answer (run() closes it)
        except Exception:  # noqa: BLE001 - a bug in the app: answer 500, keep serving others
            if body.error is not None or self.broken:
                if body.error is not None and not state["sent"]:
                    self._reject(body.error)
                return False
            log.exception(
                "unhandled error in %s %s", environ["REQUEST_METHOD"], environ["PATH_INFO"]
            )
            if not state["sent"]:
                self._reject(HttpError(500, "internal", "internal error (logged by the node)"))
            return False
        try:
            if body.error is not None:  # the app answered a broken body: the server's answer
                if not state["sent"]:
                    self._reject(body.error)
                return False
            if self.broken and not state["sent"]:  # the client left inside the body
                return False
            if isinstance(result, list) and len(result) == 1 and not state["sent"]:
                if state["status"] is None:
                    raise RuntimeError("the app returned without start_response")
                sock.sendall(head(result[0], True))
            else:
                for data in result:
                    if data:
                        write(data)
                if not state["sent"]:
                    if state["status"] is None:
                        raise RuntimeError("the app returned without start_response")
                    sock.sendall(head(b"", True))
                if out_chunked and not head_only:
                    sock.sendall(b"0\r\n\r\n")
        except StopIteration:
            return False
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        return not closing

    def _reject(self, rej: HttpError, extra: str = "", linger: float = 1.0) -> None:
        body = json.dumps({"error": rej.code, "message": rej.message}).encode()
        reason = _REASONS.get(rej.status, "Error")
        head = (
            f"HTTP/1.1 {rej.status} {reason}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nDate: {self.server.date()}\r\n"
            f"Server: {self.server.server_name}\r\n{extra}Connection: close\r\n\r\n"
        )
        try:
            self.sock.settimeout(linger)
            self.sock.sendall(head.encode("latin-1") + body)
        except OSError:
            return
        _linger(self.sock, linger)

    def refuse(self, over: HttpError) -> None:
        """Answer a connection over a limit: ``GET /health`` and ``/ready`` are served, any
        other request gets ``over``. Runs on a refusal thread; bounded in time."""
        try:
            if isinstance(self.sock, ssl.SSLSocket):
                self.sock.settimeout(REFUSAL_TIMEOUT)
                self.sock.do_handshake()
            head, rest = self.read_head(REFUSAL_TIMEOUT)
            path = head.target.partition("?")[0]
            if head.method in ("GET", "HEAD") and path in OPEN_PATHS and not head.upgrade:
                head.keep_alive = False  # answered with Connection: close, then closed
                environ, body = self._environ(head, rest)
                self._respond(environ, body, head)
                return
            self._reject(over, "Retry-After: 1\r\n", linger=0.2)
        except HttpError as exc:
            self._reject(exc, linger=0.2)
        except (_Closed, OSError, ValueError):
            pass
        except Exception:  # noqa: BLE001 - a refusal thread must survive anything
            log.exception("refusing a connection failed")
        finally:
            try:
                self.sock.close()
            except OSError:
                pass


def _linger(sock: socket.socket, seconds: float = 1.0, limit: int = 1 << 20) -> None:
    """After an answer that ends the connection: stop sending, then read and drop what the
    client still sends (at most ``seconds``/``limit``), so that closing with unread input does
    not reset the connection before the client has read the answer."""
    try:
        sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + seconds
        while limit > 0:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            sock.settimeout(left)
            data = sock.recv(RECV)
            if not data:
                break
            limit -= len(data)
    except (OSError, ValueError):
        pass


class HttpServer:
    """Serves ``app`` (a WSGI callable) on ``host:port`` until :meth:`shutdown`.

    ``tls``: an :class:`ssl.SSLContext` (server side) for HTTPS. ``read_timeout``, if given,
    sets both ``head_timeout`` and ``body_timeout`` (the older single setting)."""

    def __init__(
        self,
        app,
        host: str,
        port: int,
        *,
        server_name: str = "kvraft",
        max_connections: int = 1024,
        max_client_connections: int | None = None,
        idle_timeout: float = 75.0,
        head_timeout: float = 10.0,
        body_timeout: float = 60.0,
        read_timeout: float | None = None,
        backlog: int = 1024,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.app, self.server_name = app, server_name
        self.max_connections = max_connections
        self.max_client_connections = max_client_connections or max_connections
        if read_timeout is not None:
            head_timeout = body_timeout = read_timeout
        self.idle_timeout, self.head_timeout, self.body_timeout = (
            idle_timeout,
            head_timeout,
            body_timeout,
        )
        self.read_timeout = body_timeout  # per frame of an upgraded peer stream
        self.tls = tls
        self.stopping = threading.Event()
        self._conns: set[_Connection] = set()
        self._per_client: dict[str, int] = {}
        self._lock = threading.Lock()
        self._refusals: queue.Queue[tuple[_Connection, HttpError]] = queue.Queue(REFUSAL_QUEUE)
        self._refusers: list[threading.Thread] = []
        self._date = (0, "")
        self._date_server = (0, "")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.listener = socket.socket(family, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.listener.bind((host, port))
            self.listener.listen(backlog)
        except OSError:
            self.listener.close()
            raise
        self.address = self.listener.getsockname()[:2]
        self._static = {
            "SCRIPT_NAME": "",
            "SERVER_NAME": str(self.address[0]),
            "SERVER_PORT": str(self.address[1]),
            "SERVER_SOFTWARE": server_name,
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "https" if tls else "http",
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            "wsgi.input_terminated": True,
        }

    def _base_environ(self, addr) -> dict:
        env = dict(self._static)
        if addr:
            env["REMOTE_ADDR"], env["REMOTE_PORT"] = str(addr[0]), str(addr[1])
        return env

    def date(self) -> str:
        now = int(time.time())
        if self._date[0] != now:
            self._date = (now, formatdate(now, usegmt=True))
        return self._date[1]

    def date_server(self) -> str:
        """The ``Date`` and ``Server`` header lines of an answer (made once a second)."""
        now = int(time.time())
        if self._date_server[0] != now:
            self._date_server = (now, f"Date: {self.date()}\r\nServer: {self.server_name}\r\n")
        return self._date_server[1]

    def serve_forever(self, poll: float = 0.5) -> None:
        """Accept connections until :meth:`shutdown`; each gets a daemon thread."""
        self.listener.settimeout(poll)
        try:
            while not self.stopping.is_set():
                try:
                    sock, addr = self.listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    if self.stopping.is_set():
                        break
                    log.warning("accept failed", exc_info=True)
                    time.sleep(0.05)  # e.g. out of file descriptors: do not spin
                    continue
                if self.tls is not None:
                    try:
                        sock = self.tls.wrap_socket(
                            sock, server_side=True, do_handshake_on_connect=False
                        )
                    except (OSError, ValueError):
                        sock.close()
                        continue
                self._admit(sock, addr)
        finally:
            self.listener.close()

    def _admit(self, sock: socket.socket, addr) -> None:
        conn = _Connection(self, sock, addr)
        client = str(addr[0])
        over = None
        with self._lock:
            if len(self._conns) >= self.max_connections:
                over = HttpError(
                    503, "unavailable", f"over {self.max_connections} connections; retry"
                )
            elif self._per_client.get(client, 0) >= self.max_client_connections:
                over = HttpError(
                    429,
                    "too_many_connections",
                    f"over {self.max_client_connections} connections from {client}",
                )
            else:
                self._conns.add(conn)
                self._per_client[client] = self._per_client.get(client, 0) + 1
        if over is None:
            threading.Thread(target=conn.run, name=f"http-{addr[0]}:{addr[1]}", daemon=True).start()
            return
        try:
            self._refusals.put_nowait((conn, over))
        except queue.Full:  # refusals are bounded too: beyond them, close without a word
            sock.close()
            return
        if len(self._refusers) < REFUSAL_THREADS:
            t = threading.Thread(target=self._refuser, name="http-refusals", daemon=True)
            self._refusers.append(t)
            t.start()

    def _refuser(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, over = self._refusals.get(timeout=0.5)
            except queue.Empty:
                continue
            conn.refuse(over)

    def _forget(self, conn: _Connection) -> None:
        client = str(conn.addr[0])
        with self._lock:
            if conn in self._conns:
                self._conns.discard(conn)
                left = self._per_client.get(client, 1) - 1
                if left > 0:
                    self._per_client[client] = left
                else:
                    self._per_client.pop(client, None)

    @property
    def connections(self) -> int:
        with self._lock:
            return len(self._conns)

    def shutdown(self, grace: float = 5.0) -> bool:
        """Stop accepting, close idle connections, let requests in progress finish (at most
        ``grace`` seconds). True if every connection ended in time."""
        self.stopping.set()
        try:  # stop listening now (Linux also wakes a blocked accept); serve_forever closes it
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        deadline = time.monotonic() + grace
        while True:
            with self._lock:
                conns = list(self._conns)
            for c in conns:
                if not c.busy:
                    try:
                        c.sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
            if not conns:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)


def main(argv: list[str] | None = None) -> int:
    """``python -m api.httpd --bind HOST:PORT [--path DIR] module:factory()``: serve any WSGI
    app with this server (the benchmarks run the naive design on the same stack as kvraft)."""
    import argparse
    import importlib
    import signal

    parser = argparse.ArgumentParser(prog="python -m api.httpd", description=main.__doc__)
    parser.add_argument("--bind", required=True, help="HOST:PORT")
    parser.add_argument("--path", action="append", default=[], help="prepend to sys.path")
    parser.add_argument("target", help="module:attribute, or module:factory() to call it")
    args = parser.parse_args(argv)
    sys.path[:0] = args.path
    module_name, _, attr = args.target.partition(":")
    call = attr.endswith("()")
    app = getattr(importlib.import_module(module_name), attr.removesuffix("()"))
    if call:
        app = app()
    host, _, port = args.bind.rpartition(":")
    server = HttpServer(app, host, int(port))

    def on_signal(_signum, _frame) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
