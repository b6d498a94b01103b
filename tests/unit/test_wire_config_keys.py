import pytest

from kvraft.config import Config, ConfigError
from kvraft.errors import BadRequest
from kvraft.hlc import Version
from kvraft.keys import check_key, check_level
from kvraft.peer.wire import WireError, decode_records, encode_records
from kvraft.storage import Record


def test_records_round_trip_binary_values_and_tombstones():
    recs = [
        Record("k/ü", 3, Version(7, "n1"), False, bytes(range(256))),
        Record("gone", 1, Version(8, "n2"), True, b""),
        Record("empty", 0, Version(9, "n3"), False, b""),
    ]
    assert list(decode_records(encode_records(recs))) == recs


def test_truncated_or_garbage_frames_are_rejected():
    data = encode_records([Record("k", 0, Version(1, "n1"), False, b"value")])
    with pytest.raises(WireError):
        list(decode_records(data[:-1]))
    with pytest.raises(WireError):
        list(decode_records(b"\x00\x00\x00\x02{}\x00\x00\x00\x00"))


def test_every_malformed_header_field_is_refused():
    good = encode_records([Record("k\udcff", 5, Version(2**60, "nœud"), True, b"")])
    assert list(decode_records(good)) == [Record("k\udcff", 5, Version(2**60, "nœud"), True)]
    assert list(decode_records(memoryview(good))) == list(decode_records(good))
    bad = {
        "unsupported wire version 1": b"\x01" + good[1:],
        "unknown record flags": good[:1] + b"\x03" + good[2:],
        "bad record name": good[:22] + b"\xff" + good[23:],  # the key's first byte (22-byte head)
        "without a version node": good[:16] + b"\x00\x00" + good[18:],
    }
    for message, data in bad.items():
        with pytest.raises(WireError, match=message):
            list(decode_records(data))
    with pytest.raises(WireError, match="does not fit"):
        encode_records([Record("k", 2**32, Version(1, "n1"), False)])


def test_config_reads_environment_and_flags_win():
    env = {
        "KVRAFT_SECRET": "s3cret-value",
        "KVRAFT_ID": "n2",
        "KVRAFT_PEERS": "h:1,h:2",
        "KVRAFT_PARTITIONS": "16",
        "KVRAFT_FSYNC": "yes",
    }
    c = Config.load({"partitions": "8"}, env)
    assert (c.id, c.peers, c.partitions, c.fsync) == ("n2", ("h:1", "h:2"), 8, True)
    assert "s3cret" not in repr(c)


@pytest.mark.parametrize(
    "env,message",
    [
        ({"KVRAFT_ID": "n1"}, "secret"),
        ({"KVRAFT_ID": "n 1", "KVRAFT_SECRET": "12345678"}, "id"),
        ({"KVRAFT_ID": "n1", "KVRAFT_SECRET": "12345678", "KVRAFT_PARTITIONS": "x"}, "partitions"),
        (
            {"KVRAFT_ID": "n1", "KVRAFT_SECRET": "12345678", "KVRAFT_REPLICATION_FACTOR": "2"},
            "exceeds",
        ),
        ({"KVRAFT_ID": "n1", "KVRAFT_SECRET": "12345678", "KVRAFT_HTTP": "nohost"}, "HOST:PORT"),
    ],
)
def test_bad_config_names_the_field(env, message):
    with pytest.raises(ConfigError, match=message):
        Config.load({}, env)


@pytest.mark.parametrize("key", ["", "a\x00b", "tab\there", "x" * 1025, "é" * 513, "\x7f"])
def test_bad_keys(key):
    with pytest.raises(BadRequest):
        check_key(key)


@pytest.mark.parametrize("key", ["a", "x" * 1024, "é" * 512, "path/with spaces/ü", ".."])
def test_good_keys(key):
    assert check_key(key) == key


def test_levels():
    assert check_level(None, "quorum", "w") == "quorum"
    with pytest.raises(BadRequest, match="w must be one of"):
        check_level("most", "quorum", "w")
