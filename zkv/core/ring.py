"""Consistent-hashing ring with virtual nodes.

Nodes and keys are placed by their tokens (``zkv.model.tokens``). A key's
replica set is the owner of the first token at or after the key's token and the
next distinct nodes clockwise: primary, secondary, tertiary.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

from zkv.model.tokens import TOKEN_SPACE, token


def key_bytes(key: str | bytes) -> bytes:
    return key.encode() if isinstance(key, str) else key


class Ring:
    """An immutable ring over a set of node ids."""

    __slots__ = ("nodes", "replicas", "vnodes", "_tokens", "_owners", "_cache")

    def __init__(self, nodes: Iterable[str], replicas: int = 3, vnodes: int = 64) -> None:
        self.nodes: frozenset[str] = frozenset(nodes)
        self.replicas = replicas
        self.vnodes = vnodes
        points = sorted(
            (token(f"{node}#{i}".encode()), node) for node in self.nodes for i in range(vnodes)
        )
        self._tokens = [t for t, _ in points]
        self._owners = [n for _, n in points]
        self._cache: dict[int, tuple[str, ...]] = {}

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Ring)
            and self.nodes == other.nodes
            and self.replicas == other.replicas
            and self.vnodes == other.vnodes
        )

    def __hash__(self) -> int:
        return hash((self.nodes, self.replicas, self.vnodes))

    def __len__(self) -> int:
        return len(self.nodes)

    def segment(self, key: bytes) -> int:
        """Index of the ring segment (vnode) that owns ``key``; -1 on an empty ring."""
        return self.segment_at(token(key))

    def segment_at(self, tok: int) -> int:
        """Index of the segment that owns token ``tok``; -1 on an empty ring."""
        if not self._tokens:
            return -1
        return bisect.bisect_left(self._tokens, tok) % len(self._tokens)

    def segment_ranges(self, segment: int) -> list[tuple[int, int]]:
        """The token ranges (first, last; both included) a segment owns: from just
        after the previous token to its own; the first segment also owns the wrap."""
        tokens = self._tokens
        if segment > 0:
            return [(tokens[segment - 1] + 1, tokens[segment])]
        ranges = [(0, tokens[0])]
        if tokens[-1] < TOKEN_SPACE - 1:
            ranges.append((tokens[-1] + 1, TOKEN_SPACE - 1))
        return ranges

    def segment_replicas(self, segment: int) -> tuple[str, ...]:
        """The replica set of a segment: its owner and the next distinct nodes clockwise."""
        if segment < 0:
            return ()
        cached = self._cache.get(segment)
        if cached is not None:
            return cached
        want = min(self.replicas, len(self.nodes))
        chosen: list[str] = []
        n = len(self._owners)
        i = segment
        while len(chosen) < want:
            owner = self._owners[i % n]
            if owner not in chosen:
                chosen.append(owner)
            i += 1
        result = tuple(chosen)
        self._cache[segment] = result
        return result

    def locate(self, key: str | bytes) -> tuple[str, ...]:
        """Replica node ids for ``key``, primary first."""
        return self.segment_replicas(self.segment(key_bytes(key)))

    @property
    def segments(self) -> int:
        return len(self._tokens)

    def segment_token(self, segment: int) -> int:
        """A segment's name that every node with the same ring agrees on."""
        return self._tokens[segment]

    def segment_of_token(self, tok: int) -> int | None:
        """The segment named ``tok`` in this ring, or None if this ring has no such token."""
        i = bisect.bisect_left(self._tokens, tok)
        return i if i < len(self._tokens) and self._tokens[i] == tok else None

    def shared_segments(self, a: str, b: str) -> list[int]:
        """Segments replicated by both ``a`` and ``b``."""
        return [s for s in range(len(self._tokens))
                if a in (reps := self.segment_replicas(s)) and b in reps]
