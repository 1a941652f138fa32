"""The history of client operations, in the form the linearizability checker reads.

``Op`` has exactly the fields of ``zkv.check.Op``. The mapping from a client's
result to an outcome errs on the side of "unknown": an operation is ``fail``
only when it certainly had no effect.

- get: ``ok`` with the value read; a ``not_found`` reply is an ``ok`` read of
  "absent" (value None); anything else is ``fail`` (a read changes nothing).
- writes (put, delete, create, update, cas): ``fail`` on ``invalid`` and on
  ``unavailable``, which a coordinator answers only when the request certainly
  changed nothing (the checker holds it to that); ``unknown`` on ``unknown``
  and on the client's own timeout: the write may have reached a replica and
  may surface later.
- conditional writes: ``ok`` with ``found`` saying whether the precondition was
  found (the key present for delete, update and create; the expected value for
  cas): delete ok/not_found, update ok/not_found, create exists/ok, cas
  ok/condition_failed.
- An ``unknown`` operation has ``end=None``: it may take effect at any time after start.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, fields

from zkv.sim.client import ClientResult

CHECKED_KINDS = ("get", "put", "delete", "create", "update", "cas")
# status -> found, for each conditional kind's two definite answers
_FOUND = {
    "delete": {"ok": True, "not_found": False},
    "update": {"ok": True, "not_found": False},
    "create": {"ok": False, "exists": True},
    "cas": {"ok": True, "condition_failed": False},
}


@dataclass(frozen=True, slots=True)
class Op:
    process: int
    kind: str  # get | put | delete | create | update | cas
    key: bytes
    value: bytes | None  # a write's value (None: a cas that deletes); a get's value read
    outcome: str  # ok | fail | unknown
    start: float
    end: float | None  # None: the operation may take effect at any time after start
    found: bool | None = None  # conditional ops (ok): whether the precondition was found
    expected: bytes | None = None  # cas: the value the key had to hold (None: absent)


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
    elif kind in CHECKED_KINDS:
        value = result.sent_value
        answers = _FOUND.get(kind, {"ok": None})
        if status in answers:
            outcome, found = "ok", answers[status]
        else:
            # A node's "unavailable" comes before any replica could apply the write, and
            # a refused request never ran; only a timeout (or "unknown") may have landed.
            outcome = "fail" if status in ("invalid", "unavailable", "refused") else "unknown"
    else:
        return None
    end = None if outcome == "unknown" else result.end
    return Op(result.process, kind, result.key, value, outcome, result.start, end, found,
              result.expected if kind == "cas" else None)


class History:
    """Every recorded operation, in completion order."""

    def __init__(self) -> None:
        self.ops: list[Op] = []
        self.results: list[ClientResult] = []  # every client result

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
            from zkv.check import Op as CheckOp  # written alongside the sim
        except ImportError:
            return list(self.ops)
        return [CheckOp(**{name: getattr(op, name) for name in OP_FIELDS}) for op in self.ops]

    def __iter__(self) -> Iterator[Op]:
        return iter(self.ops)

    def __len__(self) -> int:
        return len(self.ops)
