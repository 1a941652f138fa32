"""The unit every replica stores: a value (or a tombstone) under a version."""

from __future__ import annotations

from dataclasses import dataclass

from zkv.model.versions import Version


@dataclass(slots=True, unsafe_hash=True)
class Record:
    """``origin``: for a state that a Paxos round re-stamped at its own ballot (to
    make it chosen), the version of the change that produced it, so that change's
    coordinator can still recognise its own write. Stored and sent as a sixth
    field only when set, so records without it keep their five fields.

    A value, never changed once made; not frozen only because that makes every
    record (several per operation) several times dearer to build."""

    version: Version
    tombstone: bool
    value: bytes
    origin: Version | None = None

    @classmethod
    def tomb(cls, version: Version) -> Record:
        return cls(version, True, b"")

    @property
    def live(self) -> bool:
        return not self.tombstone

    @property
    def change(self) -> Version:
        """The version of the write that produced this state."""
        return self.origin if self.origin is not None else self.version

    def encode(self) -> list:
        fields = [self.version.wall_ms, self.version.counter, self.version.node_id,
                  self.tombstone, self.value]
        if self.origin is not None:
            fields.append(list(self.origin))
        return fields

    @classmethod
    def decode(cls, fields: object) -> Record:
        """Rebuild from ``encode()``'s list; raises ValueError on any malformed field."""
        if not isinstance(fields, list) or len(fields) not in (5, 6):
            raise ValueError("record must be a list of 5 fields (6 with an origin)")
        wall, counter, node, tombstone, value = fields[:5]
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
        origin = None
        if len(fields) == 6:
            o = fields[5]
            if not (isinstance(o, list) and len(o) == 3 and type(o[0]) is int
                    and type(o[1]) is int and type(o[2]) is str
                    and 0 <= o[0] < 1 << 64 and 0 <= o[1] < 1 << 64):
                raise ValueError("record origin must be [wall_ms, counter, node_id]")
            origin = Version(*o)
        return cls(Version(wall, counter, node), tombstone, value, origin)


def newest(a: Record | None, b: Record | None) -> Record | None:
    if a is None:
        return b
    if b is None:
        return a
    return b if b.version > a.version else a
