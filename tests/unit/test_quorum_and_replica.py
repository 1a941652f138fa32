from zkv.core.quorum import QuorumTracker, needed
from zkv.core.replica import apply_write, merge
from zkv.core.versions import Version
from zkv.storage.memory import MemoryStore
from zkv.storage.record import Record


def rec(wall, value=b"v", tomb=False):
    return Record(Version(wall, 0, "n"), tomb, b"" if tomb else value)


def test_levels():
    assert [needed(level, 3) for level in ("one", "quorum", "all")] == [1, 2, 3]
    assert needed("quorum", 5) == 3 and needed("quorum", 1) == 1


def test_joint_quorum_needs_each_replica_set():
    t = QuorumTracker([("a", "b", "c"), ("a", "b", "d")], "quorum")
    assert t.targets == ("a", "b", "c", "d")
    assert not t.met({"c", "d"})
    assert t.met({"a", "c", "d"}) and t.met({"a", "b"})
    assert not t.possible({"c", "d"})


def test_higher_version_wins_and_resend_is_idempotent():
    store = MemoryStore()
    assert apply_write(store, b"k", rec(2, b"new"))
    assert apply_write(store, b"k", rec(1, b"old"))  # acknowledged, but superseded
    assert store.get(b"k").value == b"new"
    assert apply_write(store, b"k", rec(2, b"new"), "absent")  # resend of the same version


def test_conditions():
    store = MemoryStore()
    assert not apply_write(store, b"k", rec(1), "present")
    assert apply_write(store, b"k", rec(1), "absent")
    assert not apply_write(store, b"k", rec(2), "absent")
    assert apply_write(store, b"k", rec(3, tomb=True), "present")
    assert apply_write(store, b"k", rec(4), "absent")  # a tombstone counts as absent


def test_merge_keeps_the_newest():
    store = MemoryStore()
    assert merge(store, b"k", rec(5))
    assert not merge(store, b"k", rec(4))
    assert store.get(b"k").version.wall_ms == 5
