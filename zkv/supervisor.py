"""A local cluster: N node processes on 127.0.0.1, kept running, controlled from the CLI.

The supervisor owns the node processes it starts (``python -m zkv node start ...``,
each in its own session, so a Ctrl-C at the terminal reaches only the supervisor,
which then stops the nodes gracefully). It restarts a node that dies, after an
exponential backoff, unless the node was stopped or killed with ``--no-restart``.

Everything another process needs lives in the cluster directory:

- ``cluster.json``: seeds, the supervisor's pid, and per node its address, pid
  (with the pid's create time, so nobody ever signals a recycled pid), metrics
  URL, data directory, status (``running``, ``stopping``, ``restarting``,
  ``stopped``, ``decommissioned``), start time and restart count. Always
  replaced atomically. The next ``cluster up`` in the directory runs the nodes
  it lists (``cluster add`` appends to them) on the same ports, except the
  decommissioned ones.
- ``supervisor.lock``: held (``flock``) for as long as the supervisor lives, so
  "is a supervisor running here?" has an answer that cannot go stale.
- ``control/``: requests from other CLI invocations. A request is one JSON file
  made atomically (write a temp file, then ``os.replace``); the supervisor takes
  requests in name order (names start with a nanosecond timestamp), acts, and
  answers with a ``.resp`` file made the same way. No partial file is ever read,
  and no two writers share a file.
- ``node-i/``: each node's data (LMDB, ``events.jsonl``, ``node.json``) and its
  output (``node.log``).
- ``keys/`` (``cluster up --curve``): the cluster's CurveZMQ keys
  (``zkv.net.security.LocalKeys``); ``cluster.json`` then names the client key
  pair and the cluster public key under ``curve``, and ``cluster_curve`` finds
  them for the CLI and ``Client.from_cluster_dir``.

``cluster down`` is SIGTERM to the supervisor (pid checked against the lock and
the recorded create time): it SIGTERMs every node, waits, SIGKILLs stragglers
and reaps them all. Nodes also get SIGTERM from the kernel if the supervisor
itself dies (``PR_SET_PDEATHSIG`` on Linux), so none is left orphaned.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import psutil

from zkv.config import node_address, parse_address
from zkv.exit_codes import EXIT_DECOMMISSIONED

CLUSTER_FILE = "cluster.json"
CONTROL_DIR = "control"
LOCK_FILE = "supervisor.lock"
LOG_FILE = "supervisor.log"
NODE_LOG = "node.log"

HOST = "127.0.0.1"
DEFAULT_NODES = 5
DEFAULT_BASE_PORT = 7400
PORTS_PER_NODE = 3  # request, gossip (+1), metrics (+2)

BACKOFF_FIRST = 0.5  # seconds before the first restart of a node that died
BACKOFF_CAP = 10.0
STABLE_AFTER = 10.0  # a node that ran this long starts its backoff afresh
STOP_TIMEOUT = 10.0  # SIGTERM, then SIGKILL after this long
LOOP_INTERVAL = 0.05
PROBE_INTERVAL = 0.25
PROBE_TIMEOUT = 0.3
HEALTH_INTERVAL = 1.0  # seconds between health checks once the cluster is ready
RESPONSE_TTL = 60.0  # an answer nobody collected is removed after this long


class ControlError(Exception):
    """A cluster operation that cannot be done; ``code`` is the CLI exit code."""

    def __init__(self, message: str, code: int = 3) -> None:
        super().__init__(message)
        self.code = code


# --------------------------------------------------------------------------- files


def write_json_atomic(path: Path, data: Any) -> None:
    """Replace ``path`` with ``data``; a reader sees the old file or the new one, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def read_cluster(data_dir: Path) -> dict | None:
    """The cluster file of ``data_dir``, or None if there is none."""
    path = Path(data_dir) / CLUSTER_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ControlError(f"cannot read {path}: {exc.strerror}", 2) from None
    try:
        data = json.loads(text)
    except ValueError:
        raise ControlError(f"{path} is not valid JSON", 2) from None
    if not isinstance(data, dict) or not isinstance(data.get("nodes"), list):
        raise ControlError(f"{path} is not a zkv cluster file", 2)
    return data


def program_name() -> str:
    """The command the user typed to run zkv (``bin/zkv`` sets $ZKV_PROG), for hints."""
    return os.environ.get("ZKV_PROG", "zkv")


def require_cluster(data_dir: Path) -> dict:
    data = read_cluster(data_dir)
    if data is None:
        raise ControlError(f"no cluster in {data_dir} (no {CLUSTER_FILE}); start one with "
                           f"{program_name()} cluster up --data-dir {data_dir}", 2)
    return data


def cluster_curve(data_dir: Path, addresses: Iterable[str] | None = None,
                  cluster: dict | None = None) -> Any:
    """The client keys (``CurveKeys``) of the ``--curve`` cluster in ``data_dir``, or
    None when it runs without CurveZMQ (or has no cluster file).

    With ``addresses``, only if every one of them is a node of that cluster: keys
    found in a directory are not sent to some other cluster named by ``--seeds``.
    Raises ControlError (exit 2) when the recorded key files cannot be read.
    """
    from zkv.net.security import CurveKeys, KeyFileError

    if cluster is None:
        try:
            cluster = read_cluster(data_dir)
        except ControlError:
            if addresses is None:
                raise
            return None  # an unreadable file in a directory the addresses do not need
    curve = (cluster or {}).get("curve")
    if not isinstance(curve, dict):
        return None
    if addresses is not None:
        known = {n.get("address") for n in cluster["nodes"]} | set(cluster.get("seeds") or [])
        try:
            if not {parse_address(a) for a in addresses} <= known:
                return None
        except ValueError:
            return None
    try:
        return CurveKeys.from_files(curve["client_key"], curve["server_key"])
    except (KeyError, TypeError, KeyFileError) as exc:
        raise ControlError(f"{Path(data_dir) / CLUSTER_FILE}: cannot use its curve keys: "
                           f"{exc}", 2) from None


def cluster_connection(data_dir: Path) -> tuple[list[str], Any]:
    """The node addresses of the local cluster in ``data_dir`` (running ones first) and
    its client keys (None without CurveZMQ); ControlError if there is no cluster."""
    cluster = require_cluster(data_dir)
    nodes = cluster["nodes"]
    addresses = [n["address"] for n in nodes if n.get("address")
                 and n.get("status") not in ("stopped", "decommissioned")]
    addresses += [n["address"] for n in nodes if n.get("address") and n["address"] not in addresses]
    if not addresses:
        raise ControlError(f"{Path(data_dir) / CLUSTER_FILE} names no node", 2)
    return addresses, cluster_curve(data_dir, cluster=cluster)


def find_node(cluster: dict, node_id: str) -> dict:
    for node in cluster["nodes"]:
        if node.get("id") == node_id:
            return node
    known = ", ".join(str(n.get("id")) for n in cluster["nodes"])
    raise ControlError(f"no node {node_id!r} in this cluster (nodes: {known})", 2)


def supervisor_running(data_dir: Path) -> bool:
    """True while a supervisor holds the cluster directory's lock."""
    try:
        fd = os.open(Path(data_dir) / LOCK_FILE, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return True
        raise
    finally:
        os.close(fd)  # also drops the lock if we got it
    return False


def live_process(pid: Any, create_time: Any) -> psutil.Process | None:
    """The process ``pid`` if it is still the one started at ``create_time``, else None."""
    if not isinstance(pid, int) or not isinstance(create_time, (int, float)):
        return None
    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - create_time) > 0.05:
            return None  # the pid was recycled: a different process
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return proc


def ports_in_use(host: str, ports: Iterable[int]) -> list[int]:
    """Ports on ``host`` something is already bound to (as ZeroMQ binds: SO_REUSEADDR)."""
    busy = []
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError:
                busy.append(port)
    return busy


def free_base_port(count: int, host: str = HOST) -> int:
    """A base port with ``count`` free consecutive ports from it, below the ephemeral
    range so that outgoing connections cannot take one meanwhile."""
    rng = random.Random(os.getpid() ^ time.time_ns())
    for _ in range(200):
        base = rng.randrange(20000, 32000 - count)
        if not ports_in_use(host, range(base, base + count)):
            return base
    raise RuntimeError("no free range of loopback ports")


def node_port(base_port: int, index: int) -> int:
    """Request port of the ``index``-th node (0-based); it also uses the next two."""
    return base_port + PORTS_PER_NODE * index


def recorded_layout(cluster: dict | None) -> tuple[int | None, int | None, list[str]]:
    """What the last run of a cluster directory ran, from its cluster file: how many
    nodes (those ``cluster add`` added included), its base port, and the ids of the
    nodes that were decommissioned (not to be started again); Nones without a file."""
    if cluster is None:
        return None, None, []
    nodes = cluster["nodes"]
    base_port = cluster.get("base_port")
    retired = [str(n.get("id")) for n in nodes if n.get("status") == "decommissioned"]
    return (len(nodes) or None, base_port if isinstance(base_port, int) else None, retired)


def check_layout(nodes: int, base_port: int, host: str = HOST) -> None:
    """Raise ControlError (exit 2) if ``nodes`` nodes cannot use ports from ``base_port``."""
    if nodes < 1:
        raise ControlError("--nodes must be at least 1", 2)
    last = base_port + PORTS_PER_NODE * nodes - 1
    if base_port < 1024 or last > 65535:
        raise ControlError(f"--base-port {base_port}: {nodes} nodes need ports {base_port}-"
                           f"{last}, which must lie within 1024-65535", 2)
    busy = ports_in_use(host, range(base_port, last + 1))
    if busy:
        raise ControlError(f"port {busy[0]} on {host} is in use (a cluster needs {base_port}-"
                           f"{last}); pick another --base-port", 2)


# --------------------------------------------------------------------------- control requests


def send_request(data_dir: Path, op: str, node_id: str, timeout: float = 15.0,
                 **fields: Any) -> dict:
    """Ask the running supervisor of ``data_dir`` to do ``op`` to a node (``fields``
    go along in the request); its answer.

    Raises ControlError if no supervisor runs there, it does not answer in time,
    or it refuses (the answer's ``code``).
    """
    data_dir = Path(data_dir)
    if not supervisor_running(data_dir):
        raise ControlError(f"no supervisor is running for {data_dir}; start the cluster with "
                           f"{program_name()} cluster up --data-dir {data_dir}", 3)
    control = data_dir / CONTROL_DIR
    control.mkdir(exist_ok=True)
    stem = f"{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(4)}"
    request = control / f"{stem}.req"
    response = control / f"{stem}.resp"
    write_json_atomic(request, {**fields, "op": op, "id": node_id, "from_pid": os.getpid()})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            answer = json.loads(response.read_text())
        except FileNotFoundError:
            if not supervisor_running(data_dir):
                break
            time.sleep(0.02)
            continue
        response.unlink(missing_ok=True)
        if not answer.get("ok"):
            raise ControlError(answer.get("error", "the supervisor refused"),
                               int(answer.get("code", 1)))
        return answer
    request.unlink(missing_ok=True)
    if not supervisor_running(data_dir):
        raise ControlError(f"the supervisor of {data_dir} exited before answering", 3)
    raise ControlError(f"the supervisor of {data_dir} did not answer within {timeout:g}s", 3)


# --------------------------------------------------------------------------- whole-cluster ops


def stop_cluster(data_dir: Path, timeout: float = 30.0) -> bool:
    """Stop the supervisor of ``data_dir`` and every node it ran; True if anything was running.

    Nodes left behind by a supervisor that died (recorded pid, same create time)
    are stopped too: SIGTERM, then SIGKILL.
    """
    data_dir = Path(data_dir)
    before = require_cluster(data_dir)
    stopped = False
    if supervisor_running(data_dir):
        proc = live_process(before.get("supervisor_pid"), before.get("supervisor_create_time"))
        if proc is None:
            raise ControlError(f"{data_dir} is locked by a supervisor that {CLUSTER_FILE} does "
                               "not name; not stopping anything", 3)
        proc.send_signal(signal.SIGTERM)
        stopped = True
        deadline = time.monotonic() + timeout
        while supervisor_running(data_dir) and time.monotonic() < deadline:
            time.sleep(0.05)
        if supervisor_running(data_dir):
            proc.kill()  # its nodes get SIGTERM from the kernel (PDEATHSIG) and the sweep
        _wait_gone([proc], 5.0)  # it lets go of the lock just before it exits
    after = read_cluster(data_dir) or before
    leftovers = []
    for record in before["nodes"] + after["nodes"]:
        proc = live_process(record.get("pid"), record.get("pid_create_time"))
        if proc is not None and proc.pid not in {p.pid for p in leftovers}:
            leftovers.append(proc)
    if leftovers:
        stopped = True
        terminate_all(leftovers, STOP_TIMEOUT)
    return stopped


def _gone(proc: psutil.Process) -> bool:
    try:
        return proc.status() == psutil.STATUS_ZOMBIE  # dead; reaping is its parent's business
    except psutil.NoSuchProcess:
        return True


def _wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until every process has exited (zombies count); returns those still running."""
    deadline = time.monotonic() + timeout
    alive = [p for p in procs if not _gone(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.02)
        alive = [p for p in alive if not _gone(p)]
    return alive


def stop_popen(popen: subprocess.Popen, grace: float) -> None:
    """SIGTERM a child, SIGKILL it if it has not exited after ``grace`` seconds, reap it."""
    if popen.poll() is None:
        popen.terminate()
        try:
            popen.wait(grace)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()


def terminate_all(procs: list[psutil.Process], grace: float) -> None:
    """SIGTERM, wait up to ``grace`` seconds, SIGKILL whatever is left."""
    for proc in procs:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    for proc in _wait_gone(procs, grace):
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    _wait_gone(procs, 5.0)


def kill_node(data_dir: Path, node_id: str, restart: bool) -> int:
    """SIGKILL a node by its recorded pid; returns the pid.

    With ``restart=False`` the supervisor is told first to leave the node down,
    so it cannot restart it in between. Raises ControlError (exit 1) if the node
    is not running.
    """
    data_dir = Path(data_dir)
    record = find_node(require_cluster(data_dir), node_id)
    pid, create_time = record.get("pid"), record.get("pid_create_time")
    if not restart and supervisor_running(data_dir):
        answer = send_request(data_dir, "hold", node_id)
        pid, create_time = answer.get("pid"), answer.get("pid_create_time")
    proc = live_process(pid, create_time)
    if proc is None:
        raise ControlError(f"{node_id} is not running", 1)
    try:
        proc.kill()
    except psutil.NoSuchProcess:
        pass
    _wait_gone([proc], 5.0)
    return proc.pid


def start_detached(data_dir: Path, argv: list[str], timeout: float) -> dict:
    """Run ``zkv cluster up ARGV`` as a daemon; return the cluster file once it is ready.

    The supervisor gets its own session and writes to ``supervisor.log``. If it
    exits early, its last line of output becomes the error; if it is not ready
    in ``timeout`` seconds it is stopped again.
    """
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / LOG_FILE
    offset = log_path.stat().st_size if log_path.exists() else 0
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(log_path, "ab") as log:
        popen = subprocess.Popen([sys.executable, "-m", "zkv", "cluster", "up", *argv],
                                 stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True, close_fds=True, env=env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rc = popen.poll()
        if rc is not None:
            raise ControlError(_last_line(log_path, offset) or
                               f"the supervisor exited with code {rc}; see {log_path}",
                               rc if rc in (2, 3) else 3)
        try:
            info = read_cluster(data_dir)
        except ControlError:
            info = None  # being written for the first time
        if info and info.get("supervisor_pid") == popen.pid and info.get("ready"):
            return info
        time.sleep(0.1)
    stop_popen(popen, STOP_TIMEOUT + 5)
    raise ControlError(f"the cluster did not become ready within {timeout:g}s (stopped it "
                       f"again); see {log_path}", 3)


def _last_line(path: Path, offset: int = 0) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            lines = [ln.strip() for ln in f.read().decode(errors="replace").splitlines()]
    except OSError:
        return ""
    lines = [ln for ln in lines if ln]
    if not lines:
        return ""
    last = lines[-1]
    return last.removeprefix("zkv: ")


PROBE_MAX_FRAME = 1024 * 1024  # a ring of a few thousand members, or a "not found"


def probe_ring(address: str, timeout: float = PROBE_TIMEOUT,
               curve: Any = None) -> set[str] | None:
    """The node ids in the ring of the node at ``address`` if it serves requests and
    no ring change is under way there, else None.

    A node that restarted knows its old ring before it has rejoined, so a ring
    answer alone is not enough: a read at ``one`` must be answered too.
    ``curve``: the client ``CurveKeys`` of a cluster that runs CurveZMQ.
    """
    import zmq

    from zkv.core.messages import (
        ClientReply,
        ClientRequest,
        DecodeError,
        RingInfo,
        RingQuery,
        decode,
        encode,
    )

    def ask(sock: zmq.Socket, message: Any) -> Any:
        sock.send(encode(message))
        if not sock.poll(int(timeout * 1000)):
            return None
        return decode(sock.recv())

    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.MAXMSGSIZE, PROBE_MAX_FRAME)
    if curve is not None:
        curve.client(sock)
    try:
        sock.connect(address)
        info = ask(sock, RingQuery(1))
        if not isinstance(info, RingInfo) or not info.settled:
            return None
        probe = ask(sock, ClientRequest(2, "get", b"zkv-supervisor-probe", None, "one",
                                        int(timeout * 1000)))
        if not isinstance(probe, ClientReply) or probe.status not in ("ok", "not_found"):
            return None
    except (zmq.ZMQError, DecodeError):
        return None
    finally:
        sock.close(0)
    return {member[0] for member in info.members}


# --------------------------------------------------------------------------- the supervisor


def parent_death_signal() -> Callable[[], None] | None:
    """A pre-exec hook that makes a child get SIGTERM when the supervisor dies (Linux only).

    libc is looked up here, in the parent: the hook runs between fork and exec,
    where loading a library could deadlock.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def hook() -> None:
        prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)

    return hook


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
        from zkv.net.security import LocalKeys

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
            detail = _last_line(node.data_dir / NODE_LOG)
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
        running = [n for n in self.nodes if n.popen is not None]
        for node in running:
            node.restart = False
            self._signal(node, signal.SIGTERM)
            node.status = "stopping"
        self._write_state()
        deadline = time.monotonic() + STOP_TIMEOUT
        while any(n.popen.poll() is None for n in running) and time.monotonic() < deadline:
            time.sleep(LOOP_INTERVAL)
        for node in running:
            if node.popen.poll() is None:
                self._say(f"{node.node_id} did not stop within {STOP_TIMEOUT:g}s; SIGKILL")
                node.popen.kill()
            rc = node.popen.wait()
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
