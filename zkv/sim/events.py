"""The simulated cluster's event log: every node's Event actions, in time order.

Entries are ``(time, node_id, kind, fields)`` tuples. The simulator adds its
own entries under kinds starting with ``sim.`` (crash, restart, partition...)
and the nemesis under ``nemesis.``, so a failing run reads as one story.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any, NamedTuple


class LogEntry(NamedTuple):
    time: float
    node_id: str
    kind: str
    fields: dict[str, Any]


class EventLog:
    def __init__(self) -> None:
        self.entries: list[LogEntry] = []

    def append(self, time: float, node_id: str, kind: str, fields: dict[str, Any]) -> LogEntry:
        entry = LogEntry(time, node_id, kind, fields)
        self.entries.append(entry)
        return entry

    def filter(self, kind: str | None = None, node: str | None = None,
               since: float | None = None, prefix: str | None = None) -> list[LogEntry]:
        """Entries matching every given criterion (``prefix`` matches the kind's start)."""
        return [
            e for e in self.entries
            if (kind is None or e.kind == kind)
            and (node is None or e.node_id == node)
            and (since is None or e.time >= since)
            and (prefix is None or e.kind.startswith(prefix))
        ]

    def of_kind(self, kind: str) -> list[LogEntry]:
        return self.filter(kind=kind)

    def of_node(self, node_id: str) -> list[LogEntry]:
        return self.filter(node=node_id)

    def kinds(self) -> Counter:
        """How many entries of each kind."""
        return Counter(e.kind for e in self.entries)

    def __iter__(self) -> Iterator[LogEntry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> LogEntry:
        return self.entries[index]
