"""A small threaded HTTP/1.1 WSGI server: one thread per connection, keep-alive, nothing else.

Why not gunicorn: a node spends most of its CPU serving small requests (client PUT/GET and the
peer writes behind them). gunicorn's gthread worker hands every request from its poller to a
thread pool and back, re-registers the connection with epoll after each request and parses
headers in layers of Python; profiles showed that costing about as much as the store itself.
Here a connection's thread blocks in ``recv`` and does everything itself: the request line and
headers are read with the C ``readline`` of a buffered socket file, the answer goes out in one
``sendall`` (status line, headers and body together), and there is no hand-off between threads.
One process per node, so ``kill -9`` of the process is the crash of the node.

What it supports, because the app needs it: keep-alive (HTTP/1.1 default, HTTP/1.0 on request),
``Content-Length`` and chunked request bodies (``wsgi.input_terminated``), ``Expect:
100-continue``, streamed responses (chunked when the app gives no length), HEAD, and websockets:
simple-websocket (flask-sock) takes the raw socket from ``environ["gunicorn.socket"]`` and, when
the socket closes, flask-sock ends the response with ``StopIteration``: the connection is then
closed without another byte. kvraft's peer stream upgrade works the same way, taking the connection
(``environ["kvraft.connection"]``: its socket, buffered reader and ``idle()``). Limits answer with
JSON errors (``{"error", "message"}``) and close the connection: 400 malformed, 414 request line
over 8 KiB, 431 over 100 headers or 16 KiB of headers, 503 over ``max_connections``. An idle
keep-alive connection is closed after ``idle_timeout``; a request whose head or body stalls for
``read_timeout`` is dropped.

    server = HttpServer(app, "127.0.0.1", 8001)
    server.serve_forever()        # until server.shutdown() from another thread or a signal
"""

from __future__ import annotations

import io
import json
import logging
import socket
import sys
import threading
import time
from email.utils import formatdate
from urllib.parse import unquote_to_bytes

log = logging.getLogger(__name__)

MAX_LINE = 8192
MAX_HEADERS = 100
MAX_HEAD_BYTES = 16384
# A body the app did not read (it answered 413 first, say) is read and dropped up to this much,
# so a client that sends its whole body before reading the answer gets that answer.
DRAIN_LIMIT = 256 << 20
_REASONS = {100: "Continue", 101: "Switching Protocols", 200: "OK", 201: "Created",
            204: "No Content", 307: "Temporary Redirect", 400: "Bad Request",
            404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
            413: "Payload Too Large", 414: "URI Too Long", 431: "Request Header Fields Too Large",
            500: "Internal Server Error", 501: "Not Implemented", 503: "Service Unavailable"}


class _Reject(Exception):
    """A request the server answers itself (and then closes the connection)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class _Closed(Exception):
    """The peer closed the connection (or it timed out) between requests."""


class _Body(io.RawIOBase):
    """``wsgi.input``: the request body, ``Content-Length`` or chunked, ending at its end.

    Sends ``100 Continue`` before the first read when the client asked for it."""

    def __init__(self, rfile, length: int | None, chunked: bool, conn: _Connection,
                 expect_continue: bool) -> None:
        self.rfile, self.remaining, self.chunked = rfile, length or 0, chunked
        self.conn, self.expect_continue = conn, expect_continue
        self.done = not chunked and not length
        self._chunk_left = 0

    def readable(self) -> bool:
        return True

    def _continue(self) -> None:
        if self.expect_continue:
            self.expect_continue = False
            self.conn.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")

    def read(self, size: int = -1) -> bytes:
        if self.done:
            return b""
        self._continue()
        if not self.chunked:
            want = self.remaining if size is None or size < 0 else min(size, self.remaining)
            data = self.rfile.read(want)
            if len(data) < want:
                raise ConnectionError("client closed the connection inside the body")
            self.remaining -= len(data)
            self.done = self.remaining == 0
            return data
        out = []
        left = -1 if size is None or size < 0 else size
        while left != 0 and not self.done:
            if self._chunk_left == 0:
                self._next_chunk()
                continue
            n = self._chunk_left if left < 0 else min(left, self._chunk_left)
            data = self.rfile.read(n)
            if len(data) < n:
                raise ConnectionError("client closed the connection inside a chunk")
            out.append(data)
            self._chunk_left -= n
            if left > 0:
                left -= n
            if self._chunk_left == 0 and self.rfile.readline(MAX_LINE) != b"\r\n":
                raise _Reject(400, "bad_request", "malformed chunked body")
        return b"".join(out)

    def _next_chunk(self) -> None:
        line = self.rfile.readline(MAX_LINE)
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise _Reject(400, "bad_request", "malformed chunk size") from None
        if size < 0:
            raise _Reject(400, "bad_request", "malformed chunk size")
        if size == 0:
            for _ in range(MAX_HEADERS):  # trailers, then the empty line
                if self.rfile.readline(MAX_LINE) in (b"\r\n", b"\n", b""):
                    break
            self.done = True
        self._chunk_left = size

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def readline(self, size: int = -1) -> bytes:
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
        while not self.done and limit > 0:
            data = self.read(min(65536, limit))
            if not data:
                break
            limit -= len(data)
        return self.done


class _Connection:
    """One client connection, served by its own thread until it closes."""

    def __init__(self, server: HttpServer, sock: socket.socket, addr) -> None:
        self.server, self.sock, self.addr = server, sock, addr
        self.busy = False

    def run(self) -> None:
        sock = self.sock
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.rfile = sock.makefile("rb", buffering=65536)
            while not self.server.stopping.is_set():
                sock.settimeout(self.server.idle_timeout)
                try:
                    keep = self._one()
                except _Closed:
                    break
                if not keep:
                    break
        except (OSError, ValueError):
            pass  # the client went away; nothing to answer
        finally:
            self.server._forget(self)
            rfile = getattr(self, "rfile", None)
            try:
                if rfile is not None:
                    rfile.close()  # the file holds a reference: close both to free the socket
                sock.close()
            except OSError:
                pass

    def idle(self, waiting: bool) -> None:
        """An upgraded connection waiting for its next message is idle: shutdown may close it."""
        self.busy = not waiting

    def _one(self) -> bool:
        """Serve one request; False when the connection must close afterwards."""
        try:
            line = self.rfile.readline(MAX_LINE + 1)
        except (TimeoutError, OSError) as exc:
            raise _Closed() from exc
        if not line:
            raise _Closed()
        self.busy = True
        try:
            self.sock.settimeout(self.server.read_timeout)
            try:
                environ, body, keep = self._parse(line)
            except _Reject as rej:
                self._reject(rej)
                return False
            return self._respond(environ, body, keep)
        finally:
            self.busy = False

    def _parse(self, line: bytes):
        if line in (b"\r\n", b"\n"):  # tolerated between requests (RFC 9112, 2.2)
            line = self.rfile.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise _Reject(414, "uri_too_long", f"request line over {MAX_LINE} bytes")
        parts = line.rstrip(b"\r\n").split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            raise _Reject(400, "bad_request", "malformed request line")
        method, target, version = (p.decode("latin-1") for p in parts)
        if not method.isalpha() or not method.isupper():
            raise _Reject(400, "bad_request", "malformed method")
        if version not in ("HTTP/1.1", "HTTP/1.0"):
            raise _Reject(400, "bad_request", "unsupported HTTP version")
        environ = self.server._base_environ(self.addr)
        total = 0
        for _ in range(MAX_HEADERS + 1):
            h = self.rfile.readline(MAX_HEAD_BYTES + 1)
            total += len(h)
            if total > MAX_HEAD_BYTES:
                raise _Reject(431, "headers_too_large", f"headers over {MAX_HEAD_BYTES} bytes")
            if h in (b"\r\n", b"\n"):
                break
            if not h:
                raise _Closed()
            name, sep, value = h.decode("latin-1").partition(":")
            if not sep or not name or name != name.strip() or "_" in name:
                # underscores: X-Foo_Bar would alias X-Foo-Bar in the environ; refuse both
                raise _Reject(400, "bad_request", "malformed header line")
            value = value.strip()
            key = name.upper().replace("-", "_")
            if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                key = "HTTP_" + key
            if key in environ and key.startswith("HTTP_"):
                environ[key] += "," + value
            elif key in environ:
                raise _Reject(400, "bad_request", f"repeated {name} header")
            else:
                environ[key] = value
        else:
            raise _Reject(431, "headers_too_large", f"over {MAX_HEADERS} headers")

        if target.startswith(("http://", "https://")):  # absolute form
            target = "/" + target.split("://", 1)[1].partition("/")[2]
        path, _, query = target.partition("?")
        path = path.partition("#")[0]
        if not path.startswith("/") and not (method == "OPTIONS" and path == "*"):
            raise _Reject(400, "bad_request", "request target must start with /")
        environ.update(REQUEST_METHOD=method, SERVER_PROTOCOL=version, RAW_URI=target,
                       PATH_INFO=unquote_to_bytes(path).decode("latin-1"), QUERY_STRING=query)

        conn_tokens = environ.get("HTTP_CONNECTION", "").lower()
        keep = ("close" not in conn_tokens if version == "HTTP/1.1"
                else "keep-alive" in conn_tokens)
        te = environ.pop("HTTP_TRANSFER_ENCODING", "").lower()
        length_text = environ.get("CONTENT_LENGTH", "")
        if te:
            if te != "chunked":
                raise _Reject(501, "not_implemented", "only chunked transfer coding is supported")
            if length_text:  # a smuggling shape: refuse (RFC 9112, 6.1)
                raise _Reject(400, "bad_request", "both Transfer-Encoding and Content-Length")
            length, chunked = None, True
        else:
            chunked = False
            if length_text and not length_text.isdigit():
                raise _Reject(400, "bad_request", "Content-Length is not a number")
            length = int(length_text) if length_text else 0
        expect = environ.get("HTTP_EXPECT", "").lower() == "100-continue" and version == \
            "HTTP/1.1" and (chunked or bool(length))
        body = _Body(self.rfile, length, chunked, self, expect)
        environ["wsgi.input"] = body
        environ["gunicorn.socket"] = self.sock  # simple-websocket takes the socket from here
        environ["kvraft.connection"] = self  # an upgraded peer stream takes the connection over
        return environ, body, keep

    def _respond(self, environ: dict, body: _Body, keep: bool) -> bool:
        server, sock = self.server, self.sock
        state: dict = {"status": None, "headers": None, "sent": False}
        head_only = environ["REQUEST_METHOD"] == "HEAD"
        out_chunked = False
        closing = not keep

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
                    if value.lower() == "close":
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
            if server.stopping.is_set():
                closing = True
            lines.append(f"Date: {server.date()}\r\nServer: {server.server_name}\r\n")
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

        if environ.get("HTTP_UPGRADE", "").lower() == "websocket":
            sock.settimeout(None)  # the websocket owns the socket now: no request read timeout
        try:
            result = server.app(environ, start_response)
        except StopIteration:  # flask-sock: the websocket had the socket and is done with it
            return False
        except _Reject as rej:
            self._reject(rej)
            return False
        except (OSError, ValueError):
            raise  # the connection broke: nothing to answer (run() closes it)
        except Exception:  # noqa: BLE001 - a bug in the app: answer 500, keep serving others
            log.exception("unhandled error in %s %s", environ["REQUEST_METHOD"],
                          environ["PATH_INFO"])
            if not state["sent"]:
                self._reject(_Reject(500, "internal", "internal error (logged by the node)"))
            return False
        try:
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

    def _reject(self, rej: _Reject) -> None:
        body = json.dumps({"error": rej.code, "message": rej.message}).encode()
        reason = _REASONS.get(rej.status, "Error")
        head = (f"HTTP/1.1 {rej.status} {reason}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nDate: {self.server.date()}\r\n"
                f"Server: {self.server.server_name}\r\nConnection: close\r\n\r\n")
        try:
            self.sock.sendall(head.encode("latin-1") + body)
        except OSError:
            return
        _linger(self.sock)


def _linger(sock: socket.socket, seconds: float = 1.0, limit: int = 1 << 20) -> None:
    """After an answer that ends the connection: stop sending, then read and drop what the
    client still sends (at most ``seconds``/``limit``), so that closing with unread input does
    not reset the connection before the client has read the answer."""
    try:
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(seconds)
        deadline = time.monotonic() + seconds
        while limit > 0 and time.monotonic() < deadline:
            data = sock.recv(65536)
            if not data:
                break
            limit -= len(data)
    except OSError:
        pass


class HttpServer:
    """Serves ``app`` (a WSGI callable) on ``host:port`` until :meth:`shutdown`."""

    def __init__(self, app, host: str, port: int, *, server_name: str = "kvraft",
                 max_connections: int = 1024, idle_timeout: float = 75.0,
                 read_timeout: float = 30.0, backlog: int = 1024) -> None:
        self.app, self.server_name = app, server_name
        self.max_connections = max_connections
        self.idle_timeout, self.read_timeout = idle_timeout, read_timeout
        self.stopping = threading.Event()
        self._conns: set[_Connection] = set()
        self._lock = threading.Lock()
        self._date = (0, "")
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
            "SCRIPT_NAME": "", "SERVER_NAME": str(self.address[0]),
            "SERVER_PORT": str(self.address[1]), "SERVER_SOFTWARE": server_name,
            "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr,
            "wsgi.multithread": True, "wsgi.multiprocess": False, "wsgi.run_once": False,
            "wsgi.input_terminated": True,
        }

    def _base_environ(self, addr) -> dict:
        env = dict(self._static)
        env["REMOTE_ADDR"], env["REMOTE_PORT"] = str(addr[0]), str(addr[1])
        return env

    def date(self) -> str:
        now = int(time.time())
        if self._date[0] != now:
            self._date = (now, formatdate(now, usegmt=True))
        return self._date[1]

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
                conn = _Connection(self, sock, addr)
                with self._lock:
                    full = len(self._conns) >= self.max_connections
                    if not full:
                        self._conns.add(conn)
                if full:  # answered on a thread of its own: accepting goes on
                    threading.Thread(target=self._refuse, args=(sock,), daemon=True).start()
                    continue
                threading.Thread(target=conn.run, name=f"http-{addr[0]}:{addr[1]}",
                                 daemon=True).start()
        finally:
            self.listener.close()

    def _refuse(self, sock: socket.socket) -> None:
        _Connection(self, sock, None)._reject(
            _Reject(503, "unavailable", f"over {self.max_connections} connections; retry"))
        sock.close()

    def _forget(self, conn: _Connection) -> None:
        with self._lock:
            self._conns.discard(conn)

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
