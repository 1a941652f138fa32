"""In-memory store for the simulator: it survives a simulated crash (the disk).

Like LMDB, it keeps the writes since the last ``commit`` apart, so that a full
disk (``full``, set by the simulator's nemesis) can do what LMDB's does: refuse
a write with ``StoreFull`` and discard every write since the last commit, the
earlier steps' of the turn included. ``FULL_DATA`` refuses records and promises
but still takes an update of an existing meta record (a small overwrite, which
LMDB usually fits in the pages the discarded writes freed), so a node can
restart on it; ``FULL`` refuses every write.
"""

from __future__ import annotations

from collections.abc import Iterator

from zkv.model.record import Record
from zkv.model.tokens import token
from zkv.model.versions import Version
from zkv.storage.base import StoreFull

_ABSENT = object()
FULL_DATA, FULL = "data", "all"


class MemoryStore:
    def __init__(self) -> None:
        self._data: dict[bytes, Record] = {}
        self._meta: dict[str, bytes] = {}
        self._promises: dict[bytes, Version] = {}
        self.corrupt_reads = 0
        self.commits = 0
        self.full: str | None = None  # FULL_DATA or FULL: writes raise StoreFull
        # (table, key, value before the first change since the last commit)
        self._undo: list[tuple[dict, object, object]] = []
        self._touched: set[tuple[int, object]] = set()

    def _change(self, table: dict, key: object, grows: bool) -> None:
        """Remember ``key``'s committed value before its first change since the last
        commit; refuse a write that grows the store while the disk is full."""
        if grows and self.full:
            self.rollback()
            raise StoreFull("the simulated disk is full")
        mark = (id(table), key)
        if mark not in self._touched:
            self._touched.add(mark)
            self._undo.append((table, key, table.get(key, _ABSENT)))

    def rollback(self) -> None:
        """Discard every write since the last commit (what a refused LMDB write does)."""
        for table, key, old in reversed(self._undo):
            if old is _ABSENT:
                table.pop(key, None)
            else:
                table[key] = old
        self._undo.clear()
        self._touched.clear()

    def get(self, key: bytes) -> Record | None:
        return self._data.get(key)

    def put(self, key: bytes, record: Record) -> None:
        self._change(self._data, key, grows=True)
        self._data[key] = record

    def remove(self, key: bytes) -> None:
        self._change(self._data, key, grows=False)
        self._data.pop(key, None)

    def items(self) -> Iterator[tuple[bytes, Record]]:
        for key in sorted(self._data):
            yield key, self._data[key]

    def token_range(self, first: int, last: int) -> Iterator[tuple[bytes, Record]]:
        # A scan in ring order, like LMDB's: the simulator's stores are small.
        found = sorted((t, key) for key in self._data if first <= (t := token(key)) <= last)
        for _, key in found:
            yield key, self._data[key]

    def __len__(self) -> int:
        return len(self._data)

    def get_promise(self, key: bytes) -> Version | None:
        return self._promises.get(key)

    def put_promise(self, key: bytes, ballot: Version) -> None:
        self._change(self._promises, key, grows=True)
        self._promises[key] = ballot

    def drop_promise(self, key: bytes) -> None:
        self._change(self._promises, key, grows=False)
        self._promises.pop(key, None)

    def get_meta(self, name: str) -> bytes | None:
        return self._meta.get(name)

    def put_meta(self, name: str, value: bytes) -> None:
        self._change(self._meta, name, grows=self.full == FULL or name not in self._meta)
        self._meta[name] = value

    def commit(self) -> None:
        """Make the writes since the last commit durable; with no room at all, a commit
        that has writes to save fails as LMDB's can (its free list needs a page)."""
        if self._undo and self.full == FULL:
            self.rollback()
            raise StoreFull("the simulated disk is full")
        self._undo.clear()
        self._touched.clear()
        self.commits += 1

    def close(self) -> None:
        pass
