"""Anti-entropy: a node and one peer find what differs between them, and exchange it.

Periodically, a node and one peer compare one digest per ring segment they both
replicate (kept current on every write, see ``digests``), as of a horizon
``HORIZON_LAG`` seconds back so writes still on their way do not count as
differences; then they exchange what differs (records up to the horizon), at
most ``SYNC_SEGMENTS`` segments a round, each read as one range of the store.
A node that was down, or held a corrupt record, catches up this way.

A round: ``SyncDigest`` (the digests) → ``SyncKeys`` (per differing segment, the
keys and versions the peer holds) → hand-offs of what the peer lacks and a
``SyncPull`` for what it has newer.
"""

from __future__ import annotations

from zkv.core.digests import DigestedStore
from zkv.core.handoff import HandoffQueue, IdSequence, Records
from zkv.core.messages import SyncDigest, SyncKeys, SyncPull
from zkv.core.outbox import Outbox
from zkv.core.ring import Ring
from zkv.model.versions import Version

HORIZON_LAG = 10.0  # seconds: anti-entropy compares records older than this
SYNC_SEGMENTS = 16  # differing segments listed per anti-entropy round: bounded work


class AntiEntropy:
    """One node's side of anti-entropy rounds, the ones it starts and the ones it answers."""

    def __init__(self, node_id: str, store: DigestedStore, handoff: HandoffQueue,
                 ids: IdSequence, wall_offset: float = 0.0) -> None:
        self.node_id = node_id
        self.store = store
        self.handoff = handoff
        self.ids = ids
        self.wall_offset = wall_offset
        self.sync_queue: list[tuple[str, SyncKeys]] = []
        self._peer_cursor = 0

    def wall_ms(self, now: float) -> int:
        return int((now + self.wall_offset) * 1000)

    def prepare(self, ring: Ring, now: float) -> None:
        """Start building ``ring``'s digests now, so a round finds them ready."""
        now_ms = self.wall_ms(now)
        self.store.digests(ring, set(), now_ms, now_ms)

    def start_round(self, ring: Ring, alive: set[str], now: float, out: Outbox,
                    peer: str | None = None) -> bool:
        """Compare digests with ``peer``, or with the next live peer in turn; False
        when no round could start (nothing to compare, or digests not ready).

        A round with a chosen peer is a catch-up after this node was away: it
        compares up to now, as what this node missed is surely different, and
        the walk that writes in flight may cost is paid once."""
        catch_up = peer is not None
        if not catch_up and self.handoff.queued:
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
        now_ms = self.wall_ms(now)
        horizon = now_ms - (0 if catch_up else int(HORIZON_LAG * 1000))
        digests = self.store.digests(ring, set(shared), horizon, now_ms)
        if digests is None:
            return False
        out.send(peer, SyncDigest(self.ids.take(), horizon, [
            (ring.segment_token(s), d.to_bytes(8, "big")) for s, d in sorted(digests.items())
        ]))
        return True

    def on_sync_digest(self, sender: str, msg: SyncDigest, ring: Ring, now: float,
                       out: Outbox) -> None:
        """List the keys of the segments whose digests differ (at most SYNC_SEGMENTS)."""
        theirs: dict[int, int] = {}
        for tok, digest in msg.digests:
            seg = ring.segment_of_token(tok)
            if seg is not None and self.node_id in ring.segment_replicas(seg):
                theirs[seg] = int.from_bytes(digest, "big")
        if not theirs:
            return
        mine = self.store.digests(ring, set(theirs), msg.horizon, self.wall_ms(now))
        if mine is None:  # a horizon this node can no longer compare at
            return
        differing = sorted(s for s in theirs if mine[s] != theirs[s])
        if not differing:
            return
        if len(differing) > SYNC_SEGMENTS:  # a different few each round
            start = msg.round_id % len(differing)
            differing = (differing[start:] + differing[:start])[:SYNC_SEGMENTS]
        entries: dict[int, list[tuple[bytes, Version]]] = {s: [] for s in differing}
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
        wanted: dict[int, list[tuple[str, SyncKeys, dict[bytes, Version]]]] = {}
        for sender, msg in self.sync_queue:
            seg = ring.segment_of_token(msg.segment)
            if seg is not None:
                wanted.setdefault(seg, []).append((sender, msg, dict(msg.entries)))
        self.sync_queue.clear()
        if not wanted:
            return
        push: dict[str, Records] = {}
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
                self.handoff.push(sender, push[sender], now, out, strays=False)
            if pull.get(sender):
                out.send(sender, SyncPull(round_ids[sender], pull[sender]))
            out.event("anti_entropy", peer=sender, pushed=len(push.get(sender, ())),
                      pulled=len(pull.get(sender, ())))

    def on_sync_pull(self, sender: str, msg: SyncPull, now: float, out: Outbox) -> None:
        """Hand the peer the records it asked for (those this node still holds)."""
        records = [(k, r) for k in msg.keys if (r := self.store.get(k)) is not None]
        if records:
            self.handoff.push(sender, records, now, out, strays=False)
