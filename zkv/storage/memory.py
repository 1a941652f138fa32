"""In-memory store for the simulator: it survives a simulated crash (the disk)."""

from __future__ import annotations

from collections.abc import Iterator

from zkv.core.ring import token
from zkv.core.versions import Version
from zkv.storage.record import Record


class MemoryStore:
    def __init__(self) -> None:
        self._data: dict[bytes, Record] = {}
        self._meta: dict[str, bytes] = {}
        self._promises: dict[bytes, Version] = {}
        self.corrupt_reads = 0
        self.commits = 0

    def get(self, key: bytes) -> Record | None:
        return self._data.get(key)

    def put(self, key: bytes, record: Record) -> None:
        self._data[key] = record

    def remove(self, key: bytes) -> None:
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
        self._promises[key] = ballot

    def drop_promise(self, key: bytes) -> None:
        self._promises.pop(key, None)

    def get_meta(self, name: str) -> bytes | None:
        return self._meta.get(name)

    def put_meta(self, name: str, value: bytes) -> None:
        self._meta[name] = value

    def commit(self) -> None:
        self.commits += 1

    def close(self) -> None:
        pass
