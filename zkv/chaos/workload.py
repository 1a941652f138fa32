"""The workload: client processes doing get/put/delete/create/update/cas on a few
contended keys, and a CAS counter.

Each worker is its own OS process with its own ``Client``. It loops until the
deadline: pick an operation and a key, report the invocation, call, report the
completion. Times come from ``time.monotonic()``, which on Linux is one clock
for every process, so the ops of all workers (and the nemesis's faults) share
one time line.

Outcomes, as the checker (``zkv.check``) reads them:

=========  ============================  ===================================
op         ok (``found``)                otherwise
=========  ============================  ===================================
get        value read (None: absent)     fail: nothing was read
put        acknowledged                  unknown: it may or may not take
                                         effect, at any later time
delete     returned: found=True;         unknown
           KeyNotFound: found=False
create     returned: found=False;        unknown
           KeyExists: found=True
update     returned: found=True;         unknown
           KeyNotFound: found=False
cas        True: found=True;             unknown
           False: found=False
=========  ============================  ===================================

``found`` says whether the op's precondition was found (the key present for
delete, update and create; the expected value for cas), as ``zkv.check`` models
it: an ok conditional op wrote only when it was as required (delete, update,
cas: found; create: not found). A cas records its ``expected`` value (None: the
key absent) and writes ``value`` (None: it deletes). ``Unavailable`` from a
write means its outcome is unknown (the client already retries a refusal that
certainly changed nothing); an unknown conditional op may take effect later,
if its condition holds then, or never. ``InvalidRequest`` means nothing was
sent or done, so it is a ``fail`` for every op. After an ``unknown`` the worker
takes a new process id (as Jepsen does): the old request may still be in
flight, and one process has one op at a time.

A ``conditional_ratio`` share of the writes that would be puts are create,
update or cas instead (a third each). A cas expects the value its worker last
saw for the key (read, or written by itself; None if it never saw one), or,
one time in five, a wrong one; one cas in ten deletes.

Written values are unique (``<process>:<n>``), so a value read names the one
write that produced it. Keys rotate: slot ``i`` of ``keys`` lives
``key_lifetime`` seconds, then a fresh key takes its place (slots staggered),
which keeps each key's history small enough to check quickly however long the
run.

**The CAS counter** (``counter_main``): worker processes that loop on one key
(never rotated): read it (n; absent is 0), then ``cas(n, n + 1)``, and read
again after a False. Every op is recorded like any other, so the key's history
goes to the linearizability checker too (it stays cheap however long: the
values only grow, so few orders are ever open). ``CounterTally`` counts what
the cas calls were told, from the history; at the end the counter, read at
quorum, must lie between the acknowledged increments and those plus the ones
whose outcome is unknown.
"""

from __future__ import annotations

import os
import queue as queue_module
import random
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from zkv.check import Op, encode_op

GET, PUT, DELETE, CREATE, UPDATE, CAS = "get", "put", "delete", "create", "update", "cas"
CONDITIONAL_KINDS = (CREATE, UPDATE, CAS)
FOUND_KINDS = (DELETE, CREATE, UPDATE, CAS)  # ok ops that say whether they found their condition
FINAL_READER = 1_000_000  # process id of the final reads (far above any worker's)
WRONG_EXPECTATION = 0.2  # share of cas ops that expect a value other than the one last seen
CAS_DELETES = 0.1  # share of cas ops that delete (write None)


@dataclass(frozen=True, slots=True)
class KeySpace:
    """Which key each of ``slots`` slots names at a given time."""

    prefix: str
    slots: int
    lifetime: float  # seconds a key is in use before its slot moves on
    t0: float  # monotonic start of the run

    def key(self, slot: int, now: float) -> bytes:
        offset = slot * self.lifetime / self.slots
        generation = int((now - self.t0 + offset) // self.lifetime)
        return f"{self.prefix}{slot}.{generation}".encode()

    def keys_until(self, end: float) -> list[bytes]:
        """Every key named between t0 and ``end``."""
        keys = []
        for slot in range(self.slots):
            offset = slot * self.lifetime / self.slots
            last = int((end - self.t0 + offset) // self.lifetime)
            keys += [f"{self.prefix}{slot}.{g}".encode() for g in range(last + 1)]
        return keys


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    keys: KeySpace
    seeds: tuple[str, ...]
    deadline: float  # monotonic time after which no op starts
    timeout: float = 1.0  # client timeout per op
    read_ratio: float = 0.5
    delete_ratio: float = 0.15  # the rest are puts (or conditional writes)
    think: tuple[float, float] = (0.0, 0.02)  # seconds between ops of one worker
    namespace: str | None = None  # network namespace the workers join first
    seed: int = 0
    conditional_ratio: float = 0.0  # share of the would-be puts done as create/update/cas
    counter_key: bytes = b""  # the CAS counter's key (for counter_main)

    def choose(self, rng: random.Random, now: float) -> tuple[str, bytes]:
        """The next operation kind and key."""
        roll = rng.random()
        if roll < self.read_ratio:
            kind = GET
        elif roll < self.read_ratio + self.delete_ratio:
            kind = DELETE
        elif rng.random() < self.conditional_ratio:
            kind = rng.choice(CONDITIONAL_KINDS)
        else:
            kind = PUT
        return kind, self.keys.key(rng.randrange(self.keys.slots), now)


def outcome_of(kind: str, error: BaseException | None,
               returned: object = None) -> tuple[str, bool | None]:
    """(outcome, found) for an op that raised ``error``, or (``error`` None)
    returned ``returned`` (a cas's True or False)."""
    from zkv.errors import InvalidRequest, KeyExists, KeyNotFound

    if error is None:
        if kind == CAS:
            if isinstance(returned, bool):
                return "ok", returned
            return "unknown", None  # not an answer a cas gives: claim nothing
        return "ok", {DELETE: True, UPDATE: True, CREATE: False}.get(kind)
    if kind in (DELETE, UPDATE) and isinstance(error, KeyNotFound):
        return "ok", False
    if kind == CREATE and isinstance(error, KeyExists):
        return "ok", True
    if kind == GET or isinstance(error, InvalidRequest):
        return "fail", None
    return "unknown", None  # Unavailable (timed out or refused), or anything unexpected


def perform(client: Any, kind: str, key: bytes, value: bytes | None,
            expected: bytes | None) -> tuple[object, BaseException | None]:
    """Call the client; (what it returned, None) or (None, what it raised)."""
    try:
        if kind == GET:
            return client.get(key), None
        if kind == PUT:
            return client.put(key, value), None
        if kind == DELETE:
            return client.delete(key), None
        if kind == CREATE:
            return client.create(key, value), None
        if kind == UPDATE:
            return client.update(key, value), None
        if kind == CAS:
            return client.cas(key, expected, value), None
        raise ValueError(f"unknown op kind {kind!r}")
    except Exception as exc:  # noqa: BLE001 - every failure is an outcome
        return None, exc


def after(kind: str, outcome: str, found: bool | None, read: bytes | None,
          value: bytes | None, known: bytes | None) -> bytes | None:
    """The value a worker takes a key to hold after an op (None: absent): what the
    op read or wrote, or ``known`` (what it took before) when the op told nothing
    of the value (it failed, its outcome is unknown, create found the key present,
    cas found another value)."""
    if outcome != "ok":
        return known
    if kind == GET:
        return read
    if kind == PUT:
        return value
    if kind == DELETE:
        return None
    if kind == CREATE:
        return known if found else value
    if kind == UPDATE:
        return value if found else None
    return value if found else known  # cas


def expectation(rng: random.Random, key: bytes, seen: dict[bytes, bytes | None],
                process: int) -> bytes | None:
    """The value a cas on ``key`` expects: the one last seen (None: absent, also
    when never seen), or now and then a wrong one (absent, one never written, or
    a value seen on another key)."""
    last = seen.get(key)
    if rng.random() >= WRONG_EXPECTATION:
        return last
    others = [v for k, v in seen.items() if k != key and v is not None]
    wrong = [v for v in (None, f"{process}:never".encode(), *others[-4:]) if v != last]
    return rng.choice(wrong)


# --------------------------------------------------------------------------- worker process


def worker_main(index: int, stride: int, spec: WorkloadSpec, events: Any, stop: Any) -> None:
    """One client process: ops until ``spec.deadline`` or ``stop``; reports on ``events``.

    Messages: ``("invoke", op_id, process, kind, key, value, start, expected)``
    before a call and ``("done", op_id, outcome, value, end, found)`` after it.
    """
    _enter(spec)
    from zkv.client import Client

    rng = random.Random(spec.seed * 7919 + index)
    op = _Ops(index, stride, events)
    seen: dict[bytes, bytes | None] = {}  # key -> the value it last saw (None: absent)
    with Client(list(spec.seeds), timeout=spec.timeout) as client:
        while not stop.is_set():
            now = time.monotonic()
            if now >= spec.deadline:
                break
            kind, key = spec.choose(rng, now)
            value = expected = None
            if kind in (PUT, CREATE, UPDATE, CAS):
                value = op.fresh_value()
            if kind == CAS:
                expected = expectation(rng, key, seen, op.process)
                if rng.random() < CAS_DELETES:
                    value = None
            outcome, found, read = op.run(client, kind, key, value, expected)
            seen[key] = after(kind, outcome, found, read, value, seen.get(key))
            if len(seen) > 64:  # keys retire; forget the oldest
                del seen[next(iter(seen))]
            pause = rng.uniform(*spec.think)
            if pause:
                time.sleep(pause)


def counter_main(index: int, stride: int, spec: WorkloadSpec, events: Any, stop: Any) -> None:
    """A CAS counter process: read ``spec.counter_key`` (n; absent is 0), then
    ``cas(n, n + 1)``, until ``spec.deadline`` or ``stop``; reports like ``worker_main``.
    After a False or an unknown outcome it reads again; after a failed read too."""
    _enter(spec)
    from zkv.client import Client

    rng = random.Random(spec.seed * 7919 + index)
    op = _Ops(index, stride, events)
    key = spec.counter_key
    with Client(list(spec.seeds), timeout=spec.timeout) as client:
        while not stop.is_set() and time.monotonic() < spec.deadline:
            outcome, _, read = op.run(client, GET, key, None, None)
            if outcome == "ok":
                count = counter_value(read)
                if count is None:  # not a count: nothing sensible to add to
                    time.sleep(0.1)
                    continue
                if stop.is_set() or time.monotonic() >= spec.deadline:
                    break
                op.run(client, CAS, key, b"%d" % (count + 1), read)
            pause = rng.uniform(*spec.think)
            if pause:
                time.sleep(pause)


def counter_value(value: bytes | None) -> int | None:
    """The count a counter value stands for (absent: 0); None if it is not one."""
    if value is None:
        return 0
    return int(value) if value.isdigit() else None


class _Ops:
    """One worker's op numbering, process ids and messages."""

    def __init__(self, index: int, stride: int, events: Any) -> None:
        self.index, self.stride, self.events = index, stride, events
        self.process = index
        self.n = 0

    def fresh_value(self) -> bytes:
        return f"{self.process}:{self.n + 1}".encode()

    def run(self, client: Any, kind: str, key: bytes, value: bytes | None,
            expected: bytes | None) -> tuple[str, bool | None, bytes | None]:
        """Report, call, report; (outcome, found, value read by a get)."""
        self.n += 1
        op_id = (self.index, self.n)
        start = time.monotonic()
        self.events.put(("invoke", op_id, self.process, kind, key, value, start, expected))
        returned, error = perform(client, kind, key, value, expected)
        end = time.monotonic()
        outcome, found = outcome_of(kind, error, returned)
        read = returned if kind == GET and outcome == "ok" else None
        self.events.put(("done", op_id, outcome, read if kind == GET else value, end, found))
        if outcome == "unknown":
            self.process += self.stride
        return outcome, found, read  # type: ignore[return-value]


def _enter(spec: WorkloadSpec) -> None:
    if spec.namespace:
        from zkv.chaos.netns import enter

        enter(spec.namespace)


# --------------------------------------------------------------------------- the counter


@dataclass(slots=True)
class CounterTally:
    """What the CAS counter's ops were told, counted from its key's history."""

    reads: int = 0  # gets invoked
    reads_ok: int = 0
    cas: int = 0  # cas ops invoked
    acked: int = 0  # cas True: an acknowledged increment
    conflicts: int = 0  # cas False: the counter had moved on, nothing changed
    unknown: int = 0  # cas whose outcome is unknown: an increment, or nothing
    failed: int = 0  # cas that certainly did nothing (refused as invalid)

    @classmethod
    def of(cls, ops: Iterable[Op], key: bytes) -> CounterTally:
        tally = cls()
        for op in ops:
            if op.key != key or op.process >= FINAL_READER:
                continue
            if op.kind == GET:
                tally.reads += 1
                tally.reads_ok += op.outcome == "ok"
            elif op.kind == CAS:
                tally.cas += 1
                if op.outcome == "ok":
                    if op.found:
                        tally.acked += 1
                    else:
                        tally.conflicts += 1
                elif op.outcome == "unknown":
                    tally.unknown += 1
                else:
                    tally.failed += 1
        return tally

    @property
    def ops(self) -> int:
        return self.reads + self.cas

    def explains(self, final: bytes | None) -> bool:
        """Whether a final count can come from these increments:
        acked <= final <= acked + unknown (absent counts as 0)."""
        count = counter_value(final)
        return count is not None and self.acked <= count <= self.acked + self.unknown


# --------------------------------------------------------------------------- the history


class HistoryRecorder:
    """Turns workers' invoke/done messages into ``Op``s, appended to a JSON-lines file
    as they complete; an op still open at ``finish()`` is recorded as unknown."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._file: TextIO = open(self.path, "a", encoding="utf-8")
        self._open: dict[Any, tuple] = {}
        self.ops: list[Op] = []

    def take(self, message: tuple) -> Op | None:
        """Record one message; returns the op it completed, if any."""
        if message[0] == "invoke":
            _, op_id, process, kind, key, value, start, *rest = message
            self._open[op_id] = (process, kind, key, value, start, rest[0] if rest else None)
            return None
        _, op_id, outcome, value, end, found = message
        invoked = self._open.pop(op_id, None)
        if invoked is None:
            return None
        process, kind, key, written, start, expected = invoked
        op = make_op(process, kind, key, written if kind != GET else value, outcome, start,
                     end, found, expected)
        self.add(op)
        return op

    def add(self, op: Op) -> None:
        self.ops.append(op)
        self._file.write(encode_op(op) + "\n")

    def drain(self, events: Any, limit: int = 100_000) -> list[Op]:
        """Take every message waiting on ``events`` (a multiprocessing queue)."""
        done = []
        for _ in range(limit):
            try:
                message = events.get_nowait()
            except queue_module.Empty:
                break
            op = self.take(message)
            if op is not None:
                done.append(op)
        self._file.flush()
        return done

    @property
    def in_flight(self) -> int:
        return len(self._open)

    def abandon_open(self) -> int:
        """Record every op still open as unknown (its worker ended before its outcome
        came); returns how many there were."""
        count = len(self._open)
        for process, kind, key, value, start, expected in self._open.values():
            self.add(make_op(process, kind, key, value, "unknown", start, None, None,
                             expected))
        self._open.clear()
        return count

    def close(self) -> None:
        if self._file.closed:
            return
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()


def make_op(process: int, kind: str, key: bytes, value: bytes | None, outcome: str,
            start: float, end: float | None, found: bool | None,
            expected: bytes | None) -> Op:
    """The ``Op`` the checker reads: ``value`` is what a write wrote (a delete's
    None) or what an ok get read; ``found`` only on an ok conditional op;
    ``expected`` only on a cas."""
    if kind == DELETE or (kind == GET and outcome != "ok"):
        value = None
    return Op(process, kind, key, value, outcome, start,
              None if outcome == "unknown" else end,
              found if outcome == "ok" and kind in FOUND_KINDS else None,
              expected if kind == CAS else None)


def keys_of(ops: list[Op]) -> Iterator[bytes]:
    return iter(sorted({op.key for op in ops}))
