"""Which replicas the coordinator asks, when it asks the rest, and when a put skips its read."""

from zkv.core.coordinator import Coordinator, Placement
from zkv.core.messages import ClientRequest, ReadReply, ReadRequest, WriteReply, WriteRequest
from zkv.model.record import Record
from zkv.model.versions import HybridClock, Version

from ..recording import RecordingOutbox

REPLICAS = ("a", "b", "c")
RETRY = 0.1


def recipients(out: RecordingOutbox, kind: type) -> list[str]:
    """Who got a message of ``kind`` since the last look."""
    return [to for to, _ in out.take(kind)]


def start(coord: Coordinator, out: RecordingOutbox, op: str = "get", level: str = "quorum",
          sets=(REPLICAS,), now: float = 0.0, req_id: int = 1) -> int:
    value = b"v" if op == "put" else None
    coord.start("client", ClientRequest(req_id, op, b"k", value, level, 1000),
                Placement(0, list(sets), {"a", "b", "c", "d"}), now, 1.0, out)
    return max(coord.ops)


def record(wall: int) -> Record:
    return Record(Version(wall, 0, "x"), False, b"v")


def test_a_quorum_read_asks_this_node_and_one_other_in_turn():
    coord, out = Coordinator("a", HybridClock("a"), 0), RecordingOutbox()
    asked = []
    for req in range(4):
        start(coord, out, req_id=req)
        asked.append(sorted(recipients(out, ReadRequest)))
    assert all(len(a) == 2 and "a" in a for a in asked)
    assert {a[1] for a in asked} == {"b", "c"}  # the load is spread over the others


def test_a_slow_replica_makes_the_read_ask_the_rest_after_the_speculative_delay():
    coord, out = Coordinator("a", HybridClock("a"), 0), RecordingOutbox()
    op_id = start(coord, out)
    first = recipients(out, ReadRequest)
    silent = next(n for n in first if n != "a")
    coord.on_read_reply("a", ReadReply(op_id, b"k", record(5), None), 0.001, out)
    assert coord.next_wakeup(RETRY) == RETRY  # no read-phase history: wait retry_interval
    coord.tick(RETRY / 2, RETRY, out)
    assert recipients(out, ReadRequest) == []
    coord.tick(RETRY, RETRY, out)
    other = ({"b", "c"} - {silent}).pop()
    # every replica that has not answered
    assert sorted(recipients(out, ReadRequest)) == sorted([silent, other])
    coord.on_read_reply(other, ReadReply(op_id, b"k", record(5), None), RETRY + 0.001, out)
    assert out.replies and out.replies[0].status == "ok"


def test_speculation_follows_the_recent_read_time():
    coord, out = Coordinator("a", HybridClock("a"), 0), RecordingOutbox()
    for req in range(30):  # reads that take 5 ms
        op_id = start(coord, out, req_id=req, now=float(req))
        for target in recipients(out, ReadRequest):
            coord.on_read_reply(target, ReadReply(op_id, b"k", None, None), req + 0.005, out)
    start(coord, out, req_id=99, now=100.0)
    assert 100.0 + 0.015 < coord.next_wakeup(RETRY) < 100.0 + 0.025  # about 4 x 5 ms


def test_writes_all_levels_and_joint_quorums_ask_every_replica():
    coord, out = Coordinator("a", HybridClock("a"), 0), RecordingOutbox()
    start(coord, out, level="all")
    assert sorted(recipients(out, ReadRequest)) == ["a", "b", "c"]
    start(coord, out, sets=(REPLICAS, ("b", "c", "d")), req_id=2)
    assert sorted(recipients(out, ReadRequest)) == ["a", "b", "c", "d"]
    op_id = start(coord, out, op="put", req_id=3)
    for target in recipients(out, ReadRequest):
        coord.on_read_reply(target, ReadReply(op_id, b"k", None, None), 0.001, out)
    assert sorted(recipients(out, WriteRequest)) == ["a", "b", "c"]


def test_a_coordinator_outside_the_replica_set_asks_a_quorum_of_others():
    coord, out = Coordinator("d", HybridClock("d"), 0), RecordingOutbox()
    start(coord, out)
    assert len(recipients(out, ReadRequest)) == 2
    start(coord, out, level="one", req_id=2)
    assert len(recipients(out, ReadRequest)) == 1


def primary_that_read_the_key(version: int = 5) -> tuple[Coordinator, RecordingOutbox]:
    """Coordinator "a", the key's primary, after a quorum get found it at ``version``."""
    coord, out = Coordinator("a", HybridClock("a"), 0), RecordingOutbox()
    op_id = start(coord, out)
    for target in recipients(out, ReadRequest):
        coord.on_read_reply(target, ReadReply(op_id, b"k", record(version), None), 0.001, out)
    assert out.replies.pop().status == "ok"
    return coord, out


def answer_writes(coord: Coordinator, out: RecordingOutbox, answers: dict[str, Version | None],
                  now: float = 0.01) -> None:
    """Answer the write just sent: a version refuses it (naming that version), None acks."""
    for target, msg in out.take(WriteRequest):
        if target in answers:
            conflict = answers[target]
            coord.on_write_reply(target, WriteReply(msg.op_id, b"k", conflict is None, conflict),
                                 now, out)


def test_the_primary_writes_a_put_at_once_when_it_knows_the_key():
    coord, out = primary_that_read_the_key(version=5)
    start(coord, out, op="put", req_id=2, now=0.002)
    writes = out.take(WriteRequest)
    assert sorted(to for to, _ in writes) == ["a", "b", "c"]  # no read phase
    assert all(msg.record.version > Version(5, 0, "x") for _, msg in writes)
    for target, msg in writes[:2]:
        coord.on_write_reply(target, WriteReply(msg.op_id, b"k", True, None), 0.003, out)
    assert out.replies.pop().status == "ok" and coord.fast_writes == 1


def test_a_put_reads_first_off_the_primary_unknown_keys_and_after_a_member_change():
    coord, out = primary_that_read_the_key()
    start(coord, out, op="put", sets=(("b", "a", "c"),), req_id=2)  # "a" is not the primary
    assert recipients(out, ReadRequest) and coord.fast_writes == 0
    coord.forget_versions()
    start(coord, out, op="put", req_id=3)
    assert recipients(out, ReadRequest) and coord.fast_writes == 0
    coord.fast_puts = False
    coord._remember(b"k", Version(5, 0, "x"))
    start(coord, out, op="put", req_id=4)
    assert recipients(out, ReadRequest) and coord.fast_writes == 0


def test_a_refused_fast_put_answers_unknown_even_when_every_replica_refused():
    """A replica that refused may have stored the put before (its acknowledgement
    lost) and then taken a newer state built on it: writing it again is unsafe."""
    coord, out = primary_that_read_the_key(version=5)
    newer = Version(10**13, 0, "z")  # another node wrote the key since
    start(coord, out, op="put", req_id=2)
    answer_writes(coord, out, {"a": newer, "b": newer, "c": newer})
    assert out.replies.pop().status == "unknown" and coord.fast_refused == 1
    assert out.sent == []  # not written again
    start(coord, out, op="put", req_id=3)  # the key's version is forgotten: read first
    assert recipients(out, ReadRequest)
