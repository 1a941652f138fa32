"""Strays: copies this node holds of keys it no longer owns.

A stray is pushed to all its owners (``walks.StrayWalk`` finds them, ``handoff``
carries them) and dropped only after every owner acknowledged it, and only if
the copy did not change meanwhile. Never during a ring transition: the old
owners are still read then, so the search starts only on a settled ring.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from zkv.core.digests import DigestedStore
from zkv.model.record import Record


@dataclass(slots=True)
class StrayCopy:
    """A copy pushed to its owners, and the owners that have not acknowledged it yet."""

    record: Record
    waiting: set[str] = field(default_factory=set)


class Strays:
    """The strays under way, and whether the store may hold more.

    ``possible`` is what spares a node with a million keys a walk on every round:
    it goes false after a search that found none, and true again whenever a copy
    of a foreign key may have arrived (a ring change, a hand-off from a peer with
    another ring, a batch whose target left).
    """

    def __init__(self) -> None:
        self.copies: dict[bytes, StrayCopy] = {}
        self.possible = True

    def reset(self) -> None:
        """Forget the strays under way and search again: some may have lost an owner."""
        self.copies.clear()
        self.possible = True

    def found(self, key: bytes, record: Record, owners: tuple[str, ...]) -> None:
        """A copy the search found; it stays until each of ``owners`` has it."""
        self.copies[key] = StrayCopy(record, set(owners))

    def acknowledged(self, sender: str, records: list[tuple[bytes, Record]],
                     store: DigestedStore) -> int:
        """``sender`` has ``records``: drop each copy every owner now has, unless it changed
        since it was pushed. Returns how many copies were dropped."""
        dropped = 0
        for key, record in records:
            stray = self.copies.get(key)
            if stray is None or stray.record.version != record.version:
                continue
            stray.waiting.discard(sender)
            if not stray.waiting:
                del self.copies[key]
                current = store.get(key)
                if current is not None and current.version == record.version:
                    store.remove(key)
                    dropped += 1
        return dropped
