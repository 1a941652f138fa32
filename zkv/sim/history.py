"""The history of client operations, in the form the linearizability checker reads.

``Op`` has exactly the fields of ``zkv.check.Op``. The mapping from a client's
result to an outcome errs on the side of "unknown": an operation is ``fail``
only when it certainly had no effect.

- get: ``ok`` with the value read; a ``not_found`` reply is an ``ok`` read of
  "absent" (value None); anything else is ``fail`` (a read changes nothing).
- put: ``ok`` on ok; ``fail`` on invalid (rejected before any replica saw it);
  anything else (unavailable, timeout, ...) is ``unknown``: the write may have
  reached a replica and may surface later.
- delete: ``ok`` with found=True on ok, ``ok`` with found=False on not_found,
  ``fail`` on invalid, ``unknown`` otherwise.
- An ``unknown`` operation has ``end=None``: it may take effect at any later time.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, fields

from zkv.sim.client import ClientResult

CHECKED_KINDS = ("get", "put", "delete")


@dataclass(frozen=True, slots=True)
class Op:
    process: int
    kind: str  # get | put | delete
    key: bytes
    value: bytes | None  # put: the value written; get (ok): the value read, None = absent
    outcome: str  # ok | fail | unknown
    start: float
    end: float | None  # None: the operation may take effect at any time after start
    found: bool | None = None  # delete (ok): whether the key existed


OP_FIELDS = tuple(f.name for f in fields(Op))


def op_from_result(result: ClientResult) -> Op | None:
    """The history entry for a client result; None for operations the checker ignores."""
    kind, status = result.op, result.status
    found: bool | None = None
    value: bytes | None = None
    if kind == "get":
        if status == "ok":
            outcome, value = "ok", result.value
        elif status == "not_found":
            outcome = "ok"
        else:
            outcome = "fail"
    elif kind == "put":
        value = result.sent_value
        outcome = "ok" if status == "ok" else "fail" if status == "invalid" else "unknown"
    elif kind == "delete":
        if status in ("ok", "not_found"):
            outcome, found = "ok", status == "ok"
        else:
            outcome = "fail" if status == "invalid" else "unknown"
    else:
        return None
    end = None if outcome == "unknown" else result.end
    return Op(result.process, kind, result.key, value, outcome, result.start, end, found)


class History:
    """Every recorded operation, in completion order."""

    def __init__(self) -> None:
        self.ops: list[Op] = []
        self.results: list[ClientResult] = []  # every client result, create/update included

    def record(self, result: ClientResult) -> Op | None:
        self.results.append(result)
        op = op_from_result(result)
        if op is not None:
            self.ops.append(op)
        return op

    def for_key(self, key: bytes) -> list[Op]:
        return [op for op in self.ops if op.key == key]

    def counts(self) -> dict[str, dict[str, int]]:
        """kind -> outcome -> number of operations."""
        table: dict[str, Counter] = {}
        for op in self.ops:
            table.setdefault(op.kind, Counter())[op.outcome] += 1
        return {kind: dict(sorted(c.items())) for kind, c in sorted(table.items())}

    def statuses(self) -> dict[str, int]:
        """Client-visible status -> count, over every result."""
        return dict(sorted(Counter(r.status for r in self.results).items()))

    def for_checker(self) -> list:
        """The ops as ``zkv.check.Op`` when that module provides it, else as local ``Op``."""
        try:
            from zkv.check import Op as CheckOp  # noqa: PLC0415 - written alongside the sim
        except ImportError:
            return list(self.ops)
        return [CheckOp(**{name: getattr(op, name) for name in OP_FIELDS}) for op in self.ops]

    def __iter__(self) -> Iterator[Op]:
        return iter(self.ops)

    def __len__(self) -> int:
        return len(self.ops)
