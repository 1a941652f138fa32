"""The turn contract both drivers follow (``zkv.core.turn``): replica requests may leave
before the commit, everything else only after it, nothing but gossip when the turn's
writes may be lost; then the node restarts from its store, or halts."""

from zkv.core.actions import Event, Publish, Reply, Send
from zkv.core.messages import ClientReply, Gossip, ReadRequest, WriteReply
from zkv.core.turn import boot, end_turn
from zkv.model.record import Record
from zkv.model.versions import Version
from zkv.storage.base import StoreFull
from zkv.storage.memory import FULL, FULL_DATA, MemoryStore


class OrderedStore(MemoryStore):
    """Records commits in one log with the sends, to check their order."""

    def __init__(self, log: list[str]) -> None:
        super().__init__()
        self.log = log

    def commit(self) -> None:
        super().commit()
        self.log.append("commit")


class FakeNode:
    instances = 0

    def __init__(self, config: object, store: MemoryStore, now: float) -> None:
        FakeNode.instances += 1
        self.config = config
        self.incarnation = int.from_bytes(store.get_meta("incarnation") or b"\0", "big") + 1
        store.put_meta("incarnation", self.incarnation.to_bytes(8, "big"))
        self.carried: object = None

    def carry_counters(self, previous: "FakeNode") -> None:
        self.carried = previous


READ = Send("n2", "tcp://n2", ReadRequest(1, b"k", 0))
ACK = Send("n2", "tcp://n2", WriteReply(2, b"k", True, None))
REPLY = Reply(b"client", ClientReply(3, "ok", None, ""))
GOSSIP = Publish(Gossip("n1", [], 0))


def run_turn(store: MemoryStore, actions: list, log: list[str], step_failed: bool = False):
    node = boot(FakeNode, "config", store, 0.0)
    log.clear()
    return node, end_turn(node, store, actions, 1.0, step_failed=step_failed,
                          send_early=lambda sends: log.extend(f"early {s.message.op_id}"
                                                              for s in sends),
                          factory=FakeNode)


def test_replica_requests_leave_before_the_commit_and_the_rest_after_it():
    log: list[str] = []
    store = OrderedStore(log)
    node, end = run_turn(store, [ACK, READ, REPLY, GOSSIP, Event("x", {})], log)
    assert log == ["early 1", "commit"]
    assert end.outputs == [ACK, REPLY, GOSSIP] and end.node is node
    assert [e.kind for e in end.events] == ["x"] and end.withheld == 0


def test_boot_makes_the_incarnation_durable_before_the_node_is_returned():
    log: list[str] = []
    store = OrderedStore(log)
    node = boot(FakeNode, "config", store, 0.0)
    assert log == ["commit"] and not store._undo
    store.rollback()  # nothing uncommitted is left to lose
    assert store.get_meta("incarnation") == node.incarnation.to_bytes(8, "big")


def test_a_refused_write_withholds_every_reply_and_ack_of_the_turn_and_restarts_the_node():
    log: list[str] = []
    store = OrderedStore(log)
    node, end = run_turn(store, [ACK, Event("store_full", {}), REPLY, GOSSIP, READ], log)
    assert end.outputs == [GOSSIP] and end.withheld == 2
    assert end.rebooted and end.node is not node and end.node.carried is node
    assert end.node.incarnation == node.incarnation + 1
    assert [e.kind for e in end.events] == ["store_full", "acks_withheld", "rebooted"]


def test_a_commit_that_fails_loses_the_writes_of_every_step_and_withholds_their_acks():
    log: list[str] = []
    store = OrderedStore(log)
    node = boot(FakeNode, "config", store, 0.0)
    store.put(b"acked-by-an-earlier-step", _record())
    store.full = FULL  # the commit finds no room
    end = end_turn(node, store, [ACK, REPLY], 1.0, step_failed=False,
                   send_early=lambda sends: None, factory=FakeNode)
    assert store.get(b"acked-by-an-earlier-step") is None  # discarded
    assert end.outputs == [] and end.withheld == 2 and end.halted


def test_a_store_with_room_only_for_the_restart_reboots_and_one_with_none_halts():
    for full, rebooted in ((FULL_DATA, True), (FULL, False)):
        log: list[str] = []
        store = OrderedStore(log)
        node = boot(FakeNode, "config", store, 0.0)
        store.full = full
        try:
            store.put(b"k", _record())
        except StoreFull:
            pass
        end = end_turn(node, store, [Event("store_full", {}), REPLY], 1.0, step_failed=False,
                       send_early=lambda sends: None, factory=FakeNode)
        assert end.rebooted is rebooted and end.halted is not rebooted, full
        assert end.outputs == [] and store.get(b"k") is None


def test_a_step_that_raised_counts_as_a_lost_turn():
    log: list[str] = []
    _node, end = run_turn(OrderedStore(log), [REPLY, GOSSIP], log, step_failed=True)
    assert end.outputs == [GOSSIP] and end.withheld == 1 and end.rebooted


def _record() -> Record:
    return Record(Version(1, 0, "n1"), False, b"v")
