"""Hybrid logical clock versions.

A version is (wall_ms, counter, node_id): it follows wall time when clocks are
roughly in sync, yet never goes backwards and always exceeds every version the
node has seen, so "highest version wins" is a total order that respects
causality. The clock never reads time itself: callers pass ``now_ms``.
"""

from __future__ import annotations

from typing import NamedTuple


class Version(NamedTuple):
    wall_ms: int
    counter: int
    node_id: str

    def encode(self) -> list:
        return [self.wall_ms, self.counter, self.node_id]


ZERO = Version(0, 0, "")


class HybridClock:
    """Issues versions strictly above the node's last issued and observed ones."""

    __slots__ = ("node_id", "_wall", "_counter")

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self._wall = 0
        self._counter = 0

    def observe(self, version: Version | None) -> None:
        """Remember a version seen on the wire so later ones exceed it."""
        if version is None:
            return
        if (version.wall_ms, version.counter) > (self._wall, self._counter):
            self._wall, self._counter = version.wall_ms, version.counter

    def next(self, now_ms: int, above: Version | None = None) -> Version:
        """A fresh version greater than ``above`` and than every earlier one."""
        self.observe(above)
        if now_ms > self._wall:
            self._wall, self._counter = now_ms, 0
        else:
            self._counter += 1
        version = Version(self._wall, self._counter, self.node_id)
        if above is not None and version <= above:
            # Same (wall, counter) as ``above`` but a smaller node id: step past it.
            self._counter += 1
            version = Version(self._wall, self._counter, self.node_id)
        return version
