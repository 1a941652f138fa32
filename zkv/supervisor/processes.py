"""Starting, signalling and reaping processes without ever touching the wrong one.

A pid is only trusted together with its create time (``live_process``): a pid
recorded in ``cluster.json`` may have been recycled by the time someone reads it.
"""

from __future__ import annotations

import ctypes
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

STOP_TIMEOUT = 10.0  # SIGTERM, then SIGKILL after this long


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


def _gone(proc: psutil.Process) -> bool:
    try:
        return proc.status() == psutil.STATUS_ZOMBIE  # dead; reaping is its parent's business
    except psutil.NoSuchProcess:
        return True


def wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
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
    for proc in wait_gone(procs, grace):
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    wait_gone(procs, 5.0)


def parent_death_signal(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A pre-exec hook that makes a child get ``sig`` when the supervisor dies (Linux only).

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
        prctl(pr_set_pdeathsig, sig, 0, 0, 0)

    return hook


def last_log_line(path: Path, offset: int = 0) -> str:
    """The last non-empty line of a process's output log from ``offset`` (its
    ``zkv:`` prefix dropped): why a process that exited early failed, for the user."""
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


