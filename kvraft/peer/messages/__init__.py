"""Every message one node sends another, as a frozen dataclass with its codec next to it.

A request message names its ``PATH`` and ``METHOD`` (HTTP, :mod:`kvraft.peer.http`) and, for the
two that also travel on the peer stream (:mod:`kvraft.peer.stream`), its ``KIND`` there; its
``ANSWER`` is the message that comes back. ``to_wire()`` gives the query parameters and the body,
``from_wire(query, body)`` reads them back; an answer's ``to_wire()`` gives a :class:`Wire` (body,
content type, headers) and ``from_wire(headers, body)`` reads it. Decoding raises
:class:`MessageError` (a ValueError) for anything malformed; nothing is ever unpickled.

Every node of a cluster runs the same version (:data:`VERSION`); the client sends it in
:data:`VERSION_HEADER` and the server refuses another one, so a mixed cluster fails loudly.

The messages are grouped by what they are for; import them from here:

- :mod:`.codec`: the version, :class:`Wire`, :class:`Answer`, :class:`MessageError`,
  :class:`Refusal` (why a request is refused) and the shared encodings (apply results, keys,
  JSON);
- :mod:`.records`: :class:`Apply`, :class:`ReadKeys`, :class:`Scan`, :class:`Hint` (records
  written, read and handed off);
- :mod:`.control`: :class:`Ping`, :class:`MemberChange`, :class:`Stats` (liveness, membership,
  counters);
- :mod:`.sync`: :class:`Tree`, :class:`Entries`, :class:`Forget` (an anti-entropy round);
- :mod:`.watch`: :class:`WatchOpen`, :class:`WatchPoll`, :class:`WatchClose` (change feeds).

:data:`REQUESTS` lists every request message and :data:`BY_PATH` finds one by its path (the
dispatcher's routing, :mod:`kvraft.peer.server`). This package does no IO and knows no node.
"""

from __future__ import annotations

from typing import Any

from .codec import (
    JSON,
    OCTETS,
    STREAM_APPLY,
    STREAM_GET,
    VERSION,
    VERSION_HEADER,
    Answer,
    MessageError,
    Refusal,
    Wire,
    decode_keys,
    decode_results,
    encode_keys,
    encode_results,
    json_object,
)
from .control import JsonAnswer, MemberChange, Ping, Pong, Stats
from .records import Applied, Apply, Hint, HintStored, ReadKeys, Records, Scan
from .sync import Entries, Forget, Forgotten, LeafEntries, Tree, TreeHashes
from .watch import Done, WatchBatch, WatchClose, WatchOpen, WatchOpened, WatchPoll

REQUESTS: tuple[type[Any], ...] = (
    Apply,
    ReadKeys,
    Scan,
    Hint,
    Ping,
    MemberChange,
    Stats,
    Tree,
    Entries,
    Forget,
    WatchOpen,
    WatchPoll,
    WatchClose,
)
BY_PATH: dict[str, type[Any]] = {m.PATH: m for m in REQUESTS}

__all__ = [
    "BY_PATH",
    "JSON",
    "OCTETS",
    "REQUESTS",
    "STREAM_APPLY",
    "STREAM_GET",
    "VERSION",
    "VERSION_HEADER",
    "Answer",
    "Applied",
    "Apply",
    "Done",
    "Entries",
    "Forget",
    "Forgotten",
    "Hint",
    "HintStored",
    "JsonAnswer",
    "LeafEntries",
    "MemberChange",
    "MessageError",
    "Ping",
    "Pong",
    "ReadKeys",
    "Records",
    "Refusal",
    "Scan",
    "Stats",
    "Tree",
    "TreeHashes",
    "WatchBatch",
    "WatchClose",
    "WatchOpen",
    "WatchOpened",
    "WatchPoll",
    "Wire",
    "decode_keys",
    "decode_results",
    "encode_keys",
    "encode_results",
    "json_object",
]
