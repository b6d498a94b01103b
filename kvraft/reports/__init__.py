"""Reports, exports and imports: the cluster's live data as files that travel through FTP.

- :mod:`.format`: the report and export file formats (pure encoders, validating decoders);
- :mod:`.read`: reading the cluster's live keys through the node's public read API;
- :mod:`.ftp`: the :class:`Uploader` seam, its ftplib client and the remote file names;
- :mod:`.job`: :class:`Reports`, the report, export and import jobs;
- :mod:`.fake`: :class:`MemoryUploader`, the in-memory Uploader for tests.

``api/`` and the command import from here. The FTP server is the command's
(``kvraft_cmd.ftpserver``). Nothing here imports Flask or pyftpdlib.
"""

from .fake import MemoryUploader
from .format import (
    BadExport,
    ChainReader,
    Entry,
    check_export_name,
    decode_value,
    encode_value,
    export_header,
    parse_report_request,
    read_export,
    write_export_body,
    write_report,
)
from .ftp import (
    FtpAuthError,
    FtpAuthFailed,
    FtpClient,
    FtpError,
    FtpUnavailable,
    Uploader,
    new_remote_name,
)
from .job import Reports, ReportSource
from .read import Source, live_entries, local_records

__all__ = [
    "BadExport",
    "ChainReader",
    "Entry",
    "FtpAuthError",
    "FtpAuthFailed",
    "FtpClient",
    "FtpError",
    "FtpUnavailable",
    "MemoryUploader",
    "ReportSource",
    "Reports",
    "Source",
    "Uploader",
    "check_export_name",
    "decode_value",
    "encode_value",
    "export_header",
    "live_entries",
    "local_records",
    "new_remote_name",
    "parse_report_request",
    "read_export",
    "write_export_body",
    "write_report",
]
