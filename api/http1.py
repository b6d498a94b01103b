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
  ``Connection`` read as a list of tokens, and the size limits (414, 431). llhttp calls back
  only at the end of the head: once it has accepted the bytes, each field line is one
  ``name:value`` line ending in CRLF, and the reader takes the fields from those bytes in one
  pass (a bounded cache maps each name to its environ key and what it means to the server).
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

import h11
import httptools

MAX_LINE = 8192  # request line
MAX_HEADERS = 100  # field lines (and, for a chunked body, trailer lines)
MAX_HEAD_BYTES = 16384  # the whole head, request line included
MAX_LEADING_CRLF = 8  # empty lines tolerated before a request line (RFC 9112, 2.2)
_TOKEN = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+"
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") ([\x21-\x7e]+) HTTP/([0-9])\.([0-9])\r\n")


class HttpError(Exception):
    """A request refused by the grammar or a limit: answer ``status`` and close."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def bad(message: str) -> HttpError:
    return HttpError(400, "bad_request", message)


class Head:
    """A valid request head. Header names and values are latin-1 text, in arrival order."""

    __slots__ = (
        "method",
        "target",
        "version",
        "environ",
        "raw",
        "length",
        "chunked",
        "keep_alive",
        "upgrade",
        "expect_continue",
    )

    def __init__(
        self,
        method: str,
        target: str,
        version: str,
        environ: dict,
        raw: bytes,
        length: int,
        chunked: bool,
        keep_alive: bool,
        upgrade: bool,
        expect_continue: bool,
    ) -> None:
        self.method = method
        self.target = target
        self.version = version  # "HTTP/1.1" or "HTTP/1.0"
        self.environ = environ  # the fields as WSGI environ keys (HTTP_X_A, CONTENT_TYPE, ...)
        self.raw = raw  # the head's bytes (leading empty lines not included)
        self.length = length  # Content-Length (0 when absent or chunked)
        self.chunked = chunked
        self.keep_alive = keep_alive  # what the request asks for (the server may still close)
        self.upgrade = upgrade  # Connection: upgrade with an Upgrade header
        self.expect_continue = expect_continue

    @property
    def headers(self) -> list[tuple[str, str]]:
        """The field lines as (name, value), in arrival order (computed from :attr:`raw`)."""
        return [
            (name.decode("latin-1"), value.strip(b" \t").decode("latin-1"))
            for name, _, value in (f.partition(b":") for f in _field_lines(self.raw))
        ]


def _field_lines(raw: bytes) -> list[bytes]:
    """The field lines of a head llhttp accepted (CRLF line endings, no obs-fold)."""
    lines = raw[raw.index(b"\r\n") + 2 : -2].split(b"\r\n")
    lines.pop()  # after the last field's CRLF (or the request line's, with no field)
    return lines


# What a field name means to the server, by kind: most are plain (0); these are checked.
_PLAIN, _UNDERSCORE, _HOST, _LENGTH, _TYPE, _TE, _CONNECTION, _EXPECT = range(8)
_KINDS = {
    "HOST": _HOST,
    "CONTENT_LENGTH": _LENGTH,
    "CONTENT_TYPE": _TYPE,
    "TRANSFER_ENCODING": _TE,
    "CONNECTION": _CONNECTION,
    "EXPECT": _EXPECT,
}
_NAMES: dict[bytes, tuple[str, str, int]] = {}  # raw name -> (name, environ key, kind)
_NAMES_MAX = 1024  # the cache stops growing here (names a client invents are not kept)


def _name(raw: bytes) -> tuple[str, str, int]:
    """What a field name llhttp accepted (a token) means: its text, its WSGI environ key and
    its kind. Cached: the names of a workload are few."""
    name = raw.decode("latin-1")
    key = name.upper().replace("-", "_")
    kind = _UNDERSCORE if "_" in name else _KINDS.get(key, _PLAIN)
    if kind != _TYPE and kind != _LENGTH:
        key = "HTTP_" + key
    got = (name, key, kind)
    if len(_NAMES) < _NAMES_MAX:
        _NAMES[raw] = got
    return got


class _End:
    """What llhttp calls back: only the end of the head. It checks every part of the head
    without calling into Python for it (the fields are read from the bytes it accepted,
    afterwards); httptools looks the other names up, and a None saves an AttributeError each.
    Apart from the reader, so that the parser's reference to it makes no cycle."""

    __slots__ = ("complete",)
    on_url = on_header = on_body = on_message_begin = on_message_complete = None
    on_chunk_header = on_chunk_complete = None

    def __init__(self) -> None:
        self.complete = False

    def on_headers_complete(self) -> None:
        self.complete = True


class HeadReader:
    """Reads one request head from bytes fed in as they arrive. Not thread-safe (one per
    request)."""

    __slots__ = ("_buf", "_raw", "_parser", "_end", "_leading", "_started")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._raw = b""
        self._end = _End()
        self._parser = httptools.HttpRequestParser(self._end)
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
                head = data[start : end + 4] if start or end + 4 < len(data) else data
                if head.count(b"\r\n") > MAX_HEADERS + 2:
                    raise HttpError(431, "headers_too_large", f"over {MAX_HEADERS} header fields")
                self._feed(head)
                if not self._end.complete:
                    raise bad("malformed request head")
                self._raw = head
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
        if not self._end.complete:
            raise bad("malformed request head")
        used = start + end - seen
        del buf[end:]
        self._raw = bytes(buf).lstrip(b"\r\n")  # "\r" and "\n" came in separate reads
        return used

    def _check_size(self, size: int) -> None:
        buf = self._buf
        line_end = buf.find(b"\r\n", 0, MAX_LINE + 2)
        if line_end < 0 and size > MAX_LINE:
            raise HttpError(414, "uri_too_long", f"request line over {MAX_LINE} bytes")
        if size > MAX_HEAD_BYTES:
            raise HttpError(431, "headers_too_large", f"request head over {MAX_HEAD_BYTES} bytes")
        if buf.count(b"\r\n", 0, size) > MAX_HEADERS + 3:  # (+1: a CRLF split before the head)
            raise HttpError(431, "headers_too_large", f"over {MAX_HEADERS} header fields")

    def _feed(self, data) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # llhttp stops at the end of an upgrade's head; head() reads the flag
        except httptools.HttpParserError as exc:
            raise bad(f"malformed request: {exc}") from None

    def head(self, environ: dict | None = None) -> Head:
        """The head, once :meth:`feed` said it is complete; raises :class:`HttpError` for the
        rules llhttp leaves to the server. The fields are added to ``environ`` (WSGI keys; a
        new dict if None), which becomes :attr:`Head.environ`."""
        raw = self._raw
        line = _REQUEST_LINE.match(raw)
        if line is None:
            raise bad("malformed request line")
        method, target, major, minor = line.groups()
        if major != b"1" or minor not in (b"0", b"1"):
            raise HttpError(505, "http_version_not_supported", "HTTP/1.1 or HTTP/1.0 only")
        http11 = minor == b"1"
        if environ is None:
            environ = {}
        hosts = 0
        length = 0
        te = None
        connection = ""
        expect = ""
        names = _NAMES
        fields = _field_lines(raw)
        if len(fields) > MAX_HEADERS:
            raise HttpError(431, "headers_too_large", f"over {MAX_HEADERS} header fields")
        for field in fields:
            name_b, _, value_b = field.partition(b":")
            name, key, kind = names.get(name_b) or _name(name_b)
            value = value_b.strip(b" \t").decode("latin-1")
            if kind:
                if kind == _UNDERSCORE:  # X_A would alias X-A in the WSGI environ
                    raise bad(f"header name {name!r} has an underscore")
                if kind == _HOST:
                    hosts += 1
                elif kind == _LENGTH:
                    if not value.isascii() or not value.isdigit() or len(value) > 20:
                        raise bad("Content-Length is not a number of at most 20 digits")
                    length = int(value)
                elif kind == _TE:
                    if te is not None:
                        raise HttpError(501, "not_implemented", "one Transfer-Encoding only")
                    te = value.lower()
                elif kind == _CONNECTION:
                    connection += "," + value.lower()
                elif kind == _EXPECT:
                    expect = value.lower()
                if (kind == _LENGTH or kind == _TYPE) and key in environ:
                    raise bad(f"repeated {name} header")
            if key in environ:
                environ[key] += "," + value
            else:
                environ[key] = value
        if http11 and hosts != 1:
            raise bad("HTTP/1.1 needs exactly one Host header")
        if hosts > 1:
            raise bad("more than one Host header")
        chunked = False
        if te is not None:
            if te != "chunked":
                raise HttpError(
                    501, "not_implemented", "only Transfer-Encoding: chunked is supported"
                )
            if not http11:
                raise bad("Transfer-Encoding in an HTTP/1.0 request")
            chunked = True
            environ.pop("HTTP_TRANSFER_ENCODING", None)  # the server decodes it
        if connection:
            tokens = {t.strip() for t in connection.split(",")}
            keep = "close" not in tokens if http11 else "keep-alive" in tokens
        else:
            keep = http11
        return Head(
            method.decode("latin-1"),
            target.decode("latin-1"),
            "HTTP/1.1" if http11 else "HTTP/1.0",
            environ,
            raw,
            length,
            chunked,
            keep,
            self._parser.should_upgrade(),
            expect == "100-continue" and http11 and (chunked or length > 0),
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
