"""The cluster a chaos run works against: one from ``zkv cluster up``, or its own.

Either way a supervisor runs the nodes and restarts any that dies, and
``DIR/cluster.json`` names each node's pid (with its create time, so a recycled
pid is never signalled), address and data directory. This module reads that
file and signals node processes; it never opens a socket, so it works the same
whether the nodes sit on 127.0.0.1 or each in its own network namespace
(``zkv.chaos.netns``), where only processes inside the lab can reach them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from zkv import supervisor as sup
from zkv.chaos.netns import Lab, supervisor_command

NODE_FILE = "node.json"
LAB_BASE_PORT = 7400  # in a lab every node has its own address, so ports need not differ


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
        self.refs = [NodeRef(n["id"], n["address"], Path(n["data_dir"]))
                     for n in self.info()["nodes"]]

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

    def all_serving(self) -> bool:
        return all(self.serving_pid(n) is not None for n in self.node_ids)

    # ----------------------------------------------------------------- signals

    def kill(self, node_id: str) -> int | None:
        """SIGKILL the node (the supervisor restarts it); its pid, or None if not running."""
        try:
            return sup.kill_node(self.data_dir, node_id, restart=True)
        except sup.ControlError:
            return None

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
            raise ClusterError(sup._last_line(log_path, offset) or
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


class ClusterFaults:
    """The nemesis's hands (``zkv.chaos.nemesis.FaultTarget``) on a ChaosCluster."""

    def __init__(self, cluster: ChaosCluster) -> None:
        self.cluster = cluster
        self.lab = cluster.lab

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

    def _lab(self) -> Lab:
        if self.lab is None:
            raise ClusterError("network faults need the nodes in a namespace lab (--netns)")
        return self.lab
