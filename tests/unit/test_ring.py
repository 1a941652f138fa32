import hashlib
from collections import Counter

from zkv.core.ring import Ring
from zkv.model.tokens import token


def test_token_is_stable_across_runs():
    # BLAKE2b, not the salted hash(): the same bytes always land on the same token.
    expected = int.from_bytes(hashlib.blake2b(b"zkv", digest_size=8).digest(), "big")
    assert token(b"zkv") == expected
    assert token(b"a") != token(b"b")


def test_locate_gives_three_distinct_nodes_primary_first():
    ring = Ring([f"n{i}" for i in range(10)])
    for i in range(200):
        reps = ring.locate(f"key-{i}")
        assert len(reps) == 3 and len(set(reps)) == 3


def test_locate_is_deterministic_and_independent_of_node_order():
    a = Ring(["a", "b", "c", "d", "e"])
    b = Ring(["e", "d", "c", "b", "a"])
    assert all(a.locate(f"k{i}") == b.locate(f"k{i}") for i in range(100))


def test_small_rings_use_every_node():
    assert sorted(Ring(["x", "y"]).locate("k")) == ["x", "y"]
    assert Ring([]).locate("k") == ()


def test_removing_a_node_only_moves_its_keys():
    before = Ring([f"n{i}" for i in range(10)])
    after = Ring([f"n{i}" for i in range(10) if i != 4])
    for i in range(500):
        old, new = before.locate(f"k{i}"), after.locate(f"k{i}")
        if "n4" not in old:
            assert old == new
        else:
            assert set(old) - {"n4"} <= set(new)


def test_virtual_nodes_balance_primaries():
    ring = Ring([f"n{i}" for i in range(10)], vnodes=64)
    counts = Counter(ring.locate(f"key-{i}")[0] for i in range(20000))
    assert max(counts.values()) < 2.0 * min(counts.values())


def test_segment_tokens_name_segments():
    ring = Ring(["a", "b", "c"])
    for s in range(ring.segments):
        assert ring.segment_of_token(ring.segment_token(s)) == s
    # A token that names no segment must give None: bisect alone would answer the
    # next segment's index (1 just after segment 0's token, 0 past the last one).
    names = {ring.segment_token(s) for s in range(ring.segments)}
    for s in range(ring.segments):
        assert ring.segment_token(s) + 1 not in names
        assert ring.segment_token(s) - 1 not in names
        assert ring.segment_of_token(ring.segment_token(s) + 1) is None
        assert ring.segment_of_token(ring.segment_token(s) - 1) is None
