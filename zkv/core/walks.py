"""Walks: passes over the whole store, a few segments per tick.

Walking a million records at once would stop the node for many seconds: no
heartbeats, so its peers would think it dead, and it them. So every pass reads
about ``WALK_BUDGET`` records per tick (``StoreWalks.work``) and then returns.
There are three kinds, at most one of each under way, the oldest first:

- ``StrayWalk``: the search for copies this node does not own (``strays``);
- ``TombstoneWalk``: forgetting deletes older than the grace period;
- rebuilding the segment digests for a new ring (``digests``), when no other
  walk is under way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from zkv.core.digests import DigestedStore
from zkv.core.handoff import HandoffQueue, Records
from zkv.core.outbox import Outbox
from zkv.core.ring import Ring
from zkv.core.strays import Strays

WALK_BUDGET = 4096  # records a walk reads per tick


@dataclass(slots=True)
class Walk:
    """A pass over some of ``ring``'s segments; ``segments`` are those still to read."""

    ring: Ring
    segments: list[int]

    def visit(self, seg: int, records: Records) -> None:
        """Look at one segment's records."""
        raise NotImplementedError

    def finish(self, now: float, out: Outbox) -> None:
        """Act on what the whole pass found."""
        raise NotImplementedError


@dataclass(slots=True)
class StrayWalk(Walk):
    """Finds the copies in segments this node does not replicate, then hands each to
    its owners (to be dropped on their acknowledgements)."""

    strays: Strays
    handoff: HandoffQueue
    found: dict[str, Records] = field(default_factory=dict)

    def visit(self, seg: int, records: Records) -> None:
        owners = self.ring.segment_replicas(seg)
        for key, record in records:
            self.strays.found(key, record, owners)
            for owner in owners:
                self.found.setdefault(owner, []).append((key, record))

    def finish(self, now: float, out: Outbox) -> None:
        if not self.strays.copies:
            self.strays.possible = False
            return
        for target, records in self.found.items():
            self.handoff.push(target, records, now, out, strays=True)
        out.event("strays_handoff", keys=len(self.strays.copies))


@dataclass(slots=True)
class TombstoneWalk(Walk):
    """Forgets deletes older than ``older_than_ms``: every replica has had time to
    learn them."""

    store: DigestedStore
    older_than_ms: int
    count: int = 0

    def visit(self, seg: int, records: Records) -> None:
        old = [key for key, r in records
               if r.tombstone and r.version.wall_ms < self.older_than_ms]
        for key in old:
            self.store.remove(key)
        self.count += len(old)

    def finish(self, now: float, out: Outbox) -> None:
        if self.count:
            out.event("tombstones_collected", keys=self.count)


class StoreWalks:
    """The walks under way (at most one of each kind), read within a budget per tick."""

    def __init__(self, store: DigestedStore) -> None:
        self.store = store
        self._under_way: dict[type[Walk], Walk] = {}  # oldest first

    def __contains__(self, kind: type[Walk]) -> bool:
        return kind in self._under_way

    def start(self, walk: Walk) -> None:
        assert type(walk) not in self._under_way, f"a {type(walk).__name__} is under way"
        self._under_way[type(walk)] = walk

    def cancel(self, kind: type[Walk]) -> None:
        self._under_way.pop(kind, None)

    def has_work(self) -> bool:
        return bool(self._under_way) or self.store.rebuilding

    def work(self, now: float, out: Outbox) -> None:
        """Read up to about WALK_BUDGET records for the walks under way (then for the
        digest rebuild), then return."""
        read = 0
        while read < WALK_BUDGET:
            walk = next(iter(self._under_way.values()), None)
            if walk is None:
                rebuilt = self.store.rebuild_step()
                if rebuilt is None:
                    return
                read += rebuilt + 1
                continue
            if not walk.segments:
                del self._under_way[type(walk)]
                walk.finish(now, out)
                continue
            seg = walk.segments.pop()
            records = list(self.store.segment_items(walk.ring, {seg}))
            read += len(records) + 1
            walk.visit(seg, records)
