"""Hand-off: records pushed to the nodes that should hold them, under flow control.

A node keeps at most ``WINDOW`` unacknowledged batches per peer and queues the
rest, so a big push is a steady stream, not a burst that overflows the sockets
and comes back as a storm of resends. A batch unacknowledged for a while is sent
again, less and less often (``backoff``). A batch is one frame: at most
``batch_size`` records and about ``BATCH_BYTES``.

Strays (``strays``) and anti-entropy differences (``anti_entropy``) both leave
this way; ranges a node gains in a ring change are pulled instead (``streaming``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

from zkv.core.backoff import backoff
from zkv.core.digests import DigestedStore
from zkv.core.messages import Handoff, HandoffAck
from zkv.core.outbox import Outbox
from zkv.core.replica import Merge, merge
from zkv.core.ring import Ring
from zkv.model.record import Record

BATCH_BYTES = 4 * 1024 * 1024
WINDOW = 4  # unacknowledged hand-off batches per peer

Records = list[tuple[bytes, Record]]


@dataclass(slots=True)
class IdSequence:
    """Ids of hand-off batches and anti-entropy rounds, counted up from a node's own
    base (``op_base``), so that an acknowledgement never matches another node's batch."""

    last: int

    def take(self) -> int:
        self.last += 1
        return self.last


@dataclass(slots=True)
class Batch:
    """A batch sent to ``target`` and not yet acknowledged."""

    target: str
    records: Records
    sent_at: float
    strays: bool = False  # drop our copies once every owner has them
    resends: int = 0


class HandoffQueue:
    """The batches this node sends, per target: at most WINDOW in flight, the rest queued."""

    def __init__(self, batch_size: int, ids: IdSequence) -> None:
        self.batch_size = batch_size
        self.ids = ids
        self.batches: dict[int, Batch] = {}  # sent, not yet acknowledged
        self.queued: dict[str, deque[tuple[Records, bool]]] = {}
        self.moved = 0  # records pushed to other nodes (for metrics and tests)

    def push(self, target: str, records: Records, now: float, out: Outbox,
             strays: bool) -> None:
        """Queue ``records`` for ``target`` and send what the window allows. ``strays``:
        our copies are dropped once every owner acknowledged them (``Strays``)."""
        queue = self.queued.setdefault(target, deque())
        for chunk in self._chunks(records):
            queue.append((chunk, strays))
        self._fill(target, now, out)

    def acknowledged(self, sender: str, msg: HandoffAck, now: float,
                     out: Outbox) -> Batch | None:
        """The batch ``sender`` acknowledged (its window moves on), or None for an ack of
        no batch of ours to it (a duplicate, or a forged one)."""
        batch = self.batches.get(msg.batch_id)
        if batch is None or batch.target != sender:
            return None
        del self.batches[msg.batch_id]
        self._fill(sender, now, out)
        return batch

    def resend(self, now: float, retry_interval: float, ring: Ring, out: Outbox) -> bool:
        """Send again the batches whose time has come; forget those for nodes that left
        the ring. True if an unacknowledged batch was forgotten so (the strays in it
        may still lack an owner's copy)."""
        forgot = False
        for target in [t for t in self.queued if t not in ring.nodes]:
            del self.queued[target]  # the target left the ring; a later change re-plans
        for batch_id, batch in list(self.batches.items()):
            if batch.target not in ring.nodes:
                del self.batches[batch_id]
                forgot = True
            elif now >= batch.sent_at + backoff(retry_interval, batch.resends):
                batch.sent_at = now
                batch.resends += 1
                out.send(batch.target, Handoff(batch_id, batch.records))
        return forgot

    def next_resend(self, retry_interval: float) -> float | None:
        """When the next resend falls due; None with nothing in flight."""
        if not self.batches:
            return None
        return min(b.sent_at + backoff(retry_interval, b.resends)
                   for b in self.batches.values())

    def _fill(self, target: str, now: float, out: Outbox) -> None:
        """Send queued batches to ``target`` while fewer than WINDOW await an ack."""
        queue = self.queued.get(target)
        if not queue:
            return
        in_flight = sum(1 for b in self.batches.values() if b.target == target)
        while queue and in_flight < WINDOW:
            chunk, strays = queue.popleft()
            batch_id = self.ids.take()
            self.batches[batch_id] = Batch(target, chunk, now, strays)
            out.send(target, Handoff(batch_id, chunk))
            self.moved += len(chunk)
            in_flight += 1
        assert in_flight <= WINDOW
        if not queue:
            del self.queued[target]

    def _chunks(self, records: Records) -> Iterator[Records]:
        """Batches of at most ``batch_size`` records and about BATCH_BYTES (one frame each)."""
        chunk: Records = []
        size = 0
        for key, record in records:
            weight = len(key) + len(record.value) + 32
            if chunk and (len(chunk) >= self.batch_size or size + weight > BATCH_BYTES):
                yield chunk
                chunk, size = [], 0
            chunk.append((key, record))
            size += weight
        if chunk:
            yield chunk


@dataclass(frozen=True, slots=True)
class Merged:
    """What a received hand-off batch did to the store."""

    changed: int  # records stored
    fenced: list[bytes]  # keys whose newer record a promise refused
    foreign: bool  # a stored key this node does not own (a stray to pass on)


def merge_handoff(node_id: str, store: DigestedStore, sender: str, msg: Handoff, ring: Ring,
                  out: Outbox) -> Merged:
    """Merge a batch a peer handed over and acknowledge it; what the caller must follow
    up (fenced keys to settle, strays to pass on) is in the answer."""
    changed = 0
    fenced: list[bytes] = []
    foreign = False
    for key, record in msg.records:
        result = merge(store, key, record)
        if result is Merge.FENCED:
            fenced.append(key)
        elif result is Merge.STORED:
            changed += 1
            if node_id not in ring.locate(key):
                # A sender with another view of the ring handed us a key we do
                # not own: pass it on to its owners later.
                foreign = True
    out.event("handoff_merged", sender=sender, records=len(msg.records), changed=changed)
    out.send(sender, HandoffAck(msg.batch_id))
    return Merged(changed, fenced, foreign)
