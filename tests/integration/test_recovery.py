"""Crashes and restarts of real node processes: no acknowledged write is ever lost."""

from __future__ import annotations

import signal
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from zkv.client import Client
from zkv.config import store_path
from zkv.errors import Unavailable, ZkvError
from zkv.storage.lmdb_store import corrupt_record_on_disk

from .harness import Cluster, read_record, wait_until
from .synchook import read_hook_log

# Nodes that record whether each turn's writes reached fsync before their replies left.
SYNC_HOOKED = (sys.executable, str(Path(__file__).with_name("synchook.py")))
SHUTDOWN_GRACE = 2.0  # the nodes' shutdown_grace (the default), given explicitly below


def test_one_replica_killed_reads_and_writes_go_on_and_it_catches_up(cluster_factory) -> None:
    cluster: Cluster = cluster_factory(3)
    kv = cluster.client()
    kv.put("k", b"before")
    primary, *_ = kv.locate("k")
    victim = cluster.nodes[primary]

    cluster.kill(primary)
    assert kv.get("k") == b"before"
    kv.put("k", b"while-down")
    kv.put("new", b"born-while-down")
    assert kv.get("k") == b"while-down"
    latest = read_record(cluster.nodes[kv.locate("k")[1]].data_dir, b"k")
    assert latest is not None and latest.value == b"while-down"

    cluster.start(primary)
    cluster.wait_converged()

    def caught_up() -> bool:
        mine = read_record(victim.data_dir, b"k")
        born = read_record(victim.data_dir, b"new")
        return (mine is not None and mine.version == latest.version
                and born is not None and born.value == b"born-while-down")

    wait_until(caught_up, 15, f"{primary} to catch up on writes it missed")
    assert kv.get("k") == b"while-down"
    assert kv.get("k", consistency="all") == b"while-down"


def test_two_replicas_killed_quorum_fails_in_time_then_recovers(cluster_factory) -> None:
    # t_remove long enough that the dead replicas stay in the ring during the checks.
    cluster: Cluster = cluster_factory(5, t_remove=10.0)
    timeout = 1.5
    kv = cluster.client(timeout=timeout)
    kv.put("k", b"acked")
    replicas = kv.locate("k")
    dead = replicas[:2]
    cluster.kill(*dead)

    for attempt in (lambda: kv.put("k", b"never-acked"), lambda: kv.get("k"),
                    lambda: kv.delete("k")):
        started = time.monotonic()
        with pytest.raises(Unavailable):
            attempt()
        # At its deadline, not a round of retries later (a loaded machine gets half a
        # timeout of slack; another round would take a whole one).
        assert time.monotonic() - started < 1.5 * timeout
    assert kv.get("k", consistency="one") == b"acked"
    # A key whose replicas all live does not notice.
    elsewhere = next(k for k in (f"other{i}" for i in range(1000))
                     if not set(kv.locate(k)) & set(dead))
    kv.put(elsewhere, b"fine")
    assert kv.get(elsewhere) == b"fine"

    cluster.start(*dead)
    cluster.wait_converged()
    assert kv.get("k") == b"acked"
    kv.put("k", b"after")
    assert kv.get("k") == b"after"


def test_every_acknowledged_write_survives_killing_every_node(cluster_factory) -> None:
    cluster: Cluster = cluster_factory(3, program=SYNC_HOOKED)
    acked: dict[str, bytes] = {}
    stop = threading.Event()
    lock = threading.Lock()

    def writer(w: int) -> None:
        with Client([h.address for h in cluster.nodes.values()], timeout=1.0) as kv:
            i = 0
            while not stop.is_set():
                key, value = f"w{w}-{i}", b"value-%d-%d" % (w, i)
                try:
                    kv.put(key, value)
                except ZkvError:
                    continue  # unknown outcome: no promise to check
                with lock:
                    acked[key] = value
                i += 1

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(3)]
    for t in threads:
        t.start()
    wait_until(lambda: len(acked) >= 150, 30, "150 acknowledged writes")
    cluster.kill(*cluster.nodes)  # every node at once, mid-stream
    stop.set()
    for t in threads:
        t.join(timeout=10)
    with lock:
        promised = dict(acked)

    cluster.start()
    cluster.wait_converged()
    kv = cluster.client()
    lost = {k: v for k, v in promised.items() if kv.get(k) != v}
    assert not lost, f"{len(lost)} of {len(promised)} acknowledged writes lost"

    # SIGKILL spares the page cache, so the above holds even without fsync; a power
    # loss would not. What it needs: every commit was fsynced (data and meta page),
    # and no reply or ack left while writes were still uncommitted.
    for node_id, handle in cluster.nodes.items():
        turns = read_hook_log(handle.data_dir)
        total = {k: sum(t[k] for t in turns) for k in ("commits", "unsynced", "replies",
                                                       "acks", "early")}
        assert total["commits"] > 0 and total["acks"] > 0, f"{node_id}: hook saw {total}"
        assert total["unsynced"] == 0, f"{node_id}: commits without fsync: {total}"
        assert total["early"] == 0, f"{node_id}: answers sent before their commit: {total}"
    assert sum(t["replies"] for h in cluster.nodes.values()
               for t in read_hook_log(h.data_dir)) >= len(promised)


def test_sigterm_only_stops_the_node_which_stays_a_member(cluster_factory) -> None:
    cluster: Cluster = cluster_factory(3, shutdown_grace=SHUTDOWN_GRACE)
    kv = cluster.client()
    kv.put("k", b"v")
    epochs = {e["fields"]["epoch"] for e in cluster.nodes["n1"].events("map_adopted")}
    started = time.monotonic()
    assert cluster.stop("n3") == 0
    # Nothing in flight: well within its grace (plus as much again for a loaded machine).
    assert time.monotonic() - started < 2 * SHUTDOWN_GRACE + 1
    assert cluster.nodes["n3"].events()[-1]["kind"] == "stopped"
    cluster.wait_status(["n1", "n2"], "n3", "down")  # down, not gone: the ring keeps it
    assert kv.get("k") == b"v"
    kv.put("k", b"v2")  # a quorum of n1 and n2
    assert kv.get("k") == b"v2"

    cluster.start("n3")  # it comes back with a higher incarnation, and its data
    cluster.wait_converged()
    assert kv.get("k", consistency="all") == b"v2"
    # No ring change happened: the stop moved no data out and the restart none back in.
    assert {e["fields"]["epoch"] for e in cluster.nodes["n1"].events("map_adopted")} == epochs


def test_a_corrupt_record_is_reported_and_repaired(cluster_factory) -> None:
    cluster: Cluster = cluster_factory(3)
    kv = cluster.client()
    kv.put("k", b"precious")
    primary = kv.locate("k")[0]
    victim = cluster.nodes[primary]
    assert cluster.stop(primary) == 0
    corrupt_record_on_disk(store_path(victim.data_dir), b"k")
    cluster.start(primary)
    cluster.wait_converged()

    assert kv.get("k") == b"precious"
    wait_until(lambda: victim.events("corrupt_record"), 10, "the corruption to be reported")
    wait_until(lambda: (r := read_record(victim.data_dir, b"k")) is not None
             and r.value == b"precious", 10, "the record to be repaired")
    text = urllib.request.urlopen(victim.metrics_url, timeout=5).read().decode()
    counted = [s.value for f in text_string_to_metric_families(text)
               for s in f.samples if s.name == "zkv_checksum_failures_total"]
    assert counted and counted[0] >= 1, f"zkv_checksum_failures_total: {counted or 'missing'}"


def test_a_silent_coordinator_is_bypassed_within_the_timeout(cluster_factory) -> None:
    cluster: Cluster = cluster_factory(3)
    timeout = 3.0
    patience = timeout / 3  # the client asks the next coordinator after this much silence
    kv = cluster.client(timeout=timeout)
    kv.put("k", b"v1")
    primary = cluster.nodes[kv.locate("k")[0]]
    primary.proc.send_signal(signal.SIGSTOP)  # connected but silent: the worst case
    try:
        started = time.monotonic()
        assert kv.get("k") == b"v1"  # after a third of the timeout, the next replica answers
        assert time.monotonic() - started < timeout
        # The silent node is now asked last, so writes (never sent to a second
        # coordinator while one holds them: one sent to it would time out) and reads
        # go elsewhere at once, not after waiting ``patience`` for it.
        kv.put("k", b"v2")
        started = time.monotonic()
        assert kv.get("k") == b"v2"
        assert time.monotonic() - started < patience
    finally:
        primary.proc.send_signal(signal.SIGCONT)
    assert kv.get("k", consistency="all") == b"v2"


def test_a_full_store_never_acknowledges_a_write_it_lost(cluster_factory) -> None:
    cluster: Cluster = cluster_factory(1, map_size="1MiB", max_map_size="1MiB")
    acked: dict[str, bytes] = {}
    lock = threading.Lock()

    def writer(w: int) -> None:
        with Client(cluster.seeds, timeout=0.5) as kv:
            refusals = i = 0
            while refusals < 3:
                key, value = f"w{w}-{i}", bytes([w, i % 256]) * 16 * 1024
                i += 1
                try:
                    kv.put(key, value)
                except Unavailable:
                    refusals += 1
                    continue
                with lock:
                    acked[key] = value

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert acked and cluster.events("store_full"), "the store never filled up"
    cluster.kill("n1")
    cluster.start("n1")
    cluster.wait_converged()
    kv = cluster.client()
    lost = [k for k, v in acked.items() if kv.get(k) != v]
    assert not lost, f"{len(lost)} of {len(acked)} acknowledged writes lost"
