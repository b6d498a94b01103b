"""schemathesis hooks for the API fuzz (``SCHEMATHESIS_HOOKS=tests.harness.schemathesis_hooks``,
with the repository root on ``PYTHONPATH``: tests/harness/apifuzz.py sets both).

A websocket upgrade answered 101 leaves the connection speaking WebSocket; ``requests`` does not
know that and would send the next case's HTTP request on it (the node then reads it as a frame
and closes the socket: a network error that says nothing about the API). So the connection of a
101 is closed as soon as its head is read, which also ends the socket on the node.

In the stateful phase, ``GET /kv/{key}`` reads the value, never ``?explain=1`` nor
``?redirect=1`` (the leader's 307 to the node it chose, whatever the key holds): an explanation
of a key is the replicas' metadata, which outlives a delete (it shows their tombstones, with
200, by design), so a chain create -> delete -> explain would be reported as a deleted resource
still available. The document's links say ``explain=0``; schemathesis follows a link's
parameters only most of the time (it explores), so this hook holds it to them. The coverage and
fuzzing phases still send ``?explain`` and ``?redirect`` every way.
"""

from __future__ import annotations

import schemathesis


def _close_upgraded(response, *_args, **_kwargs):
    if response.status_code == 101:
        conn = getattr(response.raw, "_connection", None)
        if conn is not None:
            conn.close()  # urllib3 opens a fresh connection for the next request
    return response


@schemathesis.hook
def before_call(context, case, kwargs):
    hooks = kwargs.setdefault("hooks", {})
    hooks.setdefault("response", []).append(_close_upgraded)
    meta = case.meta
    if (
        meta is not None
        and meta.phase.name == "stateful"
        and case.operation.label == "GET /kv/{key}"
        and case.query
    ):
        for name in ("explain", "redirect"):  # the links' plain read: the value itself
            if case.query.get(name) not in (None, "", "0"):
                case.query[name] = "0"
