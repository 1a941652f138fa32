"""Segment digests kept on every write equal the ones a full walk computes."""

import random

from zkv.core.digests import DigestedStore, entry_hash
from zkv.core.replica import accept, merge
from zkv.core.ring import Ring
from zkv.model.record import Record
from zkv.model.versions import Version
from zkv.storage.memory import MemoryStore

NOW = 5_000  # wall ms; every version in these tests is within RETAIN_MS of it
ALL = 10 ** 12  # a horizon after every write


def walked(store: MemoryStore, ring: Ring, horizon: int = ALL) -> list[int]:
    digests = [0] * ring.segments
    for key, record in store.items():
        if record.version.wall_ms <= horizon:
            digests[ring.segment(key)] ^= entry_hash(key, record)
    return digests


def digests(store: DigestedStore, ring: Ring, segments: set[int], horizon: int = ALL,
            now: int = NOW) -> dict[int, int] | None:
    """Ask, and when a rebuild for ``ring`` is under way, finish it and ask again."""
    got = store.digests(ring, segments, horizon, now)
    if got is None and store.rebuilding:
        while store.rebuild_step() is not None:
            pass
        got = store.digests(ring, segments, horizon, now)
    return got


def test_incremental_digests_match_a_full_walk_through_random_writes():
    rng = random.Random(7)
    ring = Ring(["a", "b", "c", "d"], 3, 16)
    inner = MemoryStore()
    store = DigestedStore(inner)
    every = set(range(ring.segments))
    assert digests(store, ring, every) == dict.fromkeys(every, 0)
    keys = [f"k{i}".encode() for i in range(60)]
    for step in range(3000):
        key = rng.choice(keys)
        record = Record(Version(rng.randrange(1000), rng.randrange(3), "a"),
                        rng.random() < 0.2, b"v")
        how = rng.randrange(4)
        if how == 0:
            accept(store, key, record)  # reads the key, then writes it
        elif how == 1:
            merge(store, key, record)
        elif how == 2:
            store.put(key, record)  # a blind write
        else:
            store.get(rng.choice(keys))  # a read of another key must not mislead the put
            store.remove(key)
        if step % 100 == 0:
            for horizon in (ALL, 500, 100):  # as of now, and as of earlier horizons
                assert digests(store, ring, every, horizon) == \
                    dict(enumerate(walked(inner, ring, horizon)))
    assert store.rebuilds == 1  # one walk, at the first question


def test_another_ring_rebuilds_the_digests():
    store = DigestedStore(MemoryStore())
    small, big = Ring(["a", "b", "c"], 3, 8), Ring(["a", "b", "c", "d"], 3, 8)
    store.put(b"x", Record(Version(1, 0, "a"), False, b"v"))
    assert set(digests(store, small, {small.segment(b"x")}).values()) != {0}
    big_digests = digests(store, big, set(range(big.segments)))
    assert big_digests == dict(enumerate(walked(store.inner, big)))
    assert store.rebuilds == 2


def test_a_horizon_older_than_the_kept_entries_cannot_be_answered():
    ring = Ring(["a", "b", "c"], 3, 8)
    store = DigestedStore(MemoryStore())
    every = set(range(ring.segments))
    assert digests(store, ring, every, 100_000, 100_000) is not None
    store.put(b"x", Record(Version(100_500, 0, "a"), False, b"v"))
    assert store.digests(ring, every, 100_000, 200_000) is None  # pruned past it
    later = store.digests(ring, every, 190_000, 200_000)
    assert later == dict(enumerate(walked(store.inner, ring)))


def test_writes_during_a_rebuild_leave_the_digests_exact():
    rng = random.Random(3)
    ring = Ring(["a", "b", "c"], 3, 16)
    inner = MemoryStore()
    store = DigestedStore(inner)
    keys = [b"k%d" % i for i in range(300)]
    for key in keys:
        store.put(key, Record(Version(rng.randrange(1000), 0, "a"), False, b"v"))
    every = set(range(ring.segments))
    assert store.digests(ring, every, ALL, NOW) is None and store.rebuilding
    while store.rebuild_step() is not None:  # a segment at a time, writes in between
        for _ in range(5):
            key = rng.choice(keys)
            accept(store, key, Record(Version(rng.randrange(2000), 1, "b"), False, b"w"))
    assert store.digests(ring, every, ALL, NOW) == dict(enumerate(walked(inner, ring)))
