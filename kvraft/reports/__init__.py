"""Reports, exports and imports: the cluster's live data as files that travel through FTP."""

from .ftp import FtpAuthError, FtpClient, FtpError, FtpServer, new_remote_name
from .job import (
    BadExport,
    FtpAuthFailed,
    FtpUnavailable,
    Reports,
    check_export_name,
    decode_value,
    local_records,
    parse_report_request,
)

__all__ = [
    "BadExport",
    "FtpAuthError",
    "FtpAuthFailed",
    "FtpClient",
    "FtpError",
    "FtpServer",
    "FtpUnavailable",
    "Reports",
    "check_export_name",
    "decode_value",
    "local_records",
    "new_remote_name",
    "parse_report_request",
]
