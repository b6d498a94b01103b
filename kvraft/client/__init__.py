"""The kvraft client: the typed Python client of the public HTTP API and the CLI's client commands.

``from kvraft.client import Client`` is the public entry (PRODUCT.md). Modules: ``http`` (the
:class:`Client`, failover between nodes), ``routing`` (pure decisions of partition-aware routing:
which replica a key goes to, which answers show a stale map), ``router`` (the map the client
routes by and its refreshes; thread-safe), ``errors`` (typed errors and the status/code mapping),
``format`` (pure output formatting) and ``cli`` (the ``kvraft put|get|delete|ls|status|report|
export|import`` subcommands). Nothing here imports the server side (``api``, Flask, pysyncobj).
"""

from ..keys import LEVELS
from .errors import (
    CODE_STATUS,
    RETRY_STATUSES,
    BadRequest,
    KvClientError,
    NotFound,
    ServerError,
    Unauthorized,
    Unavailable,
    error_from_code,
    error_from_status,
)
from .http import (
    ADMIN_PATHS,
    ADMIN_TOKEN_FILE,
    DEFAULT_NODES,
    MAX_PAGE,
    Client,
    Page,
    ProgressCallback,
    Value,
    WriteResult,
    default_admin_token,
    nodes_from_env,
    normalize_node,
    quote_key,
)

__all__ = [
    "ADMIN_PATHS",
    "ADMIN_TOKEN_FILE",
    "CODE_STATUS",
    "DEFAULT_NODES",
    "LEVELS",
    "MAX_PAGE",
    "RETRY_STATUSES",
    "BadRequest",
    "Client",
    "KvClientError",
    "NotFound",
    "Page",
    "ProgressCallback",
    "ServerError",
    "Unauthorized",
    "Unavailable",
    "Value",
    "WriteResult",
    "default_admin_token",
    "error_from_code",
    "error_from_status",
    "nodes_from_env",
    "normalize_node",
    "quote_key",
]
