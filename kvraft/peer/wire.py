"""Typed peer wire messages: records framed as binary, never pickled.

A record is a fixed header, then its key, its version's node id and its value::

    u8 wire version (2), u8 flags (1: tombstone), u16 key length, u32 partition,
    u64 version ts, u16 node id length, u32 value length, key (UTF-8), node id (UTF-8), value

Values travel as raw bytes (no base64), so a 1 MiB value costs 1 MiB on the wire; nothing is
parsed as text but the two names. (Version 1 had a JSON header per record: decoding it took
longer than applying the record.) Decoding rejects anything malformed with
:class:`WireError`; peers are authenticated before their bytes reach this module.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator

from ..hlc import Version
from ..storage import Record

WIRE_VERSION = 2
_HEAD = struct.Struct(">BBHIQHI")
_TOMB = 1


class WireError(ValueError):
    pass


def encode_records(records: Iterable[Record]) -> bytes:
    parts: list[bytes] = []
    pack = _HEAD.pack
    for r in records:
        key = r.key.encode("utf-8", "surrogatepass")
        node = r.version.node.encode("utf-8", "surrogatepass")
        try:
            head = pack(
                WIRE_VERSION,
                _TOMB if r.tomb else 0,
                len(key),
                r.part,
                r.version.ts,
                len(node),
                len(r.value),
            )
        except struct.error as exc:
            raise WireError(f"record {r.key!r} does not fit the wire format: {exc}") from None
        parts += (head, key, node, r.value)
    return b"".join(parts)


def decode_records(data: bytes) -> Iterator[Record]:
    if not isinstance(data, bytes):
        data = bytes(data)
    size, unpack, end = _HEAD.size, _HEAD.unpack_from, len(data)
    pos = 0
    while pos < end:
        if pos + size > end:
            raise WireError("truncated record header")
        version, flags, nkey, part, ts, nnode, nvalue = unpack(data, pos)
        if version != WIRE_VERSION:
            raise WireError(f"unsupported wire version {version}")
        if flags & ~_TOMB:
            raise WireError(f"unknown record flags {flags:#x}")
        k0 = pos + size
        n0 = k0 + nkey
        v0 = n0 + nnode
        pos = v0 + nvalue
        if pos > end:
            raise WireError("truncated record")
        try:
            key = data[k0:n0].decode("utf-8", "surrogatepass")
            node = data[n0:v0].decode("utf-8", "surrogatepass")
        except UnicodeDecodeError as exc:
            raise WireError(f"bad record name: {exc}") from None
        if not node:
            raise WireError("record without a version node")
        yield Record(key, part, Version(ts, node), bool(flags), bytes(data[v0:pos]))
