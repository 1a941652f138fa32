"""Hand-off flow control, anti-entropy rounds and store walks."""

import pytest

from zkv.core.anti_entropy import SYNC_SEGMENTS
from zkv.core.digests import DigestedStore
from zkv.core.handoff import WINDOW
from zkv.core.messages import Handoff, HandoffAck
from zkv.core.ring import Ring
from zkv.core.stabilizer import Stabilizer
from zkv.core.walks import WALK_BUDGET
from zkv.model.record import Record
from zkv.model.versions import Version
from zkv.storage.memory import MemoryStore

from ..recording import RecordingOutbox

RETRY = 0.1


def handoffs(out: RecordingOutbox) -> list[Handoff]:
    """The hand-offs sent since the last look."""
    return [m for _, m in out.take(Handoff)]


def finish(stabilizer: Stabilizer, out: RecordingOutbox) -> None:
    """Tick until the walks under way (and any digest rebuild) are done."""
    while stabilizer.has_work():
        stabilizer.work(0.0, out)


def filled_store(keys: int) -> DigestedStore:
    store = DigestedStore(MemoryStore())
    for i in range(keys):
        store.put(b"k%05d" % i, Record(Version(1, 0, "a"), False, b"v"))
    return store


def test_a_big_push_keeps_at_most_a_window_of_batches_unacknowledged():
    store = filled_store(1000)
    stabilizer = Stabilizer("a", store, 10, 0)
    out = RecordingOutbox()
    stabilizer.handoff.push("b", list(store.items()), 0.0, out, strays=False)
    first = handoffs(out)
    assert len(first) == WINDOW and len(stabilizer.handoff.batches) == WINDOW
    received = {k for m in first for k, _ in m.records}
    t = 0.0
    while stabilizer.handoff.batches:
        t += 0.001
        for batch_id in list(stabilizer.handoff.batches):
            stabilizer.on_handoff_ack("b", HandoffAck(batch_id), t, out)
        sent = handoffs(out)
        assert len(sent) <= WINDOW
        received |= {k for m in sent for k, _ in m.records}
    assert received == {k for k, _ in store.items()}
    assert stabilizer.moved == 1000


def test_unacknowledged_batches_are_resent_less_and_less_often():
    store = filled_store(5)
    stabilizer = Stabilizer("a", store, 10, 0)
    out = RecordingOutbox()
    ring = Ring(["a", "b"], 2, 8)
    stabilizer.handoff.push("b", list(store.items()), 0.0, out, strays=False)
    handoffs(out)
    resent_at = []
    t = 0.0
    while t < 3.2:
        t = round(t + 0.01, 2)
        stabilizer.resend(t, RETRY, ring, out)
        if handoffs(out):
            resent_at.append(t)
    gaps = [b - a for a, b in zip([0.0] + resent_at, resent_at)]
    assert gaps[:5] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6], abs=0.011)  # 10 ms steps


def test_an_anti_entropy_round_lists_a_bounded_number_of_differing_segments():
    ring = Ring(["a", "b"], 2, 32)  # 64 segments, all shared
    full, empty = filled_store(2000), DigestedStore(MemoryStore())
    a, b = Stabilizer("a", full, 10_000, 0), Stabilizer("b", empty, 10_000, 1 << 32)
    out_a, out_b = RecordingOutbox(), RecordingOutbox()
    assert not a.start_round(ring, {"b"}, 1000.0, out_a, peer="b")  # digests not built yet
    b.prepare(ring, 1000.0)
    finish(a, out_a)
    finish(b, out_b)
    assert a.start_round(ring, {"b"}, 1000.0, out_a, peer="b")
    [(_, digest)] = out_a.sent
    b.on_sync_digest("a", digest, ring, 1000.0, out_b)
    listings = [m for _, m in out_b.sent]
    assert len(listings) == SYNC_SEGMENTS and all(m.entries == [] for m in listings)
    for listing in listings:
        a.on_sync_keys("b", listing)
    out_a.sent.clear()
    a.answer_sync_keys(ring, 1000.0, out_a)
    listed = {ring.segment_of_token(m.segment) for m in listings}
    pushed = {k for m in handoffs(out_a) for k, _ in m.records}
    assert pushed and {ring.segment(k) for k in pushed} <= listed
    assert pushed == {k for k, _ in full.items() if ring.segment(k) in listed}


def test_no_periodic_round_starts_while_records_wait_to_be_handed_over():
    store = filled_store(100)
    stabilizer = Stabilizer("a", store, 10, 0)
    ring = Ring(["a", "b"], 2, 8)
    out = RecordingOutbox()
    stabilizer.handoff.push("b", list(store.items()), 0.0, out, strays=False)
    out.sent.clear()
    stabilizer.start_round(ring, {"b"}, 1000.0, out)
    assert out.sent == []
    stabilizer.prepare(ring, 1000.0)
    finish(stabilizer, out)
    out.sent.clear()
    assert stabilizer.start_round(ring, {"b"}, 1000.0, out, peer="b")  # a catch-up runs
    assert len(out.sent) == 1


def test_a_walk_reads_a_bounded_number_of_records_per_tick():
    store = filled_store(20_000)
    stabilizer = Stabilizer("a", store, 256, 0)
    stabilizer.collect_strays(Ring(["b", "c", "d"], 3, 64))  # none of it is a's: all strays
    read = []
    inner_range = store.inner.token_range

    def counting(first, last):
        found = list(inner_range(first, last))
        read.append(len(found))
        return iter(found)

    store.inner.token_range = counting
    ticks = 0
    while stabilizer.has_work():
        before = sum(read)
        stabilizer.work(0.0, RecordingOutbox())
        assert sum(read) - before <= WALK_BUDGET + 2 * max(read, default=0)
        ticks += 1
    assert ticks > 3 and sum(read) >= 20_000  # the whole store, over several ticks
