"""The one harness of the integration and chaos tests: real zkv processes on free ports.

Two ways to run a cluster, for two kinds of test:

- ``Cluster``: node processes the test starts itself, one ``zkv node start`` each
  (``node_command``), so that it can kill, stop, restart and inspect every node.
  ``clusters_under`` (and the ``cluster_factory`` and ``cluster3`` fixtures of
  ``conftest.py``) start one and wait until every node serves with the whole ring
  and the ring has settled; at the end they SIGKILL every node, and fail the test
  if any node logged a ``step_error`` (an exception inside the protocol core).
- ``SupervisedCluster``: a cluster directory run by ``zkv cluster up`` (the
  supervisor), driven through the ``zkv`` command as a user would
  (``running_cluster``); every process seen in it is ended by pid at the end.

Ports come from ``zkv.supervisor.free_base_port``, below the ephemeral range.
Every process a test starts also gets SIGKILL if the test process dies (Linux).
Waits poll a condition against a deadline (``wait_until``); none sleeps a fixed time.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psutil
import zmq

from zkv.client import Client
from zkv.config import node_address, store_path
from zkv.core.messages import MAX_BATCH, DecodeError, Message, decode_batch
from zkv.model.record import Record
from zkv.net.eventlog import read_events
from zkv.probe import probe_ring
from zkv.supervisor import (
    CLUSTER_FILE,
    PORTS_PER_NODE,
    free_base_port,
    node_port,
    parent_death_signal,
)

HOST = "127.0.0.1"

# Failures noticed in about a second (the defaults are 0.2 / 2 / 8); t_remove stays
# well above t_fail plus the time gossip takes to spread.
FAILURE_TIMERS: dict[str, float] = {"gossip_interval": 0.1, "t_fail": 1.0, "t_remove": 4.0}
# Nodes a test runs itself also resend and compare replicas sooner.
TEST_TIMERS: dict[str, float] = {**FAILURE_TIMERS, "retry_interval": 0.05,
                                 "anti_entropy_interval": 0.3}
START_TIMEOUT = 20.0  # seconds for a cluster to start and converge (a loaded 2-core box)
CLI_TIMEOUT = 60.0  # no single command may take longer

T = TypeVar("T")


# --------------------------------------------------------------------------- deadlines


def wait_until(predicate: Callable[[], T], timeout: float, what: str,
               interval: float = 0.05) -> T:
    """Poll ``predicate`` until it returns something truthy, and return that; fail
    after ``timeout`` seconds, naming ``what`` was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


# --------------------------------------------------------------------------- commands


def frame_messages(frame: bytes) -> list[Message]:
    """The messages of a frame a node sent: one, or a batch (its turn's replies to
    one client)."""
    messages = decode_batch(frame, MAX_BATCH)
    assert not any(isinstance(m, DecodeError) for m in messages), messages
    return messages  # type: ignore[return-value]


def node_flags(settings: Mapping[str, Any]) -> list[str]:
    """``zkv node start`` (and ``cluster up``) flags for settings: ``t_fail=1.0`` ->
    ``--t-fail 1.0``; True or False turns a switch on or off (``curve=True`` ->
    ``--curve``, ``sync=False`` -> ``--no-sync``)."""
    flags: list[str] = []
    for name, value in settings.items():
        flag = name.replace("_", "-")
        if value is True:
            flags.append(f"--{flag}")
        elif value is False:
            flags.append(f"--no-{flag}")
        else:
            flags += [f"--{flag}", str(value)]
    return flags


FAST_TIMERS = tuple(node_flags(FAILURE_TIMERS))  # for ``zkv cluster up`` and ``zkv chaos``
NODE_START = (sys.executable, "-m", "zkv", "node", "start")


def node_command(node_id: str, port: int, data_dir: Path, seeds: list[str],
                 options: Mapping[str, Any], program: tuple[str, ...] = NODE_START
                 ) -> list[str]:
    """The one command line every test runs a real node with; ``options`` become flags
    (``node_flags``). ``program`` runs the node: ``zkv node start``, or a hook that
    takes the same arguments (``synchook.py``)."""
    return [*program, "--id", node_id, "--host", HOST, "--port", str(port),
            "--data-dir", str(data_dir), "--seeds", ",".join(seeds), *node_flags(options)]


def zkv(*args: str, stdin: bytes | None = None, env: dict | None = None,
        timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess:
    """Run ``python -m zkv ARGS`` and capture its output (bytes)."""
    full_env = {k: v for k, v in os.environ.items() if k != "ZKV_SEEDS"}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "zkv", *map(str, args)], input=stdin,
                          capture_output=True, timeout=timeout, env=full_env)


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


# In the child: get SIGKILL if the test process dies (Linux), so no node outlives it.
_DIE_WITH_PARENT = parent_death_signal(signal.SIGKILL)


# --------------------------------------------------------------------------- reading nodes


def read_record(data_dir: Path, key: bytes) -> Record | None:
    """A node's stored record for ``key``, read straight from its LMDB (node may be running)."""
    from zkv.storage.lmdb_store import LmdbStore

    store = LmdbStore(store_path(data_dir))
    try:
        return store.get(key)
    finally:
        store.close()


# --------------------------------------------------------------------------- nodes run by the test


@dataclass
class NodeHandle:
    node_id: str
    port: int
    data_dir: Path
    proc: subprocess.Popen | None = None
    exit_codes: list[int] = field(default_factory=list)

    @property
    def address(self) -> str:
        return node_address(HOST, self.port)

    @property
    def metrics_url(self) -> str:
        return f"http://{HOST}:{self.port + 2}/metrics"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        events = read_events(self.data_dir)
        return [e for e in events if kind is None or e["kind"] == kind]


class Cluster:
    """``n`` nodes (``n1``...) the test runs itself, each on ports of its own."""

    def __init__(self, root: Path, n: int, options: dict[str, Any], seeds: int = 1,
                 program: tuple[str, ...] = NODE_START) -> None:
        self.root = root
        self.options = options
        self.program = program
        self.nodes: dict[str, NodeHandle] = {}
        base = free_base_port(PORTS_PER_NODE * n, HOST)
        for i in range(n):
            node_id = f"n{i + 1}"
            self.nodes[node_id] = NodeHandle(node_id, node_port(base, i), root / node_id)
        self.seeds = [h.address for h in list(self.nodes.values())[:seeds]]
        self.ctx = zmq.Context()
        self.clients: list[Client] = []

    # -- processes

    def start(self, *node_ids: str) -> None:
        for node_id in node_ids or tuple(self.nodes):
            handle = self.nodes[node_id]
            assert not handle.running, f"{node_id} is already running"
            handle.data_dir.mkdir(parents=True, exist_ok=True)
            with open(self.root / f"{node_id}.log", "ab") as log:
                handle.proc = subprocess.Popen(
                    node_command(node_id, handle.port, handle.data_dir, self.seeds, self.options,
                                 self.program),
                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                    preexec_fn=_DIE_WITH_PARENT)

    def kill(self, *node_ids: str) -> None:
        """SIGKILL: no goodbye, no final commit."""
        handles = [self.nodes[n] for n in node_ids]
        for h in handles:
            if h.running:
                h.proc.send_signal(signal.SIGKILL)
        for h in handles:
            if h.proc is not None:
                h.exit_codes.append(h.proc.wait(timeout=10))

    def stop(self, node_id: str, timeout: float = 10.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        h = self.nodes[node_id]
        h.proc.send_signal(signal.SIGTERM)
        code = h.proc.wait(timeout=timeout)
        h.exit_codes.append(code)
        return code

    def close(self) -> None:
        for client in self.clients:
            client.close()
        for h in self.nodes.values():
            if h.running:
                h.proc.kill()
        for h in self.nodes.values():
            if h.proc is not None:
                try:
                    h.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
        self.ctx.destroy(linger=0)

    # -- views

    def running(self) -> list[str]:
        return [n for n, h in self.nodes.items() if h.running]

    def client(self, **kwargs: Any) -> Client:
        """A client seeded with every node's address (closed at teardown)."""
        kwargs.setdefault("timeout", 2.0)
        client = Client([h.address for h in self.nodes.values()], **kwargs)
        self.clients.append(client)
        return client

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        return [e for h in self.nodes.values() for e in h.events(kind)]

    def wait_converged(self, node_ids: list[str] | None = None,
                       timeout: float = START_TIMEOUT) -> None:
        """Every given node (default: every running one) serves requests with exactly
        those nodes in its ring, and no ring change is under way (quorums span one
        ring again)."""
        ids = set(node_ids if node_ids is not None else self.running())

        def converged() -> bool:
            for node_id in ids:
                h = self.nodes[node_id]
                if not h.running:
                    raise AssertionError(f"{node_id} exited with {h.proc.returncode}; "
                                         f"see {self.root / (node_id + '.log')}")
                if probe_ring(h.address) != ids:
                    return False
            return True

        wait_until(converged, timeout, f"every node serving with ring {sorted(ids)}")

    def wait_status(self, observers: list[str], node_id: str, status: str,
                    timeout: float = 10.0) -> None:
        """Every observer has logged ``node_id`` entering ``status`` (alive/down/left/...)."""
        def seen() -> bool:
            for observer in observers:
                changes = [e["fields"]["new"] for e in self.nodes[observer].events("member_status")
                           if e["fields"]["node"] == node_id]
                if not changes or changes[-1] != status:
                    return False
            return True

        wait_until(seen, timeout, f"{observers} to see {node_id} {status}")

    def step_errors(self) -> list[dict[str, Any]]:
        return self.events("step_error")


@contextlib.contextmanager
def clusters_under(root: Path) -> Iterator[Callable[..., Cluster]]:
    """Make clusters under ``root``; on exit kill every node they started and fail if
    any node hit an exception inside the core."""
    clusters: list[Cluster] = []

    def make(n: int, wait: bool = True, program: tuple[str, ...] = NODE_START,
             **options: Any) -> Cluster:
        # Tests read a node's per-operation events (which replica wrote what), so these
        # nodes log them (``log_ops``), unlike a default node.
        cluster = Cluster(root / f"cluster{len(clusters)}", n,
                          {**TEST_TIMERS, "log_ops": True, **options}, program=program)
        clusters.append(cluster)
        cluster.start()
        if wait:
            cluster.wait_converged()
        return cluster

    try:
        yield make
    finally:
        for cluster in clusters:
            cluster.close()
    errors = [e for cluster in clusters for e in cluster.step_errors()]
    assert not errors, f"nodes hit exceptions in the core: {errors}"


def replica_handles(cluster: Cluster, client: Client, key: str) -> list[NodeHandle]:
    return [cluster.nodes[n] for n in client.locate(key)]


# --------------------------------------------------------------------------- supervised clusters


@dataclass
class SupervisedCluster:
    """A cluster directory run by ``zkv cluster up``, and every process seen running in it."""

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
               *extra: str) -> tuple[SupervisedCluster, subprocess.CompletedProcess]:
    """``zkv cluster up --detach`` on free ports (retrying if another test took them)."""
    for _ in range(5):
        base = free_base_port(PORTS_PER_NODE * nodes)
        result = zkv("cluster", "up", "--nodes", str(nodes), "--data-dir", str(data_dir),
                     "--base-port", str(base), "--detach", "--timeout", "30", *FAST_TIMERS,
                     *extra)
        if result.returncode == 2 and b"in use" in result.stderr:
            continue
        return SupervisedCluster(data_dir, base, nodes), result
    raise RuntimeError("could not find free ports for a cluster")


@contextlib.contextmanager
def running_cluster(data_dir: Path, nodes: int = 3, *extra: str) -> Iterator[SupervisedCluster]:
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
