"""The supervising loop: N node processes on 127.0.0.1, kept running, controlled
through the cluster directory.

The supervisor owns the node processes it starts (``python -m zkv node start ...``,
each in its own session, so a Ctrl-C at the terminal reaches only the supervisor,
which then stops the nodes gracefully). It restarts a node that dies, after an
exponential backoff, unless the node was stopped or killed with ``--no-restart``.
It serves the control requests of ``zkv.supervisor.control`` and keeps
``cluster.json`` current (``zkv.cluster_dir``). Nodes also get SIGTERM
from the kernel if the supervisor itself dies (``PR_SET_PDEATHSIG`` on Linux), so
none is left orphaned.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import psutil

from zkv.cluster_dir import (
    CLUSTER_FILE,
    CONTROL_DIR,
    LOCK_FILE,
    NODE_LOG,
    ControlError,
    read_cluster,
)
from zkv.config import node_address
from zkv.exit_codes import EXIT_DECOMMISSIONED
from zkv.jsonfile import write_json_atomic
from zkv.probe import probe_ring
from zkv.supervisor.ports import (
    DEFAULT_BASE_PORT,
    DEFAULT_NODES,
    HOST,
    check_layout,
    node_port,
    ports_in_use,
)
from zkv.supervisor.processes import STOP_TIMEOUT, last_log_line, parent_death_signal

BACKOFF_FIRST = 0.5  # seconds before the first restart of a node that died
BACKOFF_CAP = 10.0
STABLE_AFTER = 10.0  # a node that ran this long starts its backoff afresh
LOOP_INTERVAL = 0.05
PROBE_INTERVAL = 0.25
HEALTH_INTERVAL = 1.0  # seconds between health checks once the cluster is ready
RESPONSE_TTL = 60.0  # an answer nobody collected is removed after this long


@dataclass(slots=True)
class ManagedNode:
    """One node the supervisor runs, and what it wants for it."""

    node_id: str
    port: int
    data_dir: Path
    seeds: list[str]
    host: str = HOST
    popen: subprocess.Popen | None = None
    pid_create_time: float | None = None
    status: str = "stopped"  # running | stopping | restarting | stopped | decommissioned
    restart: bool = True  # restart when it dies
    restarts: int = 0
    backoff: float = 0.0
    next_start: float = 0.0  # monotonic time of the pending restart
    started_at: float | None = None  # wall clock
    started_mono: float = 0.0
    stop_deadline: float = 0.0
    last_exit: str | None = None
    waiters: list[str] = field(default_factory=list)  # request stems answered on exit

    @property
    def address(self) -> str:
        return node_address(self.host, self.port)

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None

    def record(self) -> dict:
        return {
            "id": self.node_id,
            "address": self.address,
            "pid": self.pid,
            "pid_create_time": self.pid_create_time if self.popen is not None else None,
            "metrics": f"http://{self.host}:{self.port + 2}/metrics",
            "data_dir": str(self.data_dir),
            "status": self.status,
            "started_at": self.started_at if self.popen is not None else None,
            "restarts": self.restarts,
            "restart": self.restart,
            "last_exit": self.last_exit,
        }


class Supervisor:
    """Runs ``nodes`` node processes until SIGTERM, SIGINT or SIGHUP; see the module doc."""

    def __init__(self, data_dir: Path, nodes: int = DEFAULT_NODES,
                 base_port: int = DEFAULT_BASE_PORT, node_flags: list[str] | None = None,
                 host: str = HOST, out: TextIO | None = None, *, curve: bool = False,
                 retired: Iterable[str] = ()) -> None:
        """``curve``: run the nodes with CurveZMQ on the cluster directory's keys
        (``keys/``, made if missing), and probe them with its client key. ``retired``:
        ids of decommissioned nodes, kept in the list but never started."""
        from zkv.keys import LocalKeys

        self.data_dir = Path(data_dir).resolve()
        self.host = host
        self.base_port = base_port
        self.node_flags = list(node_flags or [])
        self.keys = LocalKeys.of_cluster(self.data_dir).ensure() if curve else None
        self.curve = self.keys.client() if self.keys is not None else None
        if self.keys is not None:
            self.node_flags += self.keys.node_flags()
        self.out = out if out is not None else sys.stdout
        retired = set(retired)
        ids = [f"node-{i + 1}" for i in range(nodes)]
        addresses = [node_address(host, node_port(base_port, i)) for i in range(nodes)]
        staying = [a for i, a in zip(ids, addresses) if i not in retired] or addresses
        self.seeds = staying[:2]
        # node-1 founds the cluster (its own address is its seed) and every other node joins
        # through it alone. A joining node keeps asking until it has heard back; were the
        # others to join through each other too, two of them could form a ring without
        # node-1 and stop asking (clients still get both seeds).
        self.nodes = [
            ManagedNode(node_id, node_port(base_port, i), self.data_dir / node_id,
                        [staying[0]], host)
            for i, node_id in enumerate(ids)
        ]
        for node in self.nodes:
            if node.node_id in retired:
                node.status, node.restart = "decommissioned", False
        self.by_id = {n.node_id: n for n in self.nodes}
        self.control = self.data_dir / CONTROL_DIR
        self.ready = False
        self.started_at = time.time()
        self._lock_fd: int | None = None
        self._stop_signal: int | None = None
        self._dirty = True
        self._next_probe = 0.0
        self._announced = False  # on_ready has been called (the first time it was ready)
        self._exiting = False
        self._pre_exec = parent_death_signal()

    # ------------------------------------------------------------------ lifecycle

    def run(self, on_ready: Callable[[Supervisor], None] | None = None) -> int:
        """Start the nodes and keep them running; returns the exit code once stopped."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock()
        try:
            check_layout(len(self.nodes), self.base_port, self.host)
        except ControlError:
            self._unlock()
            raise
        previous = {s: signal.signal(s, self._on_signal)
                    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
        try:
            self.control.mkdir(exist_ok=True)
            for stale in self.control.iterdir():
                stale.unlink(missing_ok=True)
            for node in self.nodes:
                node.data_dir.mkdir(parents=True, exist_ok=True)
                if node.restart:
                    self._spawn(node)
            started = sum(1 for n in self.nodes if n.popen is not None)
            self._say(f"started {started} nodes in {self.data_dir} "
                      f"(supervisor pid {os.getpid()})")
            self._loop(on_ready)
            self._say(f"stopping ({signal.Signals(self._stop_signal).name})"
                      if self._stop_signal else "stopping")
        finally:
            self._stop_all()
            self.ready = False
            self._exiting = True
            self._write_state()  # before the lock goes: a new supervisor's file is never clobbered
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            self._unlock()
        self._say("cluster stopped")
        return 0

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self._stop_signal is None:
            self._stop_signal = signum

    def _lock(self) -> None:
        fd = os.open(self.data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            info = read_cluster(self.data_dir) or {}
            raise ControlError(f"a cluster is already running in {self.data_dir} (supervisor "
                               f"pid {info.get('supervisor_pid', '?')}); stop it with zkv "
                               f"cluster down --data-dir {self.data_dir}", 2) from None
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _loop(self, on_ready: Callable[[Supervisor], None] | None) -> None:
        while self._stop_signal is None:
            now = time.monotonic()
            for node in self.nodes:
                self._tend(node, now)
            self._serve_requests()
            if now >= self._next_probe:
                # ``ready`` is current health, re-evaluated all along: it goes false when a
                # member stops or dies and true again once every one runs and agrees.
                self._next_probe = now + (HEALTH_INTERVAL if self.ready else PROBE_INTERVAL)
                healthy = self._converged()
                if healthy != self.ready:
                    self.ready = healthy
                    self._dirty = True
                    members = sum(1 for n in self.nodes if n.status != "decommissioned")
                    if healthy:
                        self._say(f"ready: {members} nodes, ring converged; seeds "
                                  f"{','.join(self.seeds)}")
                    else:
                        down = [n.node_id for n in self.nodes
                                if n.status not in ("running", "decommissioned")]
                        self._say("not ready: " + (f"{', '.join(down)} not running" if down
                                                   else "the nodes' rings disagree"))
                if healthy and not self._announced:
                    self._announced = True
                    if on_ready is not None:
                        self._write_state()
                        on_ready(self)
            if self._dirty:
                self._write_state()
            time.sleep(LOOP_INTERVAL)

    # ------------------------------------------------------------------ one node

    def _tend(self, node: ManagedNode, now: float) -> None:
        """Notice an exit, restart when due, escalate a stop that takes too long."""
        if node.popen is not None:
            rc = node.popen.poll()
            if rc is not None:
                self._exited(node, rc, now)
            elif node.status == "stopping" and now >= node.stop_deadline:
                self._say(f"{node.node_id} did not stop within {STOP_TIMEOUT:g}s; SIGKILL")
                node.popen.kill()
                node.stop_deadline = float("inf")
        elif node.status == "restarting" and now >= node.next_start:
            node.restarts += 1
            self._spawn(node)

    def node_command(self, node: ManagedNode) -> list[str]:
        """The command line that runs ``node`` (a subclass may wrap it, e.g. in a netns)."""
        cmd = [sys.executable, "-m", "zkv", "node", "start", "--id", node.node_id,
               "--host", node.host, "--port", str(node.port), "--data-dir", str(node.data_dir)]
        if node.seeds:
            cmd += ["--seeds", ",".join(node.seeds)]
        return cmd + self.node_flags

    def _spawn(self, node: ManagedNode) -> None:
        cmd = self.node_command(node)
        try:
            with open(node.data_dir / NODE_LOG, "ab") as log:
                node.popen = subprocess.Popen(
                    cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True, close_fds=True,
                    preexec_fn=self._pre_exec,
                    env=dict(os.environ, PYTHONUNBUFFERED="1"))
        except OSError as exc:
            node.popen = None
            self._say(f"{node.node_id} could not start: {exc}")
            self._schedule_restart(node, time.monotonic(), quick_failure=True)
            return
        try:
            node.pid_create_time = psutil.Process(node.popen.pid).create_time()
        except psutil.NoSuchProcess:
            node.pid_create_time = None  # already gone; _tend will see the exit
        node.status = "running"
        node.started_at = time.time()
        node.started_mono = time.monotonic()
        self._dirty = True
        self._say(f"{node.node_id} started (pid {node.popen.pid}) on {node.address}")

    def _exited(self, node: ManagedNode, rc: int, now: float) -> None:
        node.popen = None
        node.pid_create_time = None
        how = (f"killed by {signal.Signals(-rc).name}" if rc < 0 else f"exited with code {rc}")
        if rc > 0:
            detail = last_log_line(node.data_dir / NODE_LOG)
            how += f" ({detail})" if detail else ""
        node.last_exit = how
        self._dirty = True
        if rc == EXIT_DECOMMISSIONED:
            node.restart = False
            node.status = "decommissioned"
            self._say(f"{node.node_id} decommissioned: it left the cluster; not restarted")
        elif node.restart:
            ran = now - node.started_mono
            self._schedule_restart(node, now, quick_failure=ran < STABLE_AFTER,
                                   immediately=node.status == "stopping")
            self._say(f"{node.node_id} {how}; restarting in {node.next_start - now:.1f}s")
        else:
            node.status = "stopped"
            self._say(f"{node.node_id} {how}; left down")
        for stem in node.waiters:
            self._answer(stem, {"ok": True, "id": node.node_id, "status": node.status})
        node.waiters.clear()

    def _schedule_restart(self, node: ManagedNode, now: float, quick_failure: bool,
                          immediately: bool = False) -> None:
        if immediately:
            node.backoff = 0.0
        elif quick_failure and node.backoff > 0:
            node.backoff = min(node.backoff * 2, BACKOFF_CAP)
        else:
            node.backoff = BACKOFF_FIRST
        node.status = "restarting"
        node.next_start = now + node.backoff
        self._dirty = True

    def _stop_all(self) -> None:
        running = [(n, n.popen) for n in self.nodes if n.popen is not None]
        for node, _ in running:
            node.restart = False
            self._signal(node, signal.SIGTERM)
            node.status = "stopping"
        self._write_state()
        deadline = time.monotonic() + STOP_TIMEOUT
        while any(p.poll() is None for _, p in running) and time.monotonic() < deadline:
            time.sleep(LOOP_INTERVAL)
        for node, popen in running:
            if popen.poll() is None:
                self._say(f"{node.node_id} did not stop within {STOP_TIMEOUT:g}s; SIGKILL")
                popen.kill()
            rc = popen.wait()
            node.last_exit = (f"killed by {signal.Signals(-rc).name}" if rc < 0
                              else f"exited with code {rc}")
            node.popen = None
            node.pid_create_time = None
        for node in self.nodes:
            if node.status != "decommissioned":
                node.status = "stopped"
            for stem in node.waiters:  # a stop someone asked for: done
                self._answer(stem, {"ok": True, "id": node.node_id, "status": node.status})
            node.waiters.clear()

    def _signal(self, node: ManagedNode, signum: int) -> None:
        if node.popen is None:
            return
        try:
            node.popen.send_signal(signum)
        except ProcessLookupError:
            pass

    # ------------------------------------------------------------------ control

    def _serve_requests(self) -> None:
        try:
            names = sorted(p.name for p in self.control.iterdir())
        except FileNotFoundError:
            self.control.mkdir(exist_ok=True)
            return
        now = time.time()
        for name in names:
            path = self.control / name
            if name.endswith(".resp"):
                try:
                    if now - path.stat().st_mtime > RESPONSE_TTL:
                        path.unlink(missing_ok=True)
                except FileNotFoundError:
                    pass
                continue
            if not name.endswith(".req"):
                continue
            stem = name[:-len(".req")]
            try:
                request = json.loads(path.read_text())
            except FileNotFoundError:
                continue  # withdrawn by a CLI that gave up
            except ValueError:
                request = None
            path.unlink(missing_ok=True)
            self._handle(stem, request)

    def _handle(self, stem: str, request: Any) -> None:
        if not isinstance(request, dict) or not isinstance(request.get("id"), str):
            self._answer(stem, {"ok": False, "code": 2, "error": "malformed control request"})
            return
        if request.get("op") == "add":
            self._answer(stem, self.add_nodes(request.get("count")))
            return
        node = self.by_id.get(request["id"])
        if node is None:
            known = ", ".join(self.by_id)
            self._answer(stem, {"ok": False, "code": 2,
                                "error": f"no node {request['id']!r} in this cluster "
                                         f"(nodes: {known})"})
            return
        op = request.get("op")
        self._dirty = True
        if op == "start":
            node.restart = True
            if node.popen is None:
                node.backoff = 0.0
                self._spawn(node)
                self._answer(stem, {"ok": True, "id": node.node_id, "pid": node.pid,
                                    "already": False})
            else:  # running, or stopping (it restarts as soon as it is down)
                self._answer(stem, {"ok": True, "id": node.node_id, "pid": node.pid,
                                    "already": node.status == "running"})
        elif op == "stop":
            node.restart = False
            if node.popen is None:
                node.status = "stopped"
                self._answer(stem, {"ok": True, "id": node.node_id, "already": True})
            else:
                if node.status != "stopping":
                    self._say(f"stopping {node.node_id} (requested)")
                    self._signal(node, signal.SIGTERM)
                    node.status = "stopping"
                    node.stop_deadline = time.monotonic() + STOP_TIMEOUT
                node.waiters.append(stem)  # answered when it has exited
        elif op == "hold":  # a kill --no-restart is coming: do not restart it
            node.restart = False
            if node.popen is None:
                node.status = "stopped"
            self._answer(stem, {"ok": True, "id": node.node_id, "pid": node.pid,
                                "pid_create_time": node.pid_create_time})
        else:
            self._answer(stem, {"ok": False, "code": 2, "error": f"unknown operation {op!r}"})

    def add_nodes(self, count: Any) -> dict:
        """Run ``count`` more nodes, with the next ids and ports (the layout of ``cluster
        up``); they join the cluster through its running nodes. The control answer:
        their ids and addresses, or why not (a port in use)."""
        if type(count) is not int or count < 1:
            return {"ok": False, "code": 2, "error": "add: the count must be at least 1"}
        first = len(self.nodes)
        ids = [f"node-{i + 1}" for i in range(first, first + count)]
        low, high = node_port(self.base_port, first), node_port(self.base_port, first + count) - 1
        if high > 65535:
            return {"ok": False, "code": 2, "error": f"add: {', '.join(ids)} would need ports "
                                                     f"{low}-{high}, past 65535"}
        busy = ports_in_use(self.host, range(low, high + 1))
        if busy:
            return {"ok": False, "code": 2,
                    "error": f"port {busy[0]} on {self.host} is in use ({', '.join(ids)} need "
                             f"{low}-{high}); free it and try again"}
        seeds = [n.address for n in self.nodes if n.popen is not None][:3] or self.seeds
        for i, node_id in enumerate(ids, start=first):
            node = ManagedNode(node_id, node_port(self.base_port, i), self.data_dir / node_id,
                               seeds, self.host)
            node.data_dir.mkdir(parents=True, exist_ok=True)
            self.nodes.append(node)
            self.by_id[node_id] = node
            self._spawn(node)
        self._say(f"added {', '.join(ids)}; joining through {', '.join(seeds)}")
        self._write_state()
        return {"ok": True, "ids": ids, "addresses": [self.by_id[i].address for i in ids]}

    def _answer(self, stem: str, answer: dict) -> None:
        try:
            write_json_atomic(self.control / f"{stem}.resp", answer)
        except OSError as exc:
            self._say(f"cannot answer a control request: {exc}")

    # ------------------------------------------------------------------ state

    def _converged(self) -> bool:
        """Every member (each node not decommissioned, stopped ones included) is running,
        and each one's ring holds exactly those nodes."""
        wanted = [n for n in self.nodes if n.status != "decommissioned"]
        if not wanted or any(n.status != "running" for n in wanted):
            return False
        ids = {n.node_id for n in wanted}
        return all(probe_ring(n.address, curve=self.curve) == ids for n in wanted)

    def state(self) -> dict:
        try:
            create_time = psutil.Process().create_time()
        except psutil.Error:
            create_time = None
        alive = self._lock_fd is not None and not self._exiting
        return {
            "seeds": self.seeds,
            "supervisor_pid": os.getpid() if alive else None,
            "supervisor_create_time": create_time if alive else None,
            "ready": self.ready,
            "host": self.host,
            "base_port": self.base_port,
            "data_dir": str(self.data_dir),
            "node_flags": self.node_flags,
            "curve": None if self.keys is None else {
                "client_key": str(self.keys.client_secret),
                "server_key": str(self.keys.cluster_public),
                "admin_key": str(self.keys.cluster_secret),  # for decommission and remove
            },
            "started_at": self.started_at,
            "updated_at": time.time(),
            "nodes": [n.record() for n in self.nodes],
        }

    def _write_state(self) -> None:
        write_json_atomic(self.data_dir / CLUSTER_FILE, self.state())
        self._dirty = False

    def _say(self, message: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        print(f"{stamp} zkv: {message}", file=self.out, flush=True)
