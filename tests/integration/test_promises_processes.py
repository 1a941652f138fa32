"""README promises that only real processes can show: the quorum_failures metric,
fsync before the reply, and CurveZMQ between nodes (who may join, revocation)."""

from __future__ import annotations

import json
import os
import pty
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from zkv.client import Client
from zkv.errors import Unavailable
from zkv.keys import CurveKeys, generate

from .harness import TEST_TIMERS, Cluster, clusters_under, running_cluster, wait_until, zkv
from .synchook import read_hook_log

SYNC_HOOKED = (sys.executable, str(Path(__file__).with_name("synchook.py")))


def metric(url: str, line_start: str) -> float:
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    values = [
        float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines() if ln.startswith(line_start + " ")
    ]
    return values[0] if values else 0.0


# --------------------------------------------------------------- consistency


def test_the_quorum_failures_metric_counts_a_quorum_write_refused_for_want_of_replicas(
    cluster_factory,
) -> None:
    cluster: Cluster = cluster_factory(3)
    n1 = cluster.nodes["n1"]
    failures = 'zkv_quorum_failures_total{op="put"}'
    before = metric(n1.metrics_url, failures)
    with Client([n1.address], timeout=2.0) as kv:
        kv.put("k", b"v")
        cluster.kill("n2", "n3")
        with pytest.raises(Unavailable):
            kv.put("k", b"w", timeout=1.0)
    wait_until(
        lambda: metric(n1.metrics_url, failures) >= before + 1,
        10,
        "zkv_quorum_failures to count the refused put",
    )


# --------------------------------------------------------------- durability


def test_with_sync_every_reply_leaves_after_its_commit_reached_fsync(cluster_factory) -> None:
    cluster: Cluster = cluster_factory(3, program=SYNC_HOOKED)
    with Client([h.address for h in cluster.nodes.values()], timeout=2.0) as kv:
        for i in range(20):
            kv.put(f"k{i}", b"v%d" % i, consistency="all")
    for node_id, handle in cluster.nodes.items():
        turns = wait_until(lambda h=handle: read_hook_log(h.data_dir), 5, f"{node_id}'s hook log")
        total = {k: sum(t[k] for t in turns) for k in ("commits", "unsynced", "acks", "early")}
        assert total["commits"] > 0 and total["acks"] > 0, f"{node_id}: hook saw {total}"
        assert total["unsynced"] == 0, f"{node_id}: commits without fsync: {total}"
        assert total["early"] == 0, f"{node_id}: answers sent before their commit: {total}"
    replies = sum(t["replies"] for h in cluster.nodes.values() for t in read_hook_log(h.data_dir))
    assert replies >= 20


# --------------------------------------------------------------- CurveZMQ


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    """cluster and alice are authorized; rogue has a pair of its own, authorized only
    in its own directory (so it starts, and fails only at the others)."""
    root = tmp_path / "keys"
    for name in ("cluster", "alice"):
        public, _ = generate(root / "private", name)
        (root / "authorized").mkdir(exist_ok=True)
        shutil.copy(public, root / "authorized" / public.name)
    public, _ = generate(root / "private", "rogue")
    (root / "rogue-authorized").mkdir()
    shutil.copy(public, root / "rogue-authorized" / public.name)
    shutil.copy(root / "authorized" / "cluster.key", root / "rogue-authorized" / "cluster.key")
    return root


def curve_options(keys: Path, name: str = "cluster", authorized: str = "authorized") -> dict:
    return {
        "curve": True,
        "secret_key": keys / "private" / f"{name}.key_secret",
        "authorized_keys": keys / authorized,
    }


def client_as(cluster: Cluster, keys: Path, name: str, timeout: float = 1.0) -> Client:
    curve = CurveKeys.from_files(
        keys / "private" / f"{name}.key_secret", keys / "authorized" / "cluster.key"
    )
    return cluster.client(curve=curve, timeout=timeout)


def wait_serving(cluster: Cluster, keys: Path, members: int) -> Client:
    kv = client_as(cluster, keys, "cluster")

    def ready() -> bool:
        try:
            kv.put("ready", b"1", consistency="all")
            return len(kv.ring()) == members
        except Unavailable:
            return False

    wait_until(ready, 30.0, f"the secured cluster to serve with {members} nodes")
    return kv


def outsider(root: Path, seeds: list[str], node_id: str, options: dict) -> Cluster:
    """One node seeded with the secured cluster's addresses."""
    c = Cluster(root / node_id, 1, {**TEST_TIMERS, **options})
    c.nodes = {node_id: c.nodes.pop("n1")}
    c.nodes[node_id].node_id = node_id
    c.nodes[node_id].data_dir = root / node_id / node_id
    c.seeds = seeds
    c.start()
    return c


def test_a_node_with_an_unauthorized_key_or_without_curve_never_joins_nor_hears_gossip(
    keys: Path, tmp_path: Path
) -> None:
    with clusters_under(tmp_path / "secured") as make:
        cluster = make(3, wait=False, **curve_options(keys))
        kv = wait_serving(cluster, keys, 3)
        seeds = [h.address for h in cluster.nodes.values()]
        rogue = outsider(tmp_path, seeds, "rogue", curve_options(keys, "rogue", "rogue-authorized"))
        plain = outsider(tmp_path, seeds, "plain", {})
        member = None
        try:
            started = time.monotonic()
            while time.monotonic() - started < 6.0:  # 6 t_fail: a join takes well under one
                for c in (rogue, plain):
                    (handle,) = c.nodes.values()
                    assert handle.running, f"{handle.node_id} exited {handle.proc.returncode}"
                    assert not handle.events("joined"), f"{handle.node_id} joined"
                    heard = {e["fields"].get("node") for e in handle.events("member_status")}
                    assert not heard & set(cluster.nodes), f"{handle.node_id} heard {heard}"
                assert set(kv.ring()) == set(cluster.nodes)
                time.sleep(0.25)
            listed = {e["fields"].get("node") for e in cluster.events("member_status")}
            assert not listed & {"rogue", "plain"}, listed
            # The control: the same set-up with the cluster's key joins.
            member = outsider(tmp_path, seeds, "member", curve_options(keys))
            wait_until(lambda: "member" in kv.ring(), 20, "a node with the cluster key to join")
        finally:
            rogue.close()
            plain.close()
            if member is not None:
                member.close()


def test_revoking_a_key_takes_effect_when_the_nodes_restart(keys: Path, tmp_path: Path) -> None:
    with clusters_under(tmp_path / "secured") as make:
        cluster = make(3, wait=False, **curve_options(keys))
        wait_serving(cluster, keys, 3)
        alice = client_as(cluster, keys, "alice")
        alice.put("a", b"1")
        (keys / "authorized" / "alice.key").unlink()  # revoked
        for node_id in cluster.nodes:
            assert cluster.stop(node_id) == 0
        cluster.start()
        wait_serving(cluster, keys, 3)
        late = client_as(cluster, keys, "alice")
        with pytest.raises(Unavailable):
            late.get("a")
        assert client_as(cluster, keys, "cluster").get("a") == b"1"


# --------------------------------------------------------------- the CLI


def test_the_cli_gives_every_documented_exit_code_status_json_and_a_newline_only_on_a_tty(
    tmp_path: Path,
) -> None:
    with running_cluster(tmp_path / "c", 3) as c:
        assert c.run("put", "k", "v").returncode == 0
        piped = c.run("get", "k")
        assert (piped.returncode, piped.stdout) == (0, b"v")  # no newline into a pipe
        assert c.run("get", "missing").returncode == 1
        assert c.run("create", "k", "other").returncode == 1
        assert c.run("get", "k", "--consistency", "most").returncode == 2
        assert zkv("get", "k", "--seeds", "127.0.0.1:1", "--timeout", "0.5").returncode == 3

        status = c.run("cluster", "status", "--json")
        assert status.returncode == 0, status.stderr
        doc = json.loads(status.stdout)
        assert {
            "supervisor_running",
            "ready",
            "seeds",
            "epoch",
            "streaming",
            "ranges_degraded",
            "nodes",
        } <= set(doc), doc
        assert doc["supervisor_running"] is True and isinstance(doc["epoch"], int)
        assert [n["node"] for n in doc["nodes"]] == ["node-1", "node-2", "node-3"]
        for row in doc["nodes"]:
            assert {
                "node",
                "address",
                "status",
                "keys",
                "pid",
                "uptime",
                "restarts",
                "metrics",
                "epoch",
                "ring",
                "streaming",
            } <= set(row), row
            assert row["status"] == "running" and isinstance(row["pid"], int)

        leader, follower = pty.openpty()
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "zkv", "get", "k", "--data-dir", str(c.data_dir)],
                stdout=follower,
                stderr=subprocess.PIPE,
            )
            os.close(follower)
            follower = -1
            out = b""
            while True:
                try:
                    chunk = os.read(leader, 1024)
                except OSError:  # EIO: the terminal's other end closed
                    break
                if not chunk:
                    break
                out += chunk
            assert proc.wait(timeout=30) == 0, proc.stderr.read()
            assert out.replace(b"\r\n", b"\n") == b"v\n", out
        finally:
            os.close(leader)
            if follower >= 0:
                os.close(follower)
