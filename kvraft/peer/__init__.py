"""The peer seam: every message one node sends another, the client that sends them and the
server that answers them.

- :mod:`.messages`: each message a frozen, versioned dataclass with its codec, grouped by
  concept (records, control, sync, watch) over one shared codec;
- :mod:`.client`: :class:`PeerClient`, one typed method per message, over HTTP
  (:mod:`.http`) and the peer stream (:mod:`.stream`) with its batchers (:mod:`.batch`);
  :class:`Peers` is the protocol callers depend on;
- :mod:`.server`: :class:`PeerServer`, the one dispatcher of ``/peer/*`` (signature, decode,
  handler; a :class:`Refused` request for a :class:`Refusal`), and its HTTP edge ``handle``
  mounted by ``api/``, which gives answers and refusals their statuses (:data:`.http.REFUSALS`);
- :mod:`.fake`: :class:`FakeNetwork`, an in-process network with drops, delays, partitions and
  reordering, for tests;
- :mod:`.wire`: the binary record codec.

Nothing here imports Flask or knows the node: handlers and the node's address book and liveness
marks are injected.
"""

from .client import PeerClient, Peers, PeerStatus, Sent
from .fake import FakeNetwork, FakePeers
from .http import PeerConnectError, PeerError, PeerResponse
from .messages import (
    Applied,
    Apply,
    Entries,
    Forget,
    Forgotten,
    Hint,
    HintStored,
    JsonAnswer,
    LeafEntries,
    MemberChange,
    MessageError,
    Ping,
    Pong,
    ReadKeys,
    Records,
    Refusal,
    Scan,
    Stats,
    Tree,
    TreeHashes,
    WatchBatch,
    WatchClose,
    WatchOpen,
    WatchOpened,
    WatchPoll,
)
from .server import PeerServer, Refused, Reply
from .stream import StreamRefused

__all__ = [
    "Applied",
    "Apply",
    "Entries",
    "FakeNetwork",
    "FakePeers",
    "Forget",
    "Forgotten",
    "Hint",
    "HintStored",
    "JsonAnswer",
    "LeafEntries",
    "MemberChange",
    "MessageError",
    "PeerClient",
    "PeerConnectError",
    "PeerError",
    "PeerResponse",
    "PeerServer",
    "PeerStatus",
    "Peers",
    "Ping",
    "Pong",
    "ReadKeys",
    "Records",
    "Refusal",
    "Refused",
    "Reply",
    "Scan",
    "Sent",
    "Stats",
    "StreamRefused",
    "Tree",
    "TreeHashes",
    "WatchBatch",
    "WatchClose",
    "WatchOpen",
    "WatchOpened",
    "WatchPoll",
]
