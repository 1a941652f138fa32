"""The records a store read or wrote last, decoded, so the next use skips LMDB.

Every replica write reads the key's record first (its version decides whether
the write is taken), and a key's writes and reads come in runs; reading it back
from LMDB costs a lookup, a checksum and a CBOR decode, a sixth of a replica's
CPU under puts. A key held here is answered from memory instead.

Bounded by entries and by the bytes of the values held, whichever binds first:
the oldest entry (by its last write or miss) leaves first. A record whose
value alone is larger than ``max_value`` is never held. ``None`` is held too:
the key has no record (reads of absent keys and first puts are common).

Correctness rests on the store: it puts every record it writes or removes here
as it buffers the write, and clears this whenever it discards uncommitted
writes. A record held here was checked when read (a corrupt one is not held),
so what a checksum catches is what a read from disk catches; a record damaged
on disk after it was read is found by the next read from disk (anti-entropy
reads every segment from disk) or after a restart.
"""

from __future__ import annotations

from zkv.model.record import Record

ENTRY_OVERHEAD = 200  # bytes an entry costs besides its value (key, record, version)


class RecordCache:
    def __init__(self, max_entries: int, max_bytes: int, max_value: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_value = max_value
        self._held: dict[bytes, Record | None] = {}
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._held)

    def __contains__(self, key: bytes) -> bool:
        return key in self._held

    @property
    def held_bytes(self) -> int:
        return self._bytes

    def get(self, key: bytes) -> Record | None:
        """The held record, None when held as absent; only for a key held (``in``)."""
        self.hits += 1
        return self._held[key]

    def put(self, key: bytes, record: Record | None) -> None:
        """Hold ``record`` (None: the key has none) as the key's newest entry."""
        held = self._held
        if key in held:
            self._bytes -= _cost(key, held.pop(key))
        if record is not None and len(record.value) > self.max_value:
            return
        held[key] = record
        self._bytes += _cost(key, record)
        while len(held) > self.max_entries or self._bytes > self.max_bytes:
            oldest = next(iter(held))
            self._bytes -= _cost(oldest, held.pop(oldest))

    def clear(self) -> None:
        self._held.clear()
        self._bytes = 0


def _cost(key: bytes, record: Record | None) -> int:
    return ENTRY_OVERHEAD + len(key) + (len(record.value) if record is not None else 0)
