"""The store interface shared by the in-memory (simulator) and LMDB (real) stores.

Writes are buffered and visible to later reads at once; ``commit()`` makes every
write since the last commit durable in one step (group commit). A driver calls
``commit()`` after each step of the node and before it sends any message, so no
acknowledgement leaves before the write it acknowledges is durable.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from zkv.model.record import Record
from zkv.model.versions import Version


class StoreFull(Exception):
    """The store cannot take more data; earlier data stays readable."""


class Store(Protocol):
    @property
    def corrupt_reads(self) -> int:
        """Records that failed their checksum, counted at read time (read-only to users:
        a plain attribute in the stores, a view of the inner store's in DigestedStore)."""

    def get(self, key: bytes) -> Record | None:
        """The stored record, or None when absent or corrupt (corrupt ones are counted)."""

    def put(self, key: bytes, record: Record) -> None:
        """Buffer a write; raises StoreFull when it cannot be stored."""

    def remove(self, key: bytes) -> None:
        """Forget a key entirely (a copy the node no longer owns, or a collected tombstone)."""

    def items(self) -> Iterator[tuple[bytes, Record]]:
        """Every (key, record); skips corrupt records (counting them)."""

    def token_range(self, first: int, last: int) -> Iterator[tuple[bytes, Record]]:
        """The records whose keys' ring tokens lie in ``first..last`` (both included):
        one ring segment's records, without reading the others."""

    def __len__(self) -> int: ...

    def get_promise(self, key: bytes) -> Version | None:
        """The highest Paxos ballot this replica promised for ``key`` and has not yet
        seen accepted (see ``zkv.core.replica``), or None."""

    def put_promise(self, key: bytes, ballot: Version) -> None:
        """Buffer a promise; durable with the next ``commit()``, like a record."""

    def drop_promise(self, key: bytes) -> None:
        """Forget the key's promise (a record at or above it is stored)."""

    def get_meta(self, name: str) -> bytes | None: ...

    def put_meta(self, name: str, value: bytes) -> None: ...

    def commit(self) -> None:
        """Make every buffered write durable (one transaction, one sync)."""

    def close(self) -> None: ...
