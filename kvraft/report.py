"""Reports, exports and imports: the cluster's live data as files that travel through FTP.

A *report* (WebSocket ``/report``) is one JSON document::

    {"generated_at", "node", "file", "prefix", "cluster": <the node's cluster view>,
     "keys": [{"key", "value", "encoding": "utf-8" | "base64", "version"}, ...], "count"}

with every live key under ``prefix`` cluster-wide, sorted; a value that is not valid UTF-8 is
base64 and marked so. An *export* (``POST /export``) is JSON lines: a header line
``{"format": "kvraft-export", "version": 1, "node", "generated_at", "keys", "value_bytes"}`` then
one ``{"key", "value": <base64>, "version"}`` line per live key. An *import* (``POST /import``)
validates a whole export first, then writes every key through the normal write path
(:meth:`Node.put`): imported values get **new** versions, so an import is a restore that wins over
what the cluster holds, like any later write, and it is replicated, hinted and acknowledged like
one. (Writing the exported versions straight into replicas would bypass hints and ``w``, and an
old export would silently lose to newer data; the exported version stays in the file for audit.)

Everything streams through temporary files in ``<data_dir>/spool`` (not /tmp, which may be RAM):
keys are read a page at a time (pages shrink when values are large), so a report or export holds
about one page of values in memory, never the store. Remote names come from
:func:`kvraft.ftp.new_remote_name`; the only name taken from a client is an import name, and it
must match the generated export pattern exactly.

This module must not import Flask or keep a whole report or export in memory.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import ftplib
import io
import json
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, BinaryIO, TextIO

from .config import Config, parse_hostport
from .errors import BadRequest, KvError, NotFound, Unavailable
from .ftp import FtpAuthError, FtpClient, FtpError, new_remote_name
from .hlc import Version
from .keys import MAX_KEY_BYTES, check_key
from .peer import PeerError
from .storage import Record

if TYPE_CHECKING:
    from .node import Node

FORMAT = "kvraft-export"
FORMAT_VERSION = 1
PAGE_KEYS = 1000  # keys per listing page (Node.list_keys allows up to 1000)
PAGE_BYTES = 8 << 20  # aim for about this many value bytes per page
FIRST_PAGE_KEYS = 100  # value sizes are unknown until the first page is read
FETCH_BYTES = 8 << 20  # a peer stops adding records to one answer past this many value bytes
FTP_TIMEOUT = 15.0
IMPORT_THREADS = 8
MAX_CONCURRENT = 4  # reports/exports/imports running at once on one node
EXPORT_NAME = re.compile(r"^export-[A-Za-z0-9_-]{1,64}-\d{8}T\d{6}Z-[0-9a-f]{8}\.json$")
Progress = Callable[[dict], None]


class FtpUnavailable(KvError):
    """The FTP server could not be reached or a transfer failed."""


class FtpAuthFailed(KvError):
    """The FTP server refused this node's user or password."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One live key as it goes into a report or an export."""

    key: str
    value: bytes
    version: Version


# -- pure encoding -----------------------------------------------------------------------------


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
    value = base64.b64encode(e.value).decode("ascii")
    return (_dumps({"key": e.key, "value": value, "version": e.version.encode()}) + "\n").encode()


def write_export_body(
    out: BinaryIO,
    entries: Iterable[Entry],
    progress: Progress | None = None,
    every: int = PAGE_KEYS,
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

    def readinto(self, buf) -> int:
        block = self.read(len(buf))
        buf[: len(block)] = block
        return len(block)


# -- reading the cluster ---------------------------------------------------------------------


def local_records(
    get: Callable[[str], Record | None], keys: Iterable[str], max_bytes: int = FETCH_BYTES
) -> tuple[list[Record], int]:
    """Stored records (tombstones included) for ``keys`` in order, stopping once their values
    pass ``max_bytes``; returns ``(records, keys handled)``. Keys not stored are skipped."""
    records: list[Record] = []
    done = total = 0
    for key in keys:
        done += 1
        rec = get(key)
        if rec is not None:
            records.append(rec)
            total += len(rec.value)
            if total >= max_bytes:
                break
    return records, done


def live_entries(node: Node, prefix: str = "") -> Iterator[Entry]:
    """Every live key under ``prefix`` cluster-wide, sorted, with its value and version.

    Pages through :meth:`Node.list_keys` and reads each page's values from one replica per key
    (this node first), batched per replica, trying the next replica for a key a replica lacks.
    One page is in memory at a time: :data:`FIRST_PAGE_KEYS` keys, then as many as fit
    :data:`PAGE_BYTES` at the previous page's largest value (at most :data:`PAGE_KEYS`).
    Raises Unavailable when a listed key could not be read from any replica. A key deleted while
    the listing runs is left out.
    """
    after: str | None = None
    limit = FIRST_PAGE_KEYS
    while True:
        keys, nxt = node.list_keys(prefix, after, limit)
        largest = 1
        for e in fetch_entries(node, keys):
            largest = max(largest, len(e.value))
            yield e
        if nxt is None:
            return
        after = nxt
        limit = max(1, min(PAGE_KEYS, PAGE_BYTES // largest))


def fetch_entries(node: Node, keys: list[str]) -> list[Entry]:
    """The live entries for ``keys`` (sorted as given); see :func:`live_entries`."""
    best: dict[str, Record] = {}
    tried: dict[str, set[str]] = {k: set() for k in keys}
    errors: list[str] = []
    pending = list(keys)
    while pending:
        groups: dict[str, list[str]] = {}
        for key in pending:
            src = _next_source(node, key, tried[key])
            if src is not None:
                tried[key].add(src)
                groups.setdefault(src, []).append(key)
        if not groups:
            break
        for rec in _fetch_groups(node, groups, errors):
            old = best.get(rec.key)
            if old is None or rec.version > old.version:
                best[rec.key] = rec
        pending = [k for k in pending if k not in best or best[k].tomb]
    if pending and errors:
        raise Unavailable(f"could not read {len(pending)} key(s) from any replica: {errors[0]}")
    return [
        Entry(k, best[k].value, best[k].version) for k in keys if k in best and not best[k].tomb
    ]


def _next_source(node: Node, key: str, tried: set[str]) -> str | None:
    _part, replicas = node.replicas_of(key)
    order = sorted(replicas, key=lambda n: (n != node.id, not node.is_alive(n)))
    return next((n for n in order if n not in tried), None)


def _fetch_groups(node: Node, groups: dict[str, list[str]], errors: list[str]) -> Iterator[Record]:
    futures: dict[Future, str] = {
        node.pool.submit(_fetch_all, node, src, keys): src for src, keys in groups.items()
    }
    pending = set(futures)
    while pending:
        done, pending = wait(pending, return_when=FIRST_COMPLETED)
        for fut in done:
            try:
                yield from fut.result()
            except (PeerError, ValueError) as exc:
                errors.append(f"{futures[fut]}: {exc}")


def _fetch_all(node: Node, src: str, keys: list[str]) -> list[Record]:
    out: list[Record] = []
    while keys:
        records, done = _fetch_some(node, src, keys)
        out += records
        keys = keys[max(1, done) :]
    return out


def _fetch_some(node: Node, src: str, keys: list[str]) -> tuple[list[Record], int]:
    if src == node.id:
        return local_records(node.storage.get, keys)
    answer = node.peers.read_keys(src, keys, max_bytes=FETCH_BYTES)
    return list(answer.records), len(keys) if answer.done is None else answer.done


# -- FTP --------------------------------------------------------------------------------------


def ftp_client(config: Config) -> FtpClient:
    """The node's FTP client; FtpUnavailable when no FTP password is configured."""
    if not config.ftp_password:
        raise FtpUnavailable(
            "FTP is not configured on this node: set KVRAFT_FTP_PASSWORD "
            "(and KVRAFT_FTP, KVRAFT_FTP_USER)"
        )
    host, port = parse_hostport(config.ftp, "ftp")
    return FtpClient(
        host, port, config.ftp_user, config.ftp_password, tls=config.ftp_tls, timeout=FTP_TIMEOUT
    )


@contextlib.contextmanager
def ftp_errors(missing: str | None = None) -> Iterator[None]:
    """Map FTP failures to KvErrors; with ``missing``, a permanent RETR error is NotFound."""
    try:
        yield
    except FtpAuthError as exc:
        raise FtpAuthFailed(f"the FTP server refused this node's credentials: {exc}") from None
    except FtpError as exc:
        if missing is not None and isinstance(exc.__cause__, ftplib.error_perm):
            raise NotFound(f"no export named {missing!r} on the FTP server: {exc}") from None
        raise FtpUnavailable(f"the FTP server is unavailable: {exc}") from None


def _iso(now: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))


def _file_node_id(node_id: str) -> str:
    # Config allows '.' in node ids; remote names do not.
    return re.sub(r"[^A-Za-z0-9_-]", "_", node_id)


class Reports:
    """Reports, exports and imports for one node. Thread safe; every method blocks.

    At most :data:`MAX_CONCURRENT` of them run at once on a node (others wait their turn).
    ``ftp`` (anything with ``upload``/``download`` like :class:`FtpClient`) and ``clock`` are
    for tests; by default the client comes from the node's config.
    """

    def __init__(self, node: Node, ftp: Any = None, clock: Callable[[], float] = time.time) -> None:
        self.node = node
        self._ftp = ftp
        self._clock = clock
        self._spool = os.path.join(node.config.data_dir, "spool")
        self._slots = threading.BoundedSemaphore(MAX_CONCURRENT)

    def _client(self):
        return self._ftp if self._ftp is not None else ftp_client(self.node.config)

    def _tempfile(self) -> BinaryIO:
        os.makedirs(self._spool, exist_ok=True)
        return tempfile.TemporaryFile("w+b", dir=self._spool)

    def report(self, prefix: str = "") -> TextIO:
        """Write the report, STOR it, RETR it back; return the downloaded copy, open for reading.

        The caller closes the returned file. Raises FtpUnavailable, FtpAuthFailed, Unavailable.
        """
        ftp = self._client()
        now = self._clock()
        name = new_remote_name("report", _file_node_id(self.node.id), now=now)
        with (
            self._slots,
            io.TextIOWrapper(self._tempfile(), encoding="utf-8", newline="\n") as text,
        ):
            head = {
                "generated_at": _iso(now),
                "node": self.node.id,
                "file": name,
                "prefix": prefix,
                "cluster": self.node.cluster(),
            }
            write_report(text, head, live_entries(self.node, prefix))
            text.flush()
            text.buffer.seek(0)
            copy = self._tempfile()
            try:
                with ftp_errors():
                    ftp.upload(name, text.buffer)
                    ftp.download(name, copy)
            except BaseException:
                copy.close()
                raise
        copy.seek(0)
        return io.TextIOWrapper(copy, encoding="utf-8", newline="\n")

    def export(self, progress: Progress | None = None) -> dict:
        """Snapshot every live key to the FTP server; ``{"name", "keys", "bytes", ...}``."""
        ftp = self._client()
        now = self._clock()
        name = new_remote_name("export", _file_node_id(self.node.id), now=now)
        with self._slots, self._tempfile() as body:
            keys, nbytes = write_export_body(body, live_entries(self.node), progress)
            body.seek(0)
            header = export_header(self.node.id, _iso(now), keys, nbytes)
            with ftp_errors():
                sent = ftp.upload(name, ChainReader([io.BytesIO(header), body]))
        return {"name": name, "keys": keys, "bytes": sent, "value_bytes": nbytes}

    def import_(self, name: str, w: str = "quorum", progress: Progress | None = None) -> dict:
        """Write every record of export ``name`` into the store (new versions; see module doc).

        The whole file is validated before the first write: a bad name or file changes nothing.
        A write failing midway stops the import with Unavailable saying how far it got
        (importing again is safe: it rewrites the same values).
        """
        check_export_name(name)
        ftp = self._client()
        limit = self.node.config.max_value_bytes
        with self._slots, self._tempfile() as src:
            with ftp_errors(missing=name):
                size = ftp.download(name, src)
            src.seek(0)
            total = sum(1 for _ in read_export(src, name, limit))
            src.seek(0)
            written = self._put_all(read_export(src, name, limit), w, total, progress)
        return {"name": name, "keys": written, "bytes": size}

    def _put_all(
        self, records: Iterable[tuple[str, bytes]], w: str, total: int, progress: Progress | None
    ) -> int:
        written, next_progress = 0, PAGE_KEYS
        failure: KvError | None = None
        with ThreadPoolExecutor(IMPORT_THREADS, thread_name_prefix="import") as pool:
            inflight: set[Future] = set()
            for key, value in records:
                inflight.add(pool.submit(self.node.put, key, value, w))
                if len(inflight) >= 4 * IMPORT_THREADS:
                    ok, failure, inflight = _settle(inflight, failure)
                    written += ok
                    if failure is not None:
                        break
                    if progress is not None and written >= next_progress:
                        progress({"keys": written, "total": total})
                        next_progress += PAGE_KEYS
            while inflight:
                ok, failure, inflight = _settle(inflight, failure)
                written += ok
        if failure is not None:
            raise Unavailable(f"import stopped after {written} of {total} keys: {failure.message}")
        return written


def _settle(
    inflight: set[Future], failure: KvError | None
) -> tuple[int, KvError | None, set[Future]]:
    done, rest = wait(inflight, return_when=FIRST_COMPLETED)
    ok = 0
    for fut in done:
        try:
            fut.result()
            ok += 1
        except KvError as exc:
            failure = failure or exc
    return ok, failure, rest
