""""No acknowledged write lost": what a key may hold once every operation is over.

After the workload ends and the cluster has settled, a key's value must come
from a write that can still be the last one: a put or delete that succeeded or
whose outcome is unknown (a conditional one only when it wrote: ok with its
precondition met, or unknown), and that was not followed, strictly after it ended,
by another acknowledged write. The initial state (absent) qualifies only if no
write was ever acknowledged. An older value coming back, or an acknowledged
write vanishing, fails this check. It is a cheap necessary condition; the
linearizability checker is the full one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from zkv.sim.history import Op


@dataclass(frozen=True, slots=True)
class LostWrite:
    key: bytes
    final: bytes | None
    allowed: tuple[bytes | None, ...]

    def __str__(self) -> str:
        shown = ", ".join(repr(v) for v in self.allowed[:6])
        more = f" (+{len(self.allowed) - 6} more)" if len(self.allowed) > 6 else ""
        return f"key {self.key!r}: final value {self.final!r}, allowed last writes: {shown}{more}"


def allowed_final_values(ops: Iterable[Op]) -> set[bytes | None]:
    """Values (None = absent) a key may hold after all of ``ops`` (one key's history)."""
    writes = [op for op in ops if op.kind != "get" and op.outcome != "fail" and _may_write(op)]
    acked_starts = [op.start for op in writes if op.outcome == "ok"]
    latest_acked_start = max(acked_starts, default=None)
    allowed: set[bytes | None] = set()
    if latest_acked_start is None:
        allowed.add(None)  # nothing acknowledged: the key may still be as it began
    for op in writes:
        superseded = (op.end is not None and latest_acked_start is not None
                      and latest_acked_start > op.end)
        if not superseded:
            allowed.add(None if op.kind == "delete" else op.value)
    return allowed


def _may_write(op: Op) -> bool:
    """Whether the op may have changed the key (an ok conditional op wrote only
    when its precondition was as required)."""
    if op.outcome != "ok" or op.kind == "put":
        return True
    return op.found is (op.kind != "create")


def find_lost_writes(ops: Iterable[Op], final: Mapping[bytes, bytes | None]) -> list[LostWrite]:
    """Keys whose final value (from ``final``) no write allows as the last one."""
    by_key: dict[bytes, list[Op]] = {}
    for op in ops:
        by_key.setdefault(op.key, []).append(op)
    lost = []
    for key in sorted(final):
        allowed = allowed_final_values(by_key.get(key, ()))
        if final[key] not in allowed:
            ordered = tuple(sorted(allowed, key=lambda v: (v is not None, v or b"")))
            lost.append(LostWrite(key, final[key], ordered))
    return lost
