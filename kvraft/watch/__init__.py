"""Change feeds for WebSocket ``/watch``.

- :mod:`.hub`: :class:`ChangeHub`, this node's applied records fanned out by prefix;
- :mod:`.subscriptions`: :class:`PeerSubscriptions`, hub subscriptions other nodes long-poll,
  and :func:`serve`, which answers their peer messages from it;
- :mod:`.feed`: :class:`ClusterFeed`, one node's cluster-wide feed (pollers of every peer plus
  the local hub, de-duplicated per key), and its peer seam :class:`PeerFeed`.

Nothing here imports Flask or does HTTP itself (the peer client and server are injected).
"""

from .feed import ClusterFeed, Event, HttpPeerFeed, PeerFeed, Watcher
from .hub import ChangeHub, Subscription
from .subscriptions import PeerSubscriptions, serve

__all__ = [
    "ChangeHub",
    "ClusterFeed",
    "Event",
    "HttpPeerFeed",
    "PeerFeed",
    "PeerSubscriptions",
    "Subscription",
    "Watcher",
    "serve",
]
