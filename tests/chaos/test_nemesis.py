"""The nemesis's schedule: never more than max_down replicas of a key under a fault."""

from __future__ import annotations

import random

import pytest

from zkv.chaos.nemesis import (
    FAULT_KINDS,
    KILL,
    PARTITION,
    PAUSE,
    Nemesis,
    NemesisSpec,
    ReplicaGuard,
    parse_kinds,
)
from zkv.core.ring import Ring

NODES = [f"node-{i}" for i in range(1, 6)]


class FakeTarget:
    """Records what the nemesis did; a killed node comes back when the test says so."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.paused: set[str] = set()
        self.rules: dict[str, tuple] = {}
        self.returned: set[str] = set()
        self.pid = 100

    def kill(self, node: str) -> object:
        self.calls.append(("kill", node))
        self.returned.discard(node)
        self.pid += 1
        return self.pid

    def back(self, node: str, token: object) -> bool:
        return node in self.returned

    def pause(self, node: str) -> None:
        self.calls.append(("pause", node))
        self.paused.add(node)

    def resume(self, node: str) -> None:
        self.calls.append(("resume", node))
        self.paused.discard(node)

    def partition(self, fault_id: str, side: list[str], rest: list[str]) -> None:
        self.rules[fault_id] = ("partition", tuple(side), tuple(rest))

    def loss(self, fault_id: str, node: str, percent: int) -> None:
        self.rules[fault_id] = ("loss", node, percent)

    def slow(self, fault_id: str, node: str, delay_ms: int, rate_kbit: int) -> None:
        self.rules[fault_id] = ("slow", node)

    def clear(self, fault_id: str) -> None:
        self.rules.pop(fault_id)


def nemesis(kinds=FAULT_KINDS, max_down=2, seed=1, nodes=NODES, target=None):
    ring = Ring(nodes, 3, 64)
    target = target or FakeTarget()
    spec = NemesisSpec(kinds=tuple(kinds), max_down=max_down, interval=(0.1, 0.5))
    return Nemesis(spec, nodes, ReplicaGuard.for_ring(ring, max_down), target,
                   random.Random(seed)), target, ring


def run(n: Nemesis, target: FakeTarget, until: float, on_step=None) -> None:
    now = 0.0
    while now < until:
        n.step(now)
        if on_step:
            on_step(now)
        # a killed node is back a second after its kill
        for fault in n.active:
            if fault.kind == KILL and now - fault.start > 1.0:
                target.returned.update(fault.nodes)
        now += 0.05


@pytest.mark.parametrize("max_down", [1, 2])
@pytest.mark.parametrize("seed", range(5))
def test_no_replica_set_ever_has_more_than_max_down_members_under_faults(seed, max_down):
    n, target, ring = nemesis(max_down=max_down, seed=seed)
    sets = {ring.segment_replicas(s) for s in range(ring.segments)}
    worst = []

    def check(now: float) -> None:
        faulty = n.faulty()
        worst.append(max(len(faulty & set(s)) for s in sets))

    run(n, target, 120.0, check)
    assert max(worst) <= max_down
    assert sum(n.injected.values()) > 20, "the schedule should inject plenty of faults"
    assert set(n.injected) == set(FAULT_KINDS)


def test_a_node_is_never_under_two_faults_at_once():
    n, target, _ = nemesis(seed=3)

    def check(now: float) -> None:
        nodes = [node for f in n.active for node in f.nodes]
        assert len(nodes) == len(set(nodes))

    run(n, target, 60.0, check)


def test_guard_counts_replicas_of_one_key_not_nodes_in_general():
    guard = ReplicaGuard([("a", "b", "c"), ("d", "e", "f")], max_down=2)
    assert guard.allows({"a", "b", "d", "e"})  # two of each set
    assert not guard.allows({"a", "b", "c"})


def test_a_kill_lasts_until_the_node_serves_again_then_the_rejoin_time():
    n, target, _ = nemesis(kinds=[KILL], max_down=1)
    n.next_at = 0.0
    n.step(0.0)
    (fault,) = n.active
    n.step(10.0)
    assert n.active == [fault], "still down: the supervisor has not restarted it"
    target.returned.update(fault.nodes)
    n.next_at = float("inf")
    n.step(11.0)
    assert n.active == [fault], "restarted, but it needs time to rejoin"
    n.step(11.0 + n.spec.rejoin)
    assert n.active == [] and fault.end == 11.0 + n.spec.rejoin


def test_partitions_cut_off_a_minority():
    n, target, _ = nemesis(kinds=[PARTITION], max_down=3)
    run(n, target, 30.0)
    sides = [f.nodes for f in n.history]
    assert sides and all(1 <= len(side) <= 2 for side in sides)


def test_heal_resumes_paused_nodes_and_lifts_network_rules_at_once():
    n, target, _ = nemesis(seed=7)
    run(n, target, 20.0)
    waiting = n.heal(20.0)
    assert all(f.kind == KILL for f in waiting), "only kills wait (for their restart)"
    for fault in waiting:
        target.returned.update(fault.nodes)
    assert n.heal(20.0 + n.spec.rejoin) == []
    assert not target.paused
    assert not target.rules
    assert all(f.end is not None for f in n.history)
    pauses = [c for c in target.calls if c[0] == PAUSE]
    assert len([c for c in target.calls if c[0] == "resume"]) == len(pauses)


def test_fault_kinds_parse_from_the_command_line():
    assert parse_kinds("kill, pause") == ("kill", "pause")
    assert parse_kinds("all") == FAULT_KINDS
    with pytest.raises(ValueError, match="unknown fault kind 'explode'"):
        parse_kinds("kill,explode")
