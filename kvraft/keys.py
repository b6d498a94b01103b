"""Validation of client input that the store itself depends on: keys and consistency levels."""

from __future__ import annotations

import uuid

from .errors import BadRequest
from .model import LEVELS

MAX_KEY_BYTES = 1024


def check_key(key: str) -> str:
    """Return ``key`` if it is 1-1024 bytes of UTF-8 with no control characters, else BadRequest."""
    try:
        n = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise BadRequest("key must be valid UTF-8") from None
    if not 1 <= n <= MAX_KEY_BYTES:
        raise BadRequest(f"key must be 1 to {MAX_KEY_BYTES} bytes of UTF-8, got {n}")
    if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in key):
        raise BadRequest("key must not contain control characters")
    return key


def check_level(value: str | None, default: str, name: str) -> str:
    if value is None or value == "":
        return default
    if value not in LEVELS:
        raise BadRequest(f"{name} must be one of {', '.join(LEVELS)}, got {value!r}")
    return value


def new_key() -> str:
    """A fresh key for ``POST /kv``: time-ordered UUID-like hex, unique across nodes."""
    return uuid.uuid4().hex
