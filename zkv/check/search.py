"""The search behind ``check_key``: Wing & Gong's, with Lowe's memo, pruned for registers.

Each ok op is a call and a return entry in one doubly linked list in time
order. The first return in the list belongs to the op that must be linearized
soonest; any op whose call comes before it may go next. Linearizing an op lifts
its entries out; backtracking puts them back; an empty list is a full
linearization. The memo: a (set of ops done, state) pair is explored once.

Moves are narrowed by dominance: each dropped move is no better than one kept.

* A read matching the state is taken at once and alone: it changes nothing
  and only removes a constraint.
* Unknown writes are never tried alone. One only matters if a read of its
  value comes right after it, and started unknown writes of one value are
  interchangeable; so a read not matching the state may take one with it.
  Having used fewer is never worse, so a memo entry covers every superset.
* A dead write (no op reads its value) goes just before whichever write is
  linearized next (an unknown one included), and alone only once its
  completion forces it.

The search counts steps instead of reading a clock, so a budget gives the
same verdict on every run.
"""

from __future__ import annotations

import enum
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from zkv.check.history import Op, effect_deadline

READ, WRITE, DEAD = range(3)  # an ok op's role in the search


class Verdict(enum.Enum):
    LINEARIZABLE = "linearizable"
    VIOLATION = "violation"
    UNDECIDED = "undecided"  # the step budget ran out first


@dataclass(frozen=True, slots=True)
class SearchOutcome:
    """``order`` is a witness, or else the longest valid prefix found, after
    which ``stuck`` had to take effect and none of ``candidates`` could."""

    verdict: Verdict
    order: tuple[Op, ...]
    state: bytes | None
    stuck: Op | None
    candidates: tuple[Op, ...]
    steps: int


def search(history: Sequence[Op], max_steps: int | None) -> SearchOutcome:
    """Find a linearization of one key's ops (fail and unknown-get ops are ignored)."""
    return _Search(history).run(max_steps)


def is_read(op: Op) -> bool:
    """Reads leave the state alone and require it to equal ``written(op)``."""
    return op.outcome == "ok" and (op.kind == "get" or (op.kind == "delete" and op.found is False))


def written(op: Op) -> bytes | None:
    """The value a read requires, or a write leaves; a delete's is ``None``."""
    return op.value if op.kind != "delete" else None


class _Search:
    __slots__ = (
        "entry_op",
        "is_call",
        "match",
        "nxt",
        "ops",
        "prv",
        "role",
        "time",
        "unknown",
        "value",
        "writers",
    )

    def __init__(self, history: Sequence[Op]) -> None:
        self.ops = [op for op in history if op.outcome == "ok"]
        self.unknown = [op for op in history if op.outcome == "unknown" and op.kind != "get"]
        # Unknown writes by value, earliest start first.
        self.writers: dict[bytes | None, list[tuple[float, int]]] = defaultdict(list)
        for index, op in sorted(enumerate(self.unknown), key=lambda item: item[1].start):
            self.writers[written(op)].append((op.start, index))
        self.value = [written(op) for op in self.ops]
        readers = Counter(written(op) for op in self.ops if is_read(op))
        self.role = [
            READ if is_read(op) else WRITE if readers[v] else DEAD
            for op, v in zip(self.ops, self.value)
        ]
        # Entry 0 is the list head; calls sort before returns at equal times.
        events = sorted(
            [(op.start, 0, i) for i, op in enumerate(self.ops)]
            + [(effect_deadline(op), 1, i) for i, op in enumerate(self.ops)]
        )
        size = len(events) + 1
        self.nxt = [p + 1 for p in range(size)]
        self.nxt[-1] = -1
        self.prv = [p - 1 for p in range(size)]
        self.entry_op = [-1] * size
        self.is_call = [False] * size
        self.match = [0] * size
        self.time = [0.0] * size
        placed: dict[int, int] = {}
        for pos, (time, kind, i) in enumerate(events, 1):
            self.entry_op[pos], self.is_call[pos], self.time[pos] = i, kind == 0, time
            if i in placed:
                self.match[pos], self.match[placed[i]] = placed[i], pos
            placed[i] = pos

    def run(self, max_steps: int | None) -> SearchOutcome:
        nxt, is_call, entry_op, values = self.nxt, self.is_call, self.entry_op, self.value
        bits = [1 << i for i in range(len(self.ops))]
        state: bytes | None = None
        done = used = 0  # bitmasks: ok ops linearized, unknown writes taken
        # A frame is one move: (call entries lifted, state before, unknown write or -1, forced).
        stack: list[tuple[tuple[int, ...], bytes | None, int, bool]] = []
        memo: dict[tuple[int, bytes | None], list[int]] = {}
        best: tuple[int, list[tuple[int, int]], bytes | None, int] | None = None
        steps = 0
        entry = nxt[0]
        fresh = True  # at a node not yet searched for a forced read
        while entry != -1:  # an empty list means every ok op is linearized
            steps += 1
            if max_steps is not None and steps > max_steps:
                return self._outcome(Verdict.UNDECIDED, best, steps)
            forced = self._matching_read(state) if fresh else 0
            fresh = False
            move: tuple[int, ...] | None = ()
            unknown = -1
            if forced:
                move = (forced,)
            elif not is_call[entry]:
                # An ok op's completion came before it could be linearized: a dead end.
                if best is None or done.bit_count() > best[0]:
                    best = (done.bit_count(), self._order(stack), state, entry)
            else:
                move, unknown = self._move(entry, state, used)
                if move is None:
                    entry = nxt[entry]
                    continue
            if move:
                now_done = done
                for e in move:
                    now_done |= bits[entry_op[e]]
                value = values[entry_op[move[-1]]]  # reads and writes both leave `value`
                now_used = used | (1 << unknown) if unknown >= 0 else used
                seen = memo.get((now_done, value))
                if seen is None:
                    memo[(now_done, value)] = [now_used]
                elif any(not (m & ~now_used) for m in seen):
                    if not forced:
                        entry = nxt[entry]
                        continue
                    move = ()  # the forced move is known to fail, so this node does
                else:
                    seen.append(now_used)
            if move:
                stack.append((move, state, unknown, bool(forced)))
                for e in move:
                    self._lift(e)
                state, done, used = value, now_done, now_used
                entry, fresh = nxt[0], True
                continue
            # Backtrack; when a forced move fails, the node it was forced at fails too.
            while True:
                if not stack:
                    return self._outcome(Verdict.VIOLATION, best, steps)
                move, state, unknown, was_forced = stack.pop()
                for e in reversed(move):
                    self._unlift(e)
                    done ^= bits[entry_op[e]]
                if unknown >= 0:
                    used ^= 1 << unknown
                if not was_forced:
                    break
            entry = nxt[move[-1]]
        return self._outcome(Verdict.LINEARIZABLE, (0, self._order(stack), state, -1), steps)

    def _matching_read(self, state: bytes | None) -> int:
        """A read that may go next and matches ``state`` (its call entry), or 0."""
        e = self.nxt[0]
        while self.is_call[e]:
            i = self.entry_op[e]
            if self.role[i] == READ and self.value[i] == state:
                return e
            e = self.nxt[e]
        return 0

    def _move(
        self, call: int, state: bytes | None, used: int
    ) -> tuple[tuple[int, ...] | None, int]:
        """The move that linearizes ``call``'s op next, and the unknown write it takes;
        ``None`` when that op cannot go next or need not be tried."""
        i = self.entry_op[call]
        role = self.role[i]
        if role == READ:
            if self.value[i] == state:
                return (call,), -1
            unknown = self._unknown_writer(self.value[i], used, call)
            return (self._with_dead_writes(call) if unknown >= 0 else None), unknown
        if role == DEAD and not self._is_due(call):
            return None, -1
        return self._with_dead_writes(call), -1

    def _lift(self, call: int) -> None:
        nxt, prv = self.nxt, self.prv
        for e in (call, self.match[call]):
            nxt[prv[e]] = nxt[e]
            if nxt[e] != -1:
                prv[nxt[e]] = prv[e]

    def _unlift(self, call: int) -> None:
        nxt, prv = self.nxt, self.prv
        for e in (self.match[call], call):  # the reverse of _lift
            nxt[prv[e]] = e
            if nxt[e] != -1:
                prv[nxt[e]] = e

    def _due(self, entry: int) -> int:
        """The first return at or after ``entry``: everything before it is a call."""
        while self.is_call[entry]:
            entry = self.nxt[entry]
        return entry

    def _is_due(self, call: int) -> bool:
        """Must this op be linearized before any op not yet linearized completes?"""
        return self.entry_op[self._due(call)] == self.entry_op[call]

    def _with_dead_writes(self, call: int) -> tuple[int, ...]:
        """A move that writes, then ``call``: first every dead write that may go now."""
        dead = []
        e = self.nxt[0]
        while self.is_call[e]:
            if e != call and self.role[self.entry_op[e]] == DEAD:
                dead.append(e)
            e = self.nxt[e]
        return (*dead, call)

    def _unknown_writer(self, value: bytes | None, used: int, entry: int) -> int:
        """An unused unknown write of ``value`` that may take effect now, or -1."""
        deadline = self.time[self._due(entry)]
        for start, index in self.writers.get(value, ()):
            if start > deadline:
                break
            if not used >> index & 1:
                return index
        return -1

    def _order(
        self, stack: list[tuple[tuple[int, ...], bytes | None, int, bool]]
    ) -> list[tuple[int, int]]:
        """The linearized ops as (ok op, unknown write before it or -1)."""
        order: list[tuple[int, int]] = []
        for move, _, unknown, _ in stack:
            order.extend((self.entry_op[e], -1) for e in move[:-1])
            order.append((self.entry_op[move[-1]], unknown))
        return order

    def _outcome(
        self,
        verdict: Verdict,
        best: tuple[int, list[tuple[int, int]], bytes | None, int] | None,
        steps: int,
    ) -> SearchOutcome:
        if best is None:  # the budget ran out before the first dead end
            return SearchOutcome(verdict, (), None, None, (), steps)
        _, order, state, stuck = best
        ops: list[Op] = []
        for i, unknown in order:
            if unknown >= 0:
                ops.append(self.unknown[unknown])
            ops.append(self.ops[i])
        if stuck < 0:
            return SearchOutcome(verdict, tuple(ops), state, None, (), steps)
        taken = {i for i, _ in order}
        candidates = tuple(
            self.ops[self.entry_op[pos]]
            for pos in range(1, stuck)
            if self.is_call[pos] and self.entry_op[pos] not in taken
        )
        return SearchOutcome(
            verdict, tuple(ops), state, self.ops[self.entry_op[stuck]], candidates, steps
        )
