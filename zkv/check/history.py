"""What a client saw: one ``Op`` per request, as the simulator and chaos tool record it.

An op is the client's view only: when it was invoked, when (if ever) it
completed, and what it was told. The checker decides whether some single
order of the ops explains all of it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

KINDS = ("get", "put", "delete")
OUTCOMES = ("ok", "fail", "unknown")


@dataclass(frozen=True, slots=True)
class Op:
    """One client request on one key.

    ``outcome``: ``ok`` (completed as reported), ``fail`` (certainly had no
    effect) or ``unknown`` (timed out: may take effect at any time after
    ``start``, or never). ``value`` is the value written by a put, or read by
    an ok get (``None`` = key absent). ``found`` is set for an ok delete.
    """

    process: int
    kind: str
    key: bytes
    value: bytes | None
    outcome: str
    start: float
    end: float | None
    found: bool | None = None

    def __post_init__(self) -> None:
        # Reject malformed ops where they are made, not deep inside a search.
        if self.kind not in KINDS:
            raise ValueError(f"op kind must be one of {KINDS}, not {self.kind!r}")
        if self.outcome not in OUTCOMES:
            raise ValueError(f"op outcome must be one of {OUTCOMES}, not {self.outcome!r}")
        if self.kind == "put" and not isinstance(self.value, bytes):
            raise ValueError("a put must carry the bytes it writes")
        if self.outcome == "ok":
            if self.end is None:
                raise ValueError("an ok op must have an end time")
            if self.end < self.start:
                raise ValueError(f"op ends ({self.end}) before it starts ({self.start})")


def effect_deadline(op: Op) -> float:
    """The time by which the op's effect, if any, has certainly happened: its end,
    or never (infinity) for an op whose outcome is unknown."""
    return math.inf if op.end is None or op.outcome == "unknown" else op.end


def describe(op: Op) -> str:
    """One line a person can read, e.g. ``p3 get -> b'v1'  ok  [1.500, 2.000]``."""
    if op.kind == "put":
        what = f"put {op.value!r}"
    elif op.kind == "get":
        what = "get" if op.outcome != "ok" else f"get -> {show_value(op.value)}"
    elif op.outcome == "ok" and op.found is not None:
        what = "delete -> " + ("found" if op.found else "not found")
    else:
        what = "delete"
    end = "?" if op.outcome == "unknown" or op.end is None else f"{op.end:.3f}"
    return f"p{op.process} {what}  {op.outcome}  [{op.start:.3f}, {end}]"


def format_history(ops: Iterable[Op]) -> str:
    """The ops in invocation order, one per line, for printing a failing case."""
    return "\n".join(describe(op) for op in sorted(ops, key=lambda o: o.start))


def show_value(value: bytes | None) -> str:
    """A register state as text: ``absent`` or the bytes repr."""
    return "absent" if value is None else repr(value)
