"""Change feeds for WebSocket ``/watch``: this node's and the whole cluster's."""

from .feed import ChangeHub, ClusterFeed, Event, HttpPeerFeed, PeerSubscriptions, Watcher

__all__ = ["ChangeHub", "ClusterFeed", "Event", "HttpPeerFeed", "PeerSubscriptions", "Watcher"]
