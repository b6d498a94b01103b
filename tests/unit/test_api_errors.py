"""The one error table (api/errors.py): the same exception is the same answer on every path,
and client input (a ValueError a handler did not validate) is a 4xx, never a 500."""

from __future__ import annotations

import pytest
from werkzeug.exceptions import MethodNotAllowed
from werkzeug.exceptions import NotFound as WerkzeugNotFound
from wsproto.utilities import RemoteProtocolError

from api.errors import describe, row
from api.kv import error_of
from kvraft.errors import (
    BadRequest,
    ClockOffset,
    Conflict,
    KvError,
    NotFound,
    TooLarge,
    Unavailable,
)
from kvraft.peer.client import ERROR_CODES, PeerStatus
from kvraft.reports import BadExport, FtpAuthFailed, FtpUnavailable
from kvraft.storage import StorageClosed


@pytest.mark.parametrize(
    ("exc", "answer"),
    [
        (BadRequest("bad key"), (400, "bad_request", "bad key")),
        (NotFound("no key"), (404, "not_found", "no key")),
        (Conflict("taken"), (409, "conflict", "taken")),
        (TooLarge("big"), (413, "too_large", "big")),
        (Unavailable("later"), (503, "unavailable", "later")),
        (ClockOffset("skewed"), (503, "clock_offset", "skewed")),
        (FtpUnavailable("down"), (503, "ftp_unavailable", "down")),
        (FtpAuthFailed("530"), (502, "ftp_auth", "530")),
        (StorageClosed(), (503, "unavailable", "node is shutting down")),
        (
            ValueError("invalid literal for int()"),
            (400, "bad_request", "invalid literal for int()"),
        ),
        (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad"), (400, "bad_request", None)),
        (RemoteProtocolError("no key", None), (400, "bad_request", None)),
        (WerkzeugNotFound(), (404, "not_found", None)),
        (MethodNotAllowed(["GET"]), (405, "method_not_allowed", None)),
    ],
)
def test_each_error_has_one_answer(exc, answer):
    status, code, message = describe(exc)
    assert (status, code) == answer[:2]
    if answer[2] is not None:
        assert message == answer[2]


def test_a_subclass_answers_like_its_base_unless_it_has_its_own_row():
    assert row(BadExport) == (400, "bad_request")
    assert row(ClockOffset) == (503, "clock_offset") != row(Unavailable)


def test_a_bug_is_a_500_internal_naming_the_exception_and_is_logged(caplog):
    assert describe(KeyError("x")) == (500, "internal", "KeyError: 'x'")
    assert describe(KvError("plain")) == (500, "internal", "KvError: plain")
    status, body, headers = error_of(RuntimeError("boom"))
    assert (
        status == 500 and b'"internal"' in body and ("Content-Type", "application/json") in headers
    )
    assert "unhandled error" in caplog.text


def test_a_client_error_is_not_logged_as_a_bug(caplog):
    status, body, _ = error_of(ValueError("not a number"))
    assert status == 400 and body == b'{"error": "bad_request", "message": "not a number"}'
    assert "unhandled" not in caplog.text


def test_a_forwarding_node_raises_a_peer_refusal_again_as_the_kind_the_peer_raised():
    for code, kind in ERROR_CODES.items():
        assert row(kind)[1] == code  # the code api/errors.py writes for that kind
        status = row(kind)[0]
        body = f'{{"error": "{code}", "message": "why"}}'.encode()
        err = PeerStatus("n2", status, body).error()
        assert type(err) is kind and err.message == "why"
    other = PeerStatus("n2", 500, b'{"error": "internal", "message": "boom"}').error()
    assert type(other) is Unavailable
