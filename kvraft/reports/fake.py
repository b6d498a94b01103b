"""An in-memory :class:`~kvraft.reports.ftp.Uploader`: files in a dict, failures on demand.

For tests and in-process clusters: it behaves like :class:`~kvraft.reports.ftp.FtpClient` as
far as the jobs can tell (a missing file is a permanent RETR error, so an import of it is
NotFound; ``fail`` makes every call raise that error). It must not touch the disk or network.
"""

from __future__ import annotations

import ftplib
import threading
from typing import BinaryIO

from .ftp import BLOCK_SIZE, FtpError, Readable


class MemoryUploader:
    """Files by name in :attr:`files`. Thread safe; calls do not block.

    ``fail``: an exception every call raises (an :class:`FtpError` or
    :class:`~kvraft.reports.ftp.FtpAuthError`, as the real client would). ``largest_read``: the
    largest block an upload read from its source (uploads read in blocks, never whole).
    """

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.fail: Exception | None = None
        self.largest_read = 0
        self._lock = threading.Lock()

    def upload(self, remote_name: str, src: Readable) -> int:
        if self.fail:
            raise self.fail
        chunks = []
        while block := src.read(BLOCK_SIZE):
            chunks.append(block)
            with self._lock:
                self.largest_read = max(self.largest_read, len(block))
        data = b"".join(chunks)
        with self._lock:
            self.files[remote_name] = data
        return len(data)

    def download(self, remote_name: str, dst: BinaryIO) -> int:
        if self.fail:
            raise self.fail
        with self._lock:
            data = self.files.get(remote_name)
        if data is None:
            try:
                raise ftplib.error_perm("550 No such file or directory.")
            except ftplib.error_perm as err:
                raise FtpError(f"FTP transfer failed: RETR {remote_name}: {err}") from err
        dst.write(data)
        return len(data)
