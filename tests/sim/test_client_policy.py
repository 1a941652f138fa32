"""The library's client policy (``zkv.core.client_policy``), sans I/O and in the
simulator through ``RoutedClient``: the policy ``zkv.client.Client`` runs over ZeroMQ.
ZKV_CLIENT_SEEDS=N runs more seeds of the randomized run; a failure replays with
``zkv sim clients --seed N``."""

import os

import pytest

from tests.sim.conftest import formed, replicas
from zkv.check import check_history
from zkv.core.client_policy import TIMEOUT, Call, Outcome, Pause, Router, SendTo, Wait
from zkv.core.messages import ClientReply, RingInfo
from zkv.sim.scenarios import format_report, run_scenario

SEEDS = int(os.environ.get("ZKV_CLIENT_SEEDS", "10"))
NODES = [("n1", "tcp://a"), ("n2", "tcp://b"), ("n3", "tcp://c"), ("n4", "tcp://d")]


def router(settled: bool = True, direct_reads: bool = False) -> Router:
    """A router that knows the ring (at epoch 1); ``settled`` False: a ring change is
    under way there, so gets go to a coordinator even with ``direct_reads``."""
    r = Router(["tcp://a"], direct_reads=direct_reads)
    r.learn(RingInfo(1, NODES, 3, 8, 1, settled), 0.0)
    return r


def first_send(call: Call, now: float = 0.0) -> SendTo:
    step = call.next(now)
    assert type(step) is SendTo
    call.sent(step.address, True, now)
    return step


def test_a_silent_coordinator_of_a_read_gets_a_second_one_beside_it():
    call = Call("get", b"k", "quorum", 3.0, 0.0, router())
    first = first_send(call)
    assert call.next(0.5) == Wait(1.0)  # a third of the timeout
    second = call.next(1.0)
    assert type(second) is SendTo and second.address != first.address


def test_a_write_is_never_sent_to_a_second_coordinator_while_one_holds_it():
    """Chaos found it (docs/chaos.md, "What it found"): a paused coordinator runs the
    held write when it wakes, above every write acknowledged meanwhile."""
    call = Call("put", b"k", "quorum", 3.0, 0.0, router())
    first_send(call)
    assert call.next(1.0) == Wait(3.0)  # silent past patience: wait, never re-send
    outcome = call.next(3.0)
    assert type(outcome) is Outcome and outcome.status == TIMEOUT  # unknown, not failed


def test_a_quick_refusal_is_retried_on_the_next_node_and_a_late_one_ends_the_call():
    """The coordinator answers ``unavailable`` a margin before the client's deadline;
    in the last half-patience that ends the call instead of a retry, whose "exists"
    would misreport a create that another coordinator left unknown."""
    call = Call("create", b"k", "quorum", 3.0, 0.0, router())
    first = first_send(call)
    call.on_reply(ClientReply(1, "unavailable", None, "joining"), 0.1, first.address)
    again = call.next(0.1)
    assert type(again) is SendTo and again.address != first.address
    call.sent(again.address, True, 0.1)
    call.on_reply(ClientReply(1, "unavailable", None, "too few replicas"), 2.6, again.address)
    assert call.next(2.6) == Outcome("unavailable", None, "too few replicas")


def test_when_no_node_is_connected_the_call_pauses_then_goes_round_again():
    r = router()
    call = Call("put", b"k", "quorum", 3.0, 0.0, r)
    for _ in range(4):
        step = call.next(0.0)
        assert type(step) is SendTo
        call.sent(step.address, False, 0.0)
    assert type(call.next(0.0)) is Pause and r.stale
    assert type(call.next(0.06)) is SendTo  # a fresh round, suspects last


def test_a_paused_replica_never_gets_a_write_acknowledged_elsewhere_and_run_late():
    c = formed(5, seed=7)
    key = "held"
    primary, secondary, _ = replicas(c, key)
    writer = c.routed_client()
    warm = writer.call(None, "get", key)  # learns the ring
    assert c.run_until_condition(lambda: warm.done and writer.router.ring, c.now + 5)
    c.pause(primary)
    held = writer.call(None, "put", key, "held-write", timeout=2.0)
    assert c.run_until_condition(lambda: held.done, c.now + 5)
    assert writer.sent_to == [primary], "a held write went to a second coordinator"
    assert held.result.status == TIMEOUT  # unknown: it may still land
    assert c.put(secondary, key, "acknowledged-later").ok  # the two others acknowledge it
    c.resume(primary)  # it runs the queued put now, with a newer version
    c.run_for(2.0)
    result = check_history(c.history.for_checker())
    assert result.ok, result.summary()


def test_the_library_policy_under_crashes_partitions_loss_and_stalls():
    for seed in range(SEEDS):
        report = run_scenario("clients", seed)
        if not report.ok:
            pytest.fail(f"seed {seed}:\n{format_report(report)}")


def test_rounds_against_unreachable_nodes_end_in_a_timeout_without_spinning():
    """The sweep found a call that went round more than a thousand times in its last
    microseconds (each pause all that was left, which the clock hardly moved):
    2 ** rounds then overflowed a float."""
    r = router()
    call = Call("put", b"k", "quorum", 1.0, 0.0, r)
    now, steps = 0.0, 0
    while True:
        steps += 1
        assert steps < 1000, "the call never ended"
        step = call.next(now)
        if type(step) is SendTo:
            call.sent(step.address, False, now)
        elif type(step) is Pause:
            now += step.seconds
        elif type(step) is Wait:
            now = step.until
        else:
            break
    assert type(step) is Outcome and step.status == TIMEOUT
    call = Call("put", b"k", "quorum", 1.0, 0.0, router())
    call.rounds = 5000  # (as many rounds as the spin made) no overflow
    assert type(call.next(0.0)) is SendTo


def test_a_duplicated_refusal_does_not_free_a_write_held_elsewhere():
    """Links that duplicate messages (the simulator's) once delivered one node's
    refusal twice: counted twice, it let a put go to a third coordinator while the
    second still held it, and many nodes then ran the same write (a violation)."""
    call = Call("put", b"k", "quorum", 3.0, 0.0, router())
    first = first_send(call)
    call.on_reply(ClientReply(1, "unavailable", None, "joining"), 0.1, first.address)
    second = call.next(0.1)
    assert type(second) is SendTo
    call.sent(second.address, True, 0.1)
    call.on_reply(ClientReply(1, "unavailable", None, "joining"), 0.2, first.address)
    assert type(call.next(0.2)) is Wait  # the second still holds it: no third
    assert call.next(1.1) == Wait(3.0)  # and never, while it does
