"""HTTP/1.1 request parsing for :mod:`api.httpd`: maintained parsers, the RFC 9112 grammar, and
no sockets.

- The request head goes through llhttp (Node.js's parser, via ``httptools``, as in uvicorn),
  which enforces the grammar of the request line and the field lines (methods, tokens, field
  values without CR, LF, NUL or other controls, CRLF line endings, no obs-fold, a valid and
  single ``Content-Length``, no ``Transfer-Encoding`` with it). :class:`HeadReader` then adds the
  rules llhttp leaves to the server, as h11 and gunicorn enforce them: exactly one space between
  the parts of the request line, HTTP/1.0 or 1.1 only (505), ``Host`` exactly once in HTTP/1.1,
  ``Content-Length`` of at most 20 digits, ``Transfer-Encoding`` only ``chunked`` (501) and only
  in HTTP/1.1, no underscore in a field name (``X_A`` would alias ``X-A`` in the WSGI environ),
  ``Connection`` read as a list of tokens, and the size limits (414, 431).
- A chunked body goes through h11 (:class:`ChunkedBody`), which checks chunk sizes (1 to 20 hex
  digits, nothing else), the CRLF after every chunk and the trailer section (bounded), and says
  where the message ends, so a request pipelined after it starts at the right byte.
- A ``Content-Length`` body is just that many bytes: the server reads them itself.

Every refusal is an :class:`HttpError` with its status and a message for the JSON answer; a
refused request has not reached the app. ``api.httpd`` feeds bytes in and does the IO; the
differential test (tests/unit/test_http1_differential.py) holds these decisions against h11's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import h11
import httptools

MAX_LINE = 8192  # request line
MAX_HEADERS = 100  # field lines (and, for a chunked body, trailer lines)
MAX_HEAD_BYTES = 16384  # the whole head, request line included
MAX_LEADING_CRLF = 8  # empty lines tolerated before a request line (RFC 9112, 2.2)
_TOKEN = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+"
_SPECIAL = frozenset(("HOST", "CONTENT_LENGTH", "TRANSFER_ENCODING", "CONNECTION", "EXPECT"))
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") ([\x21-\x7e]+) HTTP/([0-9])\.([0-9])\r\n")


class HttpError(Exception):
    """A request refused by the grammar or a limit: answer ``status`` and close."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def bad(message: str) -> HttpError:
    return HttpError(400, "bad_request", message)


@dataclass(slots=True)
class Head:
    """A valid request head. Header names and values are latin-1 text, in arrival order."""

    method: str
    target: str
    version: str  # "HTTP/1.1" or "HTTP/1.0"
    headers: list[tuple[str, str]]
    environ: dict[str, str]  # the fields as WSGI environ keys (HTTP_X_A, CONTENT_TYPE, ...)
    raw: bytes  # the head's bytes (leading empty lines not included)
    length: int  # Content-Length (0 when absent or chunked)
    chunked: bool
    keep_alive: bool  # what the request asks for (the server may still close)
    upgrade: bool  # Connection: upgrade with an Upgrade header
    expect_continue: bool


class _Collector:
    __slots__ = ("url", "headers", "complete")

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.complete = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        if len(self.headers) > MAX_HEADERS:
            raise HttpError(431, "headers_too_large", f"over {MAX_HEADERS} header fields")

    def on_headers_complete(self) -> None:
        self.complete = True


class HeadReader:
    """Reads one request head from bytes fed in as they arrive. Not thread-safe (one per
    request)."""

    __slots__ = ("_buf", "_parser", "_got", "_leading", "_started")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._got = _Collector()
        self._parser = httptools.HttpRequestParser(self._got)
        self._leading = 0
        self._started = False

    @property
    def started(self) -> bool:
        """Some byte of a request (not only empty lines) has arrived."""
        return self._started

    def feed(self, data: bytes) -> int | None:
        """Feed the next bytes; when they complete the head, the number of them it used (the
        rest is the body or the next request), else None. Raises :class:`HttpError`."""
        start = 0
        if not self._buf:  # empty lines before a request line are skipped
            while data.startswith(b"\r\n", start) and self._leading < MAX_LEADING_CRLF:
                start += 2
                self._leading += 1
            if start == len(data):
                return None
            if data.startswith(b"\r\n", start):
                raise bad("too many empty lines before the request line")
            end = data.find(b"\r\n\r\n", start)
            if (
                0 <= end <= start + MAX_HEAD_BYTES - 4
                and 0 <= data.find(b"\r\n", start, start + MAX_LINE + 2) < end + 2
            ):
                # the whole head in one piece (the usual case): no copy into the buffer
                self._started = True
                head = data[start : end + 4]
                self._feed(head)
                if not self._got.complete:
                    raise bad("malformed request head")
                self._buf += head
                return end + 4
        self._started = True
        buf = self._buf
        seen = len(buf)
        buf += data[start:] if start else data
        end = buf.find(b"\r\n\r\n", max(0, seen - 3))
        if end < 0:
            self._check_size(len(buf))
            self._feed(memoryview(buf)[seen:])
            return None
        end += 4
        self._check_size(end)
        self._feed(memoryview(buf)[seen:end])
        if not self._got.complete:
            raise bad("malformed request head")
        used = start + end - seen
        del buf[end:]
        return used

    def _check_size(self, size: int) -> None:
        line_end = self._buf.find(b"\r\n", 0, MAX_LINE + 2)
        if line_end < 0 and size > MAX_LINE:
            raise HttpError(414, "uri_too_long", f"request line over {MAX_LINE} bytes")
        if size > MAX_HEAD_BYTES:
            raise HttpError(431, "headers_too_large", f"request head over {MAX_HEAD_BYTES} bytes")

    def _feed(self, data) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # llhttp stops at the end of an upgrade's head; head() reads the flag
        except HttpError:
            raise
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, HttpError):
                raise cause from None
            raise bad(f"malformed request: {exc}") from None
        except httptools.HttpParserError as exc:
            raise bad(f"malformed request: {exc}") from None

    def head(self) -> Head:
        """The head, once :meth:`feed` said it is complete; raises :class:`HttpError` for the
        rules llhttp leaves to the server."""
        raw = bytes(self._buf)
        line = _REQUEST_LINE.match(raw.lstrip(b"\r\n"))  # "\r" and "\n" in separate reads
        if line is None:
            raise bad("malformed request line")
        major, minor = line.group(3), line.group(4)
        if major != b"1" or minor not in (b"0", b"1"):
            raise HttpError(505, "http_version_not_supported", "HTTP/1.1 or HTTP/1.0 only")
        version = "HTTP/1.1" if minor == b"1" else "HTTP/1.0"
        headers: list[tuple[str, str]] = []
        environ: dict[str, str] = {}
        hosts = 0
        length = 0
        te = None
        connection = ""
        expect = ""
        for name_b, value_b in self._got.headers:
            name, value = name_b.decode("latin-1"), value_b.decode("latin-1")
            if value[-1:] in (" ", "\t"):  # llhttp drops the OWS before a value, not after
                value = value.rstrip(" \t")
            upper = name.upper()
            key = upper.replace("-", "_")
            if key in _SPECIAL:
                if "_" in name:
                    raise bad(f"header name {name!r} has an underscore")
                if key == "HOST":
                    hosts += 1
                elif key == "CONTENT_LENGTH":
                    if not value.isascii() or not value.isdigit() or len(value) > 20:
                        raise bad("Content-Length is not a number of at most 20 digits")
                    length = int(value)
                elif key == "TRANSFER_ENCODING":
                    if te is not None:
                        raise HttpError(501, "not_implemented", "one Transfer-Encoding only")
                    te = value.lower()
                elif key == "CONNECTION":
                    connection += "," + value.lower()
                elif key == "EXPECT":
                    expect = value.lower()
            elif "_" in name:  # X_A would alias X-A in the WSGI environ
                raise bad(f"header name {name!r} has an underscore")
            headers.append((name, value))
            if key != "CONTENT_TYPE" and key != "CONTENT_LENGTH":
                key = "HTTP_" + key
                if key in environ:
                    environ[key] += "," + value
                    continue
            elif key in environ:
                raise bad(f"repeated {name} header")
            environ[key] = value
        if version == "HTTP/1.1" and hosts != 1:
            raise bad("HTTP/1.1 needs exactly one Host header")
        if hosts > 1:
            raise bad("more than one Host header")
        chunked = False
        if te is not None:
            if te != "chunked":
                raise HttpError(
                    501, "not_implemented", "only Transfer-Encoding: chunked is supported"
                )
            if version != "HTTP/1.1":
                raise bad("Transfer-Encoding in an HTTP/1.0 request")
            chunked = True
            environ.pop("HTTP_TRANSFER_ENCODING", None)  # the server decodes it
        if connection:
            tokens = {t.strip() for t in connection.split(",")}
            keep = "close" not in tokens if version == "HTTP/1.1" else "keep-alive" in tokens
        else:
            keep = version == "HTTP/1.1"
        upgrade = bool(self._parser.should_upgrade())
        return Head(
            method=line.group(1).decode("latin-1"),
            target=line.group(2).decode("latin-1"),
            version=version,
            headers=headers,
            environ=environ,
            raw=raw,
            length=length,
            chunked=chunked,
            keep_alive=keep,
            upgrade=upgrade,
            expect_continue=expect == "100-continue"
            and version == "HTTP/1.1"
            and (chunked or length > 0),
        )


class ChunkedBody:
    """Decodes a chunked request body with h11, from the request's head (:attr:`Head.raw`).

    :meth:`feed` takes bytes as they arrive and returns the body's data in them; once
    :attr:`done`, :attr:`leftover` holds the bytes after the message (a pipelined request).
    Raises :class:`HttpError` for a malformed body."""

    __slots__ = ("_conn", "done", "leftover", "trailers")

    def __init__(self, raw_head: bytes) -> None:
        self._conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        self.done = False
        self.leftover = b""
        self.trailers: list[tuple[bytes, bytes]] = []
        self._conn.receive_data(raw_head)
        try:
            event = self._conn.next_event()
        except h11.RemoteProtocolError as exc:
            raise bad(f"malformed request: {exc}") from None
        if not isinstance(event, h11.Request):
            raise bad("malformed request head")

    def feed(self, data: bytes) -> list[bytes]:
        if self.done:
            raise bad("data after the end of the body")
        conn = self._conn
        conn.receive_data(data)
        out: list[bytes] = []
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    return out
                if isinstance(event, h11.Data):
                    out.append(bytes(event.data))
                elif isinstance(event, h11.EndOfMessage):
                    if len(event.headers) > MAX_HEADERS:
                        raise HttpError(
                            431, "headers_too_large", f"over {MAX_HEADERS} trailer fields"
                        )
                    self.trailers = list(event.headers.raw_items())
                    self.done = True
                    self.leftover = bytes(conn.trailing_data[0])
                    return out
                else:
                    raise bad("malformed chunked body")
        except h11.RemoteProtocolError as exc:
            status = exc.error_status_hint
            if status == 431:
                raise HttpError(431, "headers_too_large", f"trailers too large: {exc}") from None
            raise bad(f"malformed chunked body: {exc}") from None

    def eof(self) -> None:
        """The client closed the connection inside the body."""
        raise bad("the connection closed inside the chunked body")
