"""What a client saw: one ``Op`` per request, as the simulator and chaos tool record it.

An op is the client's view only: when it was invoked, when (if ever) it
completed, and what it was told. The checker decides whether some single
order of the ops explains all of it.

The register model. Each key holds one value or nothing (``None``, absent).
An op in the order may first *require* something of the state, then may
*write* the state; ``found`` on an ok conditional op says whether its
precondition held:

=======================  ===========================  ===========================
op (``value``)           ok, found=True               ok, found=False
=======================  ===========================  ===========================
get (value read)         requires state == value (``found`` unused; None = absent)
put (new bytes)          state := value, unconditionally (``found`` unused)
delete                   requires present; := absent  a read: requires absent
create (new bytes)       a read: requires present     requires absent; := value
                         (the reply "exists")
update (new bytes)       requires present; := value   a read: requires absent
                                                      (the reply "not_found")
cas (new bytes, or None  requires state == expected;  a read: requires
to delete; ``expected``  := value                     state != expected
bytes or None = absent)
=======================  ===========================  ===========================

A delete that found the key is a conditional write, like the others (the
store decides it by consensus): it was checked as an unconditional delete
before the store had conditional ops.

Outcomes: ``ok`` (completed as reported), ``fail`` (certainly had no effect:
left out) or ``unknown`` (timed out). An unknown write (put, delete, create,
update, cas) may take effect at most once, at any time after its start, or
never; an unknown conditional op takes effect only at a point where its
condition holds (it then applies its write; it has no read constraint of its
own). An unknown get is left out.

``effect`` turns an op into this model (``Effect``); the search reads nothing
else of an op but its times.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

KINDS = ("get", "put", "delete", "create", "update", "cas")
OUTCOMES = ("ok", "fail", "unknown")

ANY, EQ, NE = "any", "eq", "ne"  # what an effect requires of the state


@dataclass(frozen=True, slots=True)
class Op:
    """One client request on one key.

    ``outcome``: ``ok`` (completed as reported), ``fail`` (certainly had no
    effect) or ``unknown`` (timed out: may take effect at any time after
    ``start``, or never). ``value`` is the value written by a put, create,
    update or cas (a cas's may be ``None``: it then deletes), or read by an ok
    get (``None`` = key absent). ``found`` is set for an ok delete, create,
    update or cas: whether its precondition held. ``expected`` is the value a
    cas requires (``None`` = absent), and is ``None`` for every other kind.
    """

    process: int
    kind: str
    key: bytes
    value: bytes | None
    outcome: str
    start: float
    end: float | None
    found: bool | None = None
    expected: bytes | None = None

    def __post_init__(self) -> None:
        # Reject malformed ops where they are made, not deep inside a search.
        if self.kind not in KINDS:
            raise ValueError(f"op kind must be one of {KINDS}, not {self.kind!r}")
        if self.outcome not in OUTCOMES:
            raise ValueError(f"op outcome must be one of {OUTCOMES}, not {self.outcome!r}")
        if self.kind in ("put", "create", "update") and not isinstance(self.value, bytes):
            raise ValueError(f"a {self.kind} must carry the bytes it writes")
        if self.value is not None and not isinstance(self.value, bytes):
            raise ValueError("an op's value must be bytes or None")
        if self.kind == "cas":
            if self.expected is not None and not isinstance(self.expected, bytes):
                raise ValueError("a cas's expected value must be bytes or None (absent)")
        elif self.expected is not None:
            raise ValueError(f"only a cas has an expected value, not a {self.kind}")
        if self.found is not None and not isinstance(self.found, bool):
            raise ValueError("found must be True, False or None")
        if self.outcome == "ok":
            if self.end is None:
                raise ValueError("an ok op must have an end time")
            if self.end < self.start:
                raise ValueError(f"op ends ({self.end}) before it starts ({self.start})")
            if self.kind not in ("get", "put") and self.found is None:
                raise ValueError(f"an ok {self.kind} must say whether it found its precondition")


@dataclass(frozen=True, slots=True)
class Effect:
    """An op as the register model sees it: it requires the state to be anything
    (``ANY``), equal to ``arg`` (``EQ``) or not equal to it (``NE``); then, if it
    ``writes``, the state becomes ``value``. A read (``writes`` false) leaves the
    state alone; an ``EQ`` read's ``value`` is the ``arg`` it requires."""

    test: str
    arg: bytes | None
    writes: bool
    value: bytes | None

    def holds(self, state: bytes | None) -> bool:
        """Does the op's requirement hold on ``state``?"""
        if self.test == ANY:
            return True
        return (state == self.arg) == (self.test == EQ)

    def after(self, state: bytes | None) -> bytes | None:
        """The state after the op, when it holds on ``state``."""
        return self.value if self.writes else state

    def requirement(self) -> str:
        """The requirement in words, e.g. ``the key absent``."""
        if self.test == ANY:
            return "nothing"
        if self.arg is None:
            return "the key absent" if self.test == EQ else "the key present"
        return f"{'' if self.test == EQ else 'anything but '}{self.arg!r}"


def _read(test: str, arg: bytes | None) -> Effect:
    return Effect(test, arg, False, arg if test == EQ else None)


def effect(op: Op) -> Effect | None:
    """The op in the register model, or ``None`` when it is left out: a failed op,
    an unknown get, and an unknown write that could change nothing (a cas of a
    value to itself)."""
    if op.outcome == "fail" or (op.outcome == "unknown" and op.kind == "get"):
        return None
    ok = op.outcome == "ok"
    if op.kind == "get":
        return _read(EQ, op.value)
    if op.kind == "put":
        return Effect(ANY, None, True, op.value)
    if op.kind == "delete":
        if not ok:
            # Where the key is absent a delete changes nothing, so an unknown one
            # is as well taken for unconditional: the same orders explain a history.
            return Effect(ANY, None, True, None)
        return Effect(NE, None, True, None) if op.found else _read(EQ, None)
    if op.kind == "create":
        if ok and op.found:
            return _read(NE, None)  # "exists"
        return Effect(EQ, None, True, op.value)
    if op.kind == "update":
        if ok and not op.found:
            return _read(EQ, None)  # "not_found"
        return Effect(NE, None, True, op.value)
    # cas
    if ok and not op.found:
        return _read(NE, op.expected)
    if op.value == op.expected:  # swaps a value for itself: only a read
        return _read(EQ, op.expected) if ok else None
    return Effect(EQ, op.expected, True, op.value)


def effect_deadline(op: Op) -> float:
    """The time by which the op's effect, if any, has certainly happened: its end,
    or never (infinity) for an op whose outcome is unknown."""
    return math.inf if op.end is None or op.outcome == "unknown" else op.end


def describe(op: Op) -> str:
    """One line a person can read, e.g. ``p3 get -> b'v1'  ok  [1.500, 2.000]`` or
    ``p3 cas b'1' -> b'2' found  ok  [1.500, 2.000]``."""
    answered = op.outcome == "ok" and op.found is not None
    if op.kind == "put":
        what = f"put {op.value!r}"
    elif op.kind == "get":
        what = "get" if op.outcome != "ok" else f"get -> {show_value(op.value)}"
    elif op.kind == "delete":
        what = "delete" + (" -> " + ("found" if op.found else "not found") if answered else "")
    elif op.kind == "create":
        what = f"create {op.value!r}" + (
            " -> " + ("exists" if op.found else "created") if answered else ""
        )
    elif op.kind == "update":
        what = f"update {op.value!r}" + (
            " -> " + ("updated" if op.found else "not found") if answered else ""
        )
    else:
        what = f"cas {show_value(op.expected)} -> {show_value(op.value)}" + (
            " " + ("found" if op.found else "not found") if answered else ""
        )
    end = "?" if op.outcome == "unknown" or op.end is None else f"{op.end:.3f}"
    return f"p{op.process} {what}  {op.outcome}  [{op.start:.3f}, {end}]"


def format_history(ops: Iterable[Op]) -> str:
    """The ops in invocation order, one per line, for printing a failing case."""
    return "\n".join(describe(op) for op in sorted(ops, key=lambda o: o.start))


def show_value(value: bytes | None) -> str:
    """A register state as text: ``absent`` or the bytes repr."""
    return "absent" if value is None else repr(value)
