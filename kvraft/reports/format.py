"""The report and export formats: pure encoders and validating decoders, no IO of their own.

A *report* (WebSocket ``/report``) is one JSON document::

    {"generated_at", "node", "file", "prefix", "cluster": <the node's cluster view>,
     "keys": [{"key", "value", "encoding": "utf-8" | "base64", "version"}, ...], "count"}

with every live key under ``prefix``, sorted; a value that is not valid UTF-8 is base64 and
marked so. An *export* (``POST /export``) is JSON lines: a header line ``{"format":
"kvraft-export", "version": 1, "node", "generated_at", "keys", "value_bytes"}`` then one
``{"key", "value": <base64>, "version"}`` line per live key.

Writers stream to the file they are given, one entry at a time; readers take one line at a time
and raise :class:`BadExport` (a :class:`~kvraft.errors.BadRequest`) naming the bad line. The
only file name taken from a client, an import's, must match :data:`EXPORT_NAME` exactly.

This module must not read the cluster, talk to FTP, keep a whole file in memory or import Flask.
Every function is thread safe (no shared state).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any, BinaryIO, TextIO

from ..errors import BadRequest
from ..hlc import Version
from ..keys import MAX_KEY_BYTES, check_key

FORMAT = "kvraft-export"
FORMAT_VERSION = 1
PROGRESS_EVERY = 1000  # keys between two progress calls of an export
EXPORT_NAME = re.compile(r"^export-[A-Za-z0-9_-]{1,64}-\d{8}T\d{6}Z-[0-9a-f]{8}\.json$")
Progress = Callable[[dict], None]


@dataclass(frozen=True, slots=True)
class Entry:
    """One live key as it goes into a report or an export."""

    key: str
    value: bytes
    version: Version


def encode_value(value: bytes) -> tuple[str, str]:
    """``(text, encoding)``: the value itself if it is valid UTF-8, else its base64."""
    try:
        return value.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(value).decode("ascii"), "base64"


def decode_value(text: str, encoding: str) -> bytes:
    """Inverse of :func:`encode_value`; ValueError on an unknown encoding or bad base64."""
    if encoding == "utf-8":
        return text.encode("utf-8")
    if encoding == "base64":
        return base64.b64decode(text, validate=True)
    raise ValueError(f"unknown value encoding {encoding!r}")


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), default=str)


def report_entry(e: Entry) -> dict:
    """The JSON object of one key in a report."""
    text, encoding = encode_value(e.value)
    return {"key": e.key, "value": text, "encoding": encoding, "version": e.version.encode()}


def write_report(out: TextIO, head: dict, entries: Iterable[Entry]) -> int:
    """Write a report document (``head`` fields, then ``keys``, then ``count``); return count.

    Streams: one entry per line, nothing kept.
    """
    out.write("{")
    for name, value in head.items():
        out.write(f"{_dumps(name)}:{_dumps(value)},\n")
    out.write('"keys":[')
    count = 0
    for e in entries:
        out.write(",\n" if count else "\n")
        out.write(_dumps(report_entry(e)))
        count += 1
    out.write(f'\n],"count":{count}}}\n')
    return count


def export_header(node_id: str, generated_at: str, keys: int, value_bytes: int) -> bytes:
    """The first line of an export (it comes first but is written last: it counts the body)."""
    return (
        _dumps(
            {
                "format": FORMAT,
                "version": FORMAT_VERSION,
                "node": node_id,
                "generated_at": generated_at,
                "keys": keys,
                "value_bytes": value_bytes,
            }
        )
        + "\n"
    ).encode()


def export_line(e: Entry) -> bytes:
    """One key of an export as a JSON line (the value in base64)."""
    value = base64.b64encode(e.value).decode("ascii")
    return (_dumps({"key": e.key, "value": value, "version": e.version.encode()}) + "\n").encode()


def write_export_body(
    out: BinaryIO,
    entries: Iterable[Entry],
    progress: Progress | None = None,
    every: int = PROGRESS_EVERY,
) -> tuple[int, int]:
    """Write one export line per entry; return ``(keys, value bytes)``.

    ``progress({"keys", "value_bytes"})`` is called every ``every`` keys.
    """
    keys = nbytes = 0
    for e in entries:
        out.write(export_line(e))
        keys += 1
        nbytes += len(e.value)
        if progress is not None and keys % every == 0:
            progress({"keys": keys, "value_bytes": nbytes})
    return keys, nbytes


def check_export_name(name: object) -> str:
    """``name`` if it is exactly a node-generated export name, else BadRequest. Never a path."""
    if not isinstance(name, str) or not EXPORT_NAME.fullmatch(name):
        raise BadRequest(
            "name must be the name of an export made by POST /export, like "
            "'export-n1-20260101T000000Z-0123abcd.json' (no paths)"
        )
    return name


class BadExport(BadRequest):
    """The file is not a valid kvraft export; nothing was imported."""


def read_export(src: BinaryIO, name: str, max_value_bytes: int) -> Iterator[tuple[str, bytes]]:
    """Yield ``(key, value)`` for each record of an export file, validating as it goes.

    Raises :class:`BadExport` (a 400) naming the line for anything malformed: a bad header,
    a bad key or base64, a value over ``max_value_bytes``, or a record count that differs from the
    header's. Iterate once to validate a whole file before writing anything.
    """
    limit = (max_value_bytes * 4) // 3 + 4 * MAX_KEY_BYTES + 4096  # longest valid line

    def bad(lineno: int, why: str) -> BadExport:
        return BadExport(f"{name} is not a valid kvraft export: line {lineno}: {why}")

    head_line = src.readline(limit)
    try:
        head = json.loads(head_line)
    except ValueError:
        raise bad(1, "the first line must be the JSON header") from None
    if not isinstance(head, dict) or head.get("format") != FORMAT:
        raise bad(1, f"the header must say format {FORMAT!r}")
    if head.get("version") != FORMAT_VERSION:
        raise bad(1, f"unsupported format version {head.get('version')!r}")
    expected = head.get("keys")
    if not isinstance(expected, int) or expected < 0:
        raise bad(1, "the header's key count is missing")
    count = 0
    for lineno, line in enumerate(iter(lambda: src.readline(limit), b""), start=2):
        if not line.endswith(b"\n") and len(line) >= limit:
            raise bad(lineno, "line too long")
        yield _parse_export_line(line, lineno, max_value_bytes, bad)
        count += 1
    if count != expected:
        raise bad(count + 2, f"the header promises {expected} keys, the file holds {count}")


def _parse_export_line(
    line: bytes, lineno: int, max_value_bytes: int, bad: Callable[[int, str], BadExport]
) -> tuple[str, bytes]:
    try:
        rec = json.loads(line)
        key, text = rec["key"], rec["value"]
        if not isinstance(key, str) or not isinstance(text, str):
            raise TypeError("key and value must be strings")
        value = base64.b64decode(text, validate=True)
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise bad(lineno, f"bad record: {exc}") from None
    try:
        check_key(key)
    except BadRequest as exc:
        raise bad(lineno, exc.message) from None
    if len(value) > max_value_bytes:
        raise bad(lineno, f"value of {key!r} exceeds max_value_bytes ({max_value_bytes})")
    return key, value


def parse_report_request(data: str | bytes) -> str:
    """The prefix asked for by a ``/report`` message ``{"type": "report", "prefix"?}``.

    Raises BadRequest for invalid JSON, an unknown type or a bad prefix.
    """
    try:
        msg = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest('messages must be JSON, like {"type": "report"}') from None
    if not isinstance(msg, dict):
        raise BadRequest('messages must be JSON objects, like {"type": "report"}')
    if msg.get("type") != "report":
        raise BadRequest(f"unknown message type {msg.get('type')!r}; expected 'report'")
    prefix = msg.get("prefix", "")
    if not isinstance(prefix, str) or len(prefix.encode("utf-8", "replace")) > MAX_KEY_BYTES:
        raise BadRequest(f"prefix must be a string of at most {MAX_KEY_BYTES} bytes")
    return prefix


class ChainReader(io.RawIOBase):
    """Read several binary files one after the other, as one (for a header + body upload)."""

    def __init__(self, parts: Iterable[IO[bytes]]) -> None:
        super().__init__()
        self._parts = list(parts)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        while self._parts:
            block = self._parts[0].read(size)
            if block:
                return block
            self._parts.pop(0)
        return b""

    def readinto(self, buf: Any) -> int:
        block = self.read(len(buf))
        buf[: len(block)] = block
        return len(block)
