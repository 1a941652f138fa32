"""The nemesis's schedule: never more than max_down replicas of a key under a fault,
and ring changes one at a time, each keeping a quorum of every key's replicas."""

from __future__ import annotations

import functools
import random

import pytest

from zkv.chaos.nemesis import (
    DECOMMISSION,
    DEFAULT_KINDS,
    FAULT_KINDS,
    JOIN,
    KILL,
    MEMBERSHIP_FAULTS,
    PARTITION,
    PAUSE,
    REMOVE,
    WIPE,
    Nemesis,
    NemesisSpec,
    ReplicaGuard,
    RingView,
    parse_kinds,
)
from zkv.core.quorum import needed
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


def nemesis(kinds=DEFAULT_KINDS, max_down=2, seed=1, nodes=NODES, target=None):
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
    assert set(n.injected) == set(DEFAULT_KINDS)


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
    assert set(MEMBERSHIP_FAULTS) <= set(FAULT_KINDS)
    assert parse_kinds("kill,pause,membership") == ("kill", "pause", "join", "decommission",
                                                    "wipe", "remove")
    assert parse_kinds("membership,join") == MEMBERSHIP_FAULTS
    with pytest.raises(ValueError, match="unknown fault kind 'explode'"):
        parse_kinds("kill,explode")


# --------------------------------------------------------------------------- ring changes

T_REMOVE = 8.0
CHANGE = 2.0  # seconds a fake ring change takes


class FakeCluster(FakeTarget):
    """A FakeTarget whose cluster map changes as a real one would, CHANGE seconds after
    being asked: joins, decommissions, the removal of a node down past t_remove, and the
    replacement of a wiped node by a new member. ``tick(now)`` moves it on."""

    def __init__(self, nodes: list[str]) -> None:
        super().__init__()
        self.now = 0.0
        self.epoch = 1
        self.members = set(nodes)  # the map's members (ring and target)
        self.listed = list(nodes)  # every node ever started (cluster.json)
        self.held: dict[str, float] = {}  # node kept down -> since when
        self.wiped: set[str] = set()  # running again on an empty directory, not yet back
        self.gone: set[str] = set()  # decommissioned: process exited
        self.pending: list[tuple[float, str, str]] = []  # (when, what, node)
        self.started_while_member: list[str] = []  # remove: started before it was removed

    def next_ids(self, count: int) -> list[str]:
        return [f"node-{len(self.listed) + i + 1}" for i in range(count)]

    def join(self, count: int) -> list[str]:
        ids = self.next_ids(count)
        self.listed += ids
        self.calls += [("join", i) for i in ids]
        self.pending += [(self.now + CHANGE, "join", i) for i in ids]
        return ids

    def decommission(self, node: str) -> bool:
        self.calls.append(("decommission", node))
        if not any(what == "leave" and n == node for _, what, n in self.pending):
            self.pending.append((self.now + CHANGE, "leave", node))
        return True

    def hold(self, node: str) -> object:
        self.calls.append(("hold", node))
        self.held[node] = self.now
        return 1

    def wipe(self, node: str) -> None:
        assert node in self.held, "a node is wiped only while it is down"
        self.calls.append(("wipe", node))
        self.wiped.add(node)

    def start(self, node: str) -> None:
        self.calls.append(("start", node))
        del self.held[node]
        if node in self.wiped or node not in self.members:
            self.pending.append((self.now + CHANGE, "rejoin", node))
        elif node not in self.wiped:
            self.started_while_member.append(node)

    def exited(self, node: str) -> bool:
        return node in self.gone

    def tick(self, now: float) -> None:
        self.now = now
        for node, since in self.held.items():
            if node in self.members and now - since > T_REMOVE + 1:
                self.members.discard(node)  # removed by the majority
                self.epoch += 2
        for due in [p for p in self.pending if p[0] <= now]:
            self.pending.remove(due)
            _, what, node = due
            self.epoch += 2
            if what == "leave":
                self.members.discard(node)
                self.gone.add(node)
            else:
                self.members.add(node)
                self.wiped.discard(node)

    def ring(self) -> RingView | None:
        confirmed = self.members - set(self.held) - self.wiped - self.gone
        return RingView(self.epoch, frozenset(self.members), not self.pending,
                        frozenset(confirmed))


def membership_nemesis(kinds, seed=1, nodes=NODES, max_down=2):
    target = FakeCluster(nodes)
    n, _, _ = nemesis(kinds=kinds, seed=seed, nodes=nodes, target=target, max_down=max_down)
    return n, target


def run_cluster(n: Nemesis, target: FakeCluster, until: float, on_step=None) -> float:
    now = 0.0
    while now < until:
        target.tick(now)
        n.step(now)
        if on_step:
            on_step(now)
        for fault in n.active:
            if fault.kind == KILL and now - fault.start > 1.0:
                target.returned.update(fault.nodes)
        now += 0.05
    return now


def heal(n: Nemesis, target: FakeCluster, now: float) -> float:
    while n.heal(now):
        for fault in n.active:
            if fault.kind == KILL:
                target.returned.update(fault.nodes)
        now += 0.05
        target.tick(now)
        assert now < 1000, [f.record() for f in n.active]
    return now


@functools.cache
def _replica_sets(members: frozenset[str]) -> frozenset[frozenset[str]]:
    ring = Ring(members, 3, 64)
    return frozenset(frozenset(ring.segment_replicas(s)) for s in range(ring.segments))


def replica_sets(members) -> frozenset[frozenset[str]]:
    return _replica_sets(frozenset(members))


@pytest.mark.parametrize("seed", range(4))
def test_ring_changes_run_one_at_a_time_and_leave_a_quorum_of_every_key_untouched(seed):
    n, target = membership_nemesis((KILL, PAUSE, *MEMBERSHIP_FAULTS), seed=seed)
    seen_members = []

    def check(now: float) -> None:
        changes = [f for f in n.active if f.kind in MEMBERSHIP_FAULTS]
        assert len(changes) <= 1, "one ring change at a time"
        faulty = n.faulty()
        for change in changes:
            before = change.detail["members_before"]
            after = [m for m in before if m not in change.nodes] + [
                m for m in change.nodes if change.kind == JOIN]
            for s in replica_sets(before) | replica_sets(after):
                if s & set(change.nodes):
                    assert len(s) - len(s & faulty) >= needed("quorum", len(s)), (
                        f"{change.kind} {change.nodes} with {sorted(faulty)} leaves {sorted(s)} "
                        "without a quorum")
        seen_members.append(len(target.members))

    now = run_cluster(n, target, 600.0, check)
    heal(n, target, now)
    assert set(n.injected) >= set(MEMBERSHIP_FAULTS), n.injected
    assert n.injected[KILL] > 0 and n.injected[PAUSE] > 0, n.injected
    for fault in n.history:
        if fault.kind in (DECOMMISSION, WIPE, REMOVE):
            assert len(fault.detail["members_before"]) >= 5, "the ring keeps replicas + 1"
    assert 4 <= min(seen_members) and max(seen_members) <= len(NODES) + 2
    assert sorted(n.nodes) == sorted(target.members), "the nemesis follows the map"
    assert n.guard.replica_sets == replica_sets(target.members)
    assert not target.started_while_member
    assert all(f.end is not None for f in n.history)


def test_a_ring_change_waits_while_another_fault_holds_a_replica_of_its_keys():
    guard = ReplicaGuard([("a", "b", "c")], max_down=2)
    assert guard.allows({"a", "b"}), "two kills of one key's replicas: allowed"
    assert not guard.allows({"a", "b"}, changing={"a"}), "a kill beside a removal: not"
    assert guard.allows({"a", "d"}, changing={"a"})

    n, target = membership_nemesis((PAUSE,))
    target.tick(0.0)
    assert n._start_one(0.0).kind == PAUSE
    assert n._start_change(DECOMMISSION, 0.0) is None, "every other node shares a key with it"
    assert n.skipped[DECOMMISSION] == 1


def test_a_remove_keeps_its_node_down_until_the_majority_removed_it():
    n, target = membership_nemesis((REMOVE,))
    target.tick(0.0)
    fault = n._start_change(REMOVE, 0.0)
    (node,) = fault.nodes
    assert target.calls == [("hold", node)] and fault.phase == "down"
    now = 0.0
    while ("start", node) not in target.calls:
        now += 0.05
        target.tick(now)
        assert n.step(now) is None and now < 60
    assert now > T_REMOVE, "down for longer than t_remove"
    assert node not in target.members, "started only once removed"
    assert fault.detail["removed"] is True and fault.phase == "rejoining"
    n.next_at = float("inf")
    while fault in n.active:
        now += 0.05
        target.tick(now)
        n.step(now)
    assert node in target.members and fault.detail["members_after"] == sorted(NODES)
    assert n.nodes == NODES


def test_a_wipe_ends_once_the_node_is_back_as_a_member():
    n, target = membership_nemesis((WIPE,))
    target.tick(0.0)
    fault = n._start_change(WIPE, 0.0)
    (node,) = fault.nodes
    assert target.calls == [("hold", node), ("wipe", node), ("start", node)]
    n.next_at = float("inf")
    now = 0.0
    while fault in n.active:
        now += 0.05
        target.tick(now)
        n.step(now)
    assert now >= CHANGE and node not in target.wiped


def test_a_decommission_ends_when_the_node_left_and_exited_and_the_guard_follows():
    n, target = membership_nemesis((DECOMMISSION,))
    target.tick(0.0)
    fault = n._start_change(DECOMMISSION, 0.0)
    (node,) = fault.nodes
    n.next_at = float("inf")
    now = 0.0
    while fault in n.active:
        now += 0.05
        target.tick(now)
        n.step(now)
    assert node not in n.nodes and len(n.nodes) == 4
    assert n.guard.replica_sets == replica_sets(n.nodes)
    assert n._start_change(DECOMMISSION, now) is None, "4 members: no more decommissions"


def test_a_decommission_is_sent_again_while_the_map_does_not_show_it():
    n, target = membership_nemesis((DECOMMISSION,))
    target.decommission = lambda node: target.calls.append(("decommission", node)) or True
    target.tick(0.0)
    fault = n._start_change(DECOMMISSION, 0.0)
    n.next_at = float("inf")
    run_cluster(n, target, 10.0)
    sent = [c for c in target.calls if c == ("decommission", fault.nodes[0])]
    assert len(sent) == 1 + int(10.0 // n.spec.resend), sent


def test_joins_stop_at_max_members_and_a_join_ends_when_every_member_has_the_new_map():
    n, target = membership_nemesis((JOIN,))
    now = run_cluster(n, target, 120.0)
    heal(n, target, now)
    assert len(n.nodes) == len(NODES) + 2 == len(target.members)
    joined = [node for f in n.history for node in f.nodes]
    assert joined == ["node-6", "node-7"]
    assert n.skipped[JOIN] > 0


def test_heal_starts_a_node_a_remove_holds_down_and_waits_for_it_to_rejoin():
    n, target = membership_nemesis((REMOVE,))
    target.tick(0.0)
    fault = n._start_change(REMOVE, 0.0)
    target.tick(1.0)
    n.heal(1.0)
    assert ("start", fault.nodes[0]) in target.calls
    assert fault.detail["removed"] is None, "healed before the map showed it removed"
    heal(n, target, 1.0)
    assert fault.end is not None and n.nodes == NODES
