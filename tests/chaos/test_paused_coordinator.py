"""A write sent to a node that then hangs must not be acknowledged by another.

Found by ``zkv chaos`` (kills and pauses, seed 1): a client sent a put to a
replica that was paused (SIGSTOP); after a third of its timeout it sent the
same put to a second coordinator, which acknowledged it. Seconds later the
paused node woke up, took the queued request and ran it again with a fresh,
higher version, overwriting every write acknowledged in between.
"""

from __future__ import annotations

import json
import time
import urllib.request

import pytest

from zkv.chaos.cluster import ChaosCluster
from zkv.check import Op, check_history
from zkv.client import Client
from zkv.errors import Unavailable

from .conftest import FAST_TIMERS


def wait_until_settled(cluster: ChaosCluster, timeout: float = 30.0) -> None:
    """Until no node counts an earlier ring in its quorums any more (t_transition after
    the cluster formed). Within that window a quorum also needs the old replica set,
    which a freshly formed cluster's first ring may share with the node paused below,
    and the test is about plain quorums."""
    urls = [json.loads((cluster.data_dir / node / "node.json").read_text())["metrics"]
            for node in cluster.node_ids]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        values = []
        for url in urls:
            text = urllib.request.urlopen(url, timeout=2).read().decode()
            values += [float(line.split()[1]) for line in text.splitlines()
                       if line.startswith("zkv_settling_rings ")]
        if len(values) == len(urls) and not any(values):
            return
        time.sleep(0.1)
    raise AssertionError(f"rings still settling after {timeout} s")


@pytest.mark.timeout(120)
def test_a_write_held_by_a_paused_coordinator_is_not_acknowledged_elsewhere(tmp_path):
    cluster = ChaosCluster.start(tmp_path / "cluster", 3, list(FAST_TIMERS), None)
    ops: list[Op] = []

    def record(kind: str, value: bytes | None, call) -> None:
        start = time.monotonic()
        try:
            got = call()
            outcome = "ok"
        except Unavailable:
            got, outcome = None, ("fail" if kind == "get" else "unknown")
        ops.append(Op(len(ops), kind, b"k", got if kind == "get" else value, outcome, start,
                      time.monotonic()))

    try:
        wait_until_settled(cluster)
        with Client(cluster.addresses, timeout=1.0) as kv:
            primary = kv.locate(b"k")[0]
            record("put", b"first", lambda: kv.put(b"k", b"first"))
            cluster.pause(primary)
            try:
                record("put", b"held", lambda: kv.put(b"k", b"held"))
                # Room for a loaded machine: this write must not need the paused node.
                record("put", b"later", lambda: kv.put(b"k", b"later", timeout=3.0))
            finally:
                cluster.resume(primary)
            time.sleep(1.0)  # the woken node runs whatever it had queued
            record("get", None, lambda: kv.get(b"k"))
    finally:
        cluster.stop()
    held = ops[1]
    assert held.outcome == "unknown", "the paused coordinator may still run it: not ok"
    assert ops[2].outcome == "ok", "the next write goes to another coordinator"
    result = check_history(ops)
    assert result.ok, result.summary()
