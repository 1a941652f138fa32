"""Per-segment digests of a node's records, kept current on every write.

Anti-entropy compares one digest per ring segment with a peer. Computing them
by walking the store costs a full scan per round (seconds at a million keys);
keeping them here costs one hash per write. A digest is the XOR of a 64-bit
hash of (key, version) over the segment's records, so a write updates it in
place: XOR out the old entry, XOR in the new one.

The digests belong to one ring; for any other ring they are rebuilt with one
walk (ring changes are rare and walk the store anyway). A node that reboots
(crash, lost turn) starts with none, so a write the store discarded can never
leave a digest behind.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from zkv.core.ring import Ring
from zkv.storage.base import Store
from zkv.storage.record import Record


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
        self._last: tuple[bytes, Record | None] | None = None  # the latest get, for put
        self.rebuilds = 0  # full walks (for tests and metrics)

    @property
    def corrupt_reads(self) -> int:
        return self.inner.corrupt_reads

    @property
    def corrupt_keys(self) -> list[bytes]:
        return list(getattr(self.inner, "corrupt_keys", []))

    def get(self, key: bytes) -> Record | None:
        record = self.inner.get(key)
        self._last = (key, record)
        return record

    def put(self, key: bytes, record: Record) -> None:
        if self._ring is not None:
            old = self._previous(key)
            seg = self._ring.segment(key)
            if old is not None:
                self._digests[seg] ^= entry_hash(key, old)
            self._digests[seg] ^= entry_hash(key, record)
        self._last = None
        self.inner.put(key, record)

    def remove(self, key: bytes) -> None:
        if self._ring is not None:
            old = self._previous(key)
            if old is not None:
                self._digests[self._ring.segment(key)] ^= entry_hash(key, old)
        self._last = None
        self.inner.remove(key)

    def _previous(self, key: bytes) -> Record | None:
        # The replica reads a key just before writing it: reuse that read.
        last = self._last
        if last is not None and last[0] == key:
            return last[1]
        return self.inner.get(key)

    def digests(self, ring: Ring, segments: set[int]) -> dict[int, int]:
        """The digest of each of ``segments`` of ``ring``."""
        if ring != self._ring:
            self._rebuild(ring)
        return {s: self._digests[s] for s in segments}

    def _rebuild(self, ring: Ring) -> None:
        if not ring.segments:  # an empty ring has no segments to keep
            self._ring, self._digests = None, []
            return
        digests = [0] * ring.segments
        for key, record in self.inner.items():
            digests[ring.segment(key)] ^= entry_hash(key, record)
        self._ring, self._digests = ring, digests
        self.rebuilds += 1

    def items(self) -> Iterator[tuple[bytes, Record]]:
        return self.inner.items()

    def __len__(self) -> int:
        return len(self.inner)

    def get_meta(self, name: str) -> bytes | None:
        return self.inner.get_meta(name)

    def put_meta(self, name: str, value: bytes) -> None:
        self.inner.put_meta(name, value)

    def commit(self) -> None:
        self.inner.commit()

    def close(self) -> None:
        self.inner.close()
