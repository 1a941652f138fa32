"""The port layout of a local cluster: node ``i`` (0-based) serves requests on
``base_port + 3 * i`` and uses the next two ports for gossip and metrics."""

from __future__ import annotations

import os
import random
import socket
import time
from collections.abc import Iterable

from zkv.cluster_dir import ControlError
from zkv.config import PORTS_PER_NODE

HOST = "127.0.0.1"
DEFAULT_NODES = 5
DEFAULT_BASE_PORT = 7400


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


_handed_out: list[range] = []  # ranges given to this process, perhaps not bound yet


def free_base_port(count: int, host: str = HOST) -> int:
    """A base port with ``count`` free consecutive ports from it, below the ephemeral
    range so that outgoing connections cannot take one meanwhile. The one port
    finder of zkv, its tools and its tests; it never hands this process a port it
    handed out before (the processes meant to bind it may not have yet)."""
    rng = random.Random(os.getpid() ^ time.time_ns())
    for _ in range(200):
        base = rng.randrange(20000, 32000 - count)
        ports = range(base, base + count)
        if any(ports.start < r.stop and r.start < ports.stop for r in _handed_out):
            continue
        if not ports_in_use(host, ports):
            _handed_out.append(ports)
            return base
    raise RuntimeError("no free range of loopback ports")


def node_port(base_port: int, index: int) -> int:
    """Request port of the ``index``-th node (0-based); it also uses the next two."""
    return base_port + PORTS_PER_NODE * index



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


