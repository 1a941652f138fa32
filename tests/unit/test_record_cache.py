"""The record cache: bounded by entries and bytes, and never ahead of or behind the store."""

from __future__ import annotations

from pathlib import Path

import pytest

from zkv.model.record import Record
from zkv.model.versions import Version
from zkv.storage.base import StoreFull
from zkv.storage.lmdb_store import LmdbStore, corrupt_record_on_disk
from zkv.storage.record_cache import ENTRY_OVERHEAD, RecordCache

KiB = 1024


def live(value: bytes, wall: int = 1) -> Record:
    return Record(Version(wall, 0, "n1"), False, value)


def test_the_oldest_entry_leaves_when_there_are_too_many() -> None:
    cache = RecordCache(max_entries=2, max_bytes=1 << 20, max_value=1024)
    cache.put(b"a", live(b"1"))
    cache.put(b"b", None)  # held as absent
    cache.put(b"a", live(b"2", wall=2))  # a write makes it the newest again
    cache.put(b"c", live(b"3"))
    assert b"b" not in cache and len(cache) == 2
    assert cache.get(b"a") == live(b"2", wall=2) and cache.get(b"c") == live(b"3")


def test_the_bytes_held_stay_under_the_bound() -> None:
    cache = RecordCache(max_entries=100, max_bytes=3 * (ENTRY_OVERHEAD + 1 + 100),
                        max_value=1024)
    for i in range(10):
        cache.put(bytes([65 + i]), live(b"x" * 100))
        assert cache.held_bytes <= cache.max_bytes
    assert len(cache) == 3 and b"J" in cache and b"G" not in cache
    cache.clear()
    assert len(cache) == 0 and cache.held_bytes == 0


def test_a_value_too_large_is_not_held_and_drops_the_older_entry() -> None:
    cache = RecordCache(max_entries=10, max_bytes=1 << 20, max_value=10)
    cache.put(b"k", live(b"small"))
    cache.put(b"k", live(b"x" * 11))
    assert b"k" not in cache and cache.held_bytes == 0


def test_the_store_answers_from_the_cache_what_it_wrote_or_read(tmp_path: Path) -> None:
    with LmdbStore(tmp_path / "db", sync=False) as s:
        s.put(b"a", live(b"1"))
        s.commit()
        cache = s._cache
        assert s.get(b"a") == live(b"1") and cache.hits == 1 and cache.misses == 0
        assert s.get(b"nothing") is None and cache.misses == 1
        assert s.get(b"nothing") is None and cache.hits == 2
        s.remove(b"a")
        assert s.get(b"a") is None and cache.hits == 3
    with LmdbStore(tmp_path / "db", sync=False) as s:  # a new store reads from disk
        assert s.get(b"a") == live(b"1") and s._cache.misses == 1


def test_writes_a_full_store_discards_leave_the_cache_too(tmp_path: Path) -> None:
    with LmdbStore(tmp_path / "db", map_size=64 * KiB, max_map_size=512 * KiB) as s:
        s.put(b"k", live(b"committed"))
        s.commit()
        with pytest.raises(StoreFull):
            s.put(b"k", live(b"discarded", wall=2))
            for i in range(100):  # 1 MB does not fit in 512 KiB
                s.put(b"f%03d" % i, live(b"x" * 10 * KiB))
        assert s.get(b"k") == live(b"committed")
        assert s.get(b"f000") is None


def test_a_corrupt_record_is_not_held_so_every_read_finds_it(tmp_path: Path) -> None:
    with LmdbStore(tmp_path / "db") as s:
        s.put(b"b", live(b"v"))
        s.commit()
    corrupt_record_on_disk(tmp_path / "db", b"b")
    with LmdbStore(tmp_path / "db") as s:
        assert s.get(b"b") is None and s.get(b"b") is None
        assert s.corrupt_reads == 2 and b"b" not in s._cache


@pytest.mark.parametrize("size,held", [("0", 0), ('"4KiB"', 4), ("16777216", 50)])
def test_a_nodes_cache_is_the_size_its_settings_give(tmp_path: Path, size: str, held: int) -> None:
    """``[memory] record_cache``: bytes of records, one entry per KiB at most."""
    from zkv.config import load_settings
    from zkv.net.runtime import open_store

    conf = tmp_path / "node.toml"
    conf.write_text(f'id = "c"\ndata_dir = "{tmp_path / "data"}"\n'
                    f'[memory]\nrecord_cache = {size}\n[durability]\nsync = false\n')
    with open_store(load_settings(conf)) as s:
        for i in range(50):
            s.put(b"k%02d" % i, live(b"v"))
        assert len(s._cache) == held
