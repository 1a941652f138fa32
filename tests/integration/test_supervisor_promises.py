"""The supervisor's promises (docs/local-clusters.md): crash-loop back-off, SIGTERM and
SIGHUP to a foreground ``cluster up``, SIGKILL of a straggler after the grace, no
signal to a recycled pid, and the parent-death signal to its nodes."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from zkv.net.eventlog import read_events
from zkv.supervisor import CLUSTER_FILE

from .harness import FAST_TIMERS, SupervisedCluster, free_base_port, wait_until, zkv

# Runs the real Supervisor, with some of its module's constants set first (a shorter
# stop grace, so a straggler test does not wait the full 10 s).
DRIVER = r"""
import json, sys
from pathlib import Path
import zkv.supervisor.daemon as sup
cfg = json.loads(sys.argv[1])
for name, value in cfg["constants"].items():
    setattr(sup, name, value)
s = sup.Supervisor(Path(cfg["data_dir"]), nodes=cfg["nodes"], base_port=cfg["base_port"],
                   node_flags=cfg["flags"])
sys.exit(s.run())
"""


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class Lines:
    """A process's output lines, each with the monotonic time it was read."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.lines: list[tuple[float, str]] = []
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen) -> None:
        for raw in proc.stdout:
            self.lines.append((time.monotonic(), raw.decode(errors="replace").rstrip()))

    def matching(self, pattern: str) -> list[tuple[float, re.Match]]:
        return [(t, m) for t, line in list(self.lines) if (m := re.search(pattern, line))]

    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)


@contextmanager
def supervisor(
    data_dir: Path,
    nodes: int = 1,
    flags: list[str] | None = None,
    argv: list[str] | None = None,
    **constants: float,
) -> Iterator[tuple[subprocess.Popen, SupervisedCluster, Lines]]:
    """A foreground supervisor: ``argv`` (a real ``zkv`` command), else the driver above."""
    base = free_base_port(3 * nodes)
    if argv is None:
        cfg = {
            "data_dir": str(data_dir),
            "nodes": nodes,
            "base_port": base,
            "flags": list(FAST_TIMERS if flags is None else flags),
            "constants": constants,
        }
        argv = [sys.executable, "-c", DRIVER, json.dumps(cfg)]
    else:
        argv = [
            *argv,
            "--nodes",
            str(nodes),
            "--data-dir",
            str(data_dir),
            "--base-port",
            str(base),
            *FAST_TIMERS,
        ]
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    cluster = SupervisedCluster(data_dir, base, nodes)
    cluster.seen[proc.pid] = psutil.Process(proc.pid).create_time()
    lines = Lines(proc)
    try:
        yield proc, cluster, lines
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        cluster.kill_everything()


def wait_ready(cluster: SupervisedCluster, proc: subprocess.Popen, lines: Lines) -> dict:
    def ready() -> dict | None:
        assert proc.poll() is None, f"the supervisor exited: {lines.text()}"
        try:
            info = cluster.info()
        except (OSError, ValueError):
            return None
        return info if info.get("ready") else None

    return wait_until(ready, 30, "the cluster to be ready")


def test_a_node_that_keeps_dying_is_restarted_with_doubling_delays(tmp_path):
    with supervisor(tmp_path / "c", flags=["--no-such-flag"]) as (proc, cluster, lines):
        wait_until(
            lambda: len(lines.matching(r"node-1 started")) >= 4,
            30,
            f"four starts of the failing node:\n{lines.text()}",
        )
        announced = [
            float(m.group(1))
            for _, m in lines.matching(r"node-1 exited with code \d+.*restarting in ([\d.]+)s")
        ]
        assert announced[:3] == [0.5, 1.0, 2.0], lines.text()
        starts = [t for t, _ in lines.matching(r"node-1 started")][:4]
        gaps = [b - a for a, b in itertools.pairwise(starts)]
        assert gaps[0] >= 0.5 and gaps[1] >= 1.0 and gaps[2] >= 2.0, gaps
        assert gaps[0] < gaps[1] < gaps[2], gaps
        wait_until(lambda: cluster.node("node-1")["restarts"] >= 3, 5, "cluster.json to count")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_signal_to_a_foreground_cluster_stops_every_node_gracefully(tmp_path, signum):
    argv = [sys.executable, "-m", "zkv", "cluster", "up"]
    with supervisor(tmp_path / "c", nodes=2, argv=argv) as (proc, cluster, lines):
        info = wait_ready(cluster, proc, lines)
        pids = [n["pid"] for n in info["nodes"]]
        proc.send_signal(signum)
        assert proc.wait(timeout=30) == 0, lines.text()
        assert not [pid for pid in pids if alive(pid)]
        after = json.loads((cluster.data_dir / CLUSTER_FILE).read_text())
        assert [n["last_exit"] for n in after["nodes"]] == ["exited with code 0"] * 2, after
        assert not cluster.live_pids()


def test_a_node_that_ignores_sigterm_is_sigkilled_after_the_grace(tmp_path):
    grace = 1.5  # STOP_TIMEOUT, 10 s in production
    with supervisor(tmp_path / "c", STOP_TIMEOUT=grace) as (proc, cluster, lines):
        info = wait_ready(cluster, proc, lines)
        node_pid = info["nodes"][0]["pid"]
        psutil.Process(node_pid).suspend()  # SIGSTOP: SIGTERM stays pending
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, lines.text()
        assert time.monotonic() - started >= grace
        assert not alive(node_pid)
        wait_until(lambda: lines.matching(r"did not stop within .*SIGKILL"), 5, "the SIGKILL line")
        after = json.loads((cluster.data_dir / CLUSTER_FILE).read_text())
        assert after["nodes"][0]["last_exit"] == "killed by SIGKILL", after


def test_node_kill_never_signals_a_process_whose_create_time_differs(tmp_path):
    victim = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True
    )
    try:
        created = psutil.Process(victim.pid).create_time()
        data_dir = tmp_path / "c"
        data_dir.mkdir()

        def record(create_time: float) -> None:
            (data_dir / CLUSTER_FILE).write_text(
                json.dumps(
                    {
                        "nodes": [
                            {
                                "id": "node-1",
                                "address": "tcp://127.0.0.1:1",
                                "status": "running",
                                "pid": victim.pid,
                                "pid_create_time": create_time,
                                "restart": True,
                            }
                        ]
                    }
                )
            )

        record(created - 3600)  # the recorded node died; its pid now belongs to another process
        refused = zkv("node", "kill", "node-1", "--no-restart", "--data-dir", str(data_dir))
        assert refused.returncode == 1, refused.stderr
        assert b"not running" in refused.stderr
        assert victim.poll() is None, "a recycled pid was signalled"

        record(created)  # the same check passes for the process itself
        killed = zkv("node", "kill", "node-1", "--no-restart", "--data-dir", str(data_dir))
        assert killed.returncode == 0, killed.stderr
        assert victim.wait(timeout=10) == -signal.SIGKILL
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()


def test_a_killed_supervisor_s_nodes_get_sigterm_and_exit(tmp_path):
    with supervisor(tmp_path / "c", nodes=2) as (proc, cluster, lines):
        info = wait_ready(cluster, proc, lines)
        nodes = {n["id"]: n["pid"] for n in info["nodes"]}
        proc.kill()  # SIGKILL: the supervisor stops nothing itself
        proc.wait()
        wait_until(
            lambda: not any(alive(pid) for pid in nodes.values()), 15, "the orphaned nodes to exit"
        )
        for node_id in nodes:
            kinds = [e["kind"] for e in read_events(cluster.data_dir / node_id)]
            assert "stopping" in kinds, f"{node_id} did not stop gracefully: {kinds[-5:]}"
