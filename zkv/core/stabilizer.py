"""Stabilization and anti-entropy: every record ends on exactly its replica set.

- Ranges a node gains in a ring change are pulled by it (``streaming``); what
  is left here is what a node must push: strays and anti-entropy differences.
  A node keeps at most ``WINDOW`` unacknowledged batches per peer and queues
  the rest, so a big push is a steady stream, not a burst that overflows the
  sockets and comes back as a storm of resends.
- Every pass over the store (the search for strays, tombstone collection,
  rebuilding digests) reads a few segments per tick (``work``), so a node
  with a million keys keeps gossiping while it walks.
- A copy this node no longer owns (a stray) is pushed to all its owners and
  dropped only after every owner acknowledged it, and never during a ring
  transition (the old owners are still read).
- Anti-entropy: periodically, a node and one peer compare one digest per
  ring segment they both replicate (kept current on every write, see
  ``digests``), as of a horizon ``HORIZON_LAG`` seconds back so writes still
  on their way do not count as differences; then they exchange what differs
  (records up to the horizon), at most ``SYNC_SEGMENTS`` segments a round,
  each read as one range of the store. A node that was down, or held a
  corrupt record, catches up this way.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from zkv.core.backoff import backoff
from zkv.core.digests import DigestedStore
from zkv.core.messages import Handoff, HandoffAck, SyncDigest, SyncKeys, SyncPull
from zkv.core.outbox import Outbox
from zkv.core.replica import Merge, merge
from zkv.core.ring import Ring
from zkv.storage.record import Record

BATCH_BYTES = 4 * 1024 * 1024
WINDOW = 4  # unacknowledged hand-off batches per peer
HORIZON_LAG = 10.0  # seconds: anti-entropy compares records older than this
SYNC_SEGMENTS = 16  # differing segments listed per anti-entropy round: bounded work
WALK_BUDGET = 4096  # records a walk reads per tick
FENCED_MAX = 10_000  # fenced keys remembered for repair; more wait for a later round


@dataclass(slots=True)
class Batch:
    target: str
    records: list[tuple[bytes, Record]]
    sent_at: float
    strays: bool = False  # drop our copies once every owner has them
    resends: int = 0


@dataclass(slots=True)
class Walk:
    """A pass over the store, a few segments per tick (see ``Stabilizer.work``)."""
    kind: str  # "strays" or "tombstones"
    ring: Ring  # whose segments are read
    segments: list[int]
    older_than_ms: int = 0  # for "tombstones"
    found: dict[str, list[tuple[bytes, Record]]] = field(default_factory=dict)
    count: int = 0


@dataclass(slots=True)
class StrayCopy:
    record: Record
    waiting: set[str] = field(default_factory=set)


class Stabilizer:
    def __init__(self, node_id: str, store: DigestedStore, batch_size: int,
                 batch_base: int, wall_offset: float = 0.0) -> None:
        self.node_id = node_id
        self.wall_offset = wall_offset
        self.store = store
        self.batch_size = batch_size
        self.batches: dict[int, Batch] = {}  # sent, not yet acknowledged
        self.queued: dict[str, deque[tuple[list[tuple[bytes, Record]], bool]]] = {}
        self.strays: dict[bytes, StrayCopy] = {}
        self.strays_possible = True
        self._next = batch_base
        self._peer_cursor = 0
        self.sync_queue: list[tuple[str, SyncKeys]] = []
        self._walks: dict[str, Walk] = {}  # at most one of each kind, oldest first
        self.moved = 0  # records pushed to new owners (for metrics and tests)
        # Keys whose newer records a promise refused, with when that was first seen:
        # the node settles each by a Paxos round once the promise is surely stale.
        self.fenced: dict[bytes, float] = {}

    # ----------------------------------------------------------------- ring changes

    def on_ring_change(self, old: Ring, new: Ring, now: float) -> None:
        """A settled ring changed (the data moved already: ``streaming``): copies this
        node no longer owns are strays now, and digests follow the new segments."""
        self._walks.pop("strays", None)
        self.strays_possible = True
        self.strays.clear()
        self.prepare(new, now)

    def prepare(self, ring: Ring, now: float) -> None:
        """Start building ``ring``'s digests now, so anti-entropy finds them ready."""
        now_ms = self._wall_ms(now)
        self.store.digests(ring, set(), now_ms, now_ms)

    def has_work(self) -> bool:
        return bool(self._walks) or self.store.rebuilding

    def work(self, now: float, out: Outbox) -> None:
        """Read up to about WALK_BUDGET records for the walks under way, then return.

        Walking a million records at once would stop the node for many seconds:
        no heartbeats, so its peers would think it dead, and it them.
        """
        read = 0
        while read < WALK_BUDGET:
            walk = next(iter(self._walks.values()), None)
            if walk is None:
                rebuilt = self.store.rebuild_step()
                if rebuilt is None:
                    return
                read += rebuilt + 1
                continue
            if not walk.segments:
                del self._walks[walk.kind]
                self._finish_walk(walk, now, out)
                continue
            seg = walk.segments.pop()
            records = list(self.store.segment_items(walk.ring, {seg}))
            read += len(records) + 1
            self._walk_segment(walk, seg, records, now, out)

    def _walk_segment(self, walk: Walk, seg: int, records: list[tuple[bytes, Record]],
                      now: float, out: Outbox) -> None:
        if walk.kind == "strays":
            owners = walk.ring.segment_replicas(seg)
            for key, record in records:
                self.strays[key] = StrayCopy(record, set(owners))
                for owner in owners:
                    walk.found.setdefault(owner, []).append((key, record))
        else:  # tombstones
            old = [key for key, r in records
                   if r.tombstone and r.version.wall_ms < walk.older_than_ms]
            for key in old:
                self.store.remove(key)
            walk.count += len(old)

    def _finish_walk(self, walk: Walk, now: float, out: Outbox) -> None:
        if walk.kind == "strays":
            if not self.strays:
                self.strays_possible = False
                return
            for target, records in walk.found.items():
                self._push(target, records, now, out, strays=True)
            out.event("strays_handoff", keys=len(self.strays))
        elif walk.count:
            out.event("tombstones_collected", keys=walk.count)

    def _push(self, target: str, records: list[tuple[bytes, Record]], now: float, out: Outbox,
              strays: bool) -> None:
        queue = self.queued.setdefault(target, deque())
        for chunk in self._chunks(records):
            queue.append((chunk, strays))
        self._fill(target, now, out)

    def _fill(self, target: str, now: float, out: Outbox) -> None:
        """Send queued batches to ``target`` while fewer than WINDOW await an ack."""
        queue = self.queued.get(target)
        if not queue:
            return
        in_flight = sum(1 for b in self.batches.values() if b.target == target)
        while queue and in_flight < WINDOW:
            chunk, strays = queue.popleft()
            self._next += 1
            self.batches[self._next] = Batch(target, chunk, now, strays)
            out.send(target, Handoff(self._next, chunk))
            self.moved += len(chunk)
            in_flight += 1
        if not queue:
            del self.queued[target]

    def _chunks(self, records: list[tuple[bytes, Record]]):
        """Batches of at most ``batch_size`` records and about BATCH_BYTES (one frame each)."""
        chunk: list[tuple[bytes, Record]] = []
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

    def collect_strays(self, ring: Ring) -> None:
        """Hand each copy this node does not own to its owners, to drop it on their
        acks. Only segments this node does not replicate can hold such copies."""
        if not self.strays_possible or self.strays or "strays" in self._walks:
            return
        foreign = [s for s in range(ring.segments) if self.node_id not in ring.segment_replicas(s)]
        if not foreign:
            self.strays_possible = False
            return
        self._walks["strays"] = Walk("strays", ring, foreign)

    # ----------------------------------------------------------------- messages

    def on_handoff(self, sender: str, msg: Handoff, ring: Ring, now: float,
                   out: Outbox) -> None:
        changed = 0
        for key, record in msg.records:
            result = merge(self.store, key, record)
            if result is Merge.FENCED:
                self.note_fenced(key, now)
            elif result is Merge.STORED:
                changed += 1
                if self.node_id not in ring.locate(key):
                    # A sender with another view of the ring handed us a key we do
                    # not own: pass it on to its owners later.
                    self.strays_possible = True
        out.event("handoff_merged", sender=sender, records=len(msg.records), changed=changed)
        out.send(sender, HandoffAck(msg.batch_id))

    def note_fenced(self, key: bytes, now: float) -> None:
        """Remember a key whose newer record a promise refused (see ``replica.merge``)."""
        if len(self.fenced) < FENCED_MAX:
            self.fenced.setdefault(key, now)

    def on_handoff_ack(self, sender: str, msg: HandoffAck, now: float, out: Outbox) -> None:
        batch = self.batches.get(msg.batch_id)
        if batch is None or batch.target != sender:
            return
        del self.batches[msg.batch_id]
        self._fill(sender, now, out)
        if not batch.strays:
            return
        dropped = 0
        for key, record in batch.records:
            stray = self.strays.get(key)
            if stray is None or stray.record.version != record.version:
                continue
            stray.waiting.discard(sender)
            if not stray.waiting:
                del self.strays[key]
                current = self.store.get(key)
                if current is not None and current.version == record.version:
                    self.store.remove(key)
                    dropped += 1
        if dropped:
            out.event("strays_dropped", keys=dropped, acked_by=sender)

    def resend(self, now: float, retry_interval: float, ring: Ring, out: Outbox) -> None:
        for target in [t for t in self.queued if t not in ring.nodes]:
            del self.queued[target]  # the target left the ring; a later change re-plans
        for batch_id, batch in list(self.batches.items()):
            if batch.target not in ring.nodes:
                del self.batches[batch_id]
                self.strays.clear()
                self.strays_possible = True
            elif now >= batch.sent_at + backoff(retry_interval, batch.resends):
                batch.sent_at = now
                batch.resends += 1
                out.send(batch.target, Handoff(batch_id, batch.records))

    def next_resend(self, retry_interval: float) -> float | None:
        if not self.batches:
            return None
        return min(b.sent_at + backoff(retry_interval, b.resends)
                   for b in self.batches.values())

    def collect_tombstones(self, ring: Ring, older_than_ms: int) -> None:
        """Forget deletes older than the grace period; every replica has had time to
        learn them."""
        if "tombstones" not in self._walks:
            self._walks["tombstones"] = Walk("tombstones", ring, list(range(ring.segments)),
                                             older_than_ms=older_than_ms)

    # ----------------------------------------------------------------- anti-entropy

    def _wall_ms(self, now: float) -> int:
        return int((now + self.wall_offset) * 1000)

    def start_round(self, ring: Ring, alive: set[str], now: float, out: Outbox,
                    peer: str | None = None) -> bool:
        """Compare digests with ``peer``, or with the next live peer in turn; False
        when no round could start (nothing to compare, or digests not ready).

        A round with a chosen peer is a catch-up after this node was away: it
        compares up to now, as what this node missed is surely different, and
        the walk that writes in flight may cost is paid once."""
        catch_up = peer is not None
        if not catch_up and self.queued:
            return False  # busy handing records over; a round would mostly repeat that
        if peer is None:
            peers = sorted(n for n in ring.nodes if n != self.node_id and n in alive)
            if not peers:
                return False
            self._peer_cursor = (self._peer_cursor + 1) % len(peers)
            peer = peers[self._peer_cursor]
        shared = ring.shared_segments(self.node_id, peer)
        if not shared:
            return False
        now_ms = self._wall_ms(now)
        horizon = now_ms - (0 if catch_up else int(HORIZON_LAG * 1000))
        digests = self.store.digests(ring, set(shared), horizon, now_ms)
        if digests is None:
            return False
        self._next += 1
        out.send(peer, SyncDigest(self._next, horizon, [
            (ring.segment_token(s), d.to_bytes(8, "big")) for s, d in sorted(digests.items())
        ]))
        return True

    def on_sync_digest(self, sender: str, msg: SyncDigest, ring: Ring, now: float,
                       out: Outbox) -> None:
        theirs: dict[int, int] = {}
        for tok, digest in msg.digests:
            seg = ring.segment_of_token(tok)
            if seg is not None and self.node_id in ring.segment_replicas(seg):
                theirs[seg] = int.from_bytes(digest, "big")
        if not theirs:
            return
        mine = self.store.digests(ring, set(theirs), msg.horizon, self._wall_ms(now))
        if mine is None:  # a horizon this node can no longer compare at
            return
        differing = sorted(s for s in theirs if mine[s] != theirs[s])
        if not differing:
            return
        if len(differing) > SYNC_SEGMENTS:  # a different few each round
            start = msg.round_id % len(differing)
            differing = (differing[start:] + differing[:start])[:SYNC_SEGMENTS]
        entries: dict[int, list] = {s: [] for s in differing}
        for key, record in self.store.segment_items(ring, set(differing)):
            if record.version.wall_ms <= msg.horizon:
                entries[ring.segment(key)].append((key, record.version))
        for seg, listing in entries.items():
            out.send(sender, SyncKeys(msg.round_id, msg.horizon, ring.segment_token(seg),
                                      listing))

    def on_sync_keys(self, sender: str, msg: SyncKeys) -> None:
        """Queue a peer's listing; ``answer_sync_keys`` answers the queued ones
        together (the listings of one round arrive in one batch)."""
        self.sync_queue.append((sender, msg))

    def answer_sync_keys(self, ring: Ring, now: float, out: Outbox) -> None:
        """Push what the queued listings lack, pull what they have newer."""
        wanted: dict[int, list[tuple[str, SyncKeys, dict]]] = {}
        for sender, msg in self.sync_queue:
            seg = ring.segment_of_token(msg.segment)
            if seg is not None:
                wanted.setdefault(seg, []).append((sender, msg, dict(msg.entries)))
        self.sync_queue.clear()
        if not wanted:
            return
        push: dict[str, list[tuple[bytes, Record]]] = {}
        for key, record in self.store.segment_items(ring, set(wanted)):
            for sender, msg, theirs in wanted[ring.segment(key)]:
                if record.version.wall_ms > msg.horizon:
                    continue  # newer than the comparison: on its way, or next round's
                their_version = theirs.pop(key, None)
                if their_version is None or record.version > their_version:
                    push.setdefault(sender, []).append((key, record))
                elif their_version > record.version:
                    theirs[key] = their_version
        pull: dict[str, list[bytes]] = {}
        round_ids: dict[str, int] = {}
        for listings in wanted.values():
            for sender, msg, theirs in listings:
                round_ids.setdefault(sender, msg.round_id)
                # Left in ``theirs``: keys we lack or hold older (or, in another view
                # of the ring, in another segment: hence the check).
                pull.setdefault(sender, []).extend(
                    k for k, v in theirs.items()
                    if (mine := self.store.get(k)) is None or v > mine.version)
        for sender in sorted(set(push) | set(pull)):
            if not push.get(sender) and not pull.get(sender):
                continue
            if push.get(sender):
                self._push(sender, push[sender], now, out, strays=False)
            if pull.get(sender):
                out.send(sender, SyncPull(round_ids[sender], pull[sender]))
            out.event("anti_entropy", peer=sender, pushed=len(push.get(sender, ())),
                      pulled=len(pull.get(sender, ())))

    def on_sync_pull(self, sender: str, msg: SyncPull, now: float, out: Outbox) -> None:
        records = [(k, r) for k in msg.keys if (r := self.store.get(k)) is not None]
        if records:
            self._push(sender, records, now, out, strays=False)

