"""schemathesis hooks for the API fuzz (``SCHEMATHESIS_HOOKS=schemathesis_hooks``, with
``tests/`` on ``PYTHONPATH``: tests/apifuzz.py sets both).

A websocket upgrade answered 101 leaves the connection speaking WebSocket; ``requests`` does not
know that and would send the next case's HTTP request on it (the node then reads it as a frame
and closes the socket: a network error that says nothing about the API). So the connection of a
101 is closed as soon as its head is read, which also ends the socket on the node.
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
