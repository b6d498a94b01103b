"""Pure routing decisions of the partition-aware client: which nodes to send a key request to,
and whether an answer says the client's partition map is stale.

A :class:`RouteMap` is what the client knows of the cluster, parsed from ``GET /cluster``
(:func:`parse_cluster`). :func:`candidates` orders the nodes a get, put or delete of a key goes
to; :func:`miss` reads an answer and says why the map should be fetched again (or None). The
key's partition comes from :func:`kvraft.core.placement.partition_of`, the function the nodes
use, so client and nodes agree on it by construction.

No IO, no clock, no randomness, no environment: the client (kvraft.client.router) does the
requests and keeps the state, and passes what these functions need. A wrong or old map never
makes an answer wrong: every node serves every key (it coordinates or reads through the
replicas itself), so routing only decides how many hops a request costs.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..core.placement import partition_of

ROUTING_MODES = ("replica", "any")
NODE_HEADER = "X-Kvraft-Node"  # the id of the node that served the request
VIA_HEADER = "X-Kvraft-Via"  # the id of the node that forwarded it (the partition leader)
EPOCH_HEADER = "X-Kvraft-Map-Epoch"  # the map epoch the node serves by, if it says


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """One member as the answering node saw it: where to reach it and whether it may serve.
    ``clock_ok`` is False when its clock is out of bounds (it refuses to coordinate writes)."""

    id: str
    url: str
    alive: bool = True
    serving: bool = True
    clock_ok: bool = True


@dataclass(frozen=True, slots=True)
class RouteMap:
    """The partition map and the members, as one immutable value (swapped whole, never changed).

    ``partitions[p]`` are the replica ids of partition ``p``; ``filling[p]`` the replicas of
    ``p`` still being filled (they take writes, not reads); ``epoch`` is the cluster's
    ``partition_epoch`` (it changes on every move of a replica)."""

    epoch: int
    partitions: tuple[tuple[str, ...], ...]
    nodes: Mapping[str, NodeInfo]
    leader: str | None = None
    filling: Mapping[int, frozenset[str]] = field(default_factory=dict)

    def replicas(self, key: str) -> tuple[str, ...]:
        """The replica ids of ``key``'s partition (empty when the map has no partitions)."""
        if not self.partitions:
            return ()
        return self.partitions[partition_of(key, len(self.partitions))]

    @property
    def settled(self) -> bool:
        """Every member alive, serving and within clock bounds, and no replica being filled:
        a map that is not settled is likely to change soon."""
        healthy = all(n.alive and n.serving and n.clock_ok for n in self.nodes.values())
        return healthy and not any(self.filling.values())


def parse_cluster(view: Any, base_url: str, known: Mapping[str, str] | None = None) -> RouteMap:
    """The :class:`RouteMap` of a ``GET /cluster`` answer; ValueError when it is not one.

    ``base_url`` is the URL the answer came from: its scheme is used for every member, and the
    answering node (``view["node"]``) is reached at that URL. ``known`` maps node ids to URLs
    the client has reached them at (its own node list): those win over the address a node
    advertises to its peers, which a client outside the cluster's network may not reach."""
    if not isinstance(view, dict):
        raise ValueError("a cluster view is a JSON object")
    raw_parts = view.get("partitions")
    raw_nodes = view.get("nodes")
    if not isinstance(raw_parts, dict) or not isinstance(raw_nodes, list):
        raise ValueError("a cluster view has 'partitions' (object) and 'nodes' (list)")
    try:
        count = len(raw_parts)
        partitions = tuple(tuple(str(r) for r in raw_parts[str(p)]) for p in range(count))
    except (KeyError, TypeError) as exc:
        raise ValueError(f"partitions are not numbered 0..{len(raw_parts) - 1}") from exc
    scheme = base_url.split("://", 1)[0] if "://" in base_url else "http"
    urls = dict(known or {})
    answering = view.get("node")
    if isinstance(answering, str) and answering:
        urls[answering] = base_url
    off = set(_dict(view.get("clock")).get("out_of_bounds") or ())
    nodes: dict[str, NodeInfo] = {}
    for n in raw_nodes:
        if not isinstance(n, dict) or not isinstance(n.get("id"), str):
            raise ValueError("every node of a cluster view has a string 'id'")
        node_id = n["id"]
        if n.get("member") is False:
            continue  # not (or no longer) in the Raft configuration
        url = urls.get(node_id)
        if url is None:
            address = n.get("http")
            if not isinstance(address, str) or not address:
                continue  # unreachable for us: never a routing target
            url = f"{scheme}://{address}"
        nodes[node_id] = NodeInfo(
            node_id,
            url,
            alive=n.get("alive") is not False,
            serving=n.get("serving") is not False,
            clock_ok=node_id not in off,
        )
    filling = {
        int(p): frozenset(str(r) for r in reps)
        for p, reps in _dict(view.get("filling")).items()
        if isinstance(reps, list)
    }
    epoch = view.get("partition_epoch")
    leader = view.get("leader")
    return RouteMap(
        epoch=epoch if isinstance(epoch, int) else -1,
        partitions=partitions,
        nodes=nodes,
        leader=leader if isinstance(leader, str) else None,
        filling=filling,
    )


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def candidates(
    rmap: RouteMap, key: str, write: bool, down: Collection[str] = (), turn: int = 0
) -> list[str]:
    """The node ids a request for ``key`` should try first, best first (may be empty: then the
    client sends it the old way, to any node).

    Only replicas of the key that the map shows alive, and not in ``down`` (nodes the client
    failed to reach lately). A read skips replicas still being filled; a write skips replicas
    whose clock is out of bounds (they refuse to coordinate). The partition leader comes after
    the other replicas: it balances the data requests it receives over all nodes (one more hop,
    maybe to a non-replica), so it is only worth trying when no other replica is left. Replicas
    the map shows not serving (not ready at their last ping) come last of all. ``turn`` rotates
    the order among equally good replicas (round-robin: the caller passes a counter)."""
    replicas = rmap.replicas(key)
    if not replicas:
        return []
    part = partition_of(key, len(rmap.partitions))
    filling = rmap.filling.get(part, frozenset())
    usable = []
    for r in replicas:
        info = rmap.nodes.get(r)
        if info is None or not info.alive or r in down:
            continue
        if write and not info.clock_ok:
            continue
        if not write and r in filling:
            continue
        usable.append(r)
    plain = [r for r in usable if r != rmap.leader and rmap.nodes[r].serving]
    if plain:
        k = turn % len(plain)
        plain = plain[k:] + plain[:k]
    leader = [r for r in usable if r == rmap.leader and rmap.nodes[r].serving]
    return plain + leader + [r for r in usable if not rmap.nodes[r].serving]


def miss(
    rmap: RouteMap,
    key: str,
    target: str,
    headers: Mapping[str, str],
    replicas: Collection[str] | None = None,
) -> str | None:
    """Why an answer to a request sent to node ``target`` for ``key`` shows the map is stale
    (``"<kind>: <detail>"``, kind one of forwarded, moved, replicas, epoch), or None.

    ``headers`` are the answer's (case-insensitive mapping); ``replicas`` the replica ids a
    write's answer lists. Stale when: the answer was forwarded (``X-Kvraft-Via``) by a node the
    map does not show as the leader (but for ``target`` sending a hot key's PUT on to another
    of the key's replicas, its owner: kvraft/hotkeys.py), or was served by another node than
    ``target``; a write's replicas differ from the map's; the answer carries a newer map epoch
    (``X-Kvraft-Map-Epoch``, if the server sends it)."""
    via = headers.get(VIA_HEADER)
    served = headers.get(NODE_HEADER)
    # a replica that sent a hot key's PUT on to the key's owner, another replica (not stale)
    owner_forward = via == target and served in rmap.replicas(key)
    if via and via != rmap.leader and not owner_forward:
        return f"forwarded: by {via}, which the map does not show as the leader"
    if served and not via and served != target:
        return f"moved: sent to {target}, served by {served}"
    if replicas is not None and set(replicas) != set(rmap.replicas(key)):
        return (
            f"replicas: the key's are {sorted(replicas)}, the map says {sorted(rmap.replicas(key))}"
        )
    epoch = headers.get(EPOCH_HEADER)
    if epoch is not None and epoch.strip().isdigit() and int(epoch) > rmap.epoch:
        return f"epoch: {epoch} is newer than the client's {rmap.epoch}"
    return None


def routing_mode(value: str | None, default: str = "replica") -> str:
    """``KVRAFT_CLIENT_ROUTING`` (or a flag) -> ``replica`` or ``any``; ValueError otherwise.
    Empty or None gives ``default``."""
    text = (value or "").strip().lower()
    if not text:
        return default
    if text not in ROUTING_MODES:
        raise ValueError(f"client routing must be one of {', '.join(ROUTING_MODES)}, got {value!r}")
    return text
