"""Segment digests kept on every write equal the ones a full walk computes."""

import random

from zkv.core.digests import DigestedStore, entry_hash
from zkv.core.replica import apply_write, merge
from zkv.core.ring import Ring
from zkv.core.versions import Version
from zkv.storage.memory import MemoryStore
from zkv.storage.record import Record


def walked(store: MemoryStore, ring: Ring) -> list[int]:
    digests = [0] * ring.segments
    for key, record in store.items():
        digests[ring.segment(key)] ^= entry_hash(key, record)
    return digests


def test_incremental_digests_match_a_full_walk_through_random_writes():
    rng = random.Random(7)
    ring = Ring(["a", "b", "c", "d"], 3, 16)
    inner = MemoryStore()
    store = DigestedStore(inner)
    every = set(range(ring.segments))
    assert store.digests(ring, every) == dict.fromkeys(every, 0)
    keys = [f"k{i}".encode() for i in range(60)]
    for step in range(3000):
        key = rng.choice(keys)
        record = Record(Version(rng.randrange(1000), rng.randrange(3), "a"),
                        rng.random() < 0.2, b"v")
        how = rng.randrange(4)
        if how == 0:
            apply_write(store, key, record)  # reads the key, then writes it
        elif how == 1:
            merge(store, key, record)
        elif how == 2:
            store.put(key, record)  # a blind write
        else:
            store.get(rng.choice(keys))  # a read of another key must not mislead the put
            store.remove(key)
        if step % 100 == 0:
            assert store.digests(ring, every) == dict(enumerate(walked(inner, ring)))
    assert store.rebuilds == 1  # one walk, at the first question


def test_another_ring_rebuilds_the_digests():
    store = DigestedStore(MemoryStore())
    small, big = Ring(["a", "b", "c"], 3, 8), Ring(["a", "b", "c", "d"], 3, 8)
    store.put(b"x", Record(Version(1, 0, "a"), False, b"v"))
    assert set(store.digests(small, {small.segment(b"x")}).values()) != {0}
    big_digests = store.digests(big, set(range(big.segments)))
    assert big_digests == dict(enumerate(walked(store.inner, big)))
    assert store.rebuilds == 2
