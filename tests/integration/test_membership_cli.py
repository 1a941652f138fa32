"""Changing the ring from the command line: ``cluster add``, ``node decommission``,
``node remove``, and what ``cluster status`` and ``Client.node_status`` show of them.

One local cluster runs through the module, and its tests run in file order, each
starting from the ring the one before left: 3 nodes, then 5 (add), then 4
(decommission), then 3 (remove). It runs with ``--removal manual``, so a dead node
leaves the ring only when ``node remove`` says so.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import psutil
import pytest

from zkv.client import Client
from zkv.supervisor import free_base_port, node_port

from .harness import FAST_TIMERS, SupervisedCluster, running_cluster, wait_until, zkv

KEYS = {f"member-{i}": f"value-{i}".encode() for i in range(30)}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SupervisedCluster]:
    # Ports free for the nodes cluster add starts too (a later --base-port wins).
    base = free_base_port(3 * 6)
    with running_cluster(tmp_path_factory.mktemp("membership") / "cluster", 3,
                         "--removal", "manual", "--base-port", str(base)) as c:
        assert c.info()["base_port"] == base
        c.base_port = base
        with Client.from_cluster_dir(c.data_dir, timeout=5) as kv:
            for key, value in KEYS.items():
                kv.put(key, value)
        yield c


def status(cluster: SupervisedCluster) -> dict:
    result = cluster.run("cluster", "status", "--json")
    assert result.returncode == 0, result.stderr.decode()
    return json.loads(result.stdout)


def in_ring(cluster: SupervisedCluster) -> set[str]:
    """Nodes the newest map has in its ring, as ``cluster status`` shows them."""
    return {n["node"] for n in status(cluster)["nodes"] if n["ring"] == "normal"}


def assert_every_key_readable(cluster: SupervisedCluster) -> None:
    with Client.from_cluster_dir(cluster.data_dir, timeout=5) as kv:
        for key, value in KEYS.items():
            assert kv.get(key, consistency="quorum") == value, key


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_node_status_is_each_nodes_view_of_the_map(cluster):
    address = cluster.node("node-1")["address"]
    with Client([address], timeout=2) as kv:
        view = kv.node_status(address)
        assert view["node"] == "node-1" and view["member"] is True
        assert set(view["members"]) == {"node-1", "node-2", "node-3"}
        assert {m["state"] for m in view["members"].values()} == {"normal"}
        assert kv.admin("status").info["epoch"] == view["epoch"]
        assert kv.node_status("tcp://127.0.0.1:1", timeout=0.3) is None  # nobody there


def test_decommission_is_refused_when_fewer_nodes_than_replicas_would_remain(cluster):
    result = cluster.run("node", "decommission", "node-2")
    assert result.returncode == 2
    assert b"fewer than the 3 replicas" in result.stderr
    assert result.stderr.count(b"\n") == 1 and result.stderr.startswith(b"zkv: ")
    assert in_ring(cluster) == {"node-1", "node-2", "node-3"}


def test_cluster_add_refuses_without_a_supervisor_or_with_a_port_taken(cluster, tmp_path):
    (tmp_path / "cluster.json").write_text('{"nodes": []}')  # a cluster nobody runs
    result = zkv("cluster", "add", "--data-dir", tmp_path)
    assert result.returncode == 2 and b"no supervisor is running" in result.stderr

    port = node_port(cluster.base_port, 3)  # node-4's
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        result = cluster.run("cluster", "add")
    assert result.returncode == 2
    assert f"port {port} on 127.0.0.1 is in use".encode() in result.stderr
    assert [n["id"] for n in cluster.info()["nodes"]] == ["node-1", "node-2", "node-3"]


def test_cluster_add_joins_new_nodes_and_every_key_stays_readable(cluster):
    before = status(cluster)["epoch"]
    result = cluster.run("cluster", "add", "--nodes", "2", "--json")
    assert result.returncode == 0, result.stderr.decode()
    added = json.loads(result.stdout)
    assert added["added"] == ["node-4", "node-5"]
    assert added["ring"] == ["node-1", "node-2", "node-3", "node-4", "node-5"]

    info = cluster.info()
    assert [n["id"] for n in info["nodes"]][3:] == ["node-4", "node-5"]
    for i, node in enumerate(info["nodes"]):
        assert node["address"] == f"tcp://127.0.0.1:{node_port(cluster.base_port, i)}"
        assert node["status"] == "running"
    now = status(cluster)
    assert now["epoch"] > before
    assert {n["node"]: n["ring"] for n in now["nodes"]} == {
        f"node-{i}": "normal" for i in range(1, 6)}
    assert_every_key_readable(cluster)


def test_decommission_streams_the_data_away_and_the_process_exits(cluster):
    pid = cluster.node("node-2")["pid"]
    result = cluster.run("node", "decommission", "node-2", "--json")
    assert result.returncode == 0, result.stderr.decode()
    done = json.loads(result.stdout)
    assert done["node"] == "node-2" and done["epoch_after"] > done["epoch_before"]

    assert not alive(pid)
    assert cluster.node("node-2")["status"] == "decommissioned"
    now = status(cluster)
    assert in_ring(cluster) == {"node-1", "node-3", "node-4", "node-5"}
    assert next(n for n in now["nodes"] if n["node"] == "node-2")["ring"] == "decommissioned"
    assert_every_key_readable(cluster)
    # The table says the same, in its RING column.
    table = cluster.run("cluster", "status").stdout.decode().splitlines()
    assert table[1].split()[-3:] == ["EPOCH", "RING", "STREAM"]
    rows = {line.split()[0]: line.split() for line in table[2:] if line.startswith("node-")}
    assert rows["node-2"][-2] == "decommissioned" and rows["node-1"][-2] == "normal"


def test_remove_refuses_a_live_node_and_drops_a_dead_one(cluster):
    refused = cluster.run("node", "remove", "node-4")
    assert refused.returncode == 2 and b"alive" in refused.stderr

    assert cluster.run("node", "kill", "node-3", "--no-restart").returncode == 0
    result = cluster.run("node", "remove", "node-3")
    assert result.returncode == 0, result.stderr.decode()
    assert b"removed node-3" in result.stdout
    assert in_ring(cluster) == {"node-1", "node-4", "node-5"}
    assert_every_key_readable(cluster)


def test_a_restarted_cluster_runs_the_added_nodes_but_not_the_decommissioned_one(cluster):
    assert cluster.run("cluster", "down").returncode == 0
    result = zkv("cluster", "up", "--data-dir", cluster.data_dir, "--detach", "--timeout", "30",
                 *FAST_TIMERS, "--removal", "manual")
    assert result.returncode == 0, result.stderr.decode()  # the ports and nodes of last time
    nodes = {n["id"]: n for n in cluster.info()["nodes"]}
    assert nodes["node-2"]["status"] == "decommissioned" and nodes["node-2"]["pid"] is None
    assert all(nodes[n]["status"] == "running" for n in ("node-1", "node-4", "node-5"))
    wait_until(lambda: {"node-1", "node-4", "node-5"} <= in_ring(cluster), 20,
               "the restarted nodes in the ring")
    assert_every_key_readable(cluster)
