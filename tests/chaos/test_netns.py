"""The namespace lab: nodes as separate hosts; partitions and loss between them."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from zkv.chaos.netns import Lab

LISTEN = """
import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(({host!r}, 9000)); s.listen(); s.settimeout(0.5)
end = time.monotonic() + 30
while time.monotonic() < end:
    try:
        c, _ = s.accept()
    except OSError:
        continue
    c.sendall(b"hi"); c.close()
"""
CONNECT = """
import socket, sys
try:
    s = socket.create_connection(({host!r}, 9000), timeout=1.0)
    sys.exit(0 if s.recv(2) == b"hi" else 1)
except OSError:
    sys.exit(1)
"""


def reaches(namespace: str, host: str) -> bool:
    cmd = ["ip", "netns", "exec", namespace, sys.executable, "-c", CONNECT.format(host=host)]
    return subprocess.run(cmd, timeout=10).returncode == 0


def wait_reaches(namespace: str, host: str, expected: bool, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if reaches(namespace, host) == expected:
            return True
    return False


@pytest.mark.usefixtures("lab_support")
def test_a_partition_cuts_nodes_off_from_each_other_but_not_from_clients():
    with Lab(3) as lab:
        server = subprocess.Popen(["ip", "netns", "exec", lab.node_ns(2), sys.executable,
                                   "-c", LISTEN.format(host=lab.host(2))])
        try:
            assert wait_reaches(lab.node_ns(1), lab.host(2), True), "nodes see each other"
            lab.partition("f1", [2], [1, 3])
            assert not reaches(lab.node_ns(1), lab.host(2))
            assert reaches(lab.hub, lab.host(2)), "clients (in the hub) still reach node 2"
            lab.clear("f1")
            assert wait_reaches(lab.node_ns(1), lab.host(2), True)
            lab.loss("f2", 2, 100)
            assert not reaches(lab.node_ns(3), lab.host(2))
            lab.slow("f3", 1, 100, 256)
            lab.clear_all()
            assert wait_reaches(lab.node_ns(3), lab.host(2), True)
        finally:
            server.kill()
            server.wait()
        names = [lab.hub, *(lab.node_ns(i) for i in (1, 2, 3))]
    assert not any(Path("/run/netns", name).exists() for name in names), "all removed"
