"""Counting replica answers against a consistency level.

During a ring change a key may have two replica sets (before and after); an
operation then needs the level met in each set (a joint quorum), so it
intersects every operation done under either view.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from enum import Enum


class Consistency(str, Enum):
    """The consistency levels a request may name: how many of a key's replicas must
    answer (``needed``)."""

    one = "one"
    quorum = "quorum"
    all = "all"


LEVELS: tuple[str, ...] = tuple(level.value for level in Consistency)


def needed(level: str, size: int) -> int:
    if level == "one":
        return min(1, size)
    if level == "all":
        return size
    return size // 2 + 1


class QuorumTracker:
    __slots__ = ("sets", "need", "targets")

    def __init__(self, replica_sets: Iterable[tuple[str, ...]], level: str) -> None:
        unique: list[tuple[str, ...]] = []
        for s in replica_sets:
            if s not in unique:
                unique.append(s)
        self.sets = unique
        self.need = [needed(level, len(s)) for s in unique]
        targets: list[str] = []
        for s in unique:
            targets.extend(n for n in s if n not in targets)
        self.targets = tuple(targets)

    def met(self, answered: Collection[str]) -> bool:
        """Whether ``answered`` (a set or dict of node ids) meets the level in every set;
        asked on every reply, so the usual case (one set) counts without building sets."""
        if len(self.sets) == 1:
            count = 0
            for node in self.sets[0]:
                if node in answered:
                    count += 1
            return count >= self.need[0]
        return all(sum(1 for n in s if n in answered) >= k
                   for s, k in zip(self.sets, self.need))

    def possible(self, candidates: Collection[str]) -> bool:
        """Could the level still be met if all of ``candidates`` answered?"""
        return self.met(candidates)
