"""Stabilization: every record ends on exactly its replica set.

``Stabilizer`` is the node's one entry point to the parts that get it there,
which share the store, one id sequence and the strays under way:

- ``handoff``: pushing records to other nodes under flow control, and merging
  what they push;
- ``strays``: copies this node no longer owns, dropped once every owner has
  them;
- ``walks``: the passes over the store (the search for strays, tombstone
  collection, rebuilding digests), a few segments per tick;
- ``anti_entropy``: digest comparisons with one peer at a time, and the
  exchange of what differs.

Ranges a node gains in a ring change are pulled by it (``streaming``); what is
left here is what a node must push.
"""

from __future__ import annotations

from zkv.core.anti_entropy import AntiEntropy
from zkv.core.digests import DigestedStore
from zkv.core.handoff import BATCH_BYTES, HandoffQueue, IdSequence, merge_handoff
from zkv.core.messages import Handoff, HandoffAck, SyncDigest, SyncKeys, SyncPull
from zkv.core.outbox import Outbox
from zkv.core.ring import Ring
from zkv.core.strays import Strays
from zkv.core.walks import StoreWalks, StrayWalk, TombstoneWalk

__all__ = ["BATCH_BYTES", "FENCED_MAX", "Stabilizer"]

FENCED_MAX = 10_000  # fenced keys remembered for repair; more wait for a later round


class Stabilizer:
    """Hand-off, strays, store walks and anti-entropy of one node; see the module doc."""

    def __init__(self, node_id: str, store: DigestedStore, batch_size: int,
                 batch_base: int, wall_offset: float = 0.0) -> None:
        self.node_id = node_id
        self.store = store
        ids = IdSequence(batch_base)
        self.handoff = HandoffQueue(batch_size, ids)
        self.strays = Strays()
        self.walks = StoreWalks(store)
        self.anti_entropy = AntiEntropy(node_id, store, self.handoff, ids, wall_offset)
        # Keys whose newer records a promise refused, with when that was first seen:
        # the node settles each by a Paxos round once the promise is surely stale.
        self.fenced: dict[bytes, float] = {}

    @property
    def moved(self) -> int:
        """Records pushed to other nodes (for metrics and tests)."""
        return self.handoff.moved

    @property
    def sync_queue(self) -> list[tuple[str, SyncKeys]]:
        """Anti-entropy listings waiting for ``answer_sync_keys``."""
        return self.anti_entropy.sync_queue

    # ----------------------------------------------------------------- ring changes

    def on_ring_change(self, old: Ring, new: Ring, now: float) -> None:
        """A settled ring changed (the data moved already: ``streaming``): copies this
        node no longer owns are strays now, and digests follow the new segments."""
        self.walks.cancel(StrayWalk)
        self.strays.reset()
        self.prepare(new, now)

    def prepare(self, ring: Ring, now: float) -> None:
        """Start building ``ring``'s digests now, so anti-entropy finds them ready."""
        self.anti_entropy.prepare(ring, now)

    def has_work(self) -> bool:
        return self.walks.has_work()

    def work(self, now: float, out: Outbox) -> None:
        """Read up to about ``walks.WALK_BUDGET`` records for the walks under way."""
        self.walks.work(now, out)

    def collect_strays(self, ring: Ring) -> None:
        """Hand each copy this node does not own to its owners, to drop it on their
        acks. Only segments this node does not replicate can hold such copies."""
        if not self.strays.possible or self.strays.copies or StrayWalk in self.walks:
            return
        foreign = [s for s in range(ring.segments) if self.node_id not in ring.segment_replicas(s)]
        if not foreign:
            self.strays.possible = False
            return
        self.walks.start(StrayWalk(ring, foreign, self.strays, self.handoff))

    def collect_tombstones(self, ring: Ring, older_than_ms: int) -> None:
        """Forget deletes older than the grace period; every replica has had time to
        learn them."""
        if TombstoneWalk not in self.walks:
            self.walks.start(TombstoneWalk(ring, list(range(ring.segments)), self.store,
                                           older_than_ms))

    # ----------------------------------------------------------------- hand-off

    def on_handoff(self, sender: str, msg: Handoff, ring: Ring, now: float,
                   out: Outbox) -> None:
        merged = merge_handoff(self.node_id, self.store, sender, msg, ring, out)
        for key in merged.fenced:
            self.note_fenced(key, now)
        if merged.foreign:
            self.strays.possible = True

    def note_fenced(self, key: bytes, now: float) -> None:
        """Remember a key whose newer record a promise refused (see ``replica.merge``)."""
        if len(self.fenced) < FENCED_MAX:
            self.fenced.setdefault(key, now)

    def on_handoff_ack(self, sender: str, msg: HandoffAck, now: float, out: Outbox) -> None:
        batch = self.handoff.acknowledged(sender, msg, now, out)
        if batch is None or not batch.strays:
            return
        dropped = self.strays.acknowledged(sender, batch.records, self.store)
        if dropped:
            out.event("strays_dropped", keys=dropped, acked_by=sender)

    def resend(self, now: float, retry_interval: float, ring: Ring, out: Outbox) -> None:
        if self.handoff.resend(now, retry_interval, ring, out):
            self.strays.reset()  # a batch's target left: its strays need other owners

    def next_resend(self, retry_interval: float) -> float | None:
        return self.handoff.next_resend(retry_interval)

    # ----------------------------------------------------------------- anti-entropy

    def start_round(self, ring: Ring, alive: set[str], now: float, out: Outbox,
                    peer: str | None = None) -> bool:
        """See ``AntiEntropy.start_round``."""
        return self.anti_entropy.start_round(ring, alive, now, out, peer)

    def on_sync_digest(self, sender: str, msg: SyncDigest, ring: Ring, now: float,
                       out: Outbox) -> None:
        self.anti_entropy.on_sync_digest(sender, msg, ring, now, out)

    def on_sync_keys(self, sender: str, msg: SyncKeys) -> None:
        self.anti_entropy.on_sync_keys(sender, msg)

    def answer_sync_keys(self, ring: Ring, now: float, out: Outbox) -> None:
        self.anti_entropy.answer_sync_keys(ring, now, out)

    def on_sync_pull(self, sender: str, msg: SyncPull, now: float, out: Outbox) -> None:
        self.anti_entropy.on_sync_pull(sender, msg, now, out)
