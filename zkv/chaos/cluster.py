"""The cluster a chaos run works against: one from ``zkv cluster up``, or its own.

Either way a supervisor runs the nodes and restarts any that dies, and
``DIR/cluster.json`` names each node's pid (with its create time, so a recycled
pid is never signalled), address, data directory and status. Nodes added by a
``join`` fault are appended to it; a decommissioned node stays listed (status
``decommissioned``) but is no longer a member. This module reads that file,
signals node processes and sends the supervisor control requests; it never opens
a socket itself, so it works the same whether the nodes sit on 127.0.0.1 or each
in its own network namespace (``zkv.chaos.netns``), where only processes inside
the lab can reach them: what must talk to the nodes (the cluster map, a
decommission command) goes through a helper process in the lab (``pool``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from multiprocessing.pool import ApplyResult, Pool
from pathlib import Path

import psutil

from zkv import supervisor as sup
from zkv.chaos import checks
from zkv.chaos.nemesis import RingView
from zkv.chaos.netns import Lab, supervisor_command

NODE_FILE = "node.json"
LAB_BASE_PORT = 7400  # in a lab every node has its own address, so ports need not differ
KEPT_ON_WIPE = (sup.NODE_LOG, "events.jsonl")  # logs (and rotated ones) outlive a wipe
PROBE_EVERY = 0.3  # seconds between two looks at the cluster map during a ring change
ADMIN_TIMEOUT = 1.0  # seconds for some node to take a decommission command


class ClusterError(Exception):
    """The cluster cannot be used or started; the message says why."""


@dataclass(frozen=True, slots=True)
class NodeRef:
    node_id: str
    address: str
    data_dir: Path


class ChaosCluster:
    """A supervised cluster in ``data_dir``; ``own`` ones are stopped by ``stop()``."""

    def __init__(self, data_dir: Path, own: bool, lab: Lab | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.own = own
        self.lab = lab
        self.refs: list[NodeRef] = []
        self.retired: set[str] = set()  # decommissioned: listed, no longer members
        self.held: set[str] = set()  # killed and left down by this run (hold)
        self.refresh()

    def refresh(self) -> None:
        """Read the node list again (joins add nodes, decommissions retire them)."""
        nodes = self.info()["nodes"]
        self.refs = [NodeRef(n["id"], n["address"], Path(n["data_dir"])) for n in nodes]
        self.retired = {n["id"] for n in nodes if n.get("status") == "decommissioned"}

    # ----------------------------------------------------------------- start, attach, stop

    @classmethod
    def attach(cls, data_dir: Path) -> ChaosCluster:
        """The running cluster of ``zkv cluster up --data-dir DATA_DIR``."""
        data_dir = Path(data_dir)
        if sup.read_cluster(data_dir) is None:
            raise ClusterError(f"no cluster in {data_dir} (no {sup.CLUSTER_FILE}); start one "
                               f"with zkv cluster up --detach --data-dir {data_dir}, or let "
                               "zkv chaos start its own with --nodes N")
        if not sup.supervisor_running(data_dir):
            raise ClusterError(f"no supervisor is running for {data_dir}: chaos needs one to "
                               "restart the nodes it kills")
        return cls(data_dir, own=False)

    @classmethod
    def start(cls, data_dir: Path, nodes: int, node_flags: list[str], lab: Lab | None,
              timeout: float = 60.0) -> ChaosCluster:
        """Start a supervisor with ``nodes`` nodes in ``data_dir`` (in ``lab`` if given)
        and return once every node serves with the whole ring."""
        data_dir = Path(data_dir).resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        if sup.supervisor_running(data_dir):
            raise ClusterError(f"a cluster is already running in {data_dir}")
        if lab is not None:
            _start_supervisor(supervisor_command(lab, data_dir, LAB_BASE_PORT, node_flags),
                              data_dir, timeout)
            return cls(data_dir, own=True, lab=lab)
        for _ in range(5):
            base = _free_base_port(nodes)
            cmd = [sys.executable, "-m", "zkv", "cluster", "up", "--nodes", str(nodes),
                   "--data-dir", str(data_dir), "--base-port", str(base), "--daemon",
                   *node_flags]
            try:
                _start_supervisor(cmd, data_dir, timeout)
                return cls(data_dir, own=True)
            except ClusterError as exc:
                if "in use" not in str(exc):
                    raise
        raise ClusterError("could not find free loopback ports for the cluster")

    def stop(self) -> None:
        """Stop an own cluster (a paused node is woken first so it can exit cleanly)."""
        if not self.own:
            return
        for ref in self.refs:
            self.resume(ref.node_id)
        try:
            sup.stop_cluster(self.data_dir)
        except sup.ControlError:
            pass
        for record in (sup.read_cluster(self.data_dir) or {"nodes": []})["nodes"]:
            proc = sup.live_process(record.get("pid"), record.get("pid_create_time"))
            if proc is not None:
                proc.kill()

    # ----------------------------------------------------------------- views

    def info(self) -> dict:
        try:
            return sup.require_cluster(self.data_dir)
        except sup.ControlError as exc:
            raise ClusterError(str(exc)) from None

    @property
    def node_ids(self) -> list[str]:
        return [ref.node_id for ref in self.refs]

    @property
    def addresses(self) -> list[str]:
        return [ref.address for ref in self.refs]

    @property
    def member_ids(self) -> list[str]:
        """The nodes that should be in the ring: every listed one not decommissioned."""
        return [ref.node_id for ref in self.refs if ref.node_id not in self.retired]

    @property
    def member_addresses(self) -> list[str]:
        return [ref.address for ref in self.refs if ref.node_id not in self.retired]

    @property
    def client_namespace(self) -> str | None:
        """The namespace client processes must join to reach the nodes (None: this one)."""
        return self.lab.hub if self.lab is not None else None

    def ref(self, node_id: str) -> NodeRef:
        return next(r for r in self.refs if r.node_id == node_id)

    def index(self, node_id: str) -> int:
        """1-based position of the node (its host number in a lab)."""
        return self.node_ids.index(node_id) + 1

    def process(self, node_id: str) -> psutil.Process | None:
        record = sup.find_node(self.info(), node_id)
        return sup.live_process(record.get("pid"), record.get("pid_create_time"))

    def serving_pid(self, node_id: str) -> int | None:
        """The node's pid once its process runs its loop (its node.json says ready)."""
        proc = self.process(node_id)
        if proc is None:
            return None
        try:
            state = json.loads((self.ref(node_id).data_dir / NODE_FILE).read_text())
        except (OSError, ValueError):
            return None
        if state.get("pid") != proc.pid or state.get("status") != "ready":
            return None
        return proc.pid

    # ----------------------------------------------------------------- signals

    def kill(self, node_id: str) -> int | None:
        """SIGKILL the node (the supervisor restarts it); its pid, or None if not running."""
        try:
            return sup.kill_node(self.data_dir, node_id, restart=True)
        except sup.ControlError:
            return None

    def hold(self, node_id: str) -> int | None:
        """SIGKILL the node and have the supervisor leave it down (``node kill
        --no-restart``); its pid, or None if it was not running."""
        self.held.add(node_id)
        try:
            return sup.kill_node(self.data_dir, node_id, restart=False)
        except sup.ControlError:
            return None

    def start_node(self, node_id: str) -> None:
        """Have the supervisor start a held node again (``node start ID``)."""
        sup.send_request(self.data_dir, "start", node_id)
        self.held.discard(node_id)

    def release(self) -> None:
        """Start every node this run still holds down (a run cut short leaves an
        attached cluster as whole as it found it)."""
        for node_id in sorted(self.held):
            try:
                self.start_node(node_id)
            except sup.ControlError:
                pass

    def add(self, count: int) -> list[str]:
        """Have the supervisor start ``count`` new nodes (``cluster add``); their ids.
        In a lab each gets a namespace first, at the next host numbers."""
        if self.lab is not None:
            first = len(self.info()["nodes"]) + 1
            for index in range(first, first + count):
                self.lab.add_host(index)
        answer = sup.send_request(self.data_dir, "add", "", count=count)
        self.refresh()
        return list(answer["ids"])

    def wipe(self, node_id: str) -> None:
        """Empty a (stopped) node's data directory, as an operator replacing its disk
        would; its logs stay, for the post-mortem."""
        for path in self.ref(node_id).data_dir.iterdir():
            if path.name.startswith(KEPT_ON_WIPE):
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)

    def pause(self, node_id: str) -> int | None:
        return self._signal(node_id, signal.SIGSTOP)

    def resume(self, node_id: str) -> int | None:
        return self._signal(node_id, signal.SIGCONT)

    def _signal(self, node_id: str, signum: int) -> int | None:
        proc = self.process(node_id)
        if proc is None:
            return None
        try:
            proc.send_signal(signum)
        except psutil.NoSuchProcess:
            return None
        return proc.pid


def _free_base_port(nodes: int) -> int:
    try:
        return sup.free_base_port(sup.PORTS_PER_NODE * nodes)
    except RuntimeError as exc:
        raise ClusterError(str(exc)) from None


def _start_supervisor(cmd: list[str], data_dir: Path, timeout: float) -> None:
    """Run a supervisor (``cmd``) in the background and wait until it reports the cluster
    ready. It gets SIGTERM if this process dies, so no cluster outlives its run."""
    log_path = data_dir / sup.LOG_FILE
    offset = log_path.stat().st_size if log_path.exists() else 0
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(log_path, "ab") as log:
        popen = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                 stderr=subprocess.STDOUT, start_new_session=True,
                                 close_fds=True, env=env,
                                 preexec_fn=sup.parent_death_signal())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rc = popen.poll()
        if rc is not None:
            raise ClusterError(sup.last_log_line(log_path, offset) or
                               f"the supervisor exited with code {rc}; see {log_path}")
        try:
            info = sup.read_cluster(data_dir)
        except sup.ControlError:
            info = None
        if info and info.get("supervisor_pid") == popen.pid and info.get("ready"):
            return
        time.sleep(0.1)
    try:
        sup.stop_cluster(data_dir)
    except sup.ControlError:
        pass
    if popen.poll() is None:
        popen.kill()
    popen.wait()
    raise ClusterError(f"the cluster did not become ready within {timeout:g}s; see {log_path}")


def ring_view(statuses: dict[str, dict | None]) -> RingView | None:
    """The map the answers (node id -> its ``status``; None: no answer) show: the
    newest epoch's members, whether that map has a change under way, and which
    nodes answered as its members."""
    answers = {n: s for n, s in statuses.items() if s}
    if not answers:
        return None
    newest = max(answers.values(), key=lambda s: s["epoch"])
    members = newest["members"]
    return RingView(newest["epoch"], frozenset(members),
                    all(m.get("state") == "normal" for m in members.values()),
                    frozenset(n for n, s in answers.items()
                              if s.get("member") and s["epoch"] == newest["epoch"]))


class ClusterFaults:
    """The nemesis's hands (``zkv.chaos.nemesis.FaultTarget``) on a ChaosCluster.

    ``pool`` is a process that can reach the nodes (it joined the lab's client
    namespace); membership faults need it, to read the map and send commands.
    Problems that made a membership fault impossible are kept in ``problems``.
    """

    def __init__(self, cluster: ChaosCluster, pool: Pool | None = None) -> None:
        self.cluster = cluster
        self.lab = cluster.lab
        self.pool = pool
        self.problems: list[str] = []
        self._view: RingView | None = None
        self._probe: ApplyResult[dict[str, dict | None]] | None = None  # the map probe in flight
        self._probe_generation = 0
        self._generation = 0  # membership actions so far: a view from before one is stale
        self._next_probe = 0.0

    def kill(self, node: str) -> object:
        return self.cluster.kill(node)

    def back(self, node: str, token: object) -> bool:
        pid = self.cluster.serving_pid(node)
        return pid is not None and pid != token

    def pause(self, node: str) -> None:
        self.cluster.pause(node)

    def resume(self, node: str) -> None:
        self.cluster.resume(node)

    def partition(self, fault_id: str, side: list[str], rest: list[str]) -> None:
        index = self.cluster.index
        self._lab().partition(fault_id, [index(n) for n in side], [index(n) for n in rest])

    def loss(self, fault_id: str, node: str, percent: int) -> None:
        self._lab().loss(fault_id, self.cluster.index(node), percent)

    def slow(self, fault_id: str, node: str, delay_ms: int, rate_kbit: int) -> None:
        self._lab().slow(fault_id, self.cluster.index(node), delay_ms, rate_kbit)

    def clear(self, fault_id: str) -> None:
        if self.lab is not None:
            self.lab.clear(fault_id)

    # ----------------------------------------------------------------- membership

    def next_ids(self, count: int) -> list[str]:
        known = len(self.cluster.info()["nodes"])  # the supervisor names them node-N+1...
        return [f"node-{known + i + 1}" for i in range(count)]

    def join(self, count: int) -> list[str]:
        self._acted()
        try:
            return self.cluster.add(count)
        except (sup.ControlError, ClusterError, OSError) as exc:
            self.problems.append(f"join of {count} node(s) failed: {exc}")
            return []

    def decommission(self, node: str) -> bool:
        self._acted()
        if self.pool is None:
            raise ClusterError("membership faults need a process that reaches the nodes")
        self.cluster.refresh()
        seeds = sorted(self.cluster.member_ids, key=lambda n: (n != node, n))
        status, detail = self.pool.apply(checks.admin_command, (
            [self.cluster.ref(n).address for n in seeds], "decommission", node, ADMIN_TIMEOUT))
        if status != "pending":
            self.problems.append(f"decommission {node}: {status}" + (f" ({detail})"
                                                                     if detail else ""))
        return status == "pending"

    def hold(self, node: str) -> object:
        self._acted()
        return self.cluster.hold(node)

    def wipe(self, node: str) -> None:
        self._acted()
        self.cluster.wipe(node)

    def start(self, node: str) -> None:
        self._acted()
        try:
            self.cluster.start_node(node)
        except sup.ControlError as exc:
            self.problems.append(f"start {node} failed: {exc}")

    def exited(self, node: str) -> bool:
        self.cluster.refresh()
        return node in self.cluster.retired

    def ring(self) -> RingView | None:
        """The latest view, probed in the background (the run's loop never waits)."""
        if self._probe is not None and self._probe.ready():
            try:
                statuses = self._probe.get()
            except Exception:  # noqa: BLE001 - a failed probe is no view
                statuses = None
            if statuses is not None and self._probe_generation == self._generation:
                self._view = ring_view(statuses)
            self._probe = None
        now = time.monotonic()
        if self._probe is None and self.pool is not None and now >= self._next_probe:
            self.cluster.refresh()
            ids = self.cluster.member_ids
            self._probe_generation = self._generation
            self._probe = self.pool.apply_async(checks.member_statuses, (
                {n: self.cluster.ref(n).address for n in ids},))
            self._next_probe = now + PROBE_EVERY
        return self._view

    def _acted(self) -> None:
        self._generation += 1
        self._view = None

    def _lab(self) -> Lab:
        if self.lab is None:
            raise ClusterError("network faults need the nodes in a namespace lab (--netns)")
        return self.lab
