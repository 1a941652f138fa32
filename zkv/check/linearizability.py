"""Is a history of register ops linearizable? One verdict per key, with the reason.

Each key is an independent register, and linearizability is compositional: a
history is linearizable iff every key's sub-history is. So each key is checked
alone, for an order of its ops that respects real time (an op that completed
before another started comes first) and the register's rules (the full table
is in ``zkv.check.history``):

* put: state := value.  get: returns the state (``None`` = absent).
* delete, found: requires the key present, then state := ``None`` (the store
  decides it by consensus, so it is a conditional write, not a blind one).
* delete, not found: a read that saw ``None``.
* create, created: requires absent, then state := value; exists: a read
  that saw the key present.
* update, updated: requires present, then state := value; not found: a read
  that saw ``None``.
* cas, found: requires state == expected, then state := value (``None``
  deletes); not found: a read that saw anything but ``expected``.
* fail: certainly had no effect, so it is left out; so is an unknown get.
* unknown put/delete/create/update/cas: may take effect at most once, at any
  time after its start, or never; a conditional one only where its
  condition holds.

Ops that touch in time (one ends as another starts) count as concurrent.
``zkv.check.search`` has the search itself.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from zkv.check.history import (
    EQ,
    Op,
    describe,
    effect,
    effect_deadline,
    format_history,
    show_value,
)
from zkv.check.search import Verdict, search, written

DEFAULT_MAX_STEPS = 1_000_000
"""Search steps per key before giving up with ``UNDECIDED`` (about a second)."""


@dataclass(frozen=True, slots=True)
class KeyResult:
    """The verdict on one key, with what a person needs to see why.

    ``linearization`` is a witness order when linearizable (unknown writes that
    never took effect are absent), otherwise the longest valid prefix found.
    ``stuck`` is an op that had to take effect after that prefix (its
    completion had come) but could not; ``blocked`` lists every op that could
    have gone next instead, each with the reason it could not.
    """

    key: bytes
    verdict: Verdict
    history: tuple[Op, ...]
    linearization: tuple[Op, ...]
    state: bytes | None
    stuck: Op | None
    blocked: tuple[tuple[Op, str], ...]
    steps: int
    note: str = ""  # how the prefix was found, when not the plain way

    @property
    def linearizable(self) -> bool:
        return self.verdict is Verdict.LINEARIZABLE

    def explain(self, context: int = 10) -> str:
        """The verdict; for a failure also the whole history, the last ``context``
        ops of the longest valid prefix, and why nothing could follow them."""
        head = (
            f"key {self.key!r}: {self.verdict.value} ({len(self.history)} ops, {self.steps} steps)"
        )
        if self.linearizable:
            return head
        lines = [head, "history:", _indent(format_history(self.history))]
        prefix = self.linearization
        lines.append(
            f"longest linearizable prefix: {len(prefix)} ops, "
            f"leaving the register {show_value(self.state)}"
        )
        if self.note:
            lines.append(f"  ({self.note})")
        shown = prefix[max(0, len(prefix) - context) :]
        if len(shown) < len(prefix):
            lines.append(f"  ... {len(prefix) - len(shown)} earlier ops")
        for number, op in enumerate(shown, len(prefix) - len(shown) + 1):
            lines.append(f"  {number}. {describe(op)}")
        if self.stuck is not None:
            lines.append(
                f"then {describe(self.stuck)} had to take effect by "
                f"{self.stuck.end:.3f}, but no op that could go next can:"
            )
            lines.extend(f"  {describe(op)}: {reason}" for op, reason in self.blocked)
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class HistoryResult:
    """Per-key verdicts for a whole history."""

    per_key: dict[bytes, KeyResult]

    @property
    def ok(self) -> bool:
        """True only if every key is proven linearizable (undecided is not ok)."""
        return all(result.linearizable for result in self.per_key.values())

    @property
    def violations(self) -> tuple[KeyResult, ...]:
        return self._with(Verdict.VIOLATION)

    @property
    def undecided(self) -> tuple[KeyResult, ...]:
        return self._with(Verdict.UNDECIDED)

    def smallest_violation(self) -> KeyResult | None:
        """The failing key with the fewest ops: the easiest counterexample to read."""
        return min(self.violations, key=lambda r: (len(r.history), r.key), default=None)

    def summary(self) -> str:
        """Counts per verdict, then the smallest violation explained, if any."""
        lines = [
            f"{len(self.per_key)} keys: "
            + ", ".join(f"{len(self._with(v))} {v.value}" for v in Verdict)
        ]
        lines += [f"undecided: key {r.key!r} ({len(r.history)} ops)" for r in self.undecided]
        smallest = self.smallest_violation()
        if smallest is not None:
            lines += ["smallest violation:", smallest.explain()]
        return "\n".join(lines)

    def _with(self, verdict: Verdict) -> tuple[KeyResult, ...]:
        return tuple(r for r in self.per_key.values() if r.verdict is verdict)


def check_history(ops: Iterable[Op], *, max_steps: int | None = DEFAULT_MAX_STEPS) -> HistoryResult:
    """Check each key's ops independently; ``max_steps`` applies per key."""
    by_key: dict[bytes, list[Op]] = defaultdict(list)
    for op in ops:
        by_key[op.key].append(op)
    return HistoryResult(
        {key: check_key(by_key[key], max_steps=max_steps) for key in sorted(by_key)}
    )


def check_key(ops: Iterable[Op], *, max_steps: int | None = DEFAULT_MAX_STEPS) -> KeyResult:
    """Check the ops of one key; ``max_steps=None`` searches without limit."""
    history = tuple(sorted(ops, key=lambda op: op.start))
    keys = {op.key for op in history}
    if len(keys) > 1:
        raise ValueError("check_key takes the ops of a single key; use check_history")
    found = search(history, max_steps)
    blocked = tuple((op, _why_blocked(op, found.state, history)) for op in found.candidates)
    return KeyResult(
        next(iter(keys), b""),
        found.verdict,
        history,
        found.order,
        found.state,
        found.stuck,
        blocked,
        found.steps,
        found.note,
    )


def _why_blocked(op: Op, state: bytes | None, history: tuple[Op, ...]) -> str:
    e = effect(op)
    assert e is not None  # candidates are ok ops
    if e.holds(state):
        return "could take effect here, but no order continuing from it works"
    holds = f"but the register holds {show_value(state)}"
    if e.writes:
        return f"requires {e.requirement()}, {holds}"
    saw = f"returned {show_value(op.value)}" if op.kind == "get" else f"reported {_answer(op)}"
    return f"{saw}, {holds}" + (_why_unreadable(op, history) if e.test == EQ else "")


def _answer(op: Op) -> str:
    """What a read other than a get was told, in words."""
    if op.kind == "cas":
        return f"{show_value(op.expected)} {'found' if op.found else 'not found'}"
    return "exists" if op.kind == "create" else "not found"


def _why_unreadable(read: Op, history: tuple[Op, ...]) -> str:
    """A note on why no order at all lets ``read`` see its value, when one is easy to
    state: the value was never written in time, or every write of it was overwritten
    before the read began. Empty when the reason is subtler."""
    value = written(read)
    attempts = [o for o in history if _would_write(o) == (value,)]
    writers = [o for o in attempts if o.outcome != "fail" and o.start <= effect_deadline(read)]
    if value is not None and not writers:
        if not attempts:
            return " (no op ever wrote that value)"
        if all(o.outcome == "fail" for o in attempts):
            kinds = {o.kind for o in attempts}
            return (
                f" (only a failed {kinds.pop() if len(kinds) == 1 else 'write'} wrote that value)"
            )
        return " (it was written only after this read completed)"
    if any(o.outcome == "unknown" for o in writers):
        return ""  # it may take effect at any later time
    overwrites = [
        o
        for o in history
        if o.outcome == "ok"
        and _would_write(o) not in ((), (value,))
        and effect_deadline(o) < read.start
    ]
    last = max(writers, key=effect_deadline, default=None)  # None: the initial absent state
    latest = -math.inf if last is None else effect_deadline(last)
    overwrite = max(overwrites, key=lambda o: o.start, default=None)
    if overwrite is None or overwrite.start <= latest:
        return ""
    was = "the initial absent state" if last is None else describe(last)
    if len(writers) + (value is None) == 1:
        return f" ({was} was overwritten by {describe(overwrite)} before this read began)"
    return (
        " (every write of it was overwritten before this read began; "
        f"the latest, {was}, by {describe(overwrite)})"
    )


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


def _would_write(op: Op) -> tuple[bytes | None, ...]:
    """``(value,)`` for an op that writes ``value`` if it takes effect (a failed op
    included, as if it had), ``()`` for one that never writes."""
    if op.outcome == "fail":
        op = dataclasses.replace(op, outcome="unknown", end=None)
    e = effect(op)
    return (e.value,) if e is not None and e.writes else ()
