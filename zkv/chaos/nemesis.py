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

Membership faults (``MEMBERSHIP_FAULTS``, ``--faults membership``) change the
ring itself; each lasts until the cluster map shows the change done and settled
(every member reports the same map, with no ring change under way):

- ``join``: one new node (sometimes two) joins, as ``zkv cluster add`` does;
- ``decommission``: an operator takes a member out (``zkv node decommission``);
  the fault ends once its ranges moved and its process exited;
- ``wipe``: a member is killed (not restarted), its data directory emptied, and
  started again: the cluster replaces its old self, and it joins as a new member;
- ``remove``: a member is killed (not restarted) until a majority has removed it
  (``t_remove`` under the ``auto`` policy; at most ``remove_patience`` seconds
  past it), then started again: it joins again and streams its ranges.

**The constraint.** A fault may start only if, with it, no replica set of the
ring has more than ``max_down`` members under some fault. With N=3 replicas and
``max_down=2`` a key may become unavailable (that is allowed: the invariant is
safety, not liveness), but at least one replica of every key is never touched.
During a ring change the replica sets are those of the ring *and* of its
target, and they are stricter: a set holding the node being joined, removed or
wiped keeps a quorum of members under no fault at all, so no other fault may
take a second replica of its keys (docs/consistency.md, "Timing assumptions": zkv survives
the loss of one replica of a key, not two). One ring change runs at a time, and
members are only taken out while the ring keeps ``replicas + 1`` of them
without the one leaving; joins stop at ``max_members``.

**The timing assumption.** Every fault but a membership fault lasts less than
the cluster's ``t_remove`` (the default durations stay under 6 s; own clusters
run with ``t_remove`` 8 s): a node cut off for longer is taken for dead, and two
replicas of a key taken for dead is beyond what zkv promises to survive
(tests/chaos/test_partition_removal.py shows what happens then). A ``remove``
outlasts ``t_remove`` on purpose, for one node, with a quorum of each of its
keys' replicas untouched.

``Nemesis`` plans and keeps the books; a ``FaultTarget`` does the damage and
reports the cluster map (``RingView``). Clock and randomness come in from
outside, so the schedule is testable.
"""

from __future__ import annotations

import functools
import json
import random
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from zkv.core.quorum import needed
from zkv.core.ring import Ring

KILL, PAUSE, PARTITION, LOSS, SLOW = "kill", "pause", "partition", "loss", "slow"
JOIN, DECOMMISSION, WIPE, REMOVE = "join", "decommission", "wipe", "remove"
PROCESS_FAULTS = (KILL, PAUSE)
NETWORK_FAULTS = (PARTITION, LOSS, SLOW)
MEMBERSHIP_FAULTS = (JOIN, DECOMMISSION, WIPE, REMOVE)
FAULT_KINDS = PROCESS_FAULTS + NETWORK_FAULTS + MEMBERSHIP_FAULTS
DEFAULT_KINDS = PROCESS_FAULTS + NETWORK_FAULTS  # a run's kinds unless it names others
FAULT_GROUPS = {"membership": MEMBERSHIP_FAULTS, "all": FAULT_KINDS}


def parse_kinds(text: str) -> tuple[str, ...]:
    """``"kill,pause"`` -> ("kill", "pause"); ``"membership"`` -> its four kinds;
    ``"all"`` -> every kind. ValueError if unknown."""
    kinds: list[str] = []
    for name in (k.strip() for k in text.split(",")):
        if name in FAULT_GROUPS:
            kinds += FAULT_GROUPS[name]
        elif name in FAULT_KINDS:
            kinds.append(name)
        elif name:
            raise ValueError(f"unknown fault kind {name!r}; known: {', '.join(FAULT_KINDS)}, "
                             f"or {', '.join(FAULT_GROUPS)}")
    if not kinds:
        raise ValueError("name at least one fault kind")
    return tuple(dict.fromkeys(kinds))


@dataclass(frozen=True, slots=True)
class NemesisSpec:
    kinds: tuple[str, ...] = DEFAULT_KINDS
    max_down: int = 2  # replicas of one key under a fault at the same time
    interval: tuple[float, float] = (0.5, 3.0)  # seconds between two fault starts
    durations: dict[str, tuple[float, float]] = field(default_factory=lambda: {
        PAUSE: (0.3, 5.0), PARTITION: (1.0, 6.0), LOSS: (2.0, 6.0), SLOW: (2.0, 6.0)})
    rejoin: float = 2.0  # seconds a restarted node counts as down after it serves again
    loss_percent: tuple[int, ...] = (10, 30, 60)
    delay_ms: tuple[int, ...] = (50, 200, 500)  # netem delay of a slow link
    rate_kbit: tuple[int, ...] = (64, 256)  # tbf rate of a slow link, without netem
    max_members: int = 0  # joins stop at this many members (0: the initial count + 2)
    join_two: float = 0.25  # share of joins that add two nodes at once
    t_remove: float = 8.0  # the cluster's: a remove keeps its node down past it
    remove_patience: float = 30.0  # seconds past t_remove a remove waits for the removal
    resend: float = 3.0  # a decommission the map does not show yet is sent again after this


@functools.lru_cache(maxsize=256)
def _replica_sets(members: frozenset[str], replicas: int, vnodes: int) -> frozenset[frozenset]:
    ring = Ring(members, replicas, vnodes)
    return frozenset(frozenset(ring.segment_replicas(s)) for s in range(ring.segments))


class ReplicaGuard:
    """Knows every replica set of the ring; says whether a set of faulty nodes is allowed."""

    def __init__(self, replica_sets: Iterable[Iterable[str]], max_down: int,
                 shape: tuple[int, int] | None = None) -> None:
        self.replica_sets = {frozenset(s) for s in replica_sets}
        self.max_down = max_down
        self.shape = shape  # (replicas, vnodes): what ``over`` builds rings with

    @classmethod
    def for_ring(cls, ring: Ring, max_down: int) -> ReplicaGuard:
        return cls(_replica_sets(ring.nodes, ring.replicas, ring.vnodes), max_down,
                   (ring.replicas, ring.vnodes))

    def over(self, *memberships: Iterable[str]) -> ReplicaGuard:
        """The guard of rings of these members, of this guard's shape: during a ring
        change, the ring's replica sets and its target's."""
        if self.shape is None:
            raise ValueError("a guard built from bare replica sets cannot follow the ring")
        sets: set[frozenset] = set()
        for members in memberships:
            sets |= _replica_sets(frozenset(members), *self.shape)
        return ReplicaGuard(sets, self.max_down, self.shape)

    @property
    def replicas(self) -> int:
        return self.shape[0] if self.shape else max(map(len, self.replica_sets), default=0)

    def allows(self, faulty: Iterable[str], changing: Iterable[str] = ()) -> bool:
        """No set has more than ``max_down`` faulty members, and a set holding a node of
        ``changing`` (joining or leaving; counted in ``faulty`` too) keeps a quorum of
        members under no fault."""
        down, changing = set(faulty), set(changing)
        for s in self.replica_sets:
            hit = len(down & s)
            if hit > self.max_down:
                return False
            if changing & s and len(s) - hit < needed("quorum", len(s)):
                return False
        return True


@dataclass(frozen=True, slots=True)
class RingView:
    """The cluster map as the running nodes reported it (``FaultTarget.ring``)."""

    epoch: int  # the newest epoch any node reported
    members: frozenset[str]  # the members of that epoch's map (ring and target)
    settled: bool  # that map has no ring change under way
    confirmed: frozenset[str]  # nodes that answered as members, with that map

    @property
    def stable(self) -> bool:
        """Settled, and every member said so itself."""
        return self.settled and self.members <= self.confirmed


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
    phase: str = ""  # membership: joining | leaving | down (remove) | rejoining
    phase_start: float = 0.0
    resend_at: float = float("inf")  # decommission: when to send the command again

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
    # membership faults
    def next_ids(self, count: int) -> list[str]: ...  # the ids join(count) would give
    def join(self, count: int) -> list[str]: ...  # start new nodes; their ids ([]: refused)
    def decommission(self, node: str) -> bool: ...  # the cluster took the command
    def hold(self, node: str) -> object: ...  # SIGKILL, not restarted
    def wipe(self, node: str) -> None: ...  # empty its data directory (it is down)
    def start(self, node: str) -> None: ...  # start a held node again
    def exited(self, node: str) -> bool: ...  # a decommissioned node's process has ended
    # The latest view of the map asked for after the last membership action (join,
    # decommission, hold, wipe, start); None until there is one.
    def ring(self) -> RingView | None: ...


class Nemesis:
    """Starts and ends faults as ``step(now)`` is called; ``heal(now)`` ends them all."""

    def __init__(self, spec: NemesisSpec, nodes: list[str], guard: ReplicaGuard,
                 target: FaultTarget, rng: random.Random,
                 on_change: Callable[[Fault, str], None] | None = None) -> None:
        if not spec.kinds:
            raise ValueError("the nemesis needs at least one fault kind")
        if set(spec.kinds) & set(MEMBERSHIP_FAULTS) and guard.shape is None:
            raise ValueError("membership faults need a guard built for a ring (for_ring)")
        self.spec = spec
        self.nodes = list(nodes)  # the ring's members, as the last ring change left them
        self.base = guard
        self.guard = guard
        self.max_members = spec.max_members or len(nodes) + 2
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

    def changing(self) -> set[str]:
        """Nodes joining or leaving the ring under a membership fault."""
        return {n for f in self.active if f.kind in MEMBERSHIP_FAULTS for n in f.nodes}

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
        if fault.kind in MEMBERSHIP_FAULTS:
            return self._change_done(fault, now)
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
        if kind in MEMBERSHIP_FAULTS:
            return self._start_change(kind, now)
        nodes = self._choose_nodes(kind)
        if nodes is None:
            self.skipped[kind] += 1
            return None
        fault = self._new(kind, nodes, now)
        if kind != KILL:
            fault.until = now + self.rng.uniform(*self.spec.durations[kind])
        self._inflict(fault)
        return self._started(fault)

    def _new(self, kind: str, nodes: Iterable[str], now: float) -> Fault:
        self._ids += 1
        return Fault(f"f{self._ids}", kind, tuple(sorted(nodes)), now, None)

    def _started(self, fault: Fault) -> Fault:
        self.active.append(fault)
        self.history.append(fault)
        self.injected[fault.kind] += 1
        if self.on_change:
            self.on_change(fault, "start")
        return fault

    def _choose_nodes(self, kind: str) -> list[str] | None:
        """Nodes for a new fault of ``kind`` that keep the guard satisfied, or None."""
        busy = self.faulty()
        changing = self.changing()
        free = [n for n in self.nodes if n not in busy]
        most = self.spec.max_down if kind in (KILL, PAUSE, PARTITION) else 1
        if kind == PARTITION:
            most = min(most, (len(self.nodes) - 1) // 2)  # the side cut off is a minority
        sizes = list(range(1, min(most, len(free)) + 1))
        self.rng.shuffle(sizes)
        for size in sizes:
            for _ in range(20):
                pick = self.rng.sample(free, size)
                if self.guard.allows(busy | set(pick), changing):
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

    # ----------------------------------------------------------------- ring changes

    def _plan_change(self, kind: str) -> tuple[list[str], list[str]] | None:
        """(the nodes joining or the one leaving, the ring's members after), keeping the
        guard over both rings satisfied; None when no such change may start now."""
        if self.changing():
            return None  # one ring change at a time
        members, busy = list(self.nodes), self.faulty()
        if kind == JOIN:
            room = self.max_members - len(members)
            if room < 1:
                return None
            count = 2 if room >= 2 and self.rng.random() < self.spec.join_two else 1
            new = [n for n in self.target.next_ids(count) if n not in members]
            after = members + new
            guard = self.base.over(members, after)
            return (new, after) if new and guard.allows(busy | set(new), new) else None
        if len(members) - 1 < self.base.replicas + 1:
            return None  # the ring keeps replicas + 1 members without the one leaving
        free = [n for n in members if n not in busy]
        for node in self.rng.sample(free, len(free)):
            rest = [n for n in members if n != node]
            if self.base.over(members, rest).allows(busy | {node}, {node}):
                return [node], rest
        return None

    def _start_change(self, kind: str, now: float) -> Fault | None:
        plan = self._plan_change(kind)
        if plan is None:
            self.skipped[kind] += 1
            return None
        nodes, after = plan
        target = self.target
        if kind == JOIN:
            nodes = [n for n in target.join(len(nodes)) if n not in self.nodes]
            after = self.nodes + nodes
            if not nodes:
                self.skipped[kind] += 1
                return None
        elif kind == DECOMMISSION and not target.decommission(nodes[0]):
            self.skipped[kind] += 1
            return None
        fault = self._new(kind, nodes, now)
        fault.detail["members_before"] = sorted(self.nodes)
        fault.phase, fault.phase_start = {JOIN: "joining", DECOMMISSION: "leaving",
                                          WIPE: "rejoining", REMOVE: "down"}[kind], now
        if kind == DECOMMISSION:
            fault.resend_at = now + self.spec.resend
        elif kind in (WIPE, REMOVE):
            target.hold(nodes[0])
            if kind == WIPE:
                target.wipe(nodes[0])
                target.start(nodes[0])
        self.guard = self.base.over(self.nodes, after)
        return self._started(fault)

    def _change_done(self, fault: Fault, now: float) -> bool:
        """Whether the map shows the change done and settled; moves a remove on from
        ``down`` to ``rejoining`` once the majority has removed its node."""
        view = self.target.ring()
        if view is None:
            if fault.phase == "down" and now >= fault.phase_start + self._remove_wait():
                self._restart(fault, now, removed=False)
            return False
        node = fault.nodes[0]
        if fault.phase == "down":
            removed = node not in view.members and view.stable
            if removed or now >= fault.phase_start + self._remove_wait():
                self._restart(fault, now, removed)
            return False
        if fault.kind == DECOMMISSION and node in view.members and view.settled \
                and now >= fault.resend_at:
            # Only the node that took the command proposes it; were that one restarted
            # meanwhile, the command would be lost. A second copy is the same change.
            fault.resend_at = now + self.spec.resend
            self.target.decommission(node)
        if not view.stable:
            return False
        if fault.kind == JOIN:
            done = set(fault.nodes) <= view.members
        elif fault.kind == DECOMMISSION:
            done = node not in view.members and self.target.exited(node)
        else:
            done = node in view.members
        if not done:
            return False
        self._adopt(view)
        fault.until = now
        fault.detail.update(members_after=sorted(view.members), epoch=view.epoch)
        return True

    def _remove_wait(self) -> float:
        return self.spec.t_remove + self.spec.remove_patience

    def _restart(self, fault: Fault, now: float, removed: bool | None) -> None:
        """Start a remove's node again; ``removed``: whether the map showed it removed
        (None: the run ended first)."""
        fault.detail["removed"] = removed
        fault.detail["down_for"] = round(now - fault.phase_start, 3)
        fault.phase, fault.phase_start = "rejoining", now
        self.target.start(fault.nodes[0])

    def _adopt(self, view: RingView) -> None:
        """Take the ring as the map shows it (kept in the order nodes came in)."""
        self.nodes = [n for n in self.nodes if n in view.members] + sorted(
            view.members - set(self.nodes))
        self.guard = self.base.over(self.nodes)

    # ----------------------------------------------------------------- the end

    def heal(self, now: float) -> list[Fault]:
        """End every fault that can end now (pauses and network faults at once; a node
        a remove holds down is started); returns the faults still waiting (kills for
        their nodes to come back, ring changes to finish): call again to finish them."""
        self.next_at = float("inf")
        for fault in list(self.active):
            if fault.phase == "down":
                self._restart(fault, now, removed=None)
            if fault.kind in (PAUSE, *NETWORK_FAULTS):
                fault.until = now
                self._end(fault, now)
            elif self._due(fault, now):
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
