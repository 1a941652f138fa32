"""The nemesis: faults on a random schedule, never more than ``max_down`` replicas of a key.

Fault kinds, each aimed at a set of nodes it takes out or impairs:

- ``kill``: SIGKILL one or more nodes; the supervisor restarts them. The fault
  lasts until each node serves again, plus ``rejoin`` seconds to rejoin.
- ``pause``: SIGSTOP, then SIGCONT after a while: a hung node, then one that
  wakes up with a stale view.
- ``partition``: the chosen nodes lose contact with all the others (the
  minority side of a split); clients still reach every node.
- ``loss``: a share of the packets between one node and the others is dropped.
- ``slow``: one node's links are delayed (netem) or throttled (tbf).

The last three need a network namespace lab (``zkv.chaos.netns``).

**The constraint.** A fault may start only if, with it, no replica set of the
ring has more than ``max_down`` members under some fault. With N=3 replicas and
``max_down=2`` a key may become unavailable (that is allowed: the invariant is
safety, not liveness), but at least one replica of every key is never touched.

**The timing assumption.** Every fault lasts less than the cluster's ``t_remove``
(the default durations stay under 6 s; own clusters run with ``t_remove`` 8 s):
a node cut off for longer is taken for dead, and two replicas of a key taken
for dead is beyond what zkv promises to survive (README, "Timing assumptions";
tests/chaos/test_partition_removal.py shows what happens then).

``Nemesis`` plans and keeps the books; a ``FaultTarget`` does the damage. Both
clock and randomness come in from outside, so the schedule is testable.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from zkv.core.ring import Ring

KILL, PAUSE, PARTITION, LOSS, SLOW = "kill", "pause", "partition", "loss", "slow"
FAULT_KINDS = (KILL, PAUSE, PARTITION, LOSS, SLOW)
PROCESS_FAULTS = (KILL, PAUSE)
NETWORK_FAULTS = (PARTITION, LOSS, SLOW)


def parse_kinds(text: str) -> tuple[str, ...]:
    """``"kill,pause"`` -> ("kill", "pause"); ``"all"`` -> every kind. ValueError if unknown."""
    if text.strip() == "all":
        return FAULT_KINDS
    kinds = tuple(dict.fromkeys(k.strip() for k in text.split(",") if k.strip()))
    unknown = [k for k in kinds if k not in FAULT_KINDS]
    if unknown:
        raise ValueError(f"unknown fault kind {unknown[0]!r}; known: {', '.join(FAULT_KINDS)}")
    if not kinds:
        raise ValueError("name at least one fault kind")
    return kinds


@dataclass(frozen=True, slots=True)
class NemesisSpec:
    kinds: tuple[str, ...] = FAULT_KINDS
    max_down: int = 2  # replicas of one key under a fault at the same time
    interval: tuple[float, float] = (0.5, 3.0)  # seconds between two fault starts
    durations: dict[str, tuple[float, float]] = field(default_factory=lambda: {
        PAUSE: (0.3, 5.0), PARTITION: (1.0, 6.0), LOSS: (2.0, 6.0), SLOW: (2.0, 6.0)})
    rejoin: float = 2.0  # seconds a restarted node counts as down after it serves again
    loss_percent: tuple[int, ...] = (10, 30, 60)
    delay_ms: tuple[int, ...] = (50, 200, 500)  # netem delay of a slow link
    rate_kbit: tuple[int, ...] = (64, 256)  # tbf rate of a slow link, without netem


class ReplicaGuard:
    """Knows every replica set of the ring; says whether a set of faulty nodes is allowed."""

    def __init__(self, replica_sets: Iterable[Iterable[str]], max_down: int) -> None:
        self.replica_sets = {frozenset(s) for s in replica_sets}
        self.max_down = max_down

    @classmethod
    def for_ring(cls, ring: Ring, max_down: int) -> ReplicaGuard:
        return cls((ring.segment_replicas(s) for s in range(ring.segments)), max_down)

    def allows(self, faulty: Iterable[str]) -> bool:
        down = set(faulty)
        return all(len(down & s) <= self.max_down for s in self.replica_sets)


@dataclass(slots=True)
class Fault:
    fault_id: str
    kind: str
    nodes: tuple[str, ...]
    start: float
    until: float | None  # planned end; None for a kill until the node is back
    detail: dict = field(default_factory=dict)
    end: float | None = None
    back: dict[str, float] = field(default_factory=dict)  # kill: node -> time it served again

    def record(self) -> dict:
        return {"id": self.fault_id, "kind": self.kind, "nodes": list(self.nodes),
                "start": self.start, "end": self.end, **self.detail}


class FaultTarget(Protocol):
    """What the nemesis needs from the world: the cluster's processes and network."""

    def kill(self, node: str) -> object: ...  # a token for back(); None if not running
    def back(self, node: str, token: object) -> bool: ...  # restarted and serving again
    def pause(self, node: str) -> None: ...
    def resume(self, node: str) -> None: ...
    def partition(self, fault_id: str, side: list[str], rest: list[str]) -> None: ...
    def loss(self, fault_id: str, node: str, percent: int) -> None: ...
    def slow(self, fault_id: str, node: str, delay_ms: int, rate_kbit: int) -> None: ...
    def clear(self, fault_id: str) -> None: ...


class Nemesis:
    """Starts and ends faults as ``step(now)`` is called; ``heal(now)`` ends them all."""

    def __init__(self, spec: NemesisSpec, nodes: list[str], guard: ReplicaGuard,
                 target: FaultTarget, rng: random.Random,
                 on_change: Callable[[Fault, str], None] | None = None) -> None:
        if not spec.kinds:
            raise ValueError("the nemesis needs at least one fault kind")
        self.spec = spec
        self.nodes = list(nodes)
        self.guard = guard
        self.target = target
        self.rng = rng
        self.on_change = on_change
        self.active: list[Fault] = []
        self.history: list[Fault] = []
        self.injected: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()  # starts the constraint did not allow
        self.next_at: float | None = None
        self.tokens: dict[tuple[str, str], object] = {}  # (fault id, node) -> kill token
        self._ids = 0

    # ----------------------------------------------------------------- the schedule

    def faulty(self) -> set[str]:
        return {n for f in self.active for n in f.nodes}

    def step(self, now: float) -> None:
        for fault in list(self.active):
            if self._due(fault, now):
                self._end(fault, now)
        if self.next_at is None:
            self.next_at = now + self.rng.uniform(*self.spec.interval)
        elif now >= self.next_at:
            self.next_at = now + self.rng.uniform(*self.spec.interval)
            self._start_one(now)

    def _due(self, fault: Fault, now: float) -> bool:
        if fault.kind == KILL:
            for node in fault.nodes:
                if node not in fault.back and self.target.back(
                        node, self.tokens.get((fault.fault_id, node))):
                    fault.back[node] = now
            if len(fault.back) < len(fault.nodes):
                return False
            fault.until = max(fault.back.values()) + self.spec.rejoin
        return fault.until is not None and now >= fault.until

    def _start_one(self, now: float) -> Fault | None:
        kind = self.rng.choice(self.spec.kinds)
        nodes = self._choose_nodes(kind)
        if nodes is None:
            self.skipped[kind] += 1
            return None
        self._ids += 1
        fault = Fault(f"f{self._ids}", kind, tuple(sorted(nodes)), now, None)
        if kind != KILL:
            fault.until = now + self.rng.uniform(*self.spec.durations[kind])
        self._inflict(fault)
        self.active.append(fault)
        self.history.append(fault)
        self.injected[kind] += 1
        if self.on_change:
            self.on_change(fault, "start")
        return fault

    def _choose_nodes(self, kind: str) -> list[str] | None:
        """Nodes for a new fault of ``kind`` that keep the guard satisfied, or None."""
        busy = self.faulty()
        free = [n for n in self.nodes if n not in busy]
        most = self.spec.max_down if kind in (KILL, PAUSE, PARTITION) else 1
        if kind == PARTITION:
            most = min(most, (len(self.nodes) - 1) // 2)  # the side cut off is a minority
        sizes = list(range(1, min(most, len(free)) + 1))
        self.rng.shuffle(sizes)
        for size in sizes:
            for _ in range(20):
                pick = self.rng.sample(free, size)
                if self.guard.allows(busy | set(pick)):
                    return pick
        return None

    def _inflict(self, fault: Fault) -> None:
        target, rng, nodes = self.target, self.rng, list(fault.nodes)
        if fault.kind == KILL:
            for node in nodes:
                token = target.kill(node)
                self.tokens[(fault.fault_id, node)] = token
                if token is None:
                    fault.back[node] = fault.start  # was not running: nothing to wait for
        elif fault.kind == PAUSE:
            for node in nodes:
                target.pause(node)
        elif fault.kind == PARTITION:
            target.partition(fault.fault_id, nodes, [n for n in self.nodes if n not in nodes])
        elif fault.kind == LOSS:
            fault.detail["percent"] = rng.choice(self.spec.loss_percent)
            target.loss(fault.fault_id, nodes[0], fault.detail["percent"])
        elif fault.kind == SLOW:
            fault.detail["delay_ms"] = rng.choice(self.spec.delay_ms)
            fault.detail["rate_kbit"] = rng.choice(self.spec.rate_kbit)
            target.slow(fault.fault_id, nodes[0], fault.detail["delay_ms"],
                        fault.detail["rate_kbit"])

    def _end(self, fault: Fault, now: float) -> None:
        if fault.kind == PAUSE:
            for node in fault.nodes:
                self.target.resume(node)
        elif fault.kind in NETWORK_FAULTS:
            self.target.clear(fault.fault_id)
        fault.end = now
        self.active.remove(fault)
        for node in fault.nodes:
            self.tokens.pop((fault.fault_id, node), None)
        if self.on_change:
            self.on_change(fault, "end")

    # ----------------------------------------------------------------- the end

    def heal(self, now: float) -> list[Fault]:
        """End every fault that can end now (pauses and network faults at once); returns
        the kills still waiting for their nodes to come back (call again to finish them)."""
        self.next_at = float("inf")
        for fault in list(self.active):
            if fault.kind != KILL:
                fault.until = now
            if self._due(fault, now) or fault.kind != KILL:
                self._end(fault, now)
        return list(self.active)

    def windows(self) -> list[tuple[float, float]]:
        """When any fault was active, as merged (start, end) intervals."""
        spans = sorted((f.start, f.end if f.end is not None else float("inf"))
                       for f in self.history)
        merged: list[list[float]] = []
        for start, end in spans:
            if merged and start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        return [(a, b) for a, b in merged]

    def log_line(self, fault: Fault, event: str) -> str:
        return json.dumps({"event": event, **fault.record()})
