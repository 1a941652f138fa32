"""The stage of a chaos run, set and cleared: the cluster (started in a lab of
network namespaces or on loopback, or attached to), one probe process in the
clients' namespace, and the worker processes.

Whatever happens, ``tear_down`` ends every process and namespace the run
started, and leaves no node paused or held down.
"""

from __future__ import annotations

import multiprocessing
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from zkv.chaos import checks, netns
from zkv.chaos.cluster import ChaosCluster
from zkv.chaos.spec import ChaosError, ChaosSpec
from zkv.core.config import NodeConfig
from zkv.core.ring import Ring


@dataclass
class Stage:
    """What a run works with; everything in it is the run's to end."""

    cluster: ChaosCluster | None = None
    lab: netns.Lab | None = None
    temp_dir: Path | None = None  # an own cluster's directory nobody named
    pool: Any = None  # one process in the clients' namespace: probes and final reads
    workers: list[Any] = field(default_factory=list)  # workload and counter processes
    mp: Any = field(default_factory=lambda: multiprocessing.get_context("spawn"))

    def set_up(self, spec: ChaosSpec, console: Console, notes: list[str]) -> Ring:
        """Get the cluster and the probe process; the ring once every member serves it.
        ChaosError if the nodes do not agree on a ring of all of them in time."""
        opts = spec.options
        if opts.nodes is not None:  # an own cluster (``spec.own``)
            cluster_dir = Path(opts.data_dir) if opts.data_dir else None
            if cluster_dir is None:
                self.temp_dir = cluster_dir = Path(tempfile.mkdtemp(prefix="zkv-chaos-"))
            if spec.network == "netns":
                self.lab = netns.Lab(opts.nodes, subnet=opts.subnet).create()
                if self.lab.netem is False and "slow" in spec.kinds:
                    notes.append("slow links use a tbf rate limit: this kernel has no netem")
            console.print(f"zkv chaos: starting {opts.nodes} nodes in {cluster_dir} "
                          f"({spec.network}), seed {spec.seed}", highlight=False)
            self.cluster = ChaosCluster.start(cluster_dir, opts.nodes, list(opts.node_flags),
                                              self.lab)
        else:
            self.cluster = ChaosCluster.attach(Path(opts.data_dir or "zkv-data"))
            console.print(f"zkv chaos: attached to {self.cluster.data_dir} "
                          f"({len(self.cluster.refs)} nodes), seed {spec.seed}",
                          highlight=False)
        self.pool = self.mp.Pool(1, initializer=enter_namespace,
                                 initargs=(self.cluster.client_namespace,))
        ring = wait_for_ring(self.pool, self.cluster, opts.settle_timeout)
        if ring is None:
            raise ChaosError("the cluster's nodes do not agree on a ring of all of them; is "
                             "every node running?")
        return ring

    def tear_down(self) -> None:
        """End the workers and the probe, resume every node, give an attached cluster
        back (an own one is stopped) and destroy the lab."""
        for proc in self.workers:
            if proc.is_alive():
                proc.kill()
        if self.pool is not None:
            self.pool.terminate()
        if self.cluster is not None:
            for node_id in self.cluster.node_ids:  # never leave a node paused, or held down
                self.cluster.resume(node_id)
            if not self.cluster.own:
                self.cluster.release()
            self.cluster.stop()
        if self.lab is not None:
            self.lab.destroy()

    def remove_temp_dir(self, keep: bool, console: Console) -> None:
        """Remove the own cluster's temporary directory, unless ``keep`` (then say where)."""
        if self.temp_dir is None:
            return
        if keep:
            console.print(f"cluster data kept in {self.temp_dir}", highlight=False)
        else:
            shutil.rmtree(self.temp_dir, ignore_errors=True)


def enter_namespace(namespace: str | None) -> None:
    """A child process's first act: join the clients' namespace, if the lab has one."""
    if namespace:
        netns.enter(namespace)


def exit_on_sigterm() -> Callable[[], None]:
    """Make SIGTERM raise SystemExit (so the clean-up runs); returns the undo."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def on_sigterm(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, on_sigterm)

    def undo() -> None:
        signal.signal(signal.SIGTERM, previous)

    return undo


def wait_for_ring(pool: Any, cluster: ChaosCluster, timeout: float,
                  why: list[str] | None = None) -> Ring | None:
    """The ring once every member serves and reports exactly the members (the nodes
    not decommissioned); None at the deadline, with what it last waited for in ``why``."""
    deadline = time.monotonic() + timeout
    waiting = "nothing checked yet"
    while time.monotonic() < deadline:
        cluster.refresh()
        want = tuple(sorted(cluster.member_ids))
        starting = [n for n in want if cluster.serving_pid(n) is None]
        if starting:
            waiting = f"not serving (no process, or its node.json not ready): {starting}"
        else:
            views = pool.apply(checks.ring_views, (cluster.member_addresses,))
            shapes = set(views.values())
            if len(shapes) == 1 and None not in shapes:
                members, replicas, vnodes = shapes.pop()
                if members == want:
                    return Ring(members, replicas, vnodes)
            waiting = f"ring views (None: no answer to a ring query and a read): {views}"
        time.sleep(0.2)
    if why is not None:
        why.append(waiting)
    return None


def t_remove_of(spec: ChaosSpec, cluster: ChaosCluster) -> float:
    """The cluster's t_remove, from its node flags (own: ours; attached: its supervisor's)."""
    flags = (list(spec.options.node_flags) if cluster.own
             else list(cluster.info().get("node_flags", [])))
    if "--t-remove" in flags[:-1]:
        try:
            return float(flags[flags.index("--t-remove") + 1])
        except ValueError:
            pass
    return NodeConfig("n", "a").t_remove  # the default
