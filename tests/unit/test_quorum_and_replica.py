from zkv.core.quorum import QuorumTracker, needed
from zkv.core.replica import Merge, accept, merge, prepare, read
from zkv.model.record import Record
from zkv.model.versions import Version
from zkv.storage.memory import MemoryStore


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


def test_a_write_below_the_stored_version_is_refused_and_a_resend_is_idempotent():
    store = MemoryStore()
    assert accept(store, b"k", rec(2, b"new")) is None
    assert accept(store, b"k", rec(1, b"old")) == rec(2).version  # never acknowledged below
    assert store.get(b"k").value == b"new"
    assert accept(store, b"k", rec(2, b"new")) is None  # resend of the same version


def test_prepare_promises_only_above_the_promise_and_the_stored_version():
    store = MemoryStore()
    accept(store, b"k", rec(5, b"five"))
    assert prepare(store, b"k", rec(5).version) == (False, rec(5, b"five"), rec(5).version)
    assert prepare(store, b"k", rec(7).version) == (True, rec(5, b"five"), None)
    assert store.get_promise(b"k") == rec(7).version
    assert prepare(store, b"k", rec(6).version) == (False, rec(5, b"five"), rec(7).version)


def test_a_promise_fences_writes_and_merges_below_it():
    store = MemoryStore()
    prepare(store, b"k", rec(7).version)
    assert accept(store, b"k", rec(6, b"late")) == rec(7).version
    assert merge(store, b"k", rec(6, b"late")) is Merge.FENCED
    assert store.get(b"k") is None
    assert read(store, b"k") == (None, rec(7).version)


def test_a_write_at_or_above_the_promise_is_stored_and_clears_it():
    store = MemoryStore()
    prepare(store, b"k", rec(7).version)
    assert accept(store, b"k", rec(7, b"chosen")) is None
    assert store.get(b"k").value == b"chosen" and store.get_promise(b"k") is None
    prepare(store, b"k", rec(9).version)
    assert merge(store, b"k", rec(10, b"newer")) is Merge.STORED
    assert store.get_promise(b"k") is None


def test_merge_keeps_the_newest():
    store = MemoryStore()
    assert merge(store, b"k", rec(5)) is Merge.STORED
    assert merge(store, b"k", rec(4)) is Merge.KEPT
    assert store.get(b"k").version.wall_ms == 5
