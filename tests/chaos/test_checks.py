"""The verdicts at the end of a run: lost writes and placement."""

from __future__ import annotations

import subprocess
import sys

from zkv.chaos.checks import lost_writes, placement
from zkv.check import Op
from zkv.core.ring import Ring
from zkv.model.record import Record
from zkv.model.versions import Version
from zkv.storage.lmdb_store import LmdbStore, read_records

K = b"k"


def put(value: bytes, start: float, end: float, outcome: str = "ok") -> Op:
    return Op(1, "put", K, value, outcome, start, end)


def delete(start: float, end: float, found: bool | None = True, outcome: str = "ok") -> Op:
    return Op(2, "delete", K, None, outcome, start, end, found if outcome == "ok" else None)


def final(value: bytes | None) -> Op:
    return Op(99, "get", K, value, "ok", 100.0, 100.1)


def test_a_final_read_of_an_older_value_proves_the_later_acknowledged_write_lost():
    a, b = put(b"a", 1, 2), put(b"b", 3, 4)
    (lost,) = lost_writes([a, b], {K: final(b"a")})
    assert lost.write == b
    assert "lost" in lost.explain()


def test_concurrent_or_unknown_writes_may_win():
    a, b = put(b"a", 1, 3), put(b"b", 2, 4)  # concurrent: either order
    assert lost_writes([a, b], {K: final(b"a")}) == []
    late = put(b"c", 0.5, None, outcome="unknown")  # may take effect any time
    assert lost_writes([late, put(b"d", 5, 6)], {K: final(b"c")}) == []


def test_absent_at_the_end_needs_a_delete_that_could_come_last():
    a = put(b"a", 1, 2)
    assert lost_writes([a], {K: final(None)})[0].write == a
    assert lost_writes([a, delete(3, 4)], {K: final(None)}) == []
    assert lost_writes([a, delete(3, 4, found=False)], {K: final(None)})[0].write == a
    assert lost_writes([delete(0, 0.5), a], {K: final(None)})[0].write == a


def record(wall: int, value: bytes = b"v") -> Record:
    return Record(Version(wall, 0, "n"), False, value)


def test_placement_wants_exactly_the_replica_set_with_one_record():
    ring = Ring(["n1", "n2", "n3", "n4"], 3, 8)
    replicas = ring.locate(K)
    other = next(n for n in ring.nodes if n not in replicas)
    good = {n: {K: record(1)} for n in replicas} | {other: {}}
    assert placement(ring, good) == []

    missing = dict(good) | {replicas[0]: {}}
    assert "missing on " + replicas[0] in placement(ring, missing)[0].explain()
    stray = dict(good) | {other: {K: record(1)}}
    assert "stray copies on " + other in placement(ring, stray)[0].explain()
    differs = dict(good) | {replicas[1]: {K: record(2, b"w")}}
    assert "records differ" in placement(ring, differs)[0].explain()


def test_records_are_read_from_a_store_another_process_holds_open(tmp_path):
    store = LmdbStore(tmp_path)
    store.put(b"a", record(1))
    store.put(b"L" * 600, Record.tomb(Version(2, 0, "n")))  # a long key
    store.commit()
    store.put(b"b", record(3))  # not committed: not visible
    code = ("import sys; from zkv.storage.lmdb_store import read_records; "
            f"r = read_records({str(tmp_path)!r}); "
            "print(sorted((k[:1].decode(), v.version.wall_ms) for k, v in r.items()))")
    seen = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip()
    assert seen == "[('L', 2), ('a', 1)]"
    store.close()
    assert read_records(tmp_path)[b"a"] == record(1)
    assert read_records(tmp_path / "nothing-here") == {}
