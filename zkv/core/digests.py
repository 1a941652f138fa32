"""Per-segment digests of a node's records, kept current on every write.

Anti-entropy compares one digest per ring segment with a peer. Computing them
by walking the store costs a full scan per round (seconds at a million keys);
keeping them here costs one hash per write. A digest is the XOR of a 64-bit
hash of (key, version) over the segment's records, so a write updates it in
place: XOR out the old entry, XOR in the new one.

Under load two replicas are never equal at the same instant: a write is on
one and still on its way to the other. So digests are compared as of a
*horizon*, a wall-clock time some seconds back: records written after it are
left out on both sides. The entries of the last ``RETAIN_MS`` are kept in a
list besides the digests; the digest as of horizon H is the current one with
those entries newer than H XORed out again (a write of record ``new`` over
``old`` toggles both in the digest and appends both to the list, so each
overwritten record cancels out there as it did in the digest).

The digests belong to one ring; for any other ring they are rebuilt, one
segment (a range read) per ``rebuild_step``, so the node keeps serving and
gossiping meanwhile. A write to a segment not read yet leaves its digest alone
(the read will see the write). Until every segment is read, ``digests``
answers None. A node that reboots (crash, lost turn) starts with none, so a
write the store discarded can never leave a digest behind.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Iterator

from zkv.core.ring import Ring
from zkv.model.record import Record
from zkv.model.versions import Version
from zkv.storage.base import Store

RETAIN_MS = 30_000  # how far back a horizon may lie


def entry_hash(key: bytes, record: Record) -> int:
    v = record.version
    data = b"%s\x00%d\x00%d\x00%s" % (key, v.wall_ms, v.counter, v.node_id.encode())
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


class DigestedStore:
    """A Store that keeps segment digests for one ring; all else goes to ``inner``."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self._ring: Ring | None = None
        self._digests: list[int] = []
        self._valid: list[bool] = []
        self._todo: list[int] = []  # segments still to read
        self._recent: deque[tuple[int, int, int]] = deque()  # (wall_ms, segment, hash)
        self._floor = 0  # entries at or before this are not in _recent
        self.rebuilds = 0  # rebuilds started (for tests)

    @property
    def corrupt_reads(self) -> int:
        return self.inner.corrupt_reads

    @property
    def corrupt_keys(self) -> list[bytes]:
        return list(getattr(self.inner, "corrupt_keys", []))

    def get(self, key: bytes) -> Record | None:
        return self.inner.get(key)

    def put(self, key: bytes, record: Record) -> None:
        if self._ring is not None:
            old = self.inner.get(key)  # (the replica has just read it: the store's cache)
            seg = self._ring.segment(key)
            if old is not None:
                self._toggle(seg, key, old)
            self._toggle(seg, key, record)
        self.inner.put(key, record)

    def remove(self, key: bytes) -> None:
        if self._ring is not None:
            old = self.inner.get(key)
            if old is not None:
                self._toggle(self._ring.segment(key), key, old)
        self.inner.remove(key)

    def _toggle(self, seg: int, key: bytes, record: Record) -> None:
        if not self._valid[seg]:
            return
        h = entry_hash(key, record)
        self._digests[seg] ^= h
        wall = record.version.wall_ms
        if wall > self._floor:
            self._recent.append((wall, seg, h))

    @property
    def rebuilding(self) -> bool:
        return bool(self._todo)

    def digests(self, ring: Ring, segments: set[int], horizon_ms: int,
                now_ms: int) -> dict[int, int] | None:
        """The digest of each of ``segments`` of ``ring`` over the records written at
        or before ``horizon_ms``; None while they are being rebuilt for this ring,
        or when the horizon lies too far back to tell."""
        if ring != self._ring:
            self._reset(ring, now_ms)
        if self._todo:
            return None
        floor = now_ms - RETAIN_MS
        recent = self._recent
        while recent and recent[0][0] <= floor:
            recent.popleft()
        self._floor = max(self._floor, floor)
        if horizon_ms < self._floor:
            return None
        result = {s: self._digests[s] for s in segments}
        for wall, seg, h in recent:
            if wall > horizon_ms and seg in result:
                result[seg] ^= h
        return result

    def _reset(self, ring: Ring, now_ms: int) -> None:
        self._recent.clear()
        self._floor = now_ms - RETAIN_MS
        n = ring.segments
        self._ring = ring if n else None  # an empty ring has no segments to keep
        self._digests, self._valid = [0] * n, [False] * n
        self._todo = list(range(n))
        self.rebuilds += 1

    def rebuild_step(self) -> int | None:
        """Read one segment for the digests being rebuilt: how many records it held,
        or None when no segment is left to read."""
        if not self._todo or self._ring is None:
            return None
        seg = self._todo.pop()
        digest = read = 0
        for first, last in self._ring.segment_ranges(seg):
            for key, record in self.inner.token_range(first, last):
                read += 1
                h = entry_hash(key, record)
                digest ^= h
                if record.version.wall_ms > self._floor:
                    self._recent.append((record.version.wall_ms, seg, h))
        self._digests[seg] = digest
        self._valid[seg] = True
        return read

    def items(self) -> Iterator[tuple[bytes, Record]]:
        return self.inner.items()

    def token_range(self, first: int, last: int) -> Iterator[tuple[bytes, Record]]:
        return self.inner.token_range(first, last)

    def segment_items(self, ring: Ring, segments: set[int]) -> Iterator[tuple[bytes, Record]]:
        """The records of ``segments`` of ``ring``, each segment a range read."""
        for segment in sorted(segments):
            for first, last in ring.segment_ranges(segment):
                yield from self.inner.token_range(first, last)

    def __len__(self) -> int:
        return len(self.inner)

    def get_promise(self, key: bytes) -> Version | None:
        return self.inner.get_promise(key)

    def put_promise(self, key: bytes, ballot: Version) -> None:
        self.inner.put_promise(key, ballot)

    def drop_promise(self, key: bytes) -> None:
        self.inner.drop_promise(key)

    def get_meta(self, name: str) -> bytes | None:
        return self.inner.get_meta(name)

    def put_meta(self, name: str, value: bytes) -> None:
        self.inner.put_meta(name, value)

    def commit(self) -> None:
        self.inner.commit()

    def close(self) -> None:
        self.inner.close()
