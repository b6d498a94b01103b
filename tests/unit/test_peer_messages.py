"""Every peer message and answer (kvraft/peer/messages/) survives its own codec, and malformed
input is refused with MessageError (a ValueError), never a crash or a wrong message."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvraft.hlc import Version
from kvraft.peer import messages as m
from kvraft.storage import ApplyResult, Record

REC = Record("k/é", 3, Version(123456789, "n1"), False, b"\x00value")
TOMB = Record("gone", 0, Version(5, "n2"), True, b"")

REQUESTS = [
    m.Apply((REC, TOMB)),
    m.ReadKeys(("a", "b/é")),
    m.ReadKeys(("a",), max_bytes=4096),
    m.Scan("p/", "p/3", 250),
    m.Scan(),
    m.Hint("n3", (REC,)),
    m.Ping(),
    m.MemberChange("add", "n4", "127.0.0.1:8004", "127.0.0.1:9004"),
    m.MemberChange("remove", "n2"),
    m.Stats(),
    m.Tree(roots=(0, 5)),
    m.Tree(groups=(7,)),
    m.Tree(leaves={3: [0, 9]}),
    m.Entries(3, (1, 2, 40)),
    m.Forget(3, ("x", "y"), 1 << 40),
    m.WatchOpen("pre/"),
    m.WatchPoll("sid-1", 4, 0.5),
    m.WatchClose("sid-1"),
]

ANSWERS = [
    m.Applied((ApplyResult(True, None, False), ApplyResult(False, Version(9, "n2"), True))),
    m.Records((REC, TOMB)),
    m.Records((REC,), done=7),
    m.HintStored(Version(77, "n1")),
    m.HintStored(None),
    m.Pong("n1", 10, False, 3, 1_700_000_000_000, ("127.0.0.1:9001", "127.0.0.1:9002")),
    m.Pong("n2"),
    m.JsonAnswer({"added": "n4", "raft": "127.0.0.1:9004"}),
    m.TreeHashes({0: 11, 5: 12}, {7: [1, 2, 3]}, {3: {0: [4, 5], 9: [6]}}),
    m.LeafEntries({"a": (Version(1, "n1"), False), "b": (Version(2, "n2"), True)}),
    m.Forgotten(2),
    m.WatchOpened("sid-9"),
    m.WatchBatch(12, (REC,)),
    m.Done(),
]


@pytest.mark.parametrize("message", REQUESTS, ids=lambda x: type(x).__name__)
def test_every_request_reads_back_as_itself(message):
    query, body = message.to_wire()
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in query.items())
    assert type(message).from_wire(query, body) == message
    assert m.BY_PATH[message.PATH] is type(message)


@pytest.mark.parametrize("answer", ANSWERS, ids=lambda x: type(x).__name__)
def test_every_answer_reads_back_as_itself(answer):
    wire = answer.to_wire()
    headers = {k.lower(): v for k, v in wire.headers}
    assert type(answer).from_wire(headers, wire.body) == answer


def test_every_request_type_is_routed_and_has_an_answer_type():
    assert set(m.BY_PATH.values()) == set(m.REQUESTS)
    assert len(m.BY_PATH) == len(m.REQUESTS)  # one path each
    for kind in m.REQUESTS:
        assert kind.METHOD in ("GET", "POST") and kind.PATH.startswith("/peer/")
        assert hasattr(kind.ANSWER, "from_wire")


def test_the_stream_form_of_a_read_is_the_keys():
    msg = m.ReadKeys(("x", "clé"))
    assert m.ReadKeys.from_frame(msg.to_frame()) == msg


@pytest.mark.parametrize(
    "kind, query, body",
    [
        (m.Apply, {}, b"\x02\x00garbage"),
        (m.Hint, {}, b""),  # no target
        (m.Scan, {"limit": "ten"}, b""),
        (m.ReadKeys, {}, b"[1, 2]"),
        (m.ReadKeys, {}, b'{"keys": [1]}'),
        (m.ReadKeys, {"max_bytes": "x"}, b'{"keys": []}'),
        (m.Tree, {}, b'{"leaves": {"x": [1]}}'),
        (m.Entries, {}, b'{"part": 1}'),
        (m.Forget, {}, b'{"part": 1, "keys": []}'),
        (m.MemberChange, {}, b'{"op": "add", "id": "n1"}'),
        (m.WatchPoll, {"wait": "soon"}, b""),
        (m.Ping, {}, b""),  # nothing to refuse: a ping has no fields
    ],
)
def test_malformed_requests_are_refused_as_message_errors(kind, query, body):
    if kind is m.Ping:
        assert kind.from_wire(query, body) == m.Ping()
        return
    with pytest.raises(m.MessageError):
        kind.from_wire(query, body)


def test_scan_limits_are_clamped_as_the_peer_serves_them():
    assert m.Scan.from_wire({"limit": "0"}, b"").limit == 1
    assert m.Scan.from_wire({"limit": "99999"}, b"").limit == 10000


def test_a_hint_answer_that_does_not_say_is_none():
    assert m.HintStored.from_wire({}, b"not json").newest is None
    assert m.HintStored.from_wire({}, b'{"stored": true}').newest is None


versions = st.builds(Version, st.integers(0, 2**64 - 1), st.text(min_size=1, max_size=8))
results = st.builds(ApplyResult, st.booleans(), st.none() | versions, st.booleans())


@given(st.lists(results, max_size=20))
def test_apply_results_have_one_binary_encoding_that_round_trips(rs):
    data = m.encode_results(rs)
    assert m.decode_results(data) == rs
    assert m.Applied.from_wire({}, m.Applied(tuple(rs)).to_wire().body).results == tuple(rs)
    for cut in range(1, len(data)):
        try:
            decoded = m.decode_results(data[:cut])
        except m.MessageError:
            continue
        assert len(decoded) < len(rs)  # a cut at a result boundary is a shorter list


@given(st.lists(st.text(max_size=30), max_size=20))
def test_keys_round_trip(keys):
    assert m.decode_keys(m.encode_keys(keys)) == keys
