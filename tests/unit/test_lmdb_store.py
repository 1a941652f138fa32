"""LmdbStore: the real store keeps the store interface's promises on disk."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import lmdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zkv.core.ring import Ring
from zkv.model.record import Record
from zkv.model.tokens import token
from zkv.model.versions import Version
from zkv.storage.base import StoreFull
from zkv.storage.lmdb_store import (
    SHORT_KEY_MAX,
    CorruptMeta,
    LmdbStore,
    corrupt_record_on_disk,
    storage_key,
)

KiB = 1024


def live(value: bytes, wall: int = 1, node: str = "n1") -> Record:
    return Record(Version(wall, 0, node), False, value)


def tomb(wall: int = 1) -> Record:
    return Record.tomb(Version(wall, 0, "n1"))


def ring_order(items):
    """Keys, or (key, value) pairs, in the order the store keeps them."""
    return sorted(items, key=lambda item: storage_key(item if isinstance(item, bytes)
                                                      else item[0]))


def long_key(tail: bytes, length: int = 1024, fill: bytes = b"k") -> bytes:
    """A key longer than LMDB's key limit, ending in ``tail``."""
    return fill * (length - len(tail)) + tail


@pytest.fixture
def store(tmp_path: Path):
    s = LmdbStore(tmp_path / "db", sync=False)
    yield s
    s.close()


# -- round trips -------------------------------------------------------------------


def test_live_records_and_tombstones_round_trip(tmp_path: Path) -> None:
    with LmdbStore(tmp_path / "db") as s:
        s.put(b"a", live(b"apple", wall=5, node="n2"))
        s.put(b"b", tomb(wall=7))
        s.put(b"empty", live(b""))
        s.commit()
        assert s.get(b"a") == live(b"apple", wall=5, node="n2")
        assert s.get(b"b") == tomb(wall=7)
        assert s.get(b"b").tombstone
        assert s.get(b"empty") == live(b"")
        assert s.get(b"missing") is None


def test_a_put_replaces_the_previous_record(store: LmdbStore) -> None:
    store.put(b"a", live(b"one", wall=1))
    store.commit()
    store.put(b"a", live(b"two", wall=2))
    assert store.get(b"a") == live(b"two", wall=2)
    store.commit()
    assert store.get(b"a") == live(b"two", wall=2)
    assert len(store) == 1


def test_remove_forgets_a_key(store: LmdbStore) -> None:
    store.put(b"a", live(b"1"))
    store.put(b"b", live(b"2"))
    store.commit()
    store.remove(b"a")
    store.remove(b"never-there")
    assert store.get(b"a") is None
    store.commit()
    assert store.get(b"a") is None
    assert [k for k, _ in store.items()] == [b"b"]


def test_meta_round_trips_and_persists(tmp_path: Path) -> None:
    with LmdbStore(tmp_path / "db") as s:
        assert s.get_meta("incarnation") is None
        s.put_meta("incarnation", b"\x00\x07")
        assert s.get_meta("incarnation") == b"\x00\x07"
        s.put_meta("node_id", b"n1")
        s.commit()
    with LmdbStore(tmp_path / "db") as s:
        assert s.get_meta("incarnation") == b"\x00\x07"
        assert s.get_meta("node_id") == b"n1"
        assert len(s) == 0  # meta is not a record


def test_empty_key_cannot_be_stored(store: LmdbStore) -> None:
    with pytest.raises(ValueError):
        store.put(b"", live(b"x"))
    assert store.get(b"") is None


# -- group commit and durability ---------------------------------------------------


def test_buffered_writes_are_visible_before_commit(store: LmdbStore) -> None:
    store.put(b"b", live(b"2"))
    store.put(b"a", live(b"1"))
    store.put_meta("m", b"v")
    assert store.get(b"a") == live(b"1")
    assert store.get_meta("m") == b"v"
    assert list(store.items()) == [(b"a", live(b"1")), (b"b", live(b"2"))]
    assert len(store) == 2
    store.remove(b"a")
    assert len(store) == 1
    assert store.commits == 0


def test_uncommitted_writes_are_lost_on_close_and_committed_ones_kept(tmp_path: Path) -> None:
    with LmdbStore(tmp_path / "db") as s:
        s.put(b"acked", live(b"1"))
        s.put_meta("m", b"acked")
        s.commit()
        s.put(b"unacked", live(b"2"))
        s.remove(b"acked")
        s.put_meta("m", b"unacked")
    with LmdbStore(tmp_path / "db") as s:
        assert s.get(b"acked") == live(b"1")
        assert s.get(b"unacked") is None
        assert s.get_meta("m") == b"acked"
        assert len(s) == 1


def test_records_persist_across_reopen(tmp_path: Path) -> None:
    records = {b"k%03d" % i: live(b"v%d" % i, wall=i) for i in range(100)}
    with LmdbStore(tmp_path / "db") as s:
        for key, record in records.items():
            s.put(key, record)
        s.commit()
    with LmdbStore(tmp_path / "db") as s:
        assert dict(s.items()) == records
        assert len(s) == 100


def test_one_commit_covers_many_writes(store: LmdbStore) -> None:
    for i in range(50):
        store.put(b"k%d" % i, live(b"v"))
    store.commit()
    store.commit()  # nothing buffered: no transaction
    assert store.commits == 1
    assert len(store) == 50


def test_close_is_idempotent(tmp_path: Path) -> None:
    s = LmdbStore(tmp_path / "db")
    s.close()
    s.close()


# -- corruption --------------------------------------------------------------------


def test_corrupt_record_reads_as_missing_and_is_reported(tmp_path: Path) -> None:
    with LmdbStore(tmp_path / "db") as s:
        for key in (b"a", b"b", b"c"):
            s.put(key, live(b"value of " + key))
        s.commit()
    corrupt_record_on_disk(tmp_path / "db", b"b")
    with LmdbStore(tmp_path / "db") as s:
        assert s.get(b"b") is None
        assert s.corrupt_reads == 1
        assert list(s.corrupt_keys) == [b"b"]
        assert list(s.items()) == ring_order([(b"a", live(b"value of a")),
                                              (b"c", live(b"value of c"))])
        assert s.corrupt_reads == 2
        assert s.get(b"a") == live(b"value of a")
        # A repair overwrites the corrupt copy.
        s.put(b"b", live(b"repaired"))
        s.commit()
        assert s.get(b"b") == live(b"repaired")
        assert s.corrupt_reads == 2


def test_corrupt_tombstone_and_long_key_are_detected(tmp_path: Path) -> None:
    key = long_key(b"!")
    with LmdbStore(tmp_path / "db") as s:
        s.put(b"t", tomb())
        s.put(key, live(b"x"))
        s.commit()
    corrupt_record_on_disk(tmp_path / "db", b"t")
    corrupt_record_on_disk(tmp_path / "db", key)
    with LmdbStore(tmp_path / "db") as s:
        assert s.get(b"t") is None
        assert s.get(key) is None
        assert list(s.corrupt_keys) == [b"t", key]
        assert list(s.items()) == []
        assert s.corrupt_reads == 4


def test_corrupt_meta_is_refused(tmp_path: Path) -> None:
    with LmdbStore(tmp_path / "db") as s:
        s.put_meta("incarnation", b"\x05")
        s.commit()
    env = lmdb.open(str(tmp_path / "db"), max_dbs=4)
    meta = env.open_db(b"meta")
    with env.begin(db=meta, write=True) as txn:
        raw = bytearray(txn.get(b"incarnation"))
        raw[-1] ^= 1
        txn.put(b"incarnation", bytes(raw))
    env.close()
    with LmdbStore(tmp_path / "db") as s, pytest.raises(CorruptMeta):
        s.get_meta("incarnation")


# -- size limits -------------------------------------------------------------------


def test_map_grows_from_a_tiny_start(tmp_path: Path) -> None:
    value = b"x" * (10 * KiB)
    with LmdbStore(tmp_path / "db", map_size=64 * KiB, sync=False) as s:
        for i in range(400):  # about 4 MB, a few hundred records per commit
            s.put(b"k%04d" % i, live(value, wall=i))
            if i % 150 == 149:
                s.commit()
        s.commit()
        assert s.map_growths >= 6
        assert len(s) == 400
    with LmdbStore(tmp_path / "db", map_size=64 * KiB, sync=False) as s:
        assert len(s) == 400
        assert s.get(b"k0399") == live(value, wall=399)


def test_reads_between_commits_share_a_transaction_yet_see_every_commit(
        tmp_path: Path) -> None:
    with LmdbStore(tmp_path / "db", map_size=64 * KiB, sync=False, cache_entries=0) as s:
        s.put(b"k", live(b"one"))
        s.commit()
        assert s.get(b"k") == live(b"one") and s.get_promise(b"k") is None
        reader = s._rtxn
        assert reader is not None and s.get(b"other") is None and s._rtxn is reader
        s.put(b"k", live(b"two", wall=2))  # the write transaction's view, not the reader's
        assert s.get(b"k") == live(b"two", wall=2)
        s.commit()
        assert s.get(b"k") == live(b"two", wall=2) and s._rtxn is not reader
        for i in range(2000):  # the map grows while this turn's reader is open
            s.put(b"grow-%d" % i, live(b"x" * 200))
        s.commit()
        assert s.map_growths >= 1 and s.get(b"grow-1999") == live(b"x" * 200)


def test_store_full_at_max_map_size_keeps_committed_data(tmp_path: Path) -> None:
    value = b"x" * (10 * KiB)
    with LmdbStore(tmp_path / "db", map_size=64 * KiB, max_map_size=512 * KiB) as s:
        s.put(b"early", live(b"committed"))
        s.commit()
        with pytest.raises(StoreFull, match="maximum size"):
            for i in range(100):  # 1 MB does not fit in 512 KiB
                s.put(b"k%03d" % i, live(value))
        # The failed writes are gone; what was committed is still there.
        assert s.get(b"k000") is None
        assert s.get(b"early") == live(b"committed")
        assert list(s.items()) == [(b"early", live(b"committed"))]
        assert len(s) == 1
        # Writes that fit still work.
        s.put(b"late", live(b"small"))
        s.commit()
        assert s.get(b"late") == live(b"small")
    with LmdbStore(tmp_path / "db", map_size=64 * KiB, max_map_size=512 * KiB) as s:
        assert [k for k, _ in s.items()] == [b"early", b"late"]


def test_a_promise_dropped_by_a_discarded_turn_is_still_found(tmp_path: Path) -> None:
    """Replica reads skip the promise lookup while no promise is stored; a drop that a
    full store discards must not leave them skipping it."""
    ballot = Version(5, 0, "n1")
    with LmdbStore(tmp_path / "db", map_size=64 * KiB, max_map_size=512 * KiB) as s:
        assert s.get_promise(b"k") is None
        s.put_promise(b"k", ballot)
        s.put_promise(b"j", ballot)
        s.commit()
        s.drop_promise(b"j")
        assert s.get_promise(b"j") is None and s.get_promise(b"k") == ballot
        s.drop_promise(b"k")  # the last one: lookups stop
        assert s.get_promise(b"k") is None
        with pytest.raises(StoreFull, match="maximum size"):
            for i in range(100):  # the turn fails; its drops are undone
                s.put(b"k%03d" % i, live(b"x" * 10 * KiB))
        assert s.get_promise(b"k") == ballot and s.get_promise(b"j") == ballot
    with LmdbStore(tmp_path / "db") as s:  # and a store opened with promises looks them up
        assert s.get_promise(b"k") == ballot


def test_full_disk_raises_store_full(tmp_path: Path) -> None:
    # A file size limit makes the disk look full (EFBIG) to this child process only.
    script = textwrap.dedent(f"""
        import resource, signal
        from zkv.model.versions import Version
        from zkv.storage.base import StoreFull
        from zkv.storage.lmdb_store import LmdbStore
        from zkv.model.record import Record
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        s = LmdbStore({str(tmp_path / "db")!r}, map_size=1 << 20)
        s.put(b"early", Record(Version(1, 0, "n"), False, b"ok"))
        s.commit()
        resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))
        try:
            for i in range(100):
                s.put(b"k%03d" % i, Record(Version(1, 0, "n"), False, b"x" * 10240))
            s.commit()
        except StoreFull as exc:
            print("StoreFull:", exc)
        assert s.get(b"early") is not None and s.get(b"k000") is None
        assert len(s) == 1
        s.close()
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=Path(__file__).parents[2], timeout=60)
    assert done.returncode == 0, done.stderr
    assert "StoreFull:" in done.stdout and "disk full" in done.stdout


# -- keys and order ----------------------------------------------------------------


def test_long_keys_round_trip(store: LmdbStore) -> None:
    a, b = long_key(b"a"), long_key(b"b")
    store.put(a, live(b"A"))
    store.put(b, tomb())
    assert store.get(a) == live(b"A")
    store.commit()
    assert store.get(a) == live(b"A")
    assert store.get(b) == tomb()
    assert store.get(long_key(b"c")) is None
    assert list(store.items()) == ring_order([(a, live(b"A")), (b, tomb())])
    store.remove(a)
    assert store.get(a) is None
    assert len(store) == 1


def test_items_yields_keys_in_ring_order_across_the_long_key_limit(store: LmdbStore) -> None:
    prefix = b"p" * SHORT_KEY_MAX
    keys = [
        prefix,  # exactly at the limit: stored as itself
        prefix + b"\x00",  # long keys sharing the stored prefix: order by the tail
        prefix + b"a" * 500,
        prefix + b"b",
        prefix + b"ba",
        prefix[:-1],
        prefix[:-1] + b"q" + b"z" * 600,
        b"o" * 700,
        b"q",
        b"\x00",
        long_key(b"", 1024, b"\xff"),
    ]
    for i, key in enumerate(reversed(keys)):
        store.put(key, live(b"%d" % i))
    assert [k for k, _ in store.items()] == ring_order(keys)  # through the write transaction
    store.commit()
    assert [k for k, _ in store.items()] == ring_order(keys)
    assert len(store) == len(keys)


def test_items_streams_many_records_in_order(store: LmdbStore) -> None:
    keys = [b"%05d" % i for i in range(1000)] + [long_key(b"%05d" % i) for i in range(300)]
    for key in keys:
        store.put(key, live(b"v"))
    store.commit()
    assert [k for k, _ in store.items()] == ring_order(keys)


def test_a_token_range_reads_exactly_the_keys_whose_tokens_lie_in_it(store: LmdbStore) -> None:
    keys = [b"%05d" % i for i in range(600)] + [long_key(b"%05d" % i) for i in range(100)]
    for key in keys:
        store.put(key, live(b"v"))
    store.commit()
    ring = Ring(["a", "b", "c"], 3, 8)
    seen: list[bytes] = []
    for segment in range(ring.segments):
        for first, last in ring.segment_ranges(segment):
            got = [k for k, _ in store.token_range(first, last)]
            assert got == ring_order([k for k in keys if first <= token(k) <= last])
            assert all(ring.segment(k) == segment for k in got)
            seen.extend(got)
    assert sorted(seen) == sorted(keys)  # the segments cover the ring once


def test_items_tolerates_writes_and_commits_while_iterating(store: LmdbStore) -> None:
    keys = [b"%04d" % i for i in range(1000)]
    for key in keys:
        store.put(key, live(b"v"))
    store.commit()
    seen = []
    for key, _ in store.items():  # noqa: PERF102 - a store, not a dict: items() is under test
        if key in keys:
            seen.append(key)
        store.put(b"+" + key, live(b"w"))  # anywhere in ring order: seen or not
        if len(seen) % 100 == 0:
            store.commit()
    assert seen == ring_order(keys)  # each key present throughout, once
    assert len(store) >= 2000


def test_second_open_of_the_same_store_is_refused(tmp_path: Path) -> None:
    with LmdbStore(tmp_path / "db"), pytest.raises(lmdb.Error):
        LmdbStore(tmp_path / "db")


# -- behaves like a dict ------------------------------------------------------------

_keys = st.one_of(
    st.binary(min_size=1, max_size=4),
    st.builds(lambda tail: b"L" * SHORT_KEY_MAX + tail, st.binary(min_size=0, max_size=3)),
    st.builds(lambda tail: b"L" * 600 + tail, st.binary(min_size=0, max_size=3)),
)
_records = st.builds(lambda wall, value, dead: tomb(wall) if dead else live(value, wall),
                     st.integers(0, 2**40), st.binary(max_size=20), st.booleans())
_operations = st.lists(st.one_of(
    st.tuples(st.just("put"), _keys, _records),
    st.tuples(st.just("remove"), _keys, st.none()),
    st.tuples(st.just("get"), _keys, st.none()),
    st.tuples(st.just("commit"), st.none(), st.none()),
    st.tuples(st.just("reopen"), st.none(), st.none()),
), max_size=40)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_operations)
def test_behaves_like_a_dict_that_forgets_uncommitted_writes(operations: list) -> None:
    model: dict[bytes, Record] = {}
    committed: dict[bytes, Record] = {}

    def open_store(path: str) -> LmdbStore:  # a small record cache: entries come and go
        return LmdbStore(path, sync=False, cache_entries=3, cache_bytes=1500)

    with tempfile.TemporaryDirectory() as tmp:
        s = open_store(tmp)
        try:
            for op, key, record in operations:
                if op == "put":
                    s.put(key, record)
                    model[key] = record
                elif op == "remove":
                    s.remove(key)
                    model.pop(key, None)
                elif op == "get":
                    assert s.get(key) == model.get(key)
                elif op == "commit":
                    s.commit()
                    committed = dict(model)
                else:  # close without commit, open again
                    s.close()
                    s = open_store(tmp)
                    model = dict(committed)
                assert list(s.items()) == ring_order(model.items())
                assert len(s) == len(model)
            for key, record in model.items():
                assert s.get(key) == record
        finally:
            s.close()
