"""Helpers for tests that run the real ``zkv`` command: free ports, deadlines, clean-up.

Every process a test starts is tracked by pid (with its create time) and ended in
the test's clean-up, whatever the test did.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from zkv.supervisor import CLUSTER_FILE, free_base_port

# Short timers so failures are noticed in about a second (the defaults are 0.2 / 2 / 8).
FAST_TIMERS = ["--gossip-interval", "0.1", "--t-fail", "1", "--t-remove", "4"]
CLI_TIMEOUT = 60.0  # no single command may take longer





def zkv(*args: str, stdin: bytes | None = None, env: dict | None = None,
        timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess:
    """Run ``python -m zkv ARGS`` and capture its output (bytes)."""
    full_env = {k: v for k, v in os.environ.items() if k != "ZKV_SEEDS"}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "zkv", *map(str, args)], input=stdin,
                          capture_output=True, timeout=timeout, env=full_env)


def wait_until(predicate: Callable[[], Any], timeout: float, what: str,
               interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def command_overhead() -> float:
    """Seconds a ``zkv`` command takes here and now before it does any work (interpreter
    start-up, imports): measured, so that time bounds on commands hold on a loaded
    machine too."""
    started = time.monotonic()
    result = zkv("get", "k", "--data-dir", "/dev/null/no-cluster")  # exit 2, no network
    assert result.returncode == 2, result.stderr
    return time.monotonic() - started


def within_timeout(timeout: float, overhead: float) -> float:
    """A bound on a command that must give up after ``timeout`` seconds: its start-up
    plus the timeout, and as much again as slack (so a command that ignored a short
    timeout for the 2 s default, or went round once more, still exceeds it)."""
    return 2 * overhead + 2 * timeout


@dataclass
class Cluster:
    """A cluster directory under test, and every process seen running in it."""

    data_dir: Path
    base_port: int
    nodes: int
    seen: dict[int, float] = field(default_factory=dict)  # pid -> create time

    def run(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess:
        """``zkv ARGS --data-dir DIR``."""
        return zkv(*args, "--data-dir", str(self.data_dir), **kwargs)

    def info(self) -> dict:
        data = json.loads((self.data_dir / CLUSTER_FILE).read_text())
        self._note(data.get("supervisor_pid"), data.get("supervisor_create_time"))
        for node in data["nodes"]:
            self._note(node.get("pid"), node.get("pid_create_time"))
        return data

    def node(self, node_id: str) -> dict:
        return next(n for n in self.info()["nodes"] if n["id"] == node_id)

    def _note(self, pid: Any, create_time: Any) -> None:
        if isinstance(pid, int) and isinstance(create_time, (int, float)):
            self.seen[pid] = create_time

    def live_pids(self) -> list[int]:
        """Processes of this cluster still alive (supervisor, nodes, and their children)."""
        alive = []
        for pid, created in list(self.seen.items()):
            try:
                proc = psutil.Process(pid)
                if abs(proc.create_time() - created) < 0.05 and \
                        proc.status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
                    for child in proc.children(recursive=True):
                        self.seen.setdefault(child.pid, child.create_time())
                        alive.append(child.pid)
            except psutil.Error:
                pass
        return sorted(set(alive))

    def kill_everything(self) -> None:
        """Last-resort clean-up: SIGKILL every process of this cluster, by pid."""
        try:
            self.info()
        except (OSError, ValueError):
            pass
        for pid in self.live_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        wait_until(lambda: not self.live_pids(), 10, "the cluster's processes to end")


def cluster_up(data_dir: Path, nodes: int,
               *extra: str) -> tuple[Cluster, subprocess.CompletedProcess]:
    """``zkv cluster up --detach`` on free ports (retrying if another test took them)."""
    for _ in range(5):
        base = free_base_port(3 * nodes)
        result = zkv("cluster", "up", "--nodes", str(nodes), "--data-dir", str(data_dir),
                     "--base-port", str(base), "--detach", "--timeout", "30", *FAST_TIMERS,
                     *extra)
        if result.returncode == 2 and b"in use" in result.stderr:
            continue
        cluster = Cluster(data_dir, base, nodes)
        return cluster, result
    raise RuntimeError("could not find free ports for a cluster")


@contextmanager
def running_cluster(data_dir: Path, nodes: int = 3, *extra: str) -> Iterator[Cluster]:
    """A detached cluster that is brought down (and, failing that, killed) afterwards;
    ``extra`` flags go to ``cluster up`` after FAST_TIMERS (the last value counts)."""
    cluster, result = cluster_up(data_dir, nodes, *extra)
    try:
        assert result.returncode == 0, result.stderr.decode()
        cluster.info()
        yield cluster
    finally:
        try:
            cluster.run("cluster", "down", timeout=60)
        finally:
            cluster.kill_everything()
