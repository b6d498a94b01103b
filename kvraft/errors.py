"""Errors the store raises, by kind. They carry a message for people and no HTTP status or code:
the HTTP layer maps each class to its answer in one table (``api/errors.py``)."""


class KvError(Exception):
    """Base of the store's errors; ``message`` is meant for the client."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(KvError):
    """The request itself is wrong (key, level, body, name); it changed nothing."""


class NotFound(KvError):
    """No such key, member or export."""


class Conflict(KvError):
    """The request is well formed but the cluster's state does not allow it (a membership change
    that would leave too few nodes, a node id or Raft address taken by another member)."""


class TooLarge(KvError):
    """A value or body over its limit; it changed nothing."""


class Unavailable(KvError):
    """Not enough replicas answered, or the cluster is not ready; retrying later may work."""


class ClockOffset(Unavailable):
    """This node's clock is too far from its peers' to stamp versions; it refuses to coordinate
    writes until it is back within ``max_clock_offset``."""
