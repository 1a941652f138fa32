"""EmulNet, specified with a toy node that speaks the real Node interface.

The toy is a single-primary store: the seed node (n0) holds the data; any other
node forwards a client's request to it (ReadRequest/WriteRequest), answers when
the primary replies, and says ``unavailable`` when it does not in time. It
gossips through Publish and subscribes only to the seed, keeps a request
counter in memory and a boot counter on disk. That is enough to watch every
part of the simulator: client calls, point-to-point sends, gossip, timers,
crashes and the store surviving them.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from zkv.core.actions import ClientCall, Deliver, Event, Publish, Reply, Send, Shutdown, Tick
from zkv.core.config import NodeConfig
from zkv.core.messages import (
    ClientReply,
    ClientRequest,
    DecodeError,
    Gossip,
    MemberState,
    ReadReply,
    ReadRequest,
    WriteReply,
    WriteRequest,
)
from zkv.model.record import Record
from zkv.model.versions import HybridClock
from zkv.sim import SCENARIOS, RunSpec, SimCluster, format_report, run_random, run_scenario
from zkv.sim.client import ClientResult
from zkv.sim.durability import find_lost_writes
from zkv.sim.history import Op, op_from_result
from zkv.sim.host import StepError
from zkv.sim.nemesis import NemesisSpec
from zkv.sim.scheduler import Scheduler
from zkv.sim.workload import WorkloadSpec

# ----------------------------------------------------------------------------- toy node


class ToyNode:
    def __init__(self, config: NodeConfig, store, now: float) -> None:
        self.config = config
        self.store = store
        self.node_id = config.node_id
        self.address = config.address
        self.primary = config.address == config.seeds[0]
        self.boots = int(store.get_meta("boots") or b"0") + 1
        store.put_meta("boots", str(self.boots).encode())
        self.requests_seen = 0  # memory: lost on a crash
        self.heartbeat = 0
        self.clock = HybridClock(self.node_id)
        self.next_gossip = now + config.gossip_interval
        self.ops = 0
        self.pending: dict[int, tuple[object, ClientRequest, float]] = {}
        self.applied: set[tuple[str, int]] = set()

    # -- interface

    def subscriptions(self) -> set[str]:
        return (set(self.config.seeds) | set(self.config.extra.get("subscribe", ()))) - {
            self.address}

    def next_wakeup(self) -> float:
        return min([self.next_gossip] + [deadline for _, _, deadline in self.pending.values()])

    def step(self, event, now: float) -> list:
        if isinstance(event, Tick):
            return self._tick(now)
        if isinstance(event, ClientCall):
            return self._client(event.client, event.message, now)
        if isinstance(event, Deliver):
            return self._peer(event.sender, event.message, now)
        if isinstance(event, Shutdown):
            return [Event("shutdown", {})]
        raise TypeError(event)

    # -- behaviour

    def _tick(self, now: float) -> list:
        out: list = []
        if now >= self.next_gossip:
            self.heartbeat += 1
            me = MemberState(self.node_id, self.address, self.boots, self.heartbeat, "alive")
            out.append(Publish(Gossip(self.node_id, [me])))
            self.next_gossip = now + self.config.gossip_interval
        for op_id, (client, req, deadline) in sorted(self.pending.items()):
            if deadline <= now:
                del self.pending[op_id]
                reply = ClientReply(req.req_id, "unavailable", None, "no primary")
                out.append(Reply(client, reply))
        return out

    def _client(self, client, req: ClientRequest, now: float) -> list:
        self.requests_seen += 1
        if self.primary:
            status, value = self._apply(req.op, req.key, req.value, now)
            return [Reply(client, ClientReply(req.req_id, status, value, ""))]
        self.ops += 1
        op_id = self.boots * 1_000_000 + self.ops
        self.pending[op_id] = (client, req, now + req.timeout_ms / 1000)
        primary = self.config.seeds[0]
        if req.op == "get":
            return [Send("", primary, ReadRequest(op_id, req.key))]
        version = self.clock.next(int(now * 1000))
        record = (Record(version, False, req.value or b"") if req.op == "put"
                  else Record.tomb(version))
        return [Send("", primary, WriteRequest(op_id, req.key, record))]

    def _apply(self, op: str, key: bytes, value: bytes | None, now: float):
        current = self.store.get(key)
        live = current is not None and current.live
        if op == "get":
            return ("ok", current.value) if live else ("not_found", None)
        version = self.clock.next(int((now + self.config.wall_offset) * 1000))
        if op == "put":
            self.store.put(key, Record(version, False, value or b""))
            return "ok", None
        if not live:
            return "not_found", None
        self.store.put(key, Record.tomb(version))
        return "ok", None

    def _peer(self, sender: str, msg, now: float) -> list:
        if isinstance(msg, Gossip):
            return [Event("gossip_received", {"from": msg.sender})]
        if isinstance(msg, ReadRequest):
            record = self.store.get(msg.key)
            return [Send(sender, "", ReadReply(msg.op_id, msg.key, record, None))]
        if isinstance(msg, WriteRequest):
            if (sender, msg.op_id) in self.applied:
                return []  # a duplicate of a write already applied
            self.applied.add((sender, msg.op_id))
            op = "delete" if msg.record.tombstone else "put"
            status, _ = self._apply(op, msg.key, msg.record.value, now)
            return [Send(sender, "", WriteReply(msg.op_id, msg.key, status == "ok", None))]
        if isinstance(msg, (ReadReply, WriteReply)):
            entry = self.pending.pop(msg.op_id, None)
            if entry is None:
                return []
            client, req, _ = entry
            if isinstance(msg, ReadReply):
                live = msg.record is not None and msg.record.live
                reply = ClientReply(req.req_id, "ok" if live else "not_found",
                                    msg.record.value if live else None, "")
            else:
                reply = ClientReply(req.req_id, "ok" if msg.accepted else "not_found", None, "")
            return [Reply(client, reply)]
        return []


def toy_cluster(seed: int = 1, nodes: int = 3, **kw) -> SimCluster:
    return SimCluster(seed, nodes, node_factory=ToyNode, **kw)


def received_gossip(cluster: SimCluster, node: str, since: float = 0.0) -> set[str]:
    return {e.fields["from"] for e in cluster.events.filter("gossip_received", node, since)}


# ----------------------------------------------------------------------------- scheduler


def test_events_at_the_same_instant_run_in_scheduling_order():
    scheduler = Scheduler()
    seen: list[str] = []
    for name in "abc":
        scheduler.call_at(1.0, seen.append, name)
    scheduler.call_at(0.5, seen.append, "first")
    scheduler.call_at(1.0, seen.append, "cancelled").cancel()
    scheduler.run_until(2.0)
    assert seen == ["first", "a", "b", "c"]
    assert scheduler.now == 2.0


def test_run_until_condition_reports_a_missed_deadline():
    cluster = toy_cluster()
    assert cluster.run_until_condition(lambda: False, deadline=1.5) is False
    assert cluster.now == 1.5
    assert cluster.run_until_condition(lambda: cluster.now >= 1.7, deadline=3.0) is True
    assert cluster.now < 3.0


# ----------------------------------------------------------------------------- basics


def test_nodes_are_named_addressed_and_seeded_by_n0():
    cluster = toy_cluster(nodes=3)
    assert cluster.node_ids == ["n0", "n1", "n2"]
    config = cluster.host("n2").config
    assert config.address == "sim://n2"
    assert config.seeds == ("sim://n0",)
    assert config.wall_offset == 1.7e9


def test_requests_through_any_node_reach_the_primary():
    cluster = toy_cluster()
    assert cluster.put("n1", "k", "v1").status == "ok"
    result = cluster.get("n2", "k")
    assert (result.status, result.value) == ("ok", b"v1")
    assert cluster.delete("n0", "k").status == "ok"
    assert cluster.get("n1", "k").status == "not_found"
    assert cluster.delete("n2", "k").status == "not_found"


def test_concurrent_submissions_each_get_their_reply():
    cluster = toy_cluster()
    pending = [cluster.submit(f"n{i % 3}", "put", f"k{i}", f"v{i}") for i in range(6)]
    assert cluster.run_until_condition(lambda: all(p.done for p in pending), deadline=5.0)
    assert [p.result.status for p in pending] == ["ok"] * 6
    assert len({p.result.process for p in pending}) == 6  # one client each
    assert cluster.store("n0").get(b"k5").value == b"v5"


# ----------------------------------------------------------------------------- determinism


def busy_run(seed: int) -> tuple[str, list[str]]:
    cluster = toy_cluster(seed, 4, drop=0.1, duplicate=0.1, delay=(0.001, 0.05))
    statuses = []
    for i in range(12):
        pending = [cluster.submit(f"n{(i + j) % 4}", op, f"k{j}", f"v{i}")
                   for j, op in enumerate(("put", "get", "delete"))]
        cluster.run_until_condition(lambda pending=pending: all(p.done for p in pending),
                                    cluster.now + 5)
        statuses += [p.result.status for p in pending]
    cluster.run_for(1.0)
    return cluster.trace_digest(), statuses


def test_same_seed_gives_the_same_trace():
    assert busy_run(7) == busy_run(7)
    assert busy_run(7)[0] != busy_run(8)[0]


# ----------------------------------------------------------------------------- faults


def test_drop_probability_one_loses_every_message():
    cluster = toy_cluster(drop=1.0)
    result = cluster.put("n0", "k", "v", timeout=1.0)
    assert result.status == "timeout"
    cluster.run_for(2.0)
    stats = cluster.network.stats
    assert stats.sent > 0
    assert stats.delivered == 0
    assert stats.dropped == stats.sent
    assert not cluster.events.of_kind("gossip_received")


def test_partition_blocks_traffic_and_heal_restores_it():
    cluster = toy_cluster()
    cluster.run_for(1.0)
    assert received_gossip(cluster, "n1") == {"n0"}

    cluster.partition({"n0"})  # n0 alone, n1 and n2 together; clients reach everyone
    since = cluster.now
    assert cluster.put("n1", "k", "v", timeout=0.5).status == "unavailable"
    assert cluster.put("n0", "k", "direct").status == "ok"
    cluster.run_for(1.0)
    assert received_gossip(cluster, "n1", since) == set()
    assert cluster.network.stats.drop_reasons["partition"] > 0

    cluster.heal()
    since = cluster.now
    assert cluster.put("n1", "k", "v2").status == "ok"
    cluster.run_for(1.0)
    assert received_gossip(cluster, "n1", since) == {"n0"}
    assert cluster.get("n2", "k").value == b"v2"


def test_an_isolated_node_is_unreachable_even_for_clients():
    cluster = toy_cluster()
    cluster.isolate("n1")
    assert cluster.get("n1", "k", timeout=0.5).status == "timeout"
    assert cluster.get("n2", "k").status == "not_found"
    cluster.heal()
    assert cluster.get("n1", "k").status == "not_found"


def test_duplication_delivers_extra_copies_and_clients_ignore_them():
    cluster = toy_cluster(duplicate=1.0)
    assert cluster.put("n1", "k", "v").status == "ok"
    cluster.run_for(0.5)
    stats = cluster.network.stats
    client_requests = stats.sent_by_type["ClientRequest"]
    assert client_requests == 1
    assert stats.duplicated == stats.sent - client_requests > 0  # requests are never doubled
    assert stats.delivered == 2 * stats.sent - client_requests
    assert sum(c.stale_replies for c in cluster.clients) == 1  # the doubled reply is ignored
    assert len(cluster.history) == 1


def test_link_faults_apply_to_one_link_only():
    cluster = toy_cluster()
    cluster.set_link("n0", "n2", drop=1.0)
    cluster.run_for(1.0)
    assert received_gossip(cluster, "n1") == {"n0"}
    assert received_gossip(cluster, "n2") == set()


def test_messages_arrive_reordered_under_random_delay():
    cluster = toy_cluster(delay=(0.001, 0.2), record_trace=True)
    pending = [cluster.submit("n0", "put", "k", f"v{i}") for i in range(20)]
    cluster.run_until_condition(lambda: all(p.done for p in pending), 5.0)
    arrivals = [frame for _, src, dst, _, frame in cluster.trace if dst == "n0"]
    sent = [p.result.sent_value for p in pending]
    arrived = [v for v in sent if any(v in f for f in arrivals)]
    order = sorted(range(20), key=lambda i: next(j for j, f in enumerate(arrivals)
                                                  if sent[i] in f))
    assert sorted(arrived) == sorted(sent)
    assert order != list(range(20))


def test_a_frame_the_decoder_rejects_stops_the_run():
    class Garbler(ToyNode):
        def _client(self, client, req, now):
            return [Reply(client, ClientReply(-1, "ok", None, ""))]  # req_id must be >= 0

    cluster = SimCluster(1, 2, node_factory=Garbler)
    with pytest.raises(DecodeError):
        cluster.get("n1", "k")


def test_clock_skew_gives_each_node_its_own_wall_clock():
    cluster = toy_cluster(nodes=4, clock_skew=0.5)
    offsets = [cluster.host(n).config.wall_offset for n in cluster.node_ids]
    assert len(set(offsets)) == 4
    assert all(abs(offset - 1.7e9) <= 0.5 for offset in offsets)


def test_an_exception_in_a_node_names_the_node_time_and_seed():
    class Faulty(ToyNode):
        def _client(self, client, req, now):
            raise ZeroDivisionError("boom")

    cluster = SimCluster(42, 2, node_factory=Faulty)
    with pytest.raises(StepError, match=r"n1 failed at t=.* \(seed 42\)"):
        cluster.get("n1", "k")
    report = run_random(42, RunSpec(nodes=2, duration=1.0, workload=WorkloadSpec(clients=1, keys=1),
                                    node_factory=Faulty))
    assert not report.ok and "ZeroDivisionError" in report.error


# ----------------------------------------------------------------------------- crashes


def test_a_crash_loses_memory_but_keeps_the_store():
    cluster = toy_cluster()
    assert cluster.put("n0", "k", "kept").status == "ok"
    old = cluster.node("n0")
    assert old.requests_seen == 1

    cluster.crash("n0")
    assert cluster.node("n0") is None
    assert cluster.get("n0", "k", timeout=0.5).status == "timeout"
    assert cluster.get("n1", "k", timeout=0.5).status == "unavailable"

    cluster.restart("n0")
    new = cluster.node("n0")
    assert new is not old and new.requests_seen == 0 and new.boots == 2
    assert cluster.get("n1", "k").value == b"kept"


def test_a_crashed_node_fires_no_timers_and_receives_nothing():
    cluster = toy_cluster()
    cluster.run_for(1.0)
    cluster.crash("n1")
    since = cluster.now
    cluster.run_for(0.1)  # gossip already in flight to n1 is lost on arrival
    lost_in_flight = cluster.network.stats.drop_reasons["down"]
    cluster.run_for(2.0)
    assert [e for e in cluster.events.of_node("n1") if e.time > since] == []
    # a crashed node subscribes to nothing, so no new gossip is even sent its way
    assert cluster.network.stats.drop_reasons["down"] == lost_in_flight
    assert cluster.get("n1", "k", timeout=0.2).status == "timeout"
    assert cluster.network.stats.drop_reasons["down"] == lost_in_flight + 1


def test_a_node_that_leaves_gets_shutdown_then_is_removed():
    cluster = toy_cluster()
    cluster.run_for(0.5)
    cluster.stop("n2", grace=1.0)
    assert cluster.events.filter("shutdown", "n2")
    cluster.run_for(0.5)
    assert cluster.node("n2") is not None
    cluster.run_for(1.0)
    assert cluster.node("n2") is None and cluster.gone("n2")
    assert cluster.get("n2", "k", timeout=0.2).status == "timeout"


def test_a_node_added_later_joins_through_the_seed():
    cluster = toy_cluster()
    cluster.run_for(1.0)
    node_id = cluster.add_node()
    assert node_id == "n3" and cluster.host("n3").config.seeds == ("sim://n0",)
    assert cluster.put("n3", "k", "v").status == "ok"
    cluster.run_for(1.0)
    assert received_gossip(cluster, "n3") == {"n0"}


# ----------------------------------------------------------------------------- gossip


def test_publish_reaches_only_running_subscribers():
    cluster = toy_cluster(nodes=3)
    cluster.add_node({"extra": {"subscribe": ["sim://n1"]}})
    cluster.run_for(1.0)
    assert received_gossip(cluster, "n0") == set()  # n0 subscribes to nobody
    assert received_gossip(cluster, "n2") == {"n0"}
    assert received_gossip(cluster, "n3") == {"n0", "n1"}

    cluster.crash("n3")
    sent_before = cluster.network.stats.sent_by_type["Gossip"]
    cluster.run_for(1.0)
    per_round = cluster.network.stats.sent_by_type["Gossip"] - sent_before
    assert per_round == 2 * 5  # n0 -> n1, n2 (n3 is down, so not a subscriber), 5 rounds


# ----------------------------------------------------------------------------- history


def result(op, status, value=None, sent=None):
    return ClientResult(status, value, "", op, b"k", sent, "n0", 3, 1, 1.0, 2.0)


@pytest.mark.parametrize(
    ("op", "status", "outcome", "end", "value", "found"),
    [
        ("get", "ok", "ok", 2.0, b"x", None),
        ("get", "not_found", "ok", 2.0, None, None),
        ("get", "timeout", "fail", 2.0, None, None),
        ("get", "unavailable", "fail", 2.0, None, None),
        ("put", "ok", "ok", 2.0, b"w", None),
        ("put", "unavailable", "fail", 2.0, b"w", None),  # certainly no effect
        ("put", "unknown", "unknown", None, b"w", None),
        ("put", "timeout", "unknown", None, b"w", None),
        ("put", "invalid", "fail", 2.0, b"w", None),
        ("delete", "ok", "ok", 2.0, None, True),
        ("delete", "not_found", "ok", 2.0, None, False),
        ("delete", "timeout", "unknown", None, None, None),
        ("delete", "invalid", "fail", 2.0, None, None),
        ("create", "ok", "ok", 2.0, b"w", False),
        ("create", "exists", "ok", 2.0, b"w", True),
        ("update", "not_found", "ok", 2.0, b"w", False),
        ("cas", "ok", "ok", 2.0, b"w", True),
        ("cas", "condition_failed", "ok", 2.0, b"w", False),
        ("cas", "unknown", "unknown", None, b"w", None),
    ],
)
def test_client_results_map_to_history_outcomes(op, status, outcome, end, value, found):
    got = op_from_result(result(op, status, value=b"x" if op == "get" else None,
                                sent=None if op in ("get", "delete") else b"w"))
    assert got == Op(3, op, b"k", value, outcome, 1.0, end, found)


def test_an_old_value_resurfacing_is_a_lost_write():
    ops = [
        Op(0, "put", b"k", b"old", "ok", 0.0, 1.0),
        Op(1, "put", b"k", b"new", "ok", 2.0, 3.0),
        Op(2, "put", b"k", b"maybe", "unknown", 2.5, None),
    ]
    assert find_lost_writes(ops, {b"k": b"new"}) == []
    assert find_lost_writes(ops, {b"k": b"maybe"}) == []
    assert [w.final for w in find_lost_writes(ops, {b"k": b"old"})] == [b"old"]
    assert [w.final for w in find_lost_writes(ops, {b"k": None})] == [None]
    assert find_lost_writes([], {b"k": None}) == []


# ----------------------------------------------------------------------------- runner


TOY_RUN = RunSpec(nodes=4, duration=5.0, workload=WorkloadSpec(clients=3, keys=2),
                  nemesis=NemesisSpec(interval=(0.2, 0.8)), node_factory=ToyNode, settle=1.0)


def toy_run(seed: int, **options):
    return run_random(seed, replace(TOY_RUN, **options))


def test_random_run_against_a_correct_store_is_safe_and_replays():
    report = toy_run(3)
    assert report.error is None
    assert report.lost_writes == []
    assert report.verdict == "linearizable", report.linearizability  # proven, not undecided
    assert report.linearizable is True
    assert report.ok, format_report(report)
    assert set(report.final_values) == {b"k0", b"k1"}
    assert report.nemesis  # faults were injected
    assert sum(report.op_counts["put"].values()) > 10
    final_readers = {op.process for op in report.history[-2:]}
    assert final_readers == {3}  # the final reads are in the history, by their own process
    again = toy_run(3)
    assert again.trace_digest == report.trace_digest and again.history == report.history


def test_a_history_the_checker_gives_up_on_is_undecided_and_no_pass():
    report = toy_run(3, max_check_steps=1)  # the search gives up at once
    assert report.verdict == "undecided", report.linearizability
    assert report.linearizable is None and report.undecided
    assert report.safe, "undecided is no violation either"
    assert not report.ok
    text = format_report(report)
    assert text.startswith("UNDECIDED ") and "\nlinearizable: UNDECIDED" in text, text


def test_zkv_sim_exits_1_when_the_checker_gave_up(monkeypatch):
    from typer.testing import CliRunner

    import zkv.sim.scenarios
    from zkv.cli import app

    undecided = toy_run(3, max_check_steps=1)
    monkeypatch.setattr(zkv.sim.scenarios, "run_scenario", lambda name, seed: undecided)
    result = CliRunner().invoke(app, ["sim", "quick", "--seed", "3"])
    assert result.exit_code == 1, result.output
    assert result.output.startswith("UNDECIDED "), result.output


def test_scenarios_are_registered_by_name(monkeypatch):
    assert {"random", "quick", "suite", "membership"} <= set(SCENARIOS)
    undocumented = [name for name, scenario in SCENARIOS.items() if not scenario.__doc__]
    assert not undocumented, "zkv sim --list shows each scenario's docstring"
    seeds: list[int] = []
    monkeypatch.setitem(SCENARIOS, "random", lambda seed: seeds.append(seed) or "report")
    assert run_scenario("random", 7) == "report" and seeds == [7]
    with pytest.raises(ValueError, match="unknown scenario"):
        run_scenario("no-such-scenario", 1)
    text = format_report(toy_run(5))
    assert "seed=5" in text and "linearizable" in text
