"""The namespace lab: nodes as separate hosts; partitions and loss between them."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from zkv.chaos.netns import Lab

PAYLOAD = 16 * 1024  # bytes after the greeting: enough to feel a rate limit
LISTEN = """
import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(({host!r}, 9000)); s.listen(); s.settimeout(0.5)
end = time.monotonic() + 60
while time.monotonic() < end:
    try:
        c, _ = s.accept()
        c.sendall(b"hi" + b"x" * {payload}); c.close()
    except OSError:
        continue
"""
CONNECT = """
import socket, sys
try:
    s = socket.create_connection(({host!r}, 9000), timeout=1.0)
    sys.exit(0 if s.recv(2) == b"hi" else 1)
except OSError:
    sys.exit(1)
"""
# Connect, read the greeting and payload; print the fastest of a few tries (seconds).
TRANSFER = """
import socket, time
best = None
for _ in range(3):
    start = time.monotonic()
    s = socket.create_connection(({host!r}, 9000), timeout=10.0)
    got = 0
    while got < 2 + {payload}:
        chunk = s.recv(65536)
        if not chunk:
            break
        got += len(chunk)
    s.close()
    assert got == 2 + {payload}, got
    took = time.monotonic() - start
    best = took if best is None else min(best, took)
print(best)
"""
DELAY_MS, RATE_KBIT = 100, 256


def reaches(namespace: str, host: str) -> bool:
    cmd = ["ip", "netns", "exec", namespace, sys.executable, "-c", CONNECT.format(host=host)]
    return subprocess.run(cmd, timeout=10).returncode == 0


def transfer_seconds(namespace: str, host: str) -> float:
    cmd = ["ip", "netns", "exec", namespace, sys.executable, "-c",
           TRANSFER.format(host=host, payload=PAYLOAD)]
    return float(subprocess.run(cmd, timeout=60, check=True, capture_output=True,
                                text=True).stdout)


def slowdown(lab: Lab) -> float:
    """The least a slow link adds to one transfer: a delayed packet each way (netem,
    less its jitter), or the payload beyond the burst at the rate limit (tbf)."""
    if lab.netem:
        return 2 * 0.75 * DELAY_MS / 1000
    return 0.8 * (PAYLOAD + 2 - 4096) / (RATE_KBIT * 1000 / 8)


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
                                   "-c", LISTEN.format(host=lab.host(2), payload=PAYLOAD)])
        try:
            assert wait_reaches(lab.node_ns(1), lab.host(2), True), "nodes see each other"
            lab.partition("f1", [2], [1, 3])
            assert not reaches(lab.node_ns(1), lab.host(2))
            assert reaches(lab.hub, lab.host(2)), "clients (in the hub) still reach node 2"
            lab.clear("f1")
            assert wait_reaches(lab.node_ns(1), lab.host(2), True)
            lab.loss("f2", 2, 100)
            assert not reaches(lab.node_ns(3), lab.host(2))
            lab.clear("f2")
            assert wait_reaches(lab.node_ns(3), lab.host(2), True)
            fast = transfer_seconds(lab.node_ns(3), lab.host(2))
            lab.slow("f3", 2, DELAY_MS, RATE_KBIT)
            slow = transfer_seconds(lab.node_ns(3), lab.host(2))
            least = slowdown(lab)
            assert slow >= fast + least, f"slowed link: {slow:.3f}s, before {fast:.3f}s"
            lab.clear_all()
            assert wait_reaches(lab.node_ns(3), lab.host(2), True)
            again = transfer_seconds(lab.node_ns(3), lab.host(2))
            assert again < fast + least / 2, f"cleared link: {again:.3f}s, before {fast:.3f}s"
        finally:
            server.kill()
            server.wait()
        names = [lab.hub, *(lab.node_ns(i) for i in (1, 2, 3))]
    assert not any(Path("/run/netns", name).exists() for name in names), "all removed"
