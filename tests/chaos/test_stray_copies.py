"""Copies pushed to a node by a peer whose ring briefly differed must not stay there.

Found by ``zkv chaos`` (seed 3, with network faults): node-3's links were
slowed; it stopped hearing node-2 for ``t_remove`` and, still seeing a
majority, removed node-2 from *its* ring alone for 19 ms, pushing node-2's
ranges to their new owners in its ring (node-4 among them). Every other ring
still held node-2, so node-4's ring never changed: it had already looked for
strays and found none, and never looked again. Its copies of keys it does not
own stayed there for good (still there 33 s later, when the run ended).

The same can happen whenever a record for a key a node does not own reaches it
after its last stray scan (a hand-off from a peer with another ring, a write of
a coordinator still in its transition). The unit test below shows it without a
cluster: the stabilizer of the core never scans again.
"""

from __future__ import annotations

from zkv.core.digests import DigestedStore
from zkv.core.messages import Handoff, HandoffAck
from zkv.core.ring import Ring
from zkv.core.stabilizer import Stabilizer
from zkv.model.record import Record
from zkv.model.versions import Version
from zkv.storage.memory import MemoryStore

from ..recording import RecordingOutbox


def test_a_copy_handed_to_a_node_that_does_not_own_it_is_passed_on_and_dropped():
    ring = Ring([f"node-{i}" for i in range(1, 6)], 3, 64)
    key = next(k for i in range(1000) if "node-4" not in ring.locate(k := b"k%d" % i))
    owners = ring.locate(key)
    store = DigestedStore(MemoryStore())
    stabilizer = Stabilizer("node-4", store, 256, 1 << 32)
    out = RecordingOutbox()
    stabilizer.collect_strays(ring)  # the scan after its last ring change: none
    while stabilizer.has_work():
        stabilizer.work(0.0, out)
    assert not out.sent

    # node-3, whose ring lacked node-2 for a moment, hands node-4 a copy it does not own.
    stray = Record(Version(5, 0, "node-1"), False, b"v")
    stabilizer.on_handoff("node-3", Handoff(7, [(key, stray)]), ring, 0.0, out)
    assert out.take(HandoffAck) == [("node-3", HandoffAck(7))]
    assert store.get(key) == stray
    for tick in range(1, 4):  # anti-entropy rounds, ring unchanged
        stabilizer.collect_strays(ring)
        stabilizer.work(float(tick), out)
    pushes = {to: m for to, m in out.take(Handoff) if any(k == key for k, _ in m.records)}
    assert set(pushes) == set(owners), "the stray goes to each of its owners"
    assert all((key, stray) in m.records for m in pushes.values())

    # Every owner but the last acknowledges: the copy stays, one owner may lack it.
    *first, last = owners
    for owner in first:
        stabilizer.on_handoff_ack(owner, HandoffAck(pushes[owner].batch_id), 4.0, out)
        assert store.get(key) == stray, f"dropped before {last} acknowledged"
    # An ack from a node the batch was not sent to, or of another batch, drops nothing.
    stabilizer.on_handoff_ack("node-4", HandoffAck(pushes[last].batch_id), 4.0, out)
    stabilizer.on_handoff_ack(last, HandoffAck(pushes[first[0]].batch_id), 4.0, out)
    assert store.get(key) == stray
    # The last owner's ack drops it, and it is not pushed again.
    stabilizer.on_handoff_ack(last, HandoffAck(pushes[last].batch_id), 4.0, out)
    assert store.get(key) is None, "every owner acknowledged, yet the stray stayed"
    assert ("strays_dropped", {"keys": 1, "acked_by": last}) in out.events
    for tick in range(5, 8):
        stabilizer.collect_strays(ring)
        stabilizer.work(float(tick), out)
        stabilizer.resend(float(tick), 0.1, ring, out)
    assert not out.take(Handoff), "nothing left to pass on"
