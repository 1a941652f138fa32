"""The search behind ``check_key``: Wing & Gong's, with Lowe's memo.

Each ok op is a call and a return entry in one doubly linked list in time
order. The first return in the list belongs to the op that must be linearized
soonest; any op whose call comes before it may go next. Linearizing an op lifts
its entries out; backtracking puts them back; an empty list is a full
linearization. The memo: a (set of ops done, state) pair is explored once.

Two searches share that frame. The model is ``zkv.check.history``'s.

**Registers** (``_RegisterSearch``): when every write of the key is blind (a
put; a delete whose outcome is unknown) and every ok op that is not a write is
a read of one value (a get; a delete or an update that found the key
absent; a cas that swapped a value for itself). Moves are narrowed by
dominance: each dropped move is no better than one kept.

* A read matching the state is taken at once and alone: it changes nothing
  and only removes a constraint.
* Unknown writes are never tried alone. One only matters if a read of its
  value comes right after it, and started unknown writes of one value are
  interchangeable; so a read not matching the state may take one with it.
  Having used fewer is never worse, so a memo entry covers every superset.
* A dead write (no op reads its value) goes just before whichever write is
  linearized next (an unknown one included), and alone only once its
  completion forces it.

These assume blind writes: with a conditional write (a read-modify-write) in
the history, a "dead" value can still decide whether a later op's condition
holds, and an unknown write can matter to the op after it without being read.

**Any other key** (``_GeneralSearch``): the plain search over (ops done,
state, unknown writes used), with only prunings that hold for every op of the
model (the arguments are at the class). Before it, as a cheap pre-check, the
register search runs on the history with every condition dropped: a violation
even then is a violation (see ``search``).

The searches count steps instead of reading a clock, so a budget gives the
same verdict on every run.
"""

from __future__ import annotations

import dataclasses
import enum
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from zkv.check.history import ANY, EQ, NE, Effect, Op, effect, effect_deadline

READ, WRITE, DEAD = range(3)  # an ok op's role in the register search


class Verdict(enum.Enum):
    LINEARIZABLE = "linearizable"
    VIOLATION = "violation"
    UNDECIDED = "undecided"  # the step budget ran out first


@dataclass(frozen=True, slots=True)
class SearchOutcome:
    """``order`` is a witness, or else the longest valid prefix found, after
    which ``stuck`` had to take effect and none of ``candidates`` could.
    ``state`` is the register after ``order``. ``note`` says how the prefix was
    found when that is not the plain way (empty otherwise)."""

    verdict: Verdict
    order: tuple[Op, ...]
    state: bytes | None
    stuck: Op | None
    candidates: tuple[Op, ...]
    steps: int
    note: str = ""


RELAXED_SHARE = 4
"""A key with conditional ops first gets 1/RELAXED_SHARE of its step budget for
the relaxed pre-check (see ``search``)."""

RELAXED_NOTE = (
    "no order works even with every conditional write taken for an unconditional one "
    "and every read of 'present' or 'anything but' left out; this prefix was found "
    "that way, so the conditions of the ops in it may not hold (the full search ran "
    "out of steps before it could give a prefix of its own)"
)


def search(history: Sequence[Op], max_steps: int | None) -> SearchOutcome:
    """Find a linearization of one key's ops (ops the model leaves out are ignored).

    A key of blind writes and reads of values gets the register search. Any
    other key first gets a cheap pre-check: the register search on the
    history *relaxed* (``relaxed_effect``), which every linearization of the
    real history also satisfies; so if the relaxed history has none, neither
    has the real one. Then the general search decides (a violation the
    pre-check found stands even if it runs out of steps; it only gives a
    prefix faithful to the conditions when it finishes). All steps count
    against one budget, so the verdict is the same on every run.
    """
    if is_register(history):
        return _RegisterSearch(history).run(max_steps)
    share = None if max_steps is None else max_steps // RELAXED_SHARE
    relaxed = _RegisterSearch(history, relaxed_effect).run(share)
    left = None if max_steps is None else max_steps - relaxed.steps
    full = _GeneralSearch(history).run(left)
    steps = relaxed.steps + full.steps
    if relaxed.verdict is Verdict.VIOLATION:
        assert full.verdict is not Verdict.LINEARIZABLE, "the relaxed history allows more"
        if full.verdict is Verdict.UNDECIDED:
            return dataclasses.replace(relaxed, steps=steps, note=RELAXED_NOTE)
    return dataclasses.replace(full, steps=steps)


def relaxed_effect(op: Op) -> Effect | None:
    """The op with its condition dropped: a conditional write becomes a blind one,
    and a read that is not of one value (``NE``) is left out."""
    e = effect(op)
    if e is None or (not e.writes and e.test != EQ):
        return None
    return Effect(ANY, None, True, e.value) if e.writes else e


def is_register(history: Sequence[Op]) -> bool:
    """Do the register search's prunings apply: only blind writes and reads of a value?"""
    for op in history:
        e = effect(op)
        if e is not None and e.test != (ANY if e.writes else EQ):
            return False
    return True


def written(op: Op) -> bytes | None:
    """The value a write leaves, or an equality read requires; a delete's is ``None``."""
    e = effect(op)
    return None if e is None else e.value


class _Timeline:
    """The ok ops as call and return entries in one doubly linked list."""

    __slots__ = ("entry_op", "is_call", "match", "nxt", "prv", "time")

    def __init__(self, ops: Sequence[Op]) -> None:
        # Entry 0 is the list head; calls sort before returns at equal times.
        events = sorted(
            [(op.start, 0, i) for i, op in enumerate(ops)]
            + [(effect_deadline(op), 1, i) for i, op in enumerate(ops)]
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

    def _candidates(self, stuck: int, taken: set[int]) -> list[int]:
        """The ok ops (indexes) whose calls come before entry ``stuck``, not in ``taken``."""
        return [
            self.entry_op[pos]
            for pos in range(1, stuck)
            if self.is_call[pos] and self.entry_op[pos] not in taken
        ]


class _RegisterSearch(_Timeline):
    __slots__ = ("ops", "role", "unknown", "value", "writers")

    def __init__(
        self, history: Sequence[Op], effect_of: Callable[[Op], Effect | None] = effect
    ) -> None:
        # ``effect_of`` gives every op a blind write or a read of one value, or None.
        ok = [(op, e) for op in history if op.outcome == "ok" for e in [effect_of(op)] if e]
        unknown = [
            (op, e) for op in history if op.outcome == "unknown" for e in [effect_of(op)] if e
        ]
        self.ops = [op for op, _ in ok]
        self.unknown = [op for op, _ in unknown]
        super().__init__(self.ops)
        # Unknown writes by value, earliest start first.
        self.writers: dict[bytes | None, list[tuple[float, int]]] = defaultdict(list)
        for index, (op, e) in sorted(enumerate(unknown), key=lambda item: item[1][0].start):
            self.writers[e.value].append((op.start, index))
        self.value = [e.value for _, e in ok]
        readers = Counter(e.value for _, e in ok if not e.writes)
        self.role = [READ if not e.writes else WRITE if readers[e.value] else DEAD for _, e in ok]

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


_ANY, _EQ, _NE = range(3)  # effect tests, as small ints for the general search
_TESTS = {ANY: _ANY, EQ: _EQ, NE: _NE}
_OTHER = -1  # the code of every value that no op's test names

# A frame of the general search is one move: (ok calls lifted, state before,
# unknown class taken or -1, forced, and the node's moves and the index in them).
_Frame = tuple[tuple[int, ...], int, int, bool, list[int], int]


class _GeneralSearch(_Timeline):
    """Wing & Gong's search with Lowe's memo for any op of the model.

    A node is (ok ops done, state, unknown writes used). A move linearizes ok
    ops, or lets one unknown write take effect. Only the prunings below are
    used; each keeps, from any node that has a linearization (a witness), a
    move into a node that has one too, with a shortest witness shorter than
    the node's.

    * Values. A value that no op's test names (written, never required) is
      coded as one value, ``_OTHER``: every test answers alike on all of them,
      so the same orders hold either way (``state`` and ``order`` in the
      outcome are the real ones, replayed from the ops).
    * Reads. Every read (an ok op that does not write) that may go next and
      whose requirement holds on the state goes at once, all in one move.
      Given a witness, move those reads to its front: each sees the state it
      requires; the others see the states they saw, as no write moved; a read
      only moves ahead of ops, and no op left completed before it started (it
      could already go next), so real time is kept. (Not so for a write that
      would leave the state as it is: where the witness has it, it may be the
      write that makes the state what it is.)
    * Twin writes. Of the ok writes that may go next and have the same effect
      (test, argument and value written, ``_OTHER`` included), only the one
      that completes first is tried. Given a witness starting with another
      one, W2, swap it with that one, W1: the states are the same; W1 may go
      first; and no op X between them had to follow W2 (X starting after
      W2 completed would start after W1 did, yet X precedes W1 in the witness).
    * Unknown writes. A witness can be rewritten so that each unknown write U
      in it is followed at once by an op X (ok, or another unknown write)
      whose test fails on the state before U and holds after it. If U is
      last, drop it; if X's test holds before U too, swap them when X is a
      read, or drop U when X writes (X overwrites whatever U wrote). No ok op
      moves behind U (an unknown op never completes, so nothing must follow
      it) and U only moves later; each step drops an unknown write or moves
      one later, so the rewriting ends. So U is tried only when its condition
      holds, it changes the state, and an ok op that may go next, or any
      unknown write (free or not: a weaker filter is still sound), needs U's
      value: a failing ``EQ v`` wants exactly ``v``; a failing ``NE s`` (s
      the state) wants anything else. Unknown writes with the same effect are
      interchangeable, and once one may take effect it always may (its start
      must precede the first return in the list, and returns only leave the
      list), so only the earliest-started free one of such a class is tried:
      the ones used are always a prefix of their class.
    * Memo. A node is dominated by one seen before with the same ops done and
      state and a subset of the unknown writes used (an unknown write need
      never take effect, so more left is never worse). Were the search to end
      with a violation although the start has a witness: of the nodes it
      entered that have one, take one with the most ops done and then the
      shortest shortest witness. A move kept above leads to a node with more
      ops done, or as many and a shorter witness: it was entered (impossible)
      or dominated, and the dominating node, entered, has as many ops done
      and a witness no longer (impossible too).
    """

    __slots__ = (
        "any_classes",
        "arg",
        "by_value",
        "cls_members",
        "cls_value",
        "deadline",
        "eq_classes",
        "ne_classes",
        "ok_effects",
        "ops",
        "test",
        "twin",
        "unknown",
        "unknown_effects",
        "unknown_eq_args",
        "unknown_ne_args",
        "value",
        "writes",
    )

    def __init__(self, history: Sequence[Op]) -> None:
        ok = [(op, e) for op in history if op.outcome == "ok" for e in [effect(op)] if e]
        unknown = [(op, e) for op in history if op.outcome == "unknown" for e in [effect(op)] if e]
        self.ops = [op for op, _ in ok]
        self.ok_effects = [e for _, e in ok]
        self.unknown = [op for op, _ in unknown]
        self.unknown_effects = [e for _, e in unknown]
        super().__init__(self.ops)
        named = sorted(
            {
                e.arg
                for e in self.ok_effects + self.unknown_effects
                if e.test != ANY and e.arg is not None
            }
        )
        codes: dict[bytes | None, int] = {None: 0} | {v: n for n, v in enumerate(named, 1)}

        def key(e: Effect) -> tuple[int, int, bool, int]:
            arg = codes[e.arg] if e.test != ANY else 0
            return _TESTS[e.test], arg, e.writes, codes.get(e.value, _OTHER) if e.writes else 0

        keys = [key(e) for e in self.ok_effects]
        self.test = [k[0] for k in keys]
        self.arg = [k[1] for k in keys]
        self.writes = [k[2] for k in keys]
        self.value = [k[3] for k in keys]
        twins: dict[tuple[int, int, bool, int], int] = {}
        self.twin = [twins.setdefault(k, len(twins)) for k in keys]  # ok ops of one effect
        self.deadline = [effect_deadline(op) for op in self.ops]
        # Classes of interchangeable unknown writes, each earliest start first.
        classes: dict[tuple[int, int, bool, int], list[tuple[float, int]]] = defaultdict(list)
        for j, (op, e) in sorted(enumerate(unknown), key=lambda item: item[1][0].start):
            classes[key(e)].append((op.start, j))
        self.cls_value: list[int] = []
        self.cls_members: list[list[tuple[float, int]]] = []
        self.any_classes: list[int] = []
        self.by_value: dict[int, list[int]] = defaultdict(list)  # ANY classes by value
        self.eq_classes: dict[int, list[int]] = defaultdict(list)  # EQ classes by arg
        self.ne_classes: dict[int, list[int]] = defaultdict(list)  # NE classes by arg
        for c, ((test, arg, _, value), members) in enumerate(sorted(classes.items())):
            self.cls_value.append(value)
            self.cls_members.append(members)
            if test == _ANY:
                self.any_classes.append(c)
                self.by_value[value].append(c)
            else:
                (self.eq_classes if test == _EQ else self.ne_classes)[arg].append(c)
        self.unknown_eq_args = frozenset(self.eq_classes)
        self.unknown_ne_args = frozenset(self.ne_classes)

    def run(self, max_steps: int | None) -> SearchOutcome:
        nxt, entry_op = self.nxt, self.entry_op
        values, members, cls_value = self.value, self.cls_members, self.cls_value
        bits = [1 << i for i in range(len(self.ops))]
        taken = [0] * len(members)  # per class: how many of its unknown writes took effect
        state = 0  # absent
        done = used = 0  # bitmasks: ok ops linearized, unknown writes taken
        stack: list[_Frame] = []
        memo: dict[tuple[int, int], list[int]] = {}
        best: tuple[int, list[int], int] | None = None
        steps = 0
        reads: tuple[int, ...] = ()
        moves: list[int] = []  # ok writes as call entries (> 0), unknown classes c as ~c
        index = 0
        fresh = True  # at a node not yet scanned
        while nxt[0] != -1:  # an empty list means every ok op is linearized
            forced = False
            if fresh:
                reads, moves, scanned = self._node(state, taken)
                steps += scanned
                forced, fresh, index = bool(reads), False, 0
            else:
                steps += 1
            if max_steps is not None and steps > max_steps:
                return self._outcome(Verdict.UNDECIDED, best, steps)
            move: tuple[int, ...] = reads if forced else ()
            cls = -1
            if not forced:
                if index < len(moves):
                    if moves[index] > 0:
                        move = (moves[index],)
                    else:
                        cls = ~moves[index]
                elif best is None or done.bit_count() > best[0]:
                    # Nothing can go next: the op due first cannot be linearized here.
                    best = (done.bit_count(), self._order(stack), self._due(nxt[0]))
            if move or cls >= 0:
                now_done, now_used = done, used
                if cls >= 0:
                    now_used |= 1 << members[cls][taken[cls]][1]
                    now_state = cls_value[cls]
                else:
                    for e in move:
                        now_done |= bits[entry_op[e]]
                    now_state = state if forced else values[entry_op[move[0]]]
                seen = memo.get((now_done, now_state))
                if seen is None:
                    memo[(now_done, now_state)] = [now_used]
                    dominated = False
                elif now_used in seen:
                    dominated = True
                else:
                    # Kept minimal: a mask that includes another is dominated by it.
                    dominated = any(m | now_used == now_used for m in seen)
                    if not dominated:
                        seen[:] = [m for m in seen if m | now_used != m]
                        seen.append(now_used)
                if not dominated:
                    stack.append((move, state, cls, forced, moves, index))
                    for e in move:
                        self._lift(e)
                    if cls >= 0:
                        taken[cls] += 1
                    state, done, used, fresh = now_state, now_done, now_used, True
                    continue
                if not forced:
                    index += 1
                    continue
                # The forced move is known to fail, so this node does.
            # Backtrack; when a forced move fails, the node it was forced at fails too.
            while True:
                if not stack:
                    return self._outcome(Verdict.VIOLATION, best, steps)
                move, state, cls, forced, moves, index = stack.pop()
                for e in reversed(move):
                    self._unlift(e)
                    done ^= bits[entry_op[e]]
                if cls >= 0:
                    taken[cls] -= 1
                    used ^= 1 << members[cls][taken[cls]][1]
                if not forced:
                    break
            index += 1
        return self._outcome(Verdict.LINEARIZABLE, (0, self._order(stack), -1), steps)

    def _node(self, state: int, taken: list[int]) -> tuple[tuple[int, ...], list[int], int]:
        """What may go next at ``state``: the reads that hold, which are forced (their
        call entries); or else the moves to try. Also the work done, in steps."""
        tests, args, writes, twin, deadline = (
            self.test,
            self.arg,
            self.writes,
            self.twin,
            self.deadline,
        )
        reads: list[int] = []
        first: dict[int, tuple[float, int]] = {}  # per twin class: (deadline, call entry)
        wanted: set[int] = set()  # values some op that may go next needs, to hold
        anything = False  # some op that may go next needs any value but the state
        scanned = 1
        e = self.nxt[0]
        while self.is_call[e]:
            scanned += 1
            i = self.entry_op[e]
            t = tests[i]
            if t == _ANY or (state == args[i]) == (t == _EQ):
                if not writes[i]:
                    reads.append(e)
                elif reads:
                    pass
                elif (c := twin[i]) not in first or (deadline[i], e) < first[c]:
                    first[c] = (deadline[i], e)
            elif t == _EQ:
                wanted.add(args[i])
            else:  # NE on the state
                anything = True
            e = self.nxt[e]
        if reads:
            return tuple(reads), [], scanned
        moves = sorted(e for _, e in first.values())
        if self.cls_members:
            unknown = self._unknown_moves(state, self.time[e], taken, wanted, anything)
            moves += (~c for c in unknown)
        return (), moves, scanned

    def _unknown_moves(
        self, state: int, deadline: float, taken: list[int], wanted: set[int], anything: bool
    ) -> list[int]:
        """The unknown write classes worth trying at ``state`` (see the class docstring):
        one of theirs is free and started by ``deadline``, their condition holds, and
        they change the state to a value ``wanted`` by an ok op that may go next (or
        to ``anything`` but the state) or by some unknown write, free or not."""
        wanted |= self.unknown_eq_args
        wanted.discard(state)
        anything = anything or state in self.unknown_ne_args
        pool = list(self.eq_classes.get(state, ()))
        pool += (c for arg, cs in self.ne_classes.items() if arg != state for c in cs)
        if anything:
            pool += self.any_classes
        else:
            pool += (c for v in wanted & self.by_value.keys() for c in self.by_value[v])
        moves = []
        values, members = self.cls_value, self.cls_members
        for c in sorted(pool):
            v = values[c]
            if v == state or not (anything or v in wanted):
                continue
            free = members[c]
            if taken[c] < len(free) and free[taken[c]][0] <= deadline:
                moves.append(c)
        return moves

    def _order(self, stack: list[_Frame]) -> list[int]:
        """The ops linearized: ok op ``i`` as ``i``, unknown write ``j`` as ``~j``."""
        order: list[int] = []
        taken = [0] * len(self.cls_members)
        for move, _, cls, _, _, _ in stack:
            if cls >= 0:
                order.append(~self.cls_members[cls][taken[cls]][1])
                taken[cls] += 1
            order.extend(self.entry_op[e] for e in move)
        return order

    def _outcome(
        self, verdict: Verdict, best: tuple[int, list[int], int] | None, steps: int
    ) -> SearchOutcome:
        if best is None:  # the budget ran out before the first dead end
            return SearchOutcome(verdict, (), None, None, (), steps)
        _, order, stuck = best
        ops: list[Op] = []
        state: bytes | None = None
        for i in order:
            if i >= 0:
                op, e = self.ops[i], self.ok_effects[i]
            else:
                op, e = self.unknown[~i], self.unknown_effects[~i]
            ops.append(op)
            state = e.after(state)
        if stuck < 0:
            return SearchOutcome(verdict, tuple(ops), state, None, (), steps)
        taken = {i for i in order if i >= 0}
        candidates = tuple(self.ops[i] for i in self._candidates(stuck, taken))
        return SearchOutcome(
            verdict, tuple(ops), state, self.ops[self.entry_op[stuck]], candidates, steps
        )
