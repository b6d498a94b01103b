"""Typed peer wire messages: records framed as binary, never pickled.

A frame is ``u32 header length, header JSON, u32 value length, value bytes``; the header holds
``{"v": 1, "k": key, "p": partition, "t": ts, "n": node, "d": tombstone}``. Values travel as raw
bytes (no base64), so a 1 MiB value costs 1 MiB on the wire. Decoding rejects anything malformed
with :class:`WireError`; peers are authenticated before their bytes reach this module.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Iterator

from .hlc import Version
from .storage import Record

WIRE_VERSION = 1
_LEN = struct.Struct(">I")


class WireError(ValueError):
    pass


def encode_records(records: Iterable[Record]) -> bytes:
    parts = []
    for r in records:
        header = json.dumps(
            {"v": WIRE_VERSION, "k": r.key, "p": r.part, "t": r.version.ts, "n": r.version.node,
             "d": int(r.tomb)},
            separators=(",", ":"),
        ).encode()
        parts += (_LEN.pack(len(header)), header, _LEN.pack(len(r.value)), r.value)
    return b"".join(parts)


def decode_records(data: bytes) -> Iterator[Record]:
    view = memoryview(data)
    pos = 0
    while pos < len(view):
        header, pos = _take(view, pos)
        value, pos = _take(view, pos)
        try:
            h = json.loads(bytes(header))
            if h.get("v") != WIRE_VERSION:
                raise WireError(f"unsupported wire version {h.get('v')!r}")
            yield Record(str(h["k"]), int(h["p"]), Version(int(h["t"]), str(h["n"])),
                         bool(h["d"]), bytes(value))
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, WireError):
                raise
            raise WireError(f"bad record header: {exc}") from None


def _take(view: memoryview, pos: int) -> tuple[memoryview, int]:
    if pos + 4 > len(view):
        raise WireError("truncated frame length")
    (n,) = _LEN.unpack_from(view, pos)
    end = pos + 4 + n
    if end > len(view):
        raise WireError("truncated frame")
    return view[pos + 4:end], end
