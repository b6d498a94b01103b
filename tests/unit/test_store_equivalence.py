"""The in-memory store answers as the SQLite store does: the same random sequence of writes
(puts and tombstones, repeated keys, older and newer versions, keys moving partition, hints,
forgets, purges, dropped partitions, watermarks, restarts) applied to both, and every answer
compared after every step: each call's result, and get, get_many, scans, partition scans, leaf
hashes and entries, the partitions held, the figures and the hints. The leaf hashes are also
checked against a rebuild from the records (what a node that reopened its store would compute).
"""

import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

from kvraft.core.antientropy import LEAVES, leaf_of, record_hash
from kvraft.hlc import Version
from kvraft.storage import MemoryStore, Record, Storage

PARTS = st.integers(0, 2)
TS = st.integers(0, 8)  # few timestamps: versions tie, and meet the bounds of purges
# keys that repeat and share prefixes: three in four from a fixed pool, the others any short
# text of these characters; U+10FFFF is the upper bound of the SQLite store's prefix scan
POOL = ["a", "a/", "a/b", "a/ü", "ab", "b", "b/1", "b/2", "ü", "a\U0010ffff", "\U0010ffff"]
TEXT = st.text(alphabet="ab/ü\U0010ffff", min_size=1, max_size=3)
KEYS = st.integers(0, 3).flatmap(lambda i: TEXT if i == 0 else st.sampled_from(POOL))
TARGETS = ["n2", "n3"]
ID = st.integers(1, 30)


@st.composite
def records(draw):
    """Any record: a put or a tombstone (tombstones may carry a value: both stores keep it)."""
    return Record(
        draw(KEYS),
        draw(PARTS),
        Version(draw(TS), draw(st.sampled_from(["n1", "n2"]))),
        draw(st.booleans()),
        draw(st.binary(max_size=4)),
    )


SCANS = st.lists(
    st.tuples(st.text(alphabet="ab/ü\U0010ffff", max_size=2), st.none() | KEYS, st.integers(0, 5)),
    max_size=3,
)


def observe(store, keys, scans):
    """Every answer a caller can get from the store, in a comparable form."""
    parts = range(4)
    out = {
        "get": [store.get(k) for k in keys],
        "get_many": sorted(store.get_many(keys), key=lambda r: r.key),
        "scan": [store.scan(p, a, n) for p, a, n in scans] + [store.scan()],
        "scan_partition": [
            (store.scan_partition(p), store.scan_partition(p, "a", 2)) for p in parts
        ],
        "leaf_hashes": [store.leaf_hashes(p) for p in parts],
        "leaf_entries": [store.leaf_entries(p, range(LEAVES)) for p in range(3)],
        "some_leaves": [store.leaf_entries(p, [leaf_of(k) for k in keys[:3]]) for p in parts],
        "held": store.partitions_held(),
        "figures": (store.live_keys, store.live_bytes, store.max_ts, store.hints_pending),
        "hint_targets": store.hint_targets(),
        "hints": [(store.hints_for(t), store.hints_for(t, limit=1)) for t in TARGETS],
        "watermarks": store.watermarks,
    }
    for p in parts:  # the trees are what a rebuild from the records gives
        rebuilt = [0] * LEAVES
        for r in store.scan_partition(p, limit=-1):
            rebuilt[leaf_of(r.key)] ^= record_hash(r.key, r.version, r.tomb)
        assert store.leaf_hashes(p) == rebuilt
    return out


class BothStores(RuleBasedStateMachine):
    """Each rule does one call on both stores and compares the answers; the invariant compares
    everything observable after every step."""

    keys = Bundle("keys")

    def __init__(self):
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="kvraft-eq-"))
        self.sql, self.mem = Storage(self.dir / "s.db"), MemoryStore()
        self.seen = ["absent"]
        self.scans = [("", None, 1000)]

    def teardown(self):
        self.sql.close()
        self.mem.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def both(self, call):
        answer = call(self.mem)
        assert answer == call(self.sql)
        return answer

    def note(self, rec):
        if rec.key not in self.seen:
            self.seen.append(rec.key)
        return rec.key

    @rule(target=keys, rec=records())
    def apply(self, rec):
        self.both(lambda s: s.apply(rec))
        return self.note(rec)

    @rule(recs=st.lists(records(), max_size=6))
    def apply_many(self, recs):
        self.both(lambda s: s.apply_many(recs))
        for r in recs:
            self.note(r)

    @rule(key=keys, part=PARTS, ts=TS, node=st.sampled_from(["n1", "n2"]), tomb=st.booleans())
    def rewrite(self, key, part, ts, node, tomb):
        """A key already written, again: older, newer or equal, maybe in another partition."""
        rec = Record(key, part, Version(ts, node), tomb, b"again")
        self.both(lambda s: s.apply(rec))

    @rule(who=st.sampled_from(TARGETS), rec=records())
    def add_hint(self, who, rec):
        self.both(lambda s: s.add_hint(who, rec))
        self.note(rec)

    @rule(who=st.sampled_from(TARGETS), n=st.integers(0, 3), newest=st.booleans(), extra=ID)
    def drop_hints(self, who, n, newest, extra):
        """Drop the oldest or the newest ``n`` hints held for ``who``, and maybe an unknown id."""
        ids = [h.id for h in self.sql.hints_for(who)]
        ids = (ids[len(ids) - n :] if newest else ids[:n]) + [extra]
        self.both(lambda s: s.drop_hints(ids))

    @rule(part=PARTS, keys=st.lists(keys, max_size=3), below=TS)
    def forget(self, part, keys, below):
        self.both(lambda s: s.forget(part, keys, below))

    @rule(key=consumes(keys), below=TS)
    def forget_where_held(self, key, below):
        rec = self.sql.get(key)
        part = rec.part if rec is not None else 0
        self.both(lambda s: s.forget(part, [key], below))

    @rule(part=PARTS, below=TS)
    def purge_tombstones(self, part, below):
        self.both(lambda s: s.purge_tombstones(part, below))

    @rule(part=PARTS)
    def drop_partition(self, part):
        self.both(lambda s: s.drop_partition(part))

    @rule(marks=st.dictionaries(PARTS, TS, max_size=3))
    def set_watermarks(self, marks):
        self.sql.watermarks = dict(marks)
        self.mem.watermarks = dict(marks)

    @rule(scans=SCANS)
    def choose_scans(self, scans):
        self.scans = [("", None, 1000), *scans]

    @rule()
    def restart(self):
        self.sql.close()
        self.sql = Storage(self.dir / "s.db")
        saved = self.mem.snapshot()
        self.mem.close()
        self.mem = MemoryStore.restore(saved)

    @invariant()
    def every_answer_is_the_same(self):
        assert observe(self.mem, self.seen, self.scans) == observe(self.sql, self.seen, self.scans)


BothStores.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
test_memory_and_sqlite_stores_answer_alike = BothStores.TestCase
