"""The workload: client processes doing get/put/delete on a few contended keys.

Each worker is its own OS process with its own ``Client``. It loops until the
deadline: pick an operation and a key, report the invocation, call, report the
completion. Times come from ``time.monotonic()``, which on Linux is one clock
for every process, so the ops of all workers (and the nemesis's faults) share
one time line.

Outcomes, as the checker (``zkv.check``) reads them:

=========  ==========================  =====================================
op         ok                          otherwise
=========  ==========================  =====================================
get        value read (None: absent)   fail: nothing was read
put        acknowledged                unknown: it may or may not take effect
delete     found (KeyNotFound: ok,     unknown
           found=False)
=========  ==========================  =====================================

``InvalidRequest`` means nothing was sent or done, so it is a ``fail`` for every
op. After an ``unknown`` the worker takes a new process id (as Jepsen does): the
old request may still be in flight, and one process has one op at a time.

Put values are unique (``<process>:<n>``), so a value read names the one write
that produced it. Keys rotate: slot ``i`` of ``keys`` lives ``key_lifetime``
seconds, then a fresh key takes its place (slots staggered), which keeps each
key's history small enough to check quickly however long the run.
"""

from __future__ import annotations

import os
import queue as queue_module
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from zkv.check import Op, encode_op

GET, PUT, DELETE = "get", "put", "delete"
FINAL_READER = 1_000_000  # process id of the final reads (far above any worker's)


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
    delete_ratio: float = 0.15  # the rest are puts
    think: tuple[float, float] = (0.0, 0.02)  # seconds between ops of one worker
    namespace: str | None = None  # network namespace the workers join first
    seed: int = 0

    def choose(self, rng: random.Random, now: float) -> tuple[str, bytes]:
        """The next operation kind and key."""
        roll = rng.random()
        kind = GET if roll < self.read_ratio else (
            DELETE if roll < self.read_ratio + self.delete_ratio else PUT)
        return kind, self.keys.key(rng.randrange(self.keys.slots), now)


def outcome_of(kind: str, error: BaseException | None) -> tuple[str, bool | None]:
    """(outcome, found) for an op that raised ``error`` (None: it returned)."""
    from zkv.errors import InvalidRequest, KeyNotFound

    if error is None:
        return "ok", (True if kind == DELETE else None)
    if kind == DELETE and isinstance(error, KeyNotFound):
        return "ok", False
    if kind == GET or isinstance(error, InvalidRequest):
        return "fail", None
    return "unknown", None  # Unavailable (timed out or refused), or anything unexpected


# --------------------------------------------------------------------------- worker process


def worker_main(index: int, stride: int, spec: WorkloadSpec, events: Any, stop: Any) -> None:
    """One client process: ops until ``spec.deadline`` or ``stop``; reports on ``events``.

    Messages: ``("invoke", op_id, process, kind, key, value, start)`` before a
    call and ``("done", op_id, outcome, value, end, found)`` after it.
    """
    if spec.namespace:
        from zkv.chaos.netns import enter

        enter(spec.namespace)
    from zkv.client import Client

    rng = random.Random(spec.seed * 7919 + index)
    process = index
    n = 0
    with Client(list(spec.seeds), timeout=spec.timeout) as client:
        while not stop.is_set():
            now = time.monotonic()
            if now >= spec.deadline:
                break
            kind, key = spec.choose(rng, now)
            n += 1
            op_id = (index, n)
            value = f"{process}:{n}".encode() if kind == PUT else None
            start = time.monotonic()
            events.put(("invoke", op_id, process, kind, key, value, start))
            error: BaseException | None = None
            read: bytes | None = None
            try:
                if kind == GET:
                    read = client.get(key)
                elif kind == PUT:
                    client.put(key, value)
                else:
                    client.delete(key)
            except Exception as exc:  # noqa: BLE001 - every failure is an outcome
                error = exc
            end = time.monotonic()
            outcome, found = outcome_of(kind, error)
            events.put(("done", op_id, outcome, read if kind == GET else value, end, found))
            if outcome == "unknown":
                process += stride
            pause = rng.uniform(*spec.think)
            if pause:
                time.sleep(pause)


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
            _, op_id, process, kind, key, value, start = message
            self._open[op_id] = (process, kind, key, value, start)
            return None
        _, op_id, outcome, value, end, found = message
        invoked = self._open.pop(op_id, None)
        if invoked is None:
            return None
        process, kind, key, put_value, start = invoked
        if kind == PUT:
            value = put_value
        elif kind == DELETE:
            value = None
        elif outcome != "ok":
            value = None
        op = Op(process, kind, key, value, outcome, start, end,
                found if kind == DELETE and outcome == "ok" else None)
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
        for process, kind, key, value, start in self._open.values():
            self.add(Op(process, kind, key, value if kind == PUT else None, "unknown",
                        start, None))
        self._open.clear()
        return count

    def close(self) -> None:
        if self._file.closed:
            return
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()


def keys_of(ops: list[Op]) -> Iterator[bytes]:
    return iter(sorted({op.key for op in ops}))
