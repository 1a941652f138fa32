"""The unit every replica stores: a value (or a tombstone) under a version."""

from __future__ import annotations

from dataclasses import dataclass

from zkv.core.versions import Version


@dataclass(frozen=True, slots=True)
class Record:
    version: Version
    tombstone: bool
    value: bytes

    @classmethod
    def tomb(cls, version: Version) -> Record:
        return cls(version, True, b"")

    @property
    def live(self) -> bool:
        return not self.tombstone

    def encode(self) -> list:
        return [self.version.wall_ms, self.version.counter, self.version.node_id,
                self.tombstone, self.value]

    @classmethod
    def decode(cls, fields: object) -> Record:
        """Rebuild from ``encode()``'s list; raises ValueError on any malformed field."""
        if not isinstance(fields, list) or len(fields) != 5:
            raise ValueError("record must be a list of 5 fields")
        wall, counter, node, tombstone, value = fields
        if type(wall) is not int or not 0 <= wall < 1 << 64:
            raise ValueError("record wall_ms must be a non-negative int")
        if type(counter) is not int or not 0 <= counter < 1 << 64:
            raise ValueError("record counter must be a non-negative int")
        if type(node) is not str:
            raise ValueError("record node id must be a string")
        if type(tombstone) is not bool:
            raise ValueError("record tombstone flag must be a bool")
        if type(value) is not bytes:
            raise ValueError("record value must be bytes")
        if tombstone and value:
            raise ValueError("a tombstone carries no value")
        return cls(Version(wall, counter, node), tombstone, value)


def newest(a: Record | None, b: Record | None) -> Record | None:
    if a is None:
        return b
    if b is None:
        return a
    return b if b.version > a.version else a
