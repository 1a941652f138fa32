"""The cluster directory: the files through which the supervisor and every other
process (the CLI, the client, chaos, bench) share what a local cluster is. It
sits below the client (``Client.from_cluster_dir`` reads it) and the supervisor.

- ``cluster.json``: seeds, the supervisor's pid, and per node its address, pid
  (with the pid's create time, so nobody ever signals a recycled pid), metrics
  URL, data directory, status (``running``, ``stopping``, ``restarting``,
  ``stopped``, ``decommissioned``), start time and restart count. Always
  replaced atomically. The next ``cluster up`` in the directory runs the nodes
  it lists (``cluster add`` appends to them) on the same ports, except the
  decommissioned ones.
- ``supervisor.lock``: held (``flock``) for as long as the supervisor lives, so
  "is a supervisor running here?" has an answer that cannot go stale.
- ``control/``: requests from other CLI invocations (``zkv.supervisor.control``).
- ``node-i/``: each node's data (LMDB, ``events.jsonl``, ``node.json``) and its
  output (``node.log``).
- ``keys/`` (``cluster up --curve``): the cluster's CurveZMQ keys
  (``zkv.keys.LocalKeys``); ``cluster.json`` then names the client key
  pair, the cluster public key and the key pair for operators' commands (the
  cluster's own: a client key may not change the ring) under ``curve``, and
  ``cluster_curve`` finds them for the CLI and ``Client.from_cluster_dir``.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from zkv.config import parse_address

CLUSTER_FILE = "cluster.json"
CONTROL_DIR = "control"
LOCK_FILE = "supervisor.lock"
LOG_FILE = "supervisor.log"
NODE_LOG = "node.log"


class ControlError(Exception):
    """A cluster operation that cannot be done; ``code`` is the CLI exit code."""

    def __init__(self, message: str, code: int = 3) -> None:
        super().__init__(message)
        self.code = code



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
    """The cluster file of ``data_dir``; ControlError (exit 2, with how to start one) if
    there is none, since every command on a cluster needs it."""
    data = read_cluster(data_dir)
    if data is None:
        raise ControlError(f"no cluster in {data_dir} (no {CLUSTER_FILE}); start one with "
                           f"{program_name()} cluster up --data-dir {data_dir}", 2)
    return data


def cluster_curve(data_dir: Path, addresses: Iterable[str] | None = None,
                  cluster: dict | None = None, admin: bool = False) -> Any:
    """The client keys (``CurveKeys``) of the ``--curve`` cluster in ``data_dir``, or
    None when it runs without CurveZMQ (or has no cluster file). ``admin``: the keys
    that may send operators' commands (decommission, remove) instead.

    With ``addresses``, only if every one of them is a node of that cluster: keys
    found in a directory are not sent to some other cluster named by ``--seeds``.
    Raises ControlError (exit 2) when the recorded key files cannot be read.
    """
    from zkv.keys import CurveKeys, KeyFileError, LocalKeys

    if cluster is None:
        try:
            cluster = read_cluster(data_dir)
        except ControlError:
            if addresses is None:
                raise
            return None  # an unreadable file in a directory the addresses do not need
    if cluster is None:
        return None  # no cluster file
    curve = cluster.get("curve")
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
        secret = curve["client_key"]
        if admin:  # a cluster file from before admin_key: the key sits in keys/
            secret = curve.get("admin_key") or LocalKeys.of_cluster(data_dir).cluster_secret
        return CurveKeys.from_files(secret, curve["server_key"])
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
    """The record of ``node_id`` in a cluster file; ControlError (exit 2) naming the
    known ids otherwise."""
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

