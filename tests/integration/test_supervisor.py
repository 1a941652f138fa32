"""The local-cluster supervisor: cluster.json, restarts, stop/kill/start, clean shutdown."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import psutil
import pytest

from zkv.supervisor import CLUSTER_FILE, live_process

from .harness import (
    FAST_TIMERS,
    SupervisedCluster,
    free_base_port,
    running_cluster,
    wait_until,
    zkv,
)


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_detach_returns_a_ready_cluster_and_prints_its_seeds(tmp_path):
    with running_cluster(tmp_path / "c", nodes=3) as c:
        info = c.info()
        assert info["ready"] is True and alive(info["supervisor_pid"])
        assert info["seeds"] == [f"tcp://127.0.0.1:{c.base_port}",
                                 f"tcp://127.0.0.1:{c.base_port + 3}"]
        for i, node in enumerate(info["nodes"]):
            port = c.base_port + 3 * i
            assert node["id"] == f"node-{i + 1}"
            assert node["address"] == f"tcp://127.0.0.1:{port}"
            assert node["metrics"] == f"http://127.0.0.1:{port + 2}/metrics"
            assert node["status"] == "running" and node["restart"] is True
            assert live_process(node["pid"], node["pid_create_time"]) is not None
            assert node["data_dir"] == str((c.data_dir / f"node-{i + 1}").resolve())
            assert json.loads((c.data_dir / f"node-{i + 1}" / "node.json").read_text())[
                "pid"] == node["pid"]


def test_a_killed_node_is_restarted_with_a_new_pid(tmp_path):
    with running_cluster(tmp_path / "c", nodes=3) as c:
        old = c.node("node-2")
        result = c.run("node", "kill", "node-2")
        assert result.returncode == 0 and str(old["pid"]).encode() in result.stdout
        assert not alive(old["pid"])

        def restarted() -> dict | None:
            node = c.node("node-2")
            return node if node["status"] == "running" and node["pid"] != old["pid"] else None

        node = wait_until(restarted, 15, "the supervisor to restart node-2")
        assert node["restarts"] == old["restarts"] + 1
        assert live_process(node["pid"], node["pid_create_time"]) is not None
        # and it serves again: a quorum write and read through the CLI
        wait_until(lambda: c.run("put", "after", "restart").returncode == 0, 20, "a put")
        assert c.run("get", "after").stdout == b"restart"


def test_a_stopped_node_stays_down_until_started(tmp_path):
    with running_cluster(tmp_path / "c", nodes=3) as c:
        old = c.node("node-3")
        assert c.run("node", "stop", "node-3").returncode == 0
        node = c.node("node-3")
        assert node["status"] == "stopped" and node["pid"] is None and node["restart"] is False
        assert not alive(old["pid"])
        assert json.loads((c.data_dir / "node-3" / "node.json").read_text())["status"] == \
            "stopped"  # a graceful exit

        status = c.run("cluster", "status").stdout.decode()
        row = next(line.split() for line in status.splitlines() if line.startswith("node-3"))
        assert row[2] == "stopped" and row[3] == "-"

        assert c.run("node", "kill", "node-3").returncode == 1  # nothing to kill
        assert c.run("node", "start", "node-3").returncode == 0
        node = wait_until(lambda: (n := c.node("node-3"))["status"] == "running" and n, 10,
                          "node-3 to run again")
        assert node["pid"] != old["pid"] and node["restarts"] == old["restarts"]


def test_kill_with_no_restart_leaves_the_node_down(tmp_path):
    with running_cluster(tmp_path / "c", nodes=3) as c:
        old = c.node("node-1")
        assert c.run("node", "kill", "node-1", "--no-restart").returncode == 0
        wait_until(lambda: c.node("node-1")["status"] == "stopped", 10, "node-1 recorded down")
        assert not alive(old["pid"])
        # Much longer than the first restart backoff: still down.
        with pytest.raises(AssertionError):
            wait_until(lambda: c.node("node-1")["status"] != "stopped", 1.2, "a restart")
        assert c.node("node-1")["last_exit"] == "killed by SIGKILL"


def test_cluster_down_ends_every_process_it_started(tmp_path):
    with running_cluster(tmp_path / "c", nodes=3) as c:
        c.run("node", "kill", "node-2")  # a restart in flight must not survive either
        supervisor = psutil.Process(c.info()["supervisor_pid"])
        started = [p.pid for p in supervisor.children(recursive=True)] + [supervisor.pid]
        result = c.run("cluster", "down")
        assert result.returncode == 0 and b"stopped" in result.stdout
        assert not [pid for pid in started if alive(pid)]
        assert not c.live_pids()
        info = c.info()
        assert info["supervisor_pid"] is None
        assert all(n["status"] == "stopped" and n["pid"] is None for n in info["nodes"])
        assert c.run("cluster", "down").stdout.startswith(b"nothing was running")


def test_data_survives_cluster_down_and_up(tmp_path):
    with running_cluster(tmp_path / "c", nodes=3) as c:
        assert c.run("put", "durable", "yes").returncode == 0
        assert c.run("cluster", "down").returncode == 0
    with running_cluster(tmp_path / "c", nodes=3) as c:
        got = c.run("get", "durable")
        assert (got.returncode, got.stdout) == (0, b"yes")


def test_the_foreground_cluster_stops_cleanly_on_ctrl_c(tmp_path):
    data_dir = tmp_path / "fg"
    base = free_base_port(6)
    proc = subprocess.Popen(
        [sys.executable, "-m", "zkv", "cluster", "up", "--nodes", "2", "--data-dir", data_dir,
         "--base-port", str(base), *FAST_TIMERS],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    cluster = SupervisedCluster(data_dir, base, 2)
    cluster.seen[proc.pid] = psutil.Process(proc.pid).create_time()
    try:
        def ready() -> bool:
            try:
                return bool(cluster.info().get("ready"))
            except (OSError, ValueError):
                return False

        wait_until(ready, 30, "the foreground cluster to be ready")
        assert zkv("put", "k", "v", "--data-dir", data_dir).returncode == 0
        nodes = [n["pid"] for n in cluster.info()["nodes"]]
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out.decode()
        assert b"cluster ready" in out and b"cluster stopped" in out
        assert not [pid for pid in nodes if alive(pid)]
        assert not cluster.live_pids()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        cluster.kill_everything()


def test_a_node_left_behind_by_a_dead_supervisor_is_stopped_by_cluster_down(tmp_path):
    with running_cluster(tmp_path / "c", nodes=1) as c:
        info = c.info()
        node_pid = info["nodes"][0]["pid"]
        os.kill(info["supervisor_pid"], signal.SIGKILL)
        wait_until(lambda: not alive(info["supervisor_pid"]), 10, "the supervisor to die")
        # The kernel tells the orphan (PR_SET_PDEATHSIG); cluster down sweeps up otherwise.
        result = c.run("cluster", "down")
        assert result.returncode == 0
        wait_until(lambda: not alive(node_pid), 15, "the orphaned node to end")


def test_cluster_up_refuses_ports_in_use(tmp_path):
    base = free_base_port(3)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", base + 1))  # node-1's gossip port
        taken.listen()
        result = zkv("cluster", "up", "--nodes", "1", "--data-dir", tmp_path / "b",
                     "--base-port", str(base), "--detach")
    assert result.returncode == 2
    assert result.stderr.startswith(f"zkv: port {base + 1} on 127.0.0.1 is in use".encode())
    assert not (tmp_path / "b" / CLUSTER_FILE).exists()


def test_controlling_a_directory_without_a_cluster_is_a_usage_error(tmp_path):
    for command in (["node", "stop", "node-1"], ["node", "kill", "node-1"],
                    ["node", "start", "node-1"], ["cluster", "down"], ["cluster", "status"]):
        result = zkv(*command, "--data-dir", tmp_path)
        assert result.returncode == 2, command
        assert b"no cluster in" in result.stderr, command
