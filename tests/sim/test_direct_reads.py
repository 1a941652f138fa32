"""Direct reads (``zkv.core.direct_read``): a quorum get reads a quorum of the key's
replicas itself and asks a coordinator only when they cannot decide. The policy
sans I/O, the replicas' rules for serving one, and the randomized run with ring
changes (ZKV_DIRECT_SEEDS=N runs more seeds; a failure replays with ``zkv sim
direct-reads --seed N``)."""

import os

import pytest

from tests.sim.conftest import formed, replicas
from tests.sim.test_client_policy import NODES
from tests.sim.test_client_policy import router as plain_router
from zkv.core.actions import ClientCall, Reply
from zkv.core.client_policy import Call, Outcome, ReadDirect, Router, SendTo, Wait
from zkv.core.direct_read import FALLBACK, DirectQuorum
from zkv.core.messages import ClientReply, DirectRead, DirectRecord, RingInfo
from zkv.core.ring import key_bytes
from zkv.model.record import Record
from zkv.model.versions import Version
from zkv.sim.scenarios import format_report, run_scenario

SEEDS = int(os.environ.get("ZKV_DIRECT_SEEDS", "10"))


def router(settled: bool = True):
    return plain_router(settled, direct_reads=True)
OLD = Record(Version(1, 0, "n1"), False, b"old")
NEW = Record(Version(2, 0, "n2"), False, b"new")


def direct_call(level: str = "quorum") -> tuple[Call, ReadDirect]:
    call = Call("get", b"k", level, 3.0, 0.0, router())
    step = call.next(0.0)
    assert type(step) is ReadDirect and step.epoch == 1
    for address in step.addresses:
        call.direct_sent(address, True, 0.0)
    return call, step


def test_a_quorum_get_whose_replicas_agree_needs_no_coordinator():
    call, step = direct_call()
    first, second = step.addresses
    r = router()
    assert r.ring is not None
    owners = {r.node_address[n] for n in r.ring.locate(b"k")}
    assert first != second and {first, second} <= owners  # a quorum of its replicas
    call.on_reply(DirectRecord(1, True, NEW, 1), 0.01, first)
    assert call.next(0.01) == Wait(1.0)  # one of two answered
    call.on_reply(DirectRecord(1, True, NEW, 1), 0.01, first)  # a duplicate counts once
    assert call.next(0.01) == Wait(1.0)
    call.on_reply(DirectRecord(1, True, NEW, 1), 0.02, second)
    assert call.next(0.02) == Outcome("ok", b"new", "")


def test_the_primary_is_always_asked_unless_suspected_and_the_others_take_turns():
    r = router()
    assert r.ring is not None
    primary, *others = [r.node_address[n] for n in r.ring.locate(b"k")]
    picks = [r.direct_targets(b"k", "quorum", 0.0) for _ in range(4)]
    assert all(p is not None and p[0] == primary and len(p) == 2 for p in picks)
    assert {p[1] for p in picks if p} == set(others)
    r.suspect(primary, 0.0)
    assert r.direct_targets(b"k", "quorum", 0.1) in ([others[0], others[1]],
                                                    [others[1], others[0]])
    r.suspect(others[0], 0.0)
    assert r.direct_targets(b"k", "quorum", 0.1) is None  # one trusted replica is too few


def test_replicas_that_disagree_send_the_get_to_a_coordinator():
    call, step = direct_call()
    call.on_reply(DirectRecord(1, True, NEW, 1), 0.01, step.addresses[0])
    call.on_reply(DirectRecord(1, True, OLD, 1), 0.01, step.addresses[1])
    assert type(call.next(0.01)) is SendTo  # it reads and repairs


def test_a_replica_at_another_epoch_sends_the_get_to_a_coordinator_and_the_ring_is_relearned():
    r = router()
    call = Call("get", b"k", "quorum", 3.0, 0.0, r)
    step = call.next(0.0)
    assert type(step) is ReadDirect
    call.on_reply(DirectRecord(1, False, None, 2), 0.01, step.addresses[0])
    assert type(call.next(0.01)) is SendTo and r.stale


def test_a_silent_replica_sends_the_get_to_a_coordinator_after_a_third_of_the_timeout():
    r = router()
    call = Call("get", b"k", "quorum", 3.0, 0.0, r)
    step = call.next(0.0)
    assert type(step) is ReadDirect
    for address in step.addresses:
        call.direct_sent(address, True, 0.0)
    call.on_reply(DirectRecord(1, True, None, 1), 0.01, step.addresses[0])
    assert call.next(0.5) == Wait(1.0)
    assert type(call.next(1.0)) is SendTo
    assert step.addresses[1] in r.suspects and step.addresses[0] not in r.suspects


def test_a_replica_not_connected_sends_the_get_to_a_coordinator_at_once():
    call = Call("get", b"k", "quorum", 3.0, 0.0, router())
    step = call.next(0.0)
    assert type(step) is ReadDirect
    call.direct_sent(step.addresses[0], False, 0.0)
    assert type(call.next(0.0)) is SendTo


@pytest.mark.parametrize("op,level,settled", [("get", "all", True), ("get", "one", True),
                                              ("get", "quorum", False), ("put", "quorum", True)])
def test_only_quorum_gets_on_a_settled_ring_read_directly(op, level, settled):
    call = Call(op, b"k", level, 3.0, 0.0, router(settled))
    assert type(call.next(0.0)) is SendTo


def test_quorum_gets_read_directly_unless_told_not_to():
    on = Router(["tcp://a"])
    on.learn(RingInfo(1, NODES, 3, 8, 1, True), 0.0)
    assert type(Call("get", b"k", "quorum", 3.0, 0.0, on).next(0.0)) is ReadDirect
    off = plain_router(direct_reads=False)
    assert type(Call("get", b"k", "quorum", 3.0, 0.0, off).next(0.0)) is SendTo


def test_a_quorum_of_agreeing_tombstones_or_absences_is_not_found():
    quorum = DirectQuorum(["a", "b"], 1, 1.0)
    assert quorum.on_reply("a", DirectRecord(1, True, None, 1)) is None
    assert quorum.on_reply("c", DirectRecord(1, True, None, 1)) is None  # not asked
    assert quorum.on_reply("b", DirectRecord(1, True, None, 1)) == ("not_found", None)
    gone = Record(Version(3, 0, "n1"), True, b"")
    quorum = DirectQuorum(["a", "b"], 1, 1.0)
    quorum.on_reply("a", DirectRecord(1, True, gone, 1))
    assert quorum.on_reply("b", DirectRecord(1, True, gone, 1)) == ("not_found", None)
    quorum = DirectQuorum(["a", "b"], 1, 1.0)
    quorum.on_reply("a", DirectRecord(1, True, None, 1))
    assert quorum.on_reply("b", DirectRecord(1, True, OLD, 1)) == FALLBACK


# ----------------------------------------------------------------- the replicas' rules


def direct_answer(cluster, node_id: str, key: bytes, epoch: int) -> DirectRecord:
    actions = cluster.node(node_id).step(ClientCall("client://t", DirectRead(7, key, epoch)),
                                         cluster.now)
    replies = [a.message for a in actions if type(a) is Reply]
    assert len(replies) == 1 and type(replies[0]) is DirectRecord
    return replies[0]


def test_a_replica_serves_its_record_only_at_its_epoch_and_for_its_own_keys():
    c = formed(4, seed=3)
    key = key_bytes("direct")
    assert c.put(c.running()[0], key, "v1").ok
    owners = replicas(c, key)
    outsider = next(n for n in c.running() if n not in owners)
    epoch = c.node(owners[0]).changes.epoch
    served = direct_answer(c, owners[0], key, epoch)
    assert served.served and served.record is not None and served.record.value == b"v1"
    assert served.epoch == epoch
    for node_id, asked in ((owners[1], epoch - 1), (owners[1], epoch + 1), (outsider, epoch)):
        refused = direct_answer(c, node_id, key, asked)
        assert not refused.served and refused.record is None and refused.epoch == epoch


def test_a_direct_read_of_a_malformed_key_is_refused_and_counted():
    c = formed(3, seed=4)
    node = c.node("n1")
    before = node.rejected_frames
    for key in (b"", b"k" * (node.config.max_key + 1)):
        actions = node.step(ClientCall("client://t", DirectRead(9, key, node.changes.epoch)),
                            c.now)
        replies = [a.message for a in actions if type(a) is Reply]
        assert len(replies) == 1 and type(replies[0]) is ClientReply
        assert replies[0].status == "invalid" and "key must be" in replies[0].detail
    assert node.rejected_frames == before + 2


def test_no_replica_serves_a_direct_read_while_a_ring_change_is_under_way():
    c = formed(4, seed=5)
    key = key_bytes("moving")
    assert c.put(c.running()[0], key, "v1").ok
    c.add_node()
    assert c.run_until_condition(
        lambda: any(c.node(n).in_transition for n in c.running()), c.now + 10)
    moving = next(n for n in c.running() if c.node(n).in_transition)
    answer = direct_answer(c, moving, key, c.node(moving).changes.epoch)
    assert not answer.served


def test_direct_reads_under_ring_changes_crashes_partitions_and_loss():
    for seed in range(SEEDS):
        report = run_scenario("direct-reads", seed)
        if not report.ok:
            pytest.fail(f"seed {seed}:\n{format_report(report)}")
