"""The report, export and import jobs: read the cluster, write the file, move it through FTP.

:class:`Reports` runs each job start to end (formats: :mod:`.format`; reading the cluster:
:mod:`.read`; FTP: :mod:`.ftp`). An *import* validates a whole export first, then writes every
key through the normal write path (:meth:`Node.put`): imported values get **new** versions, so an
import is a restore that wins over what the cluster holds, like any later write, and it is
replicated, hinted and acknowledged like one. (Writing the exported versions straight into
replicas would bypass hints and ``w``, and an old export would silently lose to newer data; the
exported version stays in the file for audit.)

Everything streams through temporary files in ``<data_dir>/spool`` (not /tmp, which may be RAM):
a report or export holds about one page of values in memory, never the store.

This module must not import Flask, read replicas itself (it reads through :mod:`.read`) or keep
a whole report or export in memory.
"""

from __future__ import annotations

import io
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import BinaryIO, Protocol, TextIO

from ..config import Config
from ..errors import KvError, Unavailable
from .format import (
    PROGRESS_EVERY,
    ChainReader,
    Progress,
    check_export_name,
    export_header,
    read_export,
    write_export_body,
    write_report,
)
from .ftp import Uploader, ftp_client, ftp_errors, new_remote_name
from .read import Source, live_entries

IMPORT_THREADS = 8
MAX_CONCURRENT = 4  # reports/exports/imports running at once on one node


class ReportSource(Source, Protocol):
    """What the jobs need of the node, all public (:class:`Node` has it): the reads of
    :class:`~kvraft.reports.read.Source`, the write of an import, the view and the config."""

    @property
    def id(self) -> str: ...

    @property
    def config(self) -> Config: ...

    def cluster(self) -> dict:
        """The node's cluster view (``GET /cluster``)."""
        ...

    def put(self, key: str, value: bytes, w: str = "quorum") -> object:
        """Write ``key`` through the write path; KvError subclasses on failure."""
        ...


def _iso(now: float) -> str:
    """``now`` (epoch seconds) as ISO 8601 UTC to the second."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))


def _file_node_id(node_id: str) -> str:
    # Config allows '.' in node ids; remote names do not.
    return re.sub(r"[^A-Za-z0-9_-]", "_", node_id)


class Reports:
    """Reports, exports and imports for one node. Thread safe; every method blocks on the
    cluster and the FTP server.

    At most :data:`MAX_CONCURRENT` of them run at once on a node (others wait their turn).
    ``ftp`` is the :class:`~kvraft.reports.ftp.Uploader` (by default an
    :class:`~kvraft.reports.ftp.FtpClient` from the node's config, made per job, so a
    configuration error is reported by the job that needs FTP) and ``clock`` gives epoch
    seconds for names and timestamps; both are seams for tests.
    """

    def __init__(
        self,
        node: ReportSource,
        ftp: Uploader | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.node = node
        self._ftp = ftp
        self._clock = clock
        self._spool = os.path.join(node.config.data_dir, "spool")
        self._slots = threading.BoundedSemaphore(MAX_CONCURRENT)

    def _client(self) -> Uploader:
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
        written, next_progress = 0, PROGRESS_EVERY
        failure: KvError | None = None
        with ThreadPoolExecutor(IMPORT_THREADS, thread_name_prefix="import") as pool:
            inflight: set[Future[object]] = set()
            for key, value in records:
                inflight.add(pool.submit(self.node.put, key, value, w))
                if len(inflight) >= 4 * IMPORT_THREADS:
                    ok, failure, inflight = _settle(inflight, failure)
                    written += ok
                    if failure is not None:
                        break
                    if progress is not None and written >= next_progress:
                        progress({"keys": written, "total": total})
                        next_progress += PROGRESS_EVERY
            while inflight:
                ok, failure, inflight = _settle(inflight, failure)
                written += ok
        if failure is not None:
            raise Unavailable(f"import stopped after {written} of {total} keys: {failure.message}")
        return written


def _settle(
    inflight: set[Future[object]], failure: KvError | None
) -> tuple[int, KvError | None, set[Future[object]]]:
    """Wait for at least one write; count the ones that succeeded, keep the first failure."""
    done, rest = wait(inflight, return_when=FIRST_COMPLETED)
    ok = 0
    for fut in done:
        try:
            fut.result()
            ok += 1
        except KvError as exc:
            failure = failure or exc
    return ok, failure, rest
