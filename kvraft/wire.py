"""The record codec moved to :mod:`kvraft.peer.wire`; this name stays for the tests and benches
that build peer messages by hand."""

from .peer.wire import WIRE_VERSION, WireError, decode_records, encode_records

__all__ = ["WIRE_VERSION", "WireError", "decode_records", "encode_records"]
