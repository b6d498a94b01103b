"""Errors the store raises; the HTTP layer maps each to one status code in one place."""


class KvError(Exception):
    status = 500
    code = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(KvError):
    status = 400
    code = "bad_request"


class NotFound(KvError):
    status = 404
    code = "not_found"


class Conflict(KvError):
    """The request is well formed but the cluster's state does not allow it (a membership change
    that would leave too few nodes, a node id or Raft address taken by another member)."""

    status = 409
    code = "conflict"


class TooLarge(KvError):
    status = 413
    code = "too_large"


class Unavailable(KvError):
    """Not enough replicas answered, or the cluster is not ready; retrying later may work."""

    status = 503
    code = "unavailable"


class ClockOffset(Unavailable):
    """This node's clock is too far from its peers' to stamp versions; it refuses to coordinate
    writes until it is back within ``max_clock_offset``."""

    code = "clock_offset"
