"""The peer stream moved to :mod:`kvraft.peer.stream`; this name stays for the tests that frame
stream requests by hand."""

from .peer.messages import STREAM_APPLY as APPLY
from .peer.messages import STREAM_GET as GET
from .peer.stream import PATH, PROTOCOL, frame

__all__ = ["APPLY", "GET", "PATH", "PROTOCOL", "frame"]
