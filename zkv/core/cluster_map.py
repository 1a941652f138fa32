"""The cluster map: which nodes hold data, as one value ordered by epochs.

Gossip says who is alive; the map says who is in the ring. Every change makes
epoch n+1, decided by a majority of epoch n's voters (``map_register``), so two
sides of a partition can never both change it, and a replica refuses requests
built on an older epoch than the newest it has seen (``Node``).

A change moves data in two epochs (Cassandra's multi-step operations, with the
"move reads" and "finish" steps folded into one):

- **transition** (``target`` set): every phase of every operation needs a
  quorum of the key's replicas in the ring *and* in the target (joint quorums),
  and the nodes that gain a range stream it from a read quorum of its ring
  replicas (``streaming``), which fence the older epoch first;
- **settled**: once every gainer has reported its ranges streamed, the next
  epoch makes the target the ring.

Why two steps suffice where the design sketches three: during the transition
reads already include a quorum of the new replicas, so an operation still at the
transition epoch after the target became the ring intersects every operation of
the new epoch; and no operation of the epoch before the transition can complete
then, because a quorum of each old replica set fenced that epoch before
streaming read from it. A transition may be amended (another join, a gainer
that died) by a later epoch; streaming then starts over from the ring, which
every transition epoch kept writing to.

A member is known by id and *instance* (a number drawn when its data directory
was created), so a node restarted with an empty directory under an old id is a
new member, never a replica that silently lost its data.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property

from zkv.core.quorum import needed
from zkv.core.ring import Ring
from zkv.model.tokens import TOKEN_SPACE

LEFT_KEPT = 64  # decommissioned members a map remembers


@dataclass(frozen=True, slots=True)
class MapMember:
    node_id: str
    address: str
    instance: int


@dataclass(frozen=True)
class ClusterMap:
    epoch: int
    members: tuple[MapMember, ...]  # everyone in ring or target, sorted by id
    ring: frozenset[str]
    target: frozenset[str] | None = None
    gone: frozenset[str] = frozenset()  # ring members removed as dead: not stream sources
    replicas: int = 3
    vnodes: int = 64
    # Members that were decommissioned (id, instance), the latest LEFT_KEPT: such a
    # node ends when it learns it, where a node removed as dead may join again.
    left: tuple[tuple[str, int], ...] = ()

    # ----------------------------------------------------------------- construction

    @classmethod
    def founding(cls, member: MapMember, replicas: int, vnodes: int) -> ClusterMap:
        return cls(1, (member,), frozenset([member.node_id]), None, frozenset(), replicas,
                   vnodes)

    def _next(self, members: dict[str, MapMember], target: frozenset[str] | None,
              gone: frozenset[str], ring: frozenset[str] | None = None,
              left: tuple[tuple[str, int], ...] | None = None) -> ClusterMap:
        ring = self.ring if ring is None else ring
        keep = ring | (target or frozenset())
        return ClusterMap(self.epoch + 1,
                          tuple(sorted((m for i, m in members.items() if i in keep),
                                       key=lambda m: m.node_id)),
                          ring, target, gone & ring, self.replicas, self.vnodes,
                          self.left if left is None else left[-LEFT_KEPT:])

    def with_joins(self, joiners: list[MapMember]) -> ClusterMap:
        """Start (or amend) a transition that adds ``joiners``."""
        members = {m.node_id: m for m in self.members}
        members.update({m.node_id: m for m in joiners})
        target = self.destination | {m.node_id for m in joiners}
        return self._next(members, target, self.gone)

    def with_removal(self, node_ids: Iterable[str], dead: bool) -> ClusterMap:
        """Start (or amend) a transition without ``node_ids``: a decommission
        (``dead`` False: their data is streamed away from them) or a removal of
        dead nodes (not asked for data). A joiner outside the ring just goes."""
        members = {m.node_id: m for m in self.members}
        ids = frozenset(node_ids)
        gone = self.gone | ids if dead else self.gone
        return self._next(members, self.destination - ids, gone)

    def settled(self) -> ClusterMap:
        """The transition's end: the target becomes the ring."""
        assert self.target is not None
        members = {m.node_id: m for m in self.members}
        leaving = sorted(self.ring - self.target - self.gone)
        left = self.left + tuple((i, members[i].instance) for i in leaving)
        return self._next(members, None, frozenset(), ring=self.target, left=left)

    # ----------------------------------------------------------------- views

    @property
    def destination(self) -> frozenset[str]:
        """The ring this map is heading to: the target, or the ring when settled."""
        return self.target if self.target is not None else self.ring

    @property
    def voters(self) -> frozenset[str]:
        """Who decides the next epoch: the ring (the target's newcomers hold no votes)."""
        return self.ring

    def majority(self) -> int:
        return len(self.voters) // 2 + 1

    def member(self, node_id: str) -> MapMember | None:
        return self._by_id.get(node_id)

    def address(self, node_id: str) -> str | None:
        m = self._by_id.get(node_id)
        return m.address if m else None

    def decommissioned(self, node_id: str, instance: int) -> bool:
        return (node_id, instance) in self.left

    def holds(self, node_id: str, instance: int) -> bool:
        m = self._by_id.get(node_id)
        return m is not None and m.instance == instance

    @cached_property
    def _by_id(self) -> dict[str, MapMember]:
        return {m.node_id: m for m in self.members}

    @cached_property
    def rings(self) -> tuple[Ring, Ring | None]:
        new = Ring(self.target, self.replicas, self.vnodes) if self.target is not None else None
        return Ring(self.ring, self.replicas, self.vnodes), new

    def replica_sets(self, key: bytes | str) -> list[tuple[str, ...]]:
        """The key's replica sets: the ring's, and the target's during a transition."""
        old, new = self.rings
        if new is None:
            return [old.locate(key)]
        a, b = old.locate(key), new.locate(key)
        return [a] if a == b else [a, b]

    def gained_ranges(self, node_id: str) -> list[tuple[int, int, tuple[str, ...]]]:
        """Token ranges (first, last, both included) that ``node_id`` replicates in
        the target but not in the ring, each with its ring replicas (the sources)."""
        old, new = self.rings
        if new is None or node_id not in new.nodes:
            return []
        bounds = sorted(set(old._tokens) | set(new._tokens))
        found: list[tuple[int, int, tuple[str, ...]]] = []
        for i, last in enumerate(bounds):
            if node_id not in new.segment_replicas(new.segment_at(last)):
                continue
            sources = old.segment_replicas(old.segment_at(last))
            if node_id in sources:
                continue
            if i > 0:
                pieces = [(bounds[i - 1] + 1, last)]
            else:  # the wrap: after the highest bound, then up to the lowest
                pieces = [(0, last)]
                if bounds[-1] < TOKEN_SPACE - 1:
                    pieces.append((bounds[-1] + 1, TOKEN_SPACE - 1))
            for first, end in pieces:
                if found and found[-1][2] == sources and found[-1][1] + 1 == first:
                    found[-1] = (found[-1][0], end, sources)  # adjacent, same sources
                else:
                    found.append((first, end, sources))
        return found

    @cached_property
    def gainers(self) -> frozenset[str]:
        """Target members that must stream before the transition may settle."""
        if self.target is None:
            return frozenset()
        return frozenset(n for n in self.target if self.gained_ranges(n))

    def sources_needed(self, sources: tuple[str, ...]) -> tuple[list[str], int]:
        """Who a gainer streams a range from, and how many must finish: a read
        quorum of the ring replicas, or every survivor when dead nodes took the
        quorum with them (the degraded case)."""
        live = [n for n in sources if n not in self.gone]
        return live, min(needed("quorum", len(sources)), len(live))

    def follows(self, prev: ClusterMap) -> str:
        """'' if this map can be the one decided right after ``prev``, else why not.

        A change either starts or amends a transition (the ring stays) or settles
        one (the target becomes the ring); a member keeps its instance from one
        epoch to the next. Maps several epochs ahead cannot be checked this way."""
        if self.epoch != prev.epoch + 1:
            return ""
        if (self.replicas, self.vnodes) != (prev.replicas, prev.vnodes):
            return "replicas or vnodes differ"
        starts = self.ring == prev.ring and self.target is not None
        settles = prev.target is not None and self.ring == prev.target and self.target is None
        if not (starts or settles):
            return "neither starts, amends nor settles a transition of the previous map"
        for m in self.members:
            before = prev.member(m.node_id)
            if before is not None and before.instance != m.instance:
                return f"member {m.node_id} changed instance without leaving"
        return ""

    # ----------------------------------------------------------------- wire

    def encode(self) -> list:
        return [self.epoch, [[m.node_id, m.address, m.instance] for m in self.members],
                sorted(self.ring), None if self.target is None else sorted(self.target),
                sorted(self.gone), self.replicas, self.vnodes, [list(x) for x in self.left]]

    @classmethod
    def decode(cls, v: object) -> ClusterMap:
        """Rebuild from ``encode()``; ValueError names what is malformed or inconsistent."""
        if not isinstance(v, list) or len(v) != 8:
            raise ValueError("cluster map must be a list of 8 fields")
        epoch, members, ring, target, gone, replicas, vnodes, left = v
        if type(epoch) is not int or epoch < 1:
            raise ValueError("cluster map epoch must be a positive int")
        if not isinstance(members, list) or not members:
            raise ValueError("cluster map members must be a non-empty list")
        parsed: list[MapMember] = []
        for m in members:
            if (not isinstance(m, list) or len(m) != 3 or type(m[0]) is not str or not m[0]
                    or type(m[1]) is not str or type(m[2]) is not int or m[2] < 0):
                raise ValueError("cluster map member must be [node_id, address, instance]")
            parsed.append(MapMember(m[0], m[1], m[2]))
        ids = [m.node_id for m in parsed]
        if len(set(ids)) != len(ids) or len({m.address for m in parsed}) != len(ids):
            raise ValueError("cluster map has a node id or address twice")

        def ids_of(x: object, name: str) -> frozenset[str]:
            if not isinstance(x, list) or any(type(i) is not str for i in x):
                raise ValueError(f"cluster map {name} must be a list of node ids")
            return frozenset(x)

        ring_ids = ids_of(ring, "ring")
        target_ids = None if target is None else ids_of(target, "target")
        gone_ids = ids_of(gone, "gone")
        if not ring_ids or ring_ids | (target_ids or frozenset()) != set(ids):
            raise ValueError("cluster map members must be exactly its ring and target")
        if not gone_ids <= ring_ids or (target_ids is not None and gone_ids & target_ids):
            raise ValueError("cluster map gone nodes must be ring members outside the target")
        if target_ids is not None and not target_ids:
            raise ValueError("cluster map target must not be empty")
        if type(replicas) is not int or type(vnodes) is not int or replicas < 1 or vnodes < 1:
            raise ValueError("cluster map replicas and vnodes must be positive ints")
        if (not isinstance(left, list) or len(left) > LEFT_KEPT
                or any(not isinstance(x, list) or len(x) != 2 or type(x[0]) is not str
                       or type(x[1]) is not int for x in left)):
            raise ValueError("cluster map left must be a list of [node_id, instance]")
        return cls(epoch, tuple(sorted(parsed, key=lambda m: m.node_id)), ring_ids, target_ids,
                   gone_ids, replicas, vnodes, tuple((x[0], x[1]) for x in left))
