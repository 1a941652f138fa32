"""A client's links to nodes: which kind a client gets, and the ZeroMQ kind.

Both kinds offer the same few calls (``Links``): open a link to an address,
send one message of frames without blocking (False when the node is not
connected), wait for a link to connect, receive what arrives. Without CurveZMQ
a client talks ZMTP over plain sockets (``zkv.net.zmtp``: no I/O thread between
it and the kernel); with CurveZMQ it keeps ZeroMQ's DEALER sockets, whose
handshake and encryption are libzmq's.
"""

from __future__ import annotations

import math
import os
import threading
import time
from typing import Protocol

import zmq

from zkv.keys import CurveKeys
from zkv.net.zmtp import ZmtpLinks

TRANSPORTS = ("zmtp", "zeromq")

_context: zmq.Context | None = None
_context_pid = 0
_context_lock = threading.Lock()


def shared_context() -> zmq.Context:
    """One ZeroMQ context per process (and a fresh one in a forked child)."""
    global _context, _context_pid
    with _context_lock:
        if _context is None or _context_pid != os.getpid():
            _context = zmq.Context()
            _context_pid = os.getpid()
        return _context


class Links(Protocol):
    def open(self, address: str) -> None: ...
    def addresses(self) -> set[str]: ...
    def born(self, address: str) -> float: ...
    def connecting(self, address: str) -> bool: ...
    def drop(self, address: str) -> None: ...
    def close(self) -> None: ...
    def send(self, address: str, frames: list[bytes]) -> bool: ...
    def ready(self, addresses: list[str]) -> bool: ...
    def wait_ready(self, addresses: list[str], seconds: float) -> bool: ...
    def receive(self, seconds: float) -> list[tuple[str, bytes]]: ...
    def trouble(self, addresses: list[str]) -> str: ...


def client_links(transport: str | None, curve: CurveKeys | None, max_frame: int) -> Links:
    """``zmtp`` (plain sockets) unless the cluster runs CurveZMQ or ``transport`` says
    ``zeromq``."""
    if transport is None:
        transport = "zeromq" if curve is not None else "zmtp"
    if transport not in TRANSPORTS:
        raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}, "
                         f"not {transport!r}")
    if transport == "zmtp":
        if curve is not None:
            raise ValueError("a CurveZMQ client needs the zeromq transport")
        return ZmtpLinks(max_frame)
    return ZmqLinks(curve, max_frame)


class ZmqLinks:
    """One ZeroMQ DEALER per node, with ``ZMQ_IMMEDIATE`` (nothing queues for a node
    that is not connected) and, for a CurveZMQ cluster, the client's keys."""

    def __init__(self, curve: CurveKeys | None, max_frame: int) -> None:
        self.curve = curve
        self.max_frame = max_frame
        self._ctx = shared_context()
        self._poller = zmq.Poller()
        self._sockets: dict[str, zmq.Socket] = {}
        self._address: dict[zmq.Socket, str] = {}
        self._born: dict[str, float] = {}

    def open(self, address: str) -> None:
        self._socket(address)

    def _socket(self, address: str) -> zmq.Socket:
        sock = self._sockets.get(address)
        if sock is None:
            sock = self._ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.IMMEDIATE, 1)
            sock.setsockopt(zmq.MAXMSGSIZE, self.max_frame)
            if self.curve is not None:
                self.curve.client(sock)
            sock.connect(address)
            self._sockets[address] = sock
            self._address[sock] = address
            self._born[address] = time.monotonic()
            self._poller.register(sock, zmq.POLLIN)
        return sock

    def addresses(self) -> set[str]:
        return set(self._sockets)

    def born(self, address: str) -> float:
        return self._born[address]

    def connecting(self, address: str) -> bool:
        return False  # (ZeroMQ does not say; ``born`` is all there is)

    def drop(self, address: str) -> None:
        sock = self._sockets.pop(address, None)
        if sock is not None:
            self._poller.unregister(sock)
            del self._address[sock]
            del self._born[address]
            sock.close(0)

    def close(self) -> None:
        for sock in self._sockets.values():
            sock.close(0)
        self._sockets.clear()
        self._address.clear()
        self._born.clear()

    def send(self, address: str, frames: list[bytes]) -> bool:
        try:
            self._socket(address).send_multipart(frames, zmq.NOBLOCK)
            return True
        except zmq.Again:
            return False

    def ready(self, addresses: list[str]) -> bool:
        return self._writable(addresses, 0)

    def wait_ready(self, addresses: list[str], seconds: float) -> bool:
        return self._writable(addresses, seconds)

    def _writable(self, addresses: list[str], seconds: float) -> bool:
        poller = zmq.Poller()
        for address in addresses:
            poller.register(self._socket(address), zmq.POLLOUT)
        return bool(poller.poll(max(0, math.ceil(seconds * 1000))))

    def trouble(self, addresses: list[str]) -> str:
        """Nothing: libzmq keeps why a connection failed to itself."""
        return ""

    def receive(self, seconds: float) -> list[tuple[str, bytes]]:
        got: list[tuple[str, bytes]] = []
        for sock, _ in self._poller.poll(max(0, math.ceil(seconds * 1000))):
            address = self._address[sock]
            while True:
                try:
                    got.append((address, sock.recv(zmq.NOBLOCK)))
                except zmq.Again:
                    break
        return got
