"""The client side of the supervisor: what other processes (the CLI, chaos,
bench) do to a running local cluster.

A control request is one JSON file in ``control/`` made atomically (write a temp
file, then ``os.replace``); the supervisor takes requests in name order (names
start with a nanosecond timestamp), acts, and answers with a ``.resp`` file made
the same way. No partial file is ever read, and no two writers share a file.

``cluster down`` is SIGTERM to the supervisor (pid checked against the lock and
the recorded create time): it SIGTERMs every node, waits, SIGKILLs stragglers
and reaps them all.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from zkv.cluster_dir import (
    CLUSTER_FILE,
    CONTROL_DIR,
    LOG_FILE,
    ControlError,
    find_node,
    program_name,
    read_cluster,
    require_cluster,
    supervisor_running,
)
from zkv.jsonfile import write_json_atomic
from zkv.supervisor.processes import (
    STOP_TIMEOUT,
    last_log_line,
    live_process,
    stop_popen,
    terminate_all,
    wait_gone,
)


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
        wait_gone([proc], 5.0)  # it lets go of the lock just before it exits
    after = read_cluster(data_dir) or before
    leftovers: list[psutil.Process] = []
    for record in before["nodes"] + after["nodes"]:
        proc = live_process(record.get("pid"), record.get("pid_create_time"))
        if proc is not None and proc.pid not in {p.pid for p in leftovers}:
            leftovers.append(proc)
    if leftovers:
        stopped = True
        terminate_all(leftovers, STOP_TIMEOUT)
    return stopped


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
    wait_gone([proc], 5.0)
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
            raise ControlError(last_log_line(log_path, offset) or
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


