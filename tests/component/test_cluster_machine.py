"""A Hypothesis state machine over the in-process cluster: puts and deletes through any node,
at any write level, while the network drops, delays (on the fake clock: under the peer timeout,
or past it with the message delivered and its reply lost, or not delivered), partitions and
heals, clocks skew (inside the offset guard's bound) and nodes crash and restart from their
store's bytes; between them the background duties run (anti-entropy rounds opened by the
leader, hint delivery) and the membership changes (n4 added, then one node drained out)
through the real leader.

Invariant (checked after a heal and hint delivery, and at the end): for every key, an r=all
read returns the last acknowledged write (a delete: not found), unless an in-doubt write of
that key (refused as unavailable: maybe applied) happened since the key was last known exactly;
then it returns one of the values written since (or the one known before).

Time: on a healthy network the fake clock does not move between operations, so writes in the
same millisecond through skewed nodes are ordered by the forward-only rule alone (the
coordinator reaches every replica and stamps above what they hold). While a fault is active
(from a drop, delay, partition, crash or restart until the next heal) the clock steps ``FAULT_GAP``
before each write: a coordinator cut off from the replica holding the newest version cannot
learn it, and the two sides' writes are then ordered by their timestamps, which is the
product's rule for writes it cannot see (last writer wins) and holds only for writes further
apart than the clocks' disagreement (a partitioned w=one or hinted write in the same
millisecond as an unseen one may lose to it: Hypothesis found that case when the clock
stood still)."""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule

from kvraft.errors import Conflict, NotFound, Unavailable
from kvraft.model import LEVELS
from tests.harness.inproc import PEER_TIMEOUT, InProcCluster, http_of, raft_of

NODES = ("n1", "n2", "n3")
KEYS = ("a", "b", "c", "d")

_GONE = None  # the model's value of a deleted or never written key
SKEW_MS = 400  # clocks skew within the offset guard's bound (500 ms)
FAULT_GAP = 2.0  # seconds between writes while a fault is active: above any two HLCs' gap
DELAYS = (0.3 * PEER_TIMEOUT, 2.5 * PEER_TIMEOUT)  # a slow link: under the timeout, past it


class ClusterMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.cluster = InProcCluster(n=3, rf=2, partitions=4)
        self.known: dict[str, bytes | None] = {}  # key -> the value an r=all read must give
        # key -> the values it may give instead: the settled one, then the writes in doubt in
        # the order they were made (a later one stamped later: FAULT_GAP while faults are on)
        self.doubt: dict[str, list[bytes | None]] = {}
        self.serial = 0
        self.faulty = False  # a fault is active since the last heal
        self.joined = False  # n4 was added
        self.removed: str | None = None  # the node being drained (or drained) out

    def _fault(self) -> None:
        self.faulty = True

    def _tick(self) -> None:
        if self.faulty:
            self.cluster.clock.step(FAULT_GAP)

    def _up(self, node: str) -> bool:
        return node not in self.cluster.crashed

    def _in_doubt(self, key: str, value: bytes | None) -> None:
        self.doubt.setdefault(key, [self.known.get(key, _GONE)]).append(value)

    def _acked(self, key: str, value: bytes | None) -> None:
        self.known[key] = value
        self.doubt.pop(key, None)

    # -- client operations ---------------------------------------------------------------------

    @rule(node=st.sampled_from(NODES), key=st.sampled_from(KEYS), w=st.sampled_from(LEVELS))
    def put(self, node: str, key: str, w: str) -> None:
        if not self._up(node):
            return
        self.serial += 1
        value = f"{key}{self.serial}".encode()
        self._tick()
        try:
            self.cluster[node].put(key, value, w=w)
        except Unavailable:
            self._in_doubt(key, value)
        else:
            self._acked(key, value)

    @rule(node=st.sampled_from(NODES), key=st.sampled_from(KEYS), w=st.sampled_from(LEVELS))
    def delete(self, node: str, key: str, w: str) -> None:
        if not self._up(node):
            return
        self._tick()
        try:
            self.cluster[node].delete(key, w=w)
        except NotFound:
            pass  # the replicas it reached hold no live value: nothing written
        except Unavailable:
            self._in_doubt(key, _GONE)
        else:
            self._acked(key, _GONE)

    @rule(node=st.sampled_from(NODES), key=st.sampled_from(KEYS), r=st.sampled_from(LEVELS))
    def get(self, node: str, key: str, r: str) -> None:
        """Any read during faults may answer or be unavailable; it must not fail otherwise."""
        if not self._up(node):
            return
        try:
            self.cluster[node].get(key, r)
        except (NotFound, Unavailable):
            pass

    # -- faults --------------------------------------------------------------------------------

    @rule(src=st.sampled_from(NODES), dst=st.sampled_from(NODES), after=st.booleans())
    def drop(self, src: str, dst: str, after: bool) -> None:
        if src != dst:
            self._fault()
            self.cluster.network.drop(src, dst, after=after)

    @rule(
        src=st.sampled_from(NODES),
        dst=st.sampled_from(NODES),
        seconds=st.sampled_from(DELAYS),
        delivered=st.booleans(),
    )
    def delay(self, src: str, dst: str, seconds: float, delivered: bool) -> None:
        """Every message from ``src`` to ``dst`` is slow (the fake clock steps by the delay,
        or by the peer timeout and the caller times out: maybe applied)."""
        if src != dst:
            self._fault()
            self.cluster.network.delay(seconds, src, dst, delivered=delivered)

    @rule(alone=st.sampled_from(NODES))
    def partition(self, alone: str) -> None:
        self._fault()
        self.cluster.network.partition({alone}, set(NODES) - {alone})

    @rule(node=st.sampled_from(NODES), offset_ms=st.integers(-SKEW_MS, SKEW_MS))
    def skew(self, node: str, offset_ms: int) -> None:
        self.cluster.skew(node, offset_ms)

    @rule(seconds=st.floats(0.0, 0.05))
    def step_clock(self, seconds: float) -> None:
        self.cluster.clock.step(seconds)

    @precondition(lambda self: len(self.cluster.crashed) < 2)
    @rule(node=st.sampled_from(NODES))
    def crash(self, node: str) -> None:
        self._fault()
        self.cluster.crash(node)

    @rule(node=st.sampled_from(NODES))
    def restart(self, node: str) -> None:
        self._fault()  # its hints are still undelivered
        self.cluster.restart(node)

    # -- background duties and membership -------------------------------------------------------

    @rule()
    def sync_round(self) -> None:
        """One anti-entropy round as the duties run it (the leader may move partitions too),
        whatever faults are active."""
        self.cluster.sync_round()

    @rule()
    def deliver_hints(self) -> None:
        self.cluster.deliver_hints()

    @precondition(lambda self: not self.joined)
    @rule()
    def add_member(self) -> None:
        """n4 joins through the leader (``Leader.add_member``) and registers; later rounds
        move partitions to it. No fault rule targets it, but a partition cuts it off too."""
        c = self.cluster
        c.add_node("n4")
        c.nodes["n1"].leader.add_member("n4", http_of("n4"), raft_of("n4"))
        c.register()
        self.joined = True

    @precondition(lambda self: self.joined and self.removed is None)
    @rule(node=st.sampled_from(NODES[1:]))
    def remove_member(self, node: str) -> None:
        """A node is drained out through the leader (``Leader.remove_member``); later rounds
        move its partitions away and the leader forgets it. It stays up as a coordinator."""
        try:
            self.cluster.nodes["n1"].leader.remove_member(node)
        except Conflict:
            return
        self.removed = node

    @rule()
    def heal_and_check(self) -> None:
        self.check()

    # -- the invariant -------------------------------------------------------------------------

    def check(self) -> None:
        c = self.cluster
        c.heal()
        c.deliver_hints()
        self.faulty = False
        for i, key in enumerate(sorted(set(self.known) | set(self.doubt))):
            try:
                got: bytes | None = c[NODES[i % len(NODES)]].get(key, "all").value
            except NotFound:
                got = _GONE
            if key in self.doubt:
                possible = self.doubt[key]
                assert got in possible, (key, got, possible)
                # read at r=all after the heal: what came before it cannot come back; a write
                # in doubt made after it may still surface later ("may or may not be visible")
                rest = possible[possible.index(got) :]
                if len(rest) == 1:
                    self._acked(key, got)
                else:
                    self.known[key], self.doubt[key] = got, rest
            else:
                assert got == self.known[key], (key, got, self.known[key])

    def teardown(self) -> None:
        try:
            self.check()
        finally:
            self.cluster.close()


ClusterMachine.TestCase.settings = settings(
    max_examples=200,  # in process: 8x the HTTP model's 25 examples, with twice its steps
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_cluster_machine = ClusterMachine.TestCase
