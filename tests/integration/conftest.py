"""Real zkv clusters for integration tests: node processes on free loopback ports.

``cluster_factory(n, **options)`` starts ``n`` nodes (``python -m zkv.net.runtime``,
built by ``node_command``) in a temporary directory, waits until every node
serves requests with the whole ring and the ring has settled, and hands back a
``Cluster``; ``cluster3`` is one such 3-node cluster shared by a module. Every
process a test starts is SIGKILLed at teardown (and, on Linux, when the test
process itself dies), and the teardown fails the test if any node logged a
``step_error`` (an exception inside the protocol core).

Waits poll a condition against a deadline; none sleeps a fixed time.
"""

from __future__ import annotations

import contextlib
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import zmq

from zkv.client import Client
from zkv.core.messages import ClientReply, ClientRequest, RingInfo, RingQuery, decode, encode
from zkv.net.eventlog import read_events
from zkv.net.runtime import store_path
from zkv.storage.record import Record

HOST = "127.0.0.1"

# Short timers keep the suite fast; t_remove stays well above t_fail plus gossip spread.
TEST_TIMERS: dict[str, float] = {
    "gossip_interval": 0.1,
    "t_fail": 1.0,
    "t_remove": 4.0,
    "retry_interval": 0.05,
    "anti_entropy_interval": 0.3,
}
START_TIMEOUT = 20.0  # seconds for a cluster to start and converge (a loaded 2-core box)

T = TypeVar("T")


# --------------------------------------------------------------------------- helpers


def wait_for(condition: Callable[[], T], timeout: float, what: str,
             interval: float = 0.05) -> T:
    """Poll ``condition`` until it returns something truthy; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


_taken: set[int] = set()


def free_base_port() -> int:
    """A port P with P, P+1 and P+2 free (request, gossip, metrics), below the
    ephemeral range so outgoing connections cannot grab it meanwhile."""
    for _ in range(1000):
        base = random.randrange(20000, 32000 - 3)
        ports = {base, base + 1, base + 2}
        if ports & _taken:
            continue
        if all(_bindable(p) for p in ports):
            _taken.update(ports)
            return base
    raise RuntimeError("no free port triple found")


RUNTIME = (sys.executable, "-m", "zkv.net.runtime")


def node_command(node_id: str, port: int, data_dir: Path, seeds: list[str],
                 options: dict[str, Any], program: tuple[str, ...] = RUNTIME) -> list[str]:
    """The one command line every test uses to run a real node; ``options`` become
    flags (``t_fail=1.0`` -> ``--t-fail 1.0``). ``program`` runs the node (a test may
    run it under a hook that takes the same arguments)."""
    cmd = [*program, "--id", node_id, "--host", HOST,
           "--port", str(port), "--data-dir", str(data_dir), "--seeds", ",".join(seeds)]
    for name, value in options.items():
        cmd += [f"--{name.replace('_', '-')}", str(value)]
    return cmd


def _ask(sock: zmq.Socket, message: Any, timeout: float) -> Any:
    sock.send(encode(message))
    if not sock.poll(int(timeout * 1000)):
        return None
    return decode(sock.recv())


def serving_ring(address: str, ctx: zmq.Context, timeout: float = 0.3) -> set[str] | None:
    """The ring members one node reports, if it answers, serves client requests (a
    restarted node knows its old ring before it has rejoined) and no ring change is
    under way there; else None."""
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(address)
        info = _ask(sock, RingQuery(1), timeout)
        if not isinstance(info, RingInfo) or not info.settled:
            return None
        probe = _ask(sock, ClientRequest(2, "get", b"zkv-test-probe", None, "one",
                                         int(timeout * 1000)), timeout)
        if not isinstance(probe, ClientReply) or probe.status not in ("ok", "not_found"):
            return None
        return {m[0] for m in info.members}
    finally:
        sock.close()


def read_record(data_dir: Path, key: bytes) -> Record | None:
    """A node's stored record for ``key``, read straight from its LMDB (node may be running)."""
    from zkv.storage.lmdb_store import LmdbStore

    store = LmdbStore(store_path(data_dir))
    try:
        return store.get(key)
    finally:
        store.close()


def _die_with_parent() -> None:
    """In the child: get SIGKILL if the test process dies (Linux), so no node outlives it."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


# --------------------------------------------------------------------------- cluster


@dataclass
class NodeHandle:
    node_id: str
    port: int
    data_dir: Path
    proc: subprocess.Popen | None = None
    exit_codes: list[int] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"tcp://{HOST}:{self.port}"

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
    def __init__(self, root: Path, n: int, options: dict[str, Any], seeds: int = 1,
                 program: tuple[str, ...] = RUNTIME) -> None:
        self.root = root
        self.options = options
        self.program = program
        self.nodes: dict[str, NodeHandle] = {}
        for i in range(1, n + 1):
            node_id = f"n{i}"
            self.nodes[node_id] = NodeHandle(node_id, free_base_port(), root / node_id)
        self.seeds = [h.address for h in list(self.nodes.values())[:seeds]]
        self.ctx = zmq.Context()
        self.clients: list[Client] = []

    # -- processes

    def start(self, *node_ids: str) -> None:
        for node_id in node_ids or tuple(self.nodes):
            handle = self.nodes[node_id]
            assert not handle.running, f"{node_id} is already running"
            handle.data_dir.mkdir(parents=True, exist_ok=True)
            log = open(self.root / f"{node_id}.log", "ab")
            handle.proc = subprocess.Popen(
                node_command(node_id, handle.port, handle.data_dir, self.seeds, self.options,
                             self.program),
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=_die_with_parent)
            log.close()

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
        """Every given node (default: every running one) sees exactly those nodes in
        its ring, and no ring change is under way (quorums span one ring again)."""
        ids = set(node_ids if node_ids is not None else self.running())

        def converged() -> bool:
            for node_id in ids:
                h = self.nodes[node_id]
                if not h.running:
                    pytest.fail(f"{node_id} exited with {h.proc.returncode}; "
                                f"see {self.root / (node_id + '.log')}")
                if serving_ring(h.address, self.ctx) != ids:
                    return False
            return True

        wait_for(converged, timeout, f"every node serving with ring {sorted(ids)}")

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

        wait_for(seen, timeout, f"{observers} to see {node_id} {status}")

    def step_errors(self) -> list[dict[str, Any]]:
        return self.events("step_error")


@contextlib.contextmanager
def clusters_under(root: Path) -> Iterator[Callable[..., Cluster]]:
    """Make clusters under ``root``; on exit kill every node they started and fail if
    any node hit an exception inside the core."""
    clusters: list[Cluster] = []

    def make(n: int, wait: bool = True, program: tuple[str, ...] = RUNTIME,
             **options: Any) -> Cluster:
        cluster = Cluster(root / f"cluster{len(clusters)}", n, {**TEST_TIMERS, **options},
                          program=program)
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


@pytest.fixture
def cluster_factory(tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    with clusters_under(tmp_path) as make:
        yield make


@pytest.fixture(scope="module")
def cluster3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One 3-node cluster shared by a module's tests that leave every node running."""
    with clusters_under(tmp_path_factory.mktemp("shared")) as make:
        yield make(3)


def replica_handles(cluster: Cluster, client: Client, key: str) -> list[NodeHandle]:
    return [cluster.nodes[n] for n in client.locate(key)]
